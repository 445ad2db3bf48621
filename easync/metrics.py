"""Counters for ``/metrics`` in the Prometheus text format (version 0.0.4).

Off by default: ``--metrics-listen ENDPOINT`` serves them on a listener of its own
(never on the ActiveSync port, which faces phones), with ``GET /healthz`` beside them
(``easync.health``).  What is counted:

* ``easync_requests_total{command, http, status}`` — requests answered, by command,
  HTTP code and EAS Status (``-`` when the answer carries none);
* ``easync_held_requests{command}`` — Pings and Sync-Waits held open now;
* ``easync_hub_subscriptions`` — subscriptions the change hub holds;
* ``easync_push_latency_seconds`` — histogram: from the change hub waking a held
  request to its response being written;
* ``easync_tombstones_purged_total{reason}``, ``easync_devices_forgotten_total``,
  ``easync_retention_last_pass_seconds``, ``easync_retention_longest_batch_seconds`` —
  the retention passes (``easync.retention``);
* ``process_resident_memory_bytes``, ``process_open_fds``;
* ``python_gc_collections_total{generation}``, ``python_gc_pause_seconds_total``,
  ``python_gc_pause_seconds_max`` and the histogram ``python_gc_pause_seconds`` (by
  generation 0, 1, 2; ``gc.callbacks`` times every collection, explicit ones too):
  Python's cyclic garbage collector stops the process while it runs, for a time in
  proportion to the objects it walks.  Without ``--gc-freeze`` a full collection
  walks every object alive, about 90 per held Ping (2 s at 19,900 held on the 2-core
  test machine); with it, only what the last half second allocated
  (``easync.gctune``).

Counting costs a dict update per request and nothing per held request.
"""

from __future__ import annotations

import bisect
import gc
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

if TYPE_CHECKING:
    from easync.health import HealthCheck

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Iterable[str], values: Iterable[str]) -> str:
    inner = ",".join(f'{n}="{_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}" if inner else ""


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Histogram:
    """Cumulative buckets, a sum and a count (no labels)."""

    __slots__ = ("buckets", "count", "counts", "total")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)     # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        """The samples; ``labels``: ``name="value"`` pairs put before ``le``."""
        out = []
        running = 0
        lead = labels + "," if labels else ""
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            running += n
            out.append(f'{name}_bucket{{{lead}le="{_number(bound)}"}} {running}')
        tail = "{" + labels + "}" if labels else ""
        out.append(f"{name}_sum{tail} {self.total!r}")
        out.append(f"{name}_count{tail} {self.count}")
        return out


class Metrics:
    """The process's counters; ``render()`` gives the text a scraper reads."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.push_latency = Histogram()
        # name -> (help, callable returning {label value: number}, label name, type)
        self._gauges: dict[str, tuple[str, Callable[[], dict[str, float]], str, str]] = {}
        self.gc: GcPauses | None = None

    def request(self, command: str, http_status: int, eas_status: str) -> None:
        key = (command, str(http_status), eas_status or "-")
        self.requests[key] = self.requests.get(key, 0) + 1

    def gauge(self, name: str, help_text: str, read: Callable[[], dict[str, float]],
              label: str = "") -> None:
        """Register a gauge read at scrape time: ``read()`` maps a value of ``label``
        (or ``""`` when there is no label) to a number."""
        self._gauges[name] = (help_text, read, label, "gauge")

    def counter(self, name: str, help_text: str, read: Callable[[], dict[str, float]],
                label: str = "") -> None:
        """Register a counter kept elsewhere, read at scrape time as ``gauge`` reads
        (``read()`` must only grow)."""
        self._gauges[name] = (help_text, read, label, "counter")

    def render(self) -> str:
        out = [("# HELP easync_requests_total Requests answered, by command, HTTP code "
                "and EAS Status."), "# TYPE easync_requests_total counter"]
        for (cmd, code, status), n in sorted(self.requests.items()):
            labels = _labels(("command", "http", "status"), (cmd, code, status))
            out.append(f"easync_requests_total{labels} {n}")
        for name, (help_text, read, label, kind) in sorted(self._gauges.items()):
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            try:
                values = read()
            except Exception:  # noqa: BLE001 - a gauge that cannot be read is left out
                values = {}
            for value, number in sorted(values.items()):
                labels = _labels((label,), (value,)) if label else ""
                out.append(f"{name}{labels} {_number(number)}")
        out.append("# HELP easync_push_latency_seconds From the change hub waking a held "
                   "Ping or Sync to its response being written.")
        out.append("# TYPE easync_push_latency_seconds histogram")
        out += self.push_latency.lines("easync_push_latency_seconds")
        out += _process_lines()
        if self.gc is not None:
            out += self.gc.lines()
        return "\n".join(out) + "\n"


class GcPauses:
    """Times every collection of Python's cyclic garbage collector (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.max = [0.0, 0.0, 0.0]
        self.pauses = [Histogram(GC_BUCKETS) for _ in range(3)]
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        gen = min(2, max(0, int(info.get("generation", 0))))
        took = time.perf_counter() - self._t0
        self.count[gen] += 1
        self.total[gen] += took
        self.max[gen] = max(self.max[gen], took)
        self.pauses[gen].observe(took)

    def install(self) -> GcPauses:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def lines(self) -> list[str]:
        out = [("# HELP python_gc_collections_total Collections by Python's cyclic garbage "
               "collector."), "# TYPE python_gc_collections_total counter"]
        out += [f'python_gc_collections_total{{generation="{g}"}} {self.count[g]}'
                for g in range(3)]
        out += [("# HELP python_gc_pause_seconds_total Time the process stood still in "
                "them."), "# TYPE python_gc_pause_seconds_total counter"]
        out += [f'python_gc_pause_seconds_total{{generation="{g}"}} {self.total[g]!r}'
                for g in range(3)]
        out += ["# HELP python_gc_pause_seconds_max The longest one since the start.",
                "# TYPE python_gc_pause_seconds_max gauge"]
        out += [f'python_gc_pause_seconds_max{{generation="{g}"}} {self.max[g]!r}'
                for g in range(3)]
        out += [("# HELP python_gc_pause_seconds How long each collection stopped the "
                "process."), "# TYPE python_gc_pause_seconds histogram"]
        for g in range(3):
            out += self.pauses[g].lines("python_gc_pause_seconds", f'generation="{g}"')
        return out


def _process_lines() -> list[str]:
    out: list[str] = []
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        out += ["# HELP process_resident_memory_bytes Resident memory size in bytes.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {pages * os.sysconf('SC_PAGE_SIZE')}"]
    except (OSError, ValueError, IndexError):
        pass
    try:
        fds = len(os.listdir("/proc/self/fd"))
        out += ["# HELP process_open_fds Number of open file descriptors.",
                "# TYPE process_open_fds gauge", f"process_open_fds {fds}"]
    except OSError:
        pass
    return out


class MetricsResource(Resource):
    """``GET /metrics``, and ``GET /healthz`` when given a ``HealthCheck``."""

    isLeaf = True

    def __init__(self, metrics: Metrics, health: HealthCheck | None = None) -> None:
        super().__init__()
        self.metrics = metrics
        self.health = health

    def render_GET(self, request: Request) -> Any:
        if self.health is not None and request.path == b"/healthz":
            return self.health.render(request)
        if request.path.rstrip(b"/") not in (b"/metrics", b""):
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"see /metrics\n"
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        return self.metrics.render().encode()


class _QuietSite(Site):
    """A Site that writes no access log line (a scraper's requests are not news)."""

    def log(self, request: http.Request) -> None:
        pass


def metrics_site(metrics: Metrics, health: HealthCheck | None = None) -> Site:
    """The metrics listener's site: ``/metrics``, and ``/healthz`` with ``health``."""
    site = _QuietSite(MetricsResource(metrics, health))
    site.noisy = False
    site.displayTracebacks = False
    return site


def watch(metrics: Metrics, server: Any) -> None:
    """Register the gauges that read an ``EasServer``: held requests, hub size."""
    metrics.gauge("easync_held_requests", "Pings and Sync-Waits held open now.",
                  lambda: {k: float(v) for k, v in server.holds.counts.items()},
                  label="command")
    metrics.gauge("easync_hub_subscriptions", "Subscriptions the change hub holds now.",
                  lambda: {"": float(server.notifier.waiting)})
    if metrics.gc is None:
        metrics.gc = GcPauses().install()
