"""Local accounts: bcrypt hashes in easync's database."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

import bcrypt
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from easync.errors import Unavailable, unavailable_on_failure  # noqa: F401 (Unavailable: re-exported)

log = Logger()

# How long an accepted password is remembered (seconds).  The entry is also
# dropped as soon as the user's stored hash differs from the one it was checked
# against, so a password change takes effect at once.
CACHE_SECONDS = 300.0
CACHE_MAX = 100_000


def split_username(raw: str) -> list[str]:
    """Candidate account names for a Basic user name.

    ``DOMAIN\\user`` → ["user"]; ``user@domain`` → ["user@domain", "user"];
    ``user`` → ["user"].  Lower-cased.
    """
    name = raw.strip()
    if "\\" in name:
        name = name.rsplit("\\", 1)[1]
    name = name.lower()
    out = [name]
    if "@" in name:
        local = name.split("@", 1)[0]
        if local:
            out.append(local)
    return [n for n in out if n]


_pool: ThreadPool | None = None


def crypto_pool(reactor: Any) -> ThreadPool:
    """The bounded thread pool bcrypt runs in (never the reactor thread)."""
    global _pool
    if _pool is None:
        _pool = ThreadPool(1, 4, name="easync-bcrypt")
        _pool.start()
        reactor.addSystemEventTrigger("during", "shutdown", _stop_pool)
    return _pool


def _stop_pool() -> None:
    global _pool
    if _pool is not None:
        _pool.stop()
        _pool = None


class BadUserName(UnauthorizedLogin):
    """A user name refused before any check (LDAP filter or DN syntax characters,
    control characters); the message says why."""


def as_text(value: bytes | str) -> str:
    """A credential as text: bytes decoded as UTF-8, bad bytes replaced."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def text_credentials(credentials: IUsernamePassword) -> tuple[str, str]:
    """``(user name, password)`` as text; an empty password is refused at once."""
    raw = as_text(credentials.username)
    password = as_text(credentials.password)
    if not password:
        raise UnauthorizedLogin("empty password")
    return raw, password


class IUserChecker(ICredentialsChecker):
    """A checker that hands over the record of the user it accepted, and hears which
    device a request it let in came from (``easync.auth.door.FrontDoor``)."""

    def recent_user(name: str) -> Any:
        """The User record just read while accepting ``name`` (once), or None."""

    def note_device(user: Any, device_id: str) -> None:
        """A request of ``user``, just let in, comes from ``device_id``."""


@implementer(IUserChecker)
class HandsOverUser:
    """What easync's password checkers share: ``requestAvatarId`` runs the async
    ``_check``, which ends with ``_accept(user)``; that keeps the User record for one
    ``recent_user(name)``, so the caller need not read it again."""

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}

    def recent_user(self, name: str) -> Any:
        """The User record this checker just read while accepting ``name`` (once), so
        the caller need not read it again; None if there is none."""
        return self._loaded.pop(name, None)

    def note_device(self, user: Any, device_id: str) -> None:
        """Nothing to note by default (the ActiveSync-password checker notes its use)."""

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[Any]:
        # Deferred[Any], not [str]: twisted types avatar ids as bytes; easync's are user
        # names (str), which the Portal hands to the realm untouched.
        return Deferred.fromCoroutine(self._check(credentials))

    async def _check(self, credentials: IUsernamePassword) -> str:
        raise NotImplementedError

    def _accept(self, user: Any) -> str:
        """The avatar id of the accepted ``user``, its record kept for ``recent_user``."""
        self._loaded[user.name] = user
        return user.name


def bcrypt_rounds() -> int:
    """The bcrypt cost: 12, or ``EASYNC_BCRYPT_ROUNDS`` (4..31; tests use 4)."""
    raw = os.environ.get("EASYNC_BCRYPT_ROUNDS", "").strip()
    try:
        rounds = int(raw) if raw else 12
    except ValueError:
        return 12
    return rounds if 4 <= rounds <= 31 else 12


def hash_secret(password: str) -> str:
    """A bcrypt hash of the password, as text (blocking: run it in a thread)."""
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(bcrypt_rounds())
                         ).decode("ascii")


def check_password(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
    except ValueError:
        return False


@implementer(ICredentialsChecker)
class LocalChecker(HandsOverUser):
    """bcrypt check of the login password, with a short keyed cache."""

    def __init__(self, users: Any, reactor: Any) -> None:
        super().__init__()
        self.users = users
        self.reactor = reactor
        self._key = os.urandom(32)
        self._cache: dict[bytes, tuple[str, str, float]] = {}

    def _cache_key(self, name: str, password: bytes) -> bytes:
        return hmac.new(self._key, name.encode("utf-8") + b"\x00" + password,
                        hashlib.sha256).digest()

    def forget(self) -> None:
        """Drop every remembered credential."""
        self._cache.clear()

    async def _check(self, credentials: IUsernamePassword) -> str:
        raw = as_text(credentials.username)
        password = credentials.password
        if isinstance(password, str):
            password = password.encode("utf-8")
        if not password:
            raise UnauthorizedLogin("empty password")
        user = None
        with unavailable_on_failure():
            for name in split_username(raw):
                user = await self.users.get_user(name)
                if user is not None:
                    break
        if user is None or not user.password_hash:
            raise UnauthorizedLogin("unknown user")
        key = self._cache_key(user.name, password)
        now = self.reactor.seconds()
        hit = self._cache.get(key)
        if hit is not None and hit[1] == user.password_hash and hit[2] > now:
            return self._accept(user)
        ok = await deferToThreadPool(self.reactor, crypto_pool(self.reactor),
                                     check_password, password.decode("utf-8", "replace"),
                                     user.password_hash)
        if not ok:
            self._cache.pop(key, None)
            raise UnauthorizedLogin("wrong password")
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (user.name, user.password_hash, now + CACHE_SECONDS)
        return self._accept(user)
