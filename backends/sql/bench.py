"""Store-level benchmark: ``python -m backends.sql.bench URL [--count N]``.

Fills a fresh user's Contacts folder with N contacts (apply, batches of 1000), then
pages the whole change feed with limits 100 and 512, times a feed call with nothing
new and a GetItemEstimate-style count, and prints the feed query's plan.  Use an
empty database (it adds a user named ``bench-<pid>``); for a whole-server figure see
``bench/bench_sync.py``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from backends.sql.store import SqlStore
from easync.model import Op


def contact(n: int) -> dict[str, Any]:
    return {"FirstName": f"First{n}", "LastName": f"Last{n}", "CompanyName": "ACME S.p.A.",
            "JobTitle": "Account manager", "Email1Address": f"first{n}.last{n}@example.org",
            "MobilePhoneNumber": f"+39 333 {n:07d}", "BusinessAddressCity": "Milano",
            "Categories": ["Clienti"], "Body": {"Type": 1, "Data": f"Notes on contact {n}."}}


async def run(reactor: Any, url: str, count: int) -> None:
    store = SqlStore(reactor, url)
    await store.open()
    try:
        user = await store.add_user(f"bench-{os.getpid()}", None, None, True)
        folder = (await store.list_folders(user))[0].server_id
        t = time.perf_counter()
        for start in range(0, count, 1000):
            await store.apply(user, folder, [Op("add", data=contact(n))
                                             for n in range(start, min(count, start + 1000))])
        dt = time.perf_counter() - t
        print(f"{store.engine.name}: apply {count:,} adds in batches of 1000: {dt:.2f} s"
              f" = {count / dt:,.0f}/s")
        cursor = 0
        for limit in (100, 512):
            t = time.perf_counter()
            cursor, calls, worst = 0, 0, 0.0
            while True:
                t1 = time.perf_counter()
                batch = await store.changes_since(user, folder, cursor, limit)
                worst = max(worst, time.perf_counter() - t1)
                calls += 1
                cursor = batch.high
                if not batch.more:
                    break
            dt = time.perf_counter() - t
            print(f"  changes_since limit {limit}: {count / dt:,.0f} items/s,"
                  f" {dt / calls * 1000:.2f} ms/call (worst {worst * 1000:.2f} ms)")
        t = time.perf_counter()
        for _ in range(500):
            await store.changes_since(user, folder, cursor, 100)
        print(f"  nothing new: {(time.perf_counter() - t) * 2:.3f} ms/call")
        t = time.perf_counter()
        for _ in range(500):
            await store.count_changes_since(user, folder, max(0, cursor - 10))
        print(f"  count of 10 changes: {(time.perf_counter() - t) * 2:.3f} ms/call")
        for line in await store.explain_feed(user, folder, cursor // 2, 100):
            print(f"  plan: {line}")
    finally:
        await store.close()


def main() -> None:
    from twisted.internet import defer, task

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="sqlite:///path.sqlite or postgresql://user@host/db")
    p.add_argument("--count", type=int, default=100_000)
    args = p.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, args.url, args.count)))


if __name__ == "__main__":
    main()
