"""HTTP Basic credentials through the front door, and the request log line.

``basic_login`` is the one authentication step of every EAS entrance (ActiveSync
POST, OPTIONS, Autodiscover): the ``Authorization`` header becomes
``ClientCredentials`` (with the client's address and the request's DeviceId, for the
throttle) and goes to ``easync.auth.door.FrontDoor``; the outcome is the ``User``, or
a ``Refusal`` saying how to answer:

- 401 + ``WWW-Authenticate`` only for missing or wrong credentials (a phone then asks
  its user for the password again);
- 429 + ``Retry-After`` for a lockout, 503 + ``Retry-After`` when the store,
  directory or CRM cannot answer, 403 when ActiveSync is off for the user.

``log_request`` writes the one log line per request (and counts it in /metrics).
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.cred.error import LoginFailed, UnauthorizedLogin
from twisted.logger import Logger, LogLevel
from twisted.web import server

from easync.auth.aspassword import ClientCredentials, LoginLockedOut
from easync.auth.door import FrontDoor, UserVanished
from easync.auth.local import as_text
from easync.errors import Unavailable
from easync.http.forwarded import Network, client_address
from easync.http.query import Query, QueryError, parse_query
from easync.metrics import Metrics
from easync.model import User
from easync.requestread import RequestSnapshot

__all__ = ["REALM", "Refusal", "basic_credentials", "basic_login", "client_addr",
           "confirm_login", "header", "log_request", "log_safe", "remembered_login",
           "request_body", "safe_name"]

log = Logger(namespace="easync.request")

REALM = b'Basic realm="easync"'


@dataclass
class Refusal:
    """How to answer a request that is not let in."""

    code: int
    user: str                        # for the log line (never the password)
    note: str
    headers: dict[bytes, bytes] = field(default_factory=dict)


async def basic_login(door: FrontDoor, request: server.Request,
                      trusted: Sequence[Network] = (), query: Query | None = None
                      ) -> User | Refusal:
    """The user of ``request``'s Basic credentials, or how to refuse it.  ``query``: the
    request line's query when the caller has parsed it already (its DeviceId counts)."""
    credentials = basic_credentials(request, trusted, query)
    if isinstance(credentials, Refusal):
        return credentials
    who = safe_name(as_text(credentials.username))
    try:
        user = await door.authenticate(credentials)
    except (UnauthorizedLogin, LoginFailed, Unavailable) as e:
        return _refusal(e, who)
    return _let_in(user)


def remembered_login(door: FrontDoor, request: server.Request,
                     trusted: Sequence[Network] = (), query: Query | None = None,
                     state: Any = None) -> Any:
    """Credentials of ``request`` the front door accepted lately, from memory alone
    (``FrontDoor.remembered``), or None: a login only once ``confirm_login`` says so.
    ``state``: the ``IStateStore`` the request's read goes to."""
    credentials = basic_credentials(request, trusted, query)
    if isinstance(credentials, Refusal):
        return None
    return door.remembered(credentials, state)


async def confirm_login(door: FrontDoor, request: server.Request, remembered: Any,
                        snapshot: RequestSnapshot, trusted: Sequence[Network] = (),
                        query: Query | None = None) -> User | Refusal:
    """The user of ``remembered`` credentials as ``basic_login`` gives it, confirmed by
    the request's read (``snapshot``); when they no longer hold, the whole login."""
    try:
        user = await door.confirm(remembered, snapshot)
    except (UnauthorizedLogin, LoginFailed, Unavailable) as e:
        return _refusal(e, remembered.user.name)
    if user is None:
        return await basic_login(door, request, trusted, query)
    return _let_in(user)


def _refusal(e: Exception, who: str) -> Refusal:
    """How to refuse a login that raised ``e``."""
    challenge = {b"WWW-Authenticate": REALM}
    if isinstance(e, LoginLockedOut):
        # Not a 401: the phone must not ask its user for the password again
        return Refusal(429, who, f"login refused: {e}",
                       {b"Retry-After": str(e.retry_after).encode()})
    if isinstance(e, UserVanished):
        return Refusal(401, who, "user vanished", challenge)
    if isinstance(e, Unavailable):
        return Refusal(503, who, f"directory unavailable: {e}", {b"Retry-After": b"30"})
    return Refusal(401, who, f"login refused: {e}", challenge)


def _let_in(user: User) -> User | Refusal:
    if not user.activesync:
        return Refusal(403, user.name, "ActiveSync not enabled")
    return user


def basic_credentials(request: server.Request, trusted: Sequence[Network] = (),
                      query: Query | None = None) -> ClientCredentials | Refusal:
    """The Basic credentials of ``request`` with its client address and DeviceId, or
    the 401 for missing or malformed ones."""
    value = header(request, b"authorization")
    challenge = {b"WWW-Authenticate": REALM}
    if not value or not value.lower().startswith("basic "):
        return Refusal(401, "-", "no credentials", challenge)
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
        username, sep, password = decoded.partition(":")
        if not sep:
            raise ValueError("no colon")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return Refusal(401, "-", "malformed Authorization", challenge)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in username):
        # RFC 7617 §2: no control characters in a user-id; refused before any store
        # sees it (PostgreSQL cannot hold a NUL: the look-up failed as "unavailable")
        return Refusal(401, safe_name(username),
                       "malformed Authorization: control characters in the user name",
                       challenge)
    # the DeviceId too: a familiar device is not refused by others' lockouts
    if query is not None:
        device = query.device_id
    else:
        try:
            device = parse_query(request.uri.partition(b"?")[2].decode("latin-1")).device_id
        except QueryError:
            device = ""
    return ClientCredentials(username, password, client_addr(request, trusted), device)


def log_request(request: server.Request, metrics: Metrics, counted: bool, code: int,
                user: str, device: str, cmd: str, note: str, t0: float,
                trusted: Sequence[Network] = (), eas_status: str = "",
                sizes: str = "") -> None:
    """The request's one log line, and its count in /metrics (as ``cmd`` when
    ``counted``, else as "other")."""
    ms = (time.monotonic() - t0) * 1000
    fields = {"user": log_safe(user), "device": log_safe(device or "-"),
              "cmd": log_safe(cmd), "code": code, "status": log_safe(eas_status or "-"),
              "ms": ms, "sizes": log_safe(sizes), "addr": log_safe(client_addr(request, trusted)),
              "note": f" ({log_safe(note)})" if note else ""}
    # The line is formatted here, once, and handed over as a format without fields
    # (its braces doubled): the log observers' own formatting (string.Formatter, field by
    # field) was most of a request's logging cost (issue #12 point 1).  The fields are
    # still in the event for observers that want them.
    line = (f"{fields['user']} {fields['device']} {fields['cmd']} http={code} "
            f"status={fields['status']} {ms:.1f}ms{fields['sizes']} {fields['addr']}"
            f"{fields['note']}")
    if "{" in line or "}" in line:
        line = line.replace("{", "{{").replace("}", "}}")
    log.emit(LogLevel.info, line, **fields)
    metrics.request(cmd if counted else "other", code, eas_status)


def request_body(request: server.Request, limit: int = -1) -> bytes:
    """The request's body (at most ``limit`` bytes; -1: all of it)."""
    content = request.content
    if content is None:
        return b""
    content.seek(0)
    return content.read(limit)


def header(request: server.Request, name: bytes) -> str | None:
    """A request header as stripped text (None when absent or empty)."""
    raw = request.getHeader(name)
    if not raw:
        return None
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    return text.strip()


def log_safe(value: object) -> str:
    """``value`` for a log line, characters that are not printable (newline, ESC, ...)
    escaped as ``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN``, so client text
    (DeviceId, User, ...) cannot split or forge a log line or send terminal escapes
    (issue #10). Linear in the length; printable text is returned as it is."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in text)


def client_addr(request: server.Request, trusted: Sequence[Network] = ()) -> str:
    """The client's address for logs: the TCP peer, or behind a trusted proxy the
    address it forwarded (``easync.http.forwarded``), shown as "CLIENT via PROXY"."""
    addr = request.getClientAddress()
    peer = getattr(addr, "host", None) or "-"
    if not trusted:
        return peer
    client, proxy = client_address(
        peer, request.requestHeaders.getRawHeaders(b"x-forwarded-for"), trusted)
    return client if proxy is None else f"{client} via {proxy}"


def safe_name(username: str) -> str:
    """A user name fit for a log line (never the password): its first 128 characters,
    those that are not printable escaped (``log_safe``), not dropped: dropped, a name
    like "an\\x00na" or "anna\\u200b" was logged as another user's ("anna")."""
    return log_safe(username[:128]) or "-"
