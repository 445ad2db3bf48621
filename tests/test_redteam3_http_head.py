"""Red team 3: request heads over twisted.web's line limit (16 KB a line), against
``twistd easync`` (real TLS).

* RFC 9112 §3: a request-target longer than the server parses is answered 414 (URI
  Too Long); RFC 6585 §5: a header field too large, 431 (Request Header Fields Too
  Large).  Either way the server answers and closes at once.
* The brief's rule: bad input gets its HTTP code and a log line.  Before, such a
  line closed nothing: the connection hung (no answer) until --header-timeout, whose
  log line then blamed a slow client ("no complete request head within").
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from easync_server import RunningServer, wait_for

TIMEOUT = 60       # --header-timeout: far beyond what an answer may take


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("rt3head"),
                        args=["--header-timeout", str(TIMEOUT)]).start()
    try:
        yield srv
    finally:
        srv.stop()


def _send(server: RunningServer, data: bytes) -> tuple[bytes, float]:
    """The raw answer to ``data`` until the server closes, and how long that took."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT * 2) as s, \
            ctx.wrap_socket(s) as t:
        t.sendall(data)
        out = b""
        try:
            while chunk := t.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
    return out, time.monotonic() - t0


@pytest.mark.parametrize("size", [17_000, 300_000])
def test_a_header_line_over_the_limit_gets_431_at_once(server: RunningServer,
                                                       size: int) -> None:
    before = len(server.log_text())
    answer, took = _send(server, b"GET /account/ HTTP/1.1\r\nHost: x\r\nX-Big: "
                         + b"a" * size + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert took < TIMEOUT / 2, took      # answered and closed, not left to the timer
    # logged (at most once a minute per address, as the other connection notes)
    wait_for(lambda: "header line over 16384 bytes (HTTP 431)" in server.log_text())
    assert "no complete request head" not in server.log_text()[before:]


def test_a_request_line_over_the_limit_gets_414_at_once(server: RunningServer) -> None:
    before = len(server.log_text())
    answer, took = _send(server, b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&x="
                         + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 414 "), answer[:80]
    assert took < TIMEOUT / 2, took
    wait_for(lambda: "request line over 16384 bytes (HTTP 414)" in server.log_text()[before:])


def test_a_head_just_under_the_limit_is_served(server: RunningServer) -> None:
    answer, _took = _send(server, b"GET /account/login HTTP/1.1\r\nHost: x\r\nX-Big: "
                          + b"a" * 15_000 + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
