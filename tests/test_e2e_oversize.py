"""A request whose Content-Length is over ``--max-request-size`` is answered as soon as
its head is read — 413 on ActiveSync (RFC 9110 15.5.14 Content Too Large; MS-ASHTTP
2.2.2 lets HTTP errors through as they are) — with ``Connection: close``: the body is
not waited for, no ``100 Continue`` asks for it, and the connection closes after the
answer (the server may close it, RFC 9110 15.5.14).  Before, a declared 10 GB body had
to be uploaded in full before the 413 (stop 21's leftovers).  Through ``twistd easync``
on TLS and plain TCP; the log line names the refusal, and a phone is served meanwhile."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
from easync_server import RunningServer, free_port

PASSWORD = "oversize-pass-1"
AUTH = base64.b64encode(b"big:" + PASSWORD.encode()).decode()
QUERY = "Cmd=Sync&User=big&DeviceId=OVERSIZE01&DeviceType=iPhone"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    plain = free_port()
    srv = RunningServer(tmp_path_factory.mktemp("oversize"), [
        "--listen", f"tcp:{plain}:interface=127.0.0.1", "--max-request-size", "64K",
        "--provisioning", "off"])
    srv.plain_port = plain  # type: ignore[attr-defined]
    srv.start()
    srv.add_user("big", PASSWORD, email="big@example.org")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log_text()


def connect(srv: RunningServer, tls: bool) -> socket.socket:
    port = srv.port if tls else srv.plain_port  # type: ignore[attr-defined]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def head(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {AUTH}\r\nMS-ASProtocolVersion: 14.1\r\n"
            "Content-Type: application/vnd.ms-sync.wbxml\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def read_until_closed(sock: socket.socket, wait: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection, within ``wait`` s."""
    data = b""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.05))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except (ConnectionError, ssl.SSLError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "tcp"])
@pytest.mark.parametrize("expect", ["", "Expect: 100-continue\r\n"], ids=["plain", "expect"])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
        server: RunningServer, tls: bool, expect: str) -> None:
    sock = connect(server, tls)
    try:
        t0 = time.monotonic()
        sock.sendall(head(f"/Microsoft-Server-ActiveSync?{QUERY}", 10 * 1024 ** 3, expect))
        data, closed = read_until_closed(sock, 10)
        took = time.monotonic() - t0
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 413 "), data[:200]
    assert b"100 Continue" not in data
    assert b"\r\nconnection: close\r\n" in data.lower(), data[:400]
    assert closed, "the connection stayed open after the 413"
    assert took < 5, took


def test_the_refusal_is_logged_and_others_are_served(server: RunningServer) -> None:
    sock = connect(server, False)
    try:
        sock.sendall(head(f"/Microsoft-Server-ActiveSync?{QUERY}", 5 * 1024 ** 2))
        sock.sendall(b"\0" * 65536)             # some of the body, then nothing more
        data, closed = read_until_closed(sock, 10)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 413 ") and closed, data[:200]
    deadline = time.monotonic() + 10
    while "body over the size limit" not in server.log_text() and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [ln for ln in server.log_text().splitlines() if "body over the size limit" in ln]
    assert lines and "413" in lines[-1], server.log_text()[-2000:]
    # a request within the limit on a new connection is still answered (OPTIONS)
    sock = connect(server, False)
    try:
        sock.sendall(b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Basic " + AUTH.encode() + b"\r\n\r\n")
        data, _ = read_until_closed(sock, 3)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]


def test_a_body_within_the_limit_is_still_read(server: RunningServer) -> None:
    """A declared length at the limit is read and handled: the WBXML here is garbage,
    answered 400 or an EAS status, never 413 (MS-ASHTTP 3.2.5.1)."""
    sock = connect(server, False)
    try:
        body = b"\x03\x01\x6a\x00" + b"\x00" * (64 * 1024 - 4)
        sock.sendall(head(f"/Microsoft-Server-ActiveSync?{QUERY}", len(body)) + body)
        data, _ = read_until_closed(sock, 3)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 413"), data[:200]
