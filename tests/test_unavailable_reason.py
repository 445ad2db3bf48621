"""A login whose user lookup fails is refused with 503 and a reason (DESIGN: a store
that cannot answer is ``Unavailable``, never a 401 that makes the phone ask its user for
the password).  The reason must say something: a process out of file descriptors made
the lookup raise an exception with an empty message, and the log said only
"directory unavailable: " (bench_fleet's exhaustion run, stop 21's leftovers)."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock

from easync.auth.local import LocalChecker
from easync.errors import Unavailable
from easync.http.basic import _refusal


class FailingUsers:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def get_user(self, name: str) -> Deferred[Any]:
        return fail(self.error)


def refused(error: BaseException) -> Unavailable:
    out: list[Any] = []
    LocalChecker(FailingUsers(error), Clock()).requestAvatarId(
        UsernamePassword(b"dana", b"secret-pw-1")).addBoth(out.append)
    assert out and out[0].check(Unavailable), out
    reason = out[0].value
    assert isinstance(reason, Unavailable)
    return reason


@pytest.mark.parametrize("error", [RuntimeError(), OSError(), Exception("  \n ")])
def test_a_failure_without_a_message_still_gives_a_reason(error: BaseException) -> None:
    reason = refused(error)
    assert type(error).__name__ in str(reason)
    refusal = _refusal(reason, "dana")
    assert refusal.code == 503 and refusal.note.startswith("directory unavailable: ")
    assert refusal.note != "directory unavailable: "


def test_out_of_descriptors_is_named() -> None:
    reason = refused(OSError(errno.EMFILE, "Too many open files"))
    assert "out of file descriptors" in str(reason)


def test_a_message_on_several_lines_is_one_line_with_no_password() -> None:
    reason = refused(RuntimeError("connection lost\nserver closed the connection"))
    assert str(reason) == "connection lost server closed the connection"
    assert "secret-pw-1" not in str(reason)


class HangingUsers:
    def __init__(self) -> None:
        self.pending: list[Deferred[Any]] = []

    def get_user(self, name: str) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d


def test_a_lookup_cancelled_because_the_client_left_is_not_unavailable() -> None:
    """The client went away during its login: the request's Deferred is cancelled, and
    the cancellation reaches the user lookup.  It must come out as the cancellation (the
    request is logged "client gone", 499), not as a 503 "directory unavailable:
    CancelledError" — that was the empty reason of the fleet benchmark's log."""
    from twisted.internet.defer import CancelledError

    users = HangingUsers()
    out: list[Any] = []
    d = LocalChecker(users, Clock()).requestAvatarId(
        UsernamePassword(b"dana", b"secret-pw-1"))
    d.addBoth(out.append)
    assert users.pending and not out
    d.cancel()
    assert out and out[0].check(CancelledError), out
    assert not out[0].check(Unavailable)
