"""Held long polls (Ping, Sync with Wait/HeartbeatInterval) of one process.

A held request is a ``Hold``: a subscription to the change hub
(``IChangeNotifier``), one heartbeat timer and a Deferred the command's handler
awaits — no thread, no process.  It ends when

* a watched folder changes (the hub fires the subscription),
* its heartbeat expires,
* a newer long poll of the same device arrives (``Holds.supersede``), or
* the client disconnects: the HTTP layer cancels the handler, which cancels the
  awaited Deferred; ``Hold.end`` then drops the subscription and the timer.

The handler subscribes *before* it looks for pending changes, so a change committed
between the look and the wait is never missed; changes arriving while the handler is
busy are kept on the hold and seen at its next ``wait()``.

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
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

def default_node_name() -> str:
    """This process, as ``easync-admin device list`` names it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


#: ``Hold.changed`` value when the hub could not say which folders changed
#: (it failed or reconnected): the handler re-checks them all.
ALL = "*"


class Hold:
    """One held request.  Cheap: slots, one timer, one hub subscription."""

    __slots__ = ("_slot", "_sub", "_waiter", "changed", "command", "deadline", "device_id",
                 "folders", "holds", "reason", "since", "user_id", "woken_at")

    def __init__(self, holds: Holds, user_id: int, device_id: str, command: str,
                 folders: list[str], seconds: float) -> None:
        self.holds = holds
        self.user_id = user_id
        self.device_id = device_id
        self.command = command
        self.folders = folders
        clock = holds.clock
        self.since: float = clock.seconds()
        self.deadline: float = self.since + seconds
        self.changed: set[str] | None = None     # folders woken for, not yet taken
        self.reason: str | None = None           # "heartbeat" | "superseded" | "ended"
        self.woken_at: float | None = None       # time.monotonic() of the first wake
        self._waiter: Deferred[None] | None = None
        self._sub: Deferred[list[str]] | None = None
        self._slot: int | None = holds._timers.add(self)
        self.listen()

    # -- the hub ---------------------------------------------------------------------
    def listen(self) -> None:
        """Subscribe to the watched folders (again, after a wake): changes committed
        from now on wake this hold."""
        if self._sub is None and self.reason is None:
            sub = self.holds.notifier.subscribe(self.user_id, self.folders)
            self._sub = sub
            sub.addCallbacks(self._on_change, self._on_hub_error)

    def _on_change(self, folders: list[str]) -> None:
        self._sub = None
        self._wake(folders)

    def _on_hub_error(self, failure: Failure) -> None:
        if self._sub is None:   # we cancelled it
            return
        self._sub = None
        log.info("change hub failed a subscription ({f}): re-checking", f=failure.value)
        self._wake([ALL])

    def _wake(self, folders: list[str]) -> None:
        if self.changed is None:
            self.changed = set(folders)
        else:
            self.changed.update(folders)
        if self.woken_at is None:
            self.woken_at = time.monotonic()
        self._release()

    def _expire(self) -> None:
        self._slot = None
        self.stop("heartbeat")

    def stop(self, reason: str) -> None:
        """End the wait: the handler answers at once (heartbeat, superseded)."""
        if self.reason is None:
            self.reason = reason
        self._unsubscribe()
        self._release()

    def _release(self) -> None:
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

    def take(self) -> set[str]:
        """The folders woken for since the last call, subscribed again first."""
        changed, self.changed = self.changed or set(), None
        self.woken_at = None
        self.listen()
        return changed

    def end(self) -> None:
        """Drop the subscription, the timer and the registration (idempotent)."""
        if self.reason != "ended":
            self.reason = "ended"
        self._unsubscribe()
        slot, self._slot = self._slot, None
        if slot is not None:
            self.holds._timers.remove(self, slot)
        self.holds._ended(self)

    def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and not sub.called:
            sub.cancel()


class Holds:
    """The long polls this process holds, one per device at most."""

    def __init__(self, notifier: Any = None, clock: Any = None,
                 recorder: HoldRecorder | None = None) -> None:
        self.notifier = notifier
        self.clock = clock
        self.recorder = recorder
        self.by_device: dict[tuple[int, str], Hold] = {}
        self.counts: dict[str, int] = {"Ping": 0, "Sync": 0}
        self._timers = Deadlines(self)

    def __len__(self) -> int:
        return len(self.by_device)

    def supersede(self, user_id: int, device_id: str) -> None:
        """A new long poll from this device: its previous one ends at once."""
        old = self.by_device.get((user_id, device_id))
        if old is not None:
            old.stop("superseded")

    def start(self, user_id: int, device_id: str, command: str, folders: list[str],
              seconds: float) -> Hold:
        self.supersede(user_id, device_id)
        hold = Hold(self, user_id, device_id, command, folders, seconds)
        self.by_device[(user_id, device_id)] = hold
        self.counts[command] = self.counts.get(command, 0) + 1
        if self.recorder is not None:
            self.recorder.started(hold)
        return hold

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
