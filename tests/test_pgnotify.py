"""The change hub across nodes (backends.sql.pgnotify) against a real PostgreSQL.

Two ``PgNotifier`` in this process stand for two nodes; each test has its own channel
so that other test sessions on the same server cannot interfere.  Skipped, with the
reason, when PostgreSQL is not reachable (with CI=true: failed).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import needs
import pytest
import pytest_twisted
from hubtest import Heard
from pgtest import PG_ADMIN_URL, fresh_database, terminate, unreachable
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface.verify import verifyObject

from backends.sql.pgnotify import (
    CHANNEL,
    MAX_PAYLOAD,
    PgNotifier,
    announce,
    change_hub,
    decode_hinted,
    decode_payload,
    encode_payloads,
)
from easync.interfaces import ChangeHint, IChangeNotifier
from easync.notify import LocalNotifier

_channels = itertools.count()


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="module")
def pg() -> str:
    needs.require(unreachable())
    return PG_ADMIN_URL


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await deferLater(_reactor(), 0.005)


async def within(d: Deferred[Any], timeout: float = 5.0) -> Any:
    d.addTimeout(timeout, _reactor())
    return await d


@pytest_twisted.async_yield_fixture()
async def nodes(pg: str) -> AsyncIterator[tuple[PgNotifier, PgNotifier]]:
    channel = f"easync_test_{os.getpid()}_{next(_channels)}"
    made = [PgNotifier(_reactor(), pg, f"node{i}", channel=channel) for i in (1, 2)]
    for n in made:
        n.startService()
    await until(lambda: all(n.connected for n in made))
    try:
        yield made[0], made[1]
    finally:
        for n in made:
            await n.stopService()


async def sentinel(sender: PgNotifier, receiver: PgNotifier) -> None:
    """Wait until a change sent now by ``sender`` reached ``receiver``: notifications
    arrive in order, so everything sent before has been dispatched by then."""
    d = Heard(receiver, 999_999, ["sentinel"])
    sender.publish(999_999, "sentinel")
    assert await d.first() == ["sentinel"]


# ------------------------------------------------------------------ payloads

def test_payload_round_trip() -> None:
    [p] = encode_payloads("host:1#ab", [(1, "10"), (2, "hierarchy"), (3, "a:b")])
    assert p == "host:1#ab\n1:10\n2:hierarchy\n3:a:b"
    assert decode_payload(p) == ("host:1#ab", [(1, "10"), (2, "hierarchy"), (3, "a:b")],
                                 False)
    [p] = encode_payloads("n", [], wake_all=True)
    assert decode_payload(p) == ("n", [], True)
    assert encode_payloads("n", []) == []
    assert decode_payload("n\nbad\n:1\nx:2\n4:\n5:ok") == ("n", [(5, "ok")], False)


def test_hints_travel_in_lines_an_older_node_skips() -> None:
    """A change's ChangeHint follows it as ``+<modseq> [device]``; a node that only
    knows ``decode_payload`` (the format before hints) skips those lines and still
    gets every change (it looks them up, as before)."""
    hints = {(1, "10"): ChangeHint(57, "dev A"), (2, "11"): ChangeHint(9),
             (3, "12"): ChangeHint(4, "bad\nid")}
    changes = [(1, "10"), (2, "11"), (3, "12"), (4, "hierarchy")]
    [p] = encode_payloads("n", changes, hints=hints)
    assert p == "n\n1:10\n+57 dev A\n2:11\n+9\n3:12\n4:hierarchy"
    assert decode_payload(p) == ("n", changes, False)
    assert decode_hinted(p) == ("n", [(1, "10", ChangeHint(57, "dev A")),
                                      (2, "11", ChangeHint(9)), (3, "12", None),
                                      (4, "hierarchy", None)], False)
    # a stray or malformed hint line changes nothing
    assert decode_hinted("n\n+5 x\n1:10\n+x\n+0\n2:11\n+3\n+4 y") == (
        "n", [(1, "10", None), (2, "11", ChangeHint(3))], False)
    # split payloads never separate a change from its hint
    many = [(i, str(10_000 + i)) for i in range(3000)]
    payloads = encode_payloads("node", many, hints={c: ChangeHint(7, "d") for c in many})
    assert len(payloads) > 1 and all(len(x.encode()) <= MAX_PAYLOAD for x in payloads)
    back = [c for x in payloads for c in decode_hinted(x)[1]]
    assert back == [(u, f, ChangeHint(7, "d")) for u, f in many]


class Listener:
    def __init__(self) -> None:
        self.seen: list[tuple[str, ChangeHint | None]] = []

    def on_change(self, folder_id: str, hint: ChangeHint | None) -> None:
        self.seen.append((folder_id, hint))


def test_payloads_are_split_under_the_postgresql_limit() -> None:
    changes = [(i, str(10_000 + i)) for i in range(3000)]
    payloads = encode_payloads("node", changes)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    back = [c for p in payloads for c in decode_payload(p)[1]]
    assert back == changes


def test_implements_the_interface() -> None:
    verifyObject(IChangeNotifier, PgNotifier(_reactor(), "postgresql://x@127.0.0.1/db", "n"))


def test_change_hub_for_each_database(tmp_path: Any) -> None:
    from backends.sql.poller import SqlitePoller
    from backends.sql.store import SqlStore

    notifier, services = change_hub(_reactor(), None, "postgresql://u@127.0.0.1/db", "n1")
    assert isinstance(notifier, PgNotifier) and services == [notifier]
    assert notifier.node_name == "n1"
    store = SqlStore(_reactor(), f"sqlite:///{tmp_path / 'x.sqlite'}")
    notifier, services = change_hub(_reactor(), store, store.url, None)
    assert isinstance(notifier, LocalNotifier)
    assert [type(s) for s in services] == [SqlitePoller]
    memory = SqlStore(_reactor(), "sqlite:///:memory:")
    assert change_hub(_reactor(), memory, memory.url)[1] == []
    # without --node-name: host name and process id
    unnamed = PgNotifier(_reactor(), "postgresql://u@127.0.0.1/db")
    assert unnamed.node_name.endswith(f":{os.getpid()}")


# ------------------------------------------------------------------ across nodes

@pytest_twisted.ensureDeferred
async def test_a_change_wakes_that_folder_of_that_user_on_the_other_node(nodes) -> None:
    n1, n2 = nodes
    target = Heard(n2, 1, ["10", "11"])
    same_user_other_folder = Heard(n2, 1, ["12"])
    other_user_same_folder = Heard(n2, 2, ["10"])
    assert n2.waiting == 3 and n1.waiting == 0
    n1.publish(1, "10")
    assert await target.first() == ["10"]
    await sentinel(n1, n2)
    assert not same_user_other_folder.called
    assert not other_user_same_folder.called
    assert n2.waiting == 2
    # and the other way round
    back = Heard(n1, 2, ["10"])
    n2.publish(2, "10")
    assert await back.first() == ["10"]
    assert other_user_same_folder.called          # n2's own waiter, woken at once
    same_user_other_folder.stop()
    assert n2.waiting == 0


@pytest_twisted.ensureDeferred
async def test_a_changes_hint_reaches_the_listeners_of_the_other_node(nodes) -> None:
    n1, n2 = nodes
    remote, local = Listener(), Listener()
    n2.listen(1, ["10", "11"], remote)
    n1.listen(1, ["10"], local)
    n1.publish(1, "10", ChangeHint(41, "devB"))     # a device's Sync on node 1
    assert local.seen == [("10", ChangeHint(41, "devB"))]          # at once
    n1.publish(1, "11")                              # no hint: looked up as before
    await sentinel(n1, n2)
    assert remote.seen == [("10", ChangeHint(41, "devB")), ("11", None)]
    # two changes of one folder in one reactor turn: one line, their hints merged
    n1.publish(1, "10", ChangeHint(42, "devB"))
    n1.publish(1, "10", ChangeHint(43, "devC"))
    await sentinel(n1, n2)
    assert remote.seen[2:] == [("10", ChangeHint(43, None))]   # foreign to both
    n2.unlisten(1, remote)
    n1.unlisten(1, local)
    assert n1.waiting == n2.waiting == 0


@pytest_twisted.ensureDeferred
async def test_local_waiters_are_woken_at_once_and_own_notifications_ignored(nodes) -> None:
    n1, n2 = nodes
    d = Heard(n1, 5, ["50"])
    n1.publish(5, "50")
    assert d.called                    # synchronously, not after a round trip
    assert d.folders == ["50"]
    again = Heard(n1, 5, ["50"])    # e.g. the device's next Ping
    await sentinel(n2, n1)             # n1's own NOTIFY came back meanwhile…
    assert not again.called            # … and was not taken for another change
    assert n1.received == 1            # only the sentinel
    again.stop()


@pytest_twisted.ensureDeferred
async def test_stop_unlistens(nodes) -> None:
    n1, n2 = nodes
    d = Heard(n2, 3, ["30", "31"])
    assert n2.waiting == 1
    d.stop()
    assert n2.waiting == 0
    n1.publish(3, "30")
    await sentinel(n1, n2)
    assert n2.waiting == 0 and n2.local._waiters == {}


@pytest_twisted.ensureDeferred
async def test_changes_of_one_reactor_turn_go_out_together(nodes) -> None:
    n1, n2 = nodes
    statements: list[bytes] = []
    conn = n1._conn
    assert conn is not None
    real_execute = conn.execute

    def counting(sql: bytes, *args: Any, **kw: Any) -> Any:
        statements.append(sql)
        return real_execute(sql, *args, **kw)

    conn.execute = counting  # type: ignore[method-assign]
    waiters = [Heard(n2, uid, [str(uid)]) for uid in range(1, 501)]
    for uid in range(1, 501):
        n1.publish(uid, str(uid))
    for uid, d in enumerate(waiters, 1):
        assert await d.first() == [str(uid)]
    notifies = [s for s in statements if b"pg_notify" in s]
    assert len(notifies) == 1          # 500 changes, one statement (one payload here)
    await until(lambda: n1.sent == 500)
    assert n2.received == 500


@pytest_twisted.ensureDeferred
async def test_lost_connection_answers_held_waiters_then_reconnects(nodes) -> None:
    n1, n2 = nodes
    held = Heard(n2, 7, ["70", "71", "hierarchy"])
    other = Heard(n2, 8, ["80"])
    conn = n2._conn
    assert conn is not None
    assert terminate(PG_ADMIN_URL, conn.backend_pid)
    # answered with every folder it watches, once listening again
    assert sorted(await held.first()) == ["70", "71", "hierarchy"]
    assert await other.first() == ["80"]
    assert n2.connected and n2.connects == 2 and n2.woken_on_reconnect == 2
    assert n2.waiting == 0
    # the new connection works both ways
    d = Heard(n2, 7, ["70"])
    n1.publish(7, "70")
    assert await d.first() == ["70"]
    d = Heard(n1, 7, ["71"])
    n2.publish(7, "71")
    assert await d.first() == ["71"]


@pytest_twisted.ensureDeferred
async def test_changes_published_while_disconnected_are_sent_on_reconnection(nodes) -> None:
    n1, n2 = nodes
    remote = Heard(n1, 9, ["90"])
    local = Heard(n2, 9, ["90"])
    conn = n2._conn
    assert conn is not None
    seen: list[bool] = []

    def lost(reason: Any) -> None:
        n2._on_lost(reason)
        seen.append(n2.connected)
        n2.publish(9, "90")            # the database link is down now

    conn._on_lost = lost
    terminate(PG_ADMIN_URL, conn.backend_pid)
    assert await remote.first() == ["90"]
    assert seen == [False]
    assert local.called                # this node's waiters did not wait for it


@pytest_twisted.ensureDeferred
async def test_unreachable_database_is_retried_with_backoff() -> None:
    from easync_server import free_port

    n = PgNotifier(_reactor(), f"postgresql://postgres@127.0.0.1:{free_port()}/x", "lonely",
                   backoff=(0.05, 0.2))
    n.startService()
    try:
        await until(lambda: n._failures >= 3, timeout=5)
        assert not n.connected
        d = Heard(n, 1, ["1"])
        n.publish(1, "1")              # local waiters still work
        assert d.folders == ["1"]
        assert n._next_delay() <= 0.2 * 1.2
    finally:
        await n.stopService()
    assert n._retry is None


@pytest_twisted.ensureDeferred
async def test_silent_dead_connection_is_found_by_the_liveness_check(pg: str) -> None:
    """A link that stops answering without being closed (a frozen network path)."""
    from twisted.protocols import portforward

    frozen: list[Any] = []

    class Freezable(portforward.ProxyFactory):
        def buildProtocol(self, addr: Any) -> Any:
            p = super().buildProtocol(addr)
            frozen.append(p)
            return p

    from urllib.parse import urlsplit

    parts = urlsplit(pg)
    port = _reactor().listenTCP(0, Freezable(parts.hostname, parts.port or 5432),
                                interface="127.0.0.1")
    via = pg.replace(parts.netloc, f"{parts.username}@127.0.0.1:{port.getHost().port}")
    channel = f"easync_test_{os.getpid()}_{next(_channels)}"
    n = PgNotifier(_reactor(), via, "frozen", channel=channel, ping_interval=0.2,
                   ping_timeout=0.3)
    n.startService()
    try:
        await until(lambda: n.connected)
        held = Heard(n, 1, ["1"])
        for p in frozen:               # nothing passes any more, nothing is closed
            p.transport.pauseProducing()
            if p.peer is not None:
                p.peer.transport.pauseProducing()
        assert await held.first(5) == ["1"]   # answered once reconnected
        assert n.connected and n.connects == 2
    finally:
        await n.stopService()
        await port.stopListening()
        for p in frozen:
            p.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_stop_sends_what_is_left_then_closes(nodes) -> None:
    n1, n2 = nodes
    d = Heard(n2, 4, ["40"])
    n1.publish(4, "40")
    await n1.stopService()             # before the reactor turn that would flush
    assert await d.first() == ["40"]
    assert n1._conn is None
    n1.startService()                  # (the fixture stops it again)
    await until(lambda: n1.connected)


# ------------------------------------------------------------------ other writers

@pytest_twisted.ensureDeferred
async def test_announce_from_another_process_wakes_the_nodes(pg: str, tmp_path: Any) -> None:
    from backends.sql.store import SqlStore

    with fresh_database("announce") as url:
        node = PgNotifier(_reactor(), url, "server")
        assert node.channel == CHANNEL
        node.startService()
        store = SqlStore(_reactor(), url)      # as easync-admin opens it
        await store.open()
        try:
            await until(lambda: node.connected)
            d = Heard(node, 12, ["34"])
            untouched = Heard(node, 12, ["35"])
            assert await announce(store, 12, ["34", "34"]) is True
            assert await d.first() == ["34"]
            assert not untouched.called
            untouched.stop()
            # with the folder's modseq: a hint, the write being no device's own
            heard = Listener()
            node.listen(12, ["34"], heard)
            assert await announce(store, 12, ["34"], modseqs={"34": 77}) is True
            await until(lambda: bool(heard.seen))
            assert heard.seen == [("34", ChangeHint(77))]
            node.unlisten(12, heard)
        finally:
            await store.close()
            await node.stopService()
    sqlite = SqlStore(_reactor(), f"sqlite:///{tmp_path / 'a.sqlite'}")
    assert await announce(sqlite, 1, ["2"]) is False   # the server's poller sees it
