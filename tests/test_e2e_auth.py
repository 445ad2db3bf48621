"""Acceptance, "who may sync": the rules of issue 4 through real EAS requests
(pyactivesync over TLS) against ``twistd easync``, once with local accounts and once with
LDAP accounts (a real slapd, tests/ldapserver.py), the settings changed with
``easync-admin`` as an administrator does.

Each rule is one test, run for both kinds of account:
ActiveSync off → 403; 2FA off and no ActiveSync password → the login password works;
an ActiveSync password set → only it works; 2FA on (for the user, for everyone) → 401
until an ActiveSync password is set, and the log says why; turning 2FA on takes the
ActiveSync password in the same step; failed logins lock the user out (429) and the
lockout is audited.  LDAP only: wrong password, unknown user, user outside the group,
injection characters, a directory that hangs or is down (503 + Retry-After, no 401, no
hang).  Last: no password, code or hash in the twistd log or the audit log.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import needs
import pytest

pyactivesync = needs.importable("pyactivesync")
import ldapserver
import requests
from easync_server import RunningServer
from pyactivesync import Client

AS_PASSWORD = "phone-only-secret-1"
LOCKOUT_AFTER = 5
THROTTLE = ["--login-delay", "0.05", "--lockout-after", str(LOCKOUT_AFTER)]


@dataclass
class Setup:
    kind: str
    server: RunningServer
    passwords: dict[str, str]            # login password of each user
    secrets: set[str] = field(default_factory=set)   # never to be seen in a log
    slapd: ldapserver.Slapd | None = None

    def user(self, name: str) -> str:
        """A user with ActiveSync on, whose local record exists; returns its name.  Each
        test makes the users it needs (pytest-xdist may run any test of this module
        without those before it)."""
        if self.server.admin("user", "show", name, check=False).returncode == 0:
            return name
        if self.kind == "local":
            self.server.add_user(name, self.passwords[name], email=f"{name}@example.org")
        else:
            # the first directory login makes the record; the group turns ActiveSync on
            with client(self, name, "first") as c:
                c.provision()
        return name

    def admin(self, *args: str, stdin: str | None = None,
              check: bool = True) -> str:
        res = self.server.admin(*args, stdin=stdin, check=check)
        return res.stdout + res.stderr


NAMES = ("lara", "nino", "pia", "remo", "sara", "otto")


@pytest.fixture(scope="module", params=["local", "ldap"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Setup]:
    kind = request.param
    workdir = tmp_path_factory.mktemp(f"auth-{kind}")
    slapd = None
    args = list(THROTTLE)
    if kind == "ldap":
        needs.require(ldapserver.missing())
        slapd = ldapserver.Slapd(workdir / "slapd").start()
        args += ["--auth", "ldap", "--ldap-url", slapd.url, "--ldap-timeout", "1",
                 "--ldap-bind-dn-template", f"uid={{user}},ou=people,{ldapserver.BASE}",
                 "--ldap-group", ldapserver.GROUP_DN]
        passwords = {uid: pw for uid, (pw, _mail, _m) in ldapserver.PEOPLE.items()}
    else:
        passwords = {name: f"{name}-login-pw" for name in NAMES}
    # slapd is stopped whatever happens to the server (a failed start or stop)
    try:
        server = RunningServer(workdir, args).start()
        try:
            s = Setup(kind, server, passwords,
                      secrets=set(passwords.values()) | {AS_PASSWORD}, slapd=slapd)
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("REQUESTS_CA_BUNDLE", str(workdir / "easync.pem"))
                yield s
        finally:
            server.stop()
    finally:
        if slapd is not None:
            slapd.stop()


def client(s: Setup, name: str, device: str, password: str | None = None) -> Client:
    pw = s.passwords.get(name, "x") if password is None else password
    return Client(s.server.host, name, pw, device_id=f"{name}{device}"[:32], timeout=30)


def syncs(s: Setup, name: str, device: str, password: str | None = None) -> bool:
    with client(s, name, device, password) as c:
        return "Contacts" in {f.name for f in c.list_folders()}


def status_of(s: Setup, name: str, device: str, password: str | None = None
              ) -> requests.Response:
    with client(s, name, device, password) as c, pytest.raises(requests.HTTPError) as e:
        c.provision()
    return e.value.response


def log_since(s: Setup, mark: int) -> str:
    return s.server.log_text()[mark:]


# ------------------------------------------------------------------ the rules

def test_activesync_off_gets_403(setup: Setup) -> None:
    if setup.kind == "local":
        setup.server.add_user("otto", setup.passwords["otto"], activesync=False)
    else:   # otto is outside the LDAP group: his password is right, ActiveSync is off
        assert status_of(setup, "otto", "a").status_code == 403
    assert status_of(setup, "otto", "b").status_code == 403
    name = setup.user("sara")
    assert syncs(setup, name, "a")
    setup.admin("user", "activesync", name, "off")
    assert status_of(setup, name, "b").status_code == 403
    setup.admin("user", "activesync", name, "on")
    assert syncs(setup, name, "c")


def test_without_2fa_the_login_password_works(setup: Setup) -> None:
    name = setup.user("lara")
    assert syncs(setup, name, "a")
    assert status_of(setup, name, "b", password="wrong-password").status_code == 401


def test_an_activesync_password_replaces_the_login_password(setup: Setup) -> None:
    name = setup.user("lara")
    out = setup.admin("user", "as-password", name, "--password-stdin",
                      stdin=AS_PASSWORD + "\n")
    assert "EAS accepts only it" in out
    mark = len(setup.server.log_text())
    assert status_of(setup, name, "c").status_code == 401          # the login password
    assert "only it is accepted" in log_since(setup, mark)
    assert syncs(setup, name, "PHONE", password=AS_PASSWORD)
    shown = setup.admin("user", "show", name)
    assert re.search(r"ActiveSync password:\s+set ", shown)
    assert re.search(rf"last used:\s+\S+ \S+ by {name}PHONE", shown)
    setup.admin("user", "as-password", name, "--clear")
    assert syncs(setup, name, "d")
    assert status_of(setup, name, "e", password=AS_PASSWORD).status_code == 401


def test_2fa_refuses_eas_until_an_activesync_password_is_set(setup: Setup) -> None:
    name = setup.user("nino")
    assert syncs(setup, name, "a")
    out = setup.admin("user", "2fa", name, "email")
    assert "EAS refuses this user until an ActiveSync password is set" in out
    mark = len(setup.server.log_text())
    response = status_of(setup, name, "b")
    assert response.status_code == 401
    assert "two-factor authentication is on (for this user) and no ActiveSync password " \
           "is set" in log_since(setup, mark)
    setup.admin("user", "as-password", name, "--password-stdin", stdin=AS_PASSWORD + "\n")
    assert syncs(setup, name, "c", password=AS_PASSWORD)
    assert status_of(setup, name, "d").status_code == 401


def test_2fa_for_everyone(setup: Setup) -> None:
    name = setup.user("pia")
    other = setup.user("nino")              # with an ActiveSync password: unaffected
    setup.admin("user", "as-password", other, "--password-stdin", stdin=AS_PASSWORD + "\n")
    assert syncs(setup, name, "a")
    out = setup.admin("user", "2fa-all", "on")
    assert name in out
    try:
        time.sleep(1.2)      # a server process trusts its copy of the setting for 1 s
        mark = len(setup.server.log_text())
        assert status_of(setup, name, "b").status_code == 401
        assert "two-factor authentication is on (for everyone)" in log_since(setup, mark)
        assert syncs(setup, "nino", "e", password=AS_PASSWORD)   # has one: unaffected
    finally:
        setup.admin("user", "2fa-all", "off")
    time.sleep(1.2)
    assert syncs(setup, name, "c")


def test_turning_2fa_on_takes_the_activesync_password_in_the_same_step(setup: Setup) -> None:
    name = setup.user("remo")
    out = setup.admin("user", "2fa", name, "totp", "--as-password-stdin",
                      stdin=AS_PASSWORD + "\n")
    assert "the ActiveSync password is set" in out and "otpauth://totp/" in out
    assert syncs(setup, name, "a", password=AS_PASSWORD)
    assert status_of(setup, name, "b").status_code == 401
    # Bad input changes nothing: an ActiveSync password too short.
    out = setup.admin("user", "as-password", name, "--password-stdin", stdin="short\n",
                      check=False)
    assert "at least 8 characters" in out
    assert syncs(setup, name, "c", password=AS_PASSWORD)


def test_failed_logins_lock_the_user_out(setup: Setup) -> None:
    name = setup.user("sara")
    for i in range(LOCKOUT_AFTER):
        assert status_of(setup, name, f"x{i}", password=f"guess-{i}").status_code == 401
    response = status_of(setup, name, "y")          # the right password (even remembered): too late
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    audit = setup.admin("audit", name)
    assert "lockout" in audit and f"{LOCKOUT_AFTER} failed logins" in audit
    setup.admin("user", "unlock", name)
    assert syncs(setup, name, "z")


# ------------------------------------------------------------------ LDAP only

#: the module's ``setup`` with LDAP accounts only (the same instance as the other tests')
ldap_only = pytest.mark.parametrize("setup", ["ldap"], indirect=True)


@ldap_only
def test_ldap_wrong_password_unknown_user_and_injection(setup: Setup) -> None:
    assert status_of(setup, "pia", "w", password="not-pias").status_code == 401
    assert status_of(setup, "nobody", "u", password="whatever-1").status_code == 401
    mark = len(setup.server.log_text())
    for bad in ("*", "pia)(uid=*", "pia*"):
        assert status_of(setup, bad, "i", password="pia-login-pw").status_code == 401
    assert "characters not allowed in directory user names" in log_since(setup, mark)
    users = setup.admin("user", "list")
    assert "*" not in users and "nobody" not in users


@ldap_only
def test_ldap_directory_hanging_gives_503_not_401(setup: Setup) -> None:
    assert setup.slapd is not None
    setup.slapd.pause()
    try:
        t0 = time.monotonic()
        # credentials not remembered: only the directory can tell, and it cannot answer
        response = status_of(setup, "pia", "h", password="not-remembered-1")
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) > 0
        assert time.monotonic() - t0 < 15
    finally:
        setup.slapd.resume()


@ldap_only
def test_ldap_directory_down_gives_503_not_401(setup: Setup, tmp_path: Path) -> None:
    dead = ldapserver.free_port()
    server = RunningServer(tmp_path, [
        "--auth", "ldap", "--ldap-url", f"ldap://127.0.0.1:{dead}",
        "--ldap-bind-dn-template", f"uid={{user}},ou=people,{ldapserver.BASE}"]).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "easync.pem"))
            t0 = time.monotonic()
            c = Client(server.host, "lara", "lara-login-pw", device_id="down1", timeout=30)
            with c, pytest.raises(requests.HTTPError) as e:
                c.provision()
        assert e.value.response.status_code == 503
        assert e.value.response.headers.get("Retry-After")
        assert time.monotonic() - t0 < 10
        assert "directory unavailable" in server.log_text()
    finally:
        server.stop()


# ------------------------------------------------------------------ last: the logs

def test_no_password_code_or_hash_in_any_log(setup: Setup) -> None:
    # what this test looks for, made here too (it may run without the tests before it):
    # an ActiveSync password (a hash; its audit line) and a lockout (its audit line)
    name = setup.user("remo")
    setup.admin("user", "as-password", name, "--password-stdin", stdin=AS_PASSWORD + "\n")
    for i in range(LOCKOUT_AFTER + 1):
        status_of(setup, name, f"L{i}", password=f"wrong-guess-{i}")
    setup.admin("user", "unlock", name)
    db = setup.server.db[len("sqlite:///"):]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT password_hash, extra FROM users").fetchall()
        audit = "\n".join(" ".join(map(str, r)) for r in conn.execute(
            "SELECT actor, user_name, action, detail, address FROM audit_log").fetchall())
    hashes = {h for h, _ in rows if h}
    hashes |= set(re.findall(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}", " ".join(x for _, x in rows)))
    assert hashes, "the test should have made some hashes"
    secrets = re.findall(r"secret=([A-Z2-7]+)", setup.admin("audit"))   # none expected
    text = setup.server.log_text()
    assert "lockout" in audit and "ActiveSync password set" in audit
    for secret in setup.secrets | hashes | set(secrets):
        assert secret not in text, "a secret in the twistd log"
        assert secret not in audit, "a secret in the audit log"
    assert not re.search(r"\b\d{6}\b", audit)        # nor a one-time code
