"""Issue #13 points 2 and 3: ``twistd easync`` stopped by an admin's mistake or by a
database it cannot open says why in one line on stderr and exits non-zero, without a
Python traceback and (under twistd) without printing its whole --help first.

Every case runs a real ``twistd -n easync`` process, as the README starts it.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

import pytest
from easync_server import REPO, _env, free_port, twistd

PREFIX = "twistd easync: error: "


def run_twistd(cwd: Path, *args: str, pidfile: str = "") -> subprocess.CompletedProcess[str]:
    """``twistd -n easync ARGS`` until it exits (it must: nothing here can start)."""
    cmd = [twistd(), "-n", "--logfile", "-", "--pidfile", pidfile, "easync", *args]
    return subprocess.run(cmd, cwd=cwd, env=_env(), text=True, capture_output=True,
                          timeout=60, check=False)


def one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr, after checking the exit status and that no traceback
    and no usage text was printed."""
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert "--max-window" not in res.stdout   # twistd's --help text is not shown
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(PREFIX), lines[0]
    return lines[0][len(PREFIX):]


def readme_config_example() -> str:
    """The TOML example of the README's "Config file" section."""
    text = (REPO / "README.md").read_text("utf-8")
    section = text.split("### Config file", 1)[1]
    match = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert match, "no TOML example under ### Config file"
    return match.group(1)


def test_readme_config_example_without_its_certificate(tmp_path: Path) -> None:
    """The README's own example names /etc/easync/key.pem and cert.pem: without them
    one line naming the option and the missing file."""
    if os.path.exists("/etc/easync/cert.pem") or os.path.exists("/etc/easync/key.pem"):
        pytest.skip("this machine has /etc/easync certificates")
    conf = tmp_path / "easync.toml"
    conf.write_text(readme_config_example(), "utf-8")
    line = one_error_line(run_twistd(tmp_path, "--config", str(conf)))
    assert line.startswith("--listen ssl:443:privateKey=/etc/easync/key.pem"), line
    assert "No such file or directory" in line and "/etc/easync/" in line, line


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        endpoint = f"tcp:{port}:interface=127.0.0.1"
        line = one_error_line(run_twistd(tmp_path, "--listen", endpoint,
                                         "--db", f"sqlite:///{tmp_path}/e.sqlite"))
    assert line.startswith(f"--listen {endpoint}: "), line
    assert "Address already in use" in line, line


def test_port_in_use_removes_the_pid_file(tmp_path: Path) -> None:
    """twistd removes its pid file (a stale one would be in the next start's way)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(run_twistd(
            tmp_path, "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--db", f"sqlite:///{tmp_path}/e.sqlite", pidfile="twistd.pid"))
    assert "Address already in use" in line
    assert not (tmp_path / "twistd.pid").exists()


def test_metrics_port_in_use_names_its_option(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_error_line(run_twistd(
            tmp_path, "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
            "--metrics-listen", f"tcp:{port}:interface=127.0.0.1",
            "--db", f"sqlite:///{tmp_path}/e.sqlite"))
    assert line.startswith(f"--metrics-listen tcp:{port}:"), line


@pytest.mark.parametrize(("args", "expected"), [
    (["--listen", "carrier-pigeon:1"], "Unknown endpoint type: 'carrier-pigeon'"),
    (["--listen", "tcp:notaport"], "listen 'tcp:notaport'"),
    # ssl: endpoints are read when the service tree is built (their key file)
    (["--listen", "ssl:notaport", "--db", "sqlite:///e.sqlite"],
     "--listen ssl:notaport: invalid literal for int()"),
    (["--max-window", "lots"], "--max-window: expected a whole number, got 'lots'"),
    (["--heartbeat-min", "600", "--heartbeat-max", "300"], "heartbeat-min"),
    (["--provisioning", "maybe"], "on or off"),
    (["--db", "mysql://x/y"], "sqlite:///"),
    # refused by the SQL engine when the store is made
    (["--listen", "tcp:0", "--db", "postgresql://127.0.0.1"],
     "--db postgresql://127.0.0.1: no database name in 'postgresql://127.0.0.1'"),
    (["--no-such-option"], "no-such-option"),
    (["--config", "missing.toml"], "cannot read config file missing.toml"),
    (["--config", "."], "cannot read config file .: Is a directory"),
])
def test_bad_command_line(tmp_path: Path, args: list[str], expected: str) -> None:
    line = one_error_line(run_twistd(tmp_path, *args))
    assert expected in line, line


@pytest.mark.parametrize("option", ["--logfile", "--pidfile"])
def test_twistd_file_in_a_missing_directory(tmp_path: Path, option: str) -> None:
    """twistd's own options, given before ``easync``: a log or pid file that cannot be
    written is one line too."""
    cmd = [twistd(), "-n", "--pidfile", "", option, str(tmp_path / "nodir" / "f"), "easync",
           "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
           "--db", f"sqlite:///{tmp_path}/e.sqlite"]
    res = subprocess.run(cmd, cwd=tmp_path, env=_env(), text=True, capture_output=True,
                         timeout=60, check=False)
    line = one_error_line(res)
    if option == "--logfile":
        assert line == f"[Errno 2] No such file or directory: '{tmp_path / 'nodir' / 'f'}'"
    else:
        assert line == (f"--pidfile {tmp_path / 'nodir' / 'f'}: directory "
                        f"{tmp_path / 'nodir'} does not exist")


def test_config_file_that_is_not_text(tmp_path: Path) -> None:
    conf = tmp_path / "easync.toml"
    conf.write_bytes(b'max-window = "\xff"\n')
    line = one_error_line(run_twistd(tmp_path, "--config", str(conf)))
    assert line.startswith(f"config file {conf} is not valid TOML"), line


def test_config_file_not_readable(tmp_path: Path) -> None:
    """A config file the server's user may not read.  Root reads any file, so as root
    (CI) twistd runs as ``nobody`` (setpriv), from a directory nobody may enter."""
    import shutil
    import tempfile

    as_nobody: list[str] = []
    where = tmp_path
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "util-linux's setpriv is needed to run as nobody"
        as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        where = Path(tempfile.mkdtemp(prefix="easync-unreadable-"))
        where.chmod(0o755)
    try:
        conf = where / "easync.toml"
        conf.write_text("max-window = 256\n", "utf-8")
        conf.chmod(0)
        cmd = [*as_nobody, twistd(), "-n", "--logfile", "-", "--pidfile", "", "easync",
               "--config", str(conf)]
        res = subprocess.run(cmd, cwd=where, env=_env(), text=True, capture_output=True,
                             timeout=60, check=False)
        line = one_error_line(res)
        assert line == f"cannot read config file {conf}: Permission denied", line
    finally:
        if where != tmp_path:
            shutil.rmtree(where, ignore_errors=True)


def test_database_driver_that_cannot_be_imported(tmp_path: Path) -> None:
    """A postgresql:// URL without a working driver (here a psycopg package that fails
    to import, put first on the path) is one line too, whatever part of opening the
    store finds it."""
    fake = tmp_path / "shadow" / "psycopg"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('psycopg is broken here')\n")
    env = _env()
    env["PYTHONPATH"] = str(tmp_path / "shadow") + os.pathsep + env["PYTHONPATH"]
    cmd = [twistd(), "-n", "--logfile", "-", "--pidfile", "", "easync",
           "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
           "--db", "postgresql://easync@127.0.0.1/easync"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, text=True, capture_output=True,
                         timeout=60, check=False)
    line = one_error_line(res)
    assert "postgresql://easync@127.0.0.1/easync" in line and "psycopg" in line, line


def test_sqlite_file_in_a_missing_directory(tmp_path: Path) -> None:
    line = one_error_line(run_twistd(
        tmp_path, "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--db", "sqlite:///nodir/easync.sqlite"))
    assert line == (f"cannot open the database sqlite:///nodir/easync.sqlite: directory "
                    f"{tmp_path / 'nodir'} does not exist"), line


def test_unreachable_postgresql(tmp_path: Path) -> None:
    """Nothing listens on the port: one line with the driver's reason; the password
    in the URL is not shown."""
    url = f"postgresql://easync:s3cret@127.0.0.1:{free_port()}/easync"
    res = run_twistd(tmp_path, "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
                     "--db", url)
    line = one_error_line(res)
    assert line.startswith("cannot open the database postgresql://easync:***@127.0.0.1:"), line
    assert "Connection refused" in line, line
    assert "s3cret" not in res.stdout + res.stderr


def test_database_newer_than_this_easync(tmp_path: Path) -> None:
    """Opening includes the schema check: a database from a newer easync is refused
    at start, not left to answer 503."""
    import sqlite3

    db = tmp_path / "newer.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (9999, 'future', 0)")
    conn.commit()
    conn.close()
    line = one_error_line(run_twistd(
        tmp_path, "--listen", f"tcp:{free_port()}:interface=127.0.0.1",
        "--db", f"sqlite:///{db}"))
    assert line.startswith(f"cannot open the database sqlite:///{db}: "), line
    assert "9999 is newer" in line, line
