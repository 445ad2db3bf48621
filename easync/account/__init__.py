"""The account page: self-service and admin web pages plus a JSON API, at ``/account/``.

Users log in with their password (+ a one-time code with 2FA on) to see whether
ActiveSync is on for them, set, change, generate or remove their ActiveSync password,
see their devices and wipe or remove a lost one, and choose e-mail codes or an
authenticator app; administrators also switch ActiveSync and 2FA per user and 2FA for
everyone.  See README.md "Account page".

- ``web``: the twisted.web resource (routing, sessions, CSRF, security headers);
- ``pages`` / ``views``: the HTML pages / their markup; ``api``: the JSON API;
- ``core``: the logic both share (input checks, the "recently verified" rule);
- ``sessions``: in-memory sessions; ``ops`` + ``adapter``: the seam to the account
  service ``easync.auth.accounts``.

Sessions live in the memory of one process: with ``--workers`` above 1 the page is
served only on ``--account-listen``, by the first process (``easync.tap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from easync.account.web import AccountResource


def make_account_resource(service: Any, clock: Any, trusted_proxies: Sequence[str] = ()
                          ) -> AccountResource:
    """The ``/account`` resource over an ``easync.auth.accounts.Accounts`` service."""
    from easync.account.adapter import ServiceOps
    from easync.http.forwarded import parse_networks

    return AccountResource(ServiceOps(service), clock,
                           trusted=parse_networks(trusted_proxies))


__all__ = ["AccountResource", "make_account_resource"]
