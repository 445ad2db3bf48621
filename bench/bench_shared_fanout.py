"""Fan-out of one write to a folder shared with everyone (issue #14 point 1).

    python bench/bench_shared_fanout.py [--users 1000] [--db postgresql://…] [--workers 2]

``--users`` users (one device each); the first one's Contacts folder is shared with
everyone, read-write.  Every user's device syncs that folder once (SyncKey 0, then a
Sync) and holds a Ping on it (the load generators of ``bench_fanout.py``, one loopback
address per device).  When the server (``--workers N`` on PostgreSQL, one process on
SQLite) holds them all, the owner adds one contact with a Sync from another device of
theirs: ``publish_write`` → ``publish_to_holders`` publishes to every holder.

Reported: the time from sending that Sync to the first and the last Ping answer at
the clients (p50, p99), the server's longest reactor stall during the fan-out (a probe
per process hits its metrics listener every 2 ms, as in ``bench_fanout``), the NOTIFYs
on the change channel (a LISTEN connection of this process counts them and their
payload bytes) and the server's CPU time (all its processes).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_fanout import (
    PASSWORD,
    PER_LOADER,
    Proc,
    answer_figures,
    collect_answers,
    percentile,
    writer_sync,
)

POPULATE = r"""
import json, sys, time
import bcrypt
from twisted.internet import defer, task
from backends.sql.store import SqlStore

URL, OUT, PASSWORD, N = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

async def main(reactor):
    store = SqlStore(reactor, URL)
    await store.open()
    h = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    prefix = f"sh{int(time.time())}u"
    owner = None
    for i in range(N):
        u = await store.add_user(f"{prefix}{i}", h, None, True)
        owner = owner or u
    folder = next(f.server_id for f in await store.list_folders(owner) if f.name == "Contacts")
    await store.share_folder(folder, 0, True)
    await store.close()
    with open(OUT, "w") as f:
        json.dump({"prefix": prefix, "folder": folder}, f)

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""

LOAD = r"""
import argparse, asyncio, sys
sys.path.insert(0, sys.argv[1])
import bench_fanout
from pingload import report, stop_when_told, wind_up

args = argparse.Namespace(host="127.0.0.1", port=int(sys.argv[2]), prefix=sys.argv[3],
                          folder=sys.argv[4], first=int(sys.argv[5]), count=int(sys.argv[6]),
                          heartbeat=3000, concurrency=100, source_net=sys.argv[7],
                          lifetime=float(sys.argv[8]), prime=True)

async def main():
    gate = asyncio.Semaphore(args.concurrency)
    out, counts = [], [0]
    stop = asyncio.Event()
    stop_when_told(stop, sigint=False)
    # user i holds the shared folder from device fan<i>
    tasks = [asyncio.ensure_future(bench_fanout._device(
                 i, argparse.Namespace(**{**vars(args), "user": f"{args.prefix}{i}"}),
                 gate, out, counts))
             for i in range(args.first, args.first + args.count)]
    reporter = asyncio.ensure_future(report(out, counts))
    try:
        await asyncio.wait_for(stop.wait(), args.lifetime)
    except TimeoutError:
        pass
    await wind_up(tasks, reporter, out, 0.1)

asyncio.run(main())
"""


def listen_notifies(db: str, out: list[tuple[float, int]], ready: threading.Event,
                    stop: threading.Event) -> None:
    """LISTEN on the change channel; every notification's (time, payload bytes)."""
    import psycopg

    from backends.sql.pgnotify import CHANNEL

    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        ready.set()
        while not stop.is_set():
            for n in conn.notifies(timeout=0.5):
                out.append((time.monotonic(), len(n.payload.encode())))


def run(args: argparse.Namespace) -> None:
    from bench_pings import Server, cpu_ticks, env, machine_info, settle

    work = Path(tempfile.mkdtemp(prefix="bench-shfan-"))
    db = args.db or f"sqlite:///{work / 'bench.sqlite'}"
    pg = db.split(":", 1)[0].startswith("postgres")
    out = work / "users.json"
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", POPULATE, db, str(out), PASSWORD, str(args.users)],
                   check=True, env=env(), cwd=REPO)
    info = json.loads(out.read_text())
    prefix, folder = info["prefix"], info["folder"]
    print(f"{args.users} users, folder {folder} shared with everyone "
          f"({time.monotonic() - t0:.0f} s)", flush=True)
    server = Server(work, db, workers=args.workers,
                    extra=["--heartbeat-max", "4000", "--max-devices-per-user", "0"])
    lines: queue.Queue[str] = queue.Queue()
    loaders: list[Proc] = []
    probes: list[Proc] = []
    notes: list[tuple[float, int]] = []
    stop = threading.Event()
    try:
        n = args.users
        t0 = time.monotonic()
        for k, first in enumerate(range(0, n, PER_LOADER)):
            count = min(PER_LOADER, n - first)
            loaders.append(Proc([sys.executable, "-c", LOAD, str(REPO / "bench"),
                                 str(server.port), prefix, folder, str(first), str(count),
                                 f"127.{10 + k}", str(args.lifetime)], lines))
        while True:
            held = server.held()
            if held >= n:
                break
            errors = [ln for ln in list(lines.queue) if ln.startswith("E ")]
            if len(errors) > 20 or time.monotonic() - t0 > args.lifetime - 60 or (
                    time.monotonic() - t0 > 30 and held == 0):
                raise RuntimeError(f"{held} of {n} held; errors: {errors[:5]}")
            time.sleep(0.5)
        print(f"{n} Pings held ({time.monotonic() - t0:.0f} s; per process "
              f"{server.held_each()})", flush=True)
        post, prepared = writer_sync(server.port, f"{prefix}0", folder, "ownerwriter")
        if pg:
            ready = threading.Event()
            threading.Thread(target=listen_notifies, args=(db, notes, ready, stop),
                             daemon=True).start()
            ready.wait(30)
        settle(server.pids())
        while not lines.empty():
            ln = lines.get()
            if ln.startswith(("R ", "E ")):
                print(f"  before the change: {ln}")
        for i in range(args.workers):
            probes.append(Proc([sys.executable, str(REPO / "bench" / "bench_fanout.py"),
                                "probe", "--port", str(server.metrics_port + i),
                                "--lifetime", "120"], lines))
            assert lines.get(timeout=30) == "ready"
        time.sleep(1)
        pids = server.pids()
        cpu0 = sum(cpu_ticks(p) for p in pids)
        t_change = time.monotonic()
        post(prepared)
        t_done = time.monotonic()
        answers, stalls, errors = collect_answers(lines, n)
        cpu = (sum(cpu_ticks(p) for p in pids) - cpu0) / os.sysconf("SC_CLK_TCK")
        lat, other, during = answer_figures(lines, answers, stalls, t_change)
        print(f"{len(lat)} of {n} Pings answered Status 2 (the owner's Sync took "
              f"{(t_done - t_change) * 1000:.1f} ms)"
              + (f"; others: {other}" if other else "")
              + (f"; errors: {len(errors)} {errors[:3]}" if errors else ""))
        if lat:
            print(f"write → Ping answer at the client: first {lat[0]:.1f} ms, "
                  f"p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, "
                  f"last {lat[-1]:.1f} ms")
        print(f"server CPU ({len(pids)} processes) from the write to the last answer: "
              f"{cpu:.2f} s ({cpu / max(1, len(answers)) * 1e6:.0f} µs per answer)")
        print(f"longest reactor stall seen by the probes during the fan-out: "
              f"{max(during, default=0.0):.1f} ms ({len(during)} probes over 2 ms)")
        if pg:
            mine = [b for t, b in notes if t >= t_change - 0.01]
            print(f"NOTIFYs on the change channel from the write on: {len(mine)}, "
                  f"{sum(mine):,} payload bytes")
        print(f"machine: {machine_info()}; db {db.split(':')[0]}; workers {args.workers}")
    finally:
        stop.set()
        for p in loaders + probes:
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
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--db", help="database URL (default: SQLite in a temporary directory)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--lifetime", type=float, default=600)
    p.add_argument("--keep", action="store_true")
    run(p.parse_args())


if __name__ == "__main__":
    main()
