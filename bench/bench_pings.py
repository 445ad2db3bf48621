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

Users are ``b000000``…, one device each, created once per database and reused.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from easync_server import free_port, twistd

PASSWORD = "bench-password-1"
PER_LOADER = 5000           # connections per load-generator process


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


# -- the database -----------------------------------------------------------------------

POPULATE = r"""
import json, sys
import bcrypt
from twisted.internet import defer, task
from backends.sql.store import SqlStore

URL, N, OUT, PASSWORD = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

async def main(reactor):
    store = SqlStore(reactor, URL)
    await store.open()
    h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    rows = await store.raw_query(
        "SELECT u.name, f.id FROM users u JOIN folders f ON f.user_id = u.id"
        " WHERE u.name LIKE 'b%' AND f.name = 'Contacts' ORDER BY u.name")
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

def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Server:
    """``twistd -n easync`` (or ``--workers``) in a subprocess."""

    def __init__(self, workdir: Path, db: str, extra: list[str] | None = None,
                 name: str = "server") -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.log = workdir / f"{name}.log"
        args = [twistd(), "-n", "--logfile", str(self.log), "--pidfile", "", "easync",
                "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                "--db", db, "--provisioning", "off", "--heartbeat-min", "1",
                "--metrics-listen", f"tcp:{self.metrics_port}:interface=127.0.0.1",
                *(extra or [])]
        self.proc = subprocess.Popen(args, cwd=workdir, env=env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                self.metrics()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def held(self) -> int:
        m = self.metrics()
        return int(sum(v for k, v in m.items() if k.startswith("easync_held_requests")))

    def pids(self) -> list[int]:
        """The server process and its worker children."""
        out = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            out += [int(p) for p in children.read_text().split()]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Loader:
    """One ``bench/pingload.py`` process; its output lines go to a queue."""

    def __init__(self, port: int, users: Path, first: int, count: int, heartbeat: int,
                 lines: queue.Queue[tuple[int, str]], tag: int, once: bool = False) -> None:
        args = [sys.executable, str(REPO / "bench" / "pingload.py"), "--port", str(port),
                "--users", str(users), "--first", str(first), "--count", str(count),
                "--heartbeat", str(heartbeat)] + (["--once"] if once else [])
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_held(servers: list[Server], target: int, loaders: list[Loader],
              timeout: float = 900) -> float:
    t0 = time.monotonic()
    last = -1
    while time.monotonic() - t0 < timeout:
        held = sum(s.held() for s in servers)
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
        errs = [ln for ln in server.log.read_text().splitlines()
                if "Traceback" in ln or "Unhandled" in ln]
        if errs:
            print(f"server log has {len(errs)} error lines, e.g. {errs[:3]}")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    a = sub.add_parser("process", help="RSS per held Ping in one process")
    a.add_argument("--marks", default="1000,10000,19000")
    a.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    a.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if args.mode == "process":
        run_process(args)


if __name__ == "__main__":
    main()
