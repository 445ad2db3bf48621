"""Keeping a long-running database small: tombstones purged, idle devices forgotten.

``Retention(reactor, store, …)`` is a service that, every ``interval`` seconds, runs
one pass over an ``IRetentionStore`` (issue #13 point 6):

1. tombstones every sync state of their folder has passed (``purge_synced``);
2. tombstones older than ``tombstone_max_age`` seconds, needed or not
   (``purge_older``): a device whose state needed one gets Sync Status 3 at its next
   Sync of that folder and resyncs it from scratch (``easync.syncengine.expired``);
3. devices unseen for ``device_max_idle`` seconds, with their states
   (``forget_devices``): the next request of such a device is a new device's;
4. items devices deleted, kept (``easync.deleted``) longer than ``deleted_keep``
   seconds (``purge_deleted``, when the store has it).

A pass is a sequence of batches, each one short transaction of at most ``batch`` rows
in the store's thread pool; the reactor runs other work between two batches (the next
one is started from a fresh reactor turn).  A batch another process is running
(``busy``: with ``--workers`` or several nodes, the store's retention lock) ends that
step of the pass; the process holding the lock does the work.  0 for an age switches
its step off.  Counters: ``tombstones_purged`` (by ``synced`` / ``age``),
``devices_forgotten`` — ``/metrics`` shows them (``register``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger

from easync.interfaces import PurgeStep

__all__ = ["Retention"]

log = Logger()

DAY = 86400.0


class Retention(Service):
    """Runs retention passes over ``store`` (an ``IRetentionStore``)."""

    def __init__(self, reactor: Any, store: Any, *, tombstone_max_age: float = 90 * DAY,
                 device_max_idle: float = 180 * DAY, deleted_keep: float = 30 * DAY,
                 interval: float = 600.0, batch: int = 500) -> None:
        self.reactor = reactor
        self.store = store
        self.tombstone_max_age = tombstone_max_age
        self.device_max_idle = device_max_idle
        self.interval = interval
        self.batch = batch
        #: tombstones purged by this process: "synced" (every state passed them),
        #: "age" (older than tombstone_max_age)
        self.tombstones_purged: dict[str, int] = {"synced": 0, "age": 0}
        self.devices_forgotten = 0
        #: kept deletes (easync.deleted) forgotten after ``deleted_keep`` seconds
        self.deleted_keep = deleted_keep
        self.deleted_purged = 0
        self.passes = 0
        #: seconds the last pass took from its start to its end (batches and waits)
        self.last_pass_seconds = 0.0
        #: the longest batch of the last pass, seconds from asking to the answer (the
        #: transaction, and its wait for a free database connection)
        self.longest_batch_seconds = 0.0
        self._longest = 0.0
        self._loop: LoopingCall | None = None
        self._running: Deferred[None] | None = None

    def register(self, metrics: Any) -> None:
        """Show the counters on ``/metrics`` (``easync.metrics.Metrics``)."""
        metrics.counter("easync_tombstones_purged_total",
                        "Tombstones removed by this process, by reason: synced (every "
                        "device's sync state had passed it) or age (--tombstone-max-age).",
                        lambda: {k: float(v) for k, v in self.tombstones_purged.items()},
                        label="reason")
        metrics.counter("easync_devices_forgotten_total",
                        "Devices removed by this process after --device-max-idle unseen.",
                        lambda: {"": float(self.devices_forgotten)})
        metrics.counter("easync_deleted_items_purged_total",
                        "Items devices deleted, kept for --deleted-keep, then forgotten "
                        "by this process.",
                        lambda: {"": float(self.deleted_purged)})
        metrics.gauge("easync_retention_last_pass_seconds",
                      "How long this process's last retention pass took.",
                      lambda: {"": self.last_pass_seconds})
        metrics.gauge("easync_retention_longest_batch_seconds",
                      "The longest batch (one transaction) of the last retention pass.",
                      lambda: {"": self.longest_batch_seconds})

    def startService(self) -> None:
        super().startService()
        loop = self._loop = LoopingCall(self._tick)
        loop.clock = self.reactor
        loop.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:  # type: ignore[override]
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        return None

    def _tick(self) -> Deferred[None] | None:
        if self._running is not None:
            return None                     # the previous pass is still under way
        async def run() -> None:
            await self.run_pass()

        d = self._running = Deferred.fromCoroutine(run())
        d.addErrback(lambda f: log.failure("retention pass failed; tried again in "
                                           "{interval} s", f, interval=self.interval))

        def done(_: Any) -> None:
            self._running = None

        d.addCallback(done)
        return d

    async def run_pass(self) -> dict[str, int]:
        """One pass; what it did (``synced``, ``age``, ``devices``)."""
        t0 = time.monotonic()
        self._longest = 0.0
        now = self.reactor.seconds()
        did = {"synced": 0, "age": 0, "devices": 0, "deleted": 0}
        after = 0

        def synced() -> Deferred[PurgeStep]:
            return self.store.purge_synced(after, self.batch)

        while True:
            step = await self._step(synced)
            did["synced"] += step.done
            self.tombstones_purged["synced"] += step.done
            after = step.after
            if step.busy or not step.more:
                break
        if self.tombstone_max_age > 0:
            did["age"] = await self._drain(
                lambda: self.store.purge_older(now - self.tombstone_max_age, self.batch),
                "age")
        if self.device_max_idle > 0:
            did["devices"] = await self._drain(
                lambda: self.store.forget_devices(now - self.device_max_idle, self.batch),
                "devices")
        if self.deleted_keep > 0 and hasattr(self.store, "purge_deleted"):
            did["deleted"] = await self._drain(
                lambda: self.store.purge_deleted(now - self.deleted_keep, self.batch),
                "deleted")
        self.passes += 1
        self.last_pass_seconds = time.monotonic() - t0
        self.longest_batch_seconds = self._longest
        if any(did.values()):
            log.info("retention: {synced} tombstones purged (synced past), {age} older than"
                     " the max age, {devices} idle devices forgotten, {deleted} kept"
                     " deletes older than --deleted-keep forgotten", **did)
        return did

    async def _step(self, call: Callable[[], Awaitable[PurgeStep]]) -> PurgeStep:
        # from a fresh reactor turn, so other work queued meanwhile goes first
        await deferLater(self.reactor, 0, lambda: None)
        t0 = time.monotonic()
        step = await call()
        self._longest = max(self._longest, time.monotonic() - t0)
        return step

    async def _drain(self, call: Callable[[], Awaitable[PurgeStep]], what: str) -> int:
        total = 0
        while True:
            step = await self._step(call)
            total += step.done
            if what == "age":
                self.tombstones_purged["age"] += step.done
            elif what == "deleted":
                self.deleted_purged += step.done
            else:
                self.devices_forgotten += step.done
            if step.busy or not step.more:
                return total
