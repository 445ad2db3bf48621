"""``twistd easync``: the command-line options and the service tree.

Every option can also come from a TOML config file (``--config FILE``) under the same
name, e.g. ``max-window = 256`` or ``listen = ["ssl:8443", "tcp:8080:interface=127.0.0.1"]``;
the command line wins over the file, the file over the built-in defaults.  With no
``listen`` anywhere, easync serves HTTPS on 127.0.0.1:8443 with a self-signed certificate
(see ``easync.tls``) created on first start.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python import usage

from easync import config as cfg
from easync import tls, workers
from easync.handler import EasServer
from easync.settings import Settings

log = Logger()

DEFAULT_LISTEN = "ssl:8443:interface=127.0.0.1"


class Options(usage.Options):
    """``twistd easync`` options; see ``easync.config.OPTIONS`` for the full list."""

    synopsis = "[--config FILE] [--listen ENDPOINT]... [--db URL] [options]"
    longdesc = (
        "Exchange ActiveSync server for contacts, calendar and tasks.  With no --listen "
        "it serves HTTPS on 127.0.0.1:8443 with a self-signed certificate created on "
        "first start.  Every option can also be set in the TOML file given with "
        "--config, under the same name; the command line wins."
    )
    optParameters = [
        ["config", "c", None, "TOML config file with any of these options."],
    ] + [
        # Defaults are applied in postOptions, after the config file, so that a value
        # given on the command line can be told apart from a default.
        [o.name, None, None, o.help_text(), o.coerce] for o in cfg.OPTIONS
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["trusted-proxy"] = []
        self.argv: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        # kept for --workers: the other processes get the same command line
        self.argv = list(options) if options is not None else []
        super().parseOptions(options)

    def opt_trusted_proxy(self, address: str) -> None:
        try:
            self["trusted-proxy"].append(cfg.trusted_proxy(address))
        except cfg.ConfigError as e:
            raise usage.UsageError(str(e)) from None

    opt_trusted_proxy.__doc__ = (
        "Address or network (10.0.0.0/8) of a reverse proxy whose X-Forwarded-For header "
        "names the client in the request log. Repeatable. Default: none (the header is "
        "ignored).")

    def opt_listen(self, endpoint: str) -> None:
        try:
            self["listen"].append(cfg.check_listen(endpoint))
        except cfg.ConfigError as e:
            raise usage.UsageError(str(e)) from None

    # One line for --help (usage.Options shows docstrings without dedenting them).
    opt_listen.__doc__ = (
        "Twisted endpoint string to serve on, e.g. ssl:443 or tcp:8080:interface=127.0.0.1 "
        "(behind a TLS proxy). Repeatable. Default: ssl:8443:interface=127.0.0.1 with the "
        "self-signed certificate. An ssl: endpoint without privateKey= uses the --tls-cert "
        "file.")

    def postOptions(self) -> None:
        from_file: dict[str, Any] = {}
        if self["config"]:
            try:
                from_file = cfg.load_file(self["config"])
            except cfg.ConfigError as e:
                raise usage.UsageError(str(e)) from None
        try:
            resolved = cfg.resolve(
                {k: v for k, v in self.items() if k in cfg.BY_NAME}, from_file)
        except cfg.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if not self["listen"]:
            self["listen"] = from_file.get("listen") or [DEFAULT_LISTEN]
        if not self["trusted-proxy"]:
            self["trusted-proxy"] = from_file.get("trusted-proxy") or []
        self.update(resolved)

    def settings(self) -> Settings:
        """The ``Settings`` these options describe."""
        settings = cfg.settings_from(self)
        settings.trusted_proxies = tuple(self["trusted-proxy"])
        return settings


def endpoint_description(description: str, cert_path: str) -> tuple[str, bool]:
    """The endpoint string to use, and whether it uses the self-signed certificate:
    an ``ssl:`` endpoint without ``privateKey=`` gets ``cert_path``."""
    if description.split(":", 1)[0].lower() != "ssl" or "privatekey=" in description.lower():
        return description, False
    escaped = cert_path.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"{description}:privateKey={escaped}", True


def _announce(info: tls.CertificateInfo, now: float) -> None:
    """Log the certificate's fingerprint, for users to compare with their phone's."""
    log.info(
        "{verb} TLS certificate {path}, SHA-256 fingerprint {fingerprint}, "
        "names {names}, valid until {until}",
        verb="Created self-signed" if info.created else "Using",
        path=info.path, fingerprint=info.fingerprint,
        names=", ".join(info.dns_names), until=info.not_after.date().isoformat())
    if info.not_after.timestamp() < now:
        log.warn(  # noqa: G010 - twisted.logger.Logger has warn, not warning
            "TLS certificate {path} has expired: phones will refuse it; delete the "
            "file to have a new self-signed one created", path=info.path)


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """The whole server: the SQL store, then one HTTP(S) listener per endpoint."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    from backends.sql.authstore import SqlAuthStore
    from backends.sql.pgnotify import change_hub
    from backends.sql.store import SqlStore
    from easync.auth import build_auth
    from easync.http.limits import ConnectionLimits, LimitingReactor
    from easync.http.resource import make_site

    settings = options.settings()
    top = MultiService()

    store = SqlStore(reactor, options["db"])
    store.setName("store")
    store.setServiceParent(top)

    # The change hub: LISTEN/NOTIFY on PostgreSQL; on SQLite in-process, plus a poller
    # for other processes' writes (backends.sql.pgnotify.change_hub).
    notifier, hub_services = change_hub(reactor, store, options["db"], options["node-name"])
    for service in hub_services:
        service.setServiceParent(top)

    items: Any = store
    if options["backend"] == "crm":
        # contacts, events and tasks in a CRM, mirrored in --db (backends/crm)
        from backends.crm import make_store

        try:
            items = make_store(reactor, store, dict(options), notifier)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        items.setName("crm")
        items.setServiceParent(top)
    server = EasServer(users=store, items=items, state=store,
                       notifier=notifier, clock=reactor, settings=settings)
    _push_services(top, server, store, options, reactor)
    # Who may sync: the login-password checker (local or LDAP) wrapped in the
    # ActiveSync-password policy, and the account service (easync.auth).
    from backends.crm.checker import crm_checker

    try:
        auth = build_auth(dict(options), server, SqlAuthStore(store), reactor,
                          primaries={"crm": crm_checker})
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    for service in auth.services:
        service.setServiceParent(top)
    server.accounts = auth.accounts
    # make_site: the request-size limit, no tracebacks to clients, one log line per request;
    # the header timeout and the per-address cap (easync.http.limits), per process.
    limits = ConnectionLimits(reactor, header_timeout=options["header-timeout"],
                              max_per_address=options["max-connections-per-address"],
                              drain_timeout=options["idle-timeout"])
    site = make_site(server, auth.door, timeout=options["idle-timeout"], limits=limits)
    # The account page (/account/): on these listeners, or only on --account-listen.
    from easync.account.serve import install as install_account_page

    install_account_page(top, site, server, options, reactor)

    cert_path = os.path.abspath(options["tls-cert"])
    cert_ready = False
    # --workers: every process binds the ports with SO_REUSEPORT (easync.workers)
    binder = reactor
    if options["workers"] > 1:
        try:
            workers.check_supported()
        except RuntimeError as e:
            raise usage.UsageError(str(e)) from None
        binder = workers.ReusePortReactor(reactor)
    # the cap in front of every listener's factory, before TLS: a refused connection
    # costs no handshake
    binder = LimitingReactor(binder, limits)
    for i, listen in enumerate(options["listen"]):
        description, self_signed = endpoint_description(listen, cert_path)
        try:
            if self_signed and not cert_ready:
                _announce(tls.ensure_certificate(cert_path), reactor.seconds())
                cert_ready = True
            endpoint = serverFromString(binder, description)
        except Exception as e:  # noqa: BLE001 - a bad key file, a missing certificate, …
            raise usage.UsageError(f"--listen {listen}: {e}") from None
        http = StreamServerEndpointService(endpoint, site)
        # A port that cannot be bound stops twistd with the error instead of leaving a
        # server running that listens nowhere (twistd's own strports services do this).
        http._raiseSynchronously = True
        http.setName(f"listen-{i}")
        http.setServiceParent(top)
    if options["workers"] > 1:
        if workers.worker_number() == 0:
            twistd_options = getattr(options, "parent", None) or {}
            workers.WorkerPool(reactor, options["workers"], options.argv,
                               twistd_options).setServiceParent(top)
        else:
            workers.ParentWatch(reactor).setServiceParent(top)
    return top


def _push_services(top: MultiService, server: EasServer, store: Any, options: Options,
                   reactor: Any) -> None:
    """Held requests recorded for easync-admin (which node holds which device), and
    the /metrics listener when --metrics-listen is given."""
    from easync.metrics import metrics_site, watch
    from easync.push import HoldRecorder, Holds

    # with --workers, one row-writer per process: worker i records as NODE/wI
    suffix = f"/w{workers.worker_number()}" if options["workers"] > 1 else ""
    recorder = HoldRecorder(store, reactor, notifier=server.notifier, node_suffix=suffix)
    recorder.setName("held-requests")
    recorder.setServiceParent(top)
    server.holds = Holds(server.notifier, reactor, recorder)
    if options["metrics-listen"] == "off":
        return
    watch(server.metrics, server)
    description = options["metrics-listen"]
    if options["workers"] > 1:
        try:
            description = workers.nth_endpoint(description, workers.worker_number())
        except ValueError as e:
            raise usage.UsageError(f"--metrics-listen: {e}") from None
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as e:  # noqa: BLE001
        raise usage.UsageError(f"--metrics-listen {description}: {e}") from None
    service = StreamServerEndpointService(endpoint, metrics_site(server.metrics))
    service._raiseSynchronously = True
    service.setName("metrics")
    service.setServiceParent(top)
