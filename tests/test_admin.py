"""``easync-admin`` run as a program against a temporary SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import bcrypt
import pytest
from easync_server import RunningServer, _env

from easync import admin

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")


class Admin:
    """Runs ``python -m easync.admin --db … ARGS`` in a temp directory."""

    def __init__(self, tmp_path: Any, init: bool = True) -> None:
        self.cwd = str(tmp_path)
        self.db = f"sqlite:///{tmp_path}/admin.sqlite"
        if init:    # easync-admin creates a database only when told (init)
            res = self("init")
            assert res.returncode == 0, res.stderr

    def __call__(self, *args: str, stdin: str | None = None, db: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        env = dict(_env(), EASYNC_BCRYPT_ROUNDS="4")        # in English
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


def test_default_db_is_in_the_working_directory(tmp_path: Any) -> None:
    run = Admin(tmp_path, init=False)
    assert run("init", db=False).returncode == 0
    assert os.path.exists(os.path.join(run.cwd, "easync.sqlite"))
    r = run("user", "add", "anna", "--password-stdin", stdin="x\n", db=False)
    assert r.returncode == 0, r.stderr
    assert "anna" in run("user", "list", db=False).stdout


@pytest.mark.parametrize("db", [None, "sqlite:///elsewhere/easync.sqlite",
                                "sqlite:///typo.sqlite"])
def test_no_database_is_created_implicitly(tmp_path: Any, db: str | None) -> None:
    """Issue #13 point 4: run in the wrong directory (or with a mistyped --db),
    easync-admin says where it looked and how to create a database; it creates none."""
    run = Admin(tmp_path, init=False)
    url = db or "sqlite:///easync.sqlite"
    path = os.path.join(run.cwd, url[len("sqlite:///"):])
    argv = ["--db", db] if db else []
    r = run(*argv, "user", "add", "anna", "--password-stdin", stdin="x\n", db=False)
    assert r.returncode == 3
    assert r.stderr == (f"easync-admin: error: no database at {path} (--db {url}): run "
                        "easync-admin where the server runs or give the server's --db; "
                        f"to create a new database there: easync-admin --db {url} init\n")
    assert os.listdir(run.cwd) == []
    # init creates it (in a directory that exists), then the command works
    if db == "sqlite:///elsewhere/easync.sqlite":
        r = run(*argv, "init", db=False)
        assert r.returncode == 3
        assert r.stderr == (f"easync-admin: error: cannot open database {url}: directory "
                            f"{os.path.dirname(path)} does not exist\n")
        os.mkdir(os.path.dirname(path))
    r = run(*argv, "init", db=False)
    assert r.returncode == 0
    assert r.stdout == f"created database {path} (schema version {schema_version()})\n"
    r = run(*argv, "init", db=False)
    assert r.returncode == 0
    assert r.stdout == f"database {url} is ready (schema version {schema_version()})\n"
    r = run(*argv, "user", "add", "anna", "--password-stdin", stdin="x\n", db=False)
    assert r.returncode == 0, r.stderr


def schema_version() -> int:
    """The newest schema version: the highest numbered file in backends/sql/schema."""
    names = os.listdir(os.path.join(ROOT, "backends", "sql", "schema"))
    return max(int(n.split("_", 1)[0]) for n in names if n[:1].isdigit())


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
    assert "no database at" in r.stderr
    assert "Traceback" not in r.stderr
    r = run("--db", f"sqlite:///{tmp_path}", "user", "list", db=False)   # a directory
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


def folders(run: Admin, name: str) -> dict[str, list[str]]:
    """``folder list NAME``: {folder name: [id, kind, items]} (names without spaces)."""
    r = run("folder", "list", name)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "KIND", "ITEMS"]
    rows = [ln.split() for ln in lines[1:]]
    return {row[1]: [row[0], " ".join(row[2:-1]), row[-1]] for row in rows}


def test_folder_list_and_import_into_a_folder(run: Admin) -> None:
    """Issue #13 point 5: ``folder list`` shows the ids ``import --folder`` takes; a
    folder of a kind the file does not hold is refused in one line, nothing imported."""
    run("user", "add", "mario", "--password-stdin", stdin="x\n")
    before = folders(run, "mario")
    assert before["Contacts"][1:] == ["Contacts (default)", "0"]
    assert before["Calendar"][1:] == ["Calendar (default)", "0"]
    assert before["Tasks"][1:] == ["Tasks (default)", "0"]
    contacts_id = before["Contacts"][0]
    r = run("import", "mario", os.path.join(DATA, "calendar.ics"), "--folder", contacts_id)
    assert r.returncode == 1
    assert r.stderr == (f"easync-admin: error: folder {contacts_id} (Contacts) is a "
                        f"Contacts folder and {os.path.join(DATA, 'calendar.ics')} holds "
                        "events and tasks: nothing imported\n")
    assert folders(run, "mario") == before
    r = run("import", "mario", os.path.join(DATA, "contacts.vcf"), "--folder", contacts_id)
    assert r.returncode == 0, r.stderr
    r = run("import", "mario", os.path.join(DATA, "calendar.ics"))
    assert r.returncode == 0, r.stderr
    after = folders(run, "mario")
    assert [after[k][2] for k in ("Contacts", "Calendar", "Tasks")] == ["5", "10", "2"]
    assert run("folder", "list", "nobody").stderr == \
        "easync-admin: error: no user named 'nobody'\n"


def test_devices(run: Admin, tmp_path: Any) -> None:
    run("user", "add", "mario", "--password-stdin", stdin="x\n")
    r = run("device", "list")
    assert r.returncode == 0
    assert r.stdout.split() == ["USER", "DEVICE", "TYPE", "FIRST", "SEEN", "LAST", "SEEN",
                                "LAST", "SYNC", "HOLDING", "NOW", "ACCESS", "EAS", "WIPE", "POLICY",
                                "USER", "AGENT"]
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
    # (POLICY "-": it never acknowledged a policy)
    assert rows[1].split()[-3:] == ["none", "-", "Apple-iPhone15C2/2104.252"]
    # never seen speaking EAS 16.1: no account-only wipe (MS-ASPROV 2.2.2.1): asked for
    # explicitly, it is refused and nothing is ordered ...
    r = run("device", "wipe", "mario", "ApplF17XYZ", "--account-only")
    assert r.returncode == 1 and "16.1" in r.stderr, r.stderr
    assert run("device", "list").stdout.splitlines()[1].split()[-3] == "none"
    # ... and the plain `device wipe NAME DEVICEID` of the command-line contract still
    # wipes it, saying that it is the whole device
    r = run("device", "wipe", "mario", "ApplF17XYZ")
    assert r.returncode == 0, r.stderr
    assert "whole device" in r.stdout and "16.1" in r.stdout, r.stdout
    assert run("device", "list").stdout.splitlines()[1].split()[-3] == "pending"
    r = run("device", "remove", "mario", "ApplF17XYZ")
    assert r.returncode == 0, r.stderr
    subprocess.run([sys.executable, "-c", script], check=True, cwd=str(tmp_path),
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    script16 = script.replace("user_agent=", "protocol_version='16.1', user_agent=")
    subprocess.run([sys.executable, "-c", script16], check=True, cwd=str(tmp_path),
                   env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)
    r = run("device", "wipe", "mario", "ApplF17XYZ", "--account-only")
    assert r.returncode == 0, r.stderr
    assert "next connection" in r.stdout
    assert run("device", "list").stdout.splitlines()[1].split()[-3] == "pending"
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


def test_helpers_speak_english_on_an_italian_machine(tmp_path: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The subprocess helpers of the English tests (``Admin`` here, easync_server's for
    ``RunningServer``, twistd and the other files) run easync-admin in English whatever
    the locale of the machine running the suite: easync-admin speaks its locale's
    language (issue 13 point 9, README "Languages"), these tests assert English text."""
    monkeypatch.setenv("LANG", "it_IT.UTF-8")
    monkeypatch.setenv("LC_MESSAGES", "it_IT.UTF-8")
    monkeypatch.setenv("LANGUAGE", "it")
    monkeypatch.delenv("LC_ALL", raising=False)
    run = Admin(tmp_path)
    r = run("user", "show", "nessuno")
    assert r.stderr == "easync-admin: error: no user named 'nessuno'\n"
    (tmp_path / "srv").mkdir()
    server = RunningServer(tmp_path / "srv")        # not started: its admin helper only
    r = server.admin("init")
    assert r.stdout == (f"created database {tmp_path / 'srv' / 'easync.sqlite'} "
                        f"(schema version {schema_version()})\n")


def test_config_file_gives_the_database_and_a_crm_restore_refused_when_it_is_down(
        tmp_path: Any) -> None:
    """``easync-admin --config FILE`` takes the server's database from the file (run
    elsewhere, without --db); ``deleted restore`` of an item kept by the CRM store,
    with the CRM unreachable: one line, exit 1, the kept row left restorable.  A bad
    config file: one line, exit 1."""
    import socket
    import sqlite3

    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "crm.key").write_text("adminKEY123\n")
    db = tmp_path / "server.sqlite"
    config = tmp_path / "easync.toml"
    config.write_text(f'db = "sqlite:///{db}"\nbackend = "crm"\n'
                      f'crm-url = "http://127.0.0.1:{port}/webservice.php"\n'
                      'crm-user = "admin"\n'
                      f'crm-access-key-file = "{tmp_path / "crm.key"}"\n'
                      'crm-timeout = 2\n', "utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = Admin(elsewhere, init=False)
    assert run("--config", str(config), "init", db=False).returncode == 0
    assert db.exists() and not (elsewhere / "easync.sqlite").exists()
    assert run("--config", str(config), "user", "add", "zoe", "--password-stdin",
               stdin="pw-zoe-1\n", db=False).returncode == 0
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO deleted_items (user_id, device_id, folder_id, cls, server_id,"
            " data, summary, backend, deleted_at) SELECT u.id, 'PHONE', f.id, 'Contacts',"
            " 'x:1', '{\"FirstName\": \"Zed\"}', 'Zed', 'crm', 1.0 FROM users u"
            " JOIN folders f ON f.user_id = u.id AND f.type = 9 WHERE u.name = 'zoe'")
    r = run("--config", str(config), "deleted", "restore", "zoe", "1", db=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "cannot answer now, nothing was restored" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT restored_at, restored_id FROM deleted_items"
                            ).fetchall() == [(None, None)]
    (tmp_path / "bad.toml").write_text('backend = "crm"\n', "utf-8")
    r = run("--config", str(tmp_path / "bad.toml"), "deleted", "list", "zoe", db=False)
    assert r.returncode == 1 and "crm-url" in r.stderr
