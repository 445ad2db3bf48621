"""Issue #13 point 5: the reason phrase of a 429 is "Too Many Requests" (RFC 6585
section 4; MS-ASHTTP 2.2.2.1 lists no 429, easync's lockout answer is plain HTTP), not
twisted.web's "Unknown Status", on every easync site (they share ``EasRequestFactory``)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientCreator, Protocol
from twisted.web.resource import Resource
from twisted.web.server import Request

from easync.http.listen import site
from easync.http.resource import EasRequestFactory


class Answer(Resource):
    isLeaf = True

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(self.code)
        return b"x"


class Collect(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.data)


async def status_line(code: int) -> bytes:
    """The status line a real listener sends for a resource answering ``code``."""
    port = reactor.listenTCP(0, site(Answer(code), request_factory=EasRequestFactory,  # type: ignore[attr-defined]
                                     timeout=None), interface="127.0.0.1")
    try:
        proto = await ClientCreator(reactor, Collect).connectTCP(  # type: ignore[no-untyped-call]
            "127.0.0.1", port.getHost().port)
        proto.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await proto.done
    finally:
        await port.stopListening()
    return data.split(b"\r\n", 1)[0]


@pytest_twisted.ensureDeferred
async def test_429_says_too_many_requests() -> None:
    assert await status_line(429) == b"HTTP/1.1 429 Too Many Requests"


@pytest_twisted.ensureDeferred
async def test_known_codes_keep_their_phrases() -> None:
    assert await status_line(503) == b"HTTP/1.1 503 Service Unavailable"
