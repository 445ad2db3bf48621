"""The twisted.web side of the account page: ``/account/`` (HTML) and ``/account/api/``
(JSON), one leaf resource.

Every response carries the security headers (CSP without inline script or style,
``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``, ``nosniff``) and, except the
static files, ``Cache-Control: no-store``.  The session cookie is ``Secure; HttpOnly;
SameSite=Strict`` with ``Path=/account``.  Every POST must carry the session's CSRF
token (the ``csrf`` form field, or the ``X-CSRF-Token`` header for the JSON API) and is
refused from another site (``Sec-Fetch-Site``); a refused POST changes nothing.

One log line per request: method, path (never a query string, form field or cookie),
HTTP status, user, time taken.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import Resource

from easync import i18n
from easync.account import static, views
from easync.account.adapter import ServiceOps
from easync.account.api import Api
from easync.account.core import Account
from easync.account.pages import Pages
from easync.account.request import (
    COOKIE,
    MAX_FIELD,
    ROOT,
    Ctx,
    Reply,
    error_json,
    header,
    json_reply,
    redirect,
    refusal,
)
from easync.account.sessions import SessionStore
from easync.auth.accounts import AccountError
from easync.errors import Unavailable
from easync.http.basic import request_body
from easync.http.forwarded import Network
from easync.i18n import N_, _

log = Logger(namespace="easync.account")

CSP = (b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy", CSP),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
    (b"Permissions-Policy", b"camera=(), microphone=(), geolocation=()"),
)
MAX_BODY = 64 * 1024        # largest request body of the account page


Handler = Callable[[Ctx], Awaitable[Reply]]


class AccountResource(Resource):
    """``/account``: the pages, the JSON API and the static files."""

    isLeaf = True

    def __init__(self, ops: ServiceOps, clock: Any, *, trusted: Sequence[Network] = (),
                 sessions: SessionStore | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.sessions = sessions or SessionStore(clock)
        self.account = Account(ops, self.sessions, clock)
        self.ops = ops
        self.trusted = tuple(trusted)
        self.pages = Pages(self.account, ops, clock)
        self.api = Api(self.account, ops, clock)

    # ---------------------------------------------------------------- entry
    def render(self, request: server.Request) -> int | bytes:
        t0 = time.monotonic()
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        if request.isSecure():
            request.setHeader(b"Strict-Transport-Security", b"max-age=31536000")
        segments = [s.decode("utf-8", "replace") for s in request.postpath or ()]
        if not segments:                       # "/account" → "/account/"
            return self._send(request, redirect(ROOT + "/"), None, t0, sync=True)
        if segments[0] == "static" and len(segments) == 2:
            return self._static(request, segments[1])
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"Pragma", b"no-cache")
        d = Deferred.fromCoroutine(self._handle(request, segments, t0))
        d.addErrback(self._crash, request, t0)
        return server.NOT_DONE_YET

    def _static(self, request: server.Request, name: str) -> bytes:
        found = static.FILES.get(name)
        if found is None or request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found\n"
        body, ctype = found
        request.setHeader(b"Content-Type", ctype)
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        return body

    async def _handle(self, request: server.Request, segments: list[str], t0: float) -> None:
        # This coroutine runs in a context of its own: the language is this request's.
        i18n.use(i18n.negotiate(header(request, b"accept-language")))
        request.setHeader(b"Content-Language", i18n.current().encode("ascii"))
        request.setHeader(b"Vary", b"Accept-Language")
        ctx = Ctx(request, self.sessions, self.trusted)
        is_api = segments[0] == "api"
        path = "/".join(segments[1:] if is_api else segments)
        method = request.method.decode("ascii", "replace")
        table = self.api.routes if is_api else self.pages.routes
        handler = table.get((method if method != "HEAD" else "GET", path))
        try:
            if handler is None:
                known = any(p == path for _m, p in table)
                reply = self._not_found(is_api, known)
            else:
                if method == "POST":
                    self._read_body(ctx, is_api)
                    refused = self._check_post(ctx, is_api)
                    if refused is not None:
                        self._send(request, refused, ctx, t0)
                        return
                reply = await handler(ctx)
        except AccountError as e:     # a malformed request ("bad_request")
            status, headers = refusal(e)
            reply = (json_reply(error_json(e.code, e.message), status) if is_api else
                     Reply(status, self.pages.message_page(ctx, e.message)))
            reply.headers.update(headers)
        except Unavailable:
            msg = _("The account database or directory cannot answer right now. Nothing "
                    "was changed. Try again in a minute.")
            reply = (json_reply(error_json("unavailable", msg), 503) if is_api else
                     Reply(503, self.pages.message_page(ctx, msg)))
            reply.headers[b"Retry-After"] = b"30"
        self._send(request, reply, ctx, t0)

    def _not_found(self, is_api: bool, known_path: bool) -> Reply:
        status = 405 if known_path else 404
        text = _("Method not allowed.") if known_path else _("There is no such page.")
        if is_api:
            return json_reply(error_json("not_found" if status == 404 else "method", text),
                              status)
        return Reply(status, views.page(_("Not found"), views.message(text)))

    def _read_body(self, ctx: Ctx, is_api: bool) -> None:
        request = ctx.request
        raw = request_body(request, MAX_BODY + 1)
        if len(raw) > MAX_BODY or getattr(request, "_easync_too_large", False):
            raise _bad(_("The request is too large."))
        if is_api:
            ctype = (header(request, b"content-type") or "").split(";")[0].strip().lower()
            if not raw:
                ctx.json = {}
                return
            if ctype != "application/json":
                raise _bad(_("Send JSON (Content-Type: application/json)."))
            try:
                data = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError):
                # RecursionError: nested deeper than the decoder goes ("[" * 60000)
                raise _bad(_("The body is not valid JSON.")) from None
            if not isinstance(data, dict):
                raise _bad(_("The body must be a JSON object."))
            for k, v in data.items():
                if isinstance(v, str) and len(v) > MAX_FIELD:
                    raise _bad(_("The field {name} is too long.").format(name=repr(k)))
                if _has_nul(k) or _has_nul(v):
                    raise _bad(_("The field {name} contains a NUL character.").format(
                        name=repr(k)))
            ctx.json = data
            return
        args: dict[bytes, list[bytes]] = request.args or {}
        for key, values in args.items():
            try:
                name = key.decode("utf-8")
                value = values[-1].decode("utf-8") if values else ""
            except UnicodeDecodeError:
                raise _bad(_("The form was not sent as UTF-8 text.")) from None
            if len(value) > MAX_FIELD:
                raise _bad(_("A field of the form is too long."))
            if "\x00" in name or "\x00" in value:
                raise _bad(_("The field {name} contains a NUL character.").format(
                    name=repr(name)))
            ctx.fields[name] = value

    def _check_post(self, ctx: Ctx, is_api: bool) -> Reply | None:
        """CSRF: the session's token must come with the POST, from this site."""
        site = (header(ctx.request, b"sec-fetch-site") or "").lower()
        if site in ("cross-site", "same-site"):
            return self._csrf_refused(ctx, is_api, N_("The request came from another site."))
        if not ctx.has_session:
            why = (N_("Your session has ended. Nothing was changed. Log in again.")
                   if ctx.expired else N_("The form was not sent from this page (no "
                                          "session). Nothing was changed."))
            return self._csrf_refused(ctx, is_api, why)
        s = ctx.session
        token = header(ctx.request, b"x-csrf-token") if is_api else ctx.arg("csrf")
        if not s.check_csrf(token):
            return self._csrf_refused(ctx, is_api, N_("The form is out of date or did not "
                                                      "come from this page (CSRF token "
                                                      "missing or wrong). Nothing was "
                                                      "changed."))
        return None

    def _csrf_refused(self, ctx: Ctx, is_api: bool, reason: str) -> Reply:
        """A refused POST: ``reason`` (English, for the log) said in the visitor's
        language."""
        log.info("account page: POST refused ({why}) from {addr}", why=reason,
                 addr=ctx.addr)
        why = _(reason)
        if is_api:
            return json_reply(error_json("csrf", why), 403)
        return Reply(403, self.pages.csrf_page(ctx, why))

    # ---------------------------------------------------------------- output
    def _send(self, request: server.Request, reply: Reply, ctx: Ctx | None,
              t0: float, sync: bool = False) -> bytes:
        """Answer; with ``sync`` the body is returned (for ``render``), else written."""
        if ctx is not None:
            self._cookie(request, ctx)
        user = ctx.user() if ctx is not None else "-"
        log.info("account {method} {path} http={code} {user} {ms:.1f}ms {addr}",
                 method=request.method.decode("ascii", "replace"),
                 path=request.path.decode("utf-8", "replace")[:200], code=reply.status,
                 user=user, ms=(time.monotonic() - t0) * 1000,
                 addr=ctx.addr if ctx is not None else "-")
        if request.finished or request.channel is None:
            return b""
        request.setResponseCode(reply.status)
        for k, v in reply.headers.items():
            request.setHeader(k, v)
        if reply.location is not None:
            request.setHeader(b"Location", reply.location.encode("utf-8"))
        body = reply.body
        if body:
            request.setHeader(b"Content-Type", reply.ctype)
        request.setHeader(b"Content-Length", str(len(body)).encode())
        if sync:
            return body
        if request.method != b"HEAD":
            request.write(body)
        request.finish()
        return b""

    def _cookie(self, request: server.Request, ctx: Ctx) -> None:
        base = b"; Path=" + ROOT.encode() + b"; Secure; HttpOnly; SameSite=Strict"
        if ctx.ended:
            if ctx.cookie_in:
                request.cookies.append(COOKIE + b"=" + base + b"; Max-Age=0")
            return
        s = ctx._session
        if s is not None and s.sid != ctx.cookie_in:
            request.cookies.append(COOKIE + b"=" + s.sid.encode("ascii") + base)

    def _crash(self, failure: Failure, request: server.Request, t0: float) -> None:
        log.failure("account page: unexpected error", failure)
        try:
            self._send(request, Reply(500, views.page(
                _("Error"), views.message(_("Something went wrong on the server. Nothing "
                                            "was changed, or only part of it: reload the "
                                            "page to see.")))),
                None, t0)
        except RuntimeError:
            pass


def _has_nul(value: object) -> bool:
    """Whether a JSON value holds a NUL character in a string, at any depth (walked
    without recursion): no field of the page has one, and PostgreSQL cannot store one
    (the query failed: HTTP 500)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return True
        elif isinstance(v, list):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
    return False


def _bad(message: str) -> AccountError:
    """Malformed input (a field too long, not UTF-8, bad JSON): 400, nothing done."""
    return AccountError(message, "bad_request")


__all__ = ["MAX_BODY", "AccountResource"]
