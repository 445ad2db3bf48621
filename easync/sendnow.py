"""Answers sent in the turn they are written, without a round through ``epoll`` (issue #12).

Twisted's TCP transport never sends in ``write()``: it buffers the bytes, asks the
reactor to watch the socket for writability (``epoll_ctl``), and sends when the next
poll reports it writable, then stops watching (``epoll_ctl`` again).  For 10,000 Ping
answers written in one fan-out that is 20,000 ``epoll_ctl`` calls and 10,000 events
dispatched by the poll loop, for sockets that were writable all along.

``send_now`` replaces the "watch for writability" step of TCP transports: a transport
that asks to be watched is put on a list instead, and one ``callLater(0)`` per turn
tries each listed transport's ``doWrite`` through the reactor's own
``_doReadOrWrite`` (exactly what a poll reporting "writable" would run, with its
handling of a lost connection and of ``loseConnection``).  Everything written in the turn (headers, body,
a TLS record) goes out in one ``send``.  Whatever the socket did not take (a partial
send, ``EAGAIN``) is then handed to Twisted's own
``startWriting``: buffering, producers, back-pressure and ``loseConnection`` are
Twisted's, unchanged.  A transport the reactor already watches is left to the reactor.

Off with ``EASYNC_SEND_NOW=0`` in the environment.  Only the epoll reactor.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.logger import Logger

__all__ = ["SendNow", "send_now", "unsend_now"]

_log = Logger()


class SendNow:
    """The per-reactor list of transports to try at the end of the turn, and counts."""

    def __init__(self, reactor: Any, start_writing: Any) -> None:
        self.reactor = reactor
        self.start_writing = start_writing      # Twisted's own startWriting
        self.pending: dict[Any, None] = {}
        self.scheduled = False
        self.immediate = 0      # flushes that sent everything at once
        self.fallback = 0       # flushes left to the reactor (partial, closing, ...)

    def want(self, transport: Any) -> None:
        if transport.fileno() in self.reactor._writes:
            return              # the reactor watches it already
        self.pending[transport] = None
        if not self.scheduled:
            self.scheduled = True
            self.reactor.callLater(0, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        pending, self.pending = self.pending, {}
        reactor = self.reactor
        out = reactor._POLL_OUT
        for t in pending:
            try:
                if not t.connected:
                    continue
                fd = t.fileno()
                if fd == -1 or fd in reactor._writes:
                    continue
                # (catches what doWrite raises and closes the connection, as a poll)
                reactor._doReadOrWrite(t, fd, out)
                if not t.connected:
                    continue        # closed (loseConnection done, or lost)
                # bytes left: the reactor's doWrite would have stayed armed, so arm it;
                # none left: doWrite disarmed (stopWriting), as after a poll
                if t._tempDataBuffer or t.offset < len(t.dataBuffer):
                    self.fallback += 1
                    self.start_writing(t)
                else:
                    self.immediate += 1
            except Exception:  # noqa: BLE001 - never leave a transport unarmed
                _log.failure("send_now: {transport!r}", transport=t)
                if t.connected:
                    self.start_writing(t)


_installed: dict[int, SendNow] = {}


def send_now(reactor: Any) -> SendNow | None:
    """Install on ``reactor`` (an epoll reactor; None for any other, or when
    ``EASYNC_SEND_NOW=0``).  Idempotent."""
    from twisted.internet import tcp
    from twisted.internet.epollreactor import EPollReactor

    if os.environ.get("EASYNC_SEND_NOW", "1") == "0":
        return None
    if not isinstance(reactor, EPollReactor):
        return None
    sender = _installed.get(id(reactor))
    if sender is not None:
        return sender
    original = tcp.Connection.startWriting
    sender = SendNow(reactor, original)
    _installed[id(reactor)] = sender

    def startWriting(self: Any) -> None:
        # only a connection this reactor accepted, once connected: a client connection
        # still connecting asks for writability to learn that its connect is done (its
        # doWrite is doConnect), which only a poll can tell
        if self.reactor is reactor and self.connected and isinstance(self, tcp.Server):
            sender.want(self)
        else:
            original(self)

    startWriting.__wrapped__ = original  # type: ignore[attr-defined]
    tcp.Connection.startWriting = startWriting  # type: ignore[method-assign]
    return sender


def unsend_now(reactor: Any) -> None:
    """Undo ``send_now`` (tests)."""
    from twisted.internet import tcp

    sender = _installed.pop(id(reactor), None)
    if sender is None:
        return
    sender.flush()
    tcp.Connection.startWriting = sender.start_writing  # type: ignore[method-assign]
