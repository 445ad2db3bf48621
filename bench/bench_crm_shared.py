"""The CRM company address book's costs (issue #14 point 1), in this process, against
the fake CRM (tests/fakecrm.py) over loopback HTTP, on SQLite or PostgreSQL.

    python bench/bench_crm_shared.py [--users 200] [--contacts 5000] [--db sqlite|postgres]

``--contacts`` CRM contacts, assigned round-robin to ``--users`` CRM users that are
easync users too, ``--crm-shared-contacts all``.  Reports: the book's first load
(time, CRM requests); the database rows it adds (items, crm_shared) against what one
copy per user would be; the SQLite file's growth; this process's peak memory; one
user's initial read of the book (what a new phone's Sync reads, 100 a window); the
requests of an idle poll; and a CRM change: the poll that finds it and the users told.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run(args: argparse.Namespace) -> None:
    from crmtest import make_env
    from fakecrm import FakeCrm

    from backends.crm import shared

    crm = FakeCrm("vtiger")
    users = tuple(f"u{i:03d}" for i in range(args.users))
    for name in users:
        crm.add_user(name)
    old = "2026-01-01 00:00:00"
    ids = [crm.add_record("Contacts", {"firstname": f"F{k}", "lastname": f"Contact {k}",
                                       "email": f"c{k}@example.org", "mobile": "+39 333 1",
                                       "title": "Sales", "mailingcity": "Milano"},
                          owner=users[k % len(users)], modifiedtime=old)
           for k in range(args.contacts)]
    tmp = Path(tempfile.mkdtemp())
    kw: dict[str, Any] = {}
    if args.db == "postgres":
        import pgtest

        from backends.sql.store import SqlStore

        ctx = pgtest.fresh_database("benchbook")
        url = ctx.__enter__()
        real = SqlStore.__init__

        def on_pg(self: Any, reactor: Any, _url: str, **k: Any) -> None:
            real(self, reactor, url, **k)

        SqlStore.__init__ = on_pg  # type: ignore[method-assign]
    env = await make_env(tmp, crm=crm, users=users, shared_contacts="all", settle=0.0, timeout=300.0, **kw)
    db_file = tmp / "mirror.sqlite"

    def size() -> float:
        return (db_file.stat().st_size + (Path(str(db_file) + "-wal").stat().st_size
                if Path(str(db_file) + "-wal").exists() else 0)) / 1e6 \
            if db_file.exists() else 0.0

    try:
        t = time.monotonic()
        for name in users:
            await env.store.ensure_loaded(env.users[name])
        print(f"own records of {len(users)} users loaded in {time.monotonic() - t:.1f} s")
        size0, rss0, req0 = size(), rss_mb(), sum(crm.calls.values())
        t = time.monotonic()
        await env.store.company()
        load = time.monotonic() - t
        print(f"book: first load of {args.contacts} contacts in {load:.1f} s, "
              f"{sum(crm.calls.values()) - req0} CRM requests; peak RSS {rss0:.0f} -> "
              f"{rss_mb():.0f} MB")
        holder = await env.sql.get_user(shared.HOLDER)
        q = env.sql.raw_query
        book_items = (await q("SELECT count(*) FROM items WHERE user_id = ?",
                              (holder.id,)))[0][0]
        shared_rows = (await q("SELECT count(*) FROM crm_shared"))[0][0]
        all_items = (await q("SELECT count(*) FROM items"))[0][0]
        per_user = sum(args.contacts - len(range(i, args.contacts, len(users)))
                       for i in range(len(users)))
        print(f"book rows: {book_items} items + {shared_rows} crm_shared (all items: "
              f"{all_items}); one copy per user would be {per_user} item rows")
        if args.db == "sqlite":
            print(f"SQLite file: {size0:.1f} -> {size():.1f} MB")
        for name in users:
            await env.store.list_folders(env.users[name])
        book = (await shared_env_book(env, users[0]))
        t = time.monotonic()
        cursor, n, calls = 0, 0, 0
        while True:
            b = await env.store.changes_since(env.users[users[0]], book, cursor, 100)
            n += len(b.changes)
            calls += 1
            cursor = b.high
            if not b.more:
                break
        took = time.monotonic() - t
        print(f"one user's initial read of the book: {n} items in {calls} windows of 100, "
              f"{took * 1000:.0f} ms ({took * 1000 / calls:.1f} ms a window)")
        await env.store.poll_once()
        req0 = sum(crm.calls.values())
        await env.store.poll_once()
        print(f"idle poll: {sum(crm.calls.values()) - req0} CRM requests")
        env.hub.published.clear()
        crm.modify_record(ids[7], {"lastname": "Renamed"})
        t = time.monotonic()
        await env.store.poll_once()
        told = {u for u, f in env.hub.published if f == book}
        print(f"a CRM change: poll {1000 * (time.monotonic() - t):.0f} ms, "
              f"{len(told)} users told (their held Pings wake)")
        print(f"peak RSS at the end: {rss_mb():.0f} MB")
    finally:
        await env.close()
        if args.db == "postgres":
            SqlStore.__init__ = real  # type: ignore[method-assign]
            ctx.__exit__(None, None, None)


async def shared_env_book(env: Any, name: str) -> str:
    (f,) = [f for f in await env.store.list_folders(env.users[name]) if f.type == 14]
    return str(f.server_id)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, default=200)
    p.add_argument("--contacts", type=int, default=5000)
    p.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = p.parse_args()
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred

    os.environ.setdefault("EASYNC_BENCH", "1")
    task.react(lambda _r: Deferred.fromCoroutine(run(args)))
    del reactor


if __name__ == "__main__":
    main()
