"""A realistic day of a fleet of phones (issue #12 point 5).

    python bench/bench_fleet.py --devices 10000                 # one day of 10 minutes
    python bench/bench_fleet.py --quick --devices 5000          # a 2-minute day
    python bench/bench_fleet.py --step 1000,5000,10000,20000,30000,50000 --quick
    (``--all``: go on after a failing D, for the figures; ``--json FILE``: the figures
    of each day, as tests/test_bench_fleet.py reads them; 50,000 devices need
    ``--workers 3``: one process holds fewer than 20,000 connections here)
    python bench/bench_fleet.py --populate-only --step 50000      # users, ahead of time
    python bench/bench_fleet.py --step 20000,30000,50000 --reuse-setup --quick --all \
        --workers 3                 # one fleet: each step only sets up the devices it adds

A setup that cannot bring its devices up (an error from a device, a load generator or
the server gone, no more Pings held for ``--stall`` s, ``--setup-timeout``) ends with
``FAIL <D> devices: <why>``; every process started here is stopped then, at the end,
on Ctrl-C, and (``setpriv --pdeathsig``) when this script is killed.

PostgreSQL (``--db``, default ``postgresql://postgres@127.0.0.1/bench_fleet``, created
when missing; its users ``f000000``… are kept and reused, their devices and sync states
are cleared at each run) and ``twistd easync --workers N`` (``--workers``, default 2) on
this machine.

The fleet: ``--devices`` D devices of U users; a share ``--second`` (0.3) of the users
has a second device, so U = D / 1.3.  Each device is an iPhone (16.1, Ping heartbeat
1,680 s), an Android phone (Gmail app, 14.1, 470 s) or Outlook (14.0, 900 s), mixed by
``--mix`` (``ios=5,android=4,outlook=1``), with the DeviceType, User-Agent and Sync
request shapes of ``tests/corpus/devices/`` (``bench/fleetload.py``).  Every device
syncs its Contacts and Calendar and holds a Ping on both, from a loopback address of
its own.

The day (``--duration`` s, 600; ``--quick``: 120): every user changes a contact at
random times, one change per ``--change-interval`` s (600) on average.  A user with two
devices makes a share ``--by-device`` (0.5) of them on one of the two (a Sync with an
Add: the other device must be woken); the other changes, and all changes of one-device
users, come as an import (``easync.importer.import_file`` of a vCard, what
``easync-admin import`` runs: store write, then the PostgreSQL NOTIFY any node sends)
from one writer process.  A woken device Syncs what its Ping names, then Pings again.

Measured over the day: push latency (the change's commit — for a device's Add, the
moment its Sync request was written, which is before the commit — to the Ping answer
arriving at the woken device, ``time.monotonic()``: one clock for every process),
Sync latency at the client (request written → answer read, every Sync of the day),
errors (load generators, server logs), CPU of every process (``/proc/PID/stat``: the
server's workers, the load generators, the writer, the PostgreSQL backends of this
database), the server's RSS, and where the server's time goes (its request log: time
per command; /metrics: garbage-collector pauses).  A day passes when push p99 ≤ 1 s,
Sync p99 ≤ 200 ms and nothing failed.  ``--step`` runs one day per D and stops at the
first D that fails.  Output ends with a markdown table, ready for bench/RESULTS.md.

Load generators (``bench/fleetload.py``, ``--per-loader`` 5,000 devices each) and the
writer share the machine's CPUs with the server: their CPU is reported beside it.
Every process started here stops by itself after the day (and is killed at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_pings import (
    POPULATE_HEAD,
    Server,
    cpu_ticks,
    die_with_parent,
    env,
    percentile,
    rss_kb,
    stop_process,
)
from fleetload import PROFILES, shape

PASSWORD = "fleet-password-1"
DEFAULT_DB = "postgresql://postgres@127.0.0.1/bench_fleet"
TICK = os.sysconf("SC_CLK_TCK")

# -- the database -------------------------------------------------------------------------

POPULATE = POPULATE_HEAD + r"""    async def folders():
        rows = await store.raw_query(
            "SELECT u.name, f.name, f.id FROM users u JOIN folders f ON f.user_id = u.id"
            " WHERE f.name IN ('Contacts', 'Calendar')")
        have = {}
        for user, folder, fid in rows:
            have.setdefault(user, {})[folder] = str(fid)
        return have
    have = await folders()
    names = [f"f{i:06d}" for i in range(N)]
    missing = [n for n in names if n not in have]
    for start in range(0, len(missing), 200):
        await defer.gatherResults([store.add_user(n, h, None, True)
                                   for n in missing[start:start + 200]])
        if start % 5000 == 0:
            print(f"  users: {start + 200}/{len(missing)} created", flush=True)
    if missing:
        have = await folders()
    for table in ("sync_states", "held_requests", "devices"):
        await store.raw_query(f"DELETE FROM {table}")
    await store.close()
    with open(OUT, "w") as f:
        json.dump([[n, have[n]["Contacts"], have[n]["Calendar"]] for n in names], f)

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""

WRITER = r"""
import json, sys, time
from pathlib import Path
from twisted.internet import defer, task
from backends.sql.store import SqlStore
from backends.sql.pgnotify import announce
from easync.importer import import_file

URL, FLEET, SCHEDULE, DIR, PARALLEL, HARD, RUN = (
    sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]),
    float(sys.argv[6]), sys.argv[7])

async def main(reactor):
    users = json.load(open(FLEET))["users"]
    schedule = sorted(json.load(open(SCHEDULE)))
    store = SqlStore(reactor, URL)
    await store.open()
    cache = {}
    gate = defer.DeferredSemaphore(PARALLEL)
    print("ready", flush=True)
    t0 = float(sys.stdin.readline().split()[1])
    stop = time.monotonic() + HARD

    async def write(n, u, at):
        name = users[u][0]
        if name not in cache:
            cache[name] = await store.get_user(name)
        user = cache[name]
        path = DIR / f"c{n}.vcf"
        # a new contact each time (the importer leaves one it already has unchanged)
        path.write_text(f"BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Grace Hopper {RUN}-{n}\r\n"
                        f"N:Hopper;Grace {RUN}-{n};;;\r\nEMAIL:grace{RUN}-{n}@example.org\r\n"
                        f"TEL;TYPE=CELL:+1 555 0100 {n}\r\nEND:VCARD\r\n")
        committed = []
        async def tell(folders):
            committed.append(time.monotonic())
            await announce(store, user.id, folders, source="easync-import")
        start = time.monotonic()
        await import_file(store, user, str(path), announce=tell)
        if not committed:
            raise RuntimeError("nothing written")
        # the last field: how late the import began after its time in the schedule
        print(f"W {u} {start:.6f} {committed[0]:.6f} {time.monotonic():.6f} "
              f"{start - t0 - at:.6f}", flush=True)

    async def guarded(n, u, at):
        try:
            await gate.run(lambda: defer.Deferred.fromCoroutine(write(n, u, at)))
        except Exception as e:
            print(f"X {u} {type(e).__name__}:{str(e)[:60].replace(' ', '_')}", flush=True)

    pending = []
    for n, (at, u) in enumerate(schedule):
        wait = t0 + at - time.monotonic()
        if time.monotonic() + max(wait, 0) > stop:
            break
        if wait > 0:
            await task.deferLater(reactor, wait, lambda: None)
        pending.append(defer.Deferred.fromCoroutine(guarded(n, u, at)))
    await defer.DeferredList(pending)
    await store.close()

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""


def ensure_db(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    base = url.rsplit("/", 1)[0] + "/postgres"
    code = ("import psycopg, sys\n"
            "c = psycopg.connect(sys.argv[1], autocommit=True)\n"
            "if not c.execute('SELECT 1 FROM pg_database WHERE datname=%s',"
            " (sys.argv[2],)).fetchone():\n"
            "    c.execute(f'CREATE DATABASE {sys.argv[2]}')\n")
    subprocess.run([sys.executable, "-c", code, base, name], check=True)


def backend_pids(url: str) -> list[int]:
    """The PostgreSQL backends connected to this benchmark's database now."""
    name = url.rsplit("/", 1)[1]
    code = ("import psycopg, sys\n"
            "c = psycopg.connect(sys.argv[1], autocommit=True)\n"
            "print(' '.join(str(r[0]) for r in c.execute("
            "'SELECT pid FROM pg_stat_activity WHERE datname=%s AND pid<>pg_backend_pid()',"
            " (sys.argv[2],))))\n")
    out = subprocess.run([sys.executable, "-c", code, url, name], check=True,
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# -- processes ------------------------------------------------------------------------------

class Proc:
    """A subprocess whose output lines are collected by a thread."""

    def __init__(self, args: list[str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(die_with_parent(args), env=env(), cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.done = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
            self.done.set()

        threading.Thread(target=pump, daemon=True).start()

    def tell(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def since(self, mark: int) -> list[str]:
        """The lines printed after the first ``mark`` (``len(self.lines)`` then)."""
        return self.lines[mark:]

    def said(self, word: str, mark: int = 0) -> bool:
        return any(ln == word or ln.startswith(word + " ") for ln in self.lines[mark:])

    def ticks(self) -> int:
        try:
            return cpu_ticks(self.proc.pid)
        except OSError:
            return 0

    def stop(self) -> None:
        stop_process(self.proc, 20)


def ticks_of(pids: list[int]) -> dict[int, int]:
    out = {}
    for p in pids:
        try:
            out[p] = cpu_ticks(p)
        except OSError:
            pass
    return out


def cpu_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    return sum(after[p] - before.get(p, 0) for p in after) / TICK


# -- the fleet and its day ----------------------------------------------------------------

@dataclass
class Fleet:
    users: list[list[str]]                          # [name, contacts id, calendar id]
    devices: list[list]                             # [user, device id, profile, c, cal]
    owner: list[int]                                # device -> user index
    of_user: dict[int, list[int]] = field(default_factory=dict)


def plan_fleet(n_devices: int, second: float, mix: dict[str, int],
               seed: int) -> list[tuple[int, str]]:
    """(user index, profile) of devices 0…n-1: user u has a second device with
    probability ``second`` and each device a profile drawn by ``mix``, from a random
    stream of u's own, so that the plan of D devices is the first D of any larger plan
    (``--reuse-setup`` adds devices to a running fleet; U ≈ D / (1 + second))."""
    kinds = [k for k, w in mix.items() for _ in range(w)]
    out: list[tuple[int, str]] = []
    for u in range(n_devices):
        r = random.Random(f"{seed}:{u}")
        for _ in range(2 if r.random() < second else 1):
            if len(out) >= n_devices:
                return out
            out.append((u, r.choice(kinds)))
    return out


def build_fleet(users: list[list[str]], plan: list[tuple[int, str]]) -> Fleet:
    devices, owners, of_user = [], [], {}
    for i, (u, profile) in enumerate(plan):
        name, contacts, calendar = users[u]
        devices.append([name, shape(profile).device_id(i), profile, contacts, calendar])
        owners.append(u)
        of_user.setdefault(u, []).append(i)
    n_users = owners[-1] + 1 if owners else 0
    return Fleet(users[:n_users], devices, owners, of_user)


def build_schedule(fleet: Fleet, duration: float, interval: float, by_device: float,
                   rng: random.Random) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """(device changes [(t, device)], imports [(t, user)]): each user's changes a Poisson
    process of mean gap ``interval`` over ``[0, duration)``."""
    on_device, imports = [], []
    for u, devs in fleet.of_user.items():
        t = rng.expovariate(1 / interval)
        for _ in range(100000):
            if t >= duration:
                break
            if len(devs) > 1 and rng.random() < by_device:
                on_device.append((t, rng.choice(devs)))
            else:
                imports.append((t, u))
            t += rng.expovariate(1 / interval)
    return sorted(on_device), sorted(imports)


@dataclass
class Day:
    devices: int
    users: int
    workers: int
    duration: float
    load: str
    rows: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    passed: bool = False
    figures: dict[str, float] = field(default_factory=dict)     # for --json


def pct(values: list[float]) -> str:
    if not values:
        return "–"
    return (f"{percentile(values, 0.5):.0f} / {percentile(values, 0.99):.0f} / "
            f"{max(values):.0f}")


LOG_LINE = re.compile(r"^(\S+) \[easync\.request#info\] \S+ \S+ (\w+) http=(\d+) "
                      r"status=(\S+) ([\d.]+)ms")


def log_time(stamp: str) -> float:
    from datetime import datetime
    return datetime.fromisoformat(stamp).timestamp()


def server_logs(server: Server) -> list[str]:
    """The text of every worker's log and of their rotations (twistd starts a new file
    at 1 MB); a file gone between the listing and the read is left out."""
    out = []
    log = server.log
    paths = {*log.parent.glob(log.name + "*"), *log.parent.glob(f"{log.stem}-w*{log.suffix}*")}
    for path in sorted(paths):
        try:
            out.append(path.read_text(errors="replace"))
        except FileNotFoundError:
            continue
    return out


def request_log(server: Server, start: float, end: float) -> dict[str, list[float]]:
    """Server time (ms, its request log) per command of the requests answered between
    ``start`` and ``end`` (wall clock); Pings by their answer's status."""
    out: dict[str, list[float]] = {}
    for text in server_logs(server):
        for line in text.splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            t = log_time(m.group(1))
            if not start <= t <= end + 1:
                continue
            cmd = m.group(2) if m.group(2) != "Ping" else f"Ping status={m.group(4)}"
            if m.group(3) != "200":
                cmd += f" http={m.group(3)}"
            out.setdefault(cmd, []).append(float(m.group(5)))
    return out


class SetupFailed(Exception):
    """The fleet could not be brought up: the reason, for the FAIL line."""


def fds_and_limit(pid: int) -> tuple[int, int]:
    """(open file descriptors, soft limit) of process ``pid``."""
    n = len(os.listdir(f"/proc/{pid}/fd"))
    limit = 0
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            limit = int(line.split()[3])
    return n, limit


class Rig:
    """The server, its database and the load generators of one or more days.  ``grow``
    brings the fleet up to D devices (only the devices not yet up are set up: with
    ``--reuse-setup`` the devices of the previous step keep holding their Pings), ``day``
    runs one day with every device up.  ``close`` stops every process it started."""

    def __init__(self, args: argparse.Namespace, max_devices: int,
                 populate_only: bool = False) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        self.loaders: list[Proc] = []
        self.server: Server | None = None
        self.n = 0
        self.days = 0
        self.log_errors_before = 0
        mix = {k: int(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
        assert set(mix) <= set(PROFILES), f"--mix: profiles are {sorted(PROFILES)}"
        plan = plan_fleet(max_devices, args.second, mix, args.seed)
        n_users = plan[-1][0] + 1
        t_pop = time.monotonic()
        subprocess.run(die_with_parent([sys.executable, "-c", POPULATE, args.db, str(n_users),
                        str(self.work / "users.json"), PASSWORD]), check=True, env=env(),
                       cwd=REPO)
        users = json.loads((self.work / "users.json").read_text())
        print(f"database ready: {n_users} users ({time.monotonic() - t_pop:.0f} s)", flush=True)
        self.fleet = build_fleet(users, plan)
        if populate_only:
            return
        (self.work / "fleet.json").write_text(json.dumps({
            "devices": self.fleet.devices, "users": self.fleet.users, "password": PASSWORD,
            "source_net": str(args.source_net)}))
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if args.server_files:       # the server inherits this soft limit; ours is restored
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.server_files, hard), hard))
        try:
            self.server = Server(self.work, args.db, name="fleet", workers=args.workers)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        time.sleep(1)
        self.rss_base = sum(rss_kb(p) for p in self.server.pids())

    def prefix(self, n: int) -> Fleet:
        """The fleet of the first ``n`` devices."""
        owners = self.fleet.owner[:n]
        of_user: dict[int, list[int]] = {}
        for i, u in enumerate(owners):
            of_user.setdefault(u, []).append(i)
        n_users = owners[-1] + 1 if owners else 0
        return Fleet(self.fleet.users[:n_users], self.fleet.devices[:n], owners, of_user)

    def balance(self) -> str:
        """Held Pings and open files of each server worker, open files of the busiest
        load generator: a process may open at most ``ulimit -n`` files."""
        assert self.server is not None
        held = self.server.held_each()
        fds = []
        for pid in self.server.pids():
            try:
                fds.append(fds_and_limit(pid))
            except OSError:
                continue
        lds = []
        for ld in self.loaders:
            try:
                lds.append(fds_and_limit(ld.proc.pid))
            except OSError:
                continue
        worst = max((n / lim for n, lim in fds + lds if lim), default=0)
        out = (f"held per worker {'/'.join(str(h) for h in held)}; open files per server "
               f"process {'/'.join(str(n) for n, _ in fds)} of {fds[0][1] if fds else '?'}"
               f"; busiest load generator {max((n for n, _ in lds), default=0)}")
        if worst > 0.9:
            out += f" — WARNING: a process uses {worst:.0%} of its open-files limit"
        return out

    def grow(self, n: int) -> float:
        """Set up devices ``self.n`` … ``n - 1`` (Sync 0, Sync, Ping each) and wait until
        the server holds a Ping of every device; the seconds it took.  SetupFailed when a
        load generator reports an error or ends, when the count of held Pings stops
        growing for ``--stall`` s, or after ``--setup-timeout`` s."""
        args, server = self.args, self.server
        assert server is not None
        if n <= self.n:
            return 0.0
        marks = {id(ld): len(ld.lines) for ld in self.loaders}
        new: list[Proc] = []
        firsts = list(range(self.n, n, args.per_loader))
        per = max(1, args.setup_concurrency // max(1, len(firsts)))
        hard = (args.setup_timeout + args.duration + args.grace + 240) * len(args.steps) + 600
        for first in firsts:
            count = min(args.per_loader, n - first)
            ld = Proc([sys.executable, str(REPO / "bench" / "fleetload.py"),
                       "--port", str(server.port), "--fleet", str(self.work / "fleet.json"),
                       "--first", str(first), "--count", str(count),
                       "--grace", str(args.grace), "--setup-timeout", str(args.setup_timeout),
                       "--concurrency", str(per), "--stay", "--hard", str(hard)],
                      f"loader{first}")
            marks[id(ld)] = 0
            new.append(ld)
            self.loaders.append(ld)
        t_setup = time.monotonic()
        held, best, best_at, next_note = 0, -1, t_setup, t_setup + 30
        slack = n // 2000      # Pings between a heartbeat's answer and the next (older devices)
        cpu0 = {ld.proc.pid: ld.ticks() for ld in new}
        for _ in range(int(args.setup_timeout) + 10):
            time.sleep(0.5 if n < 1000 else 2)
            now = time.monotonic()
            if server.proc.poll() is not None:
                raise SetupFailed(f"the server exited during the setup (code "
                                  f"{server.proc.returncode})")
            errors = [ln for ld in self.loaders for ln in ld.since(marks[id(ld)])
                      if ln.startswith("E ")]
            if errors:
                raise SetupFailed(f"{len(errors)} errors from the load generators, e.g. "
                                  f"{errors[:3]}")
            ended = [ld.name for ld in self.loaders if ld.proc.poll() is not None]
            if ended:
                raise SetupFailed(f"load generator(s) {ended} ended during the setup")
            try:
                held = server.held()
            except OSError:
                held = -1
            if held > best:
                best, best_at = held, now
            elif now - best_at > args.stall:
                raise SetupFailed(f"setup stalled: {max(best, 0)} of {n} Pings held, none more "
                                  f"in {args.stall:.0f} s (after {now - t_setup:.0f} s)")
            if now - t_setup > args.setup_timeout:
                raise SetupFailed(f"setup: only {held} of {n} Pings held after "
                                  f"{args.setup_timeout:.0f} s (--setup-timeout)")
            if held >= n - slack and all(ld.said("D") for ld in new):
                break
            if now >= next_note:
                next_note += 30
                rate = (held - self.n) / (now - t_setup)
                cpu = sum(ld.ticks() - cpu0.get(ld.proc.pid, 0) for ld in new) / TICK
                print(f"  setup +{now - t_setup:.0f} s: {held} of {n} held ({rate:.0f}/s), "
                      f"load generators {cpu / (now - t_setup) * 100:.0f} % of a core, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
        setup_s = time.monotonic() - t_setup
        cpu = sum(ld.ticks() - cpu0.get(ld.proc.pid, 0) for ld in new) / TICK
        self.setup_note = (f"setup of devices {self.n}…{n - 1}: {setup_s:.0f} s, "
                           f"{(n - self.n) / setup_s:.0f} devices/s, load generators "
                           f"{cpu / setup_s * 100:.0f} % of one core, {per} at once each of "
                           f"{len(new)}")
        print(f"{held} Pings held; {self.setup_note}; {self.balance()}", flush=True)
        self.setup_rate = (n - self.n) / setup_s
        self.setup_s = setup_s
        self.n = n
        return setup_s

    def day(self, n_devices: int) -> Day:
        """One day of the first ``n_devices`` devices, all up (``grow(n_devices)``)."""
        args, server = self.args, self.server
        assert server is not None and self.n == n_devices
        self.days += 1
        rng = random.Random(args.seed * 1000003 + n_devices)
        fleet = self.prefix(n_devices)
        on_device, imports = build_schedule(fleet, args.duration, args.change_interval,
                                            args.by_device, rng)
        tag = f"{n_devices}-{self.days}"
        (self.work / f"imports-{tag}.json").write_text(json.dumps(imports))
        day = Day(n_devices, len(fleet.users), args.workers, args.duration, "")
        writer = Proc([sys.executable, "-c", WRITER, args.db, str(self.work / "fleet.json"),
                       str(self.work / f"imports-{tag}.json"), str(self.work),
                       str(args.writer_parallel), str(args.duration + args.grace),
                       f"{int(time.time())}{self.days}"], f"writer{tag}")
        try:
            return self._day(day, fleet, on_device, imports, writer, tag)
        finally:
            writer.stop()

    def _day(self, day: Day, fleet: Fleet, on_device: list[tuple[float, int]],
             imports: list[tuple[float, int]], writer: Proc, tag: str) -> Day:
        args, server, loaders = self.args, self.server, self.loaders
        assert server is not None
        n_devices = day.devices
        scheds = []
        for ld in loaders:
            first, count = self._slice(ld)
            mine = [(t, d) for t, d in on_device if first <= d < first + count]
            sched = self.work / f"changes-{tag}-{first}.json"
            sched.write_text(json.dumps(mine))
            scheds.append(sched)
        for _ in range(120):
            if writer.lines[:1] == ["ready"] or writer.proc.poll() is not None:
                break
            time.sleep(0.5)
        if writer.lines[:1] != ["ready"]:
            raise SetupFailed(f"the import writer is not ready: {writer.lines[:3]}")
        # the last setup requests' trail (hold records, autovacuum)
        time.sleep(min(3.0, 0.5 + n_devices / 4000))
        pg = backend_pids(args.db)
        server_pids = server.pids()
        rss_setup = sum(rss_kb(p) for p in server_pids)
        m0 = [server.metrics(i) for i in range(args.workers)]
        c0 = (ticks_of(server_pids), {ld.proc.pid: ld.ticks() for ld in loaders},
              writer.ticks(), ticks_of(pg))
        marks = [len(ld.lines) for ld in loaders]
        errors_before = len(self.log_error_lines())
        day.load = f"{os.getloadavg()[0]:.2f}"
        wall0 = time.time()
        t0 = time.monotonic() + 0.5
        for ld, sched in zip(loaders, scheds, strict=True):
            ld.tell(f"go {t0:.6f} {args.duration} {sched}")
        writer.tell(f"go {t0:.6f}")
        print(f"day of {args.duration:.0f} s: {len(on_device)} changes on a device, "
              f"{len(imports)} imports, {len(fleet.users)} users", flush=True)
        next_note = t0 + 30
        rss_peak = rss_setup
        for _ in range(int(args.duration * 2) + 10):
            if time.monotonic() >= t0 + args.duration:
                break
            time.sleep(0.5)
            rss_peak = max(rss_peak, sum(rss_kb(p) for p in server_pids))
            if time.monotonic() >= next_note:
                next_note += 30
                lines = [ln for ld, m in zip(loaders, marks, strict=True) for ln in ld.since(m)]
                pushes = sum(ln.startswith("P ") for ln in lines)
                errs = sum(ln.startswith("E ") for ln in lines)
                print(f"  t+{time.monotonic() - t0:.0f} s: {pushes} pushes, {errs} errors, "
                      f"load {os.getloadavg()[0]:.2f}", flush=True)
        c1 = (ticks_of(server_pids), {ld.proc.pid: ld.ticks() for ld in loaders},
              writer.ticks(), ticks_of(pg))
        rss_end = sum(rss_kb(p) for p in server_pids)
        m1 = [server.metrics(i) for i in range(args.workers)]
        wall1 = time.time()
        deadline = time.monotonic() + args.grace + 90
        for ld, m in zip(loaders, marks, strict=True):
            while not ld.said("F", m) and ld.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
        writer.done.wait(max(1.0, deadline - time.monotonic()))
        measure(day, fleet, [ld.since(m) for ld, m in zip(loaders, marks, strict=True)],
                writer.lines, t0, args)
        span = args.duration
        server_cpu = cpu_seconds(c0[0], c1[0]) / span * 100
        loader_cpu = sum(c1[1][p] - c0[1][p] for p in c1[1]) / TICK / span * 100
        writer_cpu = (c1[2] - c0[2]) / TICK / span * 100
        pg_cpu = cpu_seconds(c0[3], c1[3]) / span * 100
        per_k = 1000 / n_devices
        day.rows["server CPU, % of one core (per 1,000 devices)"] = (
            f"{server_cpu:.0f} % ({server_cpu * per_k:.1f} %)")
        day.rows["PostgreSQL backends CPU"] = f"{pg_cpu:.0f} %"
        n_changes = day.figures.get("changes", 0)
        if n_changes:
            day.rows["CPU ms per change: server + PostgreSQL"] = (
                f"{server_cpu * span * 10 / n_changes:.1f} + "
                f"{pg_cpu * span * 10 / n_changes:.1f}")
        if server_cpu + pg_cpu > 0:
            # what the day's CPU cost says, not a measurement: D for which the server and
            # its PostgreSQL would fill every CPU of the machine, growing linearly with D
            day.rows["D filling all CPUs at this cost (linear projection)"] = (
                f"{n_devices * 100 * (os.cpu_count() or 1) / (server_cpu + pg_cpu):,.0f}")
        day.rows["load generators CPU (writer)"] = f"{loader_cpu:.0f} % ({writer_cpu:.0f} %)"
        day.rows["server RSS MiB: idle / all held / peak / end of day (peak − idle per "
                 "1,000 devices)"] = (
            f"{self.rss_base / 1024:.0f} / {rss_setup / 1024:.0f} / {rss_peak / 1024:.0f} / "
            f"{rss_end / 1024:.0f} "
            f"({(rss_peak - self.rss_base) / 1024 * per_k:.1f})")
        day.rows["setup (Sync, Sync, Ping per device)"] = (
            f"{self.setup_s:.0f} s, {self.setup_rate:.0f} devices/s"
            + (" (the devices this step added)" if args.reuse_setup and self.days > 1 else ""))
        day.notes.append(self.setup_note)
        day.notes.append(self.balance())
        gc_full = sum(m1[i].get('python_gc_collections_total{generation="2"}', 0)
                      - m0[i].get('python_gc_collections_total{generation="2"}', 0)
                      for i in range(args.workers))
        gc_max = max(m.get('python_gc_pause_seconds_max{generation="2"}', 0) for m in m1)
        day.notes.append(f"full collections during the day: {gc_full:.0f} (--gc-freeze, the "
                         f"default, runs one per process every 0.5 s, of what is not frozen; "
                         f"longest pause since start {gc_max * 1000:.0f} ms)")
        times = request_log(server, wall0, wall1)
        day.notes.append("server time per request (its log, ms, p50 / p99 / max; count; total s): "
                         + "; ".join(f"{cmd} {pct(v)} ×{len(v)} = {sum(v) / 1000:.1f} s"
                                     for cmd, v in sorted(times.items())
                                     if not cmd.startswith("Ping")))
        day.notes.append("Pings answered: " + ", ".join(
            f"{cmd.split(' ', 1)[1]} ×{len(v)}" for cmd, v in sorted(times.items())
            if cmd.startswith("Ping")))
        errs = self.log_error_lines()[errors_before:]
        day.figures["server_log_errors"] = len(errs)
        if errs:
            day.notes.append(f"server logs: {len(errs)} error lines, e.g. {errs[:2]}")
            day.passed = False
            day.rows["targets: push p99 ≤ 1 s, Sync p99 ≤ 200 ms, no error"] = "FAIL"
        day.rows["errors"] = day.rows.get("errors", "0") + (f" + {len(errs)} in server logs"
                                                            if errs else "")
        return day

    def _slice(self, ld: Proc) -> tuple[int, int]:
        args = ld.proc.args
        assert isinstance(args, list)
        return int(args[args.index("--first") + 1]), int(args[args.index("--count") + 1])

    def log_error_lines(self) -> list[str]:
        assert self.server is not None
        return [ln for text in server_logs(self.server) for ln in text.splitlines()
                if "Traceback" in ln or "Unhandled" in ln or "EMFILE" in ln]

    def close(self) -> None:
        for ld in self.loaders:
            ld.stop()
        if self.server is not None:
            self.server.stop()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print(f"kept {self.work}")


def measure(day: Day, fleet: Fleet, loader_lines: list[list[str]], writer_lines: list[str],
            t0: float, args: argparse.Namespace) -> None:
    pushes: dict[int, list[float]] = {}
    syncs: dict[int, list[tuple[float, float, int, str]]] = {}
    sync_ms: list[float] = []
    change_ms: list[float] = []
    errors: list[str] = []
    changes: list[tuple[int, float, int]] = []        # (user, reference time, changer)
    heartbeats = 0
    for lines in loader_lines:
        for line in lines:
            f = line.split()
            if f[0] == "P":
                pushes.setdefault(int(f[1]), []).append(float(f[2]))
            elif f[0] == "Y" and float(f[3]) >= t0:
                a, b, n = float(f[3]), float(f[4]), int(f[5]) if f[5] != "-" else 0
                syncs.setdefault(int(f[1]), []).append((a, b, n, f[2]))
                (change_ms if f[2] == "c" else sync_ms).append((b - a) * 1000)
            elif f[0] == "C":
                d = int(f[1])
                changes.append((fleet.owner[d], float(f[2]), d))
            elif f[0] == "E":
                errors.append(line)
            elif f[0] == "H":
                heartbeats += 1
    commits, lags = [], []
    for line in writer_lines:
        f = line.split()
        if f[0] == "W":
            changes.append((int(f[1]), float(f[3]), -1))
            commits.append((float(f[3]) - float(f[2])) * 1000)
            if len(f) > 5:
                lags.append(float(f[5]) * 1000)
        elif f[0] == "X":
            errors.append(line)
    latencies: list[float] = []
    collected = missed = 0
    used: set[tuple[int, float]] = set()
    for user, ref, changer in changes:
        for d in fleet.of_user.get(user, []):
            if d == changer:
                continue
            p = next((t for t in sorted(pushes.get(d, [])) if t >= ref), None)
            # a Sync of d answered after the change's commit, bringing items, before
            # any later push: it may have read the change (it did, when no push follows)
            by_sync = any(ref <= b and n > 0 and (p is None or a < p)
                          for a, b, n, _k in syncs.get(d, []))
            if by_sync:
                collected += 1
            elif p is None:
                missed += 1
                if missed <= 3:
                    day.notes.append(f"missed: user {user} change at t0+{ref - t0:.3f} s "
                                     f"(by device {changer}) not pushed to device {d}; "
                                     f"its pushes {[round(t - t0, 3) for t in pushes.get(d, [])]}"
                                     f", Syncs {[(round(a - t0, 3), n, k) for a, _b, n, k in syncs.get(d, [])]}")
            else:
                latencies.append((p - ref) * 1000)
                used.add((d, p))
    all_pushes = sum(len(v) for v in pushes.values())
    empty_wakes = sum(1 for v in syncs.values() for _a, _b, n, k in v if n == 0 and k == "w")
    push_p99 = percentile(latencies, 0.99) if latencies else float("inf")
    sync_all = sync_ms + change_ms
    sync_p99 = percentile(sync_all, 0.99) if sync_all else float("inf")
    day.rows["changes: on a device / imported"] = (
        f"{sum(1 for c in changes if c[2] >= 0)} / {len(commits)}")
    day.rows["pushes measured (collected by a Sync already running; missed)"] = (
        f"{len(latencies)} ({collected}; {missed})")
    day.rows["push latency ms, p50 / p99 / max"] = pct(latencies)
    day.rows["Syncs after a wake, ms p50 / p99 / max (count)"] = (
        f"{pct(sync_ms)} ({len(sync_ms)})")
    day.rows["Syncs with an Add, ms p50 / p99 / max (count)"] = (
        f"{pct(change_ms)} ({len(change_ms)})")
    day.rows["errors"] = str(len(errors))
    day.notes.append(f"Ping answers: {all_pushes} Status 2 ({len(used)} matched to another "
                     f"device's change; the rest: a device woken by its own Add, or a "
                     f"second change already collected), {heartbeats} Status 1; Syncs "
                     f"after a wake that brought nothing: {empty_wakes}; import commit time p50 "
                     f"{percentile(commits, 0.5) if commits else 0:.0f} ms; imports begun "
                     f"after their time, ms p50 / p99 / max {pct(lags)} (the writer "
                     f"keeps up when these stay small)")
    if errors:
        day.notes.append(f"errors, e.g. {errors[:3]}")
    day.figures.update(pushes=len(latencies), push_p99_ms=push_p99, syncs=len(sync_ms),
                       adds=len(change_ms), sync_p99_ms=sync_p99, errors=len(errors),
                       missed=missed, imports=len(commits), changes=len(changes))
    day.passed = (push_p99 <= args.push_p99 and sync_p99 <= args.sync_p99 and not errors
                  and missed == 0 and bool(latencies))
    day.rows["targets: push p99 ≤ 1 s, Sync p99 ≤ 200 ms, no error"] = (
        "pass" if day.passed else "FAIL")


def table(days: list[Day], args: argparse.Namespace) -> str:
    keys = list(dict.fromkeys(k for d in days for k in d.rows))
    out = ["| devices | " + " | ".join(f"{d.devices:,}" for d in days) + " |",
           "|---|" + "---:|" * len(days),
           "| users | " + " | ".join(f"{d.users:,}" for d in days) + " |",
           "| load before the day | " + " | ".join(d.load for d in days) + " |"]
    for k in keys:
        out.append(f"| {k} | " + " | ".join(d.rows.get(k, "") for d in days) + " |")
    notes = []
    for d in days:
        notes.append(f"- {d.devices:,} devices: " + "; ".join(d.notes))
    return "\n".join(out) + "\n\n" + "\n".join(notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=10000)
    p.add_argument("--step", help="comma-separated D values: a day each, stop at the first "
                   "that fails (e.g. 1000,5000,10000,20000,30000,50000)")
    p.add_argument("--all", action="store_true",
                   help="with --step: go on after a D that fails (for the figures)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--db", default=DEFAULT_DB, help="PostgreSQL URL (created if missing)")
    p.add_argument("--duration", type=float, default=600, help="the day, seconds")
    p.add_argument("--quick", action="store_true", help="a day of 120 s")
    p.add_argument("--change-interval", type=float, default=600,
                   help="mean seconds between two changes of one user")
    p.add_argument("--second", type=float, default=0.3,
                   help="share of users with a second device")
    p.add_argument("--by-device", type=float, default=0.5,
                   help="share of a two-device user's changes made on a device")
    p.add_argument("--mix", default="ios=5,android=4,outlook=1")
    p.add_argument("--per-loader", type=int, default=5000,
                   help="devices per load-generator process (each holds one connection "
                        "per device, and a process may open at most `ulimit -n` files)")
    p.add_argument("--setup-concurrency", type=int, default=200,
                   help="devices being set up at once, over all load generators")
    p.add_argument("--reuse-setup", action="store_true",
                   help="with --step: one server and fleet for every step; a step adds "
                        "the devices it has more than the previous one (the others keep "
                        "holding their Pings) instead of setting the whole fleet up again")
    p.add_argument("--stall", type=float, default=180,
                   help="FAIL the setup when no more Pings are held for this many seconds")
    p.add_argument("--server-files", type=int, default=0,
                   help="the server processes' open-files limit (default: this shell's "
                        "`ulimit -n`), to see what a worker does when it reaches it")
    p.add_argument("--writer-parallel", type=int, default=16,
                   help="imports the writer runs at once")
    p.add_argument("--populate-only", action="store_true",
                   help="create the users of the largest D in --db and stop (they are "
                        "kept: later runs start faster)")
    p.add_argument("--source-net", type=int, default=100,
                   help="devices connect from 127.<this + i/62500>.x.y")
    p.add_argument("--grace", type=float, default=15,
                   help="seconds after the day for the last wakes")
    p.add_argument("--setup-timeout", type=float, default=1800)
    p.add_argument("--push-p99", type=float, default=1000, help="target, ms")
    p.add_argument("--sync-p99", type=float, default=200, help="target, ms")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", help="also write each day's figures to this file")
    args = p.parse_args()
    if args.quick:
        args.duration = min(args.duration, 120)
    ensure_db(args.db)
    steps = [int(s) for s in args.step.split(",")] if args.step else [args.devices]
    args.steps = steps
    if args.populate_only:
        rig = Rig(args, max(steps), populate_only=True)
        rig.close()
        return
    days: list[Day] = []
    rig: Rig | None = None
    try:
        for n in steps:
            print(f"== {n} devices, {args.workers} workers"
                  + (" (adding to the fleet of the previous step)"
                     if rig is not None and args.reuse_setup else ""), flush=True)
            if rig is None or not args.reuse_setup:
                rig = Rig(args, max(steps) if args.reuse_setup else n)
            try:
                rig.grow(n)
                day = rig.day(n)
            except SetupFailed as e:
                day = Day(n, len(rig.prefix(n).users), args.workers, args.duration,
                          f"{os.getloadavg()[0]:.2f}")
                day.rows["targets: push p99 ≤ 1 s, Sync p99 ≤ 200 ms, no error"] = (
                    f"FAIL: {e}")
                day.figures["setup_failed"] = 1
                print(f"FAIL {n} devices: {e}", flush=True)
                days.append(day)
                break
            finally:
                if not args.reuse_setup:
                    rig.close()
                    rig = None
            days.append(day)
            print(table([day], args), flush=True)
            if not day.passed and not args.all:
                break
    finally:
        if rig is not None:
            rig.close()
    passing = []
    for d in days:                  # the largest D with every smaller one passing too
        if not d.passed:
            break
        passing.append(d.devices)
    if args.json:
        Path(args.json).write_text(json.dumps(
            [dict(d.figures, devices=d.devices, passed=d.passed) for d in days]))
    cpu = Path("/proc/cpuinfo").read_text().split("model name", 1)[1].split("\n", 1)[0]
    cpu = cpu.split(":", 1)[-1].strip()
    print(f"\n### {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs ({cpu}), "
          f"`python bench/bench_fleet.py {' '.join(sys.argv[1:])}`\n")
    print(f"Day of {args.duration:.0f} s, one change per user per {args.change_interval:.0f} s, "
          f"{args.second:.0%} of users with a second device, {args.by_device:.0%} of their "
          f"changes on a device, mix {args.mix}, {args.workers} workers; load generators "
          "share the CPUs.  Largest D passing: "
          f"{max(passing) if passing else 'none'}.\n")
    print(table(days, args))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:       # every process was stopped on the way out (Rig.close)
        print("FAIL: interrupted", flush=True)
        sys.exit(130)
