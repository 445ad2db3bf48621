"""``--workers N``: N easync processes serving the same ports (Linux ``SO_REUSEPORT``).

The process twistd starts (the first worker) binds every ``--listen`` port with
``SO_REUSEPORT`` and runs ``N - 1`` more ``twistd -n easync`` processes with the same
options, which bind the same ports the same way; the kernel spreads new connections
evenly over the processes.  Each process is a whole easync node: its own change hub
connection, its own held Pings (each process may open at most ``ulimit -n`` files),
one PostgreSQL database for all — a change made through any of them wakes the Pings
held by the others through the database's LISTEN/NOTIFY.

The first process supervises the others: one that exits is started again (after a
delay that grows while they keep failing), and they are stopped with it.  A worker
also stops by itself when the first process dies (its stdin, a pipe from the first
process, closes).  Worker ``i`` (1…N-1) logs to ``LOGFILE.i`` when twistd logs to a
file, else to the same standard output; it serves ``--metrics-listen`` on the port
plus ``i``.  The ports are bound by ``easync.http.listen`` (``ListeningReactor`` with
``reuse_port``).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.internet.main import CONNECTION_DONE
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()

#: set in a worker's environment to its number (1…N-1); absent in the first process
WORKER_ENV = "EASYNC_WORKER"


#: what a worker runs: twistd, with SIGUSR1 ignored until its log observer takes it
#: (``easync.logfile``): the first process passes logrotate's SIGUSR1 on to its workers,
#: and the signal's default action would end one that is still starting
WORKER_MAIN = ("import signal; signal.signal(signal.SIGUSR1, signal.SIG_IGN); "
               "from twisted.scripts.twistd import run; run()")


def worker_number() -> int:
    """0 in the first process, 1…N-1 in the others."""
    try:
        return int(os.environ.get(WORKER_ENV, "0"))
    except ValueError:
        return 0


def check_supported() -> None:
    if not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"):
        raise RuntimeError("--workers needs Linux (SO_REUSEPORT spreading connections)")


def worker_logfile(logfile: str, number: int) -> str:
    """The log file of worker ``number``: ``-wN`` before the suffix (``/var/log/easync.log``
    → ``/var/log/easync-w2.log``).  Not ``LOGFILE.N``: twistd rotates a log at 1 MB by
    renaming ``LOGFILE.N`` to ``LOGFILE.N+1`` for every ``N`` it finds (and counts
    ``LOGFILE.anything.N`` as ``N`` too); the first process renamed the workers' live
    files, then failed on a rename and Twisted dropped its log observer: the process
    logged nothing more."""
    path = Path(logfile)
    return str(path.with_name(f"{path.stem}-w{number}{path.suffix}"))


def nth_endpoint(description: str, n: int) -> str:
    """``description`` with its port number plus ``n`` (``tcp:9108:…`` → ``tcp:9110:…``
    for n = 2); a ``unix:`` path gets ``.n`` appended."""
    if n == 0:
        return description
    parts = description.split(":")
    kind = parts[0].lower()
    if kind == "unix" and len(parts) > 1:
        parts[1] = f"{parts[1]}.{n}"
        return ":".join(parts)
    for i, part in enumerate(parts[1:], 1):
        if i == 1 and part.isdigit():
            parts[i] = str(int(part) + n)
            return ":".join(parts)
        if part.startswith("port=") and part[5:].isdigit():
            parts[i] = f"port={int(part[5:]) + n}"
            return ":".join(parts)
    raise ValueError(f"cannot tell the port of {description!r}")


# -- the first process: starting and supervising the others --------------------------------

class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: WorkerPool, number: int) -> None:
        self.pool = pool
        self.number = number
        self.ended: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        pid = self.transport.pid if self.transport is not None else None
        log.info("worker {n} started (pid {pid})", n=self.number, pid=pid)

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.pool._ended(self, reason)


class WorkerPool(Service):
    """Runs workers 1…count-1 as ``twistd -n easync ARGS`` and keeps them running."""

    def __init__(self, reactor: Any, count: int, easync_args: list[str],
                 twistd_options: Any = None) -> None:
        self.setName("workers")
        self._reactor = reactor
        self.count = count
        self.easync_args = easync_args
        self.twistd_options = twistd_options or {}
        self.workers: dict[int, _Worker] = {}
        self._failures: dict[int, int] = {}
        self._restarts: dict[int, Any] = {}

    def command(self, number: int) -> list[str]:
        """The command line of worker ``number``."""
        opts = self.twistd_options
        args = [sys.executable, "-c", WORKER_MAIN, "--nodaemon", "--pidfile", ""]
        logfile = opts.get("logfile") if hasattr(opts, "get") else None
        if opts.get("syslog") if hasattr(opts, "get") else False:
            args += ["--syslog", "--prefix", f"{opts.get('prefix') or 'twisted'}-w{number}"]
        elif logfile and logfile != "-":
            args += ["--logfile", worker_logfile(logfile, number)]
        else:
            args += ["--logfile", "-"]
        if hasattr(opts, "get") and opts.get("reactor"):
            args += ["--reactor", opts["reactor"]]
        return [*args, "easync", *self.easync_args]

    def _env(self, number: int) -> dict[str, str]:
        env = dict(os.environ)
        env[WORKER_ENV] = str(number)
        # the worker must import this easync, wherever twistd found it
        here = str(Path(__file__).resolve().parent.parent)
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if here not in paths:
            env["PYTHONPATH"] = os.pathsep.join([here, *paths])
        return env

    def _spawn(self, number: int) -> None:
        self._restarts.pop(number, None)
        if not self.running:
            return
        worker = _Worker(self, number)
        self.workers[number] = worker
        cmd = self.command(number)
        self._reactor.spawnProcess(worker, cmd[0], cmd, env=self._env(number),
                                   path=os.getcwd(), childFDs={0: "w", 1: 1, 2: 2})

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.number) is worker:
            del self.workers[worker.number]
        if not self.running:
            return
        n = self._failures.get(worker.number, 0) + 1
        self._failures[worker.number] = n
        delay = min(30.0, 0.5 * 2 ** (n - 1))
        log.warn("worker {n} ended ({why}); starting it again in {delay:.1f} s",  # noqa: G010
                 n=worker.number, why=reason.getErrorMessage(), delay=delay)
        self._restarts[worker.number] = self._reactor.callLater(
            delay, self._spawn, worker.number)
        # a worker that then runs for a minute is healthy again
        self._reactor.callLater(delay + 60, self._failures.pop, worker.number, None)

    def startService(self) -> None:
        super().startService()
        for number in range(1, self.count):
            self._spawn(number)

    def signal_all(self, signum: int) -> None:
        """Send the signal ``signum`` (``signal.SIGUSR1``: reopen the log file) to every
        worker running now."""
        for worker in list(self.workers.values()):
            _signal(worker, signum)

    # IService.stopService may return a Deferred (twistd waits for it); Service types None
    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        waits = []
        for worker in list(self.workers.values()):
            waits.append(worker.ended)
            _signal(worker, "TERM")
            kill = self._reactor.callLater(20, _signal, worker, "KILL")
            worker.ended.addBoth(_cancel_then, kill)
        return DeferredList(waits).addCallback(lambda _: None)


def _cancel_then(result: object, call: IDelayedCall) -> object:
    """Pass ``result`` on, cancelling ``call`` if it is still to come."""
    if call.active():
        call.cancel()
    return result


def _signal(worker: _Worker, name: str | int) -> None:
    # (Twisted's signalProcess takes a few names, "TERM", "KILL"…, or a number)
    if worker.transport is None:
        return
    try:
        worker.transport.signalProcess(name)
    except Exception:  # noqa: BLE001 - ProcessExitedAlready
        log.info("worker {n} already gone", n=worker.number)


# -- a worker: stop when the first process goes -----------------------------------------------

@implementer(IReadDescriptor)
class _StdinWatch:
    """Reads (and drops) stdin, a pipe from the first process; its end means that
    process is gone."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def fileno(self) -> int:
        return 0

    def logPrefix(self) -> str:
        return "parent-watch"

    def doRead(self) -> Any:
        try:
            data = os.read(0, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        return None if data else CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        if self._reactor.running:
            log.info("the first easync process is gone: this worker stops")
            self._reactor.stop()


class ParentWatch(Service):
    """In a worker: stop the reactor when stdin (a pipe from the first process) closes."""

    def __init__(self, reactor: Any) -> None:
        self.setName("parent-watch")
        self._reactor = reactor
        self._watch = _StdinWatch(reactor)

    def startService(self) -> None:
        super().startService()
        self._reactor.addReader(self._watch)

    def stopService(self) -> None:
        super().stopService()
        self._reactor.removeReader(self._watch)
