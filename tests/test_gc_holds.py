"""Held requests and Python's garbage collector (``easync.gctune``, issue #12 point 2).

``--gc-freeze`` moves long-lived objects — above all held Pings — into the collector's
permanent generation (``gc.freeze()``), where a full collection does not walk them.  A
frozen object is still freed by reference counting, but never as part of a reference
cycle: so each way a held request ends must leave no cycle through its (frozen)
objects.  Here the site of ``test_push_http`` (a real socket, raw HTTP/1.1, SQLite)
holds a Ping or a Sync; everything alive is frozen; the hold ends — answered after a
change (MS-ASCMD 2.2.1.13 Ping Status 2, 2.2.1.21 Sync with Wait), at its heartbeat
(Ping Status 1, an empty Sync), superseded by the device's next long poll, or dropped
with its connection — and a collection of the unfrozen objects (what the collector does
with ``--gc-freeze on``) must leave no part of the request alive.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import needs
import pytest
import pytest_twisted
import test_push_http
from test_push_http import Raw, Web, add_contact, held, ping_body, prime, sync_body, until
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Request

from easync.gctune import FREEZE_INTERVAL, GcTuning
from easync.wbxml import E

# every test here measures wall-clock time: alone under pytest-xdist (tests/conftest.py)
pytestmark = pytest.mark.solo

#: the site of test_push_http (a fixture), as "push_site"
push_site = test_push_http.web


async def turns(n: int = 10) -> None:
    for _ in range(n):
        await deferLater(reactor, 0, lambda: None)


@pytest.fixture
def frozen() -> Iterator[None]:
    """Whatever a test freezes is unfrozen after it (a pytest process must not keep it)."""
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def held_request() -> Request:
    """The one request not finished yet (the held one)."""
    gc.collect()
    (request,) = [o for o in gc.get_objects() if isinstance(o, Request) and not o.finished]
    return request


async def end(web: Web, proto: Raw, how: str, command: str, cid: str) -> Raw | None:
    """End the held request ``how``; the new long poll when ``how`` is "superseded"."""
    newer = None
    if how == "change":
        await add_contact(web, cid, "Woken")
        await web.answer(proto)
    elif how == "heartbeat":
        web.clock.advance(300)
        await web.answer(proto)
    elif how == "superseded":         # the device's next Ping ends this one (Status 1)
        newer = await web.send("Ping", ping_body(300, cid))
        await web.answer(proto)
    elif how == "close":
        proto.transport.loseConnection()
    elif how == "reset":
        proto.transport.abortConnection()
    if how in ("change", "heartbeat", "superseded"):
        proto.transport.loseConnection()    # (the answered connection goes too)
    await proto.closed
    still = 1 if how == "superseded" and command == "Ping" else 0
    await until(lambda: web.server.holds.counts[command] == still)
    await turns()
    return newer


ENDS = ["change", "heartbeat", "superseded", "close", "reset"]


@pytest.mark.parametrize("command", ["Ping", "Sync"])
@pytest.mark.parametrize("how", ENDS)
@pytest_twisted.ensureDeferred
async def test_an_ended_hold_is_freed_without_a_full_collection(
        push_site: Web, frozen: None, command: str, how: str) -> None:
    web = push_site
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    if command == "Ping":
        proto = await web.send("Ping", ping_body(300, cid))
    else:
        proto = await web.send("Sync", sync_body(cid, key, E("AirSync:HeartbeatInterval",
                                                             "300")))
    await held(web, command)
    hold = web.server.holds.by_device[(web.user.id, "devA")]
    await until(lambda h=hold: h._waiter is not None)   # the handler waits on it
    request = held_request()
    watched = [weakref.ref(request), weakref.ref(request.channel),
               weakref.ref(request.transport), weakref.ref(hold._waiter)]
    del request, hold
    gc.collect()
    gc.freeze()                         # the held request, as --gc-freeze leaves it
    before = gc.get_freeze_count()
    newer = await end(web, proto, how, command, cid)
    gc.collect()                        # every generation, the permanent one excepted
    gc.collect()
    alive = [type(r()).__name__ for r in watched if r() is not None]
    assert alive == [], f"kept alive by a cycle through frozen objects: {alive}"
    # its ~90 frozen objects (and the young ones it made) went with it (reference counting)
    assert before - gc.get_freeze_count() >= 60
    if newer is not None:
        newer.transport.abortConnection()
        await newer.closed


@pytest_twisted.ensureDeferred
async def test_held_requests_are_frozen_out_of_collections(push_site: Web, frozen: None
                                                           ) -> None:
    """With GcTuning running, held Pings are frozen within a FREEZE_INTERVAL: no later
    collection walks them (with --gc-freeze off, every full collection would)."""
    web = push_site
    tuning = GcTuning(reactor, held=lambda: len(web.server.holds))
    tuning.startService()
    try:
        await until(lambda: tuning.freezes >= 1, 5)       # the start-up freeze
        cid = web.folders["Contacts"]
        await prime(web, cid)
        protos = [await web.send("Ping", ping_body(300, cid), device=f"dev{i}")
                  for i in range(20)]
        await held(web, "Ping", 20)
        assert any(isinstance(o, Request) and not o.finished for o in gc.get_objects())
        await deferLater(reactor, FREEZE_INTERVAL * 2.5, lambda: None)
        walked = [o for o in gc.get_objects() if isinstance(o, Request) and not o.finished]
        assert walked == []
        for proto in protos:
            proto.transport.loseConnection()
        await until(lambda: len(web.server.holds) == 0)
    finally:
        tuning.stopService()
    assert not tuning._ready


@pytest_twisted.ensureDeferred
async def test_no_freeze_when_turned_off(frozen: None) -> None:
    tuning = GcTuning(reactor, held=lambda: 0, freeze=False)
    tuning.startService()
    try:
        await deferLater(reactor, 1.2, lambda: None)
        gc.collect()
        await turns()
        assert tuning.freezes == 0 and gc.get_freeze_count() == 0
    finally:
        tuning.stopService()


@pytest.mark.parametrize("tuned", [True, False], ids=["tuned", "twisted"])
@pytest_twisted.ensureDeferred
async def test_a_thread_call_leaves_no_cycle(frozen: None, tuned: bool) -> None:
    """Twisted's ThreadPool wraps each call in a closure that refers to itself: a cycle
    per database query, frozen for good when a freeze finds it waiting in the queue.
    While GcTuning runs, a call (returning or raising) leaves none."""
    pool = ThreadPool(1, 1, name="test-gc")
    pool.start()
    tuning = GcTuning(reactor, freeze=tuned, trim=False)
    tuning.startService()
    try:
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        for i in range(5):
            assert await deferToThreadPool(reactor, pool, lambda i=i: i * 2) == i * 2
        with pytest.raises(ZeroDivisionError):
            await deferToThreadPool(reactor, pool, lambda: 1 / 0)
        gc.collect()
        found = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        tuning.stopService()
        pool.stop()
    if tuned:
        # (the ZeroDivisionError's Failure and traceback are garbage of the test's frame)
        assert "cell" not in found and "function" not in found, found
    else:
        assert {"cell", "function"} <= found
    assert ThreadPool.callInThreadWithCallback.__module__ == "twisted.python.threadpool"


def test_memory_is_handed_back_after_a_mass_end() -> None:
    """``malloc_trim`` after the held requests fell to half their high-water mark (and
    by at least TRIM_MIN_DROP), once; not while they rise or dip a little."""
    count = [0]
    tuning = GcTuning(reactor, held=lambda: count[0], freeze=False)
    needs.require(None if tuning._trim is not None else "malloc_trim: not glibc")
    for n, trims in [(100, 0), (5000, 0), (4000, 0), (2600, 0), (2400, 1),
                     # from 2,400 (the mark now): not by 1,000 yet, not to half yet
                     (1500, 1), (1300, 1), (100, 2),
                     # from 100: up again, then a drop too small to count
                     (1200, 2), (300, 2)]:
        count[0] = n
        tuning.check()
        assert tuning.trims == trims, n


@pytest_twisted.ensureDeferred
async def test_an_activesync_post_makes_no_classes(push_site: Web) -> None:
    """twisted.web parses a POST's Content-Type for form fields with an email.message,
    which makes two classes (cyclic garbage) per request; an ActiveSync body is WBXML
    and is not parsed as a form (the account page's forms still are: test_account_web)."""
    web = push_site
    cid = web.folders["Contacts"]
    await prime(web, cid)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            code, _h, body = await web.call("Ping", ping_body(10, cid))   # Status 5
            assert code == 200 and body.findtext("Ping:Status") == "5"
        gc.collect()
        classes = [o.__name__ for o in gc.garbage if isinstance(o, type)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.collect()
    assert classes == []


def test_gc_pause_metrics_time_every_generation() -> None:
    """/metrics times every collection by its generation: counts, total, max and the
    histogram python_gc_pause_seconds agree."""
    from easync.metrics import GcPauses

    pauses = GcPauses().install()
    try:
        for generation in (0, 1, 2, 2):
            gc.collect(generation)
    finally:
        gc.callbacks.remove(pauses)
    assert pauses.count[0] >= 1 and pauses.count[1] >= 1 and pauses.count[2] >= 2
    assert all(pauses.max[g] > 0 for g in range(3))
    lines = pauses.lines()
    for g in range(3):
        hist = pauses.pauses[g]
        assert hist.count == pauses.count[g] and abs(hist.total - pauses.total[g]) < 1e-9
        assert f'python_gc_pause_seconds_count{{generation="{g}"}} {pauses.count[g]}' in lines
        assert (f'python_gc_pause_seconds_bucket{{generation="{g}",le="+Inf"}} '
                f'{pauses.count[g]}') in lines


@pytest.mark.parametrize(("argv", "freezes"), [([], True), (["--gc-freeze", "off"], False)])
def test_the_service_tree_has_the_tuning(tmp_path: Any, argv: list[str], freezes: bool
                                         ) -> None:
    """``twistd easync`` runs GcTuning in every process (each --workers process builds
    the same tree); ``--gc-freeze off`` keeps only the memory hand-back."""
    from easync import tap

    options = tap.Options()
    options.parseOptions(["--db", f"sqlite:///{tmp_path}/t.sqlite", "--tls-cert",
                          f"{tmp_path}/easync.pem", *argv])
    top = tap.makeService(options, reactor)
    tuning = top.getServiceNamed("gc-tuning")
    assert isinstance(tuning, GcTuning) and tuning.freeze_enabled is freezes
    assert not top.running
