"""Find (issue #14 point 5): how long one Find holds the reactor, on a big account.

    python bench/bench_find.py [--contacts 100000] [--users 2000] [--repeat 20]
                               [--pg postgresql://postgres@127.0.0.1:5432/test]

A fresh SQLite database (with ``--pg``: a PostgreSQL database created through that
admin URL for the run, dropped after) in which one user owns ``--contacts`` contacts
(``First<i> Last<i % 500>``, an address but for one in four, a company, a mobile
number; 50 more in a second Contacts folder) and ``--users``
more accounts fill the GAL, written through the store's own ``apply`` and
``add_user_txn``, then frozen out of the collector's way as the server does once
started (``easync.gctune``).  Then, in this process, on the real reactor, each Find below is run
``--repeat`` times through the command's handler and easync's encoder (what the HTTP
layer does on the reactor); a ``LoopingCall`` every 5 ms records the longest time the
reactor could not run it (the gap minus 5 ms): the longest time any other user would
have waited; a first row measures the same while the reactor is idle (the machine's own
noise: other processes, the OS).  Reports per Find: results, Total, wall p50/max, reactor pause p50/max.
The rule of the issue: no request holds the reactor more than ~50 ms.  With
``--backfill``, then schema 14's background re-index of every contact is timed, with a
Find run back to back meanwhile.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

STEP = 0.005
SEARCH_ID = "4f1c2b9e-7a55-4c0e-9d1e-2b6f8a3c5d71"


def contact(i: int) -> dict[str, Any]:
    """Contact ``i``; one in four (i % 4 == 3) has no address, a phone number only."""
    data = {"FirstName": f"First{i}", "LastName": f"Last{i % 500}",
            "CompanyName": f"Company {i % 97} S.p.A.", "Email1Address": f"c{i}@example.org",
            "MobilePhoneNumber": f"+39 333 {i:07d}", "JobTitle": "Engineer",
            "Body": {"Type": 1, "Data": f"Notes on contact {i}."}}
    if i % 4 == 3:
        del data["Email1Address"]
    return data


#: contacts of a second Contacts folder (``Last<i>`` as in the first: their matches
#: sort among the first folder's)
SMALL_FOLDER = 50


def finds(contacts_folder: str, small_folder: str) -> list[tuple[str, Any]]:
    from easync.wbxml.element import E

    def gal(q: str, rng: str) -> Any:
        return E("Find:Find", E("Find:SearchId", SEARCH_ID), E("Find:ExecuteSearch", E(
            "Find:GalSearchCriterion", E("Find:Query", q),
            E("Find:Options", E("Find:Range", rng)))))

    def box(q: str, rng: str, cls: str = "Contacts", coll: str | None = None) -> Any:
        return E("Find:Find", E("Find:SearchId", SEARCH_ID), E("Find:ExecuteSearch", E(
            "Find:MailBoxSearchCriterion", E("Find:Query", E("Find:FreeText", q),
                                             E("AirSync:Class", cls),
                                             E("AirSync:CollectionId", coll) if coll
                                             else None),
            E("Find:Options", E("Find:Range", rng)))))

    def rr(to: str) -> Any:
        return E("ResolveRecipients:ResolveRecipients", E("ResolveRecipients:To", to),
                 E("ResolveRecipients:Options",
                   E("ResolveRecipients:MaxAmbiguousRecipients", "100")))

    return [
        ("contacts 'l' (all match) 0-99", box("l", "0-99")),
        ("contacts 'l' (all match) 900-999", box("l", "900-999")),
        ("contacts 'last1' (2,200 match) 0-99", box("last1", "0-99")),
        ("contacts 'first99999' (1 match, no address)", box("first99999", "0-99")),
        ("contacts 'c1234' (address prefix, 9 match)", box("c1234", "0-99")),
        ("contacts 'c' in the Contacts folder 0-99", box("c", "0-99", "Email",
                                                          contacts_folder)),
        (f"contacts 'l' in a {SMALL_FOLDER}-contact folder",
         box("l", "0-99", "Contacts", small_folder)),
        ("ResolveRecipients 'l' (recipients only), 100", rr("l")),
        ("ResolveRecipients 'first99999' (no address)", rr("first99999")),
        ("contacts 'zzz' (none)", box("zzz", "0-99")),
        ("mail 'l' (no mail store)", box("l", "0-99", "Email")),
        ("GAL 'u' (all users, 1,000 looked at) 0-99", gal("u", "0-99")),
        ("GAL 'u' 900-999", gal("u", "900-999")),
        ("GAL 'u1999' (1 match)", gal("u1999", "0-99")),
    ]


class Pauses:
    """The longest time the reactor went without running a 5 ms LoopingCall."""

    def __init__(self, reactor: Any) -> None:
        from twisted.internet.task import LoopingCall

        self.worst = 0.0
        self.last = 0.0
        self.loop = LoopingCall(self.tick)
        self.loop.clock = reactor

    def tick(self) -> None:
        now = time.monotonic()
        if self.last:
            self.worst = max(self.worst, now - self.last - STEP)
        self.last = now

    def __enter__(self) -> Self:
        self.loop.start(STEP, now=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.tick()
        self.loop.stop()


async def run(reactor: Any, db: str, args: argparse.Namespace) -> None:
    from twisted.internet.task import deferLater

    from backends.sql.store import SqlStore
    from easync.commands import find, resolverecipients
    from easync.handler import EasRequest, EasServer
    from easync.model import Op
    from easync.notify import LocalNotifier
    from easync.wbxml import encode

    if args.span:
        import backends.sql.store as store_module

        store_module.CONTACTS_SPAN = args.span
    store = SqlStore(reactor, db)
    await store.open()
    t0 = time.monotonic()
    user = await store.add_user("owner", None, "owner@example.org", True)
    folder = {f.name: f.server_id for f in await store.list_folders(user)}["Contacts"]
    for start in range(0, args.contacts, 5000):
        await store.apply(user, folder, [Op("add", data=contact(i), cls="Contacts")
                                         for i in range(start, min(start + 5000,
                                                                   args.contacts))])
    small = (await store.create_folder(user, "0", "Suppliers", 14)).server_id
    await store.apply(user, small, [Op("add", data={
        "FirstName": f"Supplier{i}", "LastName": f"Last{i}"}, cls="Contacts")
        for i in range(SMALL_FOLDER)])

    def users(cur: Any) -> None:
        for n in range(args.users):
            store.users.add_user_txn(cur, f"u{n:04d}", None, f"user{n}@corp.example", True)

    await store.db.run_interaction("users", users, write=True)
    print(f"populated {args.contacts} contacts, {args.users} users in "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    # as the server does once started (easync.gctune): what set-up left is frozen out
    # of the collector's way, so a full collection does not walk it
    gc.collect()
    gc.freeze()
    server = EasServer(users=store, items=store, state=store,
                       notifier=LocalNotifier(reactor), clock=reactor)
    print(f"{'Find':48} {'results':>7} {'Total':>6} {'wall p50':>9} {'wall max':>9} "
          f"{'pause p50':>9} {'pause max':>9}")
    # the machine's own noise: the same LoopingCall while the reactor has nothing to do
    idle: list[float] = []
    for _ in range(args.repeat):
        with Pauses(reactor) as p:
            await deferLater(reactor, 0.03, lambda: None)
        idle.append(p.worst)
        await deferLater(reactor, 0.01, lambda: None)
    print(f"{'(no request: 30 ms idle)':48} {'':>7} {'':>6} {'':>9} {'':>9} "
          f"{statistics.median(idle) * 1000:8.1f}ms {max(idle) * 1000:8.1f}ms", flush=True)
    for label, body in finds(folder, small):
        is_find = body.tag == "Find:Find"
        handle = find.handle if is_find else resolverecipients.handle
        walls: list[float] = []
        pauses: list[float] = []
        results = total = ""
        for _ in range(args.repeat):
            req = EasRequest(cmd="Find" if is_find else "ResolveRecipients", user=user,
                             device_id="bench", device_type="iPhone", version="16.1",
                             body=body)
            w0 = time.monotonic()
            with Pauses(reactor) as p:
                resp = await handle(server, req)
                assert resp.body is not None
                encode(resp.body)
            walls.append(time.monotonic() - w0)
            pauses.append(p.worst)
            if not is_find:
                found = [r for resp_ in resp.body.findall("ResolveRecipients:Response")
                         for r in resp_.findall("ResolveRecipients:Recipient")]
                results = str(len(found))
                total = next((r.findtext("ResolveRecipients:RecipientCount") or "" for r
                              in resp.body.findall("ResolveRecipients:Response")), "")
            else:
                response = resp.body.find("Find:Response")
                assert response is not None, label
                results = str(len(response.findall("Find:Result")))
                total = response.findtext("Find:Total") or ""
            await deferLater(reactor, 0.01, lambda: None)
        print(f"{label:48} {results:>7} {total:>6} "
              f"{statistics.median(walls) * 1000:8.1f}ms {max(walls) * 1000:8.1f}ms "
              f"{statistics.median(pauses) * 1000:8.1f}ms {max(pauses) * 1000:8.1f}ms",
              flush=True)
    if args.backfill:
        await backfill(reactor, store, server, user, args)
    await store.close()


async def backfill(reactor: Any, store: Any, server: Any, user: Any,
                   args: argparse.Namespace) -> None:
    """Schema 14's re-index of every contact, as after an upgrade (the contact
    backfill reset to the first row), while a Find of one page runs back to back:
    how long the backfill takes, and what a Find waits and the reactor pauses
    meanwhile."""
    from twisted.internet.defer import Deferred
    from twisted.internet.task import deferLater

    from easync.commands import find
    from easync.handler import EasRequest

    body = finds("0", "0")[2][1]                      # contacts 'last1', 0-99
    await store.raw_query("UPDATE lookup_backfill SET next_id = 0,"
                          " last_id = (SELECT MAX(id) FROM items) WHERE what = 'contacts'")
    walls: list[float] = []
    pauses: list[float] = []
    t0 = time.monotonic()
    done = Deferred.fromCoroutine(store._backfill())
    while not done.called:
        req = EasRequest(cmd="Find", user=user, device_id="bench", device_type="iPhone",
                         version="16.1", body=body)
        w0 = time.monotonic()
        with Pauses(reactor) as p:
            await find.handle(server, req)
        walls.append(time.monotonic() - w0)
        pauses.append(p.worst)
        await deferLater(reactor, 0.01, lambda: None)
    await done
    took = time.monotonic() - t0
    walls.sort()
    pauses.sort()
    print(f"backfill of {args.contacts + SMALL_FOLDER} contacts: {took:.1f} s; meanwhile "
          f"{len(walls)} Finds 'last1' 0-99: wall p50 {statistics.median(walls) * 1000:.1f}"
          f" ms, p99 {walls[int(len(walls) * 0.99)] * 1000:.1f} ms, max "
          f"{walls[-1] * 1000:.1f} ms; reactor pause p50 "
          f"{statistics.median(pauses) * 1000:.1f} ms, max {pauses[-1] * 1000:.1f} ms",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pg", default=None, help="PostgreSQL admin URL")
    parser.add_argument("--backfill", action="store_true",
                        help="then time schema 14's re-index of every contact")
    parser.add_argument("--span", type=int, default=None,
                        help="contact row ids per backfill batch (default: the store's)")
    args = parser.parse_args()
    print(f"{platform.python_version()} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    from twisted.internet import defer, task

    def go(reactor: Any, db: str) -> Any:
        return defer.ensureDeferred(run(reactor, db, args))

    if args.pg:
        os.environ["EASYNC_TEST_PG"] = args.pg
        import pgtest

        with pgtest.fresh_database("bench_find") as url:
            print(f"PostgreSQL ({url.rsplit('/', 1)[-1]})")
            task.react(go, (url,))
    else:
        with tempfile.TemporaryDirectory() as d:
            print("SQLite")
            task.react(go, (f"sqlite:///{d}/bench.sqlite",))


if __name__ == "__main__":
    main()
