"""The SQL store's shared folders (issue #14 point 1), on SQLite and on PostgreSQL.

A folder shared with a colleague is listed for them with the Type a user-created
folder of its class has (MS-ASCMD 2.2.3.186.3: 13 calendar, 14 contacts), a name that
says whose it is, and the owner's ServerId; its change feed is the owner's; a
read-only share refuses every write with ``error="readonly"`` and stores nothing; a
read-write share writes the owner's rows under the owner's modseq counter.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
import pytest_twisted
from pgtest import fresh_database, unreachable

from backends.sql.shares import COMPANY, EVERYONE
from backends.sql.store import SqlStore
from easync.model import Op, StateWrite, User


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="module")
def pg_url() -> Iterator[tuple[str | None, str]]:
    reason = unreachable()
    if reason:
        yield None, reason
        return
    with fresh_database("shares") as url:
        yield url, ""


def _reset_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: Any, tmp_path: Path, pg_url: tuple[str | None, str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url, reason = pg_url
    needs.require(reason if url is None else None)
    assert url is not None
    _reset_pg(url)
    return url


@pytest_twisted.async_yield_fixture()
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(_reactor(), db_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _people(store: SqlStore) -> tuple[User, User, User]:
    anna = await store.add_user("anna", "h", "anna@example.com", True)
    bob = await store.add_user("bob", "h", "bob@example.com", True)
    carl = await store.add_user("carl", "h", "carl@example.com", True)
    return anna, bob, carl


async def _folder(store: SqlStore, user: User, name: str) -> str:
    return next(f.server_id for f in await store.list_folders(user) if f.name == name)


EVENT = {"Subject": "Board meeting", "StartTime": "20300101T100000Z",
         "EndTime": "20300101T110000Z"}


@pytest_twisted.ensureDeferred
async def test_shared_calendar_is_listed_for_the_colleague_only(store: SqlStore) -> None:
    anna, bob, carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    assert await store.share_folder(cal, bob.id, False) is True
    assert await store.share_folder(cal, bob.id, False) is False     # nothing new
    bobs = {f.server_id: f for f in await store.list_folders(bob)}
    shared = bobs[cal]
    # MS-ASCMD 2.2.3.186.3: a user-created calendar is Type 13; top level
    assert (shared.type, shared.parent_id) == (13, "0")
    assert shared.name == "Calendar \u2014 anna"
    assert shared.read_only is True and shared.owner == "anna"
    # the ServerId collides with none of bob's own folders
    assert sum(1 for f in await store.list_folders(bob) if f.server_id == cal) == 1
    # carl has no share; anna sees her own folder marked as shared out
    assert cal not in {f.server_id for f in await store.list_folders(carl)}
    annas = {f.server_id: f for f in await store.list_folders(anna)}
    assert annas[cal].shared_out and annas[cal].owner is None and not annas[cal].read_only
    assert sorted(await store.folder_audience(cal)) == sorted([anna.id, bob.id])


@pytest_twisted.ensureDeferred
async def test_feed_and_items_of_a_shared_folder_are_the_owners(store: SqlStore) -> None:
    anna, bob, _carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    [sid] = [r.server_id for r in await store.apply(anna, cal, [Op("add", data=EVENT)])]
    assert sid is not None
    # before the share bob reaches nothing of it
    assert (await store.changes_since(bob, cal, 0, 10)).changes == []
    assert await store.get_items(bob, [sid]) == []
    await store.share_folder(cal, bob.id, False)
    batch = await store.changes_since(bob, cal, 0, 10)
    assert [(c.server_id, c.item.data["Subject"]) for c in batch.changes
            if c.item is not None] == [(sid, "Board meeting")]
    assert [i.data["Subject"] for i in await store.get_items(bob, [sid])] == ["Board meeting"]
    assert await store.count_changes_since(bob, cal, 0) == 1


@pytest_twisted.ensureDeferred
async def test_read_only_share_refuses_every_write(store: SqlStore) -> None:
    anna, bob, _carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    [sid] = [r.server_id for r in await store.apply(anna, cal, [Op("add", data=EVENT)])]
    await store.share_folder(cal, bob.id, False)
    before = await store.raw_query("SELECT id, modseq, data, deleted FROM items ORDER BY id")
    counters = await store.raw_query("SELECT id, modseq FROM users ORDER BY id")
    results = await store.apply(bob, cal, [
        Op("add", data=dict(EVENT, Subject="mine"), ref="c1"),
        Op("change", server_id=sid, data=dict(EVENT, Subject="changed"), ref=sid),
        Op("delete", server_id=sid, ref=sid)],
        StateWrite("dev1", f"sync:{cal}", {"cursor": 1}))
    assert [(r.ok, r.error) for r in results] == [(False, "readonly")] * 3
    assert await store.raw_query(
        "SELECT id, modseq, data, deleted FROM items ORDER BY id") == before
    assert await store.raw_query("SELECT id, modseq FROM users ORDER BY id") == counters
    # the device's state is saved (its key moves on): only the items are refused
    assert await store.get_state(bob, "dev1", f"sync:{cal}") == {"cursor": 1}


@pytest_twisted.ensureDeferred
async def test_read_write_share_writes_the_owners_data(store: SqlStore) -> None:
    anna, bob, _carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    [sid] = [r.server_id for r in await store.apply(anna, cal, [Op("add", data=EVENT)])]
    await store.share_folder(cal, bob.id, True)
    assert next(f for f in await store.list_folders(bob) if f.server_id == cal).read_only \
        is False
    [r] = await store.apply(bob, cal, [Op("change", server_id=sid,
                                          data=dict(EVENT, Subject="Moved"), ref=sid)])
    assert r.ok
    # one item, the owner's: anna reads bob's change, under anna's counter
    [item] = await store.get_items(anna, [sid])
    assert item.data["Subject"] == "Moved"
    anna_modseq, bob_modseq = (int(v) for (v,) in await store.raw_query(
        "SELECT modseq FROM users WHERE id IN (?, ?) ORDER BY id", (anna.id, bob.id)))
    assert r.modseq == anna_modseq and bob_modseq == 0
    folder = next(f for f in await store.list_folders(anna) if f.server_id == cal)
    assert folder.modseq == r.modseq
    rows = await store.raw_query("SELECT user_id FROM items")
    assert rows == [(anna.id,)]


@pytest_twisted.ensureDeferred
async def test_unshare_removes_the_folder_and_access(store: SqlStore) -> None:
    anna, bob, _carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    [sid] = [r.server_id for r in await store.apply(anna, cal, [Op("add", data=EVENT)])]
    await store.share_folder(cal, bob.id, True)
    assert await store.unshare_folder(cal, bob.id) is True
    assert await store.unshare_folder(cal, bob.id) is False
    assert cal not in {f.server_id for f in await store.list_folders(bob)}
    assert await store.get_items(bob, [sid]) == []
    with pytest.raises(KeyError):
        await store.apply(bob, cal, [Op("delete", server_id=sid, ref=sid)])
    assert [i.server_id for i in await store.get_items(anna, [sid])] == [sid]


@pytest_twisted.ensureDeferred
async def test_company_book_shared_with_everyone(store: SqlStore) -> None:
    anna, bob, _carl = await _people(store)
    company = await store.company_user()
    assert company.name == COMPANY and not company.activesync
    assert (await store.company_user()).id == company.id          # made once
    book = await store.create_folder_of(company, "Company address book", 14)
    await store.share_folder(book.server_id, EVERYONE, False)
    await store.apply(company, book.server_id, [Op("add", data={"FirstName": "Reception"})])
    dave = await store.add_user("dave", "h", None, True)          # joins later
    for u in (anna, bob, dave):
        f = next(f for f in await store.list_folders(u) if f.server_id == book.server_id)
        assert (f.name, f.type, f.read_only, f.owner) == (
            "Company address book", 14, True, COMPANY)
        assert len((await store.changes_since(u, book.server_id, 0, 10)).changes) == 1
    assert {anna.id, bob.id, dave.id, company.id} <= set(
        await store.folder_audience(book.server_id))
    shares = await store.list_shares(bob)
    assert [(s["folder"], s["grantee"], s["write"]) for s in shares] == [
        ("Company address book", None, False)]


@pytest_twisted.ensureDeferred
async def test_shared_folder_cannot_be_renamed_or_deleted_by_the_colleague(
        store: SqlStore) -> None:
    anna, bob, _carl = await _people(store)
    cal = await store.create_folder(anna, "0", "Team", 13)
    await store.share_folder(cal.server_id, bob.id, True)
    with pytest.raises(ValueError, match="special"):
        await store.delete_folder(bob, cal.server_id)
    with pytest.raises(ValueError, match="special"):
        await store.update_folder(bob, cal.server_id, "0", "Mine now")
    assert cal.server_id in {f.server_id for f in await store.list_folders(anna)}


@pytest_twisted.ensureDeferred
async def test_share_refuses_owner_and_mail_folders(store: SqlStore) -> None:
    anna, _bob, _carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    inbox = await _folder(store, anna, "Inbox")
    with pytest.raises(ValueError, match="self"):
        await store.share_folder(cal, anna.id, False)
    bob = await store.get_user("bob")
    assert bob is not None
    with pytest.raises(ValueError, match="class"):
        await store.share_folder(inbox, bob.id, False)
    with pytest.raises(KeyError):
        await store.share_folder("99999", bob.id, False)


@pytest_twisted.ensureDeferred
async def test_sqlite_poller_wakes_the_holders_of_a_shared_folder(tmp_path: Path) -> None:
    """``easync-admin import`` (another process) fills the company book, whose owner has
    no waiter: the colleague's Ping on it is woken all the same (backends/sql/poller)."""
    from hubtest import Heard

    from backends.sql.poller import SqlitePoller
    from easync.notify import LocalNotifier

    url = f"sqlite:///{tmp_path / 'easync.sqlite'}"
    server, cli = SqlStore(_reactor(), url), SqlStore(_reactor(), url)
    await server.open()
    await cli.open()
    try:
        bob = await server.add_user("bob", "h", None, True)
        company = await server.company_user()
        book = await server.create_folder_of(company, "Company address book", 14)
        await server.share_folder(book.server_id, EVERYONE, False)
        hub = LocalNotifier(_reactor())
        poller = SqlitePoller(_reactor(), server, hub)
        await poller.poll_once()
        heard = Heard(hub, bob.id, [book.server_id])
        await poller.poll_once()
        await cli.apply(company, book.server_id, [Op("add", data={"FirstName": "Desk"})])
        await poller.poll_once()
        assert heard.folders == [book.server_id]
    finally:
        await cli.close()
        await server.close()


@pytest_twisted.ensureDeferred
async def test_purge_keeps_the_tombstones_a_colleagues_device_needs(store: SqlStore) -> None:
    """The tombstone purge (--tombstone-max-age aside) keeps what any device holding
    the folder still needs: the colleague's states count, not only the owner's."""
    anna, bob, _carl = await _people(store)
    cal = await _folder(store, anna, "Calendar")
    sids = [r.server_id for r in await store.apply(anna, cal, [
        Op("add", data=dict(EVENT, Subject=f"e{n}")) for n in range(3)])]
    await store.share_folder(cal, bob.id, False)
    top = max(c.modseq for c in (await store.changes_since(bob, cal, 0, 10)).changes)
    # bob's phone holds everything up to now; anna's phone is fully synced later
    await store.save_state(bob, StateWrite("BobPhone", f"sync:{cal}",
                                           {"cursor": top, "own": {}}))
    await store.apply(anna, cal, [Op("delete", server_id=sids[0], ref=sids[0])])
    now = max(c.modseq for c in (await store.changes_since(anna, cal, 0, 10)).changes)
    await store.save_state(anna, StateWrite("AnnaPhone", f"sync:{cal}",
                                            {"cursor": now, "own": {}}))
    step = await store.purge_synced(0, 100)
    assert step.done == 0
    batch = await store.changes_since(bob, cal, top, 10)
    assert [(c.server_id, c.deleted) for c in batch.changes] == [(sids[0], True)]
    # once bob's phone has it too, it goes
    await store.save_state(bob, StateWrite("BobPhone", f"sync:{cal}",
                                           {"cursor": now, "own": {}}))
    assert (await store.purge_synced(0, 100)).done == 1


@pytest_twisted.ensureDeferred
async def test_import_and_export_leave_others_folders_alone(store: SqlStore,
                                                            tmp_path: Path) -> None:
    """``easync-admin import`` refuses a folder shared read-only with the user (its
    owner imports into it); ``export`` of a user writes their own folders only."""
    from easync.export import export_user
    from easync.importer import ImportFailed, import_file

    anna, bob, _carl = await _people(store)
    contacts = await _folder(store, anna, "Contacts")
    await store.share_folder(contacts, bob.id, False)
    vcf = tmp_path / "one.vcf"
    vcf.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nN:;Desk;;;\r\nFN:Desk\r\nEND:VCARD\r\n",
                   "utf-8")
    with pytest.raises(ImportFailed, match="read-only"):
        await import_file(store, bob, str(vcf), folder_id=contacts)
    assert (await store.changes_since(anna, contacts, 0, 10)).changes == []
    report = await import_file(store, anna, str(vcf), folder_id=contacts)
    assert report.contacts.added == 1
    out = tmp_path / "bob"
    out.mkdir()
    import io
    done = await export_user(store, bob, str(out), io.StringIO())
    assert sorted(p.name for p in out.iterdir()) == ["calendar.ics", "contacts.vcf",
                                                     "tasks.ics"]
    assert all(d.count == 0 for d in done)
