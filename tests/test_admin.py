"""``easync-admin`` run as a program against a temporary SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import bcrypt
import pytest

from easync import admin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


class Admin:
    """Runs ``python -m easync.admin --db … ARGS`` in a temp directory."""

    def __init__(self, tmp_path: Any) -> None:
        self.cwd = str(tmp_path)
        self.db = f"sqlite:///{tmp_path}/admin.sqlite"

    def __call__(self, *args: str, stdin: str | None = None, db: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, EASYNC_BCRYPT_ROUNDS="4",
                   PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("EASYNC_DB", None)
        argv = [sys.executable, "-m", "easync.admin"]
        if db:
            argv += ["--db", self.db]
        return subprocess.run(argv + list(args), input=stdin if stdin is not None else "",
                              capture_output=True, text=True, cwd=self.cwd, env=env,
                              timeout=60, check=False)

    def users(self) -> list[list[str]]:
        out = self("user", "list")
        assert out.returncode == 0, out.stderr
        # NAME EMAIL ACTIVESYNC (the 2FA columns: tests/test_admin_auth.py)
        return [line.split()[:3] for line in out.stdout.splitlines()[1:]]

    def password_hash(self, name: str) -> str:
        import sqlite3

        with sqlite3.connect(self.db[len("sqlite:///"):]) as conn:
            row = conn.execute("SELECT password_hash FROM users WHERE name = ?",
                               (name,)).fetchone()
        return str(row[0])


@pytest.fixture
def run(tmp_path: Any) -> Admin:
    return Admin(tmp_path)


def test_add_and_list(run: Admin) -> None:
    r = run("user", "add", "mario", "--email", "mario@example.it", "--password-stdin",
            stdin="segreto-1\n")
    assert r.returncode == 0, r.stderr
    assert "added user mario" in r.stdout
    assert "segreto" not in r.stdout + r.stderr
    r = run("user", "add", "lucia", "--password-stdin", "--activesync", stdin="pw-lucia\n")
    assert r.returncode == 0, r.stderr
    assert run.users() == [["lucia", "-", "on"], ["mario", "mario@example.it", "off"]]
    out = run("user", "list").stdout
    assert out.splitlines()[0].split() == ["NAME", "EMAIL", "ACTIVESYNC", "2FA", "AS-PASSWORD",
                                           "ADMIN"]
    # Stored as a bcrypt hash of exactly the line read (without its newline).
    hashed = run.password_hash("mario")
    assert hashed.startswith("$2")
    assert bcrypt.checkpw(b"segreto-1", hashed.encode())


def test_default_db_is_in_the_working_directory(run: Admin) -> None:
    r = run("user", "add", "anna", "--password-stdin", stdin="x\n", db=False)
    assert r.returncode == 0, r.stderr
    assert os.path.exists(os.path.join(run.cwd, "easync.sqlite"))


def test_passwd(run: Admin) -> None:
    run("user", "add", "mario", "--password-stdin", stdin="vecchia\n")
    old = run.password_hash("mario")
    r = run("user", "passwd", "mario", "--password-stdin", stdin="nuova-password\r\n")
    assert r.returncode == 0, r.stderr
    new = run.password_hash("mario")
    assert new != old
    assert bcrypt.checkpw(b"nuova-password", new.encode())
    assert not bcrypt.checkpw(b"vecchia", new.encode())


def test_activesync_on_off(run: Admin) -> None:
    run("user", "add", "mario", "--password-stdin", stdin="x\n")
    assert run("user", "activesync", "mario", "on").returncode == 0
    assert run.users() == [["mario", "-", "on"]]
    assert run("user", "activesync", "MARIO", "off").returncode == 0   # any case
    assert run.users() == [["mario", "-", "off"]]


def test_password_never_from_argv_nor_without_terminal(run: Admin) -> None:
    # There is no option taking a password value.
    r = run("user", "add", "mario", "--password", "x")
    assert r.returncode == 2
    # stdin is not a terminal and --password-stdin was not given: refuse, don't hang.
    r = run("user", "add", "mario", stdin="segreto\n")
    assert r.returncode == 1
    assert "--password-stdin" in r.stderr
    assert run.users() == []


@pytest.mark.parametrize("args, stdin, message", [
    (["user", "passwd", "nobody", "--password-stdin"], "x\n", "no user named 'nobody'"),
    (["user", "activesync", "nobody", "on"], "", "no user named 'nobody'"),
    (["device", "list", "nobody"], "", "no user named 'nobody'"),
    (["device", "wipe", "nobody", "DEV1"], "", "no user named 'nobody'"),
    (["import", "nobody", os.path.join(DATA, "contacts.vcf")], "", "no user named"),
    (["user", "add", "bad name", "--password-stdin"], "x\n", "invalid user name"),
    (["user", "add", "ok", "--email", "not-an-address", "--password-stdin"], "x\n",
     "invalid e-mail"),
    (["user", "add", "ok", "--password-stdin"], "\n", "no password"),
])
def test_errors_exit_1_with_a_message(run: Admin, args: list[str], stdin: str,
                                      message: str) -> None:
    r = run(*args, stdin=stdin)
    assert r.returncode == 1
    assert message in r.stderr
    assert r.stderr.startswith("easync-admin: error: ")
    assert "Traceback" not in r.stderr


def test_duplicate_user(run: Admin) -> None:
    assert run("user", "add", "mario", "--password-stdin", stdin="x\n").returncode == 0
    r = run("user", "add", "Mario", "--password-stdin", stdin="y\n")
    assert r.returncode == 1
    assert "already exists" in r.stderr


def test_bad_database(run: Admin, tmp_path: Any) -> None:
    r = run("--db", f"sqlite:///{tmp_path}/no/such/dir/x.sqlite", "user", "list", db=False)
    assert r.returncode == 3
    assert "cannot open database" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("--db", "mysql://x", "user", "list", db=False)
    assert r.returncode == 2                         # not a database URL at all
    assert "sqlite:///" in r.stderr


def test_usage_errors(run: Admin) -> None:
    assert run().returncode == 2
    assert run("user").returncode == 2
    assert run("user", "activesync", "mario", "maybe").returncode == 2
    r = run("--help")
    assert r.returncode == 0
    assert "user" in r.stdout and "device" in r.stdout and "import" in r.stdout


def test_import(run: Admin) -> None:
    run("user", "add", "mario", "--email", "mario@example.it", "--password-stdin",
        stdin="x\n")
    r = run("import", "mario", os.path.join(DATA, "contacts.vcf"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("imported 5 contacts; ")
    assert "warning: " in r.stdout
    r = run("import", "mario", os.path.join(DATA, "calendar.ics"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "imported 10 events, 2 tasks; 1 warning"
    assert r.stdout.splitlines()[1].startswith("warning: event hourly@easync.test")
    r = run("import", "mario", os.path.join(DATA, "calendar.ics"))
    assert r.stdout.splitlines()[0] == ("imported 10 events, 2 tasks (12 unchanged); "
                                        "1 warning")
    r = run("import", "mario", os.path.join(DATA, "calendar.ics"), "--folder", "424242")
    assert r.returncode == 1
    assert "no folder '424242'" in r.stderr


def test_devices(run: Admin, tmp_path: Any) -> None:
    run("user", "add", "mario", "--password-stdin", stdin="x\n")
    r = run("device", "list")
    assert r.returncode == 0
    assert r.stdout.split() == ["USER", "DEVICE", "TYPE", "LAST", "SEEN", "LAST", "SYNC",
                                "HOLDING", "NOW", "WIPE", "USER", "AGENT"]
    r = run("device", "wipe", "mario", "NOPE")
    assert r.returncode == 1 and "no device 'NOPE'" in r.stderr
    # A device as the server records it at its first request (in another process, so
    # that this test does not need the reactor).
    script = (
        "import sys; from twisted.internet import task\n"
        "from backends.sql.store import SqlStore\n"
        "async def main(reactor):\n"
        f"    s = SqlStore(reactor, {run.db!r}); await s.open()\n"
        "    u = await s.get_user('mario')\n"
        "    await s.save_device(u, 'ApplF17XYZ', device_type='iPhone',"
        " user_agent='Apple-iPhone15C2/2104.252')\n"
        "    await s.close()\n"
        "task.react(main)\n")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(tmp_path),
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    rows = run("device", "list", "mario").stdout.splitlines()
    assert rows[1].split()[:3] == ["mario", "ApplF17XYZ", "iPhone"]
    assert rows[1].split()[-2:] == ["none", "Apple-iPhone15C2/2104.252"]
    r = run("device", "wipe", "mario", "ApplF17XYZ", "--account-only")
    assert r.returncode == 0, r.stderr
    assert "next connection" in r.stdout
    assert run("device", "list").stdout.splitlines()[1].split()[-2] == "pending"
    r = run("device", "remove", "mario", "ApplF17XYZ")
    assert r.returncode == 0, r.stderr
    assert len(run("device", "list", "mario").stdout.splitlines()) == 1


# ------------------------------------------------------------------ in-process helpers

def test_read_password_from_stdin() -> None:
    import io

    assert admin.read_password(True, io.StringIO("pässwörd\nignored\n")) == "pässwörd"
    with pytest.raises(admin.AdminError, match="72 bytes"):
        admin.read_password(True, io.StringIO("x" * 73 + "\n"))


def test_read_password_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter(["uno", "uno"])
    prompts: list[str] = []

    def fake_getpass(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(admin.getpass, "getpass", fake_getpass)
    assert admin.read_password(False, Tty()) == "uno"
    assert len(prompts) == 2                       # asked twice
    answers = iter(["uno", "due"])
    with pytest.raises(admin.AdminError, match="differ"):
        admin.read_password(False, Tty())


def test_bcrypt_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EASYNC_BCRYPT_ROUNDS", raising=False)
    assert admin.bcrypt_rounds() == 12
    monkeypatch.setenv("EASYNC_BCRYPT_ROUNDS", "5")
    assert admin.bcrypt_rounds() == 5
    assert admin.hash_password("x").startswith("$2b$05$")
    monkeypatch.setenv("EASYNC_BCRYPT_ROUNDS", "2")
    with pytest.raises(admin.AdminError):
        admin.bcrypt_rounds()
