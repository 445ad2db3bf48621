"""The one ``ICredentialsChecker`` for EAS: the ActiveSync-password policy around the
configured primary checker (local bcrypt or LDAP).

For each Basic login (see ``easync.auth.accounts.eas_mode``):

1. the user's local record is read (one query; LDAP users without one yet go straight
   to the directory, which creates it);
2. a positive cache (HMAC of name and password, per process, ``cache_seconds``) answers
   a phone's repeated requests without bcrypt or directory; an entry is only used while
   the record's credential fields (login hash, ActiveSync hash, 2FA method) and the
   2FA-for-everyone setting are what they were when it was made, so any credential
   change forgets it at once, in every process; a lockout of the counters that apply to
   the request's source (familiar or not: ``easync.auth.throttle``) applies to cached
   credentials too (checked at most once a second per user, address and DeviceId);
3. otherwise the throttle reserves the check (``LockedOut`` → HTTP 429 + Retry-After),
   then: an ActiveSync password set → only it is checked (bcrypt, in the crypto pool);
   2FA on and none set → refused (401, the reason in the request log line);
   else → the primary checker (login password).  A wrong password, an unknown local
   user and a refusal by the rules are all counted as a failure, after the same bcrypt
   work (a hash of a random secret where there is no real one) and the same growing
   delay; a right password gives its reservation back and makes the source familiar.

``note_device(user, device_id)`` (called by the HTTP layer once the DeviceId is known)
records when and by which device the ActiveSync password was last used: one write per
user and device per minute at most.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from easync.auth.accounts import TWO_FACTOR_ALL, Accounts, eas_mode
from easync.auth.local import (
    HandsOverUser,
    IUserChecker,
    LocalChecker,
    bcrypt_rounds,
    check_password,
    hash_secret,
    split_username,
    text_credentials,
)
from easync.auth.throttle import LockedOut
from easync.errors import unavailable_on_failure
from easync.model import User
from easync.requestread import AuthRead, RequestSnapshot

__all__ = ["ClientCredentials", "LoginLockedOut", "PolicyChecker", "Remembered"]

log = Logger()

CACHE_SECONDS = 300.0
CACHE_MAX = 100_000
NOTE_EVERY = 60.0
LOCK_RECHECK = 1.0


class ClientCredentials(UsernamePassword):
    """Basic credentials with the client's address and the request's DeviceId (for the
    throttle: per-address counting, familiar sources)."""

    def __init__(self, username: bytes | str, password: bytes | str, address: str = "",
                 device_id: str = "") -> None:
        super().__init__(_bytes(username), _bytes(password))
        self.address = address
        self.device_id = device_id


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


class LoginLockedOut(UnauthorizedLogin):
    """Refused without a check: too many failures (HTTP 429, ``retry_after``)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Remembered:
    """Credentials the checker accepted lately (``PolicyChecker.remembered``): the user
    as accepted, the fingerprint of its credential fields then, the request's source,
    whether the lockout recheck is due, and what the request's read must include
    (None: nothing of the auth tables)."""

    user: User
    fingerprint: tuple[Any, ...]
    address: str
    device: str
    lock_due: bool
    auth: AuthRead | None


class PolicyRefused(UnauthorizedLogin):
    """Refused by the rules, not for a wrong password (counted as a failure all the same,
    and answered after the same work and delay, so that the answer does not tell which
    users exist or have 2FA on: issue #10 point 9)."""


_dummy_hashes: dict[int, str] = {}


def _check_dummy(password: str) -> bool:
    """bcrypt of ``password`` against a hash of a random secret (blocking: the crypto
    pool).  One hash per cost, made on first use with the cost new hashes have now
    (``bcrypt_rounds``), so the work matches a real check whatever the cost is."""
    rounds = bcrypt_rounds()
    dummy = _dummy_hashes.get(rounds)
    if dummy is None:
        dummy = _dummy_hashes[rounds] = hash_secret(os.urandom(18).hex())
    check_password(password, dummy)
    return False


def _fingerprint(user: User | None, everyone: bool) -> tuple[Any, ...]:
    if user is None:
        return (None, everyone)
    x = user.extra
    return (user.id, user.password_hash, x.get("as_hash"), x.get("two_factor"), everyone)


@implementer(ICredentialsChecker)
class PolicyChecker(HandsOverUser):
    """The EAS checker: ``PolicyChecker(primary, accounts, reactor)``."""

    def __init__(self, primary: Any, accounts: Accounts, reactor: Any, *,
                 cache_seconds: float | None = None) -> None:
        super().__init__()
        self.primary = primary
        self.accounts = accounts
        self.reactor = reactor
        self.cache_seconds = (cache_seconds if cache_seconds is not None
                              else getattr(primary, "cache_seconds", CACHE_SECONDS))
        self._key = os.urandom(32)
        self._cache: dict[bytes, tuple[str, tuple[Any, ...], float]] = {}
        self._noted: dict[tuple[str, str], float] = {}
        self._inflight: dict[bytes, list[Deferred[None]]] = {}
        self._lock_checked: dict[tuple[str, str, str], float] = {}
        # HMAC of (user name as typed, password) -> (the user, its _cache entry)
        self._known: dict[bytes, tuple[User, tuple[str, tuple[Any, ...], float]]] = {}
        accounts.on_change(self.forget)

    # -- for the HTTP layer (and recent_user) ------------------------------------------
    def forget(self, name: str | None = None) -> None:
        """Drop remembered logins (of one user, or all).  Not needed for correctness
        (the fingerprint check does it across processes); frees memory at once."""
        if name is None:
            self._cache.clear()
            self._known.clear()
        else:
            self._cache = {k: v for k, v in self._cache.items() if v[0] != name}
            self._known = {k: v for k, v in self._known.items() if v[0].name != name}

    def note_device(self, user: User, device_id: str) -> None:
        """The request of ``user`` (just accepted) comes from ``device_id``: remember
        the ActiveSync password's last use (at most one write a minute per device)."""
        if not user.extra.get("as_hash") or not device_id:
            return
        now = self.reactor.seconds()
        key = (user.name, device_id)
        if now - self._noted.get(key, float("-inf")) < NOTE_EVERY:
            return
        if len(self._noted) > 200_000:
            self._noted.clear()
        self._noted[key] = now
        d = Deferred.fromCoroutine(
            self.accounts.note_as_password_used(user.name, device_id, now))
        d.addErrback(lambda f: log.failure("cannot record the use of {user}'s ActiveSync "
                                           "password", f, user=user.name))

    # -- remembered logins, confirmed by the request's one read (issue #12 point 4) ------
    def _remember(self, raw: str, password: str, user: User,
                  entry: tuple[str, tuple[Any, ...], float]) -> None:
        """Credentials just accepted as typed (``raw`` user name): ``remembered`` finds
        the user without a read, while ``entry`` is the positive cache's."""
        if len(self._known) >= CACHE_MAX:
            self._known.clear()
        self._known[self._cache_key("\x00" + raw, password)] = (user, entry)

    def remembered(self, credentials: IUsernamePassword, state: Any = None
                   ) -> Remembered | None:
        """Known-good credentials, from memory alone: the ``User`` they were accepted
        as (as it was then) and the reads that confirm them (``auth_read``), or None
        (then ``requestAvatarId`` does the whole check).  ``state``: the
        ``IStateStore`` that will read the request; when the auth tables are in its
        database, the lockout and setting rows are read with the rest."""
        try:
            raw, password = text_credentials(credentials)
        except UnauthorizedLogin:
            return None
        hit = self._known.get(self._cache_key("\x00" + raw, password))
        if hit is None:
            return None
        user, entry = hit
        now = self.reactor.seconds()
        if self._cache.get(self._cache_key(user.name, password)) is not entry or \
                entry[2] <= now:
            return None          # forgotten (a change through this process) or expired
        client = credentials if isinstance(credentials, ClientCredentials) else None
        address = client.address.split(" via ", 1)[0] if client is not None else ""
        device = client.device_id[:64] if client is not None else ""
        lock_due = now - self._lock_checked.get((user.name, address, device),
                                                float("-inf")) >= LOCK_RECHECK
        everyone = self.accounts.two_factor_all_cached()
        auth: AuthRead | None = None
        if getattr(self.accounts.auth, "store", None) is state and state is not None and (
                lock_due or everyone is None):
            throttle = self.accounts.throttle
            auth = AuthRead(
                user.name, device if lock_due else "", address if lock_due else "",
                now - throttle.rules.familiar_for,
                setting=TWO_FACTOR_ALL if everyone is None else None,
                counters=throttle.lock_counters(user.name, address) if lock_due else ())
        return Remembered(user, entry[1], address, device, lock_due, auth)

    async def confirm(self, rem: Remembered, snap: RequestSnapshot) -> User | None:
        """The user's current record when ``rem`` still holds, read by the request
        (``snap``, from ``rem.auth`` and the user's row): its credential fields and
        the 2FA setting as they were (a change in any process: None, check again), and
        no lockout for this source (``LoginLockedOut``)."""
        user = snap.user
        if user is None or user.id != rem.user.id:
            return None
        auth = rem.auth
        if auth is not None and auth.setting is not None:
            everyone = self.accounts.two_factor_all_read(snap.setting)
        else:
            everyone = await self._two_factor_all()
        if _fingerprint(user, everyone) != rem.fingerprint:
            self.forget(user.name)
            return None
        if rem.lock_due:
            throttle = self.accounts.throttle
            source = (user.name, rem.address, rem.device)
            try:
                if auth is not None and auth.counters:
                    throttle.check_rows(user.name, rem.address, bool(snap.familiar),
                                        snap.counters)
                else:
                    await throttle.check_login(user.name, rem.address, rem.device)
            except LockedOut as e:
                self._lock_checked.pop(source, None)
                raise LoginLockedOut(str(e), e.retry_after) from None
            if len(self._lock_checked) > 200_000:
                self._lock_checked.clear()
            self._lock_checked[source] = self.reactor.seconds()
            await throttle.note_familiar(user.name, rem.address, rem.device)
        return user

    async def _two_factor_all(self) -> bool:
        """The 2FA-for-everyone setting; a store that cannot say is ``Unavailable``
        (the request is answered 503, not refused as a wrong password)."""
        with unavailable_on_failure():
            return await self.accounts.two_factor_all()

    # -- ICredentialsChecker (requestAvatarId runs _check) --------------------------------
    def _cache_key(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, name.encode("utf-8") + b"\x00" + password.encode("utf-8"),
                        hashlib.sha256).digest()

    async def _find(self, raw: str) -> User | None:
        with unavailable_on_failure():
            for name in split_username(raw):
                user = await self.accounts.users.get_user(name)
                if user is not None:
                    return user
        return None

    async def _check(self, credentials: IUsernamePassword) -> str:
        raw, password = text_credentials(credentials)
        # behind a trusted proxy the HTTP layer gives "CLIENT via PROXY": the client counts
        client = credentials if isinstance(credentials, ClientCredentials) else None
        address = client.address.split(" via ", 1)[0] if client is not None else ""
        device = client.device_id[:64] if client is not None else ""
        user = await self._find(raw)
        everyone = await self._two_factor_all()
        name_key = user.name if user is not None else self.accounts.throttle_name(raw)
        key = self._cache_key(name_key, password)
        now = self.reactor.seconds()
        hit = self._cache.get(key)
        throttle = self.accounts.throttle
        if hit is not None and user is not None and hit[1] == _fingerprint(user, everyone) \
                and hit[2] > now:
            # known-good credentials: no bcrypt, but a lockout of the counters that apply
            # to this source still does (looked up at most once a second per source)
            source = (name_key, address, device)
            checked = self._lock_checked.get(source, float("-inf"))
            if now - checked >= LOCK_RECHECK:
                try:
                    await throttle.check_login(name_key, address, device)
                except LockedOut as e:
                    self._lock_checked.pop(source, None)
                    raise LoginLockedOut(str(e), e.retry_after) from None
                if len(self._lock_checked) > 200_000:
                    self._lock_checked.clear()
                self._lock_checked[source] = now
                await throttle.note_familiar(name_key, address, device)
            self._remember(raw, password, user, hit)
            return self._accept(user)
        waiters = self._inflight.get(key)
        if waiters is not None:
            # The same name and password are being checked already (a phone's parallel
            # requests, the first requests a --workers process sees): wait for that
            # check, then answer from its outcome (the cache) or check again if it failed;
            # so legitimate parallel logins cost one bcrypt and one slot, not one each.
            waiting: Deferred[None] = Deferred()
            waiters.append(waiting)
            await waiting
            return await self._check(credentials)
        self._inflight[key] = []
        try:
            return await self._check_uncached(key, user, raw, password, everyone, name_key,
                                              address, device, now)
        finally:
            for waiting in self._inflight.pop(key, []):
                waiting.callback(None)

    async def _check_uncached(self, key: bytes, user: User | None, raw: str, password: str,
                              everyone: bool, name_key: str, address: str, device: str,
                              now: float) -> str:
        throttle = self.accounts.throttle
        try:
            attempt = await throttle.begin(name_key, address, device)
        except LockedOut as e:
            raise LoginLockedOut(str(e), e.retry_after) from None
        try:
            user = await self._decide(user, raw, password, everyone)
        except UnauthorizedLogin:
            # a wrong password, an unknown user and a refusal by the rules alike: counted,
            # after the same bcrypt work, answered after the same delay (issue #10 point 9)
            self._cache.pop(key, None)
            await attempt.failed()
            raise
        except BaseException:
            await attempt.abandon()
            raise
        await attempt.succeeded(user.name)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        entry = (user.name, _fingerprint(user, everyone), now + self.cache_seconds)
        self._cache[self._cache_key(user.name, password)] = entry
        self._remember(raw, password, user, entry)
        return self._accept(user)

    async def _no_hash_checked(self, password: str) -> None:
        """The bcrypt work of a refusal where no real hash is checked (an unknown user,
        2FA without an ActiveSync password): as long as a wrong password's."""
        await self.accounts.in_thread(_check_dummy, password)

    async def _decide(self, user: User | None, raw: str, password: str,
                      everyone: bool) -> User:
        """The accepted user, or ``UnauthorizedLogin`` saying why."""
        if user is not None:
            mode = eas_mode(user, everyone)
            if mode.kind == "activesync-password":
                ok = await self.accounts.in_thread(check_password, password,
                                                    str(user.extra["as_hash"]))
                if not ok:
                    raise UnauthorizedLogin("wrong password (an ActiveSync password is set: "
                                            "only it is accepted)")
                return user
            if mode.kind == "refused":
                await self._no_hash_checked(password)
                raise PolicyRefused(mode.reason)
        if isinstance(self.primary, LocalChecker) and (user is None or not user.password_hash):
            await self._no_hash_checked(password)
            raise UnauthorizedLogin("unknown user")
        name = await self.primary.requestAvatarId(UsernamePassword(_bytes(raw),
                                                                   _bytes(password)))
        found = (self.primary.recent_user(name) if IUserChecker.providedBy(self.primary)
                 else None)
        if found is None:
            found = await self._find(name)
        if found is None:
            raise UnauthorizedLogin("user vanished")
        mode = eas_mode(found, everyone)
        if mode.kind != "login-password":
            # e.g. a first LDAP login while 2FA is on for everyone
            raise PolicyRefused(mode.reason)
        return found
