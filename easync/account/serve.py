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

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource
from twisted.web.util import Redirect

from easync.account import make_account_resource
from easync.account.web import MAX_BODY, AccountResource

if TYPE_CHECKING:
    from easync.config import ListenConfig
    from easync.http.listen import Listeners

log = Logger()


def install(listeners: Listeners, site: server.Site, easserver: Any,
            listen: ListenConfig, reactor: Any) -> AccountResource | None:
    """Mount the page as ``listen.account_listen`` says; returns it (None: off)."""
    where = listen.account_listen
    if where == "off":
        return None
    multi = listen.workers > 1
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
                                 getattr(easserver.settings, "trusted_proxies", ()),
                                 getattr(easserver.settings, "policy", ()))
    notifier = getattr(easserver, "notifier", None)
    if notifier is not None:
        # shared folders (issue #14 point 1): a share or unshare wakes the colleague's
        # devices through the change hub (a "hierarchy" change: FolderSync is due)
        page.ops.enable_sharing(easserver.items, lambda uid, folders: [
            notifier.publish(uid, f) for f in folders])
    if where == "same":
        site.resource.putChild(b"account", page)
        return page
    from easync.http.listen import site as make_site
    from easync.http.resource import EasRequestFactory

    root = Resource()
    root.putChild(b"", Redirect(b"/account/"))
    root.putChild(b"account", page)

    class _Request(EasRequestFactory):
        max_bytes = MAX_BODY

    own = make_site(root, request_factory=_Request, timeout=listen.idle_timeout)
    listeners.add("account-listen", where, own, option="--account-listen")
    return page
