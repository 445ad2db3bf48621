"""The CRM's company address book at the store level (issue #14 point 1, CRM side):
with ``--crm-shared-contacts all`` every user gets a read-only contacts folder (type 14,
a user-created contacts folder, MS-ASCMD 2.2.3.186.3) holding the CRM contacts they
are not assigned, mirrored ONCE whoever reads them, kept current by the one poller;
a re-assign moves a record between a user's own Contacts and the book; a device's
write to it is refused with ``readonly`` and nothing reaches the CRM (EAS has no
read-only folder: the engine answers the per-item Status and resends the server's
version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from crmtest import make_env
from fakecrm import FakeCrm
from test_crm_store import feed

from backends.crm import shared
from easync.model import Op, StateWrite

DBS = ["sqlite", "postgres"]


async def book_of(env: Any, name: str) -> Any:
    (book,) = [f for f in await env.store.list_folders(env.users[name]) if f.type == 14]
    return book


def names(items: dict[str, Any]) -> set[str]:
    return {d["LastName"] for d in items.values() if d is not None}


async def make_db_env(tmp_path: Path, db: str, **kw: Any) -> Any:
    """``crmtest.make_env`` on SQLite, or on a fresh PostgreSQL database (``db`` =
    "postgres"): the mirror's tables and the book's feed queries on both."""
    if db == "sqlite":
        return await make_env(tmp_path, **kw)
    import needs
    import pgtest

    needs.require(pgtest.unreachable())
    ctx = pgtest.fresh_database("crmshared")
    url = ctx.__enter__()
    from backends.sql.store import SqlStore

    real = SqlStore.__init__

    def on_pg(self: Any, reactor: Any, _url: str, **k: Any) -> None:
        real(self, reactor, url, **k)

    SqlStore.__init__ = on_pg  # type: ignore[method-assign]
    try:
        env = await make_env(tmp_path, **kw)
    finally:
        SqlStore.__init__ = real  # type: ignore[method-assign]
    closing = env.close

    async def close() -> None:
        await closing()
        ctx.__exit__(None, None, None)

    env.close = close
    return env


async def shared_env(tmp_path: Path, flavour: str = "vtiger", db: str = "sqlite",
                     **kw: Any) -> Any:
    crm = FakeCrm(flavour)
    for name in ("dana", "eve"):
        crm.add_user(name)
    crm.add_user("bob")                      # a CRM user without an easync account
    crm.add_record("Contacts", {"firstname": "D", "lastname": "DanaOwn"}, owner="dana")
    crm.add_record("Contacts", {"firstname": "E", "lastname": "EveOwn"}, owner="eve")
    crm.add_record("Contacts", {"firstname": "B", "lastname": "BobOwn"}, owner="bob")
    env = await make_db_env(tmp_path, db, crm=crm, users=("dana", "eve"),
                            shared_contacts="all", shared_name="Rubrica aziendale", **kw)
    return crm, env


@pytest_twisted.ensureDeferred
async def test_folder_lists_what_the_user_may_read_but_is_not_assigned(tmp_path: Path
                                                                         ) -> None:
    _crm, env = await shared_env(tmp_path)
    try:
        book = await book_of(env, "dana")
        assert (book.name, book.type, book.read_only, book.parent_id) == \
            ("Rubrica aziendale", 14, True, "0")
        assert book.server_id == (await book_of(env, "eve")).server_id
        own = await env.folders("dana")
        assert names(await feed(env, "dana", own["Contacts"])) == {"DanaOwn"}
        assert names(await feed(env, "dana", book.server_id)) == {"EveOwn", "BobOwn"}
        assert names(await feed(env, "eve", book.server_id)) == {"DanaOwn", "BobOwn"}
        # an item of the book is readable by its server id (Fetch), not another user's
        # own record through the book
        sids = list(await feed(env, "dana", book.server_id))
        got = await env.store.get_items(env.users["dana"], sids)
        assert names({i.server_id: i.data for i in got}) == {"EveOwn", "BobOwn"}
        eve_sids = list(await feed(env, "eve", book.server_id))
        dana_in_book = [s for s in eve_sids if s not in sids]
        assert await env.store.get_items(env.users["dana"], dana_in_book) == []
        assert await env.store.count_changes_since(env.users["dana"], book.server_id,
                                                   0) == 2
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_records_are_stored_once_whoever_reads_them(tmp_path: Path) -> None:
    """200 users, 300 contacts: the book is 300 item rows, not 200 x 300."""
    crm = FakeCrm("vtiger")
    users = tuple(f"u{i:03d}" for i in range(200))
    for name in users:
        crm.add_user(name)
    for k in range(300):
        crm.add_record("Contacts", {"lastname": f"C{k}"}, owner=users[k % 3])
    env = await make_env(tmp_path, crm=crm, users=users, shared_contacts="all")
    try:
        for name in users:
            await book_of(env, name)
        holder = await env.sql.get_user(shared.HOLDER)
        rows = await env.sql.raw_query("SELECT count(*) FROM items WHERE user_id = ?",
                                       (holder.id,))
        assert rows[0][0] == 300
        assert (await env.sql.raw_query("SELECT count(*) FROM crm_shared"))[0][0] == 300
        # each user's own contacts are in their own folder, once
        assert (await env.sql.raw_query("SELECT count(*) FROM crm_items"))[0][0] == 300
        assert len(await feed(env, "u000", (await book_of(env, "u000")).server_id)) == 200
        assert len(await feed(env, "u150", (await book_of(env, "u150")).server_id)) == 300
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_poll_brings_changes_and_wakes_every_reader(tmp_path: Path) -> None:
    crm, env = await shared_env(tmp_path)
    try:
        book = (await book_of(env, "dana")).server_id
        await book_of(env, "eve")
        await env.store.poll_once()
        marks = {n: (await feed(env, n, book)) for n in ("dana", "eve")}
        (bob,) = [r["id"] for r in crm.live("Contacts", "bob")]
        env.hub.published.clear()
        crm.modify_record(bob, {"lastname": "BobRenamed"})
        new = crm.add_record("Contacts", {"lastname": "BobNew"}, owner="bob")
        await env.store.poll_once()
        assert {(u, f) for u, f in env.hub.published if f == book} == {
            (env.users["dana"].id, book), (env.users["eve"].id, book)}
        got = await feed(env, "dana", book)
        assert names(got) == {"EveOwn", "BobRenamed", "BobNew"}
        assert set(marks["dana"]) <= set(got)            # changed in place: same ids
        # a deletion in the CRM leaves the book
        crm.delete_record(new)
        await env.store.poll_once()
        assert names(await feed(env, "eve", book)) == {"DanaOwn", "BobRenamed"}
    finally:
        await env.close()


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_reassign_moves_between_own_contacts_and_the_book(tmp_path: Path, db: str
                                                                ) -> None:
    crm, env = await shared_env(tmp_path, db=db)
    try:
        book = (await book_of(env, "dana")).server_id
        own = (await env.folders("dana"))["Contacts"]
        await env.store.poll_once()
        cur_book = (await env.store.changes_since(env.users["dana"], book, 0, 100)).high
        cur_own = (await env.store.changes_since(env.users["dana"], own, 0, 100)).high
        (bob,) = [r["id"] for r in crm.live("Contacts", "bob")]
        crm.modify_record(bob, {"assigned_user_id": "dana"})
        await env.store.poll_once()
        b = await env.store.changes_since(env.users["dana"], book, cur_book, 100)
        o = await env.store.changes_since(env.users["dana"], own, cur_own, 100)
        # out of the book (a Delete of what the device holds), into her Contacts (Add)
        assert [(c.deleted, c.created_modseq <= cur_book) for c in b.changes] == [
            (True, True)]
        assert [(c.deleted, c.item.data["LastName"]) for c in o.changes] == [
            (False, "BobOwn")]
        assert names(await feed(env, "dana", book)) == {"EveOwn"}
        # eve: the record is still in her book (a new server id)
        assert names(await feed(env, "eve", book)) == {"DanaOwn", "BobOwn"}
        # and back: assigned to eve, it leaves dana's Contacts and is in her book again
        crm.modify_record(bob, {"assigned_user_id": "eve"})
        await env.store.poll_once()
        assert names(await feed(env, "dana", own)) == {"DanaOwn"}
        assert names(await feed(env, "dana", book)) == {"EveOwn", "BobOwn"}
        assert names(await feed(env, "eve", book)) == {"DanaOwn"}
    finally:
        await env.close()


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_writes_to_the_book_are_refused_and_nothing_reaches_the_crm(
        tmp_path: Path, db: str) -> None:
    crm, env = await shared_env(tmp_path, db=db)
    try:
        dana = env.users["dana"]
        book = (await book_of(env, "dana")).server_id
        (sid,) = [s for s, d in (await feed(env, "dana", book)).items()
                  if d["LastName"] == "BobOwn"]
        before = {op: n for op, n in crm.calls.items()}
        records = {r["id"]: dict(r) for r in crm.live("Contacts")}
        ops = [Op("add", data={"LastName": "New"}, ref="c1", cls="Contacts"),
               Op("change", server_id=sid, data={"LastName": "Hacked"}, ref="x"),
               Op("delete", server_id=sid, ref="y")]
        res = await env.store.apply(dana, book, ops,
                                    StateWrite("dev1", f"sync:{book}", {"cursor": 7}))
        assert [(r.ok, r.error) for r in res] == [(False, "readonly")] * 3
        for op in ("create", "revise", "update", "delete"):
            assert crm.calls.get(op, 0) == before.get(op, 0)
        assert {r["id"]: dict(r) for r in crm.live("Contacts")} == records
        assert names(await feed(env, "dana", book)) == {"EveOwn", "BobOwn"}
        # the sync state is saved, as with any request
        st = await env.sql.get_state(dana, "dev1", f"sync:{book}")
        assert st == {"cursor": 7}
        # not renamed nor deleted (FolderUpdate/FolderDelete: a special folder)
        for call in (env.store.update_folder(dana, book, "0", "x"),
                     env.store.delete_folder(dana, book)):
            try:
                await call
            except ValueError as e:
                assert str(e) == "special"
            else:
                raise AssertionError("accepted")
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_off_by_default(tmp_path: Path) -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("dana")
    env = await make_env(tmp_path, crm=crm, users=("dana",))
    try:
        assert [f.type for f in await env.store.list_folders(env.users["dana"])
                if f.cls == "Contacts"] == [9]
        assert await env.sql.get_user(shared.HOLDER) is None
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_idle_poll_costs_one_more_count(tmp_path: Path) -> None:
    """With the book on, an idle poll is the six requests of the per-user poll
    (tests/test_crm_poll.py) plus ONE count of every contact, whatever the number of
    users and contacts: no per-user scan of the book."""
    crm = FakeCrm("vtiger")
    users = tuple(f"u{i:02d}" for i in range(20))
    old = "2026-01-01 00:00:00"             # settled long ago
    for name in users:
        crm.add_user(name)
    for k in range(250):
        crm.add_record("Contacts", {"lastname": f"C{k}"}, owner=users[k % 20],
                       modifiedtime=old)
    env = await make_env(tmp_path, crm=crm, users=users, shared_contacts="all", settle=0.0)
    try:
        for name in users:
            await book_of(env, name)
        await env.store.poll_once()
        before, scans, logged = sum(crm.calls.values()), env.store.scans, len(crm.log)
        for _ in range(3):
            await env.store.poll_once()
        assert (sum(crm.calls.values()) - before) / 3 == 7
        assert env.store.scans == scans
        queries = [p["query"] for op, p in crm.log[logged:] if op == "query"]
        assert queries.count("SELECT count(*) FROM Contacts;") == 3
    finally:
        await env.close()


def test_options() -> None:
    from easync.tap import Options

    o = Options()
    o.parseOptions([])
    assert (o["crm-shared-contacts"], o["crm-shared-name"]) == ("none",
                                                                "Company address book")
    o = Options()
    o.parseOptions(["--crm-shared-contacts", "all", "--crm-shared-name", "Rubrica"])
    assert (o["crm-shared-contacts"], o["crm-shared-name"]) == ("all", "Rubrica")
    from twisted.python import usage

    with pytest.raises(usage.UsageError, match="none, all"):
        Options().parseOptions(["--crm-shared-contacts", "groups"])


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_retention_keeps_the_tombstones_readers_need(tmp_path: Path, db: str) -> None:
    """The SQL store's retention keeps a folder's tombstones above the lowest cursor of
    the folder owner's sync states; the book's readers keep theirs under their own
    user: a guard state carries their lowest cursor, so a deletion a reader's phone has
    not synced stays until it has (else: the folder's purged mark passes the phone's
    cursor and its next Sync is a Status 3 full resync, MS-ASCMD 2.2.3.177.17)."""
    crm, env = await shared_env(tmp_path, db=db)
    try:
        dana = env.users["dana"]
        book = (await book_of(env, "dana")).server_id
        high = (await env.store.changes_since(dana, book, 0, 100)).high
        await env.sql.save_state(dana, StateWrite("ph", f"sync:{book}", {"cursor": high}))
        (bob,) = [r["id"] for r in crm.live("Contacts", "bob")]
        crm.delete_record(bob)
        await env.store.poll_once()
        ch = (await env.store.changes_since(dana, book, high, 100)).changes
        assert [c.deleted for c in ch] == [True]
        await env.sql.retention.purge_synced(0, 1000)
        assert [c.deleted for c in (await env.store.changes_since(dana, book, high,
                                                                   100)).changes] == [True]
        # once her phone is past it, it may go
        await env.sql.save_state(dana, StateWrite("ph", f"sync:{book}",
                                                  {"cursor": ch[0].modseq}))
        await env.store.poll_once()
        await env.sql.retention.purge_synced(0, 1000)
        assert (await env.store.changes_since(dana, book, high, 100)).changes == []
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_deletion_scans_one_id_page_of_the_book(tmp_path: Path) -> None:
    """A contact of a CRM user without an easync account is deleted: no user's count
    sees it, the book's count does; the id range is halved (a count per half) down to
    ranges of at most one page of ids (the last halving reads both halves' pages), not
    every contact's id: 1000 contacts, about log2(1000 / 100) pairs of counts."""
    crm = FakeCrm("vtiger")
    for name in ("dana", "bob"):
        crm.add_user(name)
    made = [crm.add_record("Contacts", {"lastname": f"C{k}"}, owner="bob")
            for k in range(1000)]
    env = await make_env(tmp_path, crm=crm, users=("dana",), shared_contacts="all")
    try:
        book = (await book_of(env, "dana")).server_id
        await env.store.poll_once()
        crm.delete_record(made[617])
        logged = len(crm.log)
        await env.store.poll_once()
        queries = [p["query"] for op, p in crm.log[logged:] if op == "query"]
        id_pages = [q for q in queries if q.startswith("SELECT id FROM Contacts")]
        counts = [q for q in queries if q.startswith("SELECT count(*) FROM Contacts WHERE id")]
        assert len(id_pages) <= 2 and len(counts) <= 2 * 4, queries
        left = names(await feed(env, "dana", book))
        assert len(left) == 999 and "C617" not in left
        # the next poll agrees: nothing more
        logged = len(crm.log)
        await env.store.poll_once()
        assert not [p for op, p in crm.log[logged:] if op == "query"
                    and p["query"].startswith("SELECT id FROM")]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_turned_off_and_on_again_the_book_is_reloaded(tmp_path: Path) -> None:
    """Off (``--crm-shared-contacts none``): no book in the hierarchy (FolderSync
    deletes it on the phones); on again: its records are read afresh, what changed in
    the CRM meanwhile is there."""
    from crmtest import reactor

    from backends.crm.store import CrmStore

    crm, env = await shared_env(tmp_path)
    try:
        dana = env.users["dana"]
        book = (await book_of(env, "dana")).server_id
        (bob,) = [r["id"] for r in crm.live("Contacts", "bob")]

        async def restarted(mode: str) -> CrmStore:
            s = CrmStore(reactor(), env.sql, env.client, shared_contacts=mode)
            await s.open()
            return s

        off = await restarted("none")
        assert [f.type for f in await off.list_folders(dana) if f.cls == "Contacts"] == [9]
        crm.modify_record(bob, {"lastname": "BobWhileOff"})
        on = await restarted("all")
        assert (await book_of(type("E", (), {"store": on, "users": env.users}), "dana")
                ).server_id == book
        got = {i.data["LastName"] for c in (await on.changes_since(dana, book, 0, 100)).changes
               if (i := c.item) is not None}
        assert got == {"EveOwn", "BobWhileOff"}
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_after_a_restart_before_any_folder_sync(tmp_path: Path) -> None:
    """easync restarted: a phone's Sync of the book may come before any FolderSync, and
    the poller may run first; neither loses the book."""
    from crmtest import reactor

    from backends.crm.store import CrmStore

    crm, env = await shared_env(tmp_path)
    try:
        dana = env.users["dana"]
        book = (await book_of(env, "dana")).server_id
        (bob,) = [r["id"] for r in crm.live("Contacts", "bob")]
        again = CrmStore(reactor(), env.sql, env.client, shared_contacts="all")
        await again.open()
        crm.modify_record(bob, {"lastname": "BobAfterRestart"})
        await again.poll_once()             # the first thing the restarted process does
        got = {c.item.data["LastName"] for c in (await again.changes_since(
            dana, book, 0, 100)).changes if c.item is not None}
        assert got == {"EveOwn", "BobAfterRestart"}
        again2 = CrmStore(reactor(), env.sql, env.client, shared_contacts="all")
        await again2.open()
        assert await again2.count_changes_since(dana, book, 0) == 2
        sids = [c.server_id for c in (await again2.changes_since(dana, book, 0, 100)).changes]
        again3 = CrmStore(reactor(), env.sql, env.client, shared_contacts="all")
        await again3.open()
        assert len(await again3.get_items(dana, sids)) == 2
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_phone_deleting_its_own_contact_empties_the_books_at_once(tmp_path: Path
                                                                         ) -> None:
    """dana's phone deletes her contact (in the CRM): it leaves eve's book in the same
    request, and the next poll finds the counts equal (no id scan)."""
    crm, env = await shared_env(tmp_path)
    try:
        dana = env.users["dana"]
        book = (await book_of(env, "dana")).server_id
        await book_of(env, "eve")
        own = (await env.folders("dana"))["Contacts"]
        await env.store.poll_once()
        (sid,) = list(await feed(env, "dana", own))
        env.hub.published.clear()
        (res,) = await env.store.apply(dana, own, [Op("delete", server_id=sid)])
        assert res.ok and crm.live("Contacts", "dana") == []
        assert names(await feed(env, "eve", book)) == {"BobOwn"}
        assert (env.users["eve"].id, book) in env.hub.published
        scans = env.store.scans
        await env.store.poll_once()
        assert env.store.scans == scans
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_users_view_walks_the_feed_index(tmp_path: Path) -> None:
    """A Sync of the book costs O(changes): its query walks index items_feed from the
    cursor and finds each row's owner by primary key (no scan, no sort)."""
    _crm, env = await shared_env(tmp_path)
    try:
        book = (await book_of(env, "dana")).server_id
        plan = [str(r[-1]) for r in await env.sql.raw_query(
            "EXPLAIN QUERY PLAN " + shared._FEED, (int(book), 0, 10))]
        assert any("items_feed" in p for p in plan), plan
        assert not any(p.startswith("SCAN") or "TEMP B-TREE" in p for p in plan), plan
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_more_only_when_the_user_has_more(tmp_path: Path) -> None:
    """``more`` (MoreAvailable, a Ping's "changes?") is set only when a change the user
    sees follows: rows of their own records after the last change do not count."""
    crm, env = await shared_env(tmp_path)
    try:
        dana = env.users["dana"]
        book = (await book_of(env, "dana")).server_id
        high = (await env.store.changes_since(dana, book, 0, 100)).high
        (own,) = [r["id"] for r in crm.live("Contacts", "dana")]
        crm.modify_record(own, {"lastname": "DanaRenamed"})   # in the book: not hers
        await env.store.poll_once()
        b = await env.store.changes_since(dana, book, high, 0)
        assert (b.changes, b.more) == ([], False)
        b = await env.store.changes_since(env.users["eve"], book, high, 0)
        assert (b.changes, b.more) == ([], True)
        assert await env.store.count_changes_since(dana, book, high) == 0
    finally:
        await env.close()
