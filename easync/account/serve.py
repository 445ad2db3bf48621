"""Where ``twistd easync`` serves the account page: ``--account-listen``.

- ``same`` (the default): at ``/account/`` on every ``--listen`` port, beside ActiveSync;
- an endpoint (``ssl:8444``, ``tcp:8081:interface=127.0.0.1``): only there, in a site of
  its own whose ``/`` leads to ``/account/`` (so the page can stay off the port that
  phones reach from the internet); an ``ssl:`` endpoint without ``privateKey=`` uses the
  ``--tls-cert`` file, as ``--listen`` does;
- ``off``: nowhere.

Sessions are kept in the memory of the process, so with ``--workers`` above 1 the page
is served only on an ``--account-listen`` endpoint, by the first process; with
``same`` it is then off (and the log says so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.util import Redirect

from easync.account import make_account_resource
from easync.account.web import MAX_BODY, AccountResource

log = Logger()


def install(top: MultiService, site: server.Site, easserver: Any,
            options: Mapping[str, Any], reactor: Any) -> AccountResource | None:
    """Mount the page as ``options['account-listen']`` says; returns it (None: off)."""
    where = options.get("account-listen") or "same"
    if where == "off":
        return None
    multi = int(options.get("workers") or 1) > 1
    if where == "same" and multi:
        log.info("account page off: with --workers above 1 it needs --account-listen "
                 "(its sessions live in one process)")
        return None
    accounts = getattr(easserver, "accounts", None)
    if accounts is None:
        log.info("account page off: no account service")
        return None
    from easync import workers

    if multi and workers.worker_number() != 0:
        return None
    page = make_account_resource(accounts, reactor,
                                 getattr(easserver.settings, "trusted_proxies", ()))
    if where == "same":
        site.resource.putChild(b"account", page)
        return page
    from easync.http.resource import EasRequestFactory
    from easync.tap import endpoint_description

    cert_path = os.path.abspath(options.get("tls-cert") or "easync.pem")
    description, self_signed = endpoint_description(where, cert_path)
    try:
        if self_signed:
            from easync import tls

            tls.ensure_certificate(cert_path)
        endpoint = serverFromString(reactor, description)
    except Exception as e:  # noqa: BLE001 - a bad key file, a bad endpoint, …
        raise usage.UsageError(f"--account-listen {where}: {e}") from None
    root = Resource()
    root.putChild(b"", Redirect(b"/account/"))
    root.putChild(b"account", page)

    class _Request(EasRequestFactory):
        max_bytes = MAX_BODY

    own = server.Site(root, timeout=float(options.get("idle-timeout") or 600.0))
    own.requestFactory = _Request
    own.displayTracebacks = False
    own.noisy = False
    own.log = lambda request: None  # type: ignore[method-assign]  # the page logs its own
    service = StreamServerEndpointService(endpoint, own)
    service._raiseSynchronously = True
    service.setName("account-listen")
    service.setServiceParent(top)
    return page
