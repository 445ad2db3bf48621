"""Held long polls (Ping, Sync with Wait/HeartbeatInterval) of one process.

A held request is a ``Hold``: a listener on the change hub (``IChangeNotifier.listen``),
one heartbeat timer and a Deferred the command's handler awaits — no thread, no
process.  It ends when

* a watched folder changes (the hub tells the hold, which notes what changed; the
  handlers of woken holds are resumed a slice at a time, ``Holds.SLICE`` seconds of
  answering per reactor turn at most, so that one change concerning 10,000 Pings
  never blocks the reactor for long),
* its heartbeat expires,
* a newer long poll of the same device arrives (``Holds.supersede``), or
* the client disconnects: the HTTP layer calls ``Hold.gone``, which leaves the hub and
  queues the hold like a wake: its handler returns in one of the next slices (no
  cancellation, no ``CancelledError`` thrown through it, no ``Failure``), so that
  20,000 connections dropped at once (a NAT gateway, a network blip) are ended a slice
  per reactor turn too, not all in the turn that saw them go (issue #12).  A request
  not held (still running its command) is cancelled as before; cancelling the awaited
  Deferred ends the hold too.

The handler listens *before* it looks for pending changes, so a change committed
between the look and the wait is never missed; changes arriving while the handler is
busy are kept on the hold (with their ``ChangeHint``) and seen at its next ``wait()``.

``HoldRecorder`` writes which device holds a request on which node to the database
(``easync-admin device list``), batched: one transaction per second at most, and a
hold that starts and ends within the same second is never written.
"""

from __future__ import annotations

import heapq
import math
import os
import socket
import time
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from easync.interfaces import ChangeHint

log = Logger()

def default_node_name() -> str:
    """This process, as ``easync-admin device list`` names it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


#: a ``Hold.changed`` key when the hub could not say which folders changed: the
#: handler re-checks them all.  (The hubs now name every watched folder instead.)
ALL = "*"

#: ``Hold.reason`` when the client went away (``Hold.gone``)
GONE = "gone"


class Hold:
    """One held request.  Cheap: slots, one timer slot, one place in the hub."""

    __slots__ = ("_listening", "_queued", "_slot", "_waiter", "changed", "command",
                 "deadline", "device_id", "folders", "holds", "own_ignored", "owner",
                 "reason", "since", "user_id", "woken_at")

    def __init__(self, holds: Holds, user_id: int, device_id: str, command: str,
                 folders: list[str], seconds: float, owner: object = None) -> None:
        self.holds = holds
        #: the request holding (the handler's ``EasRequest``): how the HTTP layer finds
        #: the hold of a connection that went away
        self.owner = owner
        self.user_id = user_id
        self.device_id = device_id
        self.command = command
        self.folders = folders
        clock = holds.clock
        self.since: float = clock.seconds()
        self.deadline: float = self.since + seconds
        # folders woken for, not yet taken -> what changed (None: unknown, look)
        self.changed: dict[str, ChangeHint | None] | None = None
        self.reason: str | None = None  # "heartbeat" | "superseded" | "gone" | "ended"
        self.woken_at: float | None = None       # time.monotonic() of the first wake
        #: folders in which the device's own writes (a hint naming this device) are
        #: no change for it: set by the handler once it knows the device syncs them
        self.own_ignored: frozenset[str] = frozenset()
        self._waiter: Deferred[None] | None = None
        self._listening = False
        self._queued = False                     # in Holds' answer queue
        self._slot: int | None = holds._timers.add(self)
        self.listen()

    # -- the hub ---------------------------------------------------------------------
    def listen(self) -> None:
        """Listen to the watched folders: changes committed from now on wake this
        hold (it stays listening until it ends)."""
        if not self._listening and self.reason is None:
            self.holds.notifier.listen(self.user_id, self.folders, self)
            self._listening = True

    def on_change(self, folder_id: str, hint: ChangeHint | None) -> None:
        """The hub: a watched folder changed.  Noted here; the handler is woken in
        a later reactor turn (``Holds`` answers in slices)."""
        if hint is not None and hint.device_id == self.device_id and \
                folder_id in self.own_ignored:
            return                  # the device's own write: never a change for it
        changed = self.changed
        if changed is None:
            self.changed = {folder_id: hint}
            if self.woken_at is None:
                self.woken_at = time.monotonic()
        elif folder_id in changed:
            old = changed[folder_id]
            changed[folder_id] = None if old is None else old.merge(hint)
        else:
            changed[folder_id] = hint
        self._wake_soon()

    def _wake_soon(self) -> None:
        if self._waiter is not None and not self._queued:
            self._queued = True
            self.holds._answer_soon(self)

    def _expire(self) -> None:
        # (many heartbeats may end in one second: answered in slices, as changes)
        self._slot = None
        self.stop("heartbeat", now=False)

    def stop(self, reason: str, now: bool = True) -> None:
        """End the wait: the handler answers at once (superseded), or in one of
        the next slices (``now=False``)."""
        if self.reason is None:
            self.reason = reason
        self._unlisten()
        if now:
            self._release()
        else:
            self._wake_soon()

    def gone(self) -> None:
        """The client went away: stop listening now, and let the handler return in one
        of the next answer slices (it finds ``reason`` "gone"; its answer is not
        sent).  Cheap, so that a whole burst of closed connections costs the turn that
        saw them little; the ends themselves are sliced like wakes."""
        self.reason = GONE
        self.stop(GONE, now=False)

    def _release(self) -> None:
        self._queued = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.called:
            waiter.callback(None)

    # -- the handler's side ------------------------------------------------------------
    def wait(self) -> Deferred[None]:
        """Fires when there is something to look at: ``changed`` or ``reason`` set.
        Cancelling it (client gone) ends the hold."""
        if self.changed or self.reason is not None:
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._cancelled)
        self._waiter = waiter
        return waiter

    def _cancelled(self, _waiter: Deferred[None]) -> None:
        self.end()

    def take(self) -> dict[str, ChangeHint | None]:
        """The folders woken for since the last call (with what changed in each, when
        the publisher said); the hold keeps listening."""
        changed, self.changed = self.changed or {}, None
        self.woken_at = None
        return changed

    def end(self) -> None:
        """Drop the hub registration, the timer and the registration (idempotent)."""
        if self.reason != "ended":
            self.reason = "ended"
        self._unlisten()
        self._waiter = None
        slot, self._slot = self._slot, None
        if slot is not None:
            self.holds._timers.remove(self, slot)
        self.holds._ended(self)

    def _unlisten(self) -> None:
        if self._listening:
            self._listening = False
            self.holds.notifier.unlisten(self.user_id, self)


class Holds:
    """The long polls this process holds, one per device at most."""

    #: seconds of answering woken holds per reactor turn at most: a change that
    #: concerns many held requests is answered a slice at a time, other work between
    SLICE = 0.02

    def __init__(self, notifier: Any = None, clock: Any = None,
                 recorder: HoldRecorder | None = None, reactor: Any = None) -> None:
        self.notifier = notifier
        self.clock = clock
        self.recorder = recorder
        self.by_device: dict[tuple[int, str], Hold] = {}
        self.counts: dict[str, int] = {"Ping": 0, "Sync": 0}
        self._timers = Deadlines(self)
        # the event loop the answers are sliced on (the real reactor even when
        # ``clock`` is a test's Clock: slices are about reactor turns, not time)
        self._reactor = reactor
        self._ready: deque[Hold] = deque()
        self._answering: Any = None
        self.slices = 0                     # answer slices run
        self.longest_slice = 0.0            # seconds, the longest of them

    def _answer_soon(self, hold: Hold) -> None:
        self._ready.append(hold)
        if self._answering is None:
            reactor = self._reactor
            if reactor is None:
                from twisted.internet import reactor as global_reactor
                reactor = self._reactor = global_reactor
            self._answering = reactor.callLater(0, self._answer_slice)

    def _answer_slice(self) -> None:
        """Wake the queued holds' handlers, oldest first, for ``SLICE`` seconds at
        most (each handler answers in its own call); the rest in the next turn."""
        self._answering = None
        ready = self._ready
        clock = time.perf_counter
        start = clock()
        end = start + self.SLICE
        try:
            while ready:
                ready.popleft()._release()
                if clock() >= end:
                    break
        finally:
            took = clock() - start
            self.slices += 1
            self.longest_slice = max(self.longest_slice, took)
            if ready and self._answering is None:
                self._answering = self._reactor.callLater(0, self._answer_slice)

    def __len__(self) -> int:
        return len(self.by_device)

    def supersede(self, user_id: int, device_id: str) -> None:
        """A new long poll from this device: its previous one ends at once."""
        old = self.by_device.get((user_id, device_id))
        if old is not None:
            old.stop("superseded")

    def start(self, user_id: int, device_id: str, command: str, folders: list[str],
              seconds: float, owner: object = None) -> Hold:
        """A new hold of ``owner`` (the handler's request: see ``held_by``)."""
        self.supersede(user_id, device_id)
        hold = Hold(self, user_id, device_id, command, folders, seconds, owner)
        self.by_device[(user_id, device_id)] = hold
        self.counts[command] = self.counts.get(command, 0) + 1
        if self.recorder is not None:
            self.recorder.started(hold)
        return hold

    def held_by(self, owner: Any, user_id: int, device_id: str) -> Hold | None:
        """The hold ``owner`` started and that has not ended, if any."""
        hold = self.by_device.get((user_id, device_id))
        return hold if hold is not None and hold.owner is owner else None

    def _ended(self, hold: Hold) -> None:
        key = (hold.user_id, hold.device_id)
        if self.by_device.get(key) is hold:
            del self.by_device[key]
        else:
            return      # already ended, or never registered
        self.counts[hold.command] -= 1
        if self.recorder is not None:
            self.recorder.ended(hold)


class Deadlines:
    """The heartbeat timers of every hold: one reactor call for all of them.

    A ``DelayedCall`` per held request costs ~400 bytes; here a hold costs a set entry
    in its slot (deadlines grouped by ``RESOLUTION`` seconds).  One call is pending, at
    the earliest deadline; each hold is answered at its own deadline exactly."""

    RESOLUTION = 1.0

    def __init__(self, holds: Holds) -> None:
        self.holds = holds
        self._slots: dict[int, set[Hold]] = {}
        self._heap: list[int] = []          # slot numbers (stale ones are skipped)
        self._call: Any = None
        self._call_at = math.inf

    def __len__(self) -> int:
        return sum(len(s) for s in self._slots.values())

    def add(self, hold: Hold) -> int:
        slot = math.floor(hold.deadline / self.RESOLUTION)
        holds = self._slots.get(slot)
        if holds is None:
            holds = self._slots[slot] = set()
            heapq.heappush(self._heap, slot)
        holds.add(hold)
        if hold.deadline < self._call_at:
            self._schedule(hold.deadline)
        return slot

    def remove(self, hold: Hold, slot: int) -> None:
        holds = self._slots.get(slot)
        if holds is not None:
            holds.discard(hold)
            if not holds:
                del self._slots[slot]
                if not self._slots:
                    self._heap.clear()
                    self._cancel()          # nothing left to time

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call, self._call_at = None, math.inf

    def _schedule(self, when: float) -> None:
        self._cancel()
        clock = self.holds.clock
        self._call_at = when
        self._call = clock.callLater(max(0.0, when - clock.seconds()), self._fire)

    def _fire(self) -> None:
        self._call, self._call_at = None, math.inf
        now = self.holds.clock.seconds()
        heap, slots = self._heap, self._slots
        while heap:
            slot = heap[0]
            holds = slots.get(slot)
            if holds is not None:
                due = [h for h in holds if h.deadline <= now]
                for hold in due:
                    holds.discard(hold)
                    hold._expire()
                if holds:                   # later deadlines in this slot
                    self._schedule(min(h.deadline for h in holds))
                    return
                slots.pop(slot, None)
            if heap and heap[0] == slot:    # (an answer may have emptied it meanwhile)
                heapq.heappop(heap)


class HoldRecorder(Service):
    """Writes ``held_requests`` rows (which node holds which device) in batches.

    ``store`` provides ``record_holds(node, starts, ends)`` and ``clear_holds(node)``.
    A row carries the hold's deadline, so a node that dies leaves rows that readers
    recognise as expired; the node clears its own rows when it starts again.
    """

    def __init__(self, store: Any, clock: Any, node: str | None = None,
                 interval: float = 1.0, notifier: Any = None, node_suffix: str = "") -> None:
        self.store = store
        self.clock = clock
        # set by begin() if not given: the change hub's node name, else host:pid
        # (read then, not now: twistd may fork between)
        self.node = node or ""
        self._notifier = notifier
        self._suffix = node_suffix
        self.interval = interval
        self._starts: dict[tuple[int, str], tuple[int, str, str, float, float]] = {}
        self._ends: dict[tuple[int, str], float] = {}
        self._loop: LoopingCall | None = None
        self._flushing = False

    def started(self, hold: Hold) -> None:
        self._starts[(hold.user_id, hold.device_id)] = (
            hold.user_id, hold.device_id, hold.command, hold.since, hold.deadline)

    def ended(self, hold: Hold) -> None:
        key = (hold.user_id, hold.device_id)
        pending = self._starts.get(key)
        if pending is not None and pending[3] == hold.since:
            del self._starts[key]       # never written: nothing to remove
        else:
            self._ends[key] = hold.since

    async def begin(self) -> None:
        """Clear what this node left behind, then flush every ``interval``."""
        if not self.node:
            name = getattr(self._notifier, "node_name", None) or default_node_name()
            self.node = name + self._suffix
        try:
            await self.store.clear_holds(self.node)
        except Exception as e:  # noqa: BLE001 - the database may come later
            log.warn("could not clear old held-request rows: {e}", e=e)  # noqa: G010
        self._loop = LoopingCall(self.flush)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False).addErrback(
            lambda f: log.failure("hold recorder stopped", f))

    async def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        try:
            await self.store.clear_holds(self.node)
        except Exception as e:  # noqa: BLE001
            log.warn("could not clear held-request rows: {e}", e=e)  # noqa: G010

    def startService(self) -> None:
        super().startService()
        Deferred.fromCoroutine(self.begin())

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self.stop())

    def flush(self) -> Deferred[None] | None:
        if self._flushing or not (self._starts or self._ends):
            return None
        starts, self._starts = list(self._starts.values()), {}
        ends, self._ends = [(u, dev, s) for (u, dev), s in self._ends.items()], {}
        self._flushing = True

        def done(result: Any) -> None:
            self._flushing = False
            if isinstance(result, Failure):
                log.warn("could not record held requests: {e}",  # noqa: G010
                         e=result.value)

        d: Deferred[None] = self.store.record_holds(self.node, starts, ends)
        d.addBoth(done)
        return d
