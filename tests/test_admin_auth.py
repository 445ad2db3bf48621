"""``easync-admin`` for who may sync (run as a program): 2FA per user and for everyone,
the ActiveSync password, the prompt on a terminal, the audit log; and the auth options in
the TOML config file."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from easync_server import _env
from test_admin import Admin

from easync import tap

AS_PW = "phone-secret-99"


@pytest.fixture
def run(tmp_path: Any) -> Admin:
    admin = Admin(tmp_path)
    r = admin("user", "add", "mario", "--email", "mario@example.it", "--password-stdin",
              "--activesync", stdin="login-secret-1\n")
    assert r.returncode == 0, r.stderr
    return admin


def show(run: Admin, name: str = "mario") -> dict[str, str]:
    r = run("user", "show", name)
    assert r.returncode == 0, r.stderr
    return {k.strip(): v.strip() for k, _, v in
            (line.partition(":") for line in r.stdout.splitlines())}


def test_2fa_without_activesync_password_says_eas_is_refused(run: Admin) -> None:
    r = run("user", "2fa", "mario", "email")
    assert r.returncode == 0, r.stderr
    assert "EAS refuses this user until an ActiveSync password is set" in r.stdout
    assert show(run)["two-factor"] == "email"
    assert "no ActiveSync password is set" in show(run)["EAS logins"]
    r = run("user", "list")
    assert r.stdout.splitlines()[1].split() == ["mario", "mario@example.it", "on", "email",
                                                "-", "-"]


def test_user_add_is_audited(run: Admin) -> None:
    """Issue #13 point 5: the fixture's ``user add mario --activesync`` wrote the rows
    a password change and ``user activesync on`` write; a user added without
    ActiveSync gets only the first."""
    run("user", "add", "anna", "--password-stdin", stdin="x\n")
    rows = [ln.split(None, 5)[3:] for ln in run("audit").stdout.splitlines()[1:]]
    assert rows == [["mario", "password", "login password set (user added)"],
                    ["mario", "activesync", "ActiveSync on"],
                    ["anna", "password", "login password set (user added)"]]
    r = run("user", "activesync", "anna", "on")
    assert r.returncode == 0
    assert run("audit").stdout.splitlines()[-1].split(None, 5)[3:] == [
        "anna", "activesync", "ActiveSync on"]


@pytest.mark.parametrize("off", ["off", "none"])
def test_2fa_off_is_spelled_off_and_none_is_an_alias(run: Admin, off: str) -> None:
    """Issue #13 point 5: "off", as the JSON API and the account page say it, in what
    easync-admin prints too; "none" (what it printed before) is accepted."""
    assert show(run)["two-factor"] == "off"
    assert run("user", "list").stdout.splitlines()[1].split()[3] == "off"
    assert run("user", "2fa", "mario", "email").returncode == 0
    r = run("user", "2fa", "mario", off)
    assert r.returncode == 0, r.stderr
    assert show(run)["two-factor"] == "off"
    assert "email|totp|off" in run("user", "2fa", "--help").stdout


def test_2fa_takes_the_activesync_password_from_stdin(run: Admin) -> None:
    r = run("user", "2fa", "mario", "email", "--as-password-stdin", stdin=AS_PW + "\n")
    assert r.returncode == 0, r.stderr
    assert "the ActiveSync password is set" in r.stdout
    assert show(run)["ActiveSync password"].startswith("set ")
    assert AS_PW not in r.stdout + r.stderr


@pytest.mark.parametrize(("stdin", "message"), [
    ("short\n", "at least 8 characters"),
    ("x" * 80 + "\n", "too long"),
    ("\n", "no ActiveSync password on standard input"),
])
def test_2fa_with_a_bad_activesync_password_changes_nothing(run: Admin, stdin: str,
                                                             message: str) -> None:
    r = run("user", "2fa", "mario", "email", "--as-password-stdin", stdin=stdin)
    assert r.returncode == 1 and message in r.stderr
    assert show(run)["two-factor"] == "off"
    assert show(run)["ActiveSync password"] == "not set"


def test_2fa_refusals(run: Admin) -> None:
    run("user", "add", "anna", "--password-stdin", stdin="x\n")
    r = run("user", "2fa", "anna", "email")
    assert r.returncode == 1 and "no e-mail address" in r.stderr
    r = run("user", "2fa", "nobody", "totp")
    assert r.returncode == 1 and "no user named 'nobody'" in r.stderr
    r = run("user", "2fa", "mario", "sms")
    assert r.returncode == 2
    # ActiveSync is off for anna: no ActiveSync password is asked for
    r = run("user", "2fa", "anna", "totp", "--as-password-stdin", stdin=AS_PW + "\n")
    assert r.returncode == 1 and "ActiveSync is off for anna" in r.stderr


def test_totp_prints_the_uri_and_a_qr_code(run: Admin) -> None:
    r = run("user", "2fa", "mario", "totp")
    assert r.returncode == 0, r.stderr
    m = re.search(r"otpauth://totp/easync:mario\?secret=([A-Z2-7]+)&issuer=easync", r.stdout)
    assert m
    assert "█" in r.stdout and m.group(1) in r.stdout
    # the secret is stored encrypted, with the key file made beside the database
    assert os.path.exists(os.path.join(run.cwd, "easync-secret.key"))
    import sqlite3

    with sqlite3.connect(run.db[len("sqlite:///"):]) as conn:
        extra = conn.execute("SELECT extra FROM users WHERE name='mario'").fetchone()[0]
    assert m.group(1) not in extra and "totp_secret" in extra
    assert m.group(1) not in run("audit").stdout


def test_as_password_set_generate_clear(run: Admin) -> None:
    r = run("user", "as-password", "mario")
    assert r.returncode == 2                        # one of the three is required
    r = run("user", "as-password", "mario", "--password-stdin", stdin=AS_PW + "\n")
    assert r.returncode == 0 and "EAS accepts only it" in r.stdout
    first = run("user", "as-password", "mario", "--generate").stdout.splitlines()[-1]
    second = run("user", "as-password", "mario", "--generate").stdout.splitlines()[-1]
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", first) and first != second
    r = run("user", "as-password", "mario", "--clear")
    assert "the login password is accepted" in r.stdout
    assert show(run)["ActiveSync password"] == "not set"
    audit = run("audit", "mario").stdout
    # (after the fixture's user add: test_user_add_is_audited)
    assert [ln.split()[5:] for ln in audit.splitlines()[3:]] == [
        ["ActiveSync", "password", "set"], ["ActiveSync", "password", "generated"],
        ["ActiveSync", "password", "generated"], ["ActiveSync", "password", "cleared"]]
    for secret in (AS_PW, first, second):
        assert secret not in audit


@pytest.mark.parametrize(("stdin", "message"), [
    ("\n", "no ActiveSync password"),
    ("1234567\n", "at least 8"),
])
def test_bad_as_password_from_stdin(run: Admin, stdin: str, message: str) -> None:
    r = run("user", "as-password", "mario", "--password-stdin", stdin=stdin)
    assert r.returncode == 1 and message in r.stderr
    assert show(run)["ActiveSync password"] == "not set"


def test_2fa_for_everyone(run: Admin) -> None:
    run("user", "add", "anna", "--password-stdin", stdin="x\n")
    r = run("user", "2fa-all", "on")
    assert r.returncode == 0, r.stderr
    assert "EAS refuses these users until they set an ActiveSync password: mario" in r.stdout
    lines = run("user", "list").stdout.splitlines()
    assert lines[2].split()[3] == "email(all)"
    assert lines[-1] == "two-factor authentication is on for everyone"
    assert "for everyone" in show(run)["EAS logins"]
    run("user", "2fa-all", "off")
    assert show(run)["EAS logins"] == "the login password is accepted"


def test_admin_flag_and_unlock(run: Admin) -> None:
    assert "now an administrator" in run("user", "admin", "mario", "on").stdout
    assert run("user", "list").stdout.splitlines()[1].split()[-1] == "yes"
    # not locked out: said so (exit 0: the user is not locked out, as asked), no audit
    r = run("user", "unlock", "mario")
    assert (r.returncode, r.stdout) == (0, "mario is not locked out: nothing to lift\n")
    # (after the two rows of the fixture's user add: test_user_add_is_audited)
    actions = [ln.split()[4] for ln in run("audit").stdout.splitlines()[3:]]
    assert actions == ["admin"]
    # locked out (as Throttle.failed leaves a user at the limit): lifted and audited
    import sqlite3
    import time

    with sqlite3.connect(run.db[len("sqlite:///"):]) as conn:
        conn.execute("INSERT INTO auth_throttle (scope, name, failures, window_start, "
                     "locked_until) VALUES ('user', 'mario', 10, ?, ?)",
                     (time.time(), time.time() + 600))
    r = run("user", "unlock", "mario")
    assert (r.returncode, r.stdout) == (0, "lockouts of mario lifted\n")
    actions = [ln.split()[4] for ln in run("audit").stdout.splitlines()[3:]]
    assert actions == ["admin", "unlock"]
    assert "not locked out" in run("user", "unlock", "mario").stdout


def test_2fa_prompts_for_the_activesync_password_on_a_terminal(run: Admin) -> None:
    out = _on_terminal(run, ["user", "2fa", "mario", "email"], [AS_PW, AS_PW])
    assert "ActiveSync password:" in out and "the ActiveSync password is set" in out
    assert AS_PW not in out                     # not echoed
    assert show(run)["ActiveSync password"].startswith("set ")


def test_2fa_prompt_left_empty_sets_it_later(run: Admin) -> None:
    out = _on_terminal(run, ["user", "2fa", "mario", "email"], [""])
    assert "EAS refuses this user until an ActiveSync password is set" in out
    assert show(run)["two-factor"] == "email"


def test_2fa_prompt_mismatch_changes_nothing(run: Admin) -> None:
    out = _on_terminal(run, ["user", "2fa", "mario", "email"], [AS_PW, AS_PW + "x"])
    assert "differ" in out
    assert show(run)["two-factor"] == "off"


def _on_terminal(run: Admin, args: list[str], answers: list[str]) -> str:
    """Run easync-admin with a pseudo-terminal as standard input and output."""
    master, slave = pty.openpty()
    env = dict(_env(), EASYNC_BCRYPT_ROUNDS="4")            # in English
    proc = subprocess.Popen([sys.executable, "-m", "easync.admin", "--db", run.db, *args],
                            stdin=slave, stdout=slave, stderr=slave, cwd=run.cwd, env=env,
                            start_new_session=True)
    os.close(slave)
    out = b""
    pending = list(answers)
    answered = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
                # answer each prompt once it is fully shown (getpass flushes input
                # typed before it turns echo off)
                prompts = out.count(b"password: ")
                if pending and prompts > answered and out.endswith(b"password: "):
                    os.write(master, pending.pop(0).encode() + b"\n")
                    answered += 1
            elif proc.poll() is not None:
                break
        proc.wait(30)
    finally:
        os.close(master)
    return out.decode("utf-8", "replace")


# ------------------------------------------------------------------ config file

def test_auth_options_from_the_toml_file(tmp_path: Path) -> None:
    pw = tmp_path / "ldap-pw"
    pw.write_text("service-secret\n")
    conf = tmp_path / "easync.toml"
    conf.write_text(f"""
auth = "ldap"
ldap-url = "ldap://127.0.0.1:3389"
ldap-base = "dc=example,dc=org"
ldap-search-filter = "(mail={{user}})"
ldap-service-dn = "cn=easync,dc=example,dc=org"
ldap-service-password-file = "{pw}"
ldap-starttls = "on"
ldap-group = "cn=activesync,dc=example,dc=org"
ldap-timeout = 2.5
smtp-host = "127.0.0.1"
smtp-port = 2525
smtp-from = "easync@example.org"
login-delay = 0
lockout-after = 3
lockout-time = 60
secret-key = "{tmp_path / 'key'}"
""")
    o = tap.Options()
    o.parseOptions(["--config", str(conf), "--lockout-after", "4"])
    assert o["auth"] == "ldap" and o["ldap-starttls"] is True
    assert o["ldap-timeout"] == 2.5 and o["smtp-port"] == 2525
    assert o["lockout-after"] == 4 and o["login-delay"] == 0.0     # command line wins
    from easync.auth import build_auth, ldap_config

    cfg = ldap_config(o.config.ldap)
    assert cfg.service_password == "service-secret" and cfg.search_filter == "(mail={user})"

    class Server:
        users = state = None

    setup = build_auth(o.config, Server(), None, None)
    assert setup.accounts.mailer.port == 2525
    assert setup.accounts.throttle.rules.user_limit == 4
    assert [s.name for s in setup.services] == ["ldap"]
    assert (tmp_path / "key").exists()
