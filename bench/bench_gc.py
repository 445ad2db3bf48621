"""Garbage-collector pauses and memory with many held Pings (issue #12 point 2).

    python bench/bench_gc.py [--held 5000,20000] [--db postgresql://…] [--repo DIR]
                             [--steady 60] [--heartbeat 3000] [--disconnect]
                             [--ramp-only] [--py-spy FILE.svg]
                             [-- EXTRA SERVER OPTIONS]

For each number N of ``--held``: one ``twistd -n easync`` process (the code of
``--repo``, default this checkout: run it once on the base commit's tree for the
"before" figures) with a probe inside it (below); load generators
(``bench/pingload.py`` via ``bench_pings.Loader``: separate processes of at most 5,000
connections each, every device from its own loopback address) open N connections and
hold a Ping on each.  Phases:

1. warm-up: 200 Pings answered after 2 s (imports, pools), then the probe's maxima
   are reset and RSS is read;
2. ramp: the N Pings are opened (the logins come in bursts of the loaders'
   ``--concurrency``);
3. steady: N held for ``--steady`` seconds (with a short ``--heartbeat`` the devices
   Ping again as phones do);
4. mass end: the load generators are stopped, so every connection closes and the
   server drops every held Ping at once; then ``--after`` seconds of nothing.
   With ``--disconnect`` the load generators are killed (SIGKILL) all at once instead:
   the kernel closes every client socket in the same instant, as when a NAT gateway or
   load balancer drops its connections or the network blips (issue #12).  Reported:
   the reactor's longest stall and longest turn (the probe), the server's CPU for the
   burst (``/proc``, until it is idle again) and per closed hold, the time until the
   held count is 0, and RSS before and after.

``--ramp-only`` stops after phase 2 and reports the ramp (a burst of logins): devices
set up per second, the CPU seconds of the server, its PostgreSQL backends and the load
generators (which one limits the rate), and per reactor turn the longest poll phase
(I/O events: accepts, TLS, request heads) and the longest ``runUntilCurrent`` (finished
thread-pool calls and timed calls).  ``--py-spy FILE`` records the server with py-spy
during the ramp (it pauses the process to sample: the rate drops).

Per phase the probe reports the longest pause of Python's garbage collector per
generation (``gc.callbacks``), the number of collections, and the reactor's longest
stall (a 10 ms timer: how late it ran).  RSS (``VmRSS``) is read after the warm-up, at
the high-water mark (N held) and after the mass end.

The probe is started inside the server process: ``python -c`` imports this module and
runs twistd with ``probe_main``; it answers on a TCP port of its own (one line per
command: ``stats``, ``reset``, ``census`` (tracked objects by type and generation),
``saveall`` then ``garbage`` (what collections found, by type), ``collect``, ``trim``,
``meminfo`` (glibc's mallinfo2, pymalloc's arenas), ``frozen``, ``leak`` (unfreeze and
count the garbage the permanent generation held)), served by the reactor, so an answer
also waits for the reactor.  ``BENCH_GC_GEN2_LOG=1`` in the environment logs every
collection over 20 ms of CPU and every full one with the number of objects it walked.

At the end of a run the probe's ``leak`` unfreezes the server's permanent generation:
run nothing after it.

Users ``b000000``… come from ``bench_pings.populate`` (created once per database).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


# -- the probe, inside the server ---------------------------------------------------------

class _TurnStats:
    """What a reactor turn did (the ramp's question: which part of a turn is long):
    the longest poll phase (I/O events handled, in CPU ms, and how many events), the
    longest run of thread-call results (``callFromThread``: completed database and
    bcrypt calls) and of timed calls."""

    def __init__(self) -> None:
        self.poll_cpu_max = 0.0
        self.poll_events_at_max = 0
        self.poll_events_max = 0
        self.calls_cpu_max = 0.0
        self.thread_calls_at_max = 0
        self.thread_calls_max = 0
        self.turns = 0
        self.turns_over_50ms = 0

    def stats(self) -> dict[str, Any]:
        return dict(vars(self))


def _install_turn_probe(reactor: Any, probe: _Probe) -> None:
    """Time the reactor's two phases per turn (``doIteration``: the poll and its I/O
    callbacks; ``runUntilCurrent``: thread-call results and timed calls)."""
    poll = reactor.doIteration
    run = reactor.runUntilCurrent
    events = [0]
    rw = reactor._doReadOrWrite

    def counted_rw(*a: Any) -> Any:
        events[0] += 1
        return rw(*a)

    reactor._doReadOrWrite = counted_rw

    def timed_poll(timeout: Any) -> None:
        events[0] = 0
        t = probe.turns
        c0 = time.thread_time()
        poll(timeout)
        cpu = time.thread_time() - c0
        t.turns += 1
        t.turns_over_50ms += cpu > 0.05
        t.poll_events_max = max(t.poll_events_max, events[0])
        if cpu > t.poll_cpu_max:
            t.poll_cpu_max = cpu
            t.poll_events_at_max = events[0]

    def timed_run() -> None:
        t = probe.turns
        queued = len(reactor.threadCallQueue)
        c0 = time.thread_time()
        run()
        cpu = time.thread_time() - c0
        t.thread_calls_max = max(t.thread_calls_max, queued)
        if cpu > t.calls_cpu_max:
            t.calls_cpu_max = cpu
            t.thread_calls_at_max = queued

    reactor.doIteration = timed_poll
    reactor.runUntilCurrent = timed_run


class _Probe:
    """GC pauses per generation and the reactor's lateness, since the last reset."""

    def __init__(self) -> None:
        self.reset()
        self._t0 = 0.0
        self._walk = 0
        self.tick = 0.01
        self.census_gen2 = bool(os.environ.get("BENCH_GC_GEN2_LOG"))

    def reset(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.max = [0.0, 0.0, 0.0]
        self.cpu_max = [0.0, 0.0, 0.0]
        self.cpu_total = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]
        self.over_50ms = [0, 0, 0]
        self.gen2_log: list[tuple[float, float, int, int]] = []
        self.stall_max = 0.0
        self.stalls_over_50ms = 0
        self.turn_cpu_max = 0.0
        self.turns = _TurnStats()
        self._last = time.monotonic()
        self._last_cpu = time.thread_time()

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            if self.census_gen2:
                import gc

                g = int(info.get("generation", 0))
                self._walk = sum(len(gc.get_objects(i)) for i in range(g + 1))
            self._t0 = time.perf_counter()
            self._c0 = time.thread_time()
            return
        took = time.perf_counter() - self._t0
        cpu = time.thread_time() - self._c0
        g = int(info.get("generation", 0))
        self.count[g] += 1
        self.total[g] += took
        self.max[g] = max(self.max[g], took)
        self.cpu_max[g] = max(self.cpu_max[g], cpu)
        self.cpu_total[g] += cpu
        if self.census_gen2 and (g == 2 or cpu > 0.02):
            self.gen2_log.append((g, round(took * 1000, 1), round(cpu * 1000, 1), self._walk,
                                  int(info.get("collected", 0))))
        self.collected[g] += int(info.get("collected", 0))
        self.over_50ms[g] += took > 0.05

    def on_tick(self) -> None:
        now = time.monotonic()
        cpu = time.thread_time()
        late = now - self._last - self.tick
        self.turn_cpu_max = max(self.turn_cpu_max, cpu - self._last_cpu)
        self._last = now
        self._last_cpu = cpu
        self.stall_max = max(self.stall_max, late)
        if late > 0.05:
            self.stalls_over_50ms += 1

    def stats(self) -> dict[str, Any]:
        import gc

        return {"gc_count": self.count, "gc_total": self.total, "gc_max": self.max,
                "gc_cpu_max": self.cpu_max, "gc_cpu_total": self.cpu_total, "gen2_log": self.gen2_log, "turn_cpu_max": self.turn_cpu_max,
                "gc_collected": self.collected, "gc_over_50ms": self.over_50ms,
                "turns": self.turns.stats(),
                "stall_max": self.stall_max, "stalls_over_50ms": self.stalls_over_50ms,
                "gc_counts_now": list(gc.get_count()), "threshold": list(gc.get_threshold()),
                "rss_kb": _rss_kb(os.getpid())}


def _census(objects: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in objects:
        t = type(o)
        name = f"{t.__module__}.{t.__qualname__}"
        out[name] = out.get(name, 0) + 1
    return out


def _command(probe: _Probe, line: str) -> dict[str, Any]:
    import gc

    cmd, _, arg = line.strip().partition(" ")
    if cmd == "stats":
        return probe.stats()
    if cmd == "reset":
        probe.reset()
        return {"ok": True}
    if cmd == "census":          # tracked objects by type, per generation
        return {f"gen{g}": _census(gc.get_objects(g)) for g in range(3)} | {
            "frozen": gc.get_freeze_count()}
    if cmd == "saveall":         # from now on keep what collections find, for "garbage"
        gc.collect()
        gc.garbage.clear()
        gc.set_debug(gc.DEBUG_SAVEALL)
        return {"ok": True}
    if cmd == "garbage":         # what collections found unreachable (since "saveall")
        gc.set_debug(gc.DEBUG_SAVEALL)
        t0 = time.perf_counter()
        n = gc.collect()
        took = time.perf_counter() - t0
        found = _census(gc.garbage)
        named: dict[str, int] = {}
        for o in gc.garbage:
            if isinstance(o, type) or type(o).__name__ in ("function", "frame", "code"):
                what = getattr(o, "f_code", o)
                key = f"{type(o).__name__} {getattr(what, '__module__', '')}." \
                      f"{getattr(what, '__qualname__', getattr(what, 'co_qualname', '?'))}"
                named[key] = named.get(key, 0) + 1
        found.update({f"= {k}": v for k, v in named.items()})
        gc.garbage.clear()
        gc.set_debug(0)
        return {"collected": n, "seconds": took, "types": found}
    if cmd == "collect":
        t0 = time.perf_counter()
        n = gc.collect(int(arg) if arg else 2)
        return {"collected": n, "seconds": time.perf_counter() - t0}
    if cmd == "trim":
        import ctypes

        before = _rss_kb(os.getpid())
        t0 = time.perf_counter()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return {"seconds": time.perf_counter() - t0, "rss_before_kb": before,
                "rss_after_kb": _rss_kb(os.getpid())}
    if cmd == "leak":            # frozen garbage: what unfreezing lets a collection find
        gc.collect()
        frozen = gc.get_freeze_count()
        gc.unfreeze()
        gc.set_debug(gc.DEBUG_SAVEALL)
        n = gc.collect()
        found = _census(gc.garbage)
        gc.garbage.clear()
        gc.set_debug(0)
        gc.collect()
        top = dict(sorted(found.items(), key=lambda kv: -kv[1])[:15])
        return {"frozen": frozen, "garbage": n, "types": top}
    if cmd == "meminfo":
        return _meminfo()
    if cmd == "frozen":
        t0 = time.perf_counter()
        n = gc.get_freeze_count()
        return {"frozen": n, "seconds": time.perf_counter() - t0}
    return {"error": f"unknown command {cmd!r}"}


def _meminfo() -> dict[str, Any]:
    """glibc's mallinfo2 and pymalloc's summary (sys._debugmallocstats)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    mi = libc.mallinfo2()
    out: dict[str, Any] = {f"glibc_{n}": getattr(mi, n) for n, _t in MallInfo2._fields_}
    with tempfile.TemporaryFile("w+") as f:
        saved = os.dup(2)
        try:
            sys.stderr.flush()
            os.dup2(f.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        for line in f:
            if line.startswith("#") and "=" in line:
                key, _, value = line[1:].partition("=")
                out["pymalloc " + " ".join(key.split())] = int(value.strip().replace(",", ""))
            elif "bytes in allocated blocks" in line or "bytes in available blocks" in line \
                    or "arenas" in line:
                key, _, value = line.rpartition("=") if "=" in line else (line, "", "")
                if value:
                    out["pymalloc " + " ".join(key.split())] = int(value.strip().replace(",", ""))
    out["rss_kb"] = _rss_kb(os.getpid())
    return out


def probe_main(port: int, argv: list[str]) -> None:
    """Install the probe, then run ``twistd ARGV`` in this process."""
    import gc

    from twisted.internet import protocol, reactor
    from twisted.internet.task import LoopingCall
    from twisted.protocols.basic import LineReceiver
    from twisted.scripts.twistd import run

    probe = _Probe()
    gc.callbacks.append(probe.on_gc)

    class Control(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            try:
                answer = _command(probe, line.decode())
            except Exception as e:  # noqa: BLE001 - a benchmark's probe reports it
                answer = {"error": repr(e)}
            self.sendLine(json.dumps(answer).encode())

    def start() -> None:
        _install_turn_probe(reactor, probe)
        LoopingCall(probe.on_tick).start(probe.tick, now=False)
        reactor.listenTCP(port, protocol.Factory.forProtocol(Control),  # type: ignore[attr-defined]
                          interface="127.0.0.1")
        probe.reset()

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    sys.argv = ["twistd", *argv]
    run()


def ask(port: int, command: str, timeout: float = 120) -> dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


# -- the benchmark ------------------------------------------------------------------------

def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class ProbedServer:
    """``twistd -n easync`` of ``repo``'s code with the probe inside."""

    def __init__(self, workdir: Path, repo: Path, db: str, extra: list[str]) -> None:
        from easync_server import free_port, read_metrics

        self._read_metrics = read_metrics
        self.port = free_port()
        self.probe_port = free_port()
        self.metrics_port = free_port()
        self.log = workdir / "server.log"
        argv = ["-n", "--logfile", str(self.log), "--pidfile", "", "easync",
                "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=4096",
                "--db", db, "--provisioning", "off", "--heartbeat-min", "1",
                "--max-connections-per-address", "0",
                "--metrics-listen", f"tcp:{self.metrics_port}:interface=127.0.0.1", *extra]
        code = (f"import sys; sys.path.insert(0, {str(BENCH)!r}); import bench_gc; "
                f"bench_gc.probe_main({self.probe_port}, {argv!r})")
        env = dict(os.environ, PYTHONPATH=str(repo))
        self.proc = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                self.metrics()
                self.ask("stats")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def ask(self, command: str) -> dict[str, Any]:
        return ask(self.probe_port, command)

    def metrics(self) -> dict[str, float]:
        return self._read_metrics(f"http://127.0.0.1:{self.metrics_port}/metrics", 60)

    def held(self) -> int:
        return int(sum(v for k, v in self.metrics().items()
                       if k.startswith("easync_held_requests")))

    def rss_mib(self) -> float:
        return _rss_kb(self.proc.pid) / 1024

    def stop(self) -> None:
        from bench_pings import stop_process

        stop_process(self.proc, 120)


def _phase_line(name: str, s: dict[str, Any]) -> str:
    pauses = " / ".join(f"{m * 1000:.0f}" for m in s["gc_max"])
    cpu = " / ".join(f"{m * 1000:.0f}" for m in s["gc_cpu_max"])
    counts = "/".join(str(c) for c in s["gc_count"])
    return (f"  {name:<6} longest GC pause gen0/1/2 {pauses} ms (CPU {cpu} ms; {counts} "
            f"collections, {sum(s['gc_over_50ms'])} over 50 ms; CPU in all collections "
            f"{sum(s.get('gc_cpu_total', [0])):.2f} s); reactor's longest stall "
            f"{s['stall_max'] * 1000:.0f} ms ({s['stalls_over_50ms']} over 50 ms; "
            f"longest turn CPU {s['turn_cpu_max'] * 1000:.0f} ms)"
            + (f"\n         turn parts: poll+I/O {t['poll_cpu_max'] * 1000:.0f} ms CPU "
               f"({t['poll_events_at_max']} events; most events in one poll "
               f"{t['poll_events_max']}), thread results+timers "
               f"{t['calls_cpu_max'] * 1000:.0f} ms CPU ({t['thread_calls_at_max']} "
               f"results; most queued {t['thread_calls_max']})"
               if (t := s.get("turns")) else ""))


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"timed out waiting for {what}")


def run_one(args: argparse.Namespace, held: int, users: Path, extra: list[str]
            ) -> dict[str, Any]:
    import bench_pings

    work = Path(tempfile.mkdtemp(prefix="bench-gc-"))
    server = ProbedServer(work, Path(args.repo).resolve(), args.db, extra)
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    loaders: list[Any] = []
    out: dict[str, Any] = {"held": held, "disconnect": args.disconnect}
    try:
        warm = bench_pings.Loader(server.port, users, held, 200, 2, lines, 249, once=True)
        answered = 0
        deadline = time.monotonic() + 120
        while answered < 200 and time.monotonic() < deadline:
            try:
                _tag, line = lines.get(timeout=5)
            except queue.Empty:
                continue
            answered += line.startswith("R ")
        warm.stop()
        _wait(lambda: server.held() == 0, 60, "the warm-up to end")
        bench_pings.settle([server.proc.pid])
        out["rss_start"] = server.rss_mib()
        out["frozen_start"] = server.ask("frozen")["frozen"]
        server.ask("reset")
        t0 = time.monotonic()
        cpu0 = bench_pings.cpu_ticks(server.proc.pid)
        pg0 = _pg_ticks(args.db)
        spy = _py_spy(args.py_spy, server.proc.pid)
        for start in range(0, held, bench_pings.PER_LOADER):
            n = min(bench_pings.PER_LOADER, held - start)
            loaders.append(bench_pings.Loader(server.port, users, start, n, args.heartbeat,
                                              lines, start))
        bench_pings.wait_held([server], held, loaders, timeout=900)  # type: ignore[list-item]
        out["ramp_seconds"] = time.monotonic() - t0
        out.update(_ramp_cpu(server.proc.pid, cpu0, loaders))
        pg1 = _pg_ticks(args.db)
        out["ramp_pg_cpu"] = sum(t - pg0.get(pid, 0) for pid, t in pg1.items()
                                 ) / os.sysconf("SC_CLK_TCK")
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        out["ramp"] = server.ask("stats")
        if args.ramp_only:
            out["load"] = os.getloadavg()[0]
            return out
        server.ask("reset")
        time.sleep(args.steady)
        out["steady"] = server.ask("stats")
        bench_pings.settle([server.proc.pid])
        out["rss_high"] = server.rss_mib()
        out["frozen_high"] = server.ask("frozen")["frozen"]
        out["held_high"] = server.held()
        server.ask("reset")
        cpu0 = bench_pings.cpu_ticks(server.proc.pid)
        t0 = time.monotonic()
        if args.disconnect:
            for ld in loaders:          # every client socket closed by the kernel at once
                ld.proc.kill()
            for ld in loaders:
                ld.proc.wait()
        for ld in loaders:
            ld.stop()
        loaders = []
        _wait(lambda: server.held() == 0, 300, "every hold to end")
        out["end_seconds"] = time.monotonic() - t0
        bench_pings.settle([server.proc.pid], 1.0)
        tick = os.sysconf("SC_CLK_TCK")
        # (includes the settle's idle second and the /metrics reads: a few ms)
        out["end_cpu"] = (bench_pings.cpu_ticks(server.proc.pid) - cpu0) / tick
        time.sleep(args.after)
        bench_pings.settle([server.proc.pid])
        out["end"] = server.ask("stats")
        out["rss_after"] = server.rss_mib()
        out["meminfo_after"] = server.ask("meminfo")
        if args.trim:
            out["trim"] = server.ask("trim")
        out["frozen_after"] = server.ask("frozen")["frozen"]
        out["leak"] = server.ask("leak")
        out["load"] = os.getloadavg()[0]
        answered_ramp = sum(1 for _t, ln in list(lines.queue) if ln.startswith("R "))
        out["answered"] = answered_ramp
    finally:
        for ld in loaders:
            ld.stop()
        server.stop()
        errs = bench_pings.log_errors(server.log)
        if errs:
            print(f"server log has {len(errs)} error lines, e.g. {errs[:3]}")
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return out


def _py_spy(path: str | None, pid: int) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` of the server during the ramp (``--py-spy FILE``)."""
    if not path:
        return None
    exe = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(exe if exe.exists() else "py-spy"), "record", "--pid",
                             str(pid), "-o", path, "--rate", "200"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _pg_ticks(db: str) -> dict[int, int]:
    """CPU ticks of the PostgreSQL backends serving ``db`` (the server's pool) now."""
    if not db.startswith("postgresql"):
        return {}
    import psycopg

    with psycopg.connect(db) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")]
    out = {}
    for pid in pids:
        try:
            out[pid] = _ticks(pid)
        except OSError:
            pass
    return out


def _ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _ramp_cpu(server_pid: int, server_ticks0: int, loaders: list[Any]) -> dict[str, Any]:
    """CPU seconds of the server and of the load generators during the ramp (which one
    limits the ramp rate: the loaders start with the ramp, so their whole CPU counts)."""
    import bench_pings

    hz = os.sysconf("SC_CLK_TCK")
    return {"ramp_server_cpu": (bench_pings.cpu_ticks(server_pid) - server_ticks0) / hz,
            "ramp_loader_cpu": sum(bench_pings.cpu_ticks(ld.proc.pid) for ld in loaders
                                   if ld.proc.poll() is None) / hz}


def report_ramp(r: dict[str, Any]) -> None:
    """The ramp's line: devices set up per second, and the CPU that took."""
    secs = r["ramp_seconds"]
    print(f"{r['held']} held: ramp {secs:.1f} s = {r['held'] / secs:.0f} devices/s "
          f"(load {r['load']:.1f}); server CPU {r['ramp_server_cpu']:.1f} s "
          f"({r['ramp_server_cpu'] * 1e3 / r['held']:.2f} ms per device, "
          f"{r['ramp_server_cpu'] / secs * 100:.0f} % of one CPU), PostgreSQL backends "
          f"{r.get('ramp_pg_cpu', 0):.1f} s, load generators "
          f"{r['ramp_loader_cpu']:.1f} s", flush=True)
    print(_phase_line("ramp", r["ramp"]), flush=True)


def report(r: dict[str, Any]) -> None:
    report_ramp(r)
    print(f"{r['held']} held (ramp {r['ramp_seconds']:.0f} s, mass end {r['end_seconds']:.1f} s"
          f", load {r['load']:.1f}):")
    for phase in ("steady", "end"):
        print(_phase_line(phase, r[phase]))
    print(f"  RSS: {r['rss_start']:.0f} MiB after warm-up, {r['rss_high']:.0f} MiB with "
          f"{r['held_high']} held, {r['rss_after']:.0f} MiB after the mass end"
          + (f" ({r['trim']['rss_after_kb'] / 1024:.0f} MiB after a malloc_trim taking "
             f"{r['trim']['seconds'] * 1000:.0f} ms)" if "trim" in r else ""), flush=True)
    cpu = r["end_cpu"]
    print(f"  mass {'disconnect' if r.get('disconnect') else 'end'}: held count 0 after "
          f"{r['end_seconds']:.1f} s; server CPU {cpu:.2f} s for the burst, "
          f"{cpu / max(1, r['held_high']) * 1e6:.0f} us per closed hold; reactor's longest "
          f"stall {r['end']['stall_max'] * 1000:.0f} ms, longest turn CPU "
          f"{r['end']['turn_cpu_max'] * 1000:.0f} ms", flush=True)
    leak = r["leak"]
    print(f"  frozen objects: {r['frozen_start']} after warm-up, {r['frozen_high']} held, "
          f"{r['frozen_after']} after the mass end, of which garbage (found once "
          f"unfrozen): {leak['garbage']} {leak['types'] if leak['garbage'] else ''}")
    mi = r["meminfo_after"]
    print(f"  after the mass end: glibc heap {mi['glibc_arena'] / 2**20:.0f} MiB "
          f"({mi['glibc_fordblks'] / 2**20:.0f} free), mmap {mi['glibc_hblkhd'] / 2**20:.0f}"
          f" MiB; pymalloc {mi.get('pymalloc arenas allocated current', 0)} arenas, "
          f"{mi.get('pymalloc bytes in allocated blocks', 0) / 2**20:.0f} MiB in use, "
          f"{mi.get('pymalloc bytes in available blocks', 0) / 2**20:.0f} MiB free blocks",
          flush=True)


def main() -> None:
    sys.path.insert(0, str(BENCH))
    sys.path.insert(0, str(REPO / "tests"))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--held", default="5000,19900", help="numbers of Pings held, one run each")
    p.add_argument("--db", default="postgresql://postgres@127.0.0.1/bench_gc",
                   help="database URL (users are created once and kept)")
    p.add_argument("--repo", default=str(REPO), help="the easync tree the server runs")
    p.add_argument("--steady", type=float, default=60, help="seconds held after the ramp")
    p.add_argument("--after", type=float, default=5, help="seconds after the mass end")
    p.add_argument("--heartbeat", type=int, default=3000, help="the devices' heartbeat")
    p.add_argument("--ramp-only", action="store_true",
                   help="stop after the ramp (its rate, collections and turns)")
    p.add_argument("--py-spy", metavar="FILE",
                   help="py-spy record the server during the ramp into FILE (.svg)")
    p.add_argument("--trim", action="store_true", help="ask for a malloc_trim at the end")
    p.add_argument("--disconnect", action="store_true",
                   help="mass end by killing the load generators: all sockets close at once")
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("extra", nargs="*", help="more server options (after --)")
    args = p.parse_args()
    import bench_pings

    marks = [int(m) for m in args.held.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-gc-users-"))
    try:
        users = work / "users.json"
        bench_pings.populate(args.db, max(marks) + 400, users)
        results = []
        for held in marks:
            r = run_one(args, held, users, args.extra)
            (report_ramp if args.ramp_only else report)(r)
            results.append(r)
        print(f"machine: {bench_pings.machine_info()}; server code {args.repo}; "
              f"options {' '.join(args.extra) or '(defaults)'}")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
