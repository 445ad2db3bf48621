"""Connection limits of the HTTP(S) listeners (issue #10 point 6).

Two guards against clients that hold connections without using them:

* **Header timeout** (``--header-timeout``, default 10 s): a connection must send a
  complete request head (request line and headers) within that time of being opened,
  or of the previous response on it, however slowly its bytes trickle in; a request
  body may pause no longer than that between two reads.  Once a request has been
  read whole it is never cut by this timer: a held Ping or Sync (a long poll) waits
  for its heartbeat.  An idle keep-alive connection is therefore closed once that
  time has passed after its last response has gone out (a slow reader may take up
  to ``--idle-timeout`` to receive it); the phone opens a new one.  This is
  twisted.web's own idle timer (``HTTPChannel``'s ``TimeoutMixin``), armed the same
  way, except that bytes of a request head no longer restart it.
* **Connections per address** (``--max-connections-per-address``, default 256):
  counted by the TCP peer address (behind a reverse proxy every connection comes
  from the proxy: set 0 there).  A connection over the cap is closed as soon as it
  is accepted, before any TLS work, and one log line per address per minute says
  so, with the number refused since the previous line.

Both hold per process: with ``--workers N`` every process accepts its own
connections (SO_REUSEPORT), so one address may hold up to N times the cap.  The
listeners get them from ``easync.http.listen`` (``ListeningReactor`` puts the cap in
front of each port's factory; ``site`` gives the site the timeout channel).
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web import http
from twisted.web.http_headers import Headers

log = Logger(namespace="easync.limits")

#: seconds between two log lines about the same address
NOTE_WINDOW = 60.0
#: addresses noted at a time; beyond, refusals are noted under one shared key
NOTE_KEYS = 10_000


@dataclass
class _Note:
    text: str
    fields: dict[str, Any]
    call: IDelayedCall
    more: int = 0


class RateLimitedLog:
    """Log lines, at most one per key per ``window`` seconds: the first at once, the
    ones that follow within the window counted and reported together when it ends
    (which opens a new window only if there were any)."""

    def __init__(self, clock: Any, window: float = NOTE_WINDOW,
                 max_keys: int = NOTE_KEYS, logger: Logger = log) -> None:
        self._clock = clock
        self._log = logger
        self.window = window
        self.max_keys = max_keys
        self._notes: dict[Hashable, _Note] = {}

    def event(self, key: Hashable, text: str, **fields: Any) -> bool:
        """Note one event; True when it was logged now, False when counted."""
        if key not in self._notes and len(self._notes) >= self.max_keys:
            key, text, fields = ("overflow",), "more events from other addresses", {}
        note = self._notes.get(key)
        if note is not None:
            note.more += 1
            return False
        self._log.info(text, **fields)
        self._notes[key] = _Note(text, fields, self._clock.callLater(self.window,
                                                                     self._flush, key))
        return True

    def _flush(self, key: Hashable) -> None:
        note = self._notes.pop(key)
        if note.more:
            self._log.info(note.text + " ({more} more times in the last {window:g} s)",
                     more=note.more, window=self.window, **note.fields)
            note.more = 0
            note.call = self._clock.callLater(self.window, self._flush, key)
            self._notes[key] = note

    def stop(self) -> None:
        """Forget what is pending (the server stops)."""
        for note in self._notes.values():
            if note.call.active():
                note.call.cancel()
        self._notes.clear()


class ConnectionLimits:
    """The limits of one process, shared by all its ``--listen`` listeners."""

    def __init__(self, clock: Any, header_timeout: float = 10.0,
                 max_per_address: int = 256, window: float = NOTE_WINDOW,
                 drain_timeout: float = 600.0) -> None:
        self.header_timeout = header_timeout
        self.max_per_address = max_per_address
        self.drain_timeout = drain_timeout   # a response may take this to reach the peer
        self.notes = RateLimitedLog(clock, window)
        self.open: dict[str, int] = {}       # address → connections open now

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``; False (and a note) over the cap."""
        n = self.open.get(address, 0)
        if self.max_per_address and n >= self.max_per_address:
            self.notes.event(("refused", address),
                             "refused a connection from {address}: {open} connections "
                             "open from it (--max-connections-per-address)",
                             address=address, open=n)
            return False
        self.open[address] = n + 1
        return True

    def release(self, address: str) -> None:
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)

    def wrap(self, factory: Any) -> Any:
        """``factory`` behind the per-address cap (itself when the cap is off)."""
        return PerAddressFactory(self, factory) if self.max_per_address else factory

    def channel_class(self) -> type[http.HTTPChannel]:
        """The HTTPChannel class for a site (HeadTimeoutChannel noting here)."""
        periods = math.ceil(self.drain_timeout / self.header_timeout) if (
            self.header_timeout) else 0
        return type("Channel", (HeadTimeoutChannel,),
                    {"notes": self.notes, "drain_periods": periods})


class _Counted(ProtocolWrapper):
    address = ""


class PerAddressFactory(WrappingFactory[_Counted]):
    """Builds a protocol only while the peer's address is under the cap; otherwise
    returns None, which makes the listening port close the socket at once.
    (twisted.protocols.policies.LimitConnectionsByPeer does the same counting but
    reads the address as a tuple, which IPv4Address is not.)"""

    protocol = _Counted
    noisy = False

    def __init__(self, limits: ConnectionLimits, wrapped: Any) -> None:
        super().__init__(wrapped)
        self.limits = limits

    def buildProtocol(self, addr: Any) -> Any:
        address = getattr(addr, "host", None)
        if not address:                 # a UNIX socket: a local proxy, not counted
            return self.wrappedFactory.buildProtocol(addr)
        if not self.limits.admit(address):
            return None
        try:
            inner = self.wrappedFactory.buildProtocol(addr)
        except BaseException:
            self.limits.release(address)
            raise
        if inner is None:
            self.limits.release(address)
            return None
        p = self.protocol(self, inner)
        p.address = address
        return p

    def unregisterProtocol(self, p: Any) -> None:
        self.protocols.pop(p, None)
        self.limits.release(p.address)


class HeadTimeoutChannel(http.HTTPChannel):
    """``HTTPChannel`` whose idle timer (``timeOut``, set to the header timeout) is
    restarted by bytes of a request body but not by bytes of a request head: the
    head must be complete within the timeout.  Twisted stops the timer while a
    request is being answered and starts it again after the response."""

    notes: RateLimitedLog | None = None
    #: timer periods a response may keep the transport's send buffer full
    drain_periods = 60
    _served = False
    _draining = 0

    def dataReceived(self, data: bytes) -> None:
        if not self.line_mode:          # a body (or data behind a held request)
            self.resetTimeout()
        LineReceiver.dataReceived(self, data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """A line of a request head over ``MAX_LENGTH`` (16 KB): answer 414 for the
        request line (RFC 9112 §3), 431 for a header field (RFC 6585 §5), and close.
        (LineReceiver's own ``transport.loseConnection()`` closed nothing while the
        channel is the transport's producer: the connection hung, unanswered, until
        the header timeout.)"""
        first = not self._receivedHeaderSize
        code = b"414 URI Too Long" if first else b"431 Request Header Fields Too Large"
        if self.notes is not None:        # at most one line a minute per address
            peer = self.transport.getPeer() if self.transport is not None else None
            address = getattr(peer, "host", None) or "-"
            what = "request line" if first else "header line"
            self.notes.event((what + " too long", address),
                             "refused a request from {address}: {what} over {limit} bytes "
                             "(HTTP {code})", address=address, what=what,
                             limit=self.MAX_LENGTH, code=code[:3].decode())
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 " + code + b"\r\nConnection: close\r\n"
                                 b"Content-Length: 0\r\n\r\n")
        self.loseConnection()

    def allHeadersReceived(self) -> None:
        super().allHeadersReceived()
        self.resetTimeout()             # the body's own timer starts now

    def allContentReceived(self) -> None:
        self._served = True
        super().allContentReceived()

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes,
                     headers: Any) -> None:
        """The response head as one piece of bytes: twisted.web hands the transport a
        list of some 35 small pieces, each checked and buffered on its own, which was a
        noticeable part of answering 10,000 held Pings at once (issue #12 point 1).
        The same bytes go out."""
        if not isinstance(headers, Headers):      # (Twisted's own fallback, unused)
            super().writeHeaders(version, code, reason, headers)
            return
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        if self.transport is not None:
            self.transport.write(b"".join(head))

    def resumeProducing(self) -> None:
        # the transport sent all it had: the peer reads; idle (if so) from now on
        if self._waitingForTransport and not self._handlingRequest:
            self.resetTimeout()
        self._draining = 0
        super().resumeProducing()

    def timeoutConnection(self) -> None:
        if self._waitingForTransport and self._draining < self.drain_periods:
            # Not idle: a response is still going out to a slow reader (a big Sync on
            # a bad link; Twisted ends a request once it is all handed to the
            # transport).  Wait another period, up to the drain timeout in all.
            self._draining += 1
            self.setTimeout(self.timeOut)
            return
        if not self.line_mode:
            what = "request body stalled for"
        elif self._buffer or self._receivedHeaderSize or not self._served:
            what = "no complete request head within"
        else:
            what = ""                   # an idle keep-alive connection: routine
        if what and self.notes is not None:
            peer = self.transport.getPeer() if self.transport is not None else None
            address = getattr(peer, "host", None) or "-"
            self.notes.event((what, address),
                             "closed a connection from {address}: {what} {seconds:g} s "
                             "(--header-timeout)", address=address, what=what,
                             seconds=self.timeOut or 0)
        # As HTTPChannel.timeoutConnection, without its line per connection: close,
        # and abort if the peer does not let the connection close.
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()
