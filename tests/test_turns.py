"""A burst of connects and logins is served a bounded slice per reactor turn (issue #12
point 2, the ramp).

When every phone of a company reconnects at once (a server restart, a network outage
ending), the work arrives faster than one process does it.  One reactor turn used to do
all that was ready: accept every pending connect (Twisted's listening port scales its
accepts per turn without bound), handle every ready connection's data (TLS handshakes,
request heads), then resume every finished thread-pool call (database transactions,
bcrypt).  In a ramp of 5,000 devices one turn took 200 ms of CPU, and the garbage
collector then walked all it had allocated.  Here, on a real TLS listener in this
process (``easync.http.listen``: the ``ListeningReactor`` and ``BoundedAcceptPort``
every ``--listen`` port uses) and the real reactor:

* a listening port accepts at most ``MAX_ACCEPTS`` connections per event;
* with ``easync.turns.TurnBudget`` a turn handles I/O events only within its budget
  and every connect of the burst is still served (the rest stay ready: the reactor's
  poll is level-triggered);
* finished thread calls are resumed a budget at a time, all of them, in order;
* ``easync.gctune`` collects and freezes sooner when a burst allocates fast.

Budgets are given a counting clock (each reading one unit later), so the assertions
count slices instead of measuring time.  The HTTP exchange is plain HTTP/1.1 over TLS
(RFC 9112, RFC 8446): what an EAS client does before its first command (MS-ASHTTP
2.2.1: the command is an HTTP POST over TLS).
"""

from __future__ import annotations

import gc
import itertools
import socket
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import pytest
import pytest_twisted
from twisted.application.service import MultiService
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.web.resource import Resource
from twisted.web.server import Request

from easync import gctune
from easync.gctune import GcTuning
from easync.http.listen import MAX_ACCEPTS, BoundedAcceptPort, Listeners, site
from easync.turns import SlicedCalls, TurnBudget

# every test here measures wall-clock time: alone under pytest-xdist (tests/conftest.py)
pytestmark = pytest.mark.solo

BURST = 150             # > MAX_ACCEPTS * 4: Twisted's port took 100 in its first turn


class Ok(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        return b"ok"


def counting_clock() -> Any:
    """A clock that is one unit later at every reading."""
    return itertools.count().__next__


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[tuple[MultiService, int]]:
    """A real ``ssl:`` listener as ``--listen`` makes it, serving ``Ok``."""
    top = MultiService()
    listeners = Listeners(top, reactor, str(tmp_path / "easync.pem"))
    service = listeners.add("listen-0", "ssl:0:interface=127.0.0.1",
                            site(Ok(), request_factory=Request, timeout=60), option="--listen")
    top.startService()
    yield top, service._waitingForPort.result.getHost().port
    top.stopService()


class TurnCounter:
    """Counts, per reactor turn (``doIteration``), the I/O events actually handled; put
    in front of the reactor before ``TurnBudget`` (which keeps and restores it)."""

    def __init__(self) -> None:
        self.per_turn: list[int] = []
        self._polling = False
        self._rw = reactor._doReadOrWrite  # type: ignore[attr-defined]
        self._it = reactor.doIteration  # type: ignore[attr-defined]

    def __enter__(self) -> Self:
        reactor._doReadOrWrite = self.rw  # type: ignore[attr-defined]
        reactor.doIteration = self.iteration  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        del reactor._doReadOrWrite  # type: ignore[attr-defined]
        del reactor.doIteration  # type: ignore[attr-defined]

    def iteration(self, timeout: float | None) -> None:
        self.per_turn.append(0)
        self._polling = True
        try:
            self._it(timeout)
        finally:
            self._polling = False

    def rw(self, *a: Any) -> None:
        # only the events of the poll: easync.sendnow (installed by any test that
        # builds ``twistd easync``'s service) also writes through here after the poll
        if self.per_turn and self._polling:
            self.per_turn[-1] += 1
        self._rw(*a)


def connect_all(port: int, n: int) -> list[socket.socket]:
    """``n`` TCP connects from distinct loopback addresses, completed by the kernel into
    the listen queue while the reactor is not running (we are in its thread)."""
    out = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30,
                                     source_address=(f"127.0.{40 + i // 250}.{1 + i % 250}", 0))
        out.append(s)
    return out


def https_get(sock: socket.socket) -> bytes:
    """TLS handshake and one GET on a connected socket; the answer's bytes."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(sock, server_hostname="localhost") as t:
        t.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := t.recv(65536):
            data += chunk
    return data


def serve_all(socks: list[socket.socket]) -> list[bytes]:
    with ThreadPoolExecutor(48) as pool:
        return list(pool.map(https_get, socks))


@pytest_twisted.ensureDeferred
async def test_a_burst_of_connects_is_accepted_in_slices(tls_listener: Any) -> None:
    _top, port = tls_listener
    (listening,) = [p for p in gc.get_objects() if isinstance(p, BoundedAcceptPort)
                    and p.connected and p.getHost().port == port]
    per_read: list[int] = []
    read = listening.doRead

    def counted_read() -> None:
        before = listening.sessionno
        read()
        per_read.append(listening.sessionno - before)

    listening.doRead = counted_read  # type: ignore[method-assign]
    socks = connect_all(port, BURST)
    answers = await deferToThread(serve_all, socks)
    assert sum(per_read) == BURST
    assert max(per_read) == MAX_ACCEPTS, per_read          # Twisted's first turn: 100
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * BURST


@pytest_twisted.ensureDeferred
async def test_a_tls_burst_is_served_a_budget_of_events_per_turn(tls_listener: Any) -> None:
    """With an I/O budget the clock exceeds after one event, each turn handles one
    event: every handshake and request of the burst is still served (the events left
    over are reported again by the next poll)."""
    _top, port = tls_listener
    with TurnCounter() as turns:
        budget = TurnBudget(reactor, io_budget=0.5, calls_budget=1e9, clock=counting_clock())
        budget.startService()
        try:
            socks = connect_all(port, 60)
            answers = await deferToThread(serve_all, socks)
        finally:
            budget.stopService()
        assert reactor.doIteration == turns.iteration  # type: ignore[attr-defined]
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 60
    assert max(turns.per_turn) == 1
    assert budget.turns_cut > 0 and budget.events_left > 0
    # (60 connects, 60 handshakes of 2+ messages, 60 requests: hundreds of turns)
    assert sum(1 for n in turns.per_turn if n) >= 60 * 3


@pytest_twisted.ensureDeferred
async def test_finished_thread_calls_are_resumed_in_slices() -> None:
    """Results a pool thread hands to the reactor (``callFromThread``: how a database
    transaction or a bcrypt check comes back) are run a budget at a time: all of them,
    in order, over several turns."""
    budget = TurnBudget(reactor, io_budget=1e9, calls_budget=2.5, clock=counting_clock())
    budget.startService()
    ran: list[int] = []
    turn_marks: list[int] = []
    try:
        queue = reactor.threadCallQueue  # type: ignore[attr-defined]
        assert isinstance(queue, SlicedCalls)

        def hand_over() -> None:
            for i in range(20):
                reactor.callFromThread(ran.append, i)

        def mark() -> None:
            turn_marks.append(len(ran))

        # handed over from the reactor's thread, all 20 before the reactor runs any (a
        # pool thread's hand-over races with the reactor's runs: fewer, smaller cuts)
        hand_over()
        for _ in range(100):
            if len(ran) == 20:
                break
            mark()
            await deferLater(reactor, 0, lambda: None)
    finally:
        budget.stopService()
    assert ran == list(range(20))
    assert budget.calls_cut >= 5                # 3 calls a turn: 20 calls, 7 turns
    done = [*turn_marks, len(ran)]
    assert all(b - a <= 3 for a, b in itertools.pairwise(done)), done
    assert not isinstance(reactor.threadCallQueue, SlicedCalls)  # type: ignore[attr-defined]


def test_a_sliced_queue_yields_a_budget_of_items() -> None:
    q = SlicedCalls(list(range(10)), budget=2.5, clock=counting_clock())
    assert list(q) == [0, 1, 2]
    assert (q.cut, q.left) == (1, 7)
    assert list(SlicedCalls([7], budget=0, clock=counting_clock())) == [7]


@pytest_twisted.ensureDeferred
async def test_a_burst_of_allocations_brings_the_freeze_forward() -> None:
    """``GcTuning``: after ``BURST_YOUNG`` young collections since the last freeze, the
    next check (every ``BURST_CHECK`` s) collects and freezes without waiting for the
    half-second tick; a quiet process does not."""
    tuning = GcTuning(reactor, freeze=True, trim=False)
    tuning.startService()
    kept: list[Any] = []
    try:
        await deferLater(reactor, 1.2, lambda: None)       # the start-up freeze
        assert tuning._ready
        await deferLater(reactor, 0.5, lambda: None)
        assert tuning.burst_ticks == 0                       # quiet
        for _ in range(6):
            kept.extend({"n": i} for i in range(gctune.BURST_YOUNG * 800))
            await deferLater(reactor, gctune.BURST_CHECK * 1.5, lambda: None)
            if tuning.burst_ticks:
                break
        assert tuning.burst_ticks >= 1
    finally:
        tuning.stopService()
        gc.unfreeze()
        gc.collect()
    assert tuning._count_young not in gc.callbacks


@pytest_twisted.ensureDeferred
async def test_stopping_gives_pending_calls_back_once() -> None:
    """Calls still queued when the service stops run once, on the reactor's own queue."""
    budget = TurnBudget(reactor)
    budget.startService()
    ran: list[int] = []
    for i in range(3):
        reactor.threadCallQueue.append((ran.append, (i,), {}))  # type: ignore[attr-defined]
    budget.stopService()
    await deferLater(reactor, 0.05, lambda: None)
    assert ran == [0, 1, 2]
    assert type(reactor.threadCallQueue) is list  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_starting_with_calls_queued_runs_each_once() -> None:
    """Calls already queued when the service starts (a pool thread's result waiting for
    the reactor, as at twistd's start-up) run once each, in order, on the sliced queue
    (each used to be moved twice: copied into it, then rescued again — a Deferred's
    result run twice, AlreadyCalledError in the log)."""
    ran: list[int] = []
    for i in range(3):
        reactor.threadCallQueue.append((ran.append, (i,), {}))  # type: ignore[attr-defined]
    budget = TurnBudget(reactor)
    budget.startService()
    try:
        await deferLater(reactor, 0.05, lambda: None)
    finally:
        budget.stopService()
    await deferLater(reactor, 0.05, lambda: None)
    assert ran == [0, 1, 2]


@pytest_twisted.ensureDeferred
async def test_calls_queued_before_the_start_run_once() -> None:
    """Results a pool thread handed over before the service starts (twistd starts its
    services before the reactor runs, while the database pool and the CRM poller may
    already be answering) run once each, in order.  They used to run twice: the new
    queue was built as a copy of the reactor's and then given the same calls again,
    and the second ``Deferred.callback`` was an ``AlreadyCalledError`` logged "while
    calling from thread" in twistd.log at start-up."""
    from twisted.internet.defer import Deferred

    ran: list[int] = []
    fired: list[Any] = []
    d: Deferred[None] = Deferred()
    d.addCallback(fired.append)
    errors: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            errors.append(event["log_failure"])

    from twisted.logger import globalLogPublisher
    globalLogPublisher.addObserver(observe)
    budget = TurnBudget(reactor)
    try:
        for i in range(3):
            reactor.callFromThread(ran.append, i)
        reactor.callFromThread(d.callback, None)
        budget.startService()
        await deferLater(reactor, 0.05, lambda: None)
    finally:
        budget.stopService()
        globalLogPublisher.removeObserver(observe)
    assert ran == [0, 1, 2]
    assert fired == [None] and errors == []


@pytest_twisted.ensureDeferred
async def test_starting_and_stopping_while_threads_hand_over_loses_and_repeats_none(
        ) -> None:
    """A stress of the queue swap: pool threads hand over numbered calls without
    pause while the service is started and stopped again and again, from timed calls
    and from inside a thread call (the reactor iterating its queue): each call runs
    exactly once, and each thread's calls in the order it made them (Twisted's
    ``callFromThread`` contract)."""
    import threading

    ran: dict[int, list[int]] = {0: [], 1: [], 2: []}
    stop = threading.Event()
    per_thread = 3000

    def hand_over(t: int) -> None:
        for i in range(per_thread):
            if stop.is_set():
                return
            reactor.callFromThread(ran[t].append, i)
            if i % 10 == 0:
                stop.wait(0.0005)

    budget = TurnBudget(reactor, calls_budget=0.0005)
    toggles = scheduled = 0

    def toggle() -> None:
        nonlocal toggles
        toggles += 1
        if budget.running:
            budget.stopService()
        else:
            budget.startService()

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(hand_over, t) for t in ran]
        try:
            for n in range(200):
                if all(f.done() for f in futures):
                    break
                # starts and stops, each from both places
                scheduled += 1
                if (n // 2) % 2:
                    reactor.callFromThread(toggle)          # inside the queue's loop
                else:
                    reactor.callLater(0, toggle)            # a timed call
                await deferLater(reactor, 0.002, lambda: None)
        finally:
            stop.set()
            if budget.running:
                budget.stopService()
    await deferLater(reactor, 1.2, lambda: None)    # (a late rescue, then the rest)
    assert toggles == scheduled > 10
    for t, got in ran.items():
        assert got == list(range(len(got))), (t, got[:20])
        assert len(got) == per_thread
    assert type(reactor.threadCallQueue) is list  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_a_store_opening_as_the_service_starts_opens_once(tmp_path: Path) -> None:
    """twistd's start-up order, in process: the SQL store's service starts first
    (its pool thread runs the migration check and hands the result back with
    ``callFromThread``) and the turn budget after it, before the reactor turns.
    The CRM e2e run's twistd.log showed the flake this makes when the pool thread is
    quick: "while calling from thread" AlreadyCalledError, before any request.
    Here the pool thread is given time to answer first, every time."""
    import time

    from twisted.logger import globalLogPublisher

    from backends.sql.store import SqlStore

    errors: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            errors.append(event["log_failure"])

    store = SqlStore(reactor, f"sqlite:///{tmp_path / 'easync.sqlite'}")
    store.open_blocking()
    globalLogPublisher.addObserver(observe)
    budget = TurnBudget(reactor)
    try:
        opened = store.startService()
        for _ in range(200):            # the pool thread's answer is queued
            if reactor.threadCallQueue:  # type: ignore[attr-defined]
                break
            time.sleep(0.005)   # noqa: ASYNC251 - the reactor must not turn meanwhile
        assert reactor.threadCallQueue  # type: ignore[attr-defined]
        budget.startService()
        await opened
        await deferLater(reactor, 0.05, lambda: None)
        assert await store.raw_query("SELECT 1") == [(1,)]
    finally:
        budget.stopService()
        globalLogPublisher.removeObserver(observe)
        await store.stopService()
    assert errors == []
