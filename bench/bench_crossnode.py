"""Cross-node push latency through PostgreSQL LISTEN/NOTIFY.

    python bench/bench_crossnode.py [--pings 1000[,5000…]] [--wakeups 1000] [--rate 25]
                                    [--pg postgresql://postgres@127.0.0.1:5432/test]

Two ``twistd easync`` processes (plain ``tcp:`` listeners, ``--provisioning off``) on
one fresh PostgreSQL database.  A load client in its own process holds ``--pings``
Pings on node 1 (one user and one keep-alive connection each, raw HTTP/1.1 with
easync's own WBXML codec; after a wake it Syncs the new contact and Pings again).
This process writes through node 2: a Sync adding one contact for a user whose Ping
has been held for at least 0.5 s, ``--rate`` writes a second, until ``--wakeups``
Pings were woken.

Latency of one wake-up: from right after node 2's answer to the write arrived here
(the write committed before that: the figure leaves out the time from the commit to
that answer) to the arrival of the woken Ping's answer bytes at the load client.
Both ends take ``time.monotonic()``, the same clock in both processes.  The figure
from the moment the write was *sent* (an upper bound) is given too.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import queue
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench_wbxml import cpu_model  # the machine line every bench report shares

from easync.wbxml import E, decode, encode

PASSWORD = "crossnode-pw-1"
HEARTBEAT = 1800
HEADERS = {"MS-ASProtocolVersion": "14.1", "Content-Type": "application/vnd.ms-sync.wbxml",
           "User-Agent": "bench-crossnode/1.0"}


def user_name(i: int) -> str:
    return f"cn{i:05d}"


def auth(i: int) -> str:
    return "Basic " + b64encode(f"{user_name(i)}:{PASSWORD}".encode()).decode()


def path(cmd: str, i: int, device: str) -> str:
    return (f"/Microsoft-Server-ActiveSync?Cmd={cmd}&User={user_name(i)}"
            f"&DeviceId={device}{i}&DeviceType=iPhone")


def sync_body(folder: str, key: str, add: str | None = None) -> Any:
    coll = E("AirSync:Collection", E("AirSync:SyncKey", key),
             E("AirSync:CollectionId", folder))
    if add is not None:
        coll.add("AirSync:GetChanges", "0")
        coll.add("AirSync:Commands").append(E(
            "AirSync:Add", E("AirSync:ClientId", add),
            E("AirSync:ApplicationData", E("Contacts:FirstName", add),
              E("Contacts:LastName", "Crossnode"))))
    return E("AirSync:Sync", E("AirSync:Collections", coll))


def ping_body(folder: str) -> Any:
    return E("Ping:Ping", E("Ping:HeartbeatInterval", str(HEARTBEAT)), E(
        "Ping:Folders", E("Ping:Folder", E("Ping:Id", folder), E("Ping:Class", "Contacts"))))


def sync_key_of(root: Any) -> str:
    return root.find("AirSync:Collections").find("AirSync:Collection").findtext(
        "AirSync:SyncKey")


# ------------------------------------------------------------------ the load client

class Device:
    """One phone on node 1: a keep-alive connection holding a Ping."""

    def __init__(self, port: int, i: int, folder: str) -> None:
        self.port, self.i, self.folder = port, i, folder
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.key = "0"

    async def call(self, cmd: str, root: Any) -> tuple[int, Any, float]:
        if self.writer is None:
            # each device from its own loopback address, as phones on the Internet:
            # the server checks at most 8 logins of one address at a time
            source = (f"127.1.{self.i // 250 % 250}.{1 + self.i % 250}", 0)
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, local_addr=source)
        assert self.reader is not None
        body = encode(root)
        head = [f"POST {path(cmd, self.i, 'pinger')} HTTP/1.1", "Host: 127.0.0.1",
                f"Authorization: {auth(self.i)}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in HEADERS.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        arrived = time.monotonic()          # the first bytes of the answer
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        data = await self.reader.readexactly(length) if length else b""
        return status, (decode(data) if data else None), arrived

    async def catch_up(self) -> None:
        while True:
            status, root, _ = await self.call("Sync", sync_body(self.folder, self.key))
            assert status == 200, status
            if root is None:
                return
            self.key = sync_key_of(root)
            coll = root.find("AirSync:Collections").find("AirSync:Collection")
            if coll.find("AirSync:MoreAvailable") is None:
                return

    async def hold(self, out: Any) -> None:
        """Ping; after a wake, Sync what changed and Ping again, as a phone does."""
        body = ping_body(self.folder)
        while True:
            out(f"H {self.i} {time.monotonic():.6f}")
            _status, root, arrived = await self.call("Ping", body)
            ping_status = root.findtext("Ping:Status") if root is not None else "-"
            out(f"W {self.i} {arrived:.6f} {ping_status}")
            if ping_status == "2":
                await self.catch_up()


async def pinger(port: int, folders: dict[str, str], concurrency: int) -> None:
    """Hold one Ping per user on node 1; print ``H <user> <time>`` when a Ping is
    sent and ``W <user> <time> <status>`` when its answer arrives."""

    def out(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    gate = asyncio.Semaphore(concurrency)   # devices setting up at once

    async def start(d: Device) -> None:
        async with gate:
            status, root, _ = await d.call("Sync", sync_body(d.folder, "0"))
            assert status == 200 and root is not None, status
            d.key = sync_key_of(root)
            await d.catch_up()
        await d.hold(out)

    await asyncio.gather(*(start(Device(port, int(i), f)) for i, f in folders.items()))


# ------------------------------------------------------------------ the coordinator

def pg_database(admin_url: str) -> str:
    import psycopg

    name = f"easync_bench_crossnode_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return name


def drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def make_users(db: str, count: int) -> dict[str, str]:
    """Create the users (through the store, in a child process); {index: Contacts id}."""
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
import bcrypt
from twisted.internet import defer, task
from backends.sql.store import SqlStore

async def main(reactor):
    store = SqlStore(reactor, {db!r})
    await store.open()
    h = bcrypt.hashpw({PASSWORD!r}.encode(), bcrypt.gensalt(4)).decode()
    out = {{}}
    for i in range({count}):
        user = await store.add_user("cn%05d" % i, h, None, True)
        out[i] = next(f.server_id for f in await store.list_folders(user)
                      if f.name == "Contacts")
    await store.close()
    print(json.dumps(out))

task.react(lambda r: defer.ensureDeferred(main(r)))
"""
    res = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return json.loads(res.stdout)


def start_node(tmp: str, name: str, db: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    from easync_server import free_port, twistd

    port = free_port()
    log = Path(tmp) / f"{name}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [twistd(), "-n", "--logfile", "-", "--pidfile", "", "easync",
             "--listen", f"tcp:{port}:interface=127.0.0.1", "--db", db,
             "--node-name", name, "--provisioning", "off",
             # all load from this one machine
             "--max-connections-per-address", "0"],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited: {log.read_text()}")
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).connect()
            return proc, port, log
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Writer:
    """Device "writer<i>" of every user on node 2, over one keep-alive connection."""

    def __init__(self, port: int, folders: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.folders = folders
        self.keys: dict[int, str] = {}
        self.n = 0

    def call(self, cmd: str, i: int, root: Any) -> Any:
        self.conn.request("POST", path(cmd, i, "writer"), encode(root),
                          {"Authorization": auth(i), **HEADERS})
        resp = self.conn.getresponse()
        data = resp.read()
        assert resp.status == 200, (cmd, resp.status)
        return decode(data) if data else None

    def prime(self, i: int) -> None:
        folder = self.folders[str(i)]
        key = sync_key_of(self.call("Sync", i, sync_body(folder, "0")))
        while True:
            root = self.call("Sync", i, sync_body(folder, key))
            if root is None:
                break
            key = sync_key_of(root)
        self.keys[i] = key

    def add(self, i: int) -> None:
        self.n += 1
        root = self.call("Sync", i, sync_body(self.folders[str(i)], self.keys[i],
                                              add=f"w{self.n}"))
        self.keys[i] = sync_key_of(root)



def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def run(args: argparse.Namespace, pings: int) -> dict[str, Any]:
    admin = args.pg
    name = pg_database(admin)
    db = f"{admin.rsplit('/', 1)[0]}/{name}"
    procs: list[subprocess.Popen[Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            folders = make_users(db, pings)
            node1, port1, log1 = start_node(tmp, "node1", db)
            procs.append(node1)
            node2, port2, _log2 = start_node(tmp, "node2", db)
            procs.append(node2)
            env = dict(os.environ, PYTHONPATH=str(REPO))
            folders_file = Path(tmp) / "folders.json"
            folders_file.write_text(json.dumps(folders))
            load = subprocess.Popen(
                [sys.executable, __file__, "--pinger", str(port1), str(folders_file)],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(load)
            events: queue.Queue[list[str]] = queue.Queue()

            def read() -> None:
                assert load.stdout is not None
                for line in load.stdout:
                    events.put(line.split())

            threading.Thread(target=read, daemon=True).start()
            writer = Writer(port2, folders)
            for i in range(pings):
                writer.prime(i)
            held: dict[int, float] = {}      # user -> when its Ping was sent
            pending: dict[int, tuple[float, float]] = {}   # user -> (sent, returned)
            lat_returned: list[float] = []
            lat_sent: list[float] = []
            samples: list[tuple[float, float, int]] = []   # (write returned, latency, user)
            other_status: dict[str, int] = {}

            def drain(block: float = 0.0) -> None:
                try:
                    ev = events.get(timeout=block) if block else events.get_nowait()
                except queue.Empty:
                    return
                while True:
                    kind, i = ev[0], int(ev[1])
                    if kind == "H":
                        held[i] = float(ev[2])
                    elif kind == "W":
                        arrived, status = float(ev[2]), ev[3]
                        held.pop(i, None)
                        if i in pending and status == "2":
                            sent, returned = pending.pop(i)
                            lat_returned.append(arrived - returned)
                            lat_sent.append(arrived - sent)
                            samples.append((returned, arrived - returned, i))
                        else:
                            other_status[status] = other_status.get(status, 0) + 1
                    try:
                        ev = events.get_nowait()
                    except queue.Empty:
                        return

            deadline = time.monotonic() + 600
            while len(held) < pings:       # every Ping out
                if load.poll() is not None:
                    raise RuntimeError(f"load client died: {load.stderr.read()}")
                drain(0.5)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(held)} Pings held")
            setup = time.monotonic() - t0
            time.sleep(1.0)
            drain()
            interval = 1.0 / args.rate
            next_write = time.monotonic()
            writes = 0
            rng = random.Random(7)
            start = time.monotonic()
            while len(lat_returned) < args.wakeups:
                drain()
                now = time.monotonic()
                if writes < args.wakeups and now >= next_write:
                    ready = [i for i, t in held.items() if now - t >= 0.5 and i not in pending]
                    if ready:
                        i = rng.choice(ready)
                        sent = time.monotonic()
                        writer.add(i)
                        pending[i] = (sent, time.monotonic())
                        writes += 1
                        next_write += interval
                        continue
                if now - start > 600:
                    raise RuntimeError("timed out")
                drain(0.001)
            elapsed = time.monotonic() - start
            node1_log = log1.read_text()
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        drop_database(admin, name)
    ms = [x * 1000 for x in lat_returned]
    ms_sent = [x * 1000 for x in lat_sent]
    return {
        "pings": pings, "wakeups": len(ms), "rate": args.rate, "setup_s": setup,
        "elapsed_s": elapsed,
        "p50": statistics.median(ms), "p99": percentile(ms, 99), "max": max(ms),
        "min": min(ms), "mean": statistics.fmean(ms),
        "p50_sent": statistics.median(ms_sent), "p99_sent": percentile(ms_sent, 99),
        "other": other_status, "reconnects": node1_log.count("listening again"),
        "samples": samples,
    }


def report(results: list[dict[str, Any]], argv: list[str]) -> str:
    load = os.getloadavg()
    rate = results[0]["rate"]
    rows = "\n".join(
        f"| {r['pings']:,} | {r['wakeups']:,} | {r['p50']:.1f} ms | {r['p99']:.1f} ms "
        f"| {r['max']:.1f} ms | {r['p50_sent']:.1f} ms | {r['p99_sent']:.1f} ms "
        f"| {sum(r['other'].values())} |" for r in results)
    return f"""
## Cross-node push latency (PostgreSQL)

Run {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs (nproc), {cpu_model()},
Python {platform.python_version()}, PostgreSQL on 127.0.0.1, everything on this one
machine; load average after the runs {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.
`python bench/bench_crossnode.py {' '.join(argv)}`.

Two `twistd easync` nodes (`tcp:` listeners) on one fresh database.  A load client
in its own process holds the Pings on node 1 (one user and one keep-alive connection
each; after a wake it Syncs and Pings again).  This process adds one contact every
{1000 / rate:.0f} ms through node 2 (a Sync over keep-alive HTTP) for a user whose
Ping has been held for 0.5 s or more.  Latency: from right after node 2's answer to
the write arrived (the write had committed) to the woken Ping's answer bytes at the
load client; "from sent": from the moment the write was sent (an upper bound).
Both ends read `time.monotonic()`, one clock for both processes.

| Pings held on node 1 | wake-ups | p50 | p99 | max | p50 from sent | p99 from sent | other Ping answers |
|---:|---:|---:|---:|---:|---:|---:|---:|
{rows}

The path: node 2 commits and publishes; its change hub sends the NOTIFY on its
LISTEN connection in the same reactor turn; PostgreSQL hands it to node 1's LISTEN
connection; node 1 wakes the held Ping, which reads the folder's state and answers.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pings", default="1000",
                    help="Pings held on node 1; several runs: 1000,5000")
    ap.add_argument("--wakeups", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=25.0, help="writes per second")
    ap.add_argument("--pg", default=os.environ.get(
        "EASYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="an existing database of the server, to create the benchmark's one from")
    ap.add_argument("--append", metavar="RESULTS_MD",
                    help="append the results section to this file (bench/RESULTS.md)")
    ap.add_argument("--samples", metavar="FILE",
                    help="write each wake-up (write time, latency in ms, user) to "
                         "FILE.<pings>")
    ap.add_argument("--pinger", nargs=2, metavar=("PORT", "FOLDERS_JSON"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=50, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pinger:
        port, folders_file = args.pinger
        folders = json.loads(Path(folders_file).read_text())
        asyncio.run(pinger(int(port), folders, args.concurrency))
        return
    results = []
    for pings in (int(n) for n in args.pings.split(",")):
        res = run(args, pings)
        results.append(res)
        print(f"{pings} Pings: p50 {res['p50']:.1f} ms, p99 {res['p99']:.1f} ms, "
              f"max {res['max']:.1f} ms", flush=True)
        if args.samples:
            with open(f"{args.samples}.{pings}", "w") as f:
                f.writelines(f"{t:.6f} {lat * 1000:.3f} {i}\n"
                             for t, lat, i in res["samples"])
    text = report(results, sys.argv[1:])
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
