"""Brute-force protection: reservations, smart lockout, growing delays and lockouts.

Logins (EAS and the account page) go through ``Throttle.begin``, which returns an
``Attempt`` before the password is checked:

* **Familiar or not.** A source is familiar for a user when its DeviceId or its client
  address logged in successfully as that user within ``familiar_for`` seconds (30 days;
  stored in the ``IAuthStore``, written at most once a minute per pair).  Failures from
  familiar sources are counted on their own counter (scope ``user-known``), those from
  unfamiliar ones on ``user`` and on the address (``addr``): a lockout of the unfamiliar
  counter or of an address (one office NAT) does not refuse a familiar phone.
* **Bounded work.** At most ``user_in_flight`` checks per user name (and familiarity) and
  ``addr_in_flight`` per address are queued or running in this process; beyond that an
  attempt is refused at once (``LockedOut``: HTTP 429 + Retry-After), so a burst cannot
  queue other users' logins behind the bcrypt pool.
* **Reserve, then check.** The attempt reserves a slot on its counters in one store
  transaction that also reads the lockout (``throttle_reserve``): refused when a counter is
  locked out or its failures plus the checks in progress reach the limit.  A wrong
  password turns the reservation into a failure (``Attempt.failed``), a right one gives it
  back (``Attempt.succeeded``) without wiping the failures others made.  So with a limit
  of 10 at most 10 wrong guesses per counter and window are ever checked, in every
  process on the database together.
* **Short, growing lockouts.** A counter that reaches its limit is locked out for
  ``first_lockout`` seconds (60), doubled for each further lockout of the same counter
  within ``lockout_memory`` (a day), at most ``lockout`` (``--lockout-time``).  Lockouts
  are written to the audit log.

After the n-th failure within ``window`` seconds a refusal is answered
``delay * 2**(n-1)`` seconds later (at most ``max_delay``), without blocking the reactor.

``check``/``failed``/``succeeded`` keep the simple counters of one-time codes (scope
``code``: ``code_limit`` wrong codes lock the user's codes out for ``lockout`` seconds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from easync.i18n import msg

__all__ = ["Attempt", "LockedOut", "Throttle", "ThrottleRules"]

log = Logger()

BUSY_RETRY = 5          # Retry-After when every slot is taken by checks in progress
NOTE_EVERY = 60.0       # a familiar source is written at most once a minute per pair


class LockedOut(Exception):
    """Too many failures: refused until ``retry_after`` seconds have passed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message          # an ``easync.i18n.msg``: said in the reader's language
        self.retry_after = max(1, int(retry_after + 0.999))


@dataclass(frozen=True)
class ThrottleRules:
    """The limits (delay, user_limit, addr_limit, lockout: from the server options)."""

    delay: float = 1.0          # first refusal delay, doubled with each failure
    max_delay: float = 16.0
    window: float = 900.0       # failures older than this are forgotten
    user_limit: int = 10        # failures of one user name before a lockout
    addr_limit: int = 50        # failures from one address before a lockout
    code_limit: int = 5         # wrong one-time codes of one user before a lockout
    lockout: float = 900.0      # the longest lockout (and a code lockout's length)
    first_lockout: float = 60.0     # a counter's first lockout, doubled for each further
    lockout_memory: float = 86400.0     # ... one within this many seconds
    familiar_for: float = 30 * 86400.0  # a source that logged in is familiar this long
    user_in_flight: int = 2     # checks of one user name queued or running (per process)
    addr_in_flight: int = 8     # checks from one address queued or running (per process)

    def delay_after(self, failures: int) -> float:
        if failures <= 0 or self.delay <= 0:
            return 0.0
        return float(min(self.delay * 2 ** min(failures - 1, 30), self.max_delay))


Audit = Callable[[str, str | None, str, str, str], Awaitable[None]]


class Throttle:
    """Counts failures in an ``IAuthStore``; ``audit(actor, user, action, detail,
    address)`` records lockouts."""

    def __init__(self, store: Any, clock: Any, rules: ThrottleRules | None = None,
                 audit: Audit | None = None) -> None:
        self.store = store
        self.clock = clock
        self.rules = rules or ThrottleRules()
        self.audit = audit
        self._busy: dict[tuple[str, ...], int] = {}     # checks in progress per key
        self._noted: dict[tuple[str, str, str], float] = {}

    # -- logins: smart lockout ------------------------------------------------------------
    def _counters(self, user: str, address: str, familiar: bool) -> list[tuple[str, str, int]]:
        rules = self.rules
        if familiar:
            return [("user-known", user, rules.user_limit)]
        counters = [("user", user, rules.user_limit)]
        if address:
            counters.append(("addr", address, rules.addr_limit))
        return counters

    async def familiar(self, user: str, address: str = "", device: str = "") -> bool:
        """Whether the DeviceId or the address logged in as ``user`` lately."""
        if not address and not device:
            return False
        since = self.clock.seconds() - self.rules.familiar_for
        return bool(await self.store.familiar_get(user, device, address, since))

    async def check_login(self, user: str, address: str = "", device: str = "") -> bool:
        """For credentials already proven (a checker's positive cache): raise
        ``LockedOut`` if a counter that applies to this source is locked out; else
        return whether the source is familiar."""
        familiar = await self.familiar(user, address, device)
        rows = {(scope, name): await self.store.throttle_get(scope, name)
                for scope, name, _limit in self._counters(user, address, familiar)}
        self.check_rows(user, address, familiar, rows)
        return familiar

    def lock_counters(self, user: str, address: str = "") -> list[tuple[str, str]]:
        """Every counter ``check_login`` may look at, familiar source or not: read them
        with the rest of a request (``check_rows``)."""
        return [(scope, name) for familiar in (True, False)
                for scope, name, _limit in self._counters(user, address, familiar)]

    def check_rows(self, user: str, address: str, familiar: bool,
                   rows: dict[tuple[str, str], tuple[int, float, float] | None]) -> None:
        """``check_login`` on rows already read (``IAuthStore.throttle_get`` of the
        counters ``lock_counters`` names, by (scope, name)): ``LockedOut`` when a
        counter that applies to this source is locked out."""
        now = self.clock.seconds()
        for scope, name, _limit in self._counters(user, address, familiar):
            row = rows.get((scope, name))
            if row is not None and row[2] > now:
                raise self._locked(scope, name, row[2] - now)

    def _locked(self, scope: str, name: str, seconds: float) -> LockedOut:
        if scope == "addr":
            return LockedOut(msg("too many failed logins from {name}: locked out, try again "
                                 "in {n} seconds", name=name, n=int(seconds) + 1), seconds)
        return LockedOut(msg("too many failed logins for {name}: locked out, try again in "
                             "{n} seconds", name=name, n=int(seconds) + 1), seconds)

    async def begin(self, user: str, address: str = "", device: str = "") -> Attempt:
        """Reserve a check of a password of ``user`` from this source (see the module
        docstring); ``LockedOut`` when it may not be checked now.  The caller ends the
        ``Attempt`` with ``failed``, ``succeeded`` or ``abandon``."""
        familiar = await self.familiar(user, address, device)
        counters = self._counters(user, address, familiar)
        keys: list[tuple[tuple[str, ...], int]] = [
            (("user", user, "known" if familiar else ""), self.rules.user_in_flight)]
        if not familiar and address:
            keys.append((("addr", address), self.rules.addr_in_flight))
        for key, cap in keys:
            if self._busy.get(key, 0) >= cap:
                if key[0] == "addr":
                    raise LockedOut(msg("too many logins from {name} being checked: try "
                                        "again in {n} seconds", name=address, n=BUSY_RETRY),
                                    BUSY_RETRY)
                raise LockedOut(msg("too many logins for {name} being checked: try again in "
                                    "{n} seconds", name=user, n=BUSY_RETRY), BUSY_RETRY)
        taken = [key for key, _cap in keys]
        for key in taken:
            self._busy[key] = self._busy.get(key, 0) + 1
        attempt = Attempt(self, user, address, device, familiar, counters, taken)
        try:
            now = self.clock.seconds()
            reserved, _counts, locked_until = await self._reserve(counters, now)
        except BaseException:
            attempt._free()
            raise
        if not reserved:
            attempt._free()
            if locked_until > now:
                scope, name = counters[0][0], counters[0][1]
                for s, n, _limit in counters:
                    row = await self.store.throttle_get(s, n)
                    if row is not None and row[2] >= locked_until:
                        scope, name = s, n
                raise self._locked(scope, name, locked_until - now)
            raise LockedOut(msg("too many failed logins for {name}: try again in {n} seconds",
                                name=user, n=BUSY_RETRY), BUSY_RETRY)
        return attempt

    def _reserve(self, counters: list[tuple[str, str, int]], now: float
                 ) -> Deferred[tuple[bool, list[int], float]]:
        """``throttle_reserve``, shielded: if the caller stops waiting (the client went
        away, the request's Deferred was cancelled) the transaction still ends, and a
        slot it took is given back, not kept until the window ends."""
        outer: Deferred[tuple[bool, list[int], float]] = Deferred()

        def done(result: Any) -> None:
            if not outer.called:
                if isinstance(result, Failure):
                    outer.errback(result)
                else:
                    outer.callback(result)
            elif not isinstance(result, Failure) and result[0]:
                self.store.throttle_release(counters).addErrback(
                    lambda f: log.failure("cannot give back a login slot", f))
            elif isinstance(result, Failure):
                log.failure("a dropped login's reservation failed", result)

        self.store.throttle_reserve(counters, now, self.rules.window).addBoth(done)
        return outer

    async def note_familiar(self, user: str, address: str = "", device: str = "") -> None:
        """``user`` logged in from this source: remember it as familiar (one write per
        user and source a minute at most; a store error is logged, not raised)."""
        now = self.clock.seconds()
        forget = now - self.rules.familiar_for
        for kind, value in (("device", device), ("addr", address)):
            if not value:
                continue
            key = (user, kind, value)
            if now - self._noted.get(key, float("-inf")) < NOTE_EVERY:
                continue
            if len(self._noted) > 200_000:
                self._noted.clear()
            self._noted[key] = now
            try:
                await self.store.familiar_note(user, kind, value[:128], now, forget)
            except Exception:  # noqa: BLE001 - a login must not fail for this record
                log.failure("cannot record a familiar source of {user}", user=user)

    async def check(self, user: str, address: str = "", *, scope: str = "user") -> int:
        """Raise ``LockedOut`` if the user (in ``scope``) or the address is locked out;
        else return the user's recent failures (call ``succeeded`` after a success when
        more than 0)."""
        now = self.clock.seconds()
        row = user_row = await self.store.throttle_get(scope, user)
        if row is not None and row[2] > now:
            n = int(row[2] - now) + 1
            if scope == "code":
                raise LockedOut(msg("too many failed one-time codes for {name}: locked out, "
                                    "try again in {n} seconds", name=user, n=n), row[2] - now)
            raise LockedOut(msg("too many failed logins for {name}: locked out, try again "
                                "in {n} seconds", name=user, n=n), row[2] - now)
        if address and scope == "user":
            row = await self.store.throttle_get("addr", address)
            if row is not None and row[2] > now:
                raise LockedOut(msg("too many failed logins from {name}: locked out, try "
                                    "again in {n} seconds", name=address,
                                    n=int(row[2] - now) + 1), row[2] - now)
        return 0 if user_row is None else user_row[0]

    async def failed(self, user: str, address: str = "", *, scope: str = "user",
                     sleep: bool = True) -> int:
        """Count a failure; lock out at the limit (audited); then wait the growing delay
        (if ``sleep``).  Returns the user's failures in the window."""
        rules = self.rules
        now = self.clock.seconds()
        failures, _locked = await self.store.throttle_fail(scope, user, now, rules.window)
        limit = rules.code_limit if scope == "code" else rules.user_limit
        if failures >= limit:
            await self.store.throttle_lock(scope, user, now + rules.lockout)
            what = "wrong one-time codes" if scope == "code" else "failed logins"
            await self._audit(user, "lockout",
                              f"{failures} {what}: {user} locked out for "
                              f"{int(rules.lockout)} s", address)
        addr_failures = 0
        if address and scope == "user":
            addr_failures, _ = await self.store.throttle_fail("addr", address, now,
                                                              rules.window)
            if addr_failures >= rules.addr_limit:
                await self.store.throttle_lock("addr", address, now + rules.lockout)
                await self._audit(None, "lockout",
                                  f"{addr_failures} failed logins: address {address} "
                                  f"locked out for {int(rules.lockout)} s", address)
        if sleep:
            delay = rules.delay_after(max(failures, addr_failures // 5))
            if delay > 0:
                await deferLater(self.clock, delay, lambda: None)
        return failures

    async def succeeded(self, user: str, *, scope: str = "user") -> None:
        """Forget the user's failures (not the address's: one good account must not
        reset an address that guesses at others)."""
        await self.store.throttle_clear(scope, user)

    async def unlock(self, user: str, *, scope: str = "user") -> bool:
        """An administrator lifts a lockout (for ``user`` logins: from familiar and
        unfamiliar sources), forgetting the failures counted; True if one was in
        force."""
        now = self.clock.seconds()
        scopes = [scope, "user-known"] if scope == "user" else [scope]
        locked = False
        for one in scopes:
            row = await self.store.throttle_get(one, user)
            locked = locked or (row is not None and row[2] > now)
            await self.store.throttle_clear(one, user)
        return locked

    async def _audit(self, user: str | None, action: str, detail: str, address: str) -> None:
        if self.audit is not None:
            await self.audit("easync", user, action, detail, address)


class Attempt:
    """A reserved login check (from ``Throttle.begin``): end it with ``failed`` (wrong
    password), ``succeeded`` or ``abandon`` (not checked: the directory could not
    answer)."""

    def __init__(self, throttle: Throttle, user: str, address: str, device: str,
                 familiar: bool, counters: list[tuple[str, str, int]],
                 busy: list[tuple[str, ...]]) -> None:
        self.throttle = throttle
        self.user = user
        self.address = address
        self.device = device
        self.familiar = familiar
        self.counters = counters
        self._busy_keys = busy
        self.done = False

    def _free(self) -> None:
        busy = self.throttle._busy
        for key in self._busy_keys:
            left = busy.get(key, 0) - 1
            if left > 0:
                busy[key] = left
            else:
                busy.pop(key, None)
        self._busy_keys = []

    async def failed(self, *, sleep: bool = True) -> int:
        """Count the failure, lock out a counter at its limit (audited), then wait the
        growing delay (if ``sleep``).  Returns the user's failures."""
        self.done = True
        self._free()
        t = self.throttle
        rules = t.rules
        now = t.clock.seconds()
        results = await t.store.throttle_confirm(self.counters, now, rules.first_lockout,
                                                 rules.lockout, rules.lockout_memory)
        failures = addr_failures = 0
        for (scope, name, _limit), (count, seconds) in zip(self.counters, results,
                                                            strict=True):
            if scope == "addr":
                addr_failures = count
            else:
                failures = count
            if seconds > 0:
                if scope == "addr":
                    await t._audit(None, "lockout",
                                   f"{count} failed logins: address {name} locked out "
                                   f"for {int(seconds)} s", self.address)
                else:
                    known = " from familiar devices or addresses" if self.familiar else ""
                    await t._audit(name, "lockout",
                                   f"{count} failed logins{known}: {name} locked out "
                                   f"for {int(seconds)} s", self.address)
        if sleep:
            delay = rules.delay_after(max(failures, addr_failures // 5))
            if delay > 0:
                await deferLater(t.clock, delay, lambda: None)
        return failures

    async def succeeded(self, canonical: str | None = None) -> None:
        """The password was right: give the reservation back and remember the source
        as familiar for the user (``canonical``: the user's name, when the login gave
        another form of it)."""
        await self.abandon()
        await self.throttle.note_familiar(canonical or self.user, self.address, self.device)

    async def abandon(self) -> None:
        """Give the reservation back (nothing was learnt about the password)."""
        if self.done:
            return
        self.done = True
        self._free()
        await self.throttle.store.throttle_release(self.counters)
