"""Keeping Python's cyclic garbage collector out of the way of held requests.

A full (generation 2) collection stops the process while it walks every object the
collector tracks: about 90 per held Ping (Twisted's channel, request and headers,
the coroutines and Deferreds of the request), so 0.6 s with 5,000 held and 2 s with
19,900 on the 2-core test machine — and every user waits that long (issue #12).

``GcTuning`` (``--gc-freeze on``, the default) moves long-lived objects out of the
collector's way with ``gc.freeze()`` (the permanent generation, never walked):

1. once the services run, a full collection and a freeze: what start-up made (modules,
   classes, the service tree);
2. every ``FREEZE_INTERVAL`` seconds, between two reactor events, a collection of what
   is not frozen yet — what that interval allocated and still holds — then a freeze of
   its survivors.  A held request is frozen half a second after it starts, so no
   collection's cost grows with the number of held requests; it is bounded by what
   half a second allocates;
3. in a burst (a ramp of logins), sooner: after ``BURST_YOUNG`` young collections
   since the last freeze (counted in ``gc.callbacks``, acted on between reactor
   events every ``BURST_CHECK`` seconds), so that a collection walks at most about
   7,000 allocations, whatever the rate.  ``easync.turns`` bounds the work of one
   reactor turn, which bounds what can pile up between two checks.

Nothing frozen is garbage at the moment of the freeze (the collection just before
found it all reachable).  A frozen object is still freed by reference counting, but
not as part of a reference cycle: so what ends must not leave a cycle through frozen
objects.  A held Ping or Sync that is answered, times out, is superseded or whose
client goes away leaves none (``tests/test_gc_holds.py`` checks each way with
everything of the request frozen); the cycles Twisted makes for an exception are
young, made when the request ends, and the next collection frees them; Twisted's
thread-pool closure, a cycle per database call, is replaced while this runs
(``_ThreadCall``).  ``bench/bench_gc.py`` measures what is left: after the held Pings
end at once it counts the permanent generation and the garbage a collection finds in
it once unfrozen (none after 5,000; a few requests' worth after 19,900 — a freeze that
came while a dropped request's exception was in flight: bench/RESULTS.md).

Memory: after many holds end at once (a mass wake, a network outage), glibc keeps the
freed memory of the larger blocks in its heaps; ``malloc_trim(0)`` hands the free
pages back to the system.  It is called after the number of held requests fell by half
(and by at least ``TRIM_MIN_DROP``) from its high-water mark.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import context
from twisted.python import log as twisted_log
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

log = Logger()

#: Seconds between two collect-and-freeze steps.
FREEZE_INTERVAL = 0.5
#: A burst (issue #12, a ramp of logins): this many young (generation 0) collections
#: since the last freeze bring the next collect-and-freeze forward.  CPython collects
#: generation 0 every 700 net allocations of tracked objects, so this bounds what the
#: collect walks (and keeps CPython's own full collection, due every 100 young ones
#: while little is old, from walking a whole burst).
BURST_YOUNG = 10
#: How often, in seconds, the young collections are counted against ``BURST_YOUNG``.
BURST_CHECK = 0.1
#: How often the number of held requests is looked at (for malloc_trim), seconds.
CHECK_INTERVAL = 5.0
#: A mass end: the held requests fell to half their high-water mark, by at least this.
TRIM_MIN_DROP = 1000


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on another C library."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class _ThreadCall:
    """One call for a pool thread: what Twisted's ``ThreadPool.callInThreadWithCallback``
    does, without its closure that refers to itself (a reference cycle per call, left
    for the collector — and frozen, then never freed, when a freeze comes while the
    call waits in the pool's queue: 32,000 of them in a ramp of 5,000 Pings)."""

    __slots__ = ("args", "ctx", "func", "kw", "on_result")

    def __init__(self, ctx: Any, func: Callable[..., Any], args: tuple[Any, ...],
                 kw: dict[str, Any], on_result: Callable[[bool, Any], object] | None
                 ) -> None:
        self.ctx = ctx
        self.func: Callable[..., Any] | None = func
        self.args: tuple[Any, ...] | None = args
        self.kw: dict[str, Any] | None = kw
        self.on_result = on_result

    def __call__(self) -> None:
        ctx, func, args, kw, on_result = (self.ctx, self.func, self.args, self.kw,
                                          self.on_result)
        self.ctx = self.func = self.args = self.kw = self.on_result = None
        assert func is not None and args is not None and kw is not None, "called twice"
        try:
            result = context.call(ctx, func, *args, **kw)
            ok = True
        except BaseException:  # noqa: BLE001 - handed over as a Failure, as Twisted does
            result = Failure()
            ok = False
        del ctx, func, args, kw         # (the thread keeps nothing of the call)
        if on_result is not None:
            on_result(ok, result)
        elif not ok:
            twisted_log.err(result)
        del result                      # a Failure's traceback holds this frame


def _call_in_thread_with_callback(self: ThreadPool, onResult: Any, func: Any,
                                  *args: Any, **kw: Any) -> None:
    if self.joined:
        return
    ctx = context.theContextTracker.currentContext().contexts[-1]
    self._team.do(_ThreadCall(ctx, func, args, kw, onResult))


class GcTuning(Service):
    """Collects and freezes every ``FREEZE_INTERVAL`` seconds once started (see the
    module docstring); ``held()`` gives the number of requests held now (for the
    memory hand-back).  ``freeze=False`` (``--gc-freeze off``): only the hand-back."""

    def __init__(self, reactor: Any, held: Callable[[], int] | None = None,
                 freeze: bool = True, trim: bool = True) -> None:
        self.setName("gc-tuning")
        self.reactor = reactor
        self.held = held
        self.freeze_enabled = freeze
        self.trim_enabled = trim
        self.freezes = 0                # gc.freeze() calls made
        self.trims = 0
        self.trim_seconds = 0.0
        self._high = 0                  # held requests: high-water mark since the last trim
        self._loop: LoopingCall | None = None
        self._ticks: LoopingCall | None = None
        self._start_call: Any = None
        self._ready = False             # the start-up freeze is done
        self._patched: Any = None       # Twisted's callInThreadWithCallback, replaced
        self._trim = _malloc_trim() if trim else None
        self._young = 0                 # generation-0 collections since the last freeze
        self.burst_ticks = 0            # collect-and-freezes brought forward by a burst
        self._burst: LoopingCall | None = None

    # -- the collector ---------------------------------------------------------------
    def tick(self) -> None:
        """Every ``FREEZE_INTERVAL`` seconds, between two reactor events: a collection of
        what is not frozen — at most what one interval allocated — then a freeze of its
        survivors.  (CPython counts a young generation's size as allocations minus
        deallocations of *any* object: while old objects die — a mass end — or new
        long-lived ones come — a ramp of logins — its own young collections walked up to
        120,000 objects.)  Everything the collection did not find is reachable, so the
        freeze takes no garbage along."""
        if self._ready:
            gc.collect()
            gc.freeze()
            self.freezes += 1
            self._young = 0

    # -- the burst part: collect and freeze sooner when much was allocated ------------
    def _count_young(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks``: count generation-0 collections (nothing else: the collect
        itself runs between reactor events, in ``burst_check``)."""
        if phase == "stop" and info.get("generation") == 0:
            self._young += 1

    def burst_check(self) -> None:
        """Every ``BURST_CHECK`` seconds: after ``BURST_YOUNG`` young collections since
        the last freeze (a burst allocates fast), collect and freeze now instead of at
        the next ``tick``: the collection walks at most about that many allocations."""
        if self._ready and self._young >= BURST_YOUNG:
            self.burst_ticks += 1
            self.tick()

    def _start_burst(self) -> None:
        if self._count_young not in gc.callbacks:
            gc.callbacks.append(self._count_young)
        self._burst = LoopingCall(self.burst_check)
        self._burst.clock = self.reactor
        self._burst.start(BURST_CHECK, now=False)

    def _stop_burst(self) -> None:
        if self._count_young in gc.callbacks:
            gc.callbacks.remove(self._count_young)
        if self._burst is not None and self._burst.running:
            self._burst.stop()
        self._burst = None

    def _started(self) -> None:
        self._start_call = None
        if not self.running:
            return
        gc.collect()
        gc.freeze()
        self.freezes += 1
        self._ready = True

    def _patch_thread_pools(self) -> None:
        if ThreadPool.callInThreadWithCallback is not _call_in_thread_with_callback:
            self._patched = ThreadPool.callInThreadWithCallback
            ThreadPool.callInThreadWithCallback = _call_in_thread_with_callback  # type: ignore[method-assign]

    def _unpatch_thread_pools(self) -> None:
        if self._patched is not None:
            ThreadPool.callInThreadWithCallback = self._patched  # type: ignore[method-assign]
            self._patched = None

    # -- memory ----------------------------------------------------------------------
    def check(self) -> None:
        """Hand free memory back to the system after a mass end of holds."""
        if self.held is None or self._trim is None:
            return
        now = self.held()
        if now > self._high:
            self._high = now
        elif self._high - now >= TRIM_MIN_DROP and now <= self._high // 2:
            self.trim()
            self._high = now

    def trim(self) -> None:
        if self._trim is None:
            return
        t0 = time.perf_counter()
        self._trim(0)
        took = time.perf_counter() - t0
        self.trims += 1
        self.trim_seconds += took
        log.info("held requests fell from {high} to {now}: free memory handed back "
                 "(malloc_trim, {ms:.0f} ms)", high=self._high,
                 now=self.held() if self.held else 0, ms=took * 1000)

    # -- the service -----------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        if self.freeze_enabled:
            self._patch_thread_pools()
            # once the other services have started (listeners, pools, first queries)
            self._start_call = self.reactor.callLater(1.0, self._started)
        if self.held is not None and self._trim is not None:
            self._loop = LoopingCall(self.check)
            self._loop.clock = self.reactor
            self._loop.start(CHECK_INTERVAL, now=False)
        if self.freeze_enabled:
            self._ticks = LoopingCall(self.tick)
            self._ticks.clock = self.reactor
            self._ticks.start(FREEZE_INTERVAL, now=False)
            self._start_burst()

    def stopService(self) -> None:
        super().stopService()
        self._ready = False
        self._unpatch_thread_pools()
        self._stop_burst()
        if self._start_call is not None and self._start_call.active():
            self._start_call.cancel()
        self._start_call = None
        for loop in (self._loop, self._ticks):
            if loop is not None and loop.running:
                loop.stop()
        self._loop = self._ticks = None
