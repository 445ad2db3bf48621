"""Issue #10 point 6, through ``twistd easync`` on a TLS and a plain listener:

* ``--header-timeout``: a connection that sends no complete request head in time is
  closed (silent, or trickling one byte at a time), so is a stalled request body
  and an idle keep-alive connection; a body that keeps coming and a held Ping
  (a long poll, whose request is complete) are not cut; other clients are served
  meanwhile.
* ``--max-connections-per-address``: the connection over the cap is closed at once
  (before TLS), the refusal is logged once per address and minute, and a flood of
  connections from one address does not keep another address (127.0.0.2) out.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import time
from collections.abc import Iterator

import needs
import pytest
import requests
from easync_server import RunningServer, free_port, wait_for
from pgtest import fresh_database, pg_server, unreachable

from easync.wbxml import E, decode, encode

PASSWORD = "limits-pass-1"
HEADER_TIMEOUT = 2
MARGIN = 4.0          # generous: the machine is shared


def _start(tmp_path_factory: pytest.TempPathFactory, name: str,
           args: list[str]) -> RunningServer:
    plain_port = free_port()
    srv = RunningServer(tmp_path_factory.mktemp(name), [
        "--listen", f"tcp:{plain_port}:interface=127.0.0.1", *args])
    srv.plain_port = plain_port  # type: ignore[attr-defined]
    srv.start()
    srv.add_user("lim", PASSWORD, email="lim@example.org")
    return srv


def _stop(srv: RunningServer) -> None:
    srv.stop()
    log = srv.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


@pytest.fixture(scope="module")
def timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = _start(tmp_path_factory, "timeouts", [
        "--header-timeout", str(HEADER_TIMEOUT), "--heartbeat-min", "1",
        "--provisioning", "off"])
    yield srv
    _stop(srv)


CAP = 5


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = _start(tmp_path_factory, "capped", [
        "--header-timeout", "60", "--max-connections-per-address", str(CAP)])
    yield srv
    _stop(srv)


# -- raw connections -------------------------------------------------------------------

def connect(srv: RunningServer, *, tls: bool, source: str = "127.0.0.1",
            handshake: bool = True) -> socket.socket:
    port = srv.port if tls else srv.plain_port  # type: ignore[attr-defined]
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    if tls and handshake:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


#: what is_closed() read from a socket, for read_response()
_early: dict[socket.socket, bytes] = {}


def is_closed(sock: socket.socket, wait: float) -> bool:
    """True when the server closed ``sock`` (EOF or reset) within ``wait`` seconds.
    (Data read meanwhile is kept for read_response.)"""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False
    t0 = time.monotonic()
    ready, _, _ = select.select([sock], [], [], wait)
    if not ready:
        return False
    before = sock.gettimeout()
    sock.settimeout(max(wait - (time.monotonic() - t0), 0.05))
    try:
        data = sock.recv(4096)
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:        # TLS records without application data (a ticket)
        return False
    finally:
        sock.settimeout(before)
    if not data:
        return True
    _early[sock] = _early.get(sock, b"") + data
    return False


def seconds_until_closed(sock: socket.socket, limit: float, trickle: bytes = b"",
                         step: float = 0.4) -> float | None:
    """Seconds until the server closes ``sock`` (None: still open after ``limit``),
    sending the bytes of ``trickle`` one every ``step`` seconds meanwhile."""
    t0 = time.monotonic()
    pending = list(trickle)
    while time.monotonic() - t0 < limit:
        if pending:
            try:
                sock.sendall(bytes([pending.pop(0)]))
            except (ConnectionError, ssl.SSLError):
                return time.monotonic() - t0
        if is_closed(sock, step):
            return time.monotonic() - t0
    return None


def auth_header() -> str:
    return "Basic " + base64.b64encode(f"lim:{PASSWORD}".encode()).decode()


def options_request(close: bool = False) -> bytes:
    return (b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n"
            + (b"Connection: close\r\n" if close else b"")
            + f"Authorization: {auth_header()}\r\n\r\n".encode())


def read_response(sock: socket.socket) -> bytes:
    """A whole response without body (OPTIONS, 401): its head."""
    data = _early.pop(sock, b"")
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def served(srv: RunningServer, *, tls: bool, source: str = "127.0.0.1") -> bool:
    """An OPTIONS on a new connection from ``source`` gets its 200."""
    with connect(srv, tls=tls, source=source) as sock:
        sock.sendall(options_request(close=True))
        return read_response(sock).startswith(b"HTTP/1.1 200")


SLOW_HEAD = (b"POST /Microsoft-Server-ActiveSync?Cmd=Sync HTTP/1.1\r\nHost: x\r\n"
             b"X-Padding: " + b"a" * 200 + b"\r\n\r\n")


# -- header timeout ----------------------------------------------------------------------

@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_trickled_head_is_cut_while_others_are_served(timeouts: RunningServer,
                                                      tls: bool) -> None:
    """Issue #10 point 6: a head sent a byte every 0.4 s (which restarts an idle
    timer each time) is cut within --header-timeout; a normal client is served
    meanwhile."""
    sock = connect(timeouts, tls=tls)
    t0 = time.monotonic()
    sock.sendall(SLOW_HEAD[:10])
    assert served(timeouts, tls=tls)
    elapsed = seconds_until_closed(sock, HEADER_TIMEOUT + MARGIN, SLOW_HEAD[10:])
    sock.close()
    assert elapsed is not None, "a trickled request head was never cut"
    assert time.monotonic() - t0 >= HEADER_TIMEOUT - 0.5
    assert "no complete request head within 2 s" in timeouts.log_text()


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
def test_silent_connection_is_cut(timeouts: RunningServer, tls: bool) -> None:
    """Issue #10 point 6: a connection that sends nothing — on the TLS listener not
    even a ClientHello — is closed after --header-timeout, not the idle timeout."""
    with connect(timeouts, tls=tls, handshake=False) as sock:
        assert seconds_until_closed(sock, HEADER_TIMEOUT + MARGIN) is not None


def test_stalled_body_is_cut_a_slow_one_is_not(timeouts: RunningServer) -> None:
    """Issue #10 point 6: a body that stops for --header-timeout is cut; one whose
    bytes keep coming (a pause of 1 s each, 5 s in all) is read and answered."""
    head = (b"POST /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100\r\n\r\n")
    with connect(timeouts, tls=True) as sock:
        sock.sendall(head + b"x" * 10)
        assert seconds_until_closed(sock, HEADER_TIMEOUT + MARGIN) is not None
    assert "request body stalled for 2 s" in timeouts.log_text()

    with connect(timeouts, tls=True) as sock:
        sock.sendall(head.replace(b"100", b"5"))
        assert seconds_until_closed(sock, 4.6, b"xxxxx", step=1.0) is None
        assert read_response(sock).startswith(b"HTTP/1.1 401")


def test_idle_keep_alive_is_closed(timeouts: RunningServer) -> None:
    """Issue #10 point 6 (the choice made): after a response, a keep-alive
    connection has --header-timeout to send the next request head."""
    with connect(timeouts, tls=False) as sock:
        sock.sendall(options_request())
        assert read_response(sock).startswith(b"HTTP/1.1 200")
        elapsed = seconds_until_closed(sock, HEADER_TIMEOUT + MARGIN)
        assert elapsed is not None and elapsed >= HEADER_TIMEOUT - 0.5


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_held_ping_is_not_cut(timeouts: RunningServer) -> None:
    """Issue #10 point 6: a Ping whose request is complete waits its heartbeat (6 s,
    three times the header timeout) and answers Status 1 (MS-ASCMD 2.2.3.177.11:
    the heartbeat expired with no change) on the same connection."""
    query = "Cmd={}&User=lim&DeviceId=limping&DeviceType=SmartPhone"
    headers = {"MS-ASProtocolVersion": "14.1",
               "Content-Type": "application/vnd.ms-sync.wbxml"}
    fs = requests.post(f"{timeouts.url}?{query.format('FolderSync')}", headers=headers,
                       data=encode(E("FolderHierarchy:FolderSync",
                                     E("FolderHierarchy:SyncKey", "0"))),
                       auth=("lim", PASSWORD), verify=False, timeout=30)
    assert fs.status_code == 200
    folder = next(a.findtext("FolderHierarchy:ServerId")
                  for a in decode(fs.content).iter() if a.tag == "FolderHierarchy:Add"
                  and a.findtext("FolderHierarchy:Type") == "9")    # Contacts
    body = encode(E("Ping:Ping", E("Ping:HeartbeatInterval", "6"), E(
        "Ping:Folders", E("Ping:Folder", E("Ping:Id", folder), E("Ping:Class", "Contacts")))))
    head = (f"POST /Microsoft-Server-ActiveSync?{query.format('Ping')} HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: {auth_header()}\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            + f"Content-Length: {len(body)}\r\n\r\n").encode()
    with connect(timeouts, tls=True) as sock:
        t0 = time.monotonic()
        sock.sendall(head + body)
        sock.settimeout(30)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(65536)
            assert chunk, f"the held Ping was cut after {time.monotonic() - t0:.1f} s"
            response += chunk
        head_part, _, rest = response.partition(b"\r\n\r\n")
        assert head_part.startswith(b"HTTP/1.1 200"), head_part
        length = int(next(ln.split(b":")[1] for ln in head_part.split(b"\r\n")
                          if ln.lower().startswith(b"content-length")))
        while len(rest) < length:
            rest += sock.recv(65536)
        assert time.monotonic() - t0 >= 5.5
        assert decode(rest).findtext("Ping:Status") == "1"


# -- connections per address -----------------------------------------------------------------

def refusal_lines(srv: RunningServer, address: str) -> list[str]:
    return [ln for ln in srv.log_text().splitlines()
            if f"refused a connection from {address}:" in ln]


def test_cap_per_address(capped: RunningServer) -> None:
    """Issue #10 point 6: with --max-connections-per-address 5, five idle connections
    from one address stay open, the sixth (plain) and the seventh (TLS: no handshake
    happens) are closed at once; one log line says so; another address is served;
    closing one connection frees its place."""
    held = [connect(capped, tls=i % 2 == 0, handshake=False) for i in range(CAP)]
    try:
        assert not any(is_closed(s, 0.3) for s in held)
        extra = connect(capped, tls=False)
        assert is_closed(extra, 5.0)
        extra.close()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            connect(capped, tls=True).close()
        assert served(capped, tls=True, source="127.0.0.2")
        assert served(capped, tls=False, source="127.0.0.2")
        assert len(refusal_lines(capped, "127.0.0.1")) == 1, capped.log_text()[-2000:]
        assert not refusal_lines(capped, "127.0.0.2")
        held.pop().close()
        wait_for(lambda: served(capped, tls=True), timeout=10)
    finally:
        for s in held:
            s.close()


def test_flood_from_one_address_leaves_others_served(capped: RunningServer) -> None:
    """Issue #10 point 6: 200 connections at once from 127.0.0.1 (cap 5) are refused
    but five, logged in one line a minute at most; 127.0.0.2 is served meanwhile."""
    before = len(refusal_lines(capped, "127.0.0.1"))
    flood = []
    try:
        for _ in range(200):
            try:
                flood.append(connect(capped, tls=False))
            except OSError:
                pass
        assert served(capped, tls=True, source="127.0.0.2")
        wait_for(lambda: sum(is_closed(s, 0) for s in flood) >= len(flood) - CAP,
                 timeout=15)
        assert sum(not is_closed(s, 0.2) for s in flood) <= CAP
    finally:
        for s in flood:
            s.close()
    assert len(refusal_lines(capped, "127.0.0.1")) - before <= 1


# -- --workers ----------------------------------------------------------------------------

def test_limits_hold_in_every_worker(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue #10 point 6 with --workers 2 (PostgreSQL): each process accepts its own
    connections (SO_REUSEPORT) and applies both limits itself, so of 12 idle
    connections from one address at most 2 x 3 stay open, and those are cut after
    --header-timeout by whichever process holds them."""
    needs.require(unreachable())
    with fresh_database("limitsw") as url:
        plain_port = free_port()
        srv = pg_server(tmp_path_factory.mktemp("limitsw"), url, [
            "--workers", "2", "--max-connections-per-address", "3",
            "--header-timeout", "4", "--listen", f"tcp:{plain_port}:interface=127.0.0.1"])
        srv.plain_port = plain_port  # type: ignore[attr-defined]
        srv.start()
        socks: list[socket.socket] = []
        try:
            wait_for(lambda: srv.log_text().count(f"starting on {plain_port}") >= 2,
                     timeout=30)
            socks = [connect(srv, tls=False) for _ in range(12)]
            time.sleep(1.0)
            still_open = [s for s in socks if not is_closed(s, 0.05)]
            assert 3 <= len(still_open) <= 6, len(still_open)
            for s in still_open:
                assert seconds_until_closed(s, 4 + MARGIN) is not None
        finally:
            for s in socks:
                s.close()
            _stop(srv)
