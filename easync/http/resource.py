"""The twisted.web side: ``/Microsoft-Server-ActiveSync`` (OPTIONS and POST).

One request goes: size limit → query (plain or base64 form) → Basic auth
through the front door (``easync.http.basic``: the twisted.cred ``Portal`` of
``easync.auth.door``) → ActiveSync allowed? → the command (``easync.commands``'
static table) → version → content coding
(gzip/deflate body decoded, the size limit applied again to what it decodes to)
→ WBXML decode → root element check → device record → provisioning → the
command's handler → WBXML encode (→ gzip when the client accepts it).  Every
failure gets the protocol's HTTP code or Status and one log line; no traceback
ever reaches the client.

Database round trips (issue #12 point 4): credentials the checker accepted lately are
let in from memory, provisionally (``remembered_login``); the device record is then
read in one transaction (``IStateStore.read_request``) with the user's record, the
lockout rows when their recheck is due, and what Sync reads first (its states, the
folders), and the login is confirmed on those rows (``confirm_login``: a password,
2FA or lockout change made in any process counts at once) before anything else runs.
An empty Sync costs that one transaction.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from easync.auth.door import FrontDoor
from easync.commands import COMMANDS
from easync.commands import provisioning as provisioning_policy
from easync.deviceaccess import device_refusal
from easync.errors import TooManyDevices, Unavailable
from easync.handler import EasHTTPError, EasRequest, EasResponse, EasServer
from easync.http.autodiscover import AutodiscoverResource
from easync.http.basic import (
    Refusal,
    basic_login,
    client_addr,
    confirm_login,
    header,
    log,
    log_request,
    log_safe,
    remembered_login,
    request_body,
)
from easync.http.forwarded import parse_networks
from easync.http.limits import ConnectionLimits
from easync.http.query import COMMAND_CODES, Query, QueryError, parse_query
from easync.model import User
from easync.notify import Lookout
from easync.policy import user_fingerprint
from easync.requestread import RequestRead, RequestSnapshot
from easync.versions import VERSIONS, version_tuple
from easync.wbxml import E, WBXMLError, decode, encode
from easync.wbxml.element import Element

__all__ = ["ActiveSyncResource", "EasRequestFactory", "RootResource", "log_safe",
           "make_root", "make_site"]

WBXML_TYPE = b"application/vnd.ms-sync.wbxml"

# MS-ASCMD 2.2.2 common status: the user has as many devices as allowed.
MAX_DEVICES_REACHED = "177"
# Command names counted as themselves in /metrics (anything else a client sends: "other").
COUNTED = {*COMMANDS, "OPTIONS", "Autodiscover"}
# EAS commands easync does not implement (the MS-ASHTTP 2.2.1.1.1.1.2 command codes that
# have no handler: GetAttachment, ValidateCert): HTTP 501, not 400 (MS-ASHTTP 2.2.2.1.1)
NOT_IMPLEMENTED = frozenset(COMMAND_CODES.values()) - COMMANDS.keys()


# -- Content codings (RFC 9110 §8.4) ---------------------------------------------------
# MS-ASHTTP names Content-Encoding only for responses (§2.2.2.1.2: "gzip", required when
# the response is compressed), so a coded request body is plain HTTP: RFC 9110 §8.4.1
# defines gzip ("x-gzip" is the same, §8.4.1.3) and deflate (zlib format, §8.4.1.2; some
# clients send it raw, without the zlib wrapper, and that is accepted too).  Any other
# coding is answered 415 with the codings accepted (RFC 9110 §8.4 allows 415 for a content
# coding "not acceptable", §15.5.16 and §12.5.3 the Accept-Encoding to send with it).
REQUEST_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
ACCEPTED_CODINGS = b"gzip, deflate"
CODING_STEP = 256 * 1024   # bytes inflated (or compressed) per step: about a millisecond
CODING_PIECE = 64 * 1024   # compressed bytes handed to zlib at a time
CODING_SLICE = 0.01        # seconds of steps before the reactor gets a turn
GZIP_LEVEL = 6


class CodingError(ValueError):
    """A request body's content coding cannot be undone; ``code`` is the HTTP answer."""

    code = 400


class UnsupportedCoding(CodingError):
    code = 415


class CorruptBody(CodingError):
    code = 400


class DecodedTooLarge(CodingError):
    code = 413


def request_coding(values: Sequence[bytes] | None) -> str:
    """The content coding of a request body from its Content-Encoding field values:
    "" (none, or identity), "gzip" or "deflate".  Anything else, including more than one
    coding applied, raises UnsupportedCoding."""
    codings = [c.strip().lower() for v in values or () for c in v.split(b",")]
    codings = [c for c in codings if c and c != b"identity"]
    if not codings:
        return ""
    if len(codings) == 1 and codings[0].decode("latin-1") in REQUEST_CODINGS:
        return REQUEST_CODINGS[codings[0].decode("latin-1")]
    shown = b", ".join(codings).decode("latin-1")
    raise UnsupportedCoding("".join(c for c in shown if c.isprintable())[:60])


def accepts_gzip(values: Sequence[bytes] | None) -> bool:
    """Whether an Accept-Encoding (RFC 9110 §12.5.3) allows a gzip response: gzip (or
    x-gzip) with a weight above 0, or "*" above 0 when gzip is not named at all."""
    named: float | None = None
    star: float | None = None
    for value in values or ():
        for item in value.split(b","):
            token, _, params = item.partition(b";")
            token = token.strip().lower()
            if token in (b"gzip", b"x-gzip"):
                named = max(named or 0.0, _weight(params))
            elif token == b"*":
                star = max(star or 0.0, _weight(params))
    if named is not None:
        return named > 0
    return star is not None and star > 0


def _weight(params: bytes) -> float:
    """The q= of an Accept-Encoding element (1 if absent, 0 if malformed)."""
    for param in params.split(b";"):
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


class Inflater:
    """Undoes a gzip or deflate request body in bounded steps.

    ``steps()`` inflates at most ``step`` bytes each time it is advanced and never
    holds more than ``limit`` + 1 decoded bytes: one byte over the limit raises
    DecodedTooLarge, so a small "zip bomb" costs ``limit`` bytes of memory and of
    work at most.  Corrupt or truncated input raises CorruptBody.  Gzip's
    concatenated members (RFC 1952 §2.2) are decoded one after the other; anything
    else after the end of the stream is corrupt.  When the steps are done, ``body``
    holds the decoded bytes.
    """

    def __init__(self, coding: str, data: bytes, limit: int, step: int = CODING_STEP,
                 piece: int = CODING_PIECE) -> None:
        if coding not in ("gzip", "deflate"):
            raise UnsupportedCoding(coding)
        self.coding = coding
        self.data = data
        self.limit = limit
        self.step = step
        self.piece = piece
        self.body = b""

    def _wbits(self, head: bytes) -> int:
        if self.coding == "gzip":
            return 16 + zlib.MAX_WBITS
        # deflate is zlib-wrapped (RFC 1950 header: CM 8, FCHECK); raw deflate otherwise
        if len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0:
            return zlib.MAX_WBITS
        return -zlib.MAX_WBITS

    def steps(self) -> Iterator[None]:
        data = memoryview(self.data)
        pos = 0
        out = bytearray()
        pending: bytes | memoryview = b""
        while True:                         # one compressed stream (gzip member) a turn
            if not pending:
                pending, pos = data[pos:pos + self.piece], pos + self.piece
            inflater = zlib.decompressobj(self._wbits(bytes(pending[:2])))
            while not inflater.eof:
                if not pending and pos < len(data):
                    pending, pos = data[pos:pos + self.piece], pos + self.piece
                want = min(self.step, self.limit + 1 - len(out))
                try:
                    chunk = inflater.decompress(pending, want)
                except zlib.error as e:
                    raise CorruptBody(f"corrupt {self.coding} data ({e})") from None
                out += chunk
                if len(out) > self.limit:
                    raise DecodedTooLarge(f"over {self.limit} bytes once decoded")
                pending = inflater.unconsumed_tail
                if not inflater.eof and not pending and pos >= len(data) and len(chunk) < want:
                    raise CorruptBody(f"truncated {self.coding} data")
                yield
            pending = inflater.unused_data
            if not pending and pos >= len(data):
                break
            if self.coding != "gzip":
                raise CorruptBody("data after the end of the deflate stream")
        self.body = bytes(out)


def gzip_steps(data: bytes, sink: list[bytes], step: int = CODING_STEP) -> Iterator[None]:
    """Compress ``data`` as one gzip member into ``sink``, ``step`` bytes a step."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    view = memoryview(data)
    for start in range(0, len(data), step):
        sink.append(compressor.compress(view[start:start + step]))
        yield
    sink.append(compressor.flush())


async def run_sliced(steps: Iterator[None], slice_seconds: float = CODING_SLICE) -> None:
    """Run ``steps`` to the end, giving the reactor a turn every ``slice_seconds``: a big
    body is decoded or compressed without holding up the other requests.  A small one
    is done at once, with no turn given."""
    mark = time.monotonic()
    for _ in steps:
        if time.monotonic() - mark >= slice_seconds:
            from twisted.internet import reactor

            await deferLater(reactor, 0, lambda: None)
            mark = time.monotonic()


async def inflate(coding: str, data: bytes, limit: int) -> bytes:
    """The decoded body of a gzip or deflate request (see Inflater, run_sliced)."""
    inflater = Inflater(coding, data, limit)
    await run_sliced(inflater.steps())
    return inflater.body


async def gzip_body(data: bytes) -> bytes:
    """``data`` as a gzip response body (see gzip_steps, run_sliced)."""
    parts: list[bytes] = []
    await run_sliced(gzip_steps(data, parts))
    return b"".join(parts)


#: request bodies up to this size are decoded in the reactor thread (at most a few
#: ms); a bigger one in a pool thread
DECODE_INLINE = 32 * 1024


async def decode_wbxml(data: bytes) -> Element:
    """The WBXML body ``data`` decoded (WBXMLError when malformed).  A big one (up to
    --max-request-size: 16 MB of small elements take seconds of CPU) is decoded in a
    thread of the reactor's pool, so that the reactor keeps its turns; a small one at
    once."""
    if len(data) <= DECODE_INLINE:
        return decode(data)
    from twisted.internet import threads

    return await threads.deferToThread(decode, data)


#: answers of up to this many elements are encoded in the reactor thread (a few ms);
#: a bigger one in a pool thread
ENCODE_INLINE = 5000


def _more_elements(root: Element, limit: int) -> bool:
    """Has the tree more than ``limit`` elements?  (Stops counting there.)"""
    count = 1
    stack = [root]
    while stack:
        node = stack.pop()
        count += len(node.children)
        if count > limit:
            return True
        stack.extend(node.children)
    return False


async def encode_wbxml(root: Element) -> bytes:
    """``root`` encoded as WBXML.  A big answer (40,000 ItemOperations Fetches: 2 MB,
    150 ms of CPU) is encoded in a thread of the reactor's pool, so that the reactor
    keeps its turns; a small one at once (see ``decode_wbxml``)."""
    if not _more_elements(root, ENCODE_INLINE):
        return encode(root)
    from twisted.internet import threads

    return await threads.deferToThread(encode, root)


# The request attribute that carries the content coding's sizes to the log line.
CODING_NOTE = "_easync_in"
# The request attribute that carries the command's EasRequest (a held one's owner).
REQUEST_NOTE = "_easync_req"
# The HTTP code logged for a request whose client went before the answer (nothing is
# sent; nginx's 499 "client closed request"), with the note "client gone".
CLIENT_GONE = 499


def _note_coding(request: Request, sizes: str) -> None:
    setattr(request, CODING_NOTE, sizes)


# Reason phrases of the codes easync sends that twisted.web does not know (it would send
# "Unknown Status"): RFC 6585 section 4.
REASONS = {429: b"Too Many Requests"}


class EasRequestFactory(Request):
    """A Request that stops buffering a body past the configured limit, and gives the
    codes of ``REASONS`` their reason phrase (the request class of every easync site:
    ActiveSync, Autodiscover and the account page)."""

    max_bytes = 16 * 1024 * 1024

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        super().setResponseCode(code, message if message is not None else REASONS.get(code))

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        # An ActiveSync body is WBXML, never a form: no twisted.web form parsing, whose
        # Content-Type check builds an email.message per POST (~40 us, and two classes
        # of cyclic garbage for the collector: issue #12 point 2).
        if path[:28].lower() == b"/microsoft-server-activesync":
            self._parsePOSTFormSubmission = False
        super().requestReceived(command, path, version)

    def gotLength(self, length: int | None) -> None:
        self._easync_seen = 0
        self._easync_too_large = length is not None and length > self.max_bytes
        if self._easync_too_large:
            length = 0
            if self.channel is not None:
                # Answered now, not once the body is in: a Content-Length over the
                # limit is refused (413 on ActiveSync) as soon as the head is read,
                # the body is never read (no "100 Continue" invites it) and the
                # connection closes after the answer — neither a phone nor an attacker
                # uploads gigabytes for nothing (RFC 9110 15.5.14: the server may close
                # the connection).  twisted.web's channel takes a length of 0 as "the
                # body is complete".
                self.channel.length = 0
                self.channel.persistent = False
                self.requestHeaders.removeHeader(b"expect")
                self.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        self._easync_seen = getattr(self, "_easync_seen", 0) + len(data)
        if self._easync_seen > self.max_bytes:
            self._easync_too_large = True
        if getattr(self, "_easync_too_large", False):
            return
        super().handleContentChunk(data)


class ActiveSyncResource(Resource):
    """``/Microsoft-Server-ActiveSync``: every request is let in by ``door`` (see
    ``authenticate``) and dispatched through ``easync.commands.COMMANDS``."""

    isLeaf = True
    # (twisted.web's Resource declares an unused ``server = None``)
    server: EasServer  # type: ignore[assignment]

    def __init__(self, server_: EasServer, door: FrontDoor) -> None:
        super().__init__()
        self.server = server_
        self.door = door
        top = version_tuple(server_.settings.server_version)
        self.offered = [v for v in VERSIONS if version_tuple(v) <= top]
        self.versions = ",".join(self.offered)
        # a command newer than the newest version offered is not advertised (Find needs
        # 16.1, MS-ASCMD 2.2.3.69; MS-ASHTTP 2.2.4.1.2.1: the commands the server supports)
        newest = max(version_tuple(v) for v in self.offered)
        self.commands = ",".join(c.name for c in COMMANDS.values() if c.since <= newest)
        self._seen: dict[tuple[int, str], float] = {}
        self.trusted = parse_networks(server_.settings.trusted_proxies)

    async def authenticate(self, request: Request, cmd: str, t0: float,
                           query: Query | None = None) -> User | None:
        """The user of ``request`` (``easync.http.basic.basic_login``), or None once it
        has been answered (401, 403, 429 or 503) and logged as ``cmd``.  ``query``: the
        request line's query, when already parsed."""
        outcome = await basic_login(self.door, request, self.trusted, query)
        if isinstance(outcome, Refusal):
            self._refuse(request, outcome, cmd, t0)
            return None
        return outcome

    def _refuse(self, request: Request, refusal: Refusal, cmd: str, t0: float) -> None:
        """Answer a login refused (401, 403, 429 or 503), logged as ``cmd``."""
        for name, value in refusal.headers.items():
            request.setHeader(name, value)
        self._finish(request, refusal.code, b"", refusal.user, "", cmd, refusal.note, t0)

    # -- OPTIONS -----------------------------------------------------------------
    def render_OPTIONS(self, request: Request) -> int:
        d = Deferred.fromCoroutine(self._options(request))
        d.addErrback(self._crash, request, "OPTIONS", time.monotonic())
        return NOT_DONE_YET

    async def _options(self, request: Request) -> None:
        t0 = time.monotonic()
        user = await self.authenticate(request, "OPTIONS", t0)
        if user is None:
            return
        request.setHeader(b"MS-Server-ActiveSync", self.server.settings.server_version.encode())
        request.setHeader(b"MS-ASProtocolVersions", self.versions.encode())
        request.setHeader(b"MS-ASProtocolCommands", self.commands.encode())
        request.setHeader(b"Allow", b"OPTIONS,POST")
        request.setHeader(b"Public", b"OPTIONS,POST")
        request.setHeader(b"Cache-Control", b"private")
        self._finish(request, 200, b"", user.name, "", "OPTIONS", "", t0)

    def render_GET(self, request: Request) -> bytes:
        request.setResponseCode(http.NOT_ALLOWED)
        request.setHeader(b"Allow", b"OPTIONS,POST")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"This is an Exchange ActiveSync endpoint: add it to a phone as an Exchange account.\n"

    # -- POST --------------------------------------------------------------------
    def render_POST(self, request: Request) -> int:
        t0 = time.monotonic()
        d = Deferred.fromCoroutine(self._post(request, t0))
        request.notifyFinish().addErrback(self._gone, request, d)
        d.addErrback(self._crash, request, "POST", t0)
        return NOT_DONE_YET

    def _gone(self, _reason: Failure, request: Request, d: Deferred[None]) -> None:
        """The client closed the connection before the answer.  A held long poll (a
        Ping, MS-ASCMD 2.2.1.13, held until a change or its heartbeat; or a Sync with
        Wait) is not cancelled here: ``Hold.gone`` queues it, and its handler returns
        in one of the ``Holds`` answer slices, its answer unsent and logged as the
        client gone (``_respond``).  Cancelling builds a ``Failure`` with a traceback
        per request in this very turn: 20,000 connections dropped at once (a NAT
        gateway, a network blip) held the reactor for seconds (issue #12).  A request
        still running its command is cancelled."""
        req = getattr(request, REQUEST_NOTE, None)
        if req is not None:
            hold = self.server.holds.held_by(req, req.user.id, req.device_id)
            if hold is not None:
                hold.gone()
                return
        d.cancel()

    async def _post(self, request: Request, t0: float) -> None:
        settings = self.server.settings
        if getattr(request, "_easync_too_large", False):
            self._finish(request, 413, b"", "-", "", "?", "body over the size limit", t0)
            return
        # parsed once, before the login (which counts its DeviceId); a bad query is
        # answered 400 only to a user let in
        raw_qs = request.uri.split(b"?", 1)[1].decode("latin-1") if b"?" in request.uri else ""
        parsed: Query | QueryError
        try:
            parsed = parse_query(raw_qs)
        except QueryError as e:
            parsed = e
        known = parsed if isinstance(parsed, Query) else None
        state = self.server.state
        # credentials accepted lately are let in from memory, provisionally: the
        # request's one read (below) confirms them before any command runs
        remembered = remembered_login(self.door, request, self.trusted, known, state)
        if remembered is not None:
            user: User | None = remembered.user
        else:
            user = await self.authenticate(request, "?", t0, known)
        if user is None:
            return
        if isinstance(parsed, QueryError):
            self._finish(request, 400, b"", user.name, "", "?", f"bad query: {parsed}", t0)
            return
        q = parsed
        cmd = q.cmd
        device_id = q.device_id
        command = COMMANDS.get(cmd)
        if command is None:
            if cmd in NOT_IMPLEMENTED:
                # MS-ASHTTP 2.2.2.1.1: 501 for what the server cannot do at all; 400 is
                # for a malformed request (a command no EAS version has)
                self._finish(request, 501, b"", user.name, device_id, cmd,
                             "command not implemented", t0)
                return
            self._finish(request, 400, b"", user.name, device_id, cmd or "?",
                         "unknown or missing command", t0)
            return
        if not device_id or len(device_id) > 64:
            self._finish(request, 400, b"", user.name, device_id, cmd, "missing DeviceId", t0)
            return
        if not q.device_type:
            self._finish(request, 400, b"", user.name, device_id, cmd, "missing DeviceType", t0)
            return
        version = q.version or header(request, b"ms-asprotocolversion") or "14.1"
        if version not in self.offered:
            self._finish(request, 400, b"", user.name, device_id, cmd,
                         f"unsupported protocol version {version!r}", t0)
            return
        raw = request_body(request)
        body = None
        if raw:
            decoded = await self._decode_body(request, raw, user.name, device_id, cmd, t0)
            if decoded is None:
                return
            raw = decoded       # (a gzip of nothing is an empty body, as for Sync and Ping)
        if raw:
            ctype = (header(request, b"content-type") or "").lower()
            if command.mime_body and version_tuple(version) < (14, 0) and "wbxml" not in ctype:
                pass  # 12.x mail: raw MIME, handled by the command
            else:
                try:
                    body = await decode_wbxml(raw)
                except WBXMLError as e:
                    self._finish(request, 400, b"", user.name, device_id, cmd,
                                 f"bad WBXML: {e}", t0)
                    return
                if body.tag != command.root:
                    self._finish(request, 400, b"", user.name, device_id, cmd,
                                 f"root {body.tag} does not match Cmd", t0)
                    return
        elif not command.empty_ok:
            self._finish(request, 400, b"", user.name, device_id, cmd, "empty body", t0)
            return
        # one transaction: the user (confirming remembered credentials), the device,
        # and what the command will read first (Sync: its states and the folders)
        plan = command.reads(self.server, user, device_id, body) if command.reads else None
        lookout = None
        if plan is not None and plan.listen:
            # a long poll hears the user's changes from before its read on (closed by
            # its hold, or here when the request ends before one)
            lookout = Lookout(self.server.notifier, user.id)
            request.notifyFinish().addBoth(lookout.finished)
        auth = remembered.auth if remembered is not None else None
        try:
            read: RequestSnapshot = await state.read_request(
                RequestRead(user.name, device_id, plan.states, plan.folders, auth,
                            plan.follow, plan.follow_max) if plan is not None else
                RequestRead(user.name, device_id, auth=auth))
        except Unavailable as e:
            self._later(request, user.name, device_id, cmd, f"unavailable: {e}", t0)
            return
        if remembered is not None:
            outcome = await confirm_login(self.door, request, remembered, read,
                                          self.trusted, q)
            if isinstance(outcome, Refusal):
                self._refuse(request, outcome, cmd, t0)
                return
            user = outcome
        snapshot: RequestSnapshot | None = read
        if read.user is None or read.user.id != user.id:
            snapshot = None          # (the user was made again meanwhile)
        else:
            read.lookout = lookout
        try:
            device = await self._touch_device(user, q, request, snapshot, version)
        except TooManyDevices as e:
            self._too_many_devices(request, user.name, device_id, cmd, version, e, t0)
            return
        except Unavailable as e:
            # (a new database connection for the device's row failed: the descriptor
            # limit, a database gone) a retry later, as for the request's read above
            self._later(request, user.name, device_id, cmd, f"unavailable: {e}", t0)
            return
        rules = snapshot.rules if snapshot is not None else \
            await state.list_device_rules(user)
        refusal = device_refusal(device, rules, q.device_id, q.device_type,
                                 header(request, b"user-agent") or "", cmd, version)
        if refusal is not None:
            resp = provisioning_policy.refused_device_response(cmd, version)
            data = encode(resp.body) if resp.body is not None else b""
            self._finish(request, resp.http_status, data, user.name, device_id, cmd,
                         refusal, t0, eas_status=resp.status)
            return
        self.door.note_device(user, device_id)   # when the ActiveSync password was last used
        req = EasRequest(
            cmd=cmd, user=user, device_id=device_id, device_type=q.device_type,
            version=version,
            policy_key=q.policy_key or header(request, b"x-ms-policykey"),
            params=dict(q.params), user_agent=header(request, b"user-agent") or "",
            body=body, raw_body=raw if body is None else b"",
            client_addr=client_addr(request, self.trusted), device=device,
            preloaded=snapshot,
        )
        setattr(request, REQUEST_NOTE, req)      # (for _gone and _crash)
        if cmd != "Provision" and (settings.provisioning
                                   or provisioning_policy.wipe_pending(req.device)):
            # (without provisioning too, a wipe pending sends the device to Provision,
            # which carries it: the wipe is delivered whatever the access state, and a
            # device blocked then ordered wiped must not sync in the meantime)
            blocked = self._policy_check(req)
            if blocked is not None:
                await self._respond(request, req, blocked, t0, note="policy key")
                return
        del raw, body, device, snapshot, read   # (a held request keeps only what it needs)
        handler = command.handle(self.server, req)
        try:
            if command.long_poll:     # no time limit, and no Deferred of its own to keep
                resp = await handler
            else:
                resp = await Deferred.fromCoroutine(handler).addTimeout(
                    settings.request_timeout, self.server.clock)
        except EasHTTPError as e:
            for k, v in e.headers.items():
                request.setHeader(k.encode(), v.encode())
            self._finish(request, e.code, b"", user.name, device_id, cmd, e.reason, t0)
            return
        except TimeoutError:
            self._later(request, user.name, device_id, cmd, "timed out", t0)
            return
        except Unavailable as e:
            self._later(request, user.name, device_id, cmd, f"unavailable: {e}", t0)
            return
        await self._respond(request, req, resp, t0)

    async def _decode_body(self, request: Request, raw: bytes, user: str,
                           device_id: str, cmd: str, t0: float) -> bytes | None:
        """The body with its content coding undone, or None once answered 415 (a coding
        not known), 413 (over the size limit once decoded) or 400 (corrupt)."""
        limit = self.server.settings.max_request_bytes
        coding = ""
        try:
            coding = request_coding(request.requestHeaders.getRawHeaders(b"content-encoding"))
            if not coding:
                return raw
            decoded = await inflate(coding, raw, limit)
        except UnsupportedCoding as e:
            request.setHeader(b"Accept-Encoding", ACCEPTED_CODINGS)
            self._finish(request, e.code, b"", user, device_id, cmd,
                         f"unsupported Content-Encoding {e}", t0)
            return None
        except DecodedTooLarge as e:
            _note_coding(request, f"{coding}:{len(raw)}B>{limit}B+")
            self._finish(request, e.code, b"", user, device_id, cmd,
                         "body over the size limit once decoded", t0)
            return None
        except CodingError as e:
            _note_coding(request, f"{coding}:{len(raw)}B")
            self._finish(request, e.code, b"", user, device_id, cmd, f"bad body: {e}", t0)
            return None
        _note_coding(request, f"{coding}:{len(raw)}B>{len(decoded)}B")
        return decoded

    def _policy_check(self, req: EasRequest) -> EasResponse | None:
        # the fingerprint of the policy the user has now (the server's, with the
        # user's own settings over it, read with this request): a device that
        # acknowledged another one provisions again (143 / 449)
        current = user_fingerprint(self.server.settings.policy,
                                   req.user.extra.get("policy"))
        status = provisioning_policy.policy_status(req.device, req.policy_key, current)
        if status is None:
            return None
        return provisioning_policy.policy_required_response(req.cmd, req.version, status)

    async def _touch_device(self, user: User, q: Query, request: Request,
                            snapshot: RequestSnapshot | None = None,
                            version: str = "") -> dict[str, Any]:
        """The device record (read with the request, ``snapshot``, or now); last-seen
        written at most once a minute per device, and at once when the user agent
        changes or the device speaks a protocol version above any it spoke before
        (``protocol_version``: what tells whether it can take an account-only wipe)."""
        state = self.server.state
        if snapshot is not None:
            device = snapshot.device
        else:
            device = await state.get_device(user, q.device_id)
        now = self.server.clock.seconds()
        key = (user.id, q.device_id)
        ua = header(request, b"user-agent") or ""
        newer = bool(version) and (device is None or not device.get("protocol_version")
                                   or version_tuple(version) > version_tuple(
                                       str(device["protocol_version"])))
        if device is None or now - self._seen.get(key, 0) > 60 or newer or (
            device.get("user_agent") != ua
        ):
            fields: dict[str, Any] = {"device_type": q.device_type, "user_agent": ua,
                                      "last_seen": now}
            if newer:
                fields["protocol_version"] = version
            device = await state.save_device(
                user, q.device_id, max_devices=self.server.settings.max_devices_per_user,
                **fields)
            if len(self._seen) > 200_000:
                self._seen.clear()
            self._seen[key] = now
        return device

    def _too_many_devices(self, request: Request, user: str, device_id: str,
                          cmd: str, version: str, e: TooManyDevices, t0: float) -> None:
        """A new DeviceId over --max-devices-per-user (issue #10 point 7): from 14.0 the
        command's top-level Status 177 MaximumDevicesReached (MS-ASCMD 2.2.2; Provision:
        MS-ASPROV 2.2.2.54.2 refers to it), below 14.0 or for a command without one HTTP
        403 (MS-ASHTTP 2.2.2.1.1: the user may not sync; not 503, as the cap does not
        pass by itself).  Nothing is stored for the device."""
        note = f"device cap: {e.count} devices, at most {e.limit}"
        roots = ({**provisioning_policy.STATUS_ROOTS, "Provision": ("Provision:Provision", "Provision:Status")}
                 .get(cmd))
        if version_tuple(version) < (14, 0) or roots is None:
            self._finish(request, 403, b"", user, device_id, cmd, note, t0)
            return
        body = encode(E(roots[0], E(roots[1], MAX_DEVICES_REACHED)))
        self._finish(request, 200, body, user, device_id, cmd, note, t0,
                     eas_status=MAX_DEVICES_REACHED)

    async def _respond(self, request: Request, req: EasRequest, resp: EasResponse,
                       t0: float, note: str = "") -> None:
        if getattr(request, "_disconnected", False):
            # the client went while the command ran (a held Ping ended by Hold.gone):
            # nothing to encode or send; the request's one line says so
            self._finish(request, CLIENT_GONE, b"", req.user.name, req.device_id, req.cmd,
                         "client gone", t0)
            return
        for k, v in resp.headers.items():
            request.setHeader(k.encode(), v.encode())
        data = b""
        if resp.wbxml is not None:
            data = resp.wbxml
        elif resp.body is not None:
            data = await encode_wbxml(resp.body)
        plain = len(data)
        # gzip as Exchange does when the client accepts it (MS-ASHTTP §2.2.2.1.2); an empty
        # body (a heartbeat, an empty Sync) stays empty.  Not twisted.web's
        # GzipEncoderFactory: it decides before the answer is known, so it codes empty
        # bodies and errors too (writing gzip's trailer after our Content-Length: 0),
        # drops Content-Length for chunked transfer, and ignores q=0.
        gzipped = bool(data) and accepts_gzip(
            request.requestHeaders.getRawHeaders(b"accept-encoding"))
        if gzipped:
            data = await gzip_body(data)
        self._finish(request, resp.http_status, data, req.user.name, req.device_id, req.cmd,
                     note, t0, eas_status=resp.status,
                     gzipped_from=plain if gzipped else None)
        if resp.woken is not None and request.finished:
            self.server.metrics.push_latency.observe(time.monotonic() - resp.woken)

    def _finish(self, request: Request, code: int, data: bytes, user: str,
                device: str, cmd: str, note: str, t0: float, eas_status: str = "",
                gzipped_from: int | None = None) -> None:
        """Answer and write the request's log line.  ``gzipped_from``: ``data`` is gzip,
        compressed from a body of that many bytes."""
        # sizes only where a content coding was at work: in=gzip:WIRE>DECODED (a "+": the
        # decoding stopped at the size limit), out=gzip:PLAIN>WIRE
        sizes = ""
        coded_in = getattr(request, CODING_NOTE, None)
        if coded_in:
            sizes += f" in={coded_in}"
        if gzipped_from is not None:
            sizes += f" out=gzip:{gzipped_from}B>{len(data)}B"
        log_request(request, self.server.metrics, cmd in COUNTED, code, user, device, cmd,
                    note, t0, self.trusted, eas_status, sizes)
        if request.finished or getattr(request, "_disconnected", False) or (
            request.channel is None
        ):
            return
        request.setResponseCode(code)
        if data or code == 200:
            request.setHeader(b"Content-Type", WBXML_TYPE)
        request.setHeader(b"MS-Server-ActiveSync", self.server.settings.server_version.encode())
        request.setHeader(b"Cache-Control", b"private")
        if gzipped_from is not None:
            request.setHeader(b"Content-Encoding", b"gzip")
        if data:
            request.setHeader(b"Vary", b"Accept-Encoding")
        request.setHeader(b"Content-Length", str(len(data)).encode())
        if data:
            request.write(data)
        request.finish()

    def _later(self, request: Request, user: str, device: str, cmd: str, note: str,
               t0: float) -> None:
        """503 with Retry-After (a store, directory or CRM that cannot answer now, or a
        command over its time): the device tries again later."""
        request.setHeader(b"Retry-After", b"30")
        self._finish(request, 503, b"", user, device, cmd, note, t0)

    def _crash(self, failure: Failure, request: Request, cmd: str, t0: float) -> None:
        if failure.check(CancelledError):       # (_gone: the client went away)
            req: EasRequest | None = getattr(request, REQUEST_NOTE, None)
            if req is None:
                self._finish(request, CLIENT_GONE, b"", "-", "", cmd, "client gone", t0)
            else:
                self._finish(request, CLIENT_GONE, b"", req.user.name, req.device_id,
                             req.cmd, "client gone", t0)
            return
        if failure.check(Unavailable):
            # a store that stopped answering at a step without its own answer: 503 and a
            # retry later (DESIGN), never a 500 with a traceback
            req = getattr(request, REQUEST_NOTE, None)
            try:
                self._later(request, req.user.name if req else "-",
                            req.device_id if req else "", cmd,
                            f"unavailable: {failure.value}", t0)
            except RuntimeError:  # the connection is gone
                log.info("could not answer {cmd}: connection gone", cmd=cmd)
            return
        log.failure("unexpected error in {cmd}", failure, cmd=cmd)
        try:
            self._finish(request, 500, b"", "-", "", cmd, "server error", t0)
        except RuntimeError:  # the connection is gone
            log.info("could not answer {cmd}: connection gone", cmd=cmd)


class RootResource(Resource):
    """Routes ``/Microsoft-Server-ActiveSync`` and ``/autodiscover/autodiscover.xml``
    case-insensitively; both are let in by the same front door."""

    def __init__(self, server_: EasServer, door: FrontDoor) -> None:
        super().__init__()
        self.eas = ActiveSyncResource(server_, door)
        self.autodiscover = AutodiscoverResource(server_, door)

    def getChild(self, path: bytes, request: Request) -> Resource:
        name = path.lower()
        if name == b"microsoft-server-activesync":
            return self.eas
        if name == b"autodiscover":
            return _AutodiscoverDir(self.autodiscover)
        return super().getChild(path, request)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return b"easync: Exchange ActiveSync server\n"


class _AutodiscoverDir(Resource):
    """``/autodiscover/autodiscover.xml``, matched case-insensitively (phones differ)."""

    def __init__(self, leaf: Resource) -> None:
        super().__init__()
        self.leaf = leaf

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path.lower() == b"autodiscover.xml":
            return self.leaf
        return super().getChild(path, request)


def make_root(server_: EasServer, door: FrontDoor) -> Resource:
    """The root resource of the EAS web site."""
    return RootResource(server_, door)


def make_site(server_: EasServer, door: FrontDoor, timeout: float | None = 3600,
              limits: ConnectionLimits | None = None) -> Site:
    """A Site serving ``make_root`` with the request-size limit applied
    (``easync.http.listen.site``: with ``limits`` whose header timeout is set, that
    timeout replaces ``timeout``).  One log event per request is written by
    ``ActiveSyncResource``; no access log twice."""
    from easync.http.listen import site

    class _Request(EasRequestFactory):
        max_bytes = server_.settings.max_request_bytes

    return site(make_root(server_, door), request_factory=_Request, timeout=timeout,
                limits=limits)
