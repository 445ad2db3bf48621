"""Brute-force protection: growing delays and temporary lockouts.

Failures are counted per user name (scope ``user``), per client address (``addr``) and
per user for one-time codes (``code``) in the database (``IAuthStore``), so every process
on the same database sees the same counts and lockouts.  Only failures write; a check is
one read per scope, made only when a credential is not already in a checker's positive
cache (so a phone whose password is known-good keeps syncing while someone else guesses
at its user's name).

After the n-th failure within ``window`` seconds the refusal is answered
``delay * 2**(n-1)`` seconds later (at most ``max_delay``), without blocking the reactor
(the caller's Deferred fires later).  At ``user_limit`` failures for a user, or
``addr_limit`` for an address, that name or address is locked out for ``lockout``
seconds: even the right password is refused (HTTP 429 with Retry-After for EAS) and the
lockout is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.task import deferLater

__all__ = ["LockedOut", "Throttle", "ThrottleRules"]


class LockedOut(Exception):
    """Too many failures: refused until ``retry_after`` seconds have passed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after + 0.999))


@dataclass(frozen=True)
class ThrottleRules:
    """The limits (every one a server option)."""

    delay: float = 1.0          # first refusal delay, doubled with each failure
    max_delay: float = 16.0
    window: float = 900.0       # failures older than this are forgotten
    user_limit: int = 10        # failures of one user name before a lockout
    addr_limit: int = 50        # failures from one address before a lockout
    code_limit: int = 5         # wrong one-time codes of one user before a lockout
    lockout: float = 900.0      # seconds a lockout lasts

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

    async def check(self, user: str, address: str = "", *, scope: str = "user") -> int:
        """Raise ``LockedOut`` if the user (in ``scope``) or the address is locked out;
        else return the user's recent failures (call ``succeeded`` after a success when
        more than 0)."""
        now = self.clock.seconds()
        row = user_row = await self.store.throttle_get(scope, user)
        if row is not None and row[2] > now:
            what = "one-time codes" if scope == "code" else "logins"
            raise LockedOut(f"too many failed {what} for {user}: locked out, try again "
                            f"in {int(row[2] - now) + 1} seconds", row[2] - now)
        if address and scope == "user":
            row = await self.store.throttle_get("addr", address)
            if row is not None and row[2] > now:
                raise LockedOut(f"too many failed logins from {address}: locked out, try "
                                f"again in {int(row[2] - now) + 1} seconds", row[2] - now)
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

    async def unlock(self, user: str, *, scope: str = "user") -> None:
        """An administrator lifts a lockout."""
        await self.store.throttle_clear(scope, user)

    async def _audit(self, user: str | None, action: str, detail: str, address: str) -> None:
        if self.audit is not None:
            await self.audit("easync", user, action, detail, address)
