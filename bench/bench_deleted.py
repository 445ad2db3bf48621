"""What keeping a device's deletes costs (issue #14 point 2, easync/deleted.py).

    python bench/bench_deleted.py [--items 50000] [--deletes 500] [--db URL]

One user whose Contacts folder holds ``--items`` contacts.  Measured, each the median of
several runs where it says so:

* a Sync-sized delete of 100 contacts through ``IItemStore.apply`` with ``keep`` (the
  device's delete, kept in the same transaction) against the same delete without it;
* ``count_live`` (the mass-delete alarm's count of the folder's live items, an index
  count) on the full folder, and the query plan it uses;
* restoring ``--deletes`` kept items (``DeletedItems.restore_since``: claims, adds and
  finishes a batch of 100 per transaction) and the longest single store call, i.e.
  the longest the reactor waited on one transaction (the work runs in the pool thread);
* the expiry: ``purge_deleted`` batches of 500, the longest batch.

Default database: a fresh SQLite file in a temporary directory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from backends.sql.store import SqlStore
from easync.deleted import DeletedItems
from easync.model import Op


def contact(i: int) -> dict[str, Any]:
    return {"FirstName": f"First{i}", "LastName": f"Last{i}",
            "Email1Address": f"person{i}@example.org", "MobilePhoneNumber": f"+39 333 {i:07d}",
            "CompanyName": "ACME S.p.A.", "JobTitle": "Engineer"}


class Timed:
    """Wraps the store: records how long each call took (the longest, per method)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.longest: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.store, name)
        if not callable(fn):
            return fn

        async def call(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                dt = time.perf_counter() - t0
                self.longest[name] = max(self.longest.get(name, 0.0), dt)

        return call


async def main(reactor: Any, args: argparse.Namespace) -> None:
    tmp = None
    url = args.db
    if not url:
        tmp = tempfile.mkdtemp(prefix="bench-deleted-")
        url = f"sqlite:///{tmp}/bench.sqlite"
    store = SqlStore(reactor, url)
    await store.open()
    try:
        user = await store.add_user(f"bench{int(time.time())}", "x", None, True)
        folder = next(f.server_id for f in await store.list_folders(user) if f.type == 9)
        sids: list[str] = []
        for start in range(0, args.items, 500):
            done = await store.apply(user, folder, [
                Op("add", data=contact(i), ref=str(i))
                for i in range(start, min(args.items, start + 500))])
            sids.extend(str(r.server_id) for r in done)
        print(f"database {url.split('@')[-1]}: {len(sids)} contacts in one folder")

        # 100 deletes in one apply, with and without keeping them
        with_keep, without = [], []
        pos = 0
        for run in range(6):
            for keep in (True, False):
                part = sids[pos:pos + 100]
                pos += 100
                t0 = time.perf_counter()
                await store.apply(user, folder, [
                    Op("delete", server_id=s, keep="BENCH" if keep else None)
                    for s in part])
                (with_keep if keep else without).append(time.perf_counter() - t0)
        print(f"delete 100 in one apply: kept {statistics.median(with_keep) * 1000:.1f} ms,"
              f" not kept {statistics.median(without) * 1000:.1f} ms (median of 6)")

        counts = []
        for _ in range(7):
            t0 = time.perf_counter()
            n = await store.count_live(user, folder)
            counts.append(time.perf_counter() - t0)
        plan = await store.raw_query(
            store.engine.explain_prefix + "SELECT COUNT(*) FROM items WHERE folder_id = ?"
            " AND deleted = 0", (int(folder),))
        print(f"count_live of {n} live items: {statistics.median(counts) * 1000:.1f} ms"
              f" (median of 7); plan: {' | '.join(str(r[-1]) for r in plan)}")

        # the deletes to restore
        more = sids[pos:pos + args.deletes]
        for start in range(0, len(more), 100):
            await store.apply(user, folder, [Op("delete", server_id=s, keep="PHONE")
                                             for s in more[start:start + 100]])
        timed = Timed(store)
        svc = DeletedItems(timed, timed, reactor)
        t0 = time.perf_counter()
        result = await svc.restore_since(user, 0.0, device_id="PHONE")
        total = time.perf_counter() - t0
        print(f"restore of {len(result.restored)} kept items: {total * 1000:.0f} ms in all;"
              " longest call: " + ", ".join(f"{k} {v * 1000:.1f} ms"
                                            for k, v in sorted(timed.longest.items())))

        # expiry of every kept row, in batches of 500
        t0 = time.perf_counter()
        longest, gone = 0.0, 0
        while True:
            b0 = time.perf_counter()
            step = await store.purge_deleted(time.time() + 10, 500)
            longest = max(longest, time.perf_counter() - b0)
            gone += step.done
            if not step.more:
                break
        print(f"expiry: {gone} kept rows in {(time.perf_counter() - t0) * 1000:.0f} ms,"
              f" longest batch {longest * 1000:.1f} ms")
    finally:
        await store.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=50000)
    p.add_argument("--deletes", type=int, default=500)
    p.add_argument("--db", default="")
    a = p.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, a)))
