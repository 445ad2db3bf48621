"""The account service and the EAS policy checker over a real SQLite database, with a real
SMTP listener for e-mail codes and the real reactor (bcrypt in its thread pool).

Time moves through ``ShiftedClock`` (the service's clock = the reactor's time plus an
offset), so expiry and lockouts are tested without waiting.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pyotp
import pytest
import pytest_twisted
from smtp_sink import SmtpSink
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor
from twisted.logger import globalLogPublisher

from backends.sql.authstore import SqlAuthStore
from backends.sql.store import SqlStore
from easync.auth import accounts as acc
from easync.auth.aspassword import ClientCredentials, LoginLockedOut, PolicyChecker
from easync.auth.keys import SecretBox
from easync.auth.local import LocalChecker, hash_secret
from easync.auth.mail import SmtpMailer
from easync.auth.throttle import ThrottleRules
from easync.interfaces import IAuthStore

LOGIN = "login-password-1"
AS_PW = "activesync-pw-1"


class ShiftedClock:
    """The reactor, with ``seconds()`` moved by ``offset``."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.offset = 0.0

    def seconds(self) -> float:
        return float(self.reactor.seconds()) + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.clock = ShiftedClock(reactor)
        self.store = SqlStore(reactor, f"sqlite:///{tmp / 'accounts.sqlite'}")
        self.auth = SqlAuthStore(self.store)
        self.sink = SmtpSink(reactor)
        self.events: list[dict[str, Any]] = []

    async def start(self, rules: ThrottleRules | None = None) -> Env:
        await self.store.open()
        self.sink.listen()
        self.mailer = SmtpMailer(reactor, "127.0.0.1", self.sink.port_number,
                                 sender="easync@test.example", timeout=10)
        self.primary = LocalChecker(self.store, self.clock)
        self.accounts = acc.Accounts(
            self.store, self.store, self.auth, self.clock, primary=self.primary,
            mailer=self.mailer, box=SecretBox.ephemeral(),
            rules=rules or ThrottleRules(delay=0.0, user_limit=4, addr_limit=20, code_limit=5))
        self.checker = PolicyChecker(self.primary, self.accounts, self.clock)
        globalLogPublisher.addObserver(self.events.append)
        return self

    async def stop(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)
        await self.sink.stop()
        await self.store.close()

    async def user(self, name: str, email: str | None = None, activesync: bool = True
                   ) -> None:
        await self.store.add_user(name, hash_secret(LOGIN), email, activesync)

    async def eas(self, name: str, password: str, address: str = "10.0.0.1") -> str:
        return str(await self.checker.requestAvatarId(
            ClientCredentials(name, password, address)))

    async def refused(self, name: str, password: str, address: str = "10.0.0.1") -> str:
        with pytest.raises(UnauthorizedLogin) as e:
            await self.eas(name, password, address)
        return str(e.value)

    async def extra(self, name: str) -> dict[str, Any]:
        user = await self.store.get_user(name)
        assert user is not None
        return dict(user.extra)

    def log_text(self) -> str:
        from twisted.logger import formatEvent

        return "\n".join(formatEvent(e) for e in self.events)


@pytest.fixture(autouse=True)
def _fast_bcrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EASYNC_BCRYPT_ROUNDS", "4")


@pytest_twisted.async_yield_fixture()
async def env(tmp_path: Path) -> Any:
    e = await Env(tmp_path).start()
    yield e
    await e.stop()


def test_sql_auth_store_provides_the_interface(tmp_path: Path) -> None:
    from zope.interface.verify import verifyObject

    assert verifyObject(IAuthStore, SqlAuthStore(SqlStore(reactor, "sqlite:///x")))


# ----------------------------------------------------------------- the EAS rules

@pytest_twisted.ensureDeferred
async def test_rules_login_password_then_activesync_password_only(env: Env) -> None:
    await env.user("anna")
    # 2FA off and no ActiveSync password: the login password works.
    assert await env.eas("anna", LOGIN) == "anna"
    assert await env.eas("ANNA@example.org", LOGIN) == "anna"
    # An ActiveSync password set: only it works, even though the login password was
    # just accepted (and remembered).
    await env.accounts.set_as_password("anna", AS_PW, AS_PW)
    assert "only it is accepted" in await env.refused("anna", LOGIN)
    assert await env.eas("anna", AS_PW) == "anna"
    # Cleared: the login password again, the old ActiveSync password no longer.
    await env.accounts.clear_as_password("anna")
    await env.refused("anna", AS_PW)
    assert await env.eas("anna", LOGIN) == "anna"


@pytest_twisted.ensureDeferred
async def test_rules_2fa_makes_the_activesync_password_mandatory(env: Env) -> None:
    await env.user("bice", email="bice@example.org")
    assert await env.eas("bice", LOGIN) == "bice"          # now remembered
    result = await env.accounts.set_two_factor("bice", "email")
    assert result.eas_refused and "until an ActiveSync password is set" in result.message
    why = await env.refused("bice", LOGIN)
    assert "two-factor authentication is on" in why and "no ActiveSync password" in why
    generated = await env.accounts.generate_as_password("bice")
    assert await env.eas("bice", generated) == "bice"
    await env.refused("bice", LOGIN)


@pytest_twisted.ensureDeferred
async def test_rules_2fa_for_everyone(env: Env) -> None:
    await env.user("carlo")
    await env.user("dora")
    await env.accounts.set_as_password("dora", AS_PW, AS_PW)
    assert await env.eas("carlo", LOGIN) == "carlo"
    refused = await env.accounts.set_two_factor_all(True)
    assert refused == ["carlo"]
    env.accounts._global = None     # another process's copy: read again
    assert "for everyone" in await env.refused("carlo", LOGIN)
    assert await env.eas("dora", AS_PW) == "dora"
    status = await env.accounts.status("carlo")
    assert status.two_factor == "none" and status.two_factor_effective == "email"
    assert status.eas.kind == "refused"
    await env.accounts.set_two_factor_all(False)
    assert await env.eas("carlo", LOGIN) == "carlo"


@pytest_twisted.ensureDeferred
async def test_turning_2fa_on_sets_the_activesync_password_in_the_same_step(env: Env) -> None:
    await env.user("ezio", email="ezio@example.org")
    # A bad ActiveSync password: refused, and nothing changed (2FA still off).
    with pytest.raises(acc.Mismatch):
        await env.accounts.set_two_factor("ezio", "email", as_password=AS_PW,
                                          as_confirm=AS_PW + "x")
    assert (await env.accounts.status("ezio")).two_factor == "none"
    assert await env.eas("ezio", LOGIN) == "ezio"
    result = await env.accounts.set_two_factor("ezio", "email", as_password=AS_PW,
                                               as_confirm=AS_PW)
    assert result.as_password_set and not result.eas_refused
    assert await env.eas("ezio", AS_PW) == "ezio"
    await env.refused("ezio", LOGIN)
    # A user without ActiveSync is not asked for one.
    await env.user("fede", email="fede@example.org", activesync=False)
    result = await env.accounts.set_two_factor("fede", "email")
    assert not result.eas_refused and not result.as_password_set


@pytest_twisted.ensureDeferred
async def test_last_use_recorded_at_most_once_a_minute(env: Env) -> None:
    await env.user("gino")
    await env.accounts.set_as_password("gino", AS_PW, AS_PW)
    await env.eas("gino", AS_PW)
    user = env.checker.recent_user("gino")
    assert user is not None
    writes = []
    real = env.accounts.note_as_password_used

    async def counting(name: str, device: str, when: float) -> None:
        writes.append((name, device))
        await real(name, device, when)

    env.accounts.note_as_password_used = counting  # type: ignore[method-assign]
    for _ in range(5):
        env.checker.note_device(user, "PHONE1")
    env.checker.note_device(user, "TABLET2")
    assert writes == [("gino", "PHONE1"), ("gino", "TABLET2")]
    env.clock.offset += 61
    env.checker.note_device(user, "PHONE1")
    assert len(writes) == 3
    await _settle()
    status = (await env.accounts.status("gino")).as_password
    assert status.is_set and status.last_used_device == "PHONE1"
    assert status.last_used_at is not None and status.set_at is not None


async def _settle() -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.2, lambda: None)


# ----------------------------------------------------------------- ActiveSync password input

@pytest.mark.parametrize(("new", "confirm", "error", "words"), [
    ("", "", acc.PasswordEmpty, "empty"),
    ("short", "short", acc.PasswordTooShort, "at least 8"),
    ("x" * 73, "x" * 73, acc.PasswordTooLong, "too long"),
    ("è" * 37, "è" * 37, acc.PasswordTooLong, "72 bytes"),
    ("long-enough-1", "long-enough-2", acc.Mismatch, "differ"),
    ("tab\tinside-pw", "tab\tinside-pw", acc.InvalidValue, "control"),
])
@pytest_twisted.ensureDeferred
async def test_bad_activesync_passwords_change_nothing(env: Env, new: str, confirm: str,
                                                       error: type, words: str) -> None:
    await env.user("ines")
    await env.accounts.set_as_password("ines", AS_PW, AS_PW)
    before = await env.extra("ines")
    with pytest.raises(error) as e:
        await env.accounts.set_as_password("ines", new, confirm)
    assert words in str(e.value)
    assert new not in str(e.value) or new == ""
    assert await env.extra("ines") == before
    assert await env.eas("ines", AS_PW) == "ines"


@pytest_twisted.ensureDeferred
async def test_generated_password_is_shown_once_and_only_hashed(env: Env) -> None:
    await env.user("leo")
    password = await env.accounts.generate_as_password("leo")
    assert len(password) == 19 and password.count("-") == 3
    extra = await env.extra("leo")
    assert password not in repr(extra) and extra["as_hash"].startswith("$2")
    status = await env.accounts.as_password_status("leo")
    assert status.is_set and password not in repr(status)


# ----------------------------------------------------------------- e-mail codes

@pytest_twisted.ensureDeferred
async def test_email_code_login_wrong_expired_replayed(env: Env) -> None:
    await env.user("mara", email="mara@example.org")
    await env.accounts.set_two_factor("mara", "email")
    step = await env.accounts.begin_login("mara", LOGIN, address="10.1.1.1")
    assert step.code_method == "email" and step.sent_to == "m***@example.org"
    mail = await env.sink.wait_for("mara@example.org")
    code = mail.code()
    assert code not in mail.subject
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    with pytest.raises(acc.WrongCode) as e:
        await env.accounts.verify_code("mara", wrong)
    assert "4 tries left" in str(e.value)
    with pytest.raises(acc.WrongCode):
        await env.accounts.verify_code("mara", "12ab56")
    await env.accounts.verify_code("mara", code)
    with pytest.raises(acc.ReplayedCode):
        await env.accounts.verify_code("mara", code)
    # A new code, 10 minutes later: expired.
    env.clock.offset += 31
    await env.accounts.send_code("mara")
    code2 = (await env.sink.wait_for("mara@example.org", after=1)).code()
    env.clock.offset += 601
    with pytest.raises(acc.ExpiredCode) as e:
        await env.accounts.verify_code("mara", code2)
    assert "10 minutes" in str(e.value)
    # Nothing in the log or the audit log shows a code.
    text = env.log_text() + repr(await env.accounts.audit_log())
    assert code not in text and code2 not in text


@pytest_twisted.ensureDeferred
async def test_email_code_tries_run_out_and_are_audited(env: Env) -> None:
    await env.user("nora", email="nora@example.org")
    await env.accounts.set_two_factor("nora", "email")
    await env.accounts.send_code("nora")
    code = (await env.sink.wait_for("nora@example.org")).code()
    with pytest.raises(acc.TooSoon):
        await env.accounts.send_code("nora")
    wrong = f"{(int(code) + 7) % 1000000:06d}"
    for _ in range(4):
        with pytest.raises(acc.WrongCode):
            await env.accounts.verify_code("nora", wrong)
    with pytest.raises(acc.TooManyAttempts):
        await env.accounts.verify_code("nora", wrong)
    # The right code no longer helps: spent (and the user is locked out of codes).
    with pytest.raises(acc.TooManyAttempts):
        await env.accounts.verify_code("nora", code)
    actions = [(e.action, e.detail) for e in await env.accounts.audit_log("nora")]
    assert any(a == "code-lockout" for a, _ in actions)
    assert any(a == "lockout" and "one-time codes" in d for a, d in actions)
    assert await env.accounts.unlock("nora") is True
    assert [e.action for e in await env.accounts.audit_log("nora")].count("unlock") == 1
    # issue #13 point 5: unlocking again lifts nothing and says so, without an audit row
    assert await env.accounts.unlock("nora") is False
    assert [e.action for e in await env.accounts.audit_log("nora")].count("unlock") == 1
    env.clock.offset += 31
    await env.accounts.send_code("nora")
    code = (await env.sink.wait_for("nora@example.org", after=1)).code()
    await env.accounts.verify_code("nora", code)


@pytest_twisted.ensureDeferred
async def test_relay_down_is_a_clear_error_without_the_code(env: Env, tmp_path: Path) -> None:
    await env.user("olga", email="olga@example.org")
    await env.accounts.set_two_factor("olga", "email")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env.accounts.mailer = SmtpMailer(reactor, "127.0.0.1", dead, sender="e@test.example",
                                     timeout=5)
    with pytest.raises(acc.DeliveryFailed) as e:
        await env.accounts.send_code("olga")
    assert f"127.0.0.1:{dead}" in str(e.value) and "not sent" in str(e.value)
    assert await env.auth.get_email_code((await env.store.get_user("olga")).id) is None
    assert not re.search(r"\b\d{6}\b", env.log_text())     # no code in any log line
    with pytest.raises(acc.NoCodePending):
        await env.accounts.verify_code("olga", "123456")


@pytest_twisted.ensureDeferred
async def test_code_needs_an_email_address(env: Env) -> None:
    await env.user("pino")
    with pytest.raises(acc.NoEmail):
        await env.accounts.set_two_factor("pino", "email")
    await env.accounts.set_two_factor_all(True)
    with pytest.raises(acc.NoEmail):
        await env.accounts.send_code("pino")


# ----------------------------------------------------------------- TOTP

@pytest_twisted.ensureDeferred
async def test_totp_window_and_replay(env: Env) -> None:
    await env.user("rita")
    result = await env.accounts.set_two_factor("rita", "totp", as_password=AS_PW)
    e = result.enrolment
    assert e is not None and e.uri.startswith("otpauth://totp/easync:rita?secret=")
    assert e.qr_svg.lstrip().startswith("<svg") and e.qr_png_data_uri.startswith(
        "data:image/png;base64,")
    assert e.secret not in repr(await env.extra("rita"))      # stored encrypted
    totp = pyotp.TOTP(e.secret)
    now = env.clock.seconds()
    previous = totp.at(now - 30)
    await env.accounts.verify_code("rita", previous)           # one step of skew: fine
    current = totp.at(now)
    await env.accounts.verify_code("rita", current)
    with pytest.raises(acc.ReplayedCode):
        await env.accounts.verify_code("rita", current)
    with pytest.raises(acc.ReplayedCode):                      # older than the last
        await env.accounts.verify_code("rita", previous)
    with pytest.raises(acc.WrongCode):
        await env.accounts.verify_code("rita", totp.at(now + 120))
    step = await env.accounts.begin_login("rita", LOGIN)
    assert step.code_method == "totp" and step.sent_to is None
    text = env.log_text() + repr(await env.accounts.audit_log())
    assert e.secret not in text and current not in text


@pytest_twisted.ensureDeferred
async def test_totp_enrolment_needs_a_code(env: Env) -> None:
    await env.user("sofia")
    enrol = await env.accounts.start_totp_enrolment("sofia", actor="sofia")
    assert (await env.accounts.status("sofia")).two_factor == "none"
    with pytest.raises(acc.WrongCode):
        await env.accounts.confirm_totp_enrolment("sofia", "000000", actor="sofia")
    assert (await env.accounts.status("sofia")).two_factor == "none"
    code = pyotp.TOTP(enrol.secret).at(env.clock.seconds())
    await env.accounts.confirm_totp_enrolment("sofia", code, actor="sofia")
    status = await env.accounts.status("sofia")
    assert status.two_factor == "totp" and status.totp_enrolled
    with pytest.raises(acc.NotEnrolled):
        await env.accounts.confirm_totp_enrolment("sofia", code, actor="sofia")


# ----------------------------------------------------------------- brute force

@pytest_twisted.ensureDeferred
async def test_eas_lockout_per_user_and_audit(env: Env) -> None:
    await env.user("tina")
    for i in range(4):
        await env.refused("tina", f"guess-{i}", address="10.9.9.9")
    with pytest.raises(LoginLockedOut) as e:
        await env.eas("tina", LOGIN, address="10.9.9.8")     # the right one, elsewhere
    assert e.value.retry_after > 0
    with pytest.raises(acc.AccountLockedOut):
        await env.accounts.verify_login("tina", LOGIN)
    audit = await env.accounts.audit_log("tina")
    assert any(a.action == "lockout" and "4 failed logins" in a.detail for a in audit)
    env.clock.offset += 901
    assert await env.eas("tina", LOGIN) == "tina"
    assert "guess-" not in env.log_text() + repr(audit)


@pytest_twisted.ensureDeferred
async def test_lockout_per_address(env: Env) -> None:
    for name in ("ugo", "vera", "walt", "xena", "yuri", "zeno"):
        await env.user(name)
    for i in range(20):
        await env.refused(("ugo", "vera", "walt", "xena", "yuri")[i % 5], "nope",
                          address="192.0.2.7")
    with pytest.raises(LoginLockedOut):
        await env.eas("zeno", LOGIN, address="192.0.2.7")
    assert await env.eas("zeno", LOGIN, address="192.0.2.8") == "zeno"


@pytest_twisted.ensureDeferred
async def test_refusals_wait_longer_each_time(tmp_path: Path) -> None:
    e = await Env(tmp_path).start(ThrottleRules(delay=0.2, max_delay=0.4, user_limit=10))
    try:
        await e.user("bruno")
        waits = []
        for _ in range(3):
            t0 = reactor.seconds()
            await e.refused("bruno", "wrong-password")
            waits.append(reactor.seconds() - t0)
        assert waits[0] >= 0.2 and waits[1] >= 0.4 and waits[2] >= 0.4
        assert waits[2] < 2
    finally:
        await e.stop()


@pytest_twisted.ensureDeferred
async def test_verify_login(env: Env) -> None:
    await env.user("alba")
    assert await env.accounts.verify_login("ALBA", LOGIN) == "alba"
    with pytest.raises(acc.BadPassword):
        await env.accounts.verify_login("alba", "wrong")
    with pytest.raises(acc.BadPassword):
        await env.accounts.verify_login("nobody", "wrong")
    with pytest.raises(acc.BadPassword):
        await env.accounts.verify_login("alba", "")


# ----------------------------------------------------------------- permissions, devices

@pytest_twisted.ensureDeferred
async def test_permissions(env: Env) -> None:
    await env.user("capo", email="capo@example.org")
    await env.user("dino", email="dino@example.org")
    await env.accounts.set_admin("capo", True)
    with pytest.raises(acc.Forbidden):
        await env.accounts.set_as_password("capo", AS_PW, AS_PW, actor="dino")
    with pytest.raises(acc.Forbidden):
        await env.accounts.set_activesync("dino", False, actor="dino")
    with pytest.raises(acc.Forbidden):
        await env.accounts.set_two_factor_all(True, actor="dino")
    await env.accounts.set_two_factor("dino", "email", as_password=AS_PW, actor="dino")
    with pytest.raises(acc.Forbidden):
        await env.accounts.set_two_factor("dino", "off", actor="dino")
    await env.accounts.set_two_factor("dino", "off", actor="capo")
    assert [s.name for s in await env.accounts.list_users(actor="capo")] == ["capo", "dino"]
    with pytest.raises(acc.Forbidden):
        await env.accounts.list_users(actor="dino")
    entries = await env.accounts.audit_log("dino")
    assert {e.actor for e in entries} == {"dino", "capo"}


@pytest_twisted.ensureDeferred
async def test_devices_wipe_and_remove(env: Env) -> None:
    await env.user("elia")
    user = await env.store.get_user("elia")
    await env.store.save_device(user, "PHONE1", device_type="iPhone", last_sync=1000.0)
    [dev] = await env.accounts.list_devices("elia", actor="elia")
    assert dev.device_id == "PHONE1" and dev.last_sync == 1000.0 and dev.wipe == "none"
    await env.accounts.wipe_device("elia", "PHONE1", actor="elia")
    assert (await env.store.get_device(user, "PHONE1"))["wipe"] == "pending"
    with pytest.raises(acc.NotFound):
        await env.accounts.remove_device("elia", "NOPE")
    await env.accounts.remove_device("elia", "PHONE1")
    assert await env.accounts.list_devices("elia") == []
    actions = [e.action for e in await env.accounts.audit_log("elia")]
    assert actions[:2] == ["device-remove", "device-wipe"]
