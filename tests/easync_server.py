"""Start easync as a user starts it (``twistd -n easync``) in a temporary directory.

Used by the end-to-end tests: a real process, a real TLS listener, real HTTP.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> int:
    """A port ``p`` such that ``p`` … ``p + n - 1`` could all be bound just now (each
    tried), for a server that listens on consecutive ports (``--workers`` N with
    ``--metrics-listen``: worker i on port + i).  ``free_port`` alone checked only the
    first: under ``-n 4`` another test's server could hold a neighbour."""
    for _attempt in range(200):
        base = free_port()
        if base + n - 1 > 65535:
            continue
        held: list[socket.socket] = []
        try:
            for i in range(n):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {n} consecutive free ports found")


def wait_for(cond: Any, timeout: float = 10.0, step: float = 0.05) -> Any:
    """Poll ``cond()`` every ``step`` s until it is true (its value is returned) or
    ``timeout`` s have passed (AssertionError).  A connection error (OSError) while
    asking counts as "not yet", as a server that is (re)starting gives one."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
            if last:
                return last
        except OSError:
            pass
        time.sleep(step)
    raise AssertionError(f"condition not reached ({last!r})")


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if the process has not ended 10 s later."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def read_metrics(url: str, timeout: float) -> dict[str, float]:
    """The samples a ``/metrics`` endpoint serves: ``{name with labels: value}``."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=timeout) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def twistd() -> str:
    """The twistd of the Python running the tests (a venv's own, in CI)."""
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return str(beside)
    found = shutil.which("twistd")
    if not found:
        raise RuntimeError("twistd not found")
    return found


def _env() -> dict[str, str]:
    """The environment of the easync-admin and twistd processes the tests run: this
    checkout's code, cheap bcrypt, and English whatever the machine's locale (the tests
    assert English text; easync-admin speaks its locale's language, and LANGUAGE comes
    first of the variables it reads)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("EASYNC_BCRYPT_ROUNDS", "4")
    env["LANGUAGE"] = "en"
    return env


class RunningServer:
    def __init__(self, workdir: Path, args: list[str] | None = None, tls: bool = True) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.tls = tls
        self.db = f"sqlite:///{workdir / 'easync.sqlite'}"
        scheme = "ssl" if tls else "tcp"
        self.args = [twistd(), "-n", "--logfile", "-", "--pidfile", "", "easync",
                     "--listen", f"{scheme}:{self.port}:interface=127.0.0.1",
                     "--db", self.db] + (args or [])
        self.logfile = workdir / "twistd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}/Microsoft-Server-ActiveSync"

    def start(self) -> RunningServer:
        # Create the database before the server starts, as a user would with easync-admin.
        self.admin("init")
        with open(self.logfile, "wb") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.workdir, env=_env(), stdout=log,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            stop_process(self.proc)

    def log_text(self) -> str:
        try:
            return self.logfile.read_text("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def admin(self, *args: str, stdin: str | None = None, check: bool = True
              ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "easync.admin", "--db", self.db, *args]
        res = subprocess.run(cmd, cwd=self.workdir, env=_env(), input=stdin, text=True,
                             capture_output=True, timeout=60, check=False)
        if check and res.returncode != 0:
            raise RuntimeError(f"easync-admin {' '.join(args)} failed: {res.stderr}")
        return res

    def add_user(self, name: str, password: str, activesync: bool = True,
                 email: str | None = None) -> None:
        args = ["user", "add", name, "--password-stdin"]
        if activesync:
            args.append("--activesync")
        if email:
            args += ["--email", email]
        self.admin(*args, stdin=password + "\n")
