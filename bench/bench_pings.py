"""Held Pings: memory per held Ping in one process, Pings per machine, push latency.

    python bench/bench_pings.py process [--marks 1000,10000,19000] [--db URL]
    python bench/bench_pings.py machine [--total 50000] [--workers 3] --db postgresql://…
    python bench/bench_pings.py latency [--total 50000] [--wakes 1000] --db postgresql://…

``process``: one ``twistd -n easync --listen tcp:…`` process; load generators
(``bench/pingload.py``, separate processes, each under the 20,000-file limit) open
one connection per device and hold a Ping on its Contacts folder.  The server's RSS
(``VmRSS`` of ``/proc/PID/status``) is read after a warm-up (a few Pings answered and
gone) and when the server holds each mark — the server's own count, from its
``/metrics`` endpoint (``easync_held_requests``).  Growth per held Ping =
(RSS at the mark − RSS after warm-up) / mark.

``machine``: ``twistd easync --workers N`` on one PostgreSQL database holds ``--total``
Pings on one port.

``latency``: one process holding ``--big`` Pings (19,000) on its own port, plus
``--workers`` processes sharing another port for the rest of ``--total``, all on one
PostgreSQL database.  ``--wakes`` times: a contact is added to the Contacts folder of
a device held by the big process — written from this process through the SQL store and
announced through the PostgreSQL change hub as any easync node does — and the latency is
the time from the write's commit (the store call returning) to the woken Ping's response
bytes arriving at its load generator (both ``time.monotonic()``, one clock for every
process on the machine).

Users are ``b000000``…, one device each, created once per database and reused (their
devices and sync states are deleted at the start of each run).
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from easync_server import free_port, twistd

PASSWORD = "bench-password-1"
PER_LOADER = 5000           # connections per load-generator process


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


# -- the database -----------------------------------------------------------------------

# the opening both populate scripts share (this one's and bench_fleet's): arguments
# URL N OUT PASSWORD, the store opened, ``h`` the password's hash
POPULATE_HEAD = r"""
import json, sys
import bcrypt
from twisted.internet import defer, task
from backends.sql.store import SqlStore

URL, N, OUT, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

async def main(reactor):
    store = SqlStore(reactor, URL)
    await store.open()
    h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
"""

POPULATE = POPULATE_HEAD + r"""    rows = await store.raw_query(
        "SELECT u.name, f.id FROM users u JOIN folders f ON f.user_id = u.id"
        " WHERE f.name = 'Contacts' ORDER BY u.name")
    have = {name: str(fid) for name, fid in rows}
    names = [f"b{i:06d}" for i in range(N)]
    missing = [n for n in names if n not in have]
    for start in range(0, len(missing), 200):
        users = await defer.gatherResults([store.add_user(n, h, None, True)
                                           for n in missing[start:start + 200]])
        for u in users:
            fs = await store.list_folders(u)
            have[u.name] = next(f.server_id for f in fs if f.name == "Contacts")
        if start % 5000 == 0:
            print(f"  users: {start + len(users)}/{len(missing)} created", flush=True)
    # devices start from nothing: no sync state, no cached Ping, no record
    for table in ("sync_states", "held_requests", "devices"):
        await store.raw_query(f"DELETE FROM {table}")
    await store.close()
    with open(OUT, "w") as f:
        json.dump({"names": names, "contacts": [have[n] for n in names],
                   "password": PASSWORD}, f)

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""


def populate(db: str, n: int, out: Path) -> None:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", POPULATE, db, str(n), str(out), PASSWORD],
                   check=True, env=env(), cwd=REPO)
    print(f"database ready: {n} users ({time.monotonic() - t0:.0f} s)", flush=True)


# -- processes ------------------------------------------------------------------------------

def log_errors(*logs: Path) -> list[str]:
    """The lines of the server logs ``logs`` (those that exist) that tell of an error."""
    out = []
    for path in logs:
        if path.exists():
            out += [ln for ln in path.read_text().splitlines()
                    if "Traceback" in ln or "Unhandled" in ln]
    return out


def stop_process(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after ``grace`` seconds, reap it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def die_with_parent(args: list[str]) -> list[str]:
    """``args`` run so that the process gets SIGTERM when the benchmark that started it
    dies, even by SIGKILL (Linux PR_SET_PDEATHSIG, set by util-linux ``setpriv``, kept
    across its exec): no server or load generator outlives its benchmark."""
    import shutil

    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *args] if setpriv else args


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Server:
    """``twistd -n easync`` (``--workers N`` when workers > 1) in a subprocess."""

    def __init__(self, workdir: Path, db: str, extra: list[str] | None = None,
                 name: str = "server", workers: int = 1) -> None:
        self.port = free_port()
        self.workers = workers
        self.metrics_port = free_ports(workers)
        self.log = workdir / f"{name}.log"
        self.name = name
        args = [twistd(), "-n", "--logfile", str(self.log), "--pidfile", "", "easync",
                "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                "--db", db, "--provisioning", "off", "--heartbeat-min", "1",
                # every load connection comes from 127.0.0.1, as behind a proxy
                "--max-connections-per-address", "0",
                "--metrics-listen", f"tcp:{self.metrics_port}:interface=127.0.0.1",
                *(["--workers", str(workers)] if workers > 1 else []), *(extra or [])]
        self.proc = subprocess.Popen(die_with_parent(args), cwd=workdir, env=env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                for i in range(workers):
                    self.metrics(i)
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def metrics(self, i: int = 0) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.metrics_port + i}/metrics"
        with urllib.request.urlopen(url, timeout=30) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def held_each(self) -> list[int]:
        return [int(sum(v for k, v in self.metrics(i).items()
                        if k.startswith("easync_held_requests"))) for i in range(self.workers)]

    def held(self) -> int:
        return sum(self.held_each())

    def pids(self) -> list[int]:
        """The server process and its worker children."""
        out = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            out += [int(p) for p in children.read_text().split()]
        return out

    def stop(self) -> None:
        stop_process(self.proc, 120)

    def log_errors(self) -> list[str]:
        from easync.workers import worker_logfile

        return log_errors(self.log, *(Path(worker_logfile(str(self.log), i))
                                      for i in range(1, self.workers)))


def free_ports(n: int) -> int:
    """A port p with p … p+n-1 all free (worker i serves its metrics on p + i)."""
    import socket

    while True:
        p = free_port()
        ok = True
        for i in range(1, n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p + i))
                except OSError:
                    ok = False
                    break
        if ok:
            return p


class Loader:
    """One ``bench/pingload.py`` process; its output lines go to a queue."""

    def __init__(self, port: int, users: Path, first: int, count: int, heartbeat: int,
                 lines: queue.Queue[tuple[int, str]], tag: int, once: bool = False) -> None:
        args = [sys.executable, str(REPO / "bench" / "pingload.py"), "--port", str(port),
                "--users", str(users), "--first", str(first), "--count", str(count),
                "--heartbeat", str(heartbeat), "--concurrency", "50",
                # each device from its own loopback address, as phones on the
                # Internet: one address has only ~28,000 ephemeral ports towards one
                # server port, and the server checks at most 8 logins of one address
                # at a time (README "Login throttling")
                "--source-net", f"127.{1 + tag % 250}"] + (
                    ["--once"] if once else [])
        self.proc = subprocess.Popen(args, env=env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.sent = 0
        self.done = False
        self.errors: list[str] = []
        self.tag = tag

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                line = line.strip()
                if line.startswith("S "):
                    self.sent = int(line[2:])
                elif line == "D":
                    self.done = True
                elif line.startswith("E "):
                    self.errors.append(line)
                else:
                    lines.put((tag, line))

        threading.Thread(target=pump, daemon=True).start()

    def stop(self) -> None:
        stop_process(self.proc, 30)


def wait_held(servers: list[Server], target: int, loaders: list[Loader],
              timeout: float = 900) -> float:
    t0 = time.monotonic()
    last = -1
    while time.monotonic() - t0 < timeout:
        try:
            held = sum(s.held() for s in servers)
        except OSError:         # a server too busy to answer /metrics in time
            time.sleep(1)
            continue
        if held >= target:
            return time.monotonic() - t0
        if held != last:
            last = held
        errors = [e for ld in loaders for e in ld.errors]
        if len(errors) > 20:
            raise RuntimeError(f"load generators report errors: {errors[:5]}")
        time.sleep(0.5)
    raise RuntimeError(f"only {last} of {target} Pings held after {timeout} s")


def settle(pids: list[int], quiet: float = 2.0) -> None:
    """Wait until the processes use no CPU for ``quiet`` seconds."""
    before = sum(cpu_ticks(p) for p in pids)
    while True:
        time.sleep(quiet)
        now = sum(cpu_ticks(p) for p in pids)
        if now - before <= 2:
            return
        before = now


def machine_info() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (f"{os.cpu_count()} CPUs ({cpu}), Python {sys.version.split()[0]}, "
            f"load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d')}")


# -- process: memory per held Ping -------------------------------------------------------

def run_process(args: argparse.Namespace) -> None:
    marks = [int(m) for m in args.marks.split(",")]
    top = max(marks)
    work = Path(tempfile.mkdtemp(prefix="bench-pings-"))
    db = args.db or f"sqlite:///{work / 'bench.sqlite'}"
    users = work / "users.json"
    populate(db, top + 200, users)
    server = Server(work, db)
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    loaders: list[Loader] = []
    try:
        pid = server.proc.pid
        rss_start = rss_kb(pid)
        # Warm-up: 200 Pings that end after 2 s (imports, caches, pools filled).
        warm = Loader(server.port, users, top, 200, 2, lines, -1, once=True)
        answered = 0
        while answered < 200:
            _tag, line = lines.get(timeout=120)
            answered += line.startswith("R ")
        warm.stop()
        time.sleep(1)
        settle([pid])
        base = rss_kb(pid)
        print(f"RSS at start {rss_start / 1024:.1f} MiB, after warm-up {base / 1024:.1f} MiB",
              flush=True)
        results = []
        opened = 0
        for mark in marks:
            while opened < mark:
                n = min(PER_LOADER, mark - opened)
                loaders.append(Loader(server.port, users, opened, n, 3000, lines, opened))
                opened += n
            took = wait_held([server], mark, loaders)
            settle([pid])
            rss = rss_kb(pid)
            per = (rss - base) / mark
            results.append((mark, rss, per, took))
            print(f"{mark:>6} held: RSS {rss / 1024:7.1f} MiB, growth "
                  f"{(rss - base) / 1024:7.1f} MiB = {per:.2f} KiB per held Ping "
                  f"(reached in {took:.1f} s)", flush=True)
        errors = [e for ld in loaders for e in ld.errors]
        if errors:
            print(f"load generator errors: {len(errors)}, e.g. {errors[:3]}")
        answered = [line for _t, line in list(lines.queue) if line.startswith("R ")]
        print(f"Pings answered during the run (should be 0): {len(answered)}")
        print(f"machine: {machine_info()}; db {db.split(':')[0]}")
    finally:
        for ld in loaders:
            ld.stop()
        server.stop()
        errs = server.log_errors()
        if errs:
            print(f"server log has {len(errs)} error lines, e.g. {errs[:3]}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# -- machine: many processes, one port ------------------------------------------------------

def start_loaders(port: int, users: Path, first: int, count: int,
                  lines: queue.Queue[tuple[int, str]], heartbeat: int = 3000) -> list[Loader]:
    out = []
    for start in range(first, first + count, PER_LOADER):
        n = min(PER_LOADER, first + count - start)
        out.append(Loader(port, users, start, n, heartbeat, lines, start))
    return out


def memory_line(server: Server) -> str:
    pids = server.pids()
    rss = [rss_kb(p) / 1024 for p in pids]
    return (f"{server.name}: {len(pids)} process(es), RSS "
            + " + ".join(f"{r:.0f}" for r in rss) + f" = {sum(rss):.0f} MiB")


def run_machine(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-pings-"))
    users = work / "users.json"
    populate(args.db, args.total, users)
    server = Server(work, args.db, name="workers", workers=args.workers)
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    loaders: list[Loader] = []
    try:
        loaders = start_loaders(server.port, users, 0, args.total, lines)
        took = wait_held([server], args.total, loaders, timeout=1800)
        settle(server.pids())
        each = server.held_each()
        print(f"{sum(each)} Pings held on one port by {args.workers} processes "
              f"({' + '.join(map(str, each))}), reached in {took:.0f} s", flush=True)
        print(memory_line(server))
        answered = [ln for _t, ln in list(lines.queue) if ln.startswith("R ")]
        print(f"Pings answered meanwhile (should be 0): {len(answered)}")
        print(f"machine: {machine_info()}; db {args.db.split(':')[0]}")
    finally:
        for ld in loaders:
            ld.stop()
        server.stop()
        errs = server.log_errors()
        if errs:
            print(f"server logs have {len(errs)} error lines, e.g. {errs[:3]}")
        shutil.rmtree(work, ignore_errors=True)


# -- latency: wake-ups with 50,000 held --------------------------------------------------

WRITER = r"""
import json, sys, time
from twisted.internet import defer, task
from backends.sql.store import SqlStore
from easync.model import Op
from backends.sql.pgnotify import announce

URL, USERS, INDICES, INTERVAL = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

async def main(reactor):
    users = json.load(open(USERS))
    store = SqlStore(reactor, URL)
    await store.open()
    targets = []
    for i in map(int, INDICES.split(",")):
        targets.append((i, await store.get_user(users["names"][i]), users["contacts"][i]))
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.monotonic()
    for n, (i, user, folder) in enumerate(targets):
        wait = start + n * INTERVAL - time.monotonic()
        if wait > 0:
            await task.deferLater(reactor, wait, lambda: None)
        t0 = time.monotonic()
        await store.apply(user, folder, [Op(kind="add", data={"FirstName": f"W{i}"},
                                            cls="Contacts")])
        t1 = time.monotonic()
        await announce(store, user.id, [folder], source="bench")
        t2 = time.monotonic()
        print(f"W {i} {t0:.6f} {t1:.6f} {t2:.6f}", flush=True)
    await store.close()

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""


def prime_devices(port: int, users: dict, indices: list[int]) -> None:
    """Each target device syncs its Contacts folder once (SyncKey 0, then a Sync), as a
    phone does before it Pings: its Ping then counts changes from that state."""
    import http.client
    from base64 import b64encode

    from easync.wbxml import E, decode, encode

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for i in indices:
        name, folder = users["names"][i], users["contacts"][i]
        auth = "Basic " + b64encode(f"{name}:{users['password']}".encode()).decode()
        key = "0"
        for _ in range(2):
            body = encode(E("AirSync:Sync", E("AirSync:Collections", E(
                "AirSync:Collection", E("AirSync:SyncKey", key),
                E("AirSync:CollectionId", folder)))))
            conn.request("POST", f"/Microsoft-Server-ActiveSync?Cmd=Sync&User={name}"
                         f"&DeviceId=bench{name}&DeviceType=iPhone", body,
                         {"Authorization": auth, "MS-ASProtocolVersion": "14.1",
                          "Content-Type": "application/vnd.ms-sync.wbxml"})
            resp = conn.getresponse()
            data = resp.read()
            assert resp.status == 200, resp.status
            if data:
                key = decode(data).find("AirSync:Collections").find(
                    "AirSync:Collection").findtext("AirSync:SyncKey")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_latency(args: argparse.Namespace) -> None:
    import json

    work = Path(tempfile.mkdtemp(prefix="bench-pings-"))
    users_file = work / "users.json"
    populate(args.db, args.total, users_file)
    users = json.loads(users_file.read_text())
    big = Server(work, args.db, name="big")
    rest = Server(work, args.db, name="workers", workers=args.workers) \
        if args.total > args.big else None
    step = max(1, args.big // args.wakes)
    targets = list(range(0, args.big, step))[:args.wakes]
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    loaders: list[Loader] = []
    writer = None
    try:
        t0 = time.monotonic()
        prime_devices(big.port, users, targets)
        print(f"{len(targets)} target devices synced once ({time.monotonic() - t0:.0f} s)",
              flush=True)
        loaders = start_loaders(big.port, users_file, 0, args.big, lines)
        if rest is not None:
            loaders += start_loaders(rest.port, users_file, args.big, args.total - args.big,
                                     lines)
        servers = [big] + ([rest] if rest else [])
        took = wait_held(servers, args.total, loaders, timeout=3600)
        for srv in servers:
            settle(srv.pids())
        print(f"{args.total} Pings held: {big.held()} in one process"
              + (f", {' + '.join(map(str, rest.held_each()))} in {args.workers} workers on "
                 "another port" if rest else "") + f" (reached in {took:.0f} s)", flush=True)
        for srv in servers:
            print("  " + memory_line(srv))
        before = big.metrics()
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, args.db, str(users_file),
             ",".join(map(str, targets)), str(args.interval)],
            env=env(), cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdin is not None
        assert writer.stdout.readline().strip() == "ready"
        while not lines.empty():
            lines.get()
        writer.stdin.write("go\n")
        writer.stdin.flush()
        writes: dict[int, tuple[float, float, float]] = {}
        for line in writer.stdout:
            if line.startswith("W "):
                _w, i, a, b, c = line.split()
                writes[int(i)] = (float(a), float(b), float(c))
        writer.wait(60)
        answers: dict[int, tuple[str, float]] = {}
        deadline = time.monotonic() + 30
        while len(answers) < len(targets) and time.monotonic() < deadline:
            try:
                _tag, line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line.startswith("R "):
                _r, i, status, t, _f = line.split()
                answers[int(i)] = (status, float(t))
        woken = [i for i in targets if answers.get(i, ("", 0))[0] == "2"]
        others = {i: answers[i][0] for i in answers if i not in targets or answers[i][0] != "2"}
        lat = [(answers[i][1] - writes[i][1]) * 1000 for i in woken]
        lat_sent = [(answers[i][1] - writes[i][0]) * 1000 for i in woken]
        print(f"{len(woken)} of {len(targets)} wake-ups answered Status 2"
              + (f"; other answers: {dict(list(others.items())[:5])}" if others else ""))
        print(f"push latency, commit → response bytes at the client: "
              f"p50 {percentile(lat, 0.5):.1f} ms, p90 {percentile(lat, 0.9):.1f} ms, "
              f"p99 {percentile(lat, 0.99):.1f} ms, max {max(lat):.1f} ms")
        print(f"  (from the start of the write: p50 {percentile(lat_sent, 0.5):.1f} ms, "
              f"p99 {percentile(lat_sent, 0.99):.1f} ms; the write itself: p50 "
              f"{statistics.median((w[1] - w[0]) * 1000 for w in writes.values()):.1f} ms)")
        after = big.metrics()
        n = after["easync_push_latency_seconds_count"] - before.get(
            "easync_push_latency_seconds_count", 0)
        total = after["easync_push_latency_seconds_sum"] - before.get(
            "easync_push_latency_seconds_sum", 0)
        if n:
            print(f"  server side (wake → response written, /metrics): {n:.0f} wake-ups, "
                  f"mean {total / n * 1000:.1f} ms")
        key = 'python_gc_collections_total{generation="2"}'
        full = after.get(key, 0) - before.get(key, 0)
        longest = after.get('python_gc_pause_seconds_max{generation="2"}', 0) * 1000
        print(f"  full garbage collections in the woken process during the wake-ups: "
              f"{full:.0f} (the longest since its start: {longest:.0f} ms)")
        print(f"machine: {machine_info()}; db {args.db.split(':')[0]}")
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        for ld in loaders:
            ld.stop()
        for srv in [big] + ([rest] if rest else []):
            srv.stop()
            errs = srv.log_errors()
            if errs:
                print(f"{srv.name} log has {len(errs)} error lines, e.g. {errs[:3]}")
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("process", help="RSS per held Ping in one process")
    a.add_argument("--marks", default="1000,10000,19000")
    a.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    a.add_argument("--keep", action="store_true", help="keep the work directory")
    a = sub.add_parser("machine", help="Pings held by --workers processes on one port")
    a.add_argument("--total", type=int, default=50000)
    a.add_argument("--workers", type=int, default=3)
    a.add_argument("--db", required=True, help="postgresql://… (created users are kept)")
    a = sub.add_parser("latency", help="push latency with --total held")
    a.add_argument("--total", type=int, default=50000)
    a.add_argument("--big", type=int, default=19000, help="Pings held by the one process "
                   "whose devices are woken")
    a.add_argument("--workers", type=int, default=2, help="processes for the rest")
    a.add_argument("--wakes", type=int, default=1000)
    a.add_argument("--interval", type=float, default=0.02, help="seconds between writes")
    a.add_argument("--db", required=True, help="postgresql://… (created users are kept)")
    args = p.parse_args()
    if args.mode == "process":
        run_process(args)
    elif args.mode == "machine":
        run_machine(args)
    else:
        run_latency(args)


if __name__ == "__main__":
    main()
