"""``easync.retention.Retention``: the passes the server runs (issue #13 point 6), over a
store double that records the batches asked for (the SQL store's own behaviour is in
tests/test_store_contract.py, the whole server's in tests/test_e2e_retention.py)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from easync.interfaces import PurgeStep
from easync.metrics import Metrics
from easync.retention import DAY, Retention


class Batches:
    """Answers each kind of batch from a script of ``PurgeStep``s; records the calls."""

    def __init__(self, **script: list[PurgeStep]) -> None:
        self.script = script
        self.calls: list[tuple[str, Any]] = []

    def _next(self, kind: str, arg: Any) -> Deferred[PurgeStep]:
        self.calls.append((kind, arg))
        steps = self.script.get(kind) or [PurgeStep(0, False)]
        return succeed(steps.pop(0) if len(steps) > 1 else steps[0])

    def purge_synced(self, after: int, limit: int) -> Deferred[PurgeStep]:
        return self._next("synced", after)

    def purge_older(self, before: float, limit: int) -> Deferred[PurgeStep]:
        return self._next("age", before)

    def forget_devices(self, unseen_before: float, limit: int) -> Deferred[PurgeStep]:
        return self._next("devices", unseen_before)


def run(clock: Clock, d: Deferred[Any]) -> Any:
    """Drive the clock until ``d`` fires (each batch starts from a fresh turn)."""
    out: list[Any] = []
    d.addBoth(out.append)
    for _ in range(1000):
        if out:
            break
        clock.advance(0)
    assert out, "the pass did not end"
    return out[0]


def test_a_pass_walks_every_step_in_batches_and_counts() -> None:
    clock = Clock()
    clock.advance(1000 * DAY)
    store = Batches(synced=[PurgeStep(500, True, 40), PurgeStep(7, False, 90)],
                    age=[PurgeStep(500, True), PurgeStep(3, False)],
                    devices=[PurgeStep(2, False)])
    r = Retention(clock, store, tombstone_max_age=90 * DAY, device_max_idle=180 * DAY)
    did = run(clock, Deferred.fromCoroutine(r.run_pass()))
    assert did == {"synced": 507, "age": 503, "devices": 2, "deleted": 0}
    # the walk over folders resumes where the previous batch stopped
    assert [a for k, a in store.calls if k == "synced"] == [0, 40]
    assert [a for k, a in store.calls if k == "age"] == [910 * DAY, 910 * DAY]
    assert [a for k, a in store.calls if k == "devices"] == [820 * DAY]
    metrics = Metrics()
    r.register(metrics)
    text = metrics.render()
    assert 'easync_tombstones_purged_total{reason="age"} 503' in text
    assert 'easync_tombstones_purged_total{reason="synced"} 507' in text
    assert "# TYPE easync_devices_forgotten_total counter" in text
    assert "easync_devices_forgotten_total 2" in text
    assert "# TYPE easync_retention_longest_batch_seconds gauge" in text


def test_busy_ends_a_step_and_zero_ages_switch_steps_off() -> None:
    """Another process holding the retention lock: this one leaves that step to it
    (no retry loop); an age of 0 asks nothing of the store."""
    clock = Clock()
    store = Batches(synced=[PurgeStep(0, True, 0, busy=True)])
    r = Retention(clock, store, tombstone_max_age=0, device_max_idle=0)
    assert run(clock, Deferred.fromCoroutine(r.run_pass())) == {
        "synced": 0, "age": 0, "devices": 0, "deleted": 0}
    assert store.calls == [("synced", 0)]


def test_the_service_runs_a_pass_every_interval_one_at_a_time() -> None:
    clock = Clock()
    held: list[Deferred[PurgeStep]] = []

    class Slow(Batches):
        def purge_synced(self, after: int, limit: int) -> Deferred[PurgeStep]:
            self.calls.append(("synced", after))
            d: Deferred[PurgeStep] = Deferred()
            held.append(d)
            return d

    store = Slow()
    r = Retention(clock, store, interval=60.0, tombstone_max_age=0, device_max_idle=0)
    r.startService()
    try:
        clock.advance(59)
        assert store.calls == []
        clock.advance(1)
        clock.advance(0)
        assert len(held) == 1
        clock.advance(60)                # the pass is still waiting: no second one
        clock.advance(0)
        assert len(held) == 1
        held[0].callback(PurgeStep(1, False))
        assert r.passes == 1 and r.tombstones_purged["synced"] == 1
        clock.advance(60)
        clock.advance(0)
        assert len(held) == 2
    finally:
        r.stopService()


def test_kept_deletes_older_than_deleted_keep_are_forgotten_in_batches() -> None:
    """--deleted-keep (easync.deleted): a store with ``purge_deleted`` is asked for
    batches of kept deletes older than the keep time until it says no more."""
    clock = Clock()
    clock.advance(1000 * DAY)

    class WithKept(Batches):
        def purge_deleted(self, before: float, limit: int) -> Deferred[PurgeStep]:
            return self._next("deleted", before)

    store = WithKept(deleted=[PurgeStep(500, True), PurgeStep(20, False)])
    r = Retention(clock, store, tombstone_max_age=0, device_max_idle=0,
                  deleted_keep=30 * DAY)
    did = run(clock, Deferred.fromCoroutine(r.run_pass()))
    assert did["deleted"] == 520 and r.deleted_purged == 520
    assert store.calls[-2:] == [("deleted", 970 * DAY), ("deleted", 970 * DAY)]
    metrics = Metrics()
    r.register(metrics)
    assert "easync_deleted_items_purged_total 520" in metrics.render()
    off = WithKept(deleted=[PurgeStep(5, False)])
    r2 = Retention(clock, off, tombstone_max_age=0, device_max_idle=0, deleted_keep=0)
    run(clock, Deferred.fromCoroutine(r2.run_pass()))
    assert not [c for c in off.calls if c[0] == "deleted"]
