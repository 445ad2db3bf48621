"""``twistd easync``: the command-line options and the service tree.

Every option can also come from a TOML config file (``--config FILE``) under the same
name, e.g. ``max-window = 256`` or ``listen = ["ssl:8443", "tcp:8080:interface=127.0.0.1"]``;
the command line wins over the file, the file over the built-in defaults (all in
``easync.config``, which resolves them once into a typed ``ServerConfig``).  With no
``listen`` anywhere, easync serves HTTPS on 127.0.0.1:8443 with a self-signed certificate
(see ``easync.tls``) created on first start.

``makeService`` is the composition root: the store, the change hub, the ``EasServer``,
the checkers, then the listeners (``easync.http.listen``).

An admin's mistake never ends in a traceback: under twistd a bad option or config file
(``Options.parseOptions``), a service tree that cannot be built (``makeService``: a
missing certificate file, …) and a service that cannot start (``StartupError``: a port
in use, a database that cannot be opened, ``DatabaseCheck``) each print one line,
``twistd easync: error: …``, on stderr, and twistd exits with status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any

from twisted.application.service import MultiService, Service
from twisted.logger import Logger
from twisted.python import usage

from easync import config as cfg
from easync import workers
from easync.errors import StartupError, one_line
from easync.handler import EasServer
from easync.settings import Settings

if TYPE_CHECKING:
    from easync.health import HealthCheck
    from easync.http.listen import Listeners

log = Logger()

#: how the one-line errors of ``twistd easync`` start
PROG = "twistd easync"
# usage.Options' words before a coerce function's message
_COERCE_PREFIX = "Parameter type enforcement failed: "


def report(message: str) -> None:
    """Write ``twistd easync: error: MESSAGE`` on the process's real stderr (twistd
    replaces ``sys.stderr`` with its log once logging begins)."""
    message = one_line(message)
    message = message.removeprefix(_COERCE_PREFIX)
    stream = sys.__stderr__ or sys.stderr
    stream.write(f"{PROG}: error: {message}\n")
    stream.flush()


def _excepthook(previous: Callable[..., Any]) -> Callable[..., Any]:
    def hook(kind: type[BaseException], value: BaseException,
             tb: TracebackType | None) -> None:
        # (OSError: a file twistd opens for its own options, --logfile or --pidfile,
        # in a missing directory or not writable)
        if isinstance(value, (usage.UsageError, StartupError, OSError)):
            report(str(value))       # and Python exits with status 1
        else:
            previous(kind, value, tb)
    hook.easync = True  # type: ignore[attr-defined]
    return hook


def install_excepthook() -> None:
    """Under twistd: a ``UsageError`` from ``makeService``, a ``StartupError`` from a
    starting service (which twistd re-raises after removing its pid file and telling a
    daemon's parent) or an ``OSError`` (twistd's log or pid file cannot be written)
    ends the process with one line, not a traceback."""
    if not getattr(sys.excepthook, "easync", False):
        sys.excepthook = _excepthook(sys.excepthook)


def _named(name: str, coerce: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``coerce``, its errors naming the option (usage.Options' do not)."""
    def named(value: Any) -> Any:
        try:
            return coerce(value)
        except ValueError as e:
            raise ValueError(f"--{name}: {e}") from None
    named.__dict__.update(coerce.__dict__)        # coerceDoc, shown by --help
    return named


class Options(usage.Options):
    """``twistd easync`` options; see ``easync.config.OPTIONS`` for the full list.  After
    parsing, ``config`` is the resolved ``easync.config.ServerConfig``, and the options
    (a dict, as twistd's are) hold every option's resolved value under its name."""

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
        [o.name, None, None, o.help_text(), _named(o.name, o.coerce)]
        for o in cfg.OPTIONS
    ]

    config: cfg.ServerConfig

    def __init__(self) -> None:
        super().__init__()
        for rep in cfg.REPEATABLE:
            self[rep.name] = []
        self.argv: list[str] = []

    def parseOptions(self, options: list[str] | None = None) -> None:
        # kept for --workers: the other processes get the same command line
        self.argv = list(options) if options is not None else []
        twistd_options: Any = getattr(self, "parent", None)
        if twistd_options is None:   # not under twistd: raise as usual
            super().parseOptions(options)
            return
        # Under twistd, which would print its whole --help before the error: one line.
        install_excepthook()
        try:
            super().parseOptions(options)
            # twistd's --pidfile is written after the listeners are bound; a missing
            # directory would make twistd log a traceback while cleaning up
            pidfile = twistd_options.get("pidfile")
            directory = os.path.dirname(os.path.abspath(pidfile)) if pidfile else ""
            if directory and not os.path.isdir(directory):
                raise usage.UsageError(f"--pidfile {pidfile}: directory {directory} "
                                       "does not exist")
        except usage.UsageError as e:
            report(str(e))
            raise SystemExit(1) from None

    def _repeat(self, name: str, value: str) -> None:
        try:
            self[name].append(cfg.REPEATABLE_BY_NAME[name].check(value))
        except cfg.ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def opt_listen(self, endpoint: str) -> None:
        self._repeat("listen", endpoint)

    def opt_trusted_proxy(self, address: str) -> None:
        self._repeat("trusted-proxy", address)

    # One line for --help (usage.Options shows docstrings without dedenting them).
    opt_listen.__doc__ = cfg.REPEATABLE_BY_NAME["listen"].help_text()
    opt_trusted_proxy.__doc__ = cfg.REPEATABLE_BY_NAME["trusted-proxy"].help_text()

    def postOptions(self) -> None:
        from_file: dict[str, Any] = {}
        if self["config"]:
            try:
                from_file = cfg.load_file(self["config"])
            except cfg.ConfigError as e:
                raise usage.UsageError(str(e)) from None
        given = {k: v for k, v in self.items()
                 if k in cfg.BY_NAME or k in cfg.REPEATABLE_BY_NAME}
        try:
            self.config = cfg.resolve(given, from_file)
        except cfg.ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self.update(self.config.values())
        # twistd's log lines through easync's observer (easync.logfile) unless the
        # command line chose --logger or --syslog
        from easync.logfile import install_default

        install_default(getattr(self, "parent", None),
                        rotate_size=self.config.listen.log_rotate_size)

    def settings(self) -> Settings:
        """The ``Settings`` these options describe (a copy of ``config.settings``)."""
        return replace(self.config.settings)


def makeService(options: Options, reactor: Any = None) -> MultiService:
    """The whole server: the SQL store, then one HTTP(S) listener per endpoint."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor
        reactor = default_reactor
    from backends.sql.authstore import SqlAuthStore
    from backends.sql.database import safe_url
    from backends.sql.pgnotify import change_hub
    from backends.sql.store import SqlStore
    from easync.auth import build_auth
    from easync.http.limits import ConnectionLimits
    from easync.http.listen import Listeners
    from easync.http.resource import make_site

    config = options.config
    listen = config.listen
    top = MultiService()

    try:
        store = SqlStore(reactor, config.store.db)
    except Exception as e:  # noqa: BLE001 - a URL the engine refuses, a missing driver
        raise usage.UsageError(f"--db {safe_url(config.store.db)}: {one_line(e)}"
                               ) from None
    # first: the database opened before any other service starts (DatabaseCheck)
    DatabaseCheck(store).setServiceParent(top)
    store.setName("store")
    store.setServiceParent(top)

    # The change hub: LISTEN/NOTIFY on PostgreSQL; on SQLite in-process, plus a poller
    # for other processes' writes (backends.sql.pgnotify.change_hub).
    notifier, hub_services = change_hub(reactor, store, config.store.db,
                                        config.store.node_name)
    for service in hub_services:
        service.setServiceParent(top)

    items: Any = store
    if config.store.backend == "crm":
        # contacts, events and tasks in a CRM, mirrored in --db (backends/crm)
        from backends.crm import make_store

        try:
            items = make_store(reactor, store, config.crm, notifier)
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        items.setName("crm")
        items.setServiceParent(top)
    server = EasServer(users=store, items=items, state=store,
                       notifier=notifier, clock=reactor, settings=options.settings())
    # tombstones purged and idle devices forgotten, a short batch at a time
    # (easync.retention); with several processes one batch runs at a time (the store's
    # retention lock)
    from easync.retention import Retention

    retention = Retention(reactor, store, tombstone_max_age=config.store.tombstone_max_age,
                          device_max_idle=config.store.device_max_idle,
                          deleted_keep=config.store.deleted_keep,
                          interval=config.store.purge_interval)
    retention.setName("retention")
    retention.setServiceParent(top)
    retention.register(server.metrics)
    listeners = Listeners(top, reactor, listen.tls_cert)
    _push_services(listeners, server, store, listen, reactor,
                   health=_health_check(reactor, store, notifier, hub_services))
    # Who may sync: the login-password checker (local or LDAP) wrapped in the
    # ActiveSync-password policy, and the account service (easync.auth).
    from backends.crm.checker import crm_checker

    try:
        auth = build_auth(config, server, SqlAuthStore(store), reactor,
                          primaries={"crm": lambda cfg, srv, r: crm_checker(cfg.crm, srv, r)})
    except ValueError as e:
        raise usage.UsageError(str(e)) from None
    for auth_service in auth.services:
        auth_service.setServiceParent(top)
    server.accounts = auth.accounts
    # what devices delete is kept, listed and restored (easync.deleted); the alarm of a
    # Sync deleting most of a folder goes to the audit log too
    _deleted_items(server, store, items, reactor, config.store.backend)
    # make_site: the request-size limit, no tracebacks to clients, one log line per request;
    # the header timeout and the per-address cap (easync.http.limits), per process.
    limits = ConnectionLimits(reactor, header_timeout=listen.header_timeout,
                              max_per_address=listen.max_connections_per_address,
                              drain_timeout=listen.idle_timeout)
    site = make_site(server, auth.door, timeout=listen.idle_timeout, limits=limits)
    # The account page (/account/): on these listeners, or only on --account-listen.
    from easync.account.serve import install as install_account_page

    install_account_page(listeners, site, server, listen, reactor)

    # --workers: every process binds the ports with SO_REUSEPORT (easync.workers)
    if listen.workers > 1:
        try:
            workers.check_supported()
        except RuntimeError as e:
            raise usage.UsageError(str(e)) from None
    for i, endpoint in enumerate(listen.endpoints):
        # the cap in front of every listener's factory, before TLS: a refused
        # connection costs no handshake
        listeners.add(f"listen-{i}", endpoint, site, option="--listen", limits=limits,
                      reuse_port=listen.workers > 1)
    if listen.workers > 1:
        if workers.worker_number() == 0:
            twistd_options = getattr(options, "parent", None) or {}
            pool = workers.WorkerPool(reactor, listen.workers, options.argv,
                                      twistd_options)
            pool.setServiceParent(top)
            # SIGUSR1 to this process (logrotate): each worker reopens its own file too
            import signal

            from easync.logfile import on_rotate

            on_rotate(lambda: pool.signal_all(signal.SIGUSR1))
        else:
            workers.ParentWatch(reactor).setServiceParent(top)
    return top


def _deleted_items(server: EasServer, store: Any, items: Any, reactor: Any,
                   backend: str) -> None:
    """``server.deleted`` (the account page's list and restore) and the audit of the
    mass-delete alarm."""
    from easync.deleted import DeletedItems
    from easync.interfaces import ChangeHint
    from easync.model import User
    from easync.syncengine import publish_to_holders

    accounts = server.accounts

    async def audit(actor: str | None, user: str, action: str, detail: str) -> None:
        if accounts is not None:
            await accounts.audit_raw(actor or "easync", user, action, detail, "")

    async def publish(user_id: int, folder_id: str, results: list[Any]) -> None:
        # the user's devices, and in a folder others hold (shared) theirs too
        await publish_to_holders(server, User(id=user_id, name=""), folder_id,
                                 ChangeHint.of(results, None))

    server.mass_deletes.audit = audit
    server.deleted = DeletedItems(store, items, reactor, backend=backend, publish=publish,
                                  audit=audit)
    if accounts is not None:
        accounts.deleted = server.deleted


def _health_check(reactor: Any, store: Any, notifier: Any,
                  hub_services: list[Any]) -> HealthCheck:
    """``/healthz`` (easync.health): a one-row read of the store's database, and the
    change hub: its services running, and on PostgreSQL its LISTEN connection up."""
    from twisted.internet.defer import Deferred

    from easync.health import HealthCheck

    def database() -> Deferred[list[tuple[Any, ...]]]:
        # reads a table (SQLite: the file), not only the connection
        return Deferred.fromCoroutine(store.raw_query("SELECT 1 FROM users LIMIT 1"))

    def hub() -> str | None:
        for service in hub_services:
            if not service.running:
                return f"{service.name} is not running"
        if getattr(notifier, "connected", True) is False:
            return "not listening for other nodes' changes (reconnecting to the database)"
        return None

    return HealthCheck(reactor, database, hub)


class DatabaseCheck(Service):
    """Opens the store's database when twistd starts the service tree, in this thread,
    before the reactor runs and the other services start (``SqlStore.open_blocking``):
    a database that cannot be opened (PostgreSQL unreachable, a SQLite file in a
    missing directory, a schema newer than this easync) stops ``twistd easync`` with
    one line (``StartupError``) instead of leaving a server that answers 503.  One lost
    later is the store's business: 503 until it is back."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.setName("database-check")

    def startService(self) -> None:
        super().startService()
        try:
            self.store.open_blocking()
        except Exception as e:  # noqa: BLE001 - any driver's error means the same here
            from backends.sql.database import safe_url

            reason = one_line(e) or type(e).__name__
            message = f"cannot open the database {safe_url(self.store.url)}: {reason}"
            log.error("{message}", message=message)
            raise StartupError(message) from None


def _push_services(listeners: Listeners, server: EasServer, store: Any,
                   listen: cfg.ListenConfig, reactor: Any,
                   health: HealthCheck | None = None) -> None:
    """Held requests recorded for easync-admin (which node holds which device), and
    the /metrics listener (with /healthz) when --metrics-listen is given."""
    from easync.metrics import metrics_site, watch
    from easync.push import HoldRecorder, Holds

    top = listeners.top
    # with --workers, one row-writer per process: worker i records as NODE/wI
    suffix = f"/w{workers.worker_number()}" if listen.workers > 1 else ""
    recorder = HoldRecorder(store, reactor, notifier=server.notifier, node_suffix=suffix)
    recorder.setName("held-requests")
    recorder.setServiceParent(top)
    server.holds = Holds(server.notifier, reactor, recorder)
    # the collector's pauses: held requests frozen out of its way (easync.gctune)
    from easync.gctune import GcTuning

    holds = server.holds
    GcTuning(reactor, held=lambda: len(holds), freeze=listen.gc_freeze
             ).setServiceParent(top)
    # a bounded amount of I/O and thread results per reactor turn (easync.turns): a
    # burst of logins or of closes (20,000 connections dropped at once) spread over
    # turns; epoll asked for easync.pollbound.MAX_EVENTS events a poll at most
    from easync.pollbound import bound_poll
    from easync.turns import TurnBudget

    bound_poll(reactor)
    TurnBudget(reactor).setServiceParent(top)
    # answers sent in the turn they are written, not after a poll (easync.sendnow)
    from easync.sendnow import send_now

    send_now(reactor)
    if listen.metrics_listen == "off":
        return
    watch(server.metrics, server)
    description = listen.metrics_listen
    if listen.workers > 1:
        try:
            description = workers.nth_endpoint(description, workers.worker_number())
        except ValueError as e:
            raise usage.UsageError(f"--metrics-listen: {e}") from None
    listeners.add("metrics", description, metrics_site(server.metrics, health),
                  option="--metrics-listen")
