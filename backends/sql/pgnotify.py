"""The change hub across processes and nodes: PostgreSQL LISTEN/NOTIFY.

Several easync processes (on one machine or many) that share one PostgreSQL database
wake each other's held Pings through that same database, with no other broker:

* ``publish(user, folder)`` wakes this process's own waiters at once (through a
  ``LocalNotifier``) and sends ``NOTIFY easync_changes, '<node id>\\n<user>:<folder>'``
  (changes published in one reactor turn go out together, several per payload);
* every node keeps one connection that ``LISTEN``\\ s on the channel.  It is a libpq
  connection in non-blocking mode whose socket the reactor watches (``addReader``):
  no thread, no blocking call.  A notification from another node wakes the local
  waiters of that user's folder; a node's own notifications (its node id starts the
  payload) are ignored;
* when that connection is lost (database restart, network, ``pg_terminate_backend``)
  the node reconnects with exponential backoff.  Changes published meanwhile wait in
  an outbox and are sent once it is back; and since other nodes' changes may have
  been missed, every held waiter is then answered with all the folders it watches:
  the devices look again instead of missing a change.  A dead connection that the
  kernel does not report is found by a ``SELECT 1`` every ``ping_interval`` seconds.

Writers outside a node (``easync-admin import``) call :func:`announce`, which sends
the same NOTIFY through the store's own connection.  With SQLite there is one node and
no LISTEN/NOTIFY: ``backends.sql.poller.SqlitePoller`` notices other processes' writes.
:func:`change_hub` picks the right hub for a database URL.

Payload format (text, at most 8000 bytes): the first line is the sender's node id,
then one ``<user id>:<folder id>`` per line; a line ``*`` means "anything may have
changed: answer every waiter" (sent when the outbox overflowed).  A change line may be
followed by its hint, ``+<modseq>`` or ``+<modseq> <device id>`` (``ChangeHint``: the
folder's modseq after the change, the device whose own write it is), which lets a
held Ping answer without reading the database; a node that does not know hint lines
skips them as malformed and looks the change up as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from easync.interfaces import ChangeHint, IChangeListener, IChangeNotifier
from easync.notify import LocalNotifier

__all__ = ["CHANNEL", "PgConnection", "PgNotifier", "announce", "announce_changes", "change_hub",
           "decode_hinted", "decode_payload", "encode_payloads"]

log = Logger()

CHANNEL = "easync_changes"
#: PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
MAX_PAYLOAD = 7900
#: payloads per NOTIFY statement
_PER_STATEMENT = 64
WAKE_ALL = "*"


# ---------------------------------------------------------------------- payloads

def _hint_line(hint: ChangeHint | None) -> str:
    if hint is None:
        return ""
    if hint.device_id is None:
        return f"\n+{hint.modseq}"
    if "\n" in hint.device_id:
        return ""                   # cannot be sent: the change goes without its hint
    return f"\n+{hint.modseq} {hint.device_id}"


def encode_payloads(node_id: str, changes: Iterable[tuple[int, str]],
                    wake_all: bool = False,
                    hints: Mapping[tuple[int, str], ChangeHint | None] | None = None
                    ) -> list[str]:
    """NOTIFY payloads for ``changes`` ((user id, folder id) pairs, with their
    ``hints`` when known), each under ``MAX_PAYLOAD`` bytes.  Folder ids holding a
    line break cannot be sent (no store makes such ids) and are left out.  A change
    and its hint line always go in the same payload."""
    head = node_id.replace("\n", " ")
    hints = hints or {}
    lines = [WAKE_ALL] if wake_all else []
    lines += [f"{user_id}:{folder_id}" + _hint_line(hints.get((user_id, folder_id)))
              for user_id, folder_id in changes if "\n" not in folder_id]
    payloads: list[str] = []
    current: list[str] = [head]
    size = len(head.encode())
    for line in lines:
        n = len(line.encode()) + 1
        if len(current) > 1 and size + n > MAX_PAYLOAD:
            payloads.append("\n".join(current))
            current, size = [head], len(head.encode())
        current.append(line)
        size += n
    if len(current) > 1:
        payloads.append("\n".join(current))
    return payloads


def decode_payload(payload: str) -> tuple[str, list[tuple[int, str]], bool]:
    """(sender node id, [(user id, folder id)], wake all?) of a payload; malformed
    lines (and hint lines) are skipped."""
    node_id, changes, wake_all = decode_hinted(payload)
    return node_id, [(u, f) for u, f, _h in changes], wake_all


def decode_hinted(payload: str
                  ) -> tuple[str, list[tuple[int, str, ChangeHint | None]], bool]:
    """(sender node id, [(user id, folder id, hint or None)], wake all?) of a
    payload; malformed lines are skipped (a malformed hint: the change goes
    unhinted)."""
    node_id, _, rest = payload.partition("\n")
    changes: list[tuple[int, str, ChangeHint | None]] = []
    wake_all = False
    for line in rest.split("\n"):
        if line == WAKE_ALL:
            wake_all = True
            continue
        if line[:1] == "+":
            seq, _, device = line[1:].partition(" ")
            if changes and changes[-1][2] is None and seq.isdigit() and int(seq) > 0:
                user_id, folder_id, _none = changes[-1]
                changes[-1] = (user_id, folder_id, ChangeHint(int(seq), device or None))
            continue
        user, sep, folder = line.partition(":")
        if sep and folder and user.isdigit():
            changes.append((int(user), folder, None))
    return node_id, changes, wake_all


def _notify_statement(count: int) -> bytes:
    calls = ", ".join(f"pg_notify($1, ${i + 2})" for i in range(count))
    return f"SELECT {calls}".encode()


def default_node_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ------------------------------------------------------------- the libpq connection

class QueryError(Exception):
    """The server answered a statement with an error."""


@implementer(IReadDescriptor, IWriteDescriptor)
class PgConnection:
    """One PostgreSQL connection driven by the reactor: libpq's asynchronous API
    (``PQconnectStart``/``PQconnectPoll``, ``PQsendQueryParams``, ``PQconsumeInput``)
    on a non-blocking socket that the reactor watches.  Statements run one at a time
    in the order given; notifications go to ``on_notify(channel, payload, pid)``;
    ``on_lost(reason)`` is called once if the connection fails after it was made.

    The host name in ``conninfo`` is resolved by libpq inside ``connect`` (a
    ``getaddrinfo`` call); give an address or a name in /etc/hosts.
    """

    def __init__(self, reactor: Any, conninfo: str,
                 on_notify: Callable[[str, str, int], None],
                 on_lost: Callable[[Failure], None]) -> None:
        self._reactor = reactor
        self._conninfo = conninfo
        self._on_notify = on_notify
        self._on_lost = on_lost
        self._pg: Any = None
        self._fd = -1
        self._reading = self._writing = False
        self.state = "new"          # new, connecting, ready, closed
        self._connected: Deferred[None] | None = None
        self._timeout: Any = None
        # statements: (sql, params, Deferred, timeout call)
        self._queue: list[tuple[bytes, list[bytes], Deferred[list[tuple[Any, ...]]], Any]] = []
        self._current: tuple[bytes, list[bytes], Deferred[list[tuple[Any, ...]]], Any] | None
        self._current = None
        self._rows: list[tuple[Any, ...]] = []
        self._error: str | None = None

    # -- public ------------------------------------------------------------------
    @property
    def backend_pid(self) -> int:
        return int(self._pg.backend_pid) if self.state == "ready" else 0

    def connect(self, timeout: float = 10.0) -> Deferred[None]:
        """Connect; fires when the connection is ready, fails on error or timeout."""
        from psycopg import pq

        self._connected = d = Deferred[None]()
        self.state = "connecting"
        try:
            self._pg = pq.PGconn.connect_start(self._conninfo.encode())
        except Exception as e:  # noqa: BLE001 - out of memory, bad conninfo
            self.state = "closed"
            return fail(e)
        if self._pg.status == pq.ConnStatus.BAD:
            error = self._error_text()
            self._pg.finish()
            self.state = "closed"
            return fail(ConnectionError(error))
        self._timeout = self._reactor.callLater(
            timeout, self._fail, TimeoutError(f"no connection after {timeout} s"))
        # libpq: "behave as if PQconnectPoll had last returned PGRES_POLLING_WRITING"
        self._watch(write=True, fresh=True)
        return d

    def execute(self, sql: bytes, params: Sequence[bytes] = (),
                timeout: float | None = None) -> Deferred[list[tuple[Any, ...]]]:
        """Run one statement (``$1``… placeholders, text parameters); fires with
        its rows (column values as ``str`` or None)."""
        if self.state != "ready":
            return fail(ConnectionLost("not connected"))
        d: Deferred[list[tuple[Any, ...]]] = Deferred()
        call = None
        if timeout is not None:
            call = self._reactor.callLater(
                timeout, self._fail, TimeoutError(f"no answer in {timeout} s"))
        self._queue.append((sql, list(params), d, call))
        if self._current is None:
            self._send_next()
        return d

    def close(self) -> None:
        """Close without calling ``on_lost``."""
        self._shutdown(Failure(ConnectionDone("closed")), report=False)

    # -- IReadDescriptor / IWriteDescriptor --------------------------------------
    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "PgConnection"

    def connectionLost(self, reason: Failure) -> None:
        # only called by the reactor when doRead/doWrite raised unexpectedly
        self._shutdown(reason)

    def doRead(self) -> None:
        if self.state == "connecting":
            self._connect_step()
        elif self.state == "ready":
            self._read()

    def doWrite(self) -> None:
        if self.state == "connecting":
            self._connect_step()
        elif self.state == "ready":
            self._flush()

    # -- connecting --------------------------------------------------------------
    def _watch(self, read: bool = False, write: bool = False, fresh: bool = False) -> None:
        """Watch the connection's socket for reading and/or writing (only).

        The reactor watches a duplicate of libpq's socket, which stays open until
        ``_unwatch``: libpq closes its own when it sees the server go (inside
        ``PQconsumeInput``), and epoll must be told of a descriptor before it is
        closed.  ``fresh``: duplicate it anew (while connecting, libpq may close
        its socket and open another)."""
        if fresh or self._fd < 0:
            self._unwatch()
            try:
                src = self._pg.socket if self._pg is not None else -1
            except Exception:  # noqa: BLE001 - psycopg raises when libpq has no socket
                src = -1
            if src < 0:
                return
            self._fd = os.dup(src)
        if read and not self._reading:
            self._reactor.addReader(self)
        elif not read and self._reading:
            self._reactor.removeReader(self)
        if write and not self._writing:
            self._reactor.addWriter(self)
        elif not write and self._writing:
            self._reactor.removeWriter(self)
        self._reading, self._writing = read, write

    def _unwatch(self) -> None:
        if self._reading:
            self._reactor.removeReader(self)
        if self._writing:
            self._reactor.removeWriter(self)
        self._reading = self._writing = False
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _connect_step(self) -> None:
        from psycopg import pq

        self._unwatch()
        try:
            status = self._pg.connect_poll()
        except Exception as e:  # noqa: BLE001 - psycopg raises for a failed poll
            self._fail(ConnectionError(str(e) or self._error_text()))
            return
        if status == pq.PollingStatus.READING:
            self._watch(read=True, fresh=True)
        elif status == pq.PollingStatus.WRITING:
            self._watch(write=True, fresh=True)
        elif status == pq.PollingStatus.OK:
            self._pg.nonblocking = 1
            self.state = "ready"
            self._watch(read=True, fresh=True)
            self._cancel_timeout()
            d, self._connected = self._connected, None
            if d is not None:
                d.callback(None)
        else:
            self._fail(ConnectionError(self._error_text()))

    # -- statements --------------------------------------------------------------
    def _send_next(self) -> None:
        if self._current is not None or not self._queue or self.state != "ready":
            return
        self._current = self._queue.pop(0)
        sql, params, _d, _call = self._current
        self._rows, self._error = [], None
        try:
            self._pg.send_query_params(sql, params)
        except Exception as e:  # noqa: BLE001
            self._fail(ConnectionLost(str(e)))
            return
        self._flush()

    def _flush(self) -> None:
        try:
            more = self._pg.flush()
        except Exception as e:  # noqa: BLE001
            self._fail(ConnectionLost(str(e)))
            return
        self._watch(read=True, write=bool(more))

    def _read(self) -> None:
        from psycopg import pq

        try:
            self._pg.consume_input()
        except Exception as e:  # noqa: BLE001 - "server closed the connection"
            self._fail(ConnectionLost(str(e).strip() or "connection lost"))
            return
        self._drain_notifies()
        while self._current is not None and not self._pg.is_busy():
            res = self._pg.get_result()
            if res is None:
                self._finish_current()
                continue
            if res.status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                for r in range(res.ntuples):
                    self._rows.append(tuple(
                        None if (v := res.get_value(r, c)) is None else bytes(v).decode()
                        for c in range(res.nfields)))
            else:
                msg = res.error_message
                self._error = (bytes(msg).decode("utf-8", "replace").strip()
                               if msg else str(res.status))
        self._drain_notifies()
        if self.state == "ready" and self._pg.status == pq.ConnStatus.BAD:
            self._fail(ConnectionLost(self._error_text()))

    def _finish_current(self) -> None:
        assert self._current is not None
        _sql, _params, d, call = self._current
        self._current = None
        if call is not None and call.active():
            call.cancel()
        rows, error = self._rows, self._error
        self._rows, self._error = [], None
        if error is not None:
            d.errback(QueryError(error))
        else:
            d.callback(rows)
        self._send_next()

    def _drain_notifies(self) -> None:
        while self.state == "ready":
            n = self._pg.notifies()
            if n is None:
                return
            try:
                self._on_notify(bytes(n.relname).decode(),
                                bytes(n.extra).decode("utf-8", "replace"), int(n.be_pid))
            except Exception:  # noqa: BLE001 - one bad handler must not kill the link
                log.failure("notification handler failed")

    # -- failure -----------------------------------------------------------------
    def _error_text(self) -> str:
        try:
            msg = self._pg.error_message if self._pg is not None else b""
        except Exception:  # noqa: BLE001
            msg = b""
        return bytes(msg).decode("utf-8", "replace").strip() or "connection failed"

    def _cancel_timeout(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        self._timeout = None

    def _fail(self, exc: BaseException) -> None:
        self._shutdown(Failure(exc))

    def _shutdown(self, reason: Failure, report: bool = True) -> None:
        if self.state == "closed":
            return
        was_ready = self.state == "ready"
        self.state = "closed"
        self._unwatch()
        self._cancel_timeout()
        if self._pg is not None:
            self._pg.finish()
        pending = ([self._current] if self._current else []) + self._queue
        self._current, self._queue = None, []
        for _sql, _params, d, call in pending:
            if call is not None and call.active():
                call.cancel()
            d.errback(reason)
        d_conn, self._connected = self._connected, None
        if d_conn is not None:
            d_conn.errback(reason)
        if was_ready and report:
            self._on_lost(reason)


# ------------------------------------------------------------------ the notifier

@implementer(IChangeNotifier)
class PgNotifier(Service):
    """The change hub of one node among several on one PostgreSQL database.

    ``PgNotifier(reactor, "postgresql://…", "node-1")``; start it as a service.
    ``node_name`` (default ``hostname:pid``) names the node in logs; the payloads
    carry a node id made of it and a random suffix, so two nodes never take each
    other's notifications for their own even with the same name.
    """

    def __init__(self, reactor: Any, dsn: str, node_name: str | None = None, *,
                 channel: str = CHANNEL, connect_timeout: float = 10.0,
                 backoff: tuple[float, float] = (0.25, 30.0),
                 ping_interval: float = 30.0, ping_timeout: float = 10.0,
                 max_outbox: int = 100_000) -> None:
        if not channel.isidentifier():
            raise ValueError(f"channel must be a plain identifier, not {channel!r}")
        self._reactor = reactor
        self.dsn = dsn
        self._node_name = node_name
        self.channel = channel
        self.local = LocalNotifier(reactor)
        self.connect_timeout = connect_timeout
        self.backoff = backoff
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_outbox = max_outbox
        self._suffix = os.urandom(4).hex()
        self._conn: PgConnection | None = None
        self._retry: Any = None          # the reconnect call
        self._pinger: Any = None         # the next liveness check
        self._failures = 0
        self._outbox: dict[tuple[int, str], ChangeHint | None] = {}
        self._overflow = False
        self._flush_call: Any = None
        self._sending = False
        self._listening = False
        # counters (for logs, tests and metrics)
        self.sent = 0            # changes sent in NOTIFYs
        self.received = 0        # changes received from other nodes
        self.connects = 0        # successful (re)connections
        self.woken_on_reconnect = 0

    # -- identity ----------------------------------------------------------------
    @property
    def node_name(self) -> str:
        if not self._node_name:
            self._node_name = default_node_name()   # after twistd forked, if it does
        return self._node_name

    @property
    def node_id(self) -> str:
        return f"{self.node_name}#{self._suffix}"

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.state == "ready" and self._listening

    # -- IChangeNotifier ---------------------------------------------------------
    @property
    def waiting(self) -> int:
        return self.local.waiting

    def listen(self, user_id: int, folder_ids: list[str], listener: IChangeListener) -> None:
        self.local.listen(user_id, folder_ids, listener)

    def unlisten(self, user_id: int, listener: IChangeListener) -> None:
        self.local.unlisten(user_id, listener)

    def publish(self, user_id: int, folder_id: str, hint: ChangeHint | None = None) -> None:
        """Wake this node's waiters now; tell the other nodes in this reactor turn
        (or, while the database is unreachable, once it is back)."""
        self.local.publish(user_id, folder_id, hint)
        if "\n" in folder_id:
            return                       # cannot be sent (no store makes such ids)
        if self._overflow:
            pass                         # a wake-all goes out instead
        elif len(self._outbox) >= self.max_outbox:
            log.warn("change outbox full ({n} changes) while the database is "  # noqa: G010
                     "unreachable: the other nodes will answer all their Pings instead",
                     n=len(self._outbox))
            self._outbox.clear()
            self._overflow = True
        else:
            key = (user_id, folder_id)
            if key in self._outbox:         # two changes, one line: their hints merged
                old = self._outbox[key]
                hint = None if old is None else old.merge(hint)
            self._outbox[key] = hint
        self._schedule_flush()

    # -- service -----------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        log.info("change hub: node {node} on PostgreSQL LISTEN/NOTIFY channel {channel}",
                 node=self.node_name, channel=self.channel)
        self._connect()

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        for call in (self._retry, self._pinger, self._flush_call):
            if call is not None and call.active():
                call.cancel()
        self._retry = self._pinger = self._flush_call = None
        conn = self._conn
        if conn is None:
            return succeed(None)
        # Send what is still in the outbox (bounded wait), then close.
        d: Deferred[None] = Deferred()
        if self.connected and (self._outbox or self._overflow) and not self._sending:
            self._flush()
        def give_up() -> None:
            if not d.called:
                d.callback(None)

        done = self._reactor.callLater(2.0, give_up)

        def check() -> None:
            if d.called:
                return
            if not self._sending or not self.connected:
                if done.active():
                    done.cancel()
                d.callback(None)
            else:
                self._reactor.callLater(0.01, check)

        check()

        def close(_: Any) -> None:
            self._conn = None
            self._listening = False
            conn.close()

        return d.addCallback(close)

    # -- connection management ---------------------------------------------------
    def _conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(self.dsn, application_name=f"easync-listen {self.node_name}"[:63],
                             keepalives=1, keepalives_idle=30, keepalives_interval=10,
                             keepalives_count=3)

    def _connect(self) -> None:
        self._retry = None
        if not self.running:
            return
        try:
            conninfo = self._conninfo()
        except Exception as e:  # noqa: BLE001 - a malformed URL: retrying will not help
            log.error("change hub: bad database URL: {e}", e=e)
            return
        conn = PgConnection(self._reactor, conninfo, self._on_notify, self._on_lost)
        self._conn = conn
        d = conn.connect(self.connect_timeout)
        d.addCallback(lambda _: conn.execute(f"LISTEN {self.channel}".encode(),
                                             timeout=self.connect_timeout))
        d.addCallbacks(lambda _: self._on_listening(conn),
                       lambda f: self._on_connect_failed(conn, f))

    def _on_listening(self, conn: PgConnection) -> None:
        if conn is not self._conn:
            return
        self._listening = True
        self.connects += 1
        if self._failures or self.connects > 1:
            log.info("change hub: listening again on {channel} (backend {pid})",
                     channel=self.channel, pid=conn.backend_pid)
        self._failures = 0
        self._schedule_ping()
        self._schedule_flush()
        # Changes by other nodes may have been missed while not listening: every
        # held waiter is answered with all its folders, its device looks again.
        # (Last: waking runs the waiters' callbacks.)
        held = self.local.waiting
        if held:
            self.woken_on_reconnect += held
            log.info("change hub: answering {n} held waiter(s) after (re)connecting",
                     n=held)
            self.local.wake_all()

    def _on_connect_failed(self, conn: PgConnection, f: Failure) -> None:
        if conn is not self._conn:
            return
        conn.close()
        self._conn = None
        self._listening = False
        self._failures += 1
        delay = self._next_delay()
        log.warn("change hub: cannot listen on PostgreSQL ({error}); "  # noqa: G010
                 "retrying in {delay:.1f} s", error=f.getErrorMessage(), delay=delay)
        self._schedule_reconnect(delay)

    def _on_lost(self, reason: Failure) -> None:
        if self._conn is None:
            return
        self._conn = None
        self._listening = False
        self._sending = False
        if self._pinger is not None and self._pinger.active():
            self._pinger.cancel()
        self._pinger = None
        self._failures += 1
        delay = self._next_delay() if self._failures > 1 else 0.0
        log.warn("change hub: lost the PostgreSQL connection ({error}); "  # noqa: G010
                 "reconnecting in {delay:.1f} s", error=reason.getErrorMessage(), delay=delay)
        self._schedule_reconnect(delay)

    def _next_delay(self) -> float:
        low, high = self.backoff
        base = min(high, low * 2 ** max(0, self._failures - 1))
        # ±20 % jitter: nodes cut off together do not come back in lock step
        return base * (0.8 + 0.4 * int.from_bytes(os.urandom(2), "big") / 65535)

    def _schedule_reconnect(self, delay: float) -> None:
        if self.running and self._retry is None:
            self._retry = self._reactor.callLater(delay, self._connect)

    def _schedule_ping(self) -> None:
        if self.running and self.ping_interval > 0:
            self._pinger = self._reactor.callLater(self.ping_interval, self._ping)

    def _ping(self) -> None:
        self._pinger = None
        conn = self._conn
        if conn is None or not self.connected:
            return
        # A timeout closes the connection (and _on_lost reconnects).
        d = conn.execute(b"SELECT 1", timeout=self.ping_timeout)
        d.addCallbacks(lambda _: self._schedule_ping(), lambda _f: None)

    # -- sending -----------------------------------------------------------------
    def _schedule_flush(self) -> None:
        if self._flush_call is None and not self._sending and self.connected and (
                self._outbox or self._overflow):
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        conn = self._conn
        if conn is None or not self.connected or self._sending:
            return
        if not self._outbox and not self._overflow:
            return
        outbox = self._outbox
        changes = [k for k in outbox if "\n" not in k[1]]
        overflow = self._overflow
        payloads = encode_payloads(self.node_id, changes, wake_all=overflow,
                                   hints=outbox)[:_PER_STATEMENT]
        # what does not fit in this statement stays for the next one
        lines = sum(1 for p in payloads for line in p.split("\n")[1:]
                    if line[:1] not in ("+", WAKE_ALL))
        batch = {k: outbox[k] for k in changes[:lines]}
        self._outbox = {k: outbox[k] for k in changes[lines:]}
        self._overflow = False
        self._sending = True
        params = [self.channel.encode()] + [p.encode() for p in payloads]
        d = conn.execute(_notify_statement(len(payloads)), params, timeout=self.ping_timeout)

        def sent(_: Any) -> None:
            self._sending = False
            self.sent += len(batch)
            self._schedule_flush()

        def failed(f: Failure) -> None:
            self._sending = False
            if f.check(QueryError):
                log.error("change hub: NOTIFY refused: {e}", e=f.getErrorMessage())
                return
            # connection lost: put them back (before newer ones) for the reconnection
            merged = dict(batch)
            for key, hint in self._outbox.items():
                old = merged.get(key, hint)
                merged[key] = hint if key not in merged else (
                    None if old is None else old.merge(hint))
            self._outbox = merged
            self._overflow = self._overflow or overflow

        d.addCallbacks(sent, failed)

    # -- receiving ---------------------------------------------------------------
    def _on_notify(self, channel: str, payload: str, pid: int) -> None:
        if channel != self.channel:
            return
        node, changes, wake_all = decode_hinted(payload)
        if node == self.node_id:
            return                        # our own: the local waiters were woken already
        self.received += len(changes)
        if wake_all:
            self.local.wake_all()
        for user_id, folder_id, hint in changes:
            self.local.publish(user_id, folder_id, hint)


# --------------------------------------------------------------- other writers

async def announce(store: Any, user_id: int, folder_ids: Iterable[str],
                   source: str = "easync-admin",
                   modseqs: Mapping[str, int] | None = None) -> bool:
    """Tell the running easync nodes that these folders of this user changed: for
    writers that are not a node (``easync-admin``, the importer).  Call it after the
    write committed.

    PostgreSQL: one NOTIFY through ``store`` (an open ``SqlStore``).  SQLite: nothing
    to send, the server's ``SqlitePoller`` notices the write within its interval.
    Returns whether a notification was sent; a failure is logged, never raised (the
    write itself is done; the devices will see it at their next Sync at the latest).
    ``modseqs``: a folder's modseq after the write, sent as its hint (the write is no
    device's own) so that held Pings answer without reading the database.
    """
    return await announce_changes(store, {user_id: list(folder_ids)}, source, modseqs)


async def announce_changes(store: Any, changes: Mapping[int, Iterable[str]],
                           source: str = "easync-admin",
                           modseqs: Mapping[str, int] | None = None) -> bool:
    """:func:`announce` for several users at once (``changes``: user id → folder ids),
    packed into as few NOTIFYs as the payload size allows: a write to a folder shared
    with everyone tells thousands of holders in a handful of NOTIFYs, not one each."""
    engine = getattr(store, "engine", None)
    if getattr(engine, "name", "") != "postgres":
        return False
    node_id = f"{source}@{default_node_name()}"
    pairs = [(uid, f) for uid, fids in changes.items() for f in dict.fromkeys(fids)]
    hints = {(uid, f): ChangeHint(modseqs[f]) for uid, f in pairs
             if modseqs and modseqs.get(f, 0) > 0}
    payloads = encode_payloads(node_id, pairs, hints=hints)
    try:
        for i in range(0, len(payloads), _PER_STATEMENT):
            part = payloads[i:i + _PER_STATEMENT]
            calls = ", ".join("pg_notify(?, ?)" for _ in part)
            params: list[str] = []
            for p in part:
                params += [CHANNEL, p]
            await store.raw_query(f"SELECT {calls}", params)
    except Exception:  # noqa: BLE001
        log.failure("could not notify the easync nodes of a change")
        return False
    return bool(payloads)


# ---------------------------------------------------------------- choosing a hub

def change_hub(reactor: Any, store: Any, db_url: str,
               node_name: str | None = None) -> tuple[Any, list[Service]]:
    """The change hub for the server's database, and the services it needs started
    (after the store, before the listeners):

    * PostgreSQL: a ``PgNotifier`` (it is its own service);
    * SQLite: a ``LocalNotifier`` and a ``SqlitePoller`` that notices writes made by
      other processes (none for an in-memory database).

    ``node_name`` ``None`` or ``"auto"``: ``hostname:pid``.
    """
    if node_name == "auto":
        node_name = None                 # host name:process id, taken when started
    if db_url.split(":", 1)[0].lower() in ("postgresql", "postgres"):
        notifier = PgNotifier(reactor, db_url, node_name or None)
        notifier.setName("notifier")
        return notifier, [notifier]
    from backends.sql.poller import SqlitePoller

    local = LocalNotifier(reactor)
    if getattr(getattr(store, "engine", None), "in_memory", False):
        return local, []
    poller = SqlitePoller(reactor, store, local)
    poller.setName("sqlite-poller")
    return local, [poller]
