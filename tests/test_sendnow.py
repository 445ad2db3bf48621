"""Answers sent in the turn they are written (``easync.sendnow``, issue #12).

Twisted's TCP transport sends only after a poll reports the socket writable;
``send_now`` tries the send at the end of the turn that wrote, and leaves whatever the
socket does not take to Twisted's buffering.  Here, on a real plain TCP and a real TLS
listener (Twisted's TLS over the same TCP transport, as ``--listen ssl:`` serves) in this
process, with real client sockets in threads:

* a small answer written in two writes (headers, body: as twisted.web writes an
  ActiveSync response, MS-ASHTTP 2.2.2) goes out by the immediate path (counted), no
  fallback to the reactor;
* writes far beyond the socket buffer arrive whole and in order;
* writes followed by ``loseConnection`` deliver every byte, then the close;
* a reader that reads nothing until the server has had to buffer gets everything
  (the fallback path was taken: counted);
* a streaming producer registered on the transport is paused and resumed and its
  bytes all arrive.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from easync import tls
from easync.sendnow import SendNow, send_now, unsend_now

#: 4 MiB of 4-byte big-endian counters: any loss, duplication or reordering shows
BIG = 4 << 20
PATTERN = b"".join(i.to_bytes(4, "big") for i in range(BIG // 4))
CHUNK = 64 << 10


class Server(Protocol):
    """Line commands: ``small``, ``big N``, ``close N``, ``produce N``."""

    def dataReceived(self, data: bytes) -> None:
        words = data.split()
        cmd, n = words[0], int(words[1]) if len(words) > 1 else 0
        self.factory.transports.append(self.transport)  # type: ignore[attr-defined]
        if cmd == b"small":
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
            self.transport.write(b"body")
        elif cmd in (b"big", b"close"):
            for off in range(0, n, CHUNK):
                self.transport.write(PATTERN[off:min(off + CHUNK, n)])
            if cmd == b"close":
                self.transport.loseConnection()
        elif cmd == b"produce":
            producer = Producer(self.transport, n)
            self.factory.producers.append(producer)  # type: ignore[attr-defined]
            self.transport.registerProducer(producer, True)
            reactor.callLater(0, producer.pump)


class Producer:
    """A push producer writing ``n`` bytes of PATTERN, 64 KiB a turn while not paused."""

    def __init__(self, transport: Any, n: int) -> None:
        self.transport, self.n, self.sent = transport, n, 0
        self.paused = False
        self.pauses = 0

    def pump(self) -> None:
        if self.paused or self.sent >= self.n:
            return
        self.transport.write(PATTERN[self.sent:self.sent + CHUNK])
        self.sent += CHUNK
        if self.sent >= self.n:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
        else:
            reactor.callLater(0, self.pump)

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            reactor.callLater(0, self.pump)

    def stopProducing(self) -> None:
        self.sent = self.n


@pytest.fixture
def sender() -> Iterator[SendNow]:
    s = send_now(reactor)
    needs.require(None if s is not None else "not the epoll reactor (Linux), or EASYNC_SEND_NOW=0")
    yield s
    unsend_now(reactor)


@pytest.fixture(params=["tcp", "tls"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    factory = Factory.forProtocol(Server)
    factory.transports = []  # type: ignore[attr-defined]
    factory.producers = []  # type: ignore[attr-defined]
    if request.param == "tls":
        pem = tmp_path / "cert.pem"
        tls.ensure_certificate(str(pem), ["localhost"])
        desc = f"ssl:0:interface=127.0.0.1:privateKey={pem}"
    else:
        desc = "tcp:0:interface=127.0.0.1"
    port = pytest_twisted.blockon(serverFromString(reactor, desc).listen(factory))
    yield {"port": port.getHost().port, "tls": request.param == "tls", "factory": factory}
    pytest_twisted.blockon(port.stopListening())


def _connect(lst: dict[str, Any]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", lst["port"]), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 10)
    if lst["tls"]:
        ctx = ssl._create_unverified_context()
        sock = ctx.wrap_socket(sock)
    return sock


def _read(sock: socket.socket, n: int | None) -> bytes:
    """``n`` bytes, or (None) everything until the server closes."""
    out = bytearray()
    while n is None or len(out) < n:
        data = sock.recv(1 << 16)
        if not data:
            break
        out += data
    return bytes(out)


def _client(lst: dict[str, Any], line: bytes, n: int | None,
            gate: threading.Event | None = None) -> bytes:
    with _connect(lst) as sock:
        sock.sendall(line)
        if gate is not None:
            assert gate.wait(60)
        return _read(sock, n)


@pytest_twisted.ensureDeferred
async def test_a_small_answer_goes_out_at_once(sender: SendNow,
                                               listener: dict[str, Any]) -> None:
    immediate, fallback = sender.immediate, sender.fallback
    for _ in range(5):
        got = await deferToThread(_client, listener, b"small\n", 42)
        assert got == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
    # one flush per answer, both writes in it (TLS: the handshake's flights too)
    assert sender.immediate - immediate >= 5
    assert sender.fallback == fallback


@pytest_twisted.ensureDeferred
async def test_large_writes_arrive_whole_and_in_order(sender: SendNow,
                                                      listener: dict[str, Any]) -> None:
    got = await deferToThread(_client, listener, b"big %d\n" % BIG, BIG)
    assert len(got) == BIG and got == PATTERN


@pytest_twisted.ensureDeferred
async def test_write_then_lose_connection_delivers_everything(
        sender: SendNow, listener: dict[str, Any]) -> None:
    for n in (100, BIG):
        got = await deferToThread(_client, listener, b"close %d\n" % n, None)
        assert got == PATTERN[:n]


@pytest_twisted.ensureDeferred
async def test_a_reader_that_waits_gets_everything(sender: SendNow,
                                                   listener: dict[str, Any]) -> None:
    fallback = sender.fallback
    gate = threading.Event()
    reading = deferToThread(_client, listener, b"big %d\n" % BIG, BIG, gate)
    factory = listener["factory"]
    # the client reads nothing until the server holds bytes the socket refused
    for _ in range(6000):
        if factory.transports and sender.fallback > fallback:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert sender.fallback > fallback
    gate.set()
    got = await reading
    assert got == PATTERN


@pytest_twisted.ensureDeferred
async def test_a_streaming_producer_is_paused_and_resumed(
        sender: SendNow, listener: dict[str, Any]) -> None:
    gate = threading.Event()
    reading = deferToThread(_client, listener, b"produce %d\n" % BIG, None, gate)
    factory = listener["factory"]
    for _ in range(6000):
        if factory.producers and factory.producers[0].pauses:
            break
        await deferLater(reactor, 0.01, lambda: None)
    gate.set()
    got = await reading
    assert got == PATTERN
    assert factory.producers[0].pauses >= 1


@pytest_twisted.ensureDeferred
async def test_the_turn_budget_does_not_leave_a_flush_for_a_poll(
        sender: SendNow, listener: dict[str, Any]) -> None:
    """With ``easync.turns.TurnBudget`` on (as ``twistd easync`` runs both), the flush
    goes through the reactor's ``_doReadOrWrite`` after the poll, where the budget for
    a poll's ready events must not apply: an event it skips is one the next poll
    reports again, and a flushed transport is not watched by the poll.  A budget of
    nothing left for any event after a poll's first: the answers still go out by the
    immediate path, none left to the reactor's buffering."""
    from easync.turns import TurnBudget

    budget = TurnBudget(reactor, io_budget=0.0)
    budget.startService()
    try:
        immediate, fallback = sender.immediate, sender.fallback
        for _ in range(5):
            got = await deferToThread(_client, listener, b"small\n", 42)
            assert got == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
    finally:
        budget.stopService()
    assert sender.immediate - immediate >= 5
    assert sender.fallback == fallback


@pytest.mark.parametrize("listener", ["tcp"], indirect=True)  # the plain connect is the point
@pytest_twisted.ensureDeferred
async def test_an_outgoing_connection_still_connects(sender: SendNow,
                                                     listener: dict[str, Any]) -> None:
    """The server's own client connections (the CRM store's web-service calls, LDAP)
    ask for writability while connecting, to learn that the connect is done: that is
    left to the poll, and the exchange completes."""
    from twisted.internet.defer import Deferred
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    assert not listener["tls"]

    class Client(Protocol):
        def __init__(self) -> None:
            self.got = b""
            self.done: Deferred[bytes] = Deferred()

        def connectionMade(self) -> None:
            self.transport.write(b"small\n")

        def dataReceived(self, data: bytes) -> None:
            self.got += data
            if len(self.got) >= 42 and not self.done.called:
                self.done.callback(self.got)

    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", listener["port"],
                                             timeout=10), client)
    got = await client.done.addTimeout(10, reactor)
    client.transport.loseConnection()
    assert got == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
