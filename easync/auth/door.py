"""The front door: twisted.cred as designed, one ``Portal`` per way in.

A ``Portal`` holds the checkers (the ActiveSync-password ``PolicyChecker`` around the
local, LDAP or CRM login checker for phones; ``LoginPasswordChecker`` over the account
service for the account page) and a realm, ``UserRealm``, whose avatar is the user
(``easync.model.User``, asked for as ``IUserAvatar``).  ``FrontDoor.authenticate`` is
the one step every entrance takes — ActiveSync and OPTIONS, Autodiscover, the account
page — and it answers the ``User`` or raises:

- ``UnauthorizedLogin`` (or the ``LoginFailed`` of credentials no checker takes): wrong
  credentials, HTTP 401; ``aspassword.LoginLockedOut`` is one of them, HTTP 429;
- ``easync.errors.Unavailable``: the store, directory or CRM cannot answer, HTTP 503;
- the account service's ``AccountError`` for the account page's checker.

What the door does not decide: whether ActiveSync is on for the user (the EAS side
asks ``User.activesync``), and how a refusal is written to the client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import ICredentials, IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from easync.auth.local import IUserChecker
from easync.interfaces import IUserStore
from easync.model import User
from easync.requestread import RequestSnapshot

__all__ = ["AccountLogin", "FrontDoor", "IAccountLogin", "IUserAvatar",
           "LoginPasswordChecker", "UserRealm", "UserVanished"]


class IUserAvatar(Interface):
    """What a login gives: the ``easync.model.User`` it was made for."""


class UserVanished(UnauthorizedLogin):
    """The credentials were right, but the user's record is gone (deleted meanwhile)."""


def _no_logout() -> None:
    """Nothing to clean up when a request's login ends."""


@implementer(IRealm)
class UserRealm:
    """The avatar of an avatar id (a canonical user name) is the user's record: the one
    the checker just read (``recent``), else one read from ``users``."""

    def __init__(self, users: IUserStore,
                 recent: Callable[[str], User | None] | None = None) -> None:
        self.users = users
        self.recent = recent

    def requestAvatar(self, avatarId: Any, mind: object, *interfaces: Any
                      ) -> Deferred[tuple[type[Interface], object, Callable[[], None]]]:
        if IUserAvatar not in interfaces:
            raise NotImplementedError("easync's avatars are users (IUserAvatar)")
        return Deferred.fromCoroutine(self._avatar(str(avatarId)))

    async def _avatar(self, name: str
                      ) -> tuple[type[Interface], object, Callable[[], None]]:
        user = self.recent(name) if self.recent is not None else None
        if user is None:
            user = await self.users.get_user(name)
        if user is None:
            raise UserVanished("user vanished")
        return IUserAvatar, user, _no_logout


class FrontDoor:
    """``FrontDoor(users, checker, ...)``: a ``Portal`` over ``UserRealm`` with the
    checkers; the first checker's ``recent_user`` (when it has one) saves the realm a
    read of the record it just checked."""

    def __init__(self, users: IUserStore, *checkers: ICredentialsChecker) -> None:
        recent = (checkers[0].recent_user
                  if checkers and IUserChecker.providedBy(checkers[0]) else None)
        self.portal = Portal(UserRealm(users, recent), checkers)
        self.checkers = checkers

    async def authenticate(self, credentials: ICredentials) -> User:
        """The user ``credentials`` belong to (see the module's docstring for what it
        raises)."""
        _iface, user, logout = await self.portal.login(credentials, None, IUserAvatar)
        logout()
        assert isinstance(user, User)
        return user

    def remembered(self, credentials: ICredentials, state: Any = None) -> Any:
        """Credentials the first checker accepted lately, from memory alone (its
        ``remembered``: ``easync.auth.aspassword.Remembered``), or None.  Not a login:
        the request lets them in only once ``confirm`` says so."""
        checker = self.checkers[0] if self.checkers else None
        remembered = getattr(checker, "remembered", None)
        return remembered(credentials, state) if remembered is not None else None

    async def confirm(self, remembered: Any, snapshot: RequestSnapshot) -> User | None:
        """The user of ``remembered`` credentials, confirmed by what the request read
        (``snapshot``), or None when they must be checked again (``authenticate``).
        Raises as ``authenticate`` does (a lockout)."""
        user = await self.checkers[0].confirm(remembered, snapshot)  # type: ignore[attr-defined]
        assert user is None or isinstance(user, User)
        return user

    def note_device(self, user: User, device_id: str) -> None:
        """The request of ``user``, just let in, comes from ``device_id``: the checkers
        that keep track (the ActiveSync password's last use) are told."""
        for checker in self.checkers:
            if IUserChecker.providedBy(checker):
                checker.note_device(user, device_id)


# -- the account page's way in: the login password, through the account service ----------

class IAccountLogin(IUsernamePassword):
    """The login password (not the ActiveSync password) typed on the account page, with
    the client's address (throttling, audit log)."""


@implementer(IAccountLogin)
class AccountLogin(UsernamePassword):
    def __init__(self, username: str, password: str, address: str = "") -> None:
        super().__init__(username.encode("utf-8"), password.encode("utf-8"))
        self.address = address


@implementer(ICredentialsChecker)
class LoginPasswordChecker:
    """``IAccountLogin`` credentials checked by ``Accounts.verify_login`` (throttled,
    against the configured login checker); refusals are its ``AccountError``s."""

    credentialInterfaces = (IAccountLogin,)

    def __init__(self, accounts: Any) -> None:
        self.accounts = accounts        # easync.auth.accounts.Accounts

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:   # str: HandsOverUser
        return Deferred.fromCoroutine(self.accounts.verify_login(
            credentials.username.decode("utf-8"), credentials.password.decode("utf-8"),
            address=credentials.address))
