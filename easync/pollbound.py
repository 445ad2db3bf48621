"""At most ``MAX_EVENTS`` socket events per reactor turn (issue #12).

Twisted's epoll reactor asks the kernel for as many ready sockets as it watches and
handles all of them before anything else runs.  When 20,000 connections close in the
same instant (a NAT gateway or load balancer dropping its connections, a network
blip), that is 20,000 ``connectionLost`` calls in one turn: twisted.web's channel and
request, the transport, easync's ``Hold.gone`` — 25 µs or more each, half a second or
more during which no other request, timer or answer slice runs.  A burst of new
requests (every phone reconnecting) is the same, with each event costing more.

``bound_poll`` caps what one ``epoll_wait`` returns.  The sockets not returned stay
ready (epoll is level-triggered here) and come in the next turns; Linux hands the ready
sockets out round-robin, so each waits a few turns at most, and between two turns the
timers and ``Holds``' answer slices run.  With 256 events a turn of closes costs a few
milliseconds; the cost of one more ``epoll_wait`` per 256 events is nothing beside it.
Only the epoll reactor (Twisted's default on Linux) is bounded; any other is left as it
is.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_EVENTS", "BoundedPoller", "bound_poll"]

#: socket events handled per reactor turn at most
MAX_EVENTS = 256


class BoundedPoller:
    """An ``select.epoll`` whose ``poll`` returns at most ``max_events`` events; the
    rest of its methods are the epoll's own.  Counts the polls and the full ones."""

    def __init__(self, poller: Any, max_events: int = MAX_EVENTS) -> None:
        self._poller = poller
        self.max_events = max_events
        self.polls = 0
        self.full = 0           # polls that returned max_events (more may be ready)

    def poll(self, timeout: float = -1, maxevents: int = -1) -> list[tuple[int, int]]:
        cap = self.max_events if maxevents <= 0 else min(maxevents, self.max_events)
        events = self._poller.poll(timeout, cap)
        self.polls += 1
        if len(events) >= cap:
            self.full += 1
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)


def bound_poll(reactor: Any, max_events: int = MAX_EVENTS) -> BoundedPoller | None:
    """Bound ``reactor``'s events per turn (an epoll reactor; None for any other).
    Idempotent: a reactor bounded already gets the new bound."""
    from twisted.internet.epollreactor import EPollReactor

    if not isinstance(reactor, EPollReactor):
        return None
    poller = reactor._poller
    if isinstance(poller, BoundedPoller):
        poller.max_events = max_events
        return poller
    bounded = BoundedPoller(poller, max_events)
    reactor._poller = bounded
    return bounded


def unbound_poll(reactor: Any) -> None:
    """Undo ``bound_poll`` (tests)."""
    poller = getattr(reactor, "_poller", None)
    if isinstance(poller, BoundedPoller):
        reactor._poller = poller._poller
