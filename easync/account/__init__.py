"""The account page: self-service and admin web pages plus a JSON API, at ``/account/``.

Users log in with their password (+ a one-time code with 2FA on) to see whether
ActiveSync is on for them, set, change, generate or remove their ActiveSync password,
see their devices and wipe or remove a lost one, and choose e-mail codes or an
authenticator app; administrators also switch ActiveSync and 2FA per user and 2FA for
everyone.  See README.md "Account page".

- ``web``: the twisted.web resource (routing, sessions, CSRF, security headers);
- ``request``: one request's context and reply, and the one place a refusal (an
  ``easync.auth.accounts.AccountError``, the package's one error type) becomes HTTP;
- ``pages`` / ``views``: the HTML pages / their markup; ``api``: the JSON API;
- ``core``: the logic both share (input checks, the "recently verified" rule);
- ``sessions``: in-memory sessions; ``adapter``: the page's view of the account
  service ``easync.auth.accounts`` (the login password through the front door,
  ``easync.auth.door``).

Imports go one way: ``web`` → ``pages``/``api`` → ``core`` → ``adapter``, all of them
→ ``request``/``views``/``sessions``.

Sessions live in the memory of one process: with ``--workers`` above 1 the page is
served only on ``--account-listen``, by the first process (``easync.tap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from easync.account.web import AccountResource


def make_account_resource(service: Any, clock: Any, trusted_proxies: Sequence[str] = (),
                          policy: Sequence[tuple[str, str]] = ()) -> AccountResource:
    """The ``/account`` resource over an ``easync.auth.accounts.Accounts`` service;
    ``policy``: the server's device policy settings, shown to the user."""
    from easync.account.adapter import ServiceOps
    from easync.http.forwarded import parse_networks

    return AccountResource(ServiceOps(service, tuple(policy)), clock,
                           trusted=parse_networks(trusted_proxies))


__all__ = ["AccountResource", "make_account_resource"]
