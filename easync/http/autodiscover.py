"""Autodiscover (MS-ASCMD 2.2.1.1), mobilesync schema: e-mail and password are enough.

``POST /autodiscover/autodiscover.xml`` with Basic credentials and a small XML
request naming the e-mail address and the response schema; the answer gives the
ActiveSync URL.  Only the mobilesync schema is served (Outlook desktop's "outlook"
schema gets error 601, provider not available).  The credentials go through the same
front door as ActiveSync's (``easync.http.basic.basic_login``), with the same answers
and the same request log line.
"""

from __future__ import annotations

import re
import time
from xml.sax.saxutils import escape

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from easync.auth.door import FrontDoor
from easync.handler import EasServer
from easync.http.basic import Refusal, basic_login, log, log_request, request_body
from easync.http.forwarded import parse_networks

CMD = "Autodiscover"            # how its requests are logged and counted

MOBILESYNC = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
MAX_BODY = 16 * 1024
_EMAIL = re.compile(rb"<(?:\w+:)?EMailAddress>\s*([^<\s]{1,320})\s*</", re.IGNORECASE)
_SCHEMA = re.compile(rb"<(?:\w+:)?AcceptableResponseSchema>\s*([^<\s]{1,300})\s*</", re.IGNORECASE)


def public_url(server_: EasServer, request: Request) -> str:
    """The ActiveSync URL phones should use: --public-url, else this request's host."""
    base = server_.settings.public_url.rstrip("/")
    if not base:
        host = (request.getHeader(b"host") or b"").decode("latin-1").strip()
        if not host or not re.fullmatch(r"[A-Za-z0-9.\-:\[\]]{1,255}", host):
            host = "localhost"
        scheme = "https" if request.isSecure() else "http"
        base = f"{scheme}://{host}"
    return f"{base}/Microsoft-Server-ActiveSync"


def mobilesync_response(email: str, display_name: str, url: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_NS}">'
        f'<Response xmlns="{MOBILESYNC}">'
        "<Culture>en:us</Culture>"
        f"<User><DisplayName>{escape(display_name)}</DisplayName>"
        f"<EMailAddress>{escape(email)}</EMailAddress></User>"
        "<Action><Settings><Server><Type>MobileSync</Type>"
        f"<Url>{escape(url)}</Url><Name>{escape(url)}</Name>"
        "</Server></Settings></Action></Response></Autodiscover>"
    ).encode()


def error_response(code: int, message: str) -> bytes:
    stamp = time.strftime("%H:%M:%S", time.gmtime())
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_NS}"><Response>'
        f'<Error Time="{stamp}" Id="1"><ErrorCode>{code}</ErrorCode>'
        f"<Message>{escape(message)}</Message><DebugData/></Error>"
        "</Response></Autodiscover>"
    ).encode()


class AutodiscoverResource(Resource):
    """``/autodiscover/autodiscover.xml`` (GET is answered as POST)."""

    isLeaf = True
    # (twisted.web's Resource declares an unused ``server = None``)
    server: EasServer  # type: ignore[assignment]

    def __init__(self, server_: EasServer, door: FrontDoor) -> None:
        super().__init__()
        self.server = server_
        self.door = door
        self.trusted = parse_networks(server_.settings.trusted_proxies)

    def render_GET(self, request: Request) -> int:
        return self.render_POST(request)

    def render_POST(self, request: Request) -> int:
        t0 = time.monotonic()
        d = Deferred.fromCoroutine(self._post(request, t0))
        d.addErrback(self._crash, request, t0)
        return NOT_DONE_YET

    async def _post(self, request: Request, t0: float) -> None:
        outcome = await basic_login(self.door, request, self.trusted)
        if isinstance(outcome, Refusal):
            for name, value in outcome.headers.items():
                request.setHeader(name, value)
            self._finish(request, outcome.code, b"", outcome.user, outcome.note, t0)
            return
        user = outcome
        body = request_body(request, MAX_BODY + 1)
        schema = _SCHEMA.search(body)
        email_m = _EMAIL.search(body)
        if len(body) > MAX_BODY or schema is None or email_m is None:
            data, note = error_response(600, "Invalid Request"), "invalid request"
        elif schema.group(1).decode("utf-8", "replace") != MOBILESYNC:
            data, note = error_response(601, "Provider is not available"), "schema not served"
        else:
            email = user.email or email_m.group(1).decode("utf-8", "replace")
            data = mobilesync_response(email, user.name, public_url(self.server, request))
            note = ""
        request.setHeader(b"Content-Type", b"text/xml; charset=utf-8")
        self._finish(request, 200, data, user.name, note, t0)

    def _finish(self, request: Request, code: int, data: bytes, user: str,
                note: str, t0: float) -> None:
        """Answer (the body is the caller's XML, or nothing) and log the request."""
        log_request(request, self.server.metrics, True, code, user, "", CMD, note, t0,
                    self.trusted)
        if request.finished or getattr(request, "_disconnected", False) or (
            request.channel is None
        ):
            return
        request.setResponseCode(code)
        if code != 200:     # a refusal: headed like ActiveSync's own
            request.setHeader(b"MS-Server-ActiveSync",
                              self.server.settings.server_version.encode())
            request.setHeader(b"Cache-Control", b"private")
        request.setHeader(b"Content-Length", str(len(data)).encode())
        if data:
            request.write(data)
        request.finish()

    def _crash(self, failure: Failure, request: Request, t0: float) -> None:
        if failure.check(CancelledError):
            log.info("request cancelled: client went away ({cmd})", cmd=CMD)
            return
        log.failure("unexpected error in {cmd}", failure, cmd=CMD)
        try:
            self._finish(request, 500, b"", "-", "server error", t0)
        except RuntimeError:  # the connection is gone
            log.info("could not answer {cmd}: connection gone", cmd=CMD)
