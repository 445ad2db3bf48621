"""A bounded amount of work per reactor turn (issue #12 point 2: a burst of logins).

When many phones connect at once (a server restart, a network outage ending), one
reactor turn used to do everything that was ready: Twisted's epoll reactor handles
every ready connection a poll returns (up to one per connection held), then every
result the thread pools finished meanwhile (``callFromThread``: database transactions,
bcrypt checks).  In a ramp of 5,000 logins one turn handled 369 I/O events (154 ms of
CPU) and another 762 thread results (80 ms); every other user waited that long, and the
garbage collector then walked all that the turn had allocated.

``TurnBudget`` (a service: on while the server runs) bounds both parts of a turn:

* **I/O events**: after ``IO_BUDGET`` seconds of handling a poll's events, the rest of
  that poll's events are left for the next turn.  Twisted's poll and epoll reactors
  register level-triggered, so an event left unhandled is reported again by the next
  poll (which does not wait: the descriptor is still ready); nothing is lost, and the
  kernel hands back the events it reported last behind the ones it did not, so every
  connection gets its turn.  An epoll poll is asked for at most ``easync.pollbound.MAX_EVENTS`` events
  (Twisted asks for one per descriptor).
* **thread results**: the reactor's ``threadCallQueue`` becomes a list whose iteration
  stops after ``CALLS_BUDGET`` seconds; Twisted's ``runUntilCurrent`` removes exactly
  the calls it made and wakes itself for the rest (its own code path for calls that
  arrive while it runs).

A turn then does at most about ``IO_BUDGET + CALLS_BUDGET`` of work plus the timed calls
(``Holds.SLICE`` for woken Pings) plus one event or call that overruns — and a
listening port accepts at most ``easync.http.listen.MAX_ACCEPTS`` connections per event.
Counters (``turns_cut``, ``events_left``, ``calls_left``) show how often a budget cut a
turn short.  ``bench/bench_gc.py --ramp-only`` measures a burst.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from twisted.application.service import Service

from easync.pollbound import BoundedPoller, bound_poll, unbound_poll

#: seconds of I/O-event handling per reactor turn
IO_BUDGET = 0.015
#: seconds of finished thread-pool results (callFromThread) per reactor turn
CALLS_BUDGET = 0.015


class SlicedCalls(list[Any]):
    """The reactor's ``threadCallQueue``: appending (from any thread) is a list's;
    iterating (the reactor's ``runUntilCurrent``, the only reader) stops once
    ``budget`` seconds have gone since the iteration began — after at least one
    call.  ``runUntilCurrent`` deletes the calls it made and, the queue not being
    empty, wakes the reactor for the next turn."""

    def __init__(self, items: list[Any] = (), budget: float = CALLS_BUDGET,  # type: ignore[assignment]
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(items)
        self.budget = budget
        self.clock = clock
        self.cut = 0            # iterations stopped by the budget
        self.left = 0           # calls left for a later turn, summed over the cuts

    def __iter__(self) -> Iterator[Any]:
        clock = self.clock
        end = clock() + self.budget
        for n, item in enumerate(super().__iter__(), 1):
            yield item
            if clock() > end:
                rest = len(self) - n
                if rest > 0:
                    self.cut += 1
                    self.left += rest
                return


class TurnBudget(Service):
    """Bounds the I/O events and thread results one reactor turn handles (module
    docstring).  Works on reactors with Twisted's ``_doReadOrWrite`` and
    ``doIteration`` (select, poll, epoll; the thread part on any ``ReactorBase``); elsewhere
    that part is left as it is."""

    def __init__(self, reactor: Any, io_budget: float = IO_BUDGET,
                 calls_budget: float = CALLS_BUDGET,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.setName("turn-budget")
        self.reactor = reactor
        self.io_budget = io_budget
        self.calls_budget = calls_budget
        self.clock = clock
        self.turns_cut = 0      # polls whose events were not all handled
        self.events_left = 0    # events left for a later turn, summed
        self._end: float | None = None   # this poll's I/O deadline, set at its first event
        self._cut = False
        self._polling = False   # inside the reactor's poll (doIteration)
        self._saved: dict[str, Any] = {}
        self._own: dict[str, bool] = {}
        self._calls: SlicedCalls | None = None
        self._old_queue: list[Any] | None = None
        self._bounded = False

    # -- the I/O part ------------------------------------------------------------------
    def _iteration(self, timeout: float | None) -> None:
        self._end = None
        self._cut = False
        self._polling = True
        try:
            self._saved["doIteration"](timeout)
        finally:
            self._polling = False

    def _read_or_write(self, *args: Any) -> None:
        # (selectable, fd, event) on poll and epoll, (selectable, method) on select
        if not self._polling:
            # called outside a poll (easync.sendnow flushing a turn's answers): not a
            # ready event the next poll would report again, so never left for later
            self._saved["_doReadOrWrite"](*args)
            return
        now = self.clock()
        if self._end is None:
            self._end = now + self.io_budget
        elif now > self._end:
            # level-triggered: the next poll reports this descriptor again
            self.events_left += 1
            if not self._cut:
                self._cut = True
                self.turns_cut += 1
            return
        self._saved["_doReadOrWrite"](*args)

    # -- the thread-result part -------------------------------------------------------
    @property
    def calls_cut(self) -> int:
        return self._calls.cut if self._calls is not None else 0

    @property
    def calls_left(self) -> int:
        return self._calls.left if self._calls is not None else 0

    def _rescue(self, first: bool = False) -> None:
        """Move the calls of the old queue to the sliced one (and out of the old:
        each call is in one queue only, or it would run twice).  ``first`` (at the
        swap): they were made before any call a thread appended to the sliced queue
        since, so they go in front; later (a thread that read the attribute just
        before the swap), at the end."""
        old = self._old_queue
        if old and self._calls is not None:
            n = len(old)                # (a thread may append meanwhile: only these n)
            moved = old[:n]
            if first:
                self._calls[0:0] = moved
            else:
                self._calls.extend(moved)
            del old[:n]
            self.reactor.wakeUp()

    # -- the service ------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        r = self.reactor
        if hasattr(r, "_doReadOrWrite") and hasattr(r, "doIteration"):
            # instance attributes in front of the class's methods: the reactor's main
            # loop calls self.doIteration, its poll self._doReadOrWrite
            for name in ("doIteration", "_doReadOrWrite"):
                self._saved[name] = getattr(r, name)
                self._own[name] = name in vars(r)   # (someone's instance attribute)
            r.doIteration = self._iteration
            r._doReadOrWrite = self._read_or_write
            # epoll asked for MAX_EVENTS events at most (easync.pollbound), unless
            # bounded already (twistd easync does it as it builds the service; a
            # test may have set its own bound): then it is left as it is
            if not isinstance(getattr(r, "_poller", None), BoundedPoller):
                self._bounded = bound_poll(r) is not None
        queue = getattr(r, "threadCallQueue", None)
        if isinstance(queue, list) and not isinstance(queue, SlicedCalls):
            # an empty queue swapped in, then the old one's calls moved over, not
            # copied: calls queued before the start (twistd starts its services
            # before the reactor runs, while pool threads may have answered) used
            # to be in the new queue twice, and a Deferred called back twice is an
            # AlreadyCalledError.  Moved in front, in order, so that a start from a
            # thread call (the reactor iterating the old queue, then deleting the
            # calls it made from the current one) deletes exactly those.
            self._calls = SlicedCalls([], self.calls_budget, self.clock)
            self._old_queue = queue
            r.threadCallQueue = self._calls
            self._rescue(first=True)
            # a pool thread may have read the attribute just before the swap
            r.callLater(1.0, self._rescue)

    def stopService(self) -> None:
        super().stopService()
        r = self.reactor
        for name, saved in self._saved.items():
            if self._own[name]:
                setattr(r, name, saved)
            elif name in vars(r):
                delattr(r, name)
        self._saved.clear()
        if self._bounded:
            unbound_poll(r)
            self._bounded = False
        if self._calls is not None and r.threadCallQueue is self._calls:
            plain = list(self._calls)
            r.threadCallQueue = plain
            # (only the reactor removes calls: the first len(plain) are the copied ones)
            del self._calls[:len(plain)]
            # anything appended to the sliced list after the copy
            r.callLater(0, self._give_back, plain, self._calls)
        self._old_queue = None

    def _give_back(self, plain: list[Any], calls: SlicedCalls) -> None:
        # (the queue that was stopped: after a new start, self._calls is another)
        if calls:
            n = len(calls)              # (a thread may append meanwhile: only these n)
            plain.extend(calls[:n])
            del calls[:n]
            self.reactor.wakeUp()
