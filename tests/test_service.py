"""Running easync as a service (issue 13 point 8): the systemd unit and logrotate
snippet in contrib/, and the log file following logrotate on SIGUSR1.

logrotate renames ``easync.log`` (and, with ``create``, makes a new empty one), then
its ``postrotate`` sends SIGUSR1.  twistd's own handler calls ``LogFile.rotate``, which
returns without doing anything once the path has gone: the server wrote on into the
renamed file.  easync's observer closes the file and reopens it by its path.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from collections import Counter
from pathlib import Path

import needs
import pytest

from tests.easync_server import REPO, RunningServer, free_port, twistd, wait_for

UNIT = REPO / "contrib" / "easync.service"
LOGROTATE = REPO / "contrib" / "easync.logrotate"

PASSWORD = "service password"
# one whole line of twistd's format: time stamp, [system], text
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]]+\] \S.*")
REQUEST = re.compile(r"\[easync\.request#info\] mario (rot\d+) Sync http=200 ")


class Traffic:
    """Requests sent one after another from a thread, each with its own DeviceId
    (``rot0``, ``rot1``, …); each one's log line is written before its answer."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.sent: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        auth = base64.b64encode(f"mario:{PASSWORD}".encode()).decode()
        self._headers = {"Authorization": f"Basic {auth}", "MS-ASProtocolVersion": "14.1"}

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            device = f"rot{i}"
            req = urllib.request.Request(
                f"http://{self.host}/Microsoft-Server-ActiveSync?Cmd=Sync&User=mario"
                f"&DeviceId={device}&DeviceType=t", data=b"", headers=self._headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    r.read()
                self.sent.append(device)
            except OSError as e:
                self.failed.append(f"{device}: {e}")
            i += 1

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def wait_for_more(self, n: int) -> None:
        target = len(self.sent) + n
        wait_for(lambda: len(self.sent) >= target, 20)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(20)


def split_files(old: Path, new: Path) -> tuple[list[int], list[int]]:
    """The request numbers in the renamed file and in the file now at the path, after
    checking that every line of both is whole."""
    numbers: list[list[int]] = []
    for path in (old, new):
        text = path.read_text()
        assert text.endswith("\n")
        bad = [ln for ln in text.splitlines() if not LINE.fullmatch(ln)
               and not ln.startswith("\t")]             # (a traceback's continuation)
        assert bad == [], f"split or mangled lines in {path.name}"
        numbers.append([int(m.group(1)[3:]) for m in REQUEST.finditer(text)])
    return numbers[0], numbers[1]


def check_clean_switch(old: Path, new: Path) -> tuple[list[int], list[int]]:
    before, after = split_files(old, new)
    assert before and after
    # the switch is clean: every line written before the reopen is in the old file,
    # every later one in the new file
    assert max(before) < min(after)
    assert "SIGUSR1: log file" in new.read_text()
    assert "SIGUSR1" not in old.read_text()
    return before, after


def tool(name: str) -> str:
    """The path of a system tool the test runs (tests/needs.py when it is missing)."""
    package = {"systemd-analyze": "systemd", "logrotate": "logrotate"}[name]
    needs.require(needs.tool(name, package))
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    assert found
    return found


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on contrib/easync.service, its ExecStart pointed at
    this twistd (verify checks that the command exists): no error and no warning (an
    unknown directive or a bad value is only a warning, with exit status 0)."""
    analyze = tool("systemd-analyze")
    text = UNIT.read_text()
    assert "/opt/easync/.venv/bin/twistd" in text
    unit = tmp_path / "easync.service"
    unit.write_text(text.replace("/opt/easync/.venv/bin/twistd", twistd()))
    res = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert (res.returncode, res.stderr, res.stdout) == (0, "", "")


def test_the_units_command_line_starts_the_server(tmp_path: Path) -> None:
    """The unit's ExecStart, as systemd splits it (continuation lines joined), with its
    directories moved to a temporary one: twistd accepts every option, the server
    listens, logs to --logfile and writes its pid file; SIGTERM stops it cleanly, by
    the signal (twistd re-raises it), which systemd counts as a clean exit
    (systemd.service: SuccessExitStatus), so Restart=on-failure leaves it stopped."""
    text = UNIT.read_text().replace("\\\n", " ")
    (command,) = [ln.split("=", 1)[1] for ln in text.splitlines()
                  if ln.startswith("ExecStart=")]
    port = free_port()
    (tmp_path / "easync.toml").write_text(
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'db = "sqlite:///{tmp_path / "easync.sqlite"}"\n')
    for path in ("/var/log/easync", "/run/easync", "/etc/easync"):
        command = command.replace(path, str(tmp_path))
    argv = command.split()
    assert argv[0] == "/opt/easync/.venv/bin/twistd"
    argv[0] = twistd()
    server = RunningServer(tmp_path, tls=False)
    server.admin("init")                               # the database (easync-admin init)
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: f"starting on {port}" in (tmp_path / "easync.log").read_text(), 30)
        assert int((tmp_path / "twistd.pid").read_text()) == proc.pid
        # an answer: the reactor runs, so its SIGTERM handler is in place (the port
        # listens from the "before startup" triggers, before the handlers are installed)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.1 ")
    finally:
        proc.terminate()
        assert proc.wait(30) == -signal.SIGTERM
    assert "Server Shut Down." in (tmp_path / "easync.log").read_text()


def logrotate_config(tmp_path: Path, logdir: Path, pidfile: Path) -> Path:
    """contrib/easync.logrotate for a test: its log directory, pid file and owner."""
    text = LOGROTATE.read_text()
    for old, new in (("/var/log/easync", str(logdir)), ("/run/easync/twistd.pid", str(pidfile)),
                     ("easync easync", "root root")):
        assert old in text
        text = text.replace(old, new)
    config = tmp_path / "logrotate.conf"
    config.write_text(text)
    return config


@pytest.mark.parametrize("rotator", ["rename", "logrotate"])
def test_sigusr1_after_logrotate_moved_the_file_reopens_it_by_its_path(
        tmp_path: Path, rotator: str) -> None:
    """The file renamed under the server (by hand, or by logrotate itself with
    contrib/easync.logrotate: rename, a new empty file, ``postrotate kill -USR1``),
    with requests going on throughout: the lines up to the signal are in the renamed
    file, every later one in the file at the path, each request's line exactly once
    and whole."""
    logrotate = tool("logrotate") if rotator == "logrotate" else ""
    logdir = tmp_path / "log"
    logdir.mkdir()
    server = RunningServer(tmp_path, ["--login-delay", "0", "--provisioning", "off",
                                      "--max-devices-per-user", "0"], tls=False)
    logpath = logdir / "easync.log"
    pidfile = tmp_path / "twistd.pid"
    server.args[server.args.index("--logfile") + 1] = str(logpath)
    server.args[server.args.index("--pidfile") + 1] = str(pidfile)
    server.start()
    traffic = None
    try:
        server.add_user("mario", PASSWORD)
        traffic = Traffic(server.host).start()
        traffic.wait_for_more(20)
        assert server.proc is not None
        if rotator == "rename":
            rotated = logdir / "easync.log.1"
            os.rename(logpath, rotated)
            traffic.wait_for_more(10)                   # lines go on into the old file
            os.kill(server.proc.pid, signal.SIGUSR1)
        else:
            config = logrotate_config(tmp_path, logdir, pidfile)
            res = subprocess.run([logrotate, "--force", "--state", str(tmp_path / "state"),
                                  str(config)], capture_output=True, text=True, timeout=60,
                                 check=False)
            assert (res.returncode, res.stderr) == (0, "")
            (rotated,) = [p for p in logdir.iterdir() if p.name.startswith("easync.log-")]
            assert oct(logpath.stat().st_mode & 0o777) == "0o640"   # made by "create"
        wait_for(lambda: logpath.exists() and "reopened" in logpath.read_text())
        traffic.wait_for_more(20)
        traffic.stop()
    finally:
        if traffic is not None:
            traffic.stop()
        server.stop()
    assert traffic.failed == []
    before, after = check_clean_switch(rotated, logpath)
    assert Counter(before + after) == Counter(int(d[3:]) for d in traffic.sent)
    assert "Server Shut Down." in logpath.read_text()


def test_sigusr1_with_workers_reopens_every_workers_file(tmp_path: Path) -> None:
    """``--workers 2``: logrotate renames ``easync.log`` and ``easync-w1.log``; SIGUSR1
    to the first process only (its pid file) makes both processes reopen their own
    file, and no request's line is lost."""
    from pgtest import fresh_database, pg_server, unreachable

    needs.require(unreachable())
    with fresh_database("svclog") as url:
        server = pg_server(tmp_path, url, ["--workers", "2", "--login-delay", "0",
                                           "--provisioning", "off",
                                           "--max-devices-per-user", "0"], tls=False)
        main_log, worker_log = tmp_path / "easync.log", tmp_path / "easync-w1.log"
        server.args[server.args.index("--logfile") + 1] = str(main_log)
        server.start()
        traffic = None
        try:
            server.add_user("mario", PASSWORD)
            wait_for(lambda: worker_log.exists() and "starting on" in worker_log.read_text(), 30)
            traffic = Traffic(server.host).start()
            traffic.wait_for_more(20)
            for path in (main_log, worker_log):
                os.rename(path, path.with_name(path.name + ".1"))
            assert server.proc is not None
            os.kill(server.proc.pid, signal.SIGUSR1)
            for path in (main_log, worker_log):
                wait_for(lambda p=path: p.exists() and "reopened" in p.read_text())
            traffic.wait_for_more(20)
            traffic.stop()
        finally:
            if traffic is not None:
                traffic.stop()
            server.stop()
    assert traffic.failed == []
    numbers: list[int] = []
    for path in (main_log, worker_log):
        before, after = split_files(path.with_name(path.name + ".1"), path)
        assert "SIGUSR1: log file" in path.read_text()
        numbers += before + after
    assert Counter(numbers) == Counter(int(d[3:]) for d in traffic.sent)

