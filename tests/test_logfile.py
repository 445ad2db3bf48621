"""easync's log observer (easync.logfile): twistd's lines, written a reactor turn at a time.

The line format is twistd's (``formatEventAsClassicLogText``), which tests and users
parse; the observer only changes when the lines are written (issue #12 point 1).
"""

from __future__ import annotations

import base64
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import reactor as real_reactor
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEventAsClassicLogText
from twisted.python.logfile import LogFile

from easync.logfile import TurnLogObserver, install_default
from tests.easync_server import RunningServer, wait_for

EVENT_TIME = 1_700_000_000.0


class TurnClock(Clock):
    """Twisted's test clock with what the observer asks of a reactor: ``running`` and the
    shutdown trigger (run by ``shutdown``)."""

    def __init__(self) -> None:
        super().__init__()
        self.running = True
        self.triggers: list[Any] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        assert (phase, event) == ("after", "shutdown")
        self.triggers.append(f)

    def shutdown(self) -> None:
        self.running = False
        for f in self.triggers:
            f()


class CountingFile(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.flushes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture
def tz() -> Iterator[Any]:
    """Set the process's time zone for a test (TZ + tzset), and put it back."""
    old = os.environ.get("TZ")

    def set_tz(name: str) -> None:
        os.environ["TZ"] = name
        time.tzset()

    yield set_tz
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def events(times: list[float]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    log = Logger(namespace="easync.request", observer=out.append)
    for i, t in enumerate(times):
        log.emit(LogLevel.info, f"user dev{i} Ping http=200 status=2 0.{i}ms 127.0.0.1")
        out[-1]["log_time"] = t
    return out


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York"])
def test_time_stamps_are_twistds_across_a_second_and_in_the_time_zone(tz: Any, zone: str) -> None:
    """Every line is the text twistd's own observer writes for it, its time stamp
    cached per second but right on both sides of a second boundary, in the zone's
    offset (+0530 for Kolkata; New York across the DST change of 2023-11-05)."""
    tz(zone)
    dst_end = 1_699_163_999.0                    # 2023-11-05 01:59:59 EDT, then EST
    times = [EVENT_TIME, EVENT_TIME + 0.4, EVENT_TIME + 0.9999, EVENT_TIME + 1.0,
             EVENT_TIME + 1.5, dst_end + 0.5, dst_end + 1.0, dst_end + 1.2]
    observer = TurnLogObserver(io.StringIO(), reactor=TurnClock())
    got = [observer.format(e) for e in events(times)]
    want = [formatEventAsClassicLogText(e) for e in events(times)]
    assert got == want
    stamps = [line.split(" ", 1)[0] for line in got if line]
    assert len(set(stamps[:3])) == 1 and stamps[2] != stamps[3]
    if zone == "Asia/Kolkata":
        assert stamps[0].endswith("+0530")
    if zone == "America/New_York":
        assert stamps[5].endswith("-0400") and stamps[6].endswith("-0500")


def test_other_events_keep_twistds_format() -> None:
    """Formats with fields, a failure's traceback, several lines, a ``log_system``
    (Twisted's legacy emitters): the same text as twistd's observer."""
    out: list[dict[str, Any]] = []
    log = Logger(namespace="twisted.web", observer=out.append)
    log.info("a {field} and {{braces}}", field=42)
    log.info("two\nlines")
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("it failed in {where}", where="here")
    out.append({"log_format": "legacy", "log_system": "HTTPChannel,3,127.0.0.1",
                "log_time": EVENT_TIME, "log_level": LogLevel.info})
    out.append({"log_time": EVENT_TIME})      # nothing to write
    observer = TurnLogObserver(io.StringIO(), reactor=TurnClock())
    assert [observer.format(e) for e in out] == [formatEventAsClassicLogText(e) for e in out]


def test_a_turns_lines_are_written_at_once_in_order_after_the_turn() -> None:
    clock = TurnClock()
    out = CountingFile()
    observer = TurnLogObserver(out, reactor=clock)
    for e in events([EVENT_TIME + i / 10 for i in range(50)]):
        observer(e)
    assert out.getvalue() == "" and out.writes == 0      # nothing yet: the turn goes on
    clock.advance(0)                                     # the next turn
    lines = out.getvalue().splitlines()
    assert [ln.split()[3] for ln in lines] == [f"dev{i}" for i in range(50)]
    assert (out.writes, out.flushes) == (1, 1)


def test_a_full_buffer_is_written_within_the_turn() -> None:
    clock = TurnClock()
    out = CountingFile()
    observer = TurnLogObserver(out, reactor=clock, max_bytes=1000)
    evs = events([EVENT_TIME] * 30)
    for e in evs:
        observer(e)
    assert out.writes >= 2                               # ~80 B a line: written by size
    clock.advance(0)
    assert out.getvalue() == "".join(formatEventAsClassicLogText(e) or "" for e in evs)


def test_lines_are_written_at_shutdown_and_at_once_when_not_running() -> None:
    clock = TurnClock()
    out = CountingFile()
    observer = TurnLogObserver(out, reactor=clock)
    first, second = events([EVENT_TIME, EVENT_TIME + 1])
    observer(first)
    assert out.getvalue() == ""
    clock.shutdown()                                     # buffered lines go out at stop
    assert out.getvalue() == formatEventAsClassicLogText(first)
    observer(second)                                     # reactor stopped: at once
    assert out.getvalue().endswith(formatEventAsClassicLogText(second) or "-")


def test_rotation_writes_the_buffer_to_the_old_file_first(tmp_path: Path) -> None:
    clock = TurnClock()
    logfile = LogFile.fromFullPath(str(tmp_path / "easync.log"))
    observer = TurnLogObserver(logfile, reactor=clock)
    before, after = events([EVENT_TIME, EVENT_TIME + 1])
    observer(before)
    observer.rotate()
    observer(after)
    clock.advance(0)
    assert (tmp_path / "easync.log.1").read_text() == formatEventAsClassicLogText(before)
    assert (tmp_path / "easync.log").read_text() == formatEventAsClassicLogText(after)


def test_install_default_leaves_a_chosen_logger_or_syslog_alone() -> None:
    assert install_default({"logger": "some.module.factory", "logfile": None}) is False
    assert install_default({"logger": None, "syslog": True}) is False
    options: dict[str, Any] = {"logger": None, "logfile": "x.log", "nodaemon": True}
    assert install_default(options) is True
    assert options["logger"] == "easync.logfile.twistd_observer"


def test_the_real_reactor_is_the_default() -> None:
    assert TurnLogObserver(io.StringIO())._reactor is real_reactor


def test_twistd_logfile_end_to_end(tmp_path: Path) -> None:
    """``twistd --logfile FILE easync``: the request lines and Twisted's own lines are in
    the file, in twistd's format; SIGUSR1 rotates it with every earlier line in the old
    file; SIGTERM leaves the shut-down lines written."""
    import urllib.error
    import urllib.request

    server = RunningServer(tmp_path, tls=False)
    logpath = tmp_path / "easync.log"
    i = server.args.index("--logfile")
    server.args[i + 1] = str(logpath)
    server.start()
    try:
        def get(path: str) -> int:
            who = path.split("DeviceId=")[1].split("&")[0]
            auth = "Basic " + base64.b64encode(f"{who}:wrong".encode()).decode()
            req = urllib.request.Request(f"http://{server.host}{path}", data=b"",
                                         headers={"Authorization": auth})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return int(r.status)
            except urllib.error.HTTPError as e:
                return int(e.code)

        assert get("/Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=before1"
                   "&DeviceType=t") == 401
        text = wait_for(lambda: "before1" in logpath.read_text() and logpath.read_text())
        assert " [twisted.scripts._twistd_unix.UnixAppLogger#info] twistd " in text
        line = next(ln for ln in text.splitlines() if "before1" in ln)
        # twistd's classic line: RFC 3339 stamp with offset, [namespace#level], text
        stamp, system, rest = line.split(" ", 2)
        assert time.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z")
        assert system == "[easync.request#info]" and " http=" in rest
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGUSR1)
        rotated = tmp_path / "easync.log.1"
        wait_for(rotated.exists)
        get("/Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=after2&DeviceType=t")
        wait_for(lambda: "after2" in logpath.read_text())
        assert "before1" in rotated.read_text() and "after2" not in rotated.read_text()
        assert "before1" not in logpath.read_text()
    finally:
        server.stop()
    assert "Server Shut Down." in logpath.read_text()


def test_a_line_from_another_thread_is_written_at_once_after_the_buffered_ones() -> None:
    """A store thread's line cannot wait for the reactor's turn (it may never come if
    the reactor is stuck): it goes out at once, behind what the reactor had buffered."""
    import threading

    clock = TurnClock()
    out = CountingFile()
    observer = TurnLogObserver(out, reactor=clock)
    first, second = events([EVENT_TIME, EVENT_TIME + 1])
    observer(first)                                      # the reactor thread: buffered
    worker = threading.Thread(target=observer, args=(second,))
    worker.start()
    worker.join(10)
    assert out.getvalue() == (formatEventAsClassicLogText(first) or "") + (
        formatEventAsClassicLogText(second) or "")
    clock.advance(0)                                     # the pending turn finds nothing
    assert out.writes == 1


def test_twistds_observer_writes_each_line_before_the_turn_ends(tmp_path: Path) -> None:
    """The observer ``twistd easync`` gets writes a line at once, even mid-turn with the
    reactor running: a request's line (or a "closed a connection" note) is in the file
    before the client can see the answer or the close, which go out at the reactor's
    next poll (tests and log readers rely on that order)."""
    from easync import logfile

    options: dict[str, Any] = {"logger": None, "logfile": str(tmp_path / "t.log"),
                               "nodaemon": True, "syslog": False}
    assert install_default(options)
    old = signal.getsignal(signal.SIGUSR1)
    try:
        observer = logfile.twistd_observer()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert isinstance(observer, TurnLogObserver) and observer.per_turn is False
    clock = TurnClock()
    observer._reactor = clock                            # running, mid-turn
    (event,) = events([EVENT_TIME])
    observer(event)
    assert (tmp_path / "t.log").read_text() == formatEventAsClassicLogText(event)
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("size", [1024, 0], ids=["1K", "off"])
def test_log_rotate_size_sets_twistds_size_rotation(tmp_path: Path, size: int) -> None:
    """``--log-rotate-size``: twistd's rotation at that size (FILE.1), or none with
    ``off`` (0), for a log that logrotate rotates (contrib/easync.logrotate)."""
    from easync import logfile

    options: dict[str, Any] = {"logger": None, "logfile": str(tmp_path / "s.log"),
                               "nodaemon": True, "syslog": False}
    assert install_default(options, rotate_size=size)
    old = signal.getsignal(signal.SIGUSR1)
    try:
        observer = logfile.twistd_observer()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert isinstance(observer, TurnLogObserver)
    evs = events([EVENT_TIME + i for i in range(40)])      # about 3 KB of lines
    for e in evs:
        observer(e)
    rotated = sorted(p.name for p in tmp_path.iterdir() if p.name != "s.log")
    if size:
        assert len(rotated) >= 2
        assert rotated == [f"s.log.{i}" for i in range(1, len(rotated) + 1)]
        # each rotated once it had reached the size (twistd checks before a write)
        assert all(1024 <= (tmp_path / n).stat().st_size < 1024 + 200 for n in rotated)
    else:
        assert rotated == []
    text = "".join((tmp_path / name).read_text() for name in [*reversed(rotated), "s.log"])
    assert text == "".join(formatEventAsClassicLogText(e) or "" for e in evs)


@pytest.mark.parametrize(("value", "want"), [("off", 0), ("4M", 4 << 20), ("1000000", 10**6)])
def test_log_rotate_size_option(value: str, want: int) -> None:
    from easync.tap import Options

    options = Options()
    options.parseOptions(["--log-rotate-size", value])
    assert options.config.listen.log_rotate_size == want


def test_log_rotate_size_option_refuses_a_tiny_size() -> None:
    from twisted.python import usage

    from easync.tap import Options

    with pytest.raises(usage.UsageError, match="at least 1K"):
        Options().parseOptions(["--log-rotate-size", "10"])


def test_a_reopen_that_fails_keeps_writing_to_the_old_file(tmp_path: Path) -> None:
    """The log's directory itself moved away: the path cannot be opened; the lines go
    on to the file already open, and the failure is one error line, no traceback."""
    from twisted.logger import globalLogPublisher

    from easync import logfile

    (tmp_path / "d").mkdir()
    clock = TurnClock()
    observer = TurnLogObserver(logfile.ServiceLogFile.fromFullPath(
        str(tmp_path / "d" / "x.log")), reactor=clock, per_turn=False)
    first, second = events([EVENT_TIME, EVENT_TIME + 1])
    observer(first)
    os.rename(tmp_path / "d", tmp_path / "moved")
    seen: list[Any] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        logfile._rotate_now(observer)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    observer(second)
    assert (tmp_path / "moved" / "x.log").read_text() == "".join(
        formatEventAsClassicLogText(e) or "" for e in (first, second))
    (error,) = [e for e in seen if e.get("log_namespace") == "easync.logfile"]
    assert error["log_level"] == LogLevel.error and "log_failure" not in error
    assert "No such file or directory" in (formatEventAsClassicLogText(error) or "")


def test_sigusr1_ignored_by_a_starting_worker_is_taken_over(tmp_path: Path) -> None:
    """A worker runs ``WORKER_MAIN`` (SIGUSR1 ignored: the default action would end a
    worker still starting when the first process passes the signal on); its log
    observer then takes the signal, but leaves another program's handler alone."""
    from easync import logfile, workers

    assert "signal.SIGUSR1, signal.SIG_IGN" in workers.WORKER_MAIN
    pool = workers.WorkerPool(None, 2, ["--workers", "2"], {"logfile": "/tmp/e.log"})
    assert pool.command(1)[1:3] == ["-c", workers.WORKER_MAIN]
    options: dict[str, Any] = {"logger": None, "logfile": str(tmp_path / "w.log"),
                               "nodaemon": True, "syslog": False}
    install_default(options)
    old = signal.getsignal(signal.SIGUSR1)

    def theirs(signum: int, frame: Any) -> None:
        pass

    try:
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        logfile.twistd_observer()
        assert callable(signal.getsignal(signal.SIGUSR1))
        signal.signal(signal.SIGUSR1, theirs)
        logfile.twistd_observer()
        assert signal.getsignal(signal.SIGUSR1) is theirs
    finally:
        signal.signal(signal.SIGUSR1, old)
