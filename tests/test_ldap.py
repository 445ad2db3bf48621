"""The LDAP checker against a real OpenLDAP ``slapd`` (tests/ldapserver.py): direct bind
and search+bind, StartTLS and LDAPS, the group that grants ActiveSync, a directory that
is down or hangs (``Unavailable``, never a wrong-password answer, never a hang), and
user names with LDAP syntax characters (refused before the directory sees them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import ldapserver
import needs
import pytest
import pytest_twisted
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import reactor

from backends.sql.store import SqlStore
from easync.auth.ldap import BadUserName, LdapChecker, LdapConfig, LdapService, check_name
from easync.errors import Unavailable

TEMPLATE = f"uid={{user}},ou=people,{ldapserver.BASE}"

pytestmark = needs.mark(ldapserver.missing())


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = ldapserver.Slapd(tmp_path_factory.mktemp("slapd")).start()
    yield server
    server.stop()


class Env:
    def __init__(self, tmp: Path) -> None:
        self.store = SqlStore(reactor, f"sqlite:///{tmp / 'ldap.sqlite'}")
        self.service = LdapService(max_threads=4)
        self.audits: list[tuple[Any, ...]] = []

    def checker(self, **kw: Any) -> LdapChecker:
        async def audit(*args: Any) -> None:
            self.audits.append(args)

        return LdapChecker(LdapConfig(**kw), self.store, reactor, service=self.service,
                           audit=audit)


@pytest_twisted.async_yield_fixture()
async def env(tmp_path: Path) -> Any:
    e = Env(tmp_path)
    await e.store.open()
    e.service.startService()
    yield e
    e.service.stopService()
    await e.store.close()


async def login(checker: LdapChecker, name: str, password: str) -> str:
    return str(await checker.requestAvatarId(UsernamePassword(name, password)))


@pytest_twisted.ensureDeferred
async def test_bind_makes_a_local_record_and_the_group_grants_activesync(
        env: Env, slapd: ldapserver.Slapd) -> None:
    checker = env.checker(url=slapd.url, bind_dn_template=TEMPLATE, group=ldapserver.GROUP_DN)
    assert await login(checker, "lara", "lara-login-pw") == "lara"
    user = await env.store.get_user("lara")
    assert user is not None and user.activesync and user.password_hash is None
    assert user.email == "lara@example.org" and user.extra["origin"] == "ldap"
    assert checker.recent_user("lara") is not None
    # outside the group: the password is right, ActiveSync stays off (HTTP 403)
    assert await login(checker, "otto", "otto-login-pw") == "otto"
    otto = await env.store.get_user("otto")
    assert otto is not None and not otto.activesync
    assert [a[2] for a in env.audits] == ["ldap-user", "ldap-user"]


@pytest_twisted.ensureDeferred
async def test_wrong_password_and_unknown_user(env: Env, slapd: ldapserver.Slapd) -> None:
    checker = env.checker(url=slapd.url, bind_dn_template=TEMPLATE)
    with pytest.raises(UnauthorizedLogin):
        await login(checker, "lara", "not-her-password")
    with pytest.raises(UnauthorizedLogin):
        await login(checker, "nobody", "whatever-pw")
    with pytest.raises(UnauthorizedLogin):
        await login(checker, "lara", "")
    assert await env.store.get_user("nobody") is None


@pytest_twisted.ensureDeferred
async def test_search_with_service_account(env: Env, slapd: ldapserver.Slapd) -> None:
    checker = env.checker(url=slapd.url, base=ldapserver.BASE,
                          search_filter="(|(uid={user})(mail={user}))",
                          service_dn=ldapserver.SERVICE_DN,
                          service_password=ldapserver.SERVICE_PW, group=ldapserver.GROUP_DN)
    # the e-mail address finds the entry; the local name is its uid
    assert await login(checker, "nino@example.org", "nino-login-pw") == "nino"
    assert await login(checker, "nino", "nino-login-pw") == "nino"
    with pytest.raises(UnauthorizedLogin):
        await login(checker, "nino", "wrong")
    with pytest.raises(UnauthorizedLogin):
        await login(checker, "ghost@example.org", "wrong")
    bad = env.checker(url=slapd.url, base=ldapserver.BASE, service_dn=ldapserver.SERVICE_DN,
                      service_password="not-the-service-password")
    with pytest.raises(Unavailable, match="service account"):
        await login(bad, "nino", "nino-login-pw")


@pytest_twisted.ensureDeferred
async def test_starttls_and_ldaps(env: Env, slapd: ldapserver.Slapd) -> None:
    starttls = env.checker(url=slapd.url, bind_dn_template=TEMPLATE, starttls=True,
                           ca_file=str(slapd.cert))
    assert await login(starttls, "pia", "pia-login-pw") == "pia"
    ldaps = env.checker(url=slapd.ldaps_url, bind_dn_template=TEMPLATE,
                        ca_file=str(slapd.cert))
    assert await login(ldaps, "pia", "pia-login-pw") == "pia"
    with pytest.raises(UnauthorizedLogin):
        await login(ldaps, "pia", "wrong")
    untrusted = env.checker(url=slapd.ldaps_url, bind_dn_template=TEMPLATE)
    with pytest.raises(Unavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await login(untrusted, "pia", "pia-login-pw")


@pytest.mark.parametrize("name", [
    "*", "lara*", "lara)(uid=*", "*)(|(uid=*", "lara,ou=people", "uid=lara", "la ra",
    "DOM\\lara*", "lara\x00", "(lara)", "lara+cn=x", "lara;x", "<lara>", '"lara"', "#lara",
])
@pytest_twisted.ensureDeferred
async def test_injection_characters_refused(env: Env, slapd: ldapserver.Slapd,
                                            name: str) -> None:
    checker = env.checker(url=slapd.url, base=ldapserver.BASE, search_filter="(uid={user})",
                          service_dn=ldapserver.SERVICE_DN,
                          service_password=ldapserver.SERVICE_PW)
    with pytest.raises(BadUserName) as e:
        await login(checker, name, "lara-login-pw")
    assert "not allowed" in str(e.value) or "refused" in str(e.value)
    assert (await env.store.list_users()) == []


def test_check_name_message() -> None:
    assert check_name("lara.rossi@example.org") == "lara.rossi@example.org"
    with pytest.raises(BadUserName) as e:
        check_name("a*b(c)")
    assert "* ( )" in str(e.value) or all(c in str(e.value) for c in "*()")


@pytest_twisted.ensureDeferred
async def test_directory_down_is_unavailable_at_once(env: Env, tmp_path: Path) -> None:
    down = ldapserver.Slapd(tmp_path / "down")       # never started: nobody listens
    checker = env.checker(url=down.url, bind_dn_template=TEMPLATE, timeout=2)
    t0 = time.monotonic()
    with pytest.raises(Unavailable, match="unavailable"):
        await login(checker, "lara", "lara-login-pw")
    assert time.monotonic() - t0 < 2


@pytest_twisted.ensureDeferred
async def test_directory_that_hangs_is_unavailable_after_the_timeout(
        env: Env, slapd: ldapserver.Slapd) -> None:
    checker = env.checker(url=slapd.url, bind_dn_template=TEMPLATE, timeout=1)
    slapd.pause()
    try:
        t0 = time.monotonic()
        with pytest.raises(Unavailable):
            await login(checker, "lara", "lara-login-pw")
        assert time.monotonic() - t0 < 5
    finally:
        slapd.resume()
    assert await login(checker, "lara", "lara-login-pw") == "lara"


@pytest_twisted.ensureDeferred
async def test_leaving_and_joining_the_group(env: Env, slapd: ldapserver.Slapd) -> None:
    import ldap3

    checker = env.checker(url=slapd.url, bind_dn_template=TEMPLATE, group=ldapserver.GROUP_DN)
    assert await login(checker, "remo", "remo-login-pw") == "remo"
    assert (await env.store.get_user("remo")).activesync

    def modify(op: str) -> None:
        conn = ldap3.Connection(ldap3.Server(slapd.url), ldapserver.ROOT_DN,
                                ldapserver.ROOT_PW, auto_bind=True)
        conn.modify(ldapserver.GROUP_DN, {"member": [(op, [ldapserver.user_dn("remo")])]})
        assert conn.result["result"] == 0, conn.result
        conn.unbind()

    modify(ldap3.MODIFY_DELETE)
    try:
        await login(checker, "remo", "remo-login-pw")
        assert not (await env.store.get_user("remo")).activesync
    finally:
        modify(ldap3.MODIFY_ADD)
    await login(checker, "remo", "remo-login-pw")
    assert (await env.store.get_user("remo")).activesync
    details = [a[3] for a in env.audits if a[2] == "activesync"]
    assert details == ["ActiveSync off (left the LDAP group)",
                       "ActiveSync on (joined the LDAP group)"]


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="ldap://"):
        LdapConfig(url="http://x", bind_dn_template=TEMPLATE).check()
    with pytest.raises(ValueError, match="anonymous"):
        LdapConfig(url="ldap://x", base="dc=x").check()
    with pytest.raises(ValueError, match="{user}"):
        LdapConfig(url="ldap://x", bind_dn_template="uid=x").check()
