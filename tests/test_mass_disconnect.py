"""A mass disconnect: many held Pings whose connections close at once (issue #12).

When a NAT gateway or load balancer drops its connections, the network blips, or a
load generator exits, thousands of held Pings (MS-ASCMD 2.2.1.13: a Ping is held until
a watched folder changes or its HeartbeatInterval ends; a client that goes away simply
never reads the answer) see their connection close in the same reactor turn.  Each
used to be cancelled right there, a ``CancelledError`` thrown through its coroutine (a
``Failure`` with a traceback built per request) and a log line: 20,000 of them held the
reactor for seconds, and every other user waited.

Now a held request whose connection goes is only marked gone (``Hold.gone``) and queued
on ``Holds``' answer queue; the handlers return a slice at a time (``Holds.SLICE`` per
reactor turn), as woken ones do.  Here the server's own Site on a real socket in this
process (the ``web`` site of ``test_push_http``: raw HTTP/1.1, SQLite) holds many Pings,
their clients close (FIN) or reset (RST) all at once, and:

* the ends are processed over several reactor turns and answer slices (counted), not
  in the turn that saw the connections go;
* another device's request sent during the burst is answered before the burst is done;
* every hold is freed (held count 0, nothing on the hub, no timer left, no request
  object alive), nothing is logged as a failure, and each request has its one log
  line, "client gone" with http=499 (nothing was sent).
"""

from __future__ import annotations

import gc
import itertools

import needs
import pytest
import pytest_twisted
import test_push_http
from test_push_http import Raw, Web, log_events, ping_body, prime, until
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.web.server import Request

from easync.pollbound import bound_poll, unbound_poll

# every test here measures wall-clock time: alone under pytest-xdist (tests/conftest.py)
pytestmark = pytest.mark.solo

#: the fixtures of test_push_http
push_site = test_push_http.web
events = log_events

HELD = 600


async def hold_many(web: Web, cid: str, n: int) -> list[Raw]:
    """``n`` held Pings, one per device (dev0…), each on its own connection."""
    web.server.settings.max_devices_per_user = 0      # (one user, many devices)
    protos: list[Raw] = []
    for start in range(0, n, 100):      # (logins in batches, as phones come)
        for i in range(start, min(n, start + 100)):
            protos.append(await web.send("Ping", ping_body(300, cid), device=f"dev{i}"))
        k = len(protos)
        await until(lambda k=k: web.server.holds.counts["Ping"] == k, 60)
    holds = list(web.server.holds.by_device.values())
    await until(lambda: all(h._waiter is not None for h in holds), 30)
    return protos


@pytest_twisted.ensureDeferred
async def test_held_pings_closed_at_once_are_ended_in_slices(push_site: Web,
                                                             events: list) -> None:
    web = push_site
    holds = web.server.holds
    # one hold a slice (a slice ends once SLICE seconds are spent; 0: after its first
    # hold): the burst spans HELD turns however fast this machine is, and the test
    # counts turns, not seconds
    holds.SLICE = 0.0
    cid = web.folders["Contacts"]
    await prime(web, cid)
    await prime(web, cid, "probe")      # (its login is remembered: a quick answer)
    protos = await hold_many(web, cid, HELD)
    slices_before = holds.slices
    del events[:]
    # at most 64 socket events a reactor turn (easync.pollbound, as twistd easync does
    # with MAX_EVENTS)
    bounded = bound_poll(reactor, 64)
    needs.require(None if bounded is not None else "not the epoll reactor (Linux)")
    try:
        await _burst(web, protos, cid, events, slices_before)
    finally:
        unbound_poll(reactor)
    assert bounded.full >= 2            # the closes came 64 at a time


async def _burst(web: Web, protos: list[Raw], cid: str, events: list,
                 slices_before: int) -> None:
    holds = web.server.holds

    # another device asks something (a Ping with a heartbeat below the minimum: answered
    # at once with Status 5, MS-ASCMD 2.2.3.134.2) in the instant every held client goes
    # (half close, half reset)
    probe = Raw()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", web.port), probe)
    web.clients.append(probe)
    probe.transport.write(web.request("Ping", ping_body(10, cid), "probe"))
    for i, proto in enumerate(protos):
        if i % 2:
            proto.transport.abortConnection()
        else:
            proto.transport.loseConnection()

    # a callLater(0) per reactor turn: how many are still held, turn by turn
    held_per_turn: list[int] = []
    probe_answered_with: list[int] = []

    gone_per_turn: list[int] = []
    hub = web.server.notifier
    listening = hub.waiting

    def watch() -> None:
        held_per_turn.append(holds.counts["Ping"])
        gone_per_turn.append(listening - hub.waiting)    # (Hold.gone stops listening)
        if probe.response() is not None and not probe_answered_with:
            probe_answered_with.append(holds.counts["Ping"])
        if holds.counts["Ping"] or probe.response() is None:
            reactor.callLater(0, watch)

    reactor.callLater(0, watch)
    await until(lambda: holds.counts["Ping"] == 0 and probe.response() is not None, 60)
    for proto in protos:
        await proto.closed

    # the connections' ends seen over several turns, 64 events a turn at most (plus
    # one: the probe's own hold stops listening in the turn it is answered; its
    # lookout, made before the request's read, hands over to the hold in one turn)
    seen = [b - a for a, b in itertools.pairwise(gone_per_turn)]
    assert max(seen) <= 64 + 1 and len([n for n in seen if n]) >= 3, gone_per_turn[:30]
    # ended over many reactor turns and answer slices, not in one
    assert holds.slices - slices_before >= 3, holds.slices - slices_before
    draining = [n for n in held_per_turn if 0 < n < HELD]
    assert len(draining) >= 3, held_per_turn[:20]
    # the other device was answered while Pings of the burst were still being ended
    code, _h, body = await web.answer(probe)
    assert code == 200 and body.findtext("Ping:Status") == "5"
    assert probe_answered_with and probe_answered_with[0] > 0, probe_answered_with

    # every hold freed
    await until(web.nothing_held, 10)
    assert not holds._ready and holds._answering is None
    await deferLater(reactor, 0, lambda: None)
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, Request) and not o.finished]
    assert alive == []
    # no traceback, no failure; one line per request, saying the client went
    bad = [e for e in events if e.get("log_failure") is not None
           or e.get("log_level") is not None and e["log_level"].name in ("error", "critical")]
    assert bad == [], bad[:3]
    lines = [e for e in events if e.get("cmd") == "Ping" and "code" in e]
    gone = [e for e in lines if e["code"] == 499]
    assert sorted(e["device"] for e in gone) == sorted(f"dev{i}" for i in range(HELD))
    assert all(e["note"] == " (client gone)" for e in gone)
    assert [e["device"] for e in lines if e["code"] != 499] == ["probe"]



def test_twistd_easync_bounds_the_events_per_turn(tmp_path) -> None:
    """``twistd easync`` caps the reactor's epoll at ``MAX_EVENTS`` events a turn (each
    --workers process builds the same tree); bounding again only changes the bound."""
    from easync import tap
    from easync.pollbound import MAX_EVENTS, BoundedPoller

    needs.require(None if bound_poll(reactor, 64) is not None else
                  "not the epoll reactor (Linux)")
    unbound_poll(reactor)
    options = tap.Options()
    options.parseOptions(["--db", f"sqlite:///{tmp_path}/t.sqlite", "--tls-cert",
                          f"{tmp_path}/easync.pem"])
    try:
        tap.makeService(options, reactor)
        poller = reactor._poller
        assert isinstance(poller, BoundedPoller) and poller.max_events == MAX_EVENTS
        assert bound_poll(reactor, 64) is poller and poller.max_events == 64
    finally:
        unbound_poll(reactor)
    assert not isinstance(reactor._poller, BoundedPoller)
