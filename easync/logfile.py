"""The server's log file: twistd's line format, at a fraction of twistd's cost.

twistd's own file observer (``textFileLogObserver``) formats each event's time stamp
with its time zone (a ``DateTime`` and ``strftime`` per line) and writes and flushes
each line on its own (the ``LogFile`` is unbuffered: a ``write`` system call per line).
In a fan-out of 10,000 Ping answers that was a quarter of an answer's CPU (issue #12
point 1).  ``TurnLogObserver`` writes the same lines, but

- the time stamp is formatted once per second of ``log_time`` (by Twisted's own
  ``formatTime``, so the text, time zone included, is what twistd writes), and a
  format without fields (the request line) is not run through ``string.Formatter``;
- with ``per_turn`` (not what ``twistd easync`` uses: see ``twistd_observer``) the
  lines of one reactor turn are kept in memory and written as one block, with one
  flush, when the turn is over (``callLater(0)``), or at once when they pass
  ``max_bytes``;
- a line emitted while the reactor is not running (start-up, shut-down) or from another
  thread is written at once (after what is buffered, in order), and the buffer is
  written at reactor shut-down, at rotation (SIGUSR1) and at interpreter exit: a
  process killed outright loses at most one turn's lines.

``twistd easync`` uses it unless ``--logger`` or ``--syslog`` is given
(``install_default``, called from ``easync.tap.Options``): ``--logfile FILE`` (rotated
by size as twistd's, at ``--log-rotate-size`` unless ``off``; SIGUSR1: see below),
``--logfile -`` or ``-n`` without ``--logfile`` (standard output).  Lines of every
emitter (Twisted's own included) go through it.

SIGUSR1 (``ServiceLogFile.rotate_or_reopen``): when the file at the ``--logfile`` path is
no longer the one being written (logrotate renamed it, and may have created a new one),
the file is closed and reopened by its path: the next line goes to the new file.
twistd's own handler calls ``LogFile.rotate``, which returns without doing anything when
the path has gone, so that the server wrote on into the renamed file until restarted.
When nothing moved the file, SIGUSR1 rotates it as twistd does (``FILE`` to ``FILE.1``).
Lines are written under the observer's lock, so none is split or lost across the swap.
The first process of ``--workers`` passes the signal on to its workers (``on_rotate``),
each of which does the same with its own file.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, MutableMapping
from typing import IO, Any

from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python import threadable
from twisted.python.logfile import LogFile
from zope.interface import implementer

__all__ = ["ServiceLogFile", "TurnLogObserver", "install_default", "on_rotate",
           "twistd_observer"]

log = Logger()

# what the twistd options (``ServerOptions``) said, for ``twistd_observer``: twistd calls a
# ``--logger`` factory with no arguments
_TWISTD_OPTIONS: dict[str, Any] = {}

# called (in the reactor thread) after this process's SIGUSR1 was handled: the first
# process of --workers passes the signal on to its workers
_ON_ROTATE: list[Callable[[], None]] = []


def on_rotate(callback: Callable[[], None]) -> None:
    """Call ``callback`` (in the reactor thread) whenever SIGUSR1 has rotated or
    reopened this process's log file."""
    _ON_ROTATE.append(callback)


class ServiceLogFile(LogFile):
    """twistd's ``LogFile`` (rotated by size, ``FILE.1``, ``FILE.2``…) that can also
    follow an outside rotation tool: ``rotate_or_reopen``."""

    def moved(self) -> bool:
        """The path no longer names the file being written (renamed or deleted by
        another program, maybe replaced by a new file)."""
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False           # cannot tell (a directory made unreadable): keep it
        held = os.fstat(self._file.fileno())
        return (at_path.st_dev, at_path.st_ino) != (held.st_dev, held.st_ino)

    def reopen(self) -> None:
        """Open the file at the path (appending to it if it exists), then close the old
        one; if the new one cannot be opened, writing goes on to the old one and the
        ``OSError`` is raised."""
        old = self._file
        try:
            self._openFile()
        except OSError:
            self._file, self.closed = old, False
            raise
        old.close()

    def rotate_or_reopen(self) -> str:
        """What SIGUSR1 does: ``"reopened"`` the file at the path if it was moved,
        else ``"rotated"`` it as twistd does (``"kept"``: twistd's rotation found the
        directory or file not writable and did nothing)."""
        if self.moved():
            self.reopen()
            return "reopened"
        before = os.fstat(self._file.fileno()).st_ino
        self.rotate()
        return "rotated" if os.fstat(self._file.fileno()).st_ino != before else "kept"


@implementer(ILogObserver)
class TurnLogObserver:
    """An ``ILogObserver`` writing twistd's classic text lines to ``out`` (a text file,
    or a ``twisted.python.logfile.LogFile``), one block per reactor turn."""

    def __init__(self, out: IO[Any] | Any, reactor: Any = None,
                 max_bytes: int = 65536, per_turn: bool = True) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.out = out
        self.per_turn = per_turn
        self._reactor = reactor
        self._max = max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._pending: Any = None          # the DelayedCall of the next write
        # re-entrant: a line emitted while writing (a warning from the file) must not
        # deadlock; it goes to the next block
        self._lock = threading.RLock()
        self._second = -1
        self._stamp = ""
        self._shutdown_hooked = False
        atexit.register(self.flush)

    # -- the time stamp ---------------------------------------------------------------

    def stamp(self, when: float | None) -> str:
        """``when`` as twistd's ``formatTime`` writes it (RFC 3339 to the second, with the
        local time zone's offset), formatted once per second."""
        if when is None:
            return "-"
        second = int(when)
        # datetime rounds to the microsecond: x.9999995 and above is the next second
        if when - second >= 0.9999995:
            second += 1
        if second != self._second:
            self._stamp = formatTime(second)
            self._second = second
        return self._stamp

    def format(self, event: LogEvent) -> str | None:
        """``event`` as the line twistd's file observer writes (None: nothing)."""
        fmt = event.get("log_format")
        if (type(fmt) is str and "log_failure" not in event and "log_flattened" not in event
                and "{" not in fmt and "}" not in fmt):
            # a format with no fields (easync's request line, most of Twisted's):
            # the same text as formatEventAsClassicLogText, without string.Formatter
            if not fmt:
                return None
            system = event.get("log_system")
            if system is None:
                level = event.get("log_level")
                system = f"{event.get('log_namespace', '-')}#{level.name if level else '-'}"
            line = f"{self.stamp(event.get('log_time'))} [{system}] {fmt}"
            if "\n" in line:
                line = line.replace("\n", "\n\t")
            return line + "\n"
        return formatEventAsClassicLogText(event, formatTime=self.stamp)

    # -- writing ------------------------------------------------------------------------

    def __call__(self, event: LogEvent) -> None:
        text = self.format(event)
        if not text:
            return
        reactor = self._reactor
        if not (self.per_turn and reactor.running and threadable.isInIOThread()):
            with self._lock:
                self._lines.append(text)
                self._write_locked()
            return
        with self._lock:
            self._lines.append(text)
            self._size += len(text)
            if self._size < self._max:
                if self._pending is None:
                    self._hook_shutdown()
                    self._pending = reactor.callLater(0, self.flush)
                return
            self._write_locked()

    def flush(self) -> None:
        """Write what is buffered, and flush the file."""
        with self._lock:
            self._write_locked()

    def _write_locked(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending.active() and threadable.isInIOThread():
            pending.cancel()            # (from another thread it runs, and finds nothing)
        if not self._lines:
            return
        block = "".join(self._lines)
        self._lines = []
        self._size = 0
        try:
            self.out.write(block)
            self.out.flush()
        except (OSError, ValueError):
            # a closed or full file: the lines are lost as twistd's would be; a log
            # observer must not raise into the emitter
            pass

    def _hook_shutdown(self) -> None:
        if not self._shutdown_hooked:
            self._shutdown_hooked = True
            self._reactor.addSystemEventTrigger("after", "shutdown", self.flush)

    def rotate(self) -> str:
        """SIGUSR1: write what is buffered to the current file, then reopen it by its
        path if it was moved (logrotate), else rotate it (``ServiceLogFile``; a plain
        ``LogFile`` is rotated).  No line is written meanwhile (the lock).  Returns what
        was done ("" for an output that is not a log file)."""
        out = self.out
        with self._lock:
            self._write_locked()
            if isinstance(out, ServiceLogFile):
                return out.rotate_or_reopen()
            rotate = getattr(out, "rotate", None)
            if rotate is None:
                return ""
            rotate()
            return "rotated"


def twistd_observer() -> TurnLogObserver | Callable[[LogEvent], None]:
    """The observer twistd would make from ``--logfile``/``--syslog``/``--nodaemon``
    (``twisted.scripts._twistd_unix.UnixAppLogger._getLogObserver``), as a
    ``TurnLogObserver``; named by ``--logger`` (set by ``install_default``)."""
    options = _TWISTD_OPTIONS
    if options.get("syslog"):
        from twisted.python import syslog

        return syslog.SyslogObserver(options.get("prefix") or "twisted").emit  # type: ignore[no-any-return]
    logfile = options.get("logfile") or ""
    nodaemon = bool(options.get("nodaemon"))
    # Each line is written at once (per_turn=False): written a turn later, a line could
    # reach the file after the client has seen the answer or the close it tells of
    # (the reactor polls before the next turn), and the block write saved nothing
    # measurable (bench/bench_logline.py: the cost was the time stamp and formatting).
    if logfile == "-":
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        return TurnLogObserver(sys.stdout, per_turn=False)
    if nodaemon and not logfile:
        return TurnLogObserver(sys.stdout, per_turn=False)
    size = options.get("rotate_size", 1_000_000)
    observer = TurnLogObserver(ServiceLogFile.fromFullPath(logfile or "twistd.log",
                                                           rotateLength=size or None),
                               per_turn=False)
    _rotate_on_sigusr1(observer)
    return observer


def _rotate_on_sigusr1(observer: TurnLogObserver) -> None:
    """SIGUSR1 reopens or rotates the log file (``TurnLogObserver.rotate``), unless
    another handler has taken the signal (twistd's rule; an ignored signal is taken
    over: a ``--workers`` worker ignores it until now, ``easync.workers.WORKER_MAIN``)."""
    import signal

    if signal.getsignal(signal.SIGUSR1) not in (None, signal.SIG_DFL, signal.SIG_IGN):
        return

    def handle(signum: int, frame: Any) -> None:
        observer._reactor.callFromThread(_rotate_now, observer)

    signal.signal(signal.SIGUSR1, handle)


def _rotate_now(observer: TurnLogObserver) -> None:
    """In the reactor thread, after a SIGUSR1: one line in the new file (or in the old
    one, with the reason, when the new one cannot be opened), then the workers."""
    path = getattr(observer.out, "path", "")
    try:
        done = observer.rotate()
    except OSError as e:
        log.error("SIGUSR1: cannot reopen the log file {path}: {error}; writing on to "
                  "the old one", path=path, error=e.strerror or e)
    else:
        if done:
            log.info("SIGUSR1: log file {path} {done}", path=path, done=done)
    for callback in _ON_ROTATE:
        try:
            callback()
        except Exception:  # noqa: BLE001 - a worker gone meanwhile must not stop the rest
            log.failure("SIGUSR1: passing the signal on failed")


def install_default(twistd_options: MutableMapping[str, Any] | None,
                    rotate_size: int = 1_000_000) -> bool:
    """Make twistd log through ``twistd_observer`` when its command line chose neither
    ``--logger`` nor ``--syslog``.  Called while twistd parses its options (the
    ``easync`` sub-command's ``postOptions`` runs before twistd's, which resolves the
    ``--logger`` name).  ``rotate_size``: ``--log-rotate-size`` (0: no rotation by
    size).  True when installed."""
    if twistd_options is None or not hasattr(twistd_options, "get"):
        return False
    if twistd_options.get("logger") is not None or twistd_options.get("syslog"):
        return False
    _TWISTD_OPTIONS.clear()
    for key in ("logfile", "nodaemon", "syslog", "prefix"):
        _TWISTD_OPTIONS[key] = twistd_options.get(key)
    _TWISTD_OPTIONS["rotate_size"] = rotate_size
    twistd_options["logger"] = f"{__name__}.twistd_observer"
    return True
