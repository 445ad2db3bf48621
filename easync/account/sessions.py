"""Sessions of the account page: in memory, bound to a cookie, with a CSRF token each.

A session is created for every visitor who opens a form (so that even the login form
carries a CSRF token bound to the browser), and becomes a *logged-in* session only after
the password and, with 2FA on, the one-time code were accepted; the session id changes
at that moment (no session fixation) and again at every later verification.

Times come from the clock passed in (``IReactorTime.seconds``), so tests drive them.

- ``IDLE_SECONDS``: a session unused for this long is gone (15 minutes).
- ``ABSOLUTE_SECONDS``: a logged-in session ends this long after the login, used or not
  (8 hours).
- ``RECENT_SECONDS``: how long a verification (password + code: the login itself, or the
  "confirm it's you" step) lets the user change the ActiveSync password, wipe or remove a
  device, change 2FA or use the admin functions without being asked again (5 minutes).

Only a SHA-256 of the session id is kept as the key, so the ids themselves are nowhere
but in the browsers' cookies.  The store holds at most ``MAX_SESSIONS``; past that the
least recently used session is dropped (the anonymous ones go first).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

IDLE_SECONDS = 15 * 60.0
ABSOLUTE_SECONDS = 8 * 3600.0
RECENT_SECONDS = 5 * 60.0
MAX_SESSIONS = 20_000
# A login waiting for its one-time code is given this long (more than a code's 10
# minutes, so that an expired code is reported as such, with a way to ask for another).
PENDING_SECONDS = 15 * 60.0


def _digest(sid: str) -> str:
    return hashlib.sha256(sid.encode("ascii", "replace")).hexdigest()


@dataclass
class Pending:
    """A password that was accepted, waiting for its one-time code."""

    user: str
    method: str                     # "email" | "totp"
    since: float
    purpose: str = "login"          # "login" | "verify" (a step-up in a logged-in session)
    sent_to: str = ""               # the masked address an e-mail code went to


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    last_seen: float
    user: str | None = None         # set once fully logged in
    admin: bool = False
    logged_in_at: float = 0.0
    verified_at: float = 0.0        # last password (+ code) verification
    pending: Pending | None = None
    # One-shot things to show on the next page (then forgotten): messages and a
    # generated ActiveSync password.
    flash: list[tuple[str, str]] = field(default_factory=list)
    reveal: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def logged_in(self) -> bool:
        return self.user is not None

    def check_csrf(self, token: str | None) -> bool:
        """Whether ``token`` is this session's CSRF token (constant-time compare)."""
        if not token:
            return False
        return hmac.compare_digest(self.csrf.encode("ascii"), token.encode("utf-8", "replace"))

    def recently_verified(self, now: float) -> bool:
        return self.logged_in and now - self.verified_at < RECENT_SECONDS

    def say(self, kind: str, text: str) -> None:
        """A message for the next page: kind is "ok" or "error"."""
        self.flash.append((kind, text))

    def take_flash(self) -> list[tuple[str, str]]:
        out, self.flash = self.flash, []
        return out

    def take_reveal(self) -> str | None:
        out, self.reveal = self.reveal, None
        return out


class SessionStore:
    """The account page's sessions, keyed by a digest of their id."""

    def __init__(self, clock: Any, idle: float = IDLE_SECONDS,
                 absolute: float = ABSOLUTE_SECONDS, max_sessions: int = MAX_SESSIONS) -> None:
        self.clock = clock
        self.idle = idle
        self.absolute = absolute
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def _expired(self, s: Session, now: float) -> bool:
        if now - s.last_seen >= self.idle:
            return True
        return s.logged_in and now - s.logged_in_at >= self.absolute

    def new(self) -> Session:
        """A fresh anonymous session."""
        now = self.clock.seconds()
        if len(self._sessions) >= self.max_sessions:
            self._evict(now)
        s = Session(sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                    created=now, last_seen=now)
        self._sessions[_digest(s.sid)] = s
        return s

    def get(self, sid: str | None) -> Session | None:
        """The live session with this id (its idle time restarts), or None."""
        if not sid or len(sid) > 100:
            return None
        key = _digest(sid)
        s = self._sessions.get(key)
        if s is None:
            return None
        now = self.clock.seconds()
        if self._expired(s, now):
            del self._sessions[key]
            return None
        s.last_seen = now
        return s

    def expired_reason(self, sid: str | None) -> str | None:
        """Without touching it: why this id is no longer a live session, if it was one
        and is still remembered ("idle" or "absolute"); None otherwise."""
        if not sid:
            return None
        s = self._sessions.get(_digest(sid))
        if s is None:
            return None
        now = self.clock.seconds()
        if s.logged_in and now - s.logged_in_at >= self.absolute:
            return "absolute"
        if now - s.last_seen >= self.idle:
            return "idle"
        return None

    def rotate(self, s: Session) -> Session:
        """Give the session a new id and CSRF token (at login and verification); the old
        id stops working at once."""
        self._sessions.pop(_digest(s.sid), None)
        s.sid = secrets.token_urlsafe(32)
        s.csrf = secrets.token_urlsafe(32)
        self._sessions[_digest(s.sid)] = s
        return s

    def end(self, s: Session) -> None:
        """Log out: the session is gone."""
        self._sessions.pop(_digest(s.sid), None)

    def end_user(self, user: str, keep: Session | None = None) -> int:
        """End every session of ``user`` but ``keep``; how many ended."""
        gone = [k for k, s in self._sessions.items()
                if s.user == user and s is not keep]
        for k in gone:
            del self._sessions[k]
        return len(gone)

    def _evict(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if self._expired(s, now)]:
            del self._sessions[k]
        if len(self._sessions) < self.max_sessions:
            return
        # Still full: drop the least recently used tenth, anonymous sessions first.
        order = sorted(self._sessions.items(),
                       key=lambda kv: (kv[1].logged_in, kv[1].last_seen))
        for k, _s in order[: max(1, self.max_sessions // 10)]:
            del self._sessions[k]
