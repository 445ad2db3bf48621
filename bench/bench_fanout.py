"""Fan-out: one change that concerns N held Pings (issue #12 point 1).

    python bench/bench_fanout.py [--devices 10000] [--db postgresql://…] [--write sync|store]

One ``twistd -n easync`` process (bench_pings.Server: SQLite in a temporary directory,
or ``--db``); one user with ``--devices`` devices.  Load generators (this file's
``load`` mode, separate processes of at most ``PER_LOADER`` connections, each device
from a loopback address of its own as phones on the Internet) make every device sync
its Contacts folder once (SyncKey 0, then a Sync: ``--no-prime`` skips it) and then
hold a Ping on it.  When the server holds them all, one contact is added:

* ``--write sync`` (default): a Sync with an Add from one more device of the user;
  the time of the change is when that request is sent (an upper bound of its commit);
* ``--write store`` (PostgreSQL): written through the SQL store by another process and
  announced through the PostgreSQL change hub, as another easync node would (with the
  change's modseq when ``announce`` takes it); the time is the store call's return.

Reported, per woken Ping, the time from the change to its response's bytes arriving at
its load generator (which keeps the connection open, as a phone that would send its
Sync on it next) (one clock, ``time.monotonic()``, for every process): first, p50,
p99, max; and the longest reactor stall of the server during the fan-out, seen from
outside: a probe process sends a small HTTP request to the server's metrics listener
(same reactor) every 2 ms and records how late each answer is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

PER_LOADER = 5000
PASSWORD = "fanout-password-1"


# -- the load generator (a separate process) ---------------------------------------------

def _request(cmd: str, user: str, device: str, body: bytes) -> bytes:
    from pingload import eas_request

    return eas_request("bench", cmd, user, PASSWORD, device, body)


async def _answer(reader: asyncio.StreamReader) -> tuple[str, bytes, float]:
    head = await reader.readuntil(b"\r\n\r\n")
    now = time.monotonic()
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return head.split(b" ", 2)[1].decode(), body, now


def sync_body(folder: str, key: str, add: str | None = None) -> bytes:
    from easync.wbxml import E, encode

    coll = E("AirSync:Collection", E("AirSync:SyncKey", key),
             E("AirSync:CollectionId", folder))
    if add is not None:
        coll.add("AirSync:GetChanges", "0")
        coll.append(E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", add),
                                         E("AirSync:ApplicationData",
                                           E("Contacts:FirstName", add)))))
    return encode(E("AirSync:Sync", E("AirSync:Collections", coll)))


def sync_key(body: bytes) -> str:
    from easync.wbxml import decode

    coll = decode(body).find("AirSync:Collections").find("AirSync:Collection")
    return coll.findtext("AirSync:SyncKey") or ""


async def _device(i: int, args: argparse.Namespace, gate: asyncio.Semaphore,
                  out: list[str], counts: list[int]) -> None:
    from pingload import connect, ping_body

    from easync.wbxml import decode

    device = f"fan{i}"
    source = f"{args.source_net}.{i // 250 % 250}.{1 + i % 250}"
    ping = _request("Ping", args.user, device, ping_body(args.folder, args.heartbeat))
    async with gate:
        conn = await connect(i, args.host, args.port, (source, 0), out)
        if conn is None:
            return
        reader, writer = conn
        try:
            if args.prime:
                key = "0"
                for _ in range(2):
                    writer.write(_request("Sync", args.user, device,
                                          sync_body(args.folder, key)))
                    code, body, _t = await _answer(reader)
                    if code != "200":
                        out.append(f"E {i} sync http{code}")
                        writer.close()
                        return
                    if body:
                        key = sync_key(body)
            writer.write(ping)
            counts[0] += 1
        except Exception as e:  # noqa: BLE001 - reported, counted by the benchmark
            out.append(f"E {i} prime {type(e).__name__}")
            writer.close()
            return
    try:
        code, body, now = await _answer(reader)
        status = "-"
        if code == "200" and body:
            status = decode(body).findtext("Ping:Status") or "-"
        elif code != "200":
            status = f"http{code}"
        out.append(f"R {i} {status} {now:.6f}")
        # the connection stays open, as a phone's (which would send its Sync on it):
        # 10,000 closes are no part of the fan-out
        await asyncio.sleep(args.lifetime)
    except (asyncio.IncompleteReadError, ConnectionError) as e:
        out.append(f"E {i} closed {type(e).__name__}")
    finally:
        writer.close()


async def load_main(args: argparse.Namespace) -> None:
    from pingload import report, stop_when_told, wind_up

    gate = asyncio.Semaphore(args.concurrency)
    out: list[str] = []
    counts = [0]
    stop = asyncio.Event()
    stop_when_told(stop, sigint=False)
    tasks = [asyncio.ensure_future(_device(i, args, gate, out, counts))
             for i in range(args.first, args.first + args.count)]
    reporter = asyncio.ensure_future(report(out, counts))
    try:
        await asyncio.wait_for(stop.wait(), args.lifetime)
    except TimeoutError:
        pass
    await wind_up(tasks, reporter, out, 0.1)


# -- the stall probe (a separate process) ------------------------------------------------

def probe_main(args: argparse.Namespace) -> None:
    """Every ``--every`` s a GET of a missing page on the metrics listener (served by
    the server's reactor); prints ``L <sent> <answered>`` for answers slower than 2 ms
    and stops after ``--lifetime`` s or when stdin closes."""
    import socket

    sock = socket.create_connection((args.host, args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = b"GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n"
    end = time.monotonic() + args.lifetime
    buf = b""
    threading.Thread(target=lambda: (sys.stdin.read(), sys.exit(0)), daemon=True).start()
    print("ready", flush=True)
    while time.monotonic() < end:
        t0 = time.monotonic()
        sock.sendall(req)
        while True:
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if len(rest) >= length:
                    buf = rest[length:]
                    break
            chunk = sock.recv(65536)
            if not chunk:
                return
            buf += chunk
        t1 = time.monotonic()
        if t1 - t0 > 0.002:
            print(f"L {t0:.6f} {t1:.6f}", flush=True)
        time.sleep(max(0.0, args.every - (time.monotonic() - t0)))


# -- the benchmark -----------------------------------------------------------------------

POPULATE = r"""
import json, sys, time
import bcrypt
from twisted.internet import defer, task
from backends.sql.store import SqlStore

URL, OUT, PASSWORD = sys.argv[1], sys.argv[2], sys.argv[3]

async def main(reactor):
    store = SqlStore(reactor, URL)
    await store.open()
    h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    name = f"fan{int(time.time())}"
    user = await store.add_user(name, h, None, True)
    folder = next(f.server_id for f in await store.list_folders(user) if f.name == "Contacts")
    await store.close()
    with open(OUT, "w") as f:
        json.dump({"user": name, "folder": folder}, f)

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""

WRITER = r"""
import inspect, json, sys, time
from twisted.internet import defer, task
from backends.sql.store import SqlStore
from backends.sql.pgnotify import announce
from easync.model import Op

URL, USER, FOLDER = sys.argv[1], sys.argv[2], sys.argv[3]

async def main(reactor):
    store = SqlStore(reactor, URL)
    await store.open()
    user = await store.get_user(USER)
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    res = await store.apply(user, FOLDER, [Op(kind="add", data={"FirstName": "Wake"},
                                              cls="Contacts")])
    t1 = time.monotonic()
    if "modseqs" in inspect.signature(announce).parameters:
        await announce(store, user.id, [FOLDER], source="bench",
                       modseqs={FOLDER: max(r.modseq for r in res)})
    else:
        await announce(store, user.id, [FOLDER], source="bench")
    t2 = time.monotonic()
    print(f"W {t0:.6f} {t1:.6f} {t2:.6f}", flush=True)
    await store.close()

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Proc:
    """A child process whose output lines go to a queue (and counters)."""

    def __init__(self, args: list[str], lines: queue.Queue[str]) -> None:
        from bench_pings import env

        self.proc = subprocess.Popen(args, env=env(), cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.sent = 0

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                line = line.strip()
                if line.startswith("S "):
                    self.sent = int(line[2:])
                else:
                    lines.put(line)

        threading.Thread(target=pump, daemon=True).start()

    def stop(self) -> None:
        from bench_pings import stop_process

        stop_process(self.proc, 30)


def collect_answers(lines: queue.Queue[str], n: int, timeout: float = 240
                    ) -> tuple[dict[int, tuple[str, float]], list[tuple[float, float]],
                               list[str]]:
    """Read the load generators' and the stall probe's lines until ``n`` Pings have
    answered (or ``timeout`` s): answers by Ping (status, time), the reactor stalls
    seen (start, end), and the error lines."""
    answers: dict[int, tuple[str, float]] = {}
    stalls: list[tuple[float, float]] = []
    errors: list[str] = []
    end = time.monotonic() + timeout
    while len(answers) < n and time.monotonic() < end:
        try:
            ln = lines.get(timeout=1)
        except queue.Empty:
            continue
        if ln.startswith("R "):
            _r, i, status, t = ln.split()
            answers[int(i)] = (status, float(t))
        elif ln.startswith("L "):
            _l, a, b = ln.split()
            stalls.append((float(a), float(b)))
        elif ln.startswith("E "):
            errors.append(ln)
    return answers, stalls, errors


def answer_figures(lines: queue.Queue[str], answers: dict[int, tuple[str, float]],
                   stalls: list[tuple[float, float]], t_change: float
                   ) -> tuple[list[float], dict[str, int], list[float]]:
    """After ``collect_answers``: the stall probe's last lines read (half a second
    later), then (the Status 2 answers' latencies from ``t_change`` in ms, sorted; how
    many Pings got each other status; the reactor stalls in ms that overlapped the
    answers)."""
    time.sleep(0.5)
    while not lines.empty():
        ln = lines.get()
        if ln.startswith("L "):
            _l, a, b = ln.split()
            stalls.append((float(a), float(b)))
    lat = sorted((t - t_change) * 1000 for s, t in answers.values() if s == "2")
    other: dict[str, int] = {}
    for s, _t in answers.values():
        if s != "2":
            other[s] = other.get(s, 0) + 1
    last = max((t for _s, t in answers.values()), default=t_change)
    during = [(b - a) * 1000 for a, b in stalls if b >= t_change - 0.01 and a <= last + 0.01]
    return lat, other, during


def writer_sync(port: int, user: str, folder: str, device: str
                ) -> tuple[Callable[[bytes], bytes], bytes]:
    """Prime ``device`` (SyncKey 0, then a Sync); returns the function that posts a
    Sync of it and the Sync that adds one contact."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(body: bytes) -> bytes:
        raw = _request("Sync", user, device, body)
        head, _, payload = raw.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        conn.request("POST", head.decode().split(" ")[1], payload, headers)
        resp = conn.getresponse()
        data = resp.read()
        assert resp.status == 200, resp.status
        return data

    key = sync_key(post(sync_body(folder, "0")))
    body = post(sync_body(folder, key))
    key = sync_key(body) if body else key
    prepared = sync_body(folder, key, add="Wake")
    return post, prepared


def user_system_ticks(pid: int) -> tuple[int, int]:
    """The process's user and system CPU time so far, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


PROFILE_HOOK = r"""
import os, signal, sys
if os.environ.get("BENCH_PROFILE_OUT") and b"twistd" in open("/proc/self/cmdline", "rb").read():
    import cProfile
    import time
    _prof = cProfile.Profile(time.process_time)
    signal.signal(signal.SIGUSR1, lambda *_: _prof.enable())
    def _dump(*_):
        _prof.disable()
        _prof.dump_stats(os.environ["BENCH_PROFILE_OUT"])
    signal.signal(signal.SIGUSR2, _dump)
"""


def run(args: argparse.Namespace) -> None:
    from bench_pings import Server, cpu_ticks, machine_info, settle

    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    db = args.db or f"sqlite:///{work / 'bench.sqlite'}"
    out = work / "user.json"
    from bench_pings import env
    if args.profile:
        # the server profiles (cProfile) from SIGUSR1 to SIGUSR2: the fan-out alone
        hook = work / "profhook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(PROFILE_HOOK)
        os.environ["PYTHONPATH"] = f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        os.environ["BENCH_PROFILE_OUT"] = str(Path(args.profile).resolve())
    subprocess.run([sys.executable, "-c", POPULATE, db, str(out), PASSWORD], check=True,
                   env=env(), cwd=REPO)
    info = json.loads(out.read_text())
    user, folder = info["user"], info["folder"]
    server = Server(work, db, extra=["--heartbeat-max", "4000",
                                          "--max-devices-per-user", "0"])
    lines: queue.Queue[str] = queue.Queue()
    loaders: list[Proc] = []
    probe = writer = None
    try:
        n = args.devices
        t0 = time.monotonic()
        for k, first in enumerate(range(0, n, PER_LOADER)):
            count = min(PER_LOADER, n - first)
            loaders.append(Proc(
                [sys.executable, __file__, "load", "--port", str(server.port),
                 "--user", user, "--folder", folder, "--first", str(first),
                 "--count", str(count), "--source-net", f"127.{10 + k}",
                 "--lifetime", str(args.lifetime)] + ([] if args.prime else ["--no-prime"]),
                lines))
        deadline = t0 + args.lifetime - 60
        while True:
            held = server.held()
            if held >= n:
                break
            errors = [ln for ln in list(lines.queue) if ln.startswith("E ")]
            if len(errors) > 20 or time.monotonic() > deadline or (
                    time.monotonic() - t0 > 30 and held == 0):
                raise RuntimeError(f"{held} of {n} held; errors: {errors[:5]}")
            if int(time.monotonic() - t0) % 10 == 0:
                print(f"  {held} held, {sum(ld.sent for ld in loaders)} Pings sent", flush=True)
            time.sleep(0.5)
        print(f"{n} Pings held ({time.monotonic() - t0:.0f} s)", flush=True)
        if args.write == "sync":
            post, prepared = writer_sync(server.port, user, folder, "fanwriter")
        else:
            writer = Proc([sys.executable, "-c", WRITER, db, user, folder], lines)
            assert lines.get(timeout=60) == "ready"
        settle(server.pids())
        while not lines.empty():
            ln = lines.get()
            if ln.startswith(("R ", "E ")):
                print(f"  before the change: {ln}")
        probe = Proc([sys.executable, __file__, "probe", "--port", str(server.metrics_port),
                      "--lifetime", "120"], lines)
        assert lines.get(timeout=30) == "ready"
        time.sleep(1)
        if args.profile:
            os.kill(server.proc.pid, signal.SIGUSR1)
            time.sleep(0.2)
        spy = None
        if args.py_spy:
            # sampled from outside (no cost inside the server): stacks of the fan-out alone
            beside = Path(sys.executable).parent / "py-spy"
            spy = subprocess.Popen([str(beside) if beside.exists() else "py-spy", "record", "--pid", str(server.proc.pid),
                                    "--rate", "1000", "--format", "raw", "--nonblocking",
                                    "-o", str(Path(args.py_spy).resolve())],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
        cpu0 = cpu_ticks(server.proc.pid)
        split0 = user_system_ticks(server.proc.pid)
        if args.write == "sync":
            t_change = time.monotonic()
            post(prepared)
            t_done = time.monotonic()
            note = f"the writer's Sync took {(t_done - t_change) * 1000:.1f} ms"
        else:
            assert writer is not None and writer.proc.stdin is not None
            writer.proc.stdin.write("go\n")
            writer.proc.stdin.flush()
            while True:
                ln = lines.get(timeout=60)
                if ln.startswith("W "):
                    _w, a, b, c = ln.split()
                    t_change = float(b)
                    note = (f"the write took {(float(b) - float(a)) * 1000:.1f} ms, "
                            f"the announce {(float(c) - float(b)) * 1000:.1f} ms")
                    break
        answers, stalls, errors = collect_answers(lines, n)
        cpu = (cpu_ticks(server.proc.pid) - cpu0) / os.sysconf("SC_CLK_TCK")
        split = [(b - a) / os.sysconf("SC_CLK_TCK")
                 for a, b in zip(split0, user_system_ticks(server.proc.pid))]
        if args.profile:
            os.kill(server.proc.pid, signal.SIGUSR2)
            time.sleep(1)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        lat, other, during = answer_figures(lines, answers, stalls, t_change)
        print(f"{len(lat)} of {n} Pings answered Status 2 ({note})"
              + (f"; others: {other}" if other else "")
              + (f"; errors: {len(errors)} {errors[:3]}" if errors else ""))
        if lat:
            print(f"change → response at the client: first {lat[0]:.1f} ms, "
                  f"p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, "
                  f"max {lat[-1]:.1f} ms")
        print(f"server CPU from the change to the last answer: {cpu:.2f} s "
              f"({cpu / max(1, len(answers)) * 1e6:.0f} µs per answer; user {split[0]:.2f} s, "
              f"system {split[1]:.2f} s)")
        print(f"longest reactor stall seen by the probe during the fan-out: "
              f"{max(during, default=0.0):.1f} ms ({len(during)} probes over 2 ms)")
        print(f"machine: {machine_info()}; db {db.split(':')[0]}; write {args.write}")
    finally:
        for p in loaders + [x for x in (probe, writer) if x is not None]:
            p.stop()
        server.stop()
        errs = server.log_errors()
        if errs:
            print(f"server log has {len(errs)} error lines, e.g. {errs[:3]}")
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode")
    load = sub.add_parser("load")
    load.add_argument("--host", default="127.0.0.1")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--user", required=True)
    load.add_argument("--folder", required=True)
    load.add_argument("--first", type=int, default=0)
    load.add_argument("--count", type=int, required=True)
    load.add_argument("--heartbeat", type=int, default=3000)
    load.add_argument("--concurrency", type=int, default=100)
    load.add_argument("--source-net", required=True)
    load.add_argument("--lifetime", type=float, default=900)
    load.add_argument("--no-prime", dest="prime", action="store_false")
    pr = sub.add_parser("probe")
    pr.add_argument("--host", default="127.0.0.1")
    pr.add_argument("--port", type=int, required=True)
    pr.add_argument("--every", type=float, default=0.002)
    pr.add_argument("--lifetime", type=float, default=120)
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    p.add_argument("--write", choices=("sync", "store"), default="sync")
    p.add_argument("--no-prime", dest="prime", action="store_false",
                   help="the devices Ping without having synced the folder")
    p.add_argument("--lifetime", type=float, default=600,
                   help="seconds after which every load generator stops by itself")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--py-spy", metavar="FILE",
                   help="py-spy record the server (raw collapsed stacks, 1,000 samples/s, "
                        "idle left out) from just before the change to the last answer")
    p.add_argument("--profile", metavar="FILE",
                   help="cProfile the server from just before the change to the last "
                        "answer, stats written to FILE (the CPU figure then includes "
                        "the profiler's own cost)")
    args = p.parse_args()
    if args.mode == "load":
        asyncio.run(load_main(args))
    elif args.mode == "probe":
        probe_main(args)
    else:
        if args.write == "store" and not (args.db or "").startswith("postgres"):
            p.error("--write store needs --db postgresql://…")
        run(args)


if __name__ == "__main__":
    main()
