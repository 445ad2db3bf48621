"""``--auth crm``: the login password checked by the CRM's ``login_pwd`` (StubTreq over
the fake CRM, a Clock), never retried, 503 (never 401) when the CRM cannot say."""

from __future__ import annotations

from typing import Any

import pytest
from fakecrm import FakeCrm, FakeCrmResource
from treq.testing import StubTreq
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.web.resource import Resource

from backends.crm.checker import CrmChecker
from easync.errors import Unavailable
from easync.model import User

URL = "http://crm.example/webservice.php"


class Users:
    """Enough of IUserStore for the checker."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    def get_user(self, name: str) -> Deferred[User | None]:
        return succeed(self.users.get(name.lower()))

    def add_user(self, name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        user = User(len(self.users) + 1, name.lower(), email, activesync, password_hash)
        self.users[user.name] = user
        return succeed(user)

    def update_user(self, name: str, **fields: Any) -> Deferred[User]:
        user = self.users[name.lower()]
        user.extra.update(fields)
        return succeed(user)


def setup(flavour: str = "vtenext") -> tuple[FakeCrm, CrmChecker, Users, Clock]:
    clock = Clock()
    crm = FakeCrm(flavour, clock=clock.seconds)
    crm.add_user("dana", password="dana-crm-pw")
    root = Resource()
    root.putChild(b"webservice.php", FakeCrmResource(crm, clock))
    users = Users()
    return crm, CrmChecker(clock, StubTreq(root), URL, users, timeout=5), users, clock


def check(checker: CrmChecker, name: str, password: str) -> Any:
    out: list[Any] = []
    checker.requestAvatarId(UsernamePassword(name, password)).addBoth(out.append)
    assert out, "not finished"
    if hasattr(out[0], "raiseException"):
        out[0].raiseException()
    return out[0]


def test_right_password_makes_a_local_record_without_activesync() -> None:
    crm, checker, users, _clock = setup()
    assert check(checker, "DANA", "dana-crm-pw") == "dana"
    user = users.users["dana"]
    assert not user.activesync and user.password_hash is None
    assert user.extra["origin"] == "crm"
    assert checker.recent_user("dana") is user
    assert check(checker, "EXAMPLE\\dana", "dana-crm-pw") == "dana"
    assert check(checker, "dana@example.org", "dana-crm-pw") == "dana"
    assert crm.calls["login_pwd"] == 3


def test_wrong_password_one_question_per_attempt() -> None:
    crm, checker, users, _clock = setup()
    for name, pw in (("dana", "nope"), ("nobody", "x"), ("dana@example.org", "nope")):
        with pytest.raises(UnauthorizedLogin):
            check(checker, name, pw)
    assert crm.calls["login_pwd"] == 3 and "nobody" not in users.users
    with pytest.raises(UnauthorizedLogin):
        check(checker, "dana", "")
    assert crm.calls["login_pwd"] == 3          # an empty password never reaches the CRM
    with pytest.raises(UnauthorizedLogin):
        check(checker, "da\x00na", "x")


def test_crm_that_cannot_say_is_unavailable_not_a_refusal() -> None:
    crm, checker, _users, clock = setup()
    crm.http500_next = 1
    with pytest.raises(Unavailable):
        check(checker, "dana", "dana-crm-pw")
    crm.fail_next = [("INTERNAL_SERVER_ERROR", "x")]
    with pytest.raises(Unavailable):
        check(checker, "dana", "dana-crm-pw")
    crm.delay = 60
    d = checker.requestAvatarId(UsernamePassword("dana", "dana-crm-pw"))
    clock.advance(5)
    out: list[Any] = []
    d.addBoth(out.append)
    assert out and out[0].check(Unavailable)
    _crm, vtiger, _u, _c = setup("vtiger")          # vtiger has no login_pwd: HTTP 500
    with pytest.raises(Unavailable, match="HTTP 500"):        # (recording: unknown-operation)
        check(vtiger, "dana", "dana-crm-pw")
