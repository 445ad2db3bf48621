"""One request of the account page: its context (``Ctx``), what a handler answers
(``Reply``), and the one place a refusal becomes HTTP (``refusal``).

Every refusal of the account page is an ``easync.auth.accounts.AccountError`` — the
service's (wrong password, wrong code, throttled, …), the page's own input checks
(``"code_missing"``, ``"no_device"``, …) and malformed requests (``"bad_request"``);
``refusal`` gives its HTTP status and headers:

- 429 with ``Retry-After`` when it comes with a ``retry_after`` (throttled, locked
  out, a code asked for too soon);
- 401 for ``"login"`` (not logged in);
- 403 for wrong credentials and what is not allowed (``_FORBIDDEN``);
- 404 for what does not exist (``_NOT_FOUND``);
- 400 for everything else.

``web`` (the resource), ``pages`` (HTML) and ``api`` (JSON) import this module; it
imports none of them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from twisted.web import server

from easync.account import views
from easync.account.sessions import Session, SessionStore
from easync.auth.accounts import AccountError
from easync.http.forwarded import Network, client_address
from easync.i18n import _

__all__ = ["COOKIE", "MAX_FIELD", "ROOT", "Ctx", "Reply", "device_query", "error_json",
           "header", "json_reply", "redirect", "refusal", "safe_next", "verify_url"]

COOKIE = b"easync_account"
ROOT = views.ROOT
MAX_FIELD = 4096            # longest form or JSON value accepted (longer: refused)


@dataclass
class Reply:
    """What a handler answers: a page, JSON, or a redirect."""

    status: int = 200
    body: bytes = b""
    ctype: bytes = b"text/html; charset=utf-8"
    location: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)


def redirect(location: str) -> Reply:
    return Reply(status=303, location=location)


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status=status, body=json.dumps(data, indent=1).encode("utf-8") + b"\n",
                 ctype=b"application/json")


def error_json(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The JSON API's error body."""
    return {"error": {"code": code, "message": message, **extra}}


# Refusals answered 403 (wrong credentials, not allowed) and 404; the rest are 400, or
# 429 when they come with a Retry-After (throttled, locked out, a code asked too soon).
_FORBIDDEN = frozenset({"login_failed", "bad-password", "wrong-code", "expired-code",
                        "replayed-code", "no-code", "forbidden", "verify"})
_NOT_FOUND = frozenset({"not-found", "no_device", "no_user"})


def refusal(e: AccountError) -> tuple[int, dict[bytes, bytes]]:
    """The HTTP status and headers of the refusal ``e`` (see the module's docstring)."""
    if e.retry_after is not None:
        return 429, {b"Retry-After": str(int(e.retry_after + 0.999)).encode()}
    if e.code == "login":
        return 401, {}
    if e.code in _FORBIDDEN:
        return 403, {}
    if e.code in _NOT_FOUND:
        return 404, {}
    return 400, {}


def safe_next(raw: str | None) -> str:
    """Where to go after "confirm it's you": a path of this page, nothing else."""
    if not raw or not raw.startswith(ROOT + "/") or "//" in raw or "\\" in raw or any(
            ord(c) < 33 for c in raw):
        return ROOT + "/"
    return raw


def verify_url(next_url: str) -> str:
    return f"{ROOT}/verify?" + urlencode({"next": next_url})


def device_query(device_id: str) -> str:
    return quote(device_id, safe="")


def header(request: server.Request, name: bytes) -> str | None:
    raw = request.getHeader(name)
    if raw is None:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return text.strip()


class Ctx:
    """One request: its session (made on demand), form fields and client address."""

    def __init__(self, request: server.Request, sessions: SessionStore,
                 trusted: Sequence[Network]) -> None:
        self.request = request
        self.sessions = sessions
        raw = request.getCookie(COOKIE)
        self.cookie_in = raw.decode("ascii", "replace") if raw else None
        self.expired = sessions.expired_reason(self.cookie_in)
        self._session = sessions.get(self.cookie_in)
        peer = getattr(request.getClientAddress(), "host", None) or "-"
        self.addr = peer
        if trusted:
            self.addr, _proxy = client_address(
                peer, request.requestHeaders.getRawHeaders(b"x-forwarded-for"), trusted)
        self.fields: dict[str, str] = {}
        self.json: dict[str, Any] = {}
        self.ended = False

    @property
    def has_session(self) -> bool:
        return self._session is not None

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self.sessions.new()
            if self.expired == "absolute":
                self._session.say("error", _("Your session has ended (it lasts 8 hours "
                                             "at most). Log in again."))
            elif self.expired == "idle":
                self._session.say("error", _("Your session has ended after 15 minutes "
                                             "without activity. Log in again."))
            self.expired = None
        return self._session

    def arg(self, name: str) -> str | None:
        return self.fields.get(name)

    def query(self, name: str) -> str | None:
        args: dict[bytes, list[bytes]] = self.request.args or {}
        values = args.get(name.encode()) if self.request.method == b"GET" else None
        if not values:
            return None
        return values[0].decode("utf-8", "replace")[:MAX_FIELD]

    def end(self) -> None:
        if self._session is not None:
            self.sessions.end(self._session)
        self._session = None
        self.ended = True

    def user(self) -> str:
        return self._session.user if self._session and self._session.user else "-"
