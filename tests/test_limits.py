"""The pieces of easync.http.limits (issue #10 point 6) on a clock the test drives;
tests/test_e2e_limits.py checks the same through twistd."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

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
