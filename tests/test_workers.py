"""``--workers N``: several easync processes serving one port (SO_REUSEPORT) on one
PostgreSQL database, waking each other's Pings through it; supervised by the first."""

from __future__ import annotations

import base64
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import easync_server
import needs
import pytest
from easync_server import free_port, free_ports, read_metrics
from pgtest import fresh_database, pg_server, unreachable
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage

from easync import workers
from easync.wbxml import E, decode, encode

PASSWORD = "workers password"


# -- pieces ----------------------------------------------------------------------------------

def test_nth_endpoint() -> None:
    assert workers.nth_endpoint("tcp:9108:interface=127.0.0.1", 0) == \
        "tcp:9108:interface=127.0.0.1"
    assert workers.nth_endpoint("tcp:9108:interface=127.0.0.1", 2) == \
        "tcp:9110:interface=127.0.0.1"
    assert workers.nth_endpoint("tcp:interface=::1:port=9000", 1) == \
        "tcp:interface=::1:port=9001"
    assert workers.nth_endpoint("unix:/run/easync/metrics.sock", 3) == \
        "unix:/run/easync/metrics.sock.3"
    with pytest.raises(ValueError):
        workers.nth_endpoint("systemd:domain=INET:index=0", 1)


def test_two_listeners_share_a_port() -> None:
    """What each worker does: bind the same port with SO_REUSEPORT."""
    from twisted.internet import reactor
    from twisted.internet.endpoints import serverFromString

    from easync.http.listen import ListeningReactor

    port = free_port()
    binder = ListeningReactor(reactor, reuse_port=True)
    factory = Factory.forProtocol(Protocol)
    ports = []
    for _ in range(2):
        d = serverFromString(binder, f"tcp:{port}:interface=127.0.0.1").listen(factory)
        ports.append(d.result)          # listen() binds synchronously
    try:
        assert {p.getHost().port for p in ports} == {port}
        # without SO_REUSEPORT the same port is refused
        refused = serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)
        failures: list[Any] = []
        refused.addErrback(failures.append)
        assert failures and "already in use" in str(failures[0].value)
    finally:
        for p in ports:
            p.stopListening()


def test_workers_need_postgresql(tmp_path: Path) -> None:
    from easync.tap import Options

    with pytest.raises(usage.UsageError, match="postgresql"):
        Options().parseOptions(["--workers", "2", "--db", f"sqlite:///{tmp_path}/x.sqlite"])


def test_worker_command_line() -> None:
    pool = workers.WorkerPool(None, 3, ["--listen", "tcp:8080", "--workers", "3"],
                              {"logfile": "/var/log/easync.log", "syslog": False})
    cmd = pool.command(2)
    assert cmd[-4:] == ["--listen", "tcp:8080", "--workers", "3"]
    assert cmd[cmd.index("--logfile") + 1] == "/var/log/easync-w2.log"
    assert "--nodaemon" in cmd and cmd[cmd.index("--pidfile") + 1] == ""
    assert pool._env(2)[workers.WORKER_ENV] == "2"
    assert workers.WORKER_ENV not in pool._env(0) or pool._env(0)[workers.WORKER_ENV] == "0"


def test_worker_logs_survive_the_rotations_of_the_first_process(tmp_path: Path) -> None:
    """twistd rotates a log file at 1 MB, renaming LOGFILE.N to LOGFILE.N+1 for every N
    it finds: the workers' files must not be among them.  Three processes' log files
    (twistd's LogFile, as twistd opens them), rotating often: no write fails, every line
    is kept (with worker logs named LOGFILE.1, LOGFILE.2 the first process renamed them
    and then failed on a rename, and Twisted dropped its observer: no log any more)."""
    from twisted.python.logfile import LogFile

    first = tmp_path / "easync.log"
    files = [LogFile.fromFullPath(str(first), rotateLength=2000)]
    files += [LogFile.fromFullPath(workers.worker_logfile(str(first), n), rotateLength=2000)
              for n in (1, 2)]
    for i in range(300):
        for n, f in enumerate(files):
            f.write(f"{n} line {i} {'x' * 80}\n")
    for f in files:
        f.close()
    kept = [line[0] for path in tmp_path.iterdir() for line in path.read_text().splitlines()]
    assert sorted(kept) == sorted("012" * 300)
    assert len(list(tmp_path.iterdir())) > 3 * 10        # they did rotate, many times
    assert workers.worker_logfile("twistd", 1) == "twistd-w1"


# -- the real thing ---------------------------------------------------------------------------

class Workers:
    def __init__(self, srv: Any, metrics_port: int, count: int) -> None:
        self.srv = srv
        self.metrics_port = metrics_port
        self.count = count

    def metrics(self, i: int) -> dict[str, float]:
        return read_metrics(f"http://127.0.0.1:{self.metrics_port + i}/metrics", timeout=5)

    def held(self) -> list[int]:
        return [int(self.metrics(i)['easync_held_requests{command="Ping"}'])
                for i in range(self.count)]

    def pids(self) -> list[int]:
        assert self.srv.proc is not None
        path = Path(f"/proc/{self.srv.proc.pid}/task/{self.srv.proc.pid}/children")
        return [self.srv.proc.pid] + [int(p) for p in path.read_text().split()]


def wait_for(cond: Any, timeout: float = 20.0) -> Any:
    return easync_server.wait_for(cond, timeout, step=0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    needs.require(unreachable())
    workdir = tmp_path_factory.mktemp("workers")
    metrics_port = free_ports(3)
    with fresh_database("workers") as url:
        srv = pg_server(workdir, url, ["--workers", "3", "--provisioning", "off",
                                       "--metrics-listen",
                                       f"tcp:{metrics_port}:interface=127.0.0.1"], tls=False)
        srv.start()
        try:
            srv.add_user("alice", PASSWORD)
            w = Workers(srv, metrics_port, 3)
            wait_for(lambda: all(w.metrics(i) for i in range(3)))
            yield w
        finally:
            srv.stop()


def _in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def request(host: str, cmd: str, device: str, body: Any, user: str = "alice",
            password: str = PASSWORD) -> bytes:
    data = encode(body) if body is not None else b""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return (f"POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User={user}&DeviceId={device}"
            f"&DeviceType=iPhone HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
            "MS-ASProtocolVersion: 14.1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


def read_response(sock: socket.socket, want_200: bool = False) -> Any:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    if want_200:
        assert b" 200 " in head.split(b"\r\n")[0], head
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(65536)
    return decode(rest) if rest else None


def call(w: Workers, cmd: str, device: str, body: Any) -> Any:
    with socket.create_connection(("127.0.0.1", w.srv.port), timeout=30) as s:
        s.sendall(request(w.srv.host, cmd, device, body))
        return read_response(s)


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_pings_spread_and_woken_across_workers(cluster: Workers) -> None:
    w = cluster
    folders = call(w, "FolderSync", "wkW", E("FolderHierarchy:FolderSync",
                                              E("FolderHierarchy:SyncKey", "0")))
    contacts = next(a.findtext("FolderHierarchy:ServerId")
                    for a in folders.find("FolderHierarchy:Changes").children
                    if a.findtext("FolderHierarchy:DisplayName") == "Contacts")
    ping = E("Ping:Ping", E("Ping:HeartbeatInterval", "300"), E("Ping:Folders", E(
        "Ping:Folder", E("Ping:Id", contacts), E("Ping:Class", "Contacts"))))
    socks = []
    try:
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", w.srv.port), timeout=30)
            s.sendall(request(w.srv.host, "Ping", f"wk{i}", ping))
            socks.append(s)
        per_worker = wait_for(lambda: next((h for h in [w.held()] if sum(h) == 30), None))
        assert sum(1 for n in per_worker if n) >= 2, per_worker    # the kernel spread them
        # easync-admin: each held Ping, on the node (process) that holds it
        rows = wait_for(lambda: [ln for ln in w.srv.admin("device", "list", "alice")
                                 .stdout.splitlines() if "Ping on " in ln] or None)
        wait_for(lambda: len([ln for ln in w.srv.admin("device", "list", "alice")
                              .stdout.splitlines() if "Ping on " in ln]) == 30)
        nodes = {ln.split("Ping on ")[1].split()[0] for ln in w.srv.admin(
            "device", "list", "alice").stdout.splitlines() if "Ping on " in ln}
        assert len(nodes) == sum(1 for n in per_worker if n), (nodes, rows[:3])
        # one write through whichever worker takes it wakes every Ping, on every worker
        sync0 = E("AirSync:Sync", E("AirSync:Collections", E(
            "AirSync:Collection", E("AirSync:SyncKey", "0"),
            E("AirSync:CollectionId", contacts))))
        key = call(w, "Sync", "wkW", sync0).find("AirSync:Collections").find(
            "AirSync:Collection").findtext("AirSync:SyncKey")
        new = E("AirSync:Add", E("AirSync:ClientId", "1"), E(
            "AirSync:ApplicationData", E("Contacts:FirstName", "Everyone")))
        add = E("AirSync:Sync", E("AirSync:Collections", E(
            "AirSync:Collection", E("AirSync:SyncKey", key),
            E("AirSync:CollectionId", contacts), E("AirSync:Commands", new))))
        t0 = time.monotonic()
        call(w, "Sync", "wkW", add)
        for s in socks:
            resp = read_response(s)
            assert resp.findtext("Ping:Status") == "2"
        assert time.monotonic() - t0 < 1.5
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: sum(w.held()) == 0)


def test_a_worker_that_dies_is_started_again(cluster: Workers) -> None:
    w = cluster
    pids = w.pids()
    assert len(pids) == 3
    os.kill(pids[1], signal.SIGKILL)
    wait_for(lambda: len(w.pids()) == 3 and pids[1] not in w.pids())
    wait_for(lambda: all(w.metrics(i) for i in range(3)))
    assert "worker 1 ended" in w.srv.log_text() or "worker 2 ended" in w.srv.log_text()


def test_stopping_the_first_stops_them_all(cluster: Workers) -> None:
    w = cluster
    pids = w.pids()
    w.srv.stop()                                   # SIGTERM to the first process
    for pid in pids:
        wait_for(lambda p=pid: not Path(f"/proc/{p}").exists()
                 or "zombie" in Path(f"/proc/{p}/status").read_text())
    assert not _in_use(w.srv.port)
