"""Tombstone churn: the database stays bounded while items come and go (issue #13 point 6).

    python bench/bench_churn.py [--pairs 1000000] [--batch 100] [--report 50000]
                                [--purge-every 10000] [--db URL]

One user, one Contacts folder, two devices syncing it through easync's sync engine
(``easync.syncengine``, the same code a Sync request runs, without the HTTP and WBXML
around it): device 1 adds ``--batch`` contacts in one Sync, deletes them in the next
and syncs past its own writes; device 2 syncs (WindowSize 512) until nothing is left.
Every ``--purge-every`` add/delete pairs one retention pass runs (``easync.retention``,
the server's own service, with the default ages): the tombstones both devices have
passed go, at most 500 a transaction (the longest such batch so far is printed).  Every ``--report`` pairs a line: pairs done, database size (SQLite: pages
in use and the file with its WAL; PostgreSQL: ``pg_database_size``), tombstones and
rows in ``items``, pairs per second.  Without the purge the database grows by one
tombstone per pair (``--purge-every 0``: no purge, to see it); with it, it stays at
what the live items and one purge interval's tombstones need.  On PostgreSQL the
space of deleted rows is reused only after a VACUUM: autovacuum does it on a default
server; where it is off, ``--vacuum`` runs ``VACUUM`` on the tables written after each
retention pass, as autovacuum would (SQLite reuses freed pages by itself).  Default database: a
fresh SQLite file in a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react
from twisted.internet.threads import deferToThread

from backends.sql.store import SqlStore
from easync.handler import EasServer
from easync.retention import Retention
from easync.syncengine import SyncEngine, quirks_for
from easync.synctypes import AddCommand, CollectionRequest, DeleteCommand


class _NoHub:
    """No Ping waits here: changes are published to nobody."""

    waiting = 0

    def publish(self, *args: Any, **kwargs: Any) -> None:
        pass


async def _size(store: SqlStore, path: str | None) -> str:
    if path is None:
        ((n,),) = await store.raw_query("SELECT pg_database_size(current_database())")
        return f"db {int(n) / 2**20:8.1f} MiB"
    ((pages,),) = await store.raw_query("PRAGMA page_count")
    ((free,),) = await store.raw_query("PRAGMA freelist_count")
    ((page,),) = await store.raw_query("PRAGMA page_size")
    files = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
    return (f"in use {(int(pages) - int(free)) * int(page) / 2**20:7.1f} MiB,"
            f" file+wal {files / 2**20:7.1f} MiB")


def _vacuum(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM items, sync_states, folders, users")


async def main(reactor: Any, args: argparse.Namespace) -> None:
    tmp = None
    path: str | None = None
    url = args.db
    if not url:
        tmp = tempfile.mkdtemp(prefix="bench_churn_")
        path = os.path.join(tmp, "churn.sqlite")
        url = f"sqlite:///{path}"
    elif url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    store = SqlStore(reactor, url)
    await store.open()
    user = await store.add_user("churn", None, None, True)
    fid = next(f.server_id for f in await store.list_folders(user) if f.type == 9)
    server = EasServer(users=store, items=store, state=store, notifier=_NoHub(),
                       clock=reactor)
    retention = Retention(reactor, store)
    quirks = quirks_for("iPhone", "bench", None)
    keys = {}

    async def sync(dev: str, commands: list[Any] | None = None, changes: bool = True
                   ) -> Any:
        while True:
            folder = next(f for f in await store.list_folders(user) if f.server_id == fid)
            req = CollectionRequest(fid, keys[dev], 512, changes and not commands,
                                    commands=commands or [])
            res = await SyncEngine(server).sync_collection(user, dev, "14.1", quirks,
                                                           folder, req, 512)
            assert res.status == "1", res
            keys[dev] = res.sync_key
            if commands or not res.more_available:
                return res

    for dev in ("DEV1", "DEV2"):
        folder = next(f for f in await store.list_folders(user) if f.server_id == fid)
        res = await SyncEngine(server).sync_collection(
            user, dev, "14.1", quirks, folder, CollectionRequest(fid, "0", 512, False), 512)
        keys[dev] = res.sync_key

    print(f"bench_churn: {args.pairs} add/delete pairs, {args.batch} a Sync, purge every "
          f"{args.purge_every}{' then VACUUM' if args.vacuum else ''},"
          f" {url.split('@')[-1]}", flush=True)
    t0 = time.monotonic()
    done = 0
    purged = 0
    longest = 0.0               # the longest purge batch (one transaction) so far
    next_report, next_purge = args.report, args.purge_every
    while done < args.pairs:
        n = min(args.batch, args.pairs - done)
        res = await sync("DEV1", [AddCommand(f"c{done + i}", {"FirstName": f"n{done + i}"})
                                  for i in range(n)])
        sids = [r.server_id for r in res.responses]
        await sync("DEV1", [DeleteCommand(s) for s in sids if s])
        await sync("DEV1")
        await sync("DEV2")
        done += n
        if args.purge_every and (done >= next_purge or done >= args.pairs):
            did = await retention.run_pass()
            purged += did["synced"] + did["age"]
            longest = max(longest, retention.longest_batch_seconds)
            if args.vacuum and path is None:
                await deferToThread(_vacuum, url)
            next_purge += args.purge_every
        if done >= next_report or done >= args.pairs:
            ((tombs,),) = await store.raw_query("SELECT COUNT(*) FROM items WHERE deleted = 1")
            ((rows,),) = await store.raw_query("SELECT COUNT(*) FROM items")
            rate = done / (time.monotonic() - t0)
            print(f"{done:>9} pairs  {await _size(store, path)}  tombstones {tombs:>7}"
                  f"  items rows {rows:>7}  purged {purged:>9}  {rate:7.0f} pairs/s"
                  f"  longest purge batch {longest * 1000:5.1f} ms",
                  flush=True)
            next_report += args.report
    await store.close()
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--report", type=int, default=50_000)
    p.add_argument("--purge-every", type=int, default=10_000)
    p.add_argument("--db", default="", help="database URL (default: a fresh SQLite file)")
    p.add_argument("--vacuum", action="store_true",
                   help="PostgreSQL: VACUUM the written tables after each retention pass")
    a = p.parse_args()
    react(lambda reactor: ensureDeferred(main(reactor, a)))
