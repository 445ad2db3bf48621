"""The pieces of easync.http.limits (issue #10 point 6) on a clock the test drives;
tests/test_e2e_limits.py checks the same through twistd."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from easync.http.limits import ConnectionLimits, PerAddressFactory, RateLimitedLog


def _logger() -> tuple[Logger, list[str]]:
    lines: list[str] = []
    return Logger(observer=lambda e: lines.append(formatEvent(e))), lines


def test_one_line_per_key_and_window_with_the_count() -> None:
    """Issue #10 point 6: refusals are logged at most once per address per window,
    the ones in between reported as a count when the window ends."""
    clock = Clock()
    logger, lines = _logger()
    notes = RateLimitedLog(clock, window=60, logger=logger)
    assert notes.event("a", "refused {address}", address="1.2.3.4")
    for _ in range(7):
        assert not notes.event("a", "refused {address}", address="1.2.3.4")
    assert notes.event("b", "refused {address}", address="5.6.7.8")
    assert lines == ["refused 1.2.3.4", "refused 5.6.7.8"]
    clock.advance(60)
    assert lines[2:] == ["refused 1.2.3.4 (7 more times in the last 60 s)"]
    # still within a window: counted, reported at its end
    assert not notes.event("a", "refused {address}", address="1.2.3.4")
    clock.advance(60)
    assert lines[3:] == ["refused 1.2.3.4 (1 more times in the last 60 s)"]
    clock.advance(60)               # a quiet window ends the key: next one is logged
    assert notes.event("a", "refused {address}", address="1.2.3.4")
    assert len(lines) == 5
    notes.stop()
    assert not clock.getDelayedCalls()


def test_many_addresses_share_one_key_beyond_the_limit() -> None:
    clock = Clock()
    logger, lines = _logger()
    notes = RateLimitedLog(clock, window=60, max_keys=3, logger=logger)
    for i in range(10):
        notes.event(i, "refused {n}", n=i)
    assert lines == ["refused 0", "refused 1", "refused 2",
                     "more events from other addresses"]
    notes.stop()


class _Transport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


def _connect(factory: PerAddressFactory, host: str) -> Any:
    p = factory.buildProtocol(IPv4Address("TCP", host, 40000))
    if p is not None:
        p.makeConnection(_Transport())
    return p


def test_cap_counts_open_connections_per_address() -> None:
    """Issue #10 point 6: the N+1th connection from one address gets no protocol (the
    port closes it at once); another address is not affected; a closed connection
    frees its place; 0 means no cap."""
    limits = ConnectionLimits(Clock(), max_per_address=2)
    factory = limits.wrap(Factory.forProtocol(Protocol))
    assert isinstance(factory, PerAddressFactory)
    a1, a2 = _connect(factory, "10.0.0.1"), _connect(factory, "10.0.0.1")
    assert a1 is not None and a2 is not None
    assert _connect(factory, "10.0.0.1") is None
    assert _connect(factory, "10.0.0.2") is not None
    assert limits.open == {"10.0.0.1": 2, "10.0.0.2": 1}
    a1.connectionLost(None)
    assert _connect(factory, "10.0.0.1") is not None
    # a UNIX socket (a local proxy) is not counted
    assert factory.buildProtocol(UNIXAddress("/run/x.sock")) is not None
    off = ConnectionLimits(Clock(), max_per_address=0)
    inner = Factory.forProtocol(Protocol)
    assert off.wrap(inner) is inner


def test_site_channel_follows_the_header_timeout() -> None:
    """--header-timeout N: the site's channels are HeadTimeoutChannels with N as their
    timer; 0: twisted.web's own channel with --idle-timeout, as before."""
    from easync.handler import EasServer
    from easync.http.limits import HeadTimeoutChannel
    from easync.http.resource import make_site
    from easync.settings import Settings

    server = EasServer(users=None, items=None, state=None, notifier=None, clock=Clock(),
                       settings=Settings())
    site = make_site(server, None, timeout=600,
                     limits=ConnectionLimits(Clock(), header_timeout=7))
    channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
    assert isinstance(channel, HeadTimeoutChannel) and channel.timeOut == 7
    site = make_site(server, None, timeout=600,
                     limits=ConnectionLimits(Clock(), header_timeout=0))
    channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
    assert not isinstance(channel, HeadTimeoutChannel) and channel.timeOut == 600


class _Hold(Resource):
    """GET: held until the test finishes it (a long poll); POST: answered at once."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.held.append(request)
        return NOT_DONE_YET

    def render_POST(self, request: Any) -> bytes:
        return b"ok"


def _channel(timeout: float = 2) -> tuple[Any, StringTransport, Clock, _Hold]:
    limits = ConnectionLimits(Clock(), header_timeout=timeout)
    resource = _Hold()
    site = Site(resource, timeout=timeout)
    site.protocol = limits.channel_class()
    clock = Clock()
    channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
    channel.callLater = clock.callLater
    transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
    channel.makeConnection(transport)
    return channel, transport, clock, resource


def test_trickled_head_is_cut_at_the_timeout() -> None:
    """Issue #10 point 6: bytes of a request head do not restart the timer."""
    channel, transport, clock, _ = _channel()
    for byte in b"GET /x HTTP/1.1\r\nHost: a\r\n":
        channel.dataReceived(bytes([byte]))
        clock.advance(0.1)
        if transport.disconnecting:
            break
    assert transport.disconnecting and clock.seconds() == pytest.approx(2.0, abs=0.11)


def test_body_pauses_restart_the_timer_and_held_requests_wait() -> None:
    """Issue #10 point 6: a body whose bytes keep coming (1.5 s apart, timeout 2 s) is
    read; a request read whole and held (a long poll) is not cut however long it
    waits; after its response the keep-alive connection gets the timeout again."""
    channel, transport, clock, hold = _channel()
    channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n")
    for byte in b"body":
        clock.advance(1.5)
        assert not transport.disconnecting
        channel.dataReceived(bytes([byte]))
    assert transport.value().startswith(b"HTTP/1.1 200")
    channel.dataReceived(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(hold.held) == 1
    clock.advance(3600)
    assert not transport.disconnecting
    hold.held[0].finish()
    clock.advance(1.9)
    assert not transport.disconnecting
    clock.advance(0.2)
    assert transport.disconnecting


def test_a_response_still_going_out_is_not_idleness() -> None:
    """A big response to a slow reader (the transport's buffer full: it paused the
    channel) keeps the connection past the header timeout, the idle time counted from
    when the buffer empties; a reader that never empties it is cut once the drain
    timeout (--idle-timeout) has passed after the header timeout."""
    for drained in (True, False):
        channel, transport, clock, hold = _channel()
        channel.drain_periods = 5                 # 10 s at a 2 s header timeout
        channel.dataReceived(b"GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
        channel.pauseProducing()        # as the transport does when its buffer fills
        hold.held[0].finish()
        clock.pump([0.5] * 18)          # 9 s
        assert not transport.disconnecting
        if drained:
            channel.resumeProducing()   # all sent: idle from now on
            clock.pump([0.5] * 3)
            assert not transport.disconnecting
            clock.advance(0.5)
            assert transport.disconnecting
        else:                           # header timeout + drain timeout: 12 s
            clock.pump([0.5] * 5)
            assert not transport.disconnecting
            clock.advance(0.5)
            assert transport.disconnecting


def test_response_head_is_written_as_twisted_writes_it() -> None:
    """HeadTimeoutChannel writes a response head in one piece (issue #12 point 1: the
    cost of answering many held Pings at once); the bytes are those of twisted.web's
    own HTTPChannel, repeated headers and all (Date aside, which is the time)."""
    from twisted.web.http import HTTPChannel

    class _Many(Resource):
        isLeaf = True

        def render_POST(self, request: Any) -> bytes:
            request.setHeader(b"MS-Server-ActiveSync", b"14.1")
            request.responseHeaders.addRawHeader(b"X-Twice", b"a")
            request.responseHeaders.addRawHeader(b"X-Twice", b"b")
            request.setHeader(b"Content-Type", b"application/vnd.ms-sync.wbxml")
            return b"\x03\x01j\x00"

    def answer(channel_class: Any) -> bytes:
        site = Site(_Many(), timeout=5)
        site.protocol = channel_class
        channel = site.buildProtocol(IPv4Address("TCP", "10.0.0.1", 40000))
        channel.callLater = Clock().callLater
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 40000))
        channel.makeConnection(transport)
        channel.dataReceived(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        return b"\r\n".join(ln for ln in transport.value().split(b"\r\n")
                            if not ln.startswith(b"Date: "))

    ours = answer(ConnectionLimits(Clock(), header_timeout=2).channel_class())
    assert ours == answer(HTTPChannel)
    assert ours.startswith(b"HTTP/1.1 200 OK\r\n") and b"X-Twice: a\r\nX-Twice: b\r\n" in ours
    assert ours.endswith(b"\r\n\r\n\x03\x01j\x00")
