"""Kept deletes at the store level (issue #14 point 2, easync/deleted.py,
backends/sql/deleted.py): on SQLite and PostgreSQL, and the CRM store over the fake CRM.

A device's Sync Delete (MS-ASCMD 2.2.3.42.2) reaches the store as ``Op("delete",
keep=<device id>)``; the SQL store keeps the item's data in the transaction that
tombstones it, the CRM store before it asks the CRM to delete.
"""

from __future__ import annotations

import calendar
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
import pytest_twisted
from crmtest import crm_under_test
from pgtest import fresh_database, unreachable
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from backends.sql.store import SqlStore
from easync.deleted import DeletedItems, RestoreError, parse_since, summary
from easync.interfaces import IDeletedStore
from easync.model import Op, StateWrite, User


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str | None]:
    if unreachable():
        yield None
        return
    with fresh_database("deleted") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: Any, tmp_path: Path, pg_url: str | None) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    needs.require(unreachable() if pg_url is None else None)
    assert pg_url is not None
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    return pg_url


@pytest_twisted.async_yield_fixture()
async def store(db_url: str) -> AsyncIterator[SqlStore]:
    s = SqlStore(_reactor(), db_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def contacts_folder(store: Any, user: User) -> str:
    return next(f.server_id for f in await store.list_folders(user) if f.type == 9)


async def add_contacts(store: Any, user: User, folder: str, n: int) -> list[str]:
    results = await store.apply(user, folder, [
        Op("add", data={"FirstName": f"First{i}", "LastName": f"Last{i}",
                        "Email1Address": f"p{i}@example.com"}, ref=str(i))
        for i in range(n)])
    assert all(r.ok for r in results)
    return [str(r.server_id) for r in results]


class Published:
    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def __call__(self, user_id: int, folder_id: str, results: list[Any]) -> None:
        self.calls.append((user_id, folder_id))


@pytest_twisted.ensureDeferred
async def test_a_device_delete_is_kept_with_its_data(store: SqlStore) -> None:
    verifyObject(IDeletedStore, store)
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 3)
    done = await store.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A"),
                                            Op("delete", server_id=sids[1])])
    assert [r.ok for r in done] == [True, True]
    kept = await store.list_deleted(user)
    # only the delete a device made (keep=...) is kept, not a delete without it
    assert [(k.server_id, k.device_id, k.cls, k.folder_id) for k in kept] == [
        (sids[0], "PHONE-A", "Contacts", folder)]
    assert kept[0].data == {"FirstName": "First0", "LastName": "Last0",
                            "Email1Address": "p0@example.com"}
    assert kept[0].summary == "First0 Last0"
    assert kept[0].backend == "sql" and kept[0].restored_at is None
    assert await store.count_live(user, folder) == 1


@pytest_twisted.ensureDeferred
async def test_no_kept_row_without_the_delete(store: SqlStore) -> None:
    """The kept row and the tombstone are one transaction: when the write fails (here
    the sync state built inside it raises) neither is there."""
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 2)

    def boom(results: list[Any]) -> dict[str, Any]:
        raise RuntimeError("state write failed")

    with pytest.raises(RuntimeError):
        await store.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A")],
                          StateWrite("PHONE-A", f"sync:{folder}", {}, build=boom))
    assert await store.list_deleted(user) == []
    assert [i.server_id for i in await store.get_items(user, [sids[0]])] == [sids[0]]
    # a delete of an item that is not there keeps nothing
    gone = await store.apply(user, folder, [Op("delete", server_id=f"{folder}:999999",
                                               keep="PHONE-A")])
    assert gone[0].error == "notfound"
    assert await store.list_deleted(user) == []


@pytest_twisted.ensureDeferred
async def test_restore_creates_exactly_one_item_and_publishes(store: SqlStore) -> None:
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 2)
    await store.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A")])
    (k,) = await store.list_deleted(user)
    published = Published()
    svc = DeletedItems(store, store, _reactor(), publish=published)
    # two restores of the same row at once, then one more: one item
    results = await DeferredList([ensureDeferred(svc.restore_ids(user, [k.id]))
                                  for _ in range(2)])
    made = [r for ok, r in results if ok for r in r.restored]
    assert len(made) == 1
    again = await svc.restore_ids(user, [k.id])
    assert again.restored == [] and again.already == [k.id]
    live = [c for c in (await store.changes_since(user, folder, 0, 100)).changes
            if not c.deleted]
    names = sorted(c.item.data["FirstName"] for c in live if c.item)
    assert names == ["First0", "First1"]
    new_sid = made[0][1]
    assert new_sid != sids[0] and new_sid.startswith(f"{folder}:")
    assert published.calls == [(user.id, folder)]
    (row,) = await store.list_deleted(user, restored=True)
    assert row.restored_id == new_sid
    assert await store.list_deleted(user) == []      # restored rows are not listed


@pytest_twisted.ensureDeferred
async def test_restore_into_the_default_folder_when_the_folder_is_gone(
        store: SqlStore) -> None:
    user = await store.add_user("alice", "h", None, True)
    mine = await store.create_folder(user, "0", "Friends", 14)
    sids = await add_contacts(store, user, mine.server_id, 1)
    await store.apply(user, mine.server_id, [Op("delete", server_id=sids[0], keep="P")])
    await store.delete_folder(user, mine.server_id)
    (k,) = await store.list_deleted(user)
    done = await DeletedItems(store, store, _reactor()).restore_ids(user, [k.id])
    default = await contacts_folder(store, user)
    assert [sid.split(":")[0] for _, sid in done.restored] == [default]


@pytest_twisted.ensureDeferred
async def test_restore_since_and_by_device(store: SqlStore) -> None:
    clock = Clock()
    clock.advance(1_000_000)
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 4)
    await store.apply(user, folder, [Op("delete", server_id=sids[0], keep="A"),
                                     Op("delete", server_id=sids[1], keep="B"),
                                     Op("delete", server_id=sids[2], keep="A")])
    assert {k.server_id for k in await store.list_deleted(user, device_id="A")} == {
        sids[0], sids[2]}
    svc = DeletedItems(store, store, clock)
    done = await svc.restore_since(user, 0.0, device_id="A")
    assert sorted(k.server_id for k, _ in done.restored) == sorted([sids[0], sids[2]])
    assert [k.device_id for k in await store.list_deleted(user)] == ["B"]
    assert await store.list_deleted(user, since=4e9) == []


@pytest_twisted.ensureDeferred
async def test_bad_restores_change_nothing(store: SqlStore) -> None:
    alice = await store.add_user("alice", "h", None, True)
    bob = await store.add_user("bob", "h", None, True)
    folder = await contacts_folder(store, alice)
    sids = await add_contacts(store, alice, folder, 1)
    await store.apply(alice, folder, [Op("delete", server_id=sids[0], keep="A")])
    (k,) = await store.list_deleted(alice)
    svc = DeletedItems(store, store, _reactor())
    with pytest.raises(RestoreError) as e:
        await svc.restore_ids(bob, [k.id])            # alice's row, asked as bob
    assert e.value.code == "not_found"
    with pytest.raises(RestoreError):
        await svc.restore_ids(alice, [k.id, 424242])  # one unknown: nothing restored
    assert [r.id for r in await store.list_deleted(alice)] == [k.id]
    assert await store.count_live(alice, folder) == 0
    # a row another store kept is refused here
    crm_svc = DeletedItems(store, store, _reactor(), backend="crm")
    with pytest.raises(RestoreError) as e:
        await crm_svc.restore_ids(alice, [k.id])
    assert e.value.code == "wrong_backend"
    assert await store.count_live(alice, folder) == 0


@pytest_twisted.ensureDeferred
async def test_expiry_in_batches(store: SqlStore) -> None:
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 5)
    await store.apply(user, folder, [Op("delete", server_id=s, keep="A") for s in sids])
    await store.raw_query("UPDATE deleted_items SET deleted_at = ? WHERE server_id IN (?, ?, ?)",
                          (1000.0, sids[0], sids[1], sids[2]))
    step = await store.purge_deleted(2000.0, 2)
    assert (step.done, step.more) == (2, True)
    step = await store.purge_deleted(2000.0, 2)
    assert (step.done, step.more) == (1, False)
    assert sorted(k.server_id for k in await store.list_deleted(user)) == sorted(sids[3:])


def test_parse_since_and_summary() -> None:
    now = 1_800_000_000.0
    assert parse_since("2h", now) == now - 7200
    assert parse_since("3d", now) == now - 3 * 86400
    assert parse_since("2027-01-15", now) == calendar.timegm((2027, 1, 15, 0, 0, 0))
    assert parse_since("2027-01-15T10:30", now) == calendar.timegm((2027, 1, 15, 10, 30, 0))
    assert parse_since("2027-01-15T10:30+01:00", now) == calendar.timegm(
        (2027, 1, 15, 9, 30, 0))
    assert parse_since("2027-01-15T10:00:00Z", now) == parse_since(
        "2027-01-15T10:00:00+00:00", now)
    for bad in ("yesterday", "", "2h ago", "-3d"):
        with pytest.raises(ValueError):
            parse_since(bad, now)
    assert summary("Contacts", {"CompanyName": "ACME"}) == "ACME"
    assert summary("Calendar", {"Subject": "  Team\n meeting "}) == "Team meeting"
    assert summary("Tasks", {}) == ""


def _live_first_names(batch: Any) -> list[str]:
    return sorted(c.item.data["FirstName"] for c in batch.changes
                  if not c.deleted and c.item is not None)


@pytest_twisted.ensureDeferred
async def test_a_restore_stopped_after_the_item_was_made_makes_one_item_on_retry(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore whose process stops between re-creating the item and recording it
    (simulated: the step after the store's write fails) leaves the kept row marked
    restored all the same (the store marks it in the write's transaction), so a
    retry after the claim timeout makes no second item."""
    from backends.sql.deleted import CLAIM_TIMEOUT

    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 2)
    await store.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A")])
    (k,) = await store.list_deleted(user)
    clock = Clock()
    clock.advance(1_000_000)
    svc = DeletedItems(store, store, clock)

    def stopped(done: Any) -> Any:
        raise RuntimeError("the process stopped here")

    monkeypatch.setattr(store, "finish_restore", stopped)
    with pytest.raises(RuntimeError):
        await svc.restore_ids(user, [k.id])
    monkeypatch.undo()
    clock.advance(CLAIM_TIMEOUT + 1)
    again = await svc.restore_ids(user, [k.id])
    assert again.restored == [] and again.already == [k.id]
    batch = await store.changes_since(user, folder, 0, 100)
    assert _live_first_names(batch) == ["First0", "First1"]
    (row,) = await store.list_deleted(user, restored=True)
    made = [c.server_id for c in batch.changes if c.item is not None
            and c.item.data["FirstName"] == "First0"]
    assert made == [row.restored_id]


@pytest_twisted.ensureDeferred
async def test_a_restore_whose_mark_fails_makes_no_item(
        store: SqlStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The item and the "restored" mark are one transaction: when the mark fails the
    item is not there either, the row stays restorable, and the next restore makes
    exactly one."""
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 1)
    await store.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A")])
    (k,) = await store.list_deleted(user)
    svc = DeletedItems(store, store, _reactor())

    def broken(*args: Any) -> None:
        raise RuntimeError("mark failed")

    monkeypatch.setattr(store.deleted, "mark_restored_txn", broken)
    done = await svc.restore_ids(user, [k.id])
    assert done.restored == [] and [i for i, _ in done.failed] == [k.id]
    assert _live_first_names(await store.changes_since(user, folder, 0, 100)) == []
    monkeypatch.undo()
    done = await svc.restore_ids(user, [k.id])
    assert len(done.restored) == 1
    assert _live_first_names(await store.changes_since(user, folder, 0, 100)) == ["First0"]


@pytest_twisted.ensureDeferred
async def test_an_add_restoring_a_row_restored_already_makes_nothing(store: SqlStore) -> None:
    """Two restores of one row that both got past the claim (the first one's claim
    timed out while it was still running): the store, holding the kept row locked in
    the write's transaction, makes the item once; the other add is answered
    "restored" with the item the row became, and the batch's other adds go on."""
    user = await store.add_user("alice", "h", None, True)
    folder = await contacts_folder(store, user)
    sids = await add_contacts(store, user, folder, 2)
    await store.apply(user, folder, [Op("delete", server_id=s, keep="PHONE-A") for s in sids])
    k0, k1 = sorted(await store.list_deleted(user), key=lambda k: k.id)
    (first,) = await store.apply(user, folder, [Op("add", data=k0.data, restores=k0.id)])
    assert first.ok
    again, other = await store.apply(user, folder, [
        Op("add", data=k0.data, ref="a", restores=k0.id),
        Op("add", data=k1.data, ref="b", restores=k1.id)])
    assert (again.ok, again.error, again.server_id, again.ref) == (
        False, "restored", first.server_id, "a")
    assert other.ok and other.ref == "b"
    batch = await store.changes_since(user, folder, 0, 100)
    assert _live_first_names(batch) == ["First0", "First1"]
    rows = {k.id: k.restored_id for k in await store.list_deleted(user, restored=True)}
    assert rows == {k0.id: first.server_id, k1.id: other.server_id}


# -- the CRM store ---------------------------------------------------------------------

@pytest_twisted.async_yield_fixture()
async def crm(tmp_path: Path) -> AsyncIterator[Any]:
    s = SqlStore(_reactor(), f"sqlite:///{tmp_path / 'crm.sqlite'}")
    await s.open()
    c = await crm_under_test(s)
    try:
        yield c
    finally:
        await c.close()
        await s.close()


@pytest_twisted.ensureDeferred
async def test_crm_delete_from_a_phone_is_kept_and_restored_through_create(crm: Any) -> None:
    user = await crm.add_user("mario", "h", "mario@example.com", True)
    folder = await contacts_folder(crm, user)
    sids = await add_contacts(crm, user, folder, 2)
    state = StateWrite("PHONE-A", f"sync:{folder}", {"x": 1})
    done = await crm.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A",
                                             ref=sids[0])], state)
    assert done[0].ok
    (k,) = await crm.sql.list_deleted(user)
    assert (k.backend, k.device_id, k.server_id) == ("crm", "PHONE-A", sids[0])
    assert k.data["LastName"] == "Last0"
    creates = crm.fake.calls["create"]
    svc = DeletedItems(crm.sql, crm.crm, _reactor(), backend="crm")
    result = await svc.restore_ids(user, [k.id])
    assert len(result.restored) == 1
    assert crm.fake.calls["create"] == creates + 1
    names = sorted(r["lastname"] for r in crm.fake.live("Contacts", "mario"))
    assert names == ["Last0", "Last1"]
    # the SQL-only admin path refuses a CRM row
    with pytest.raises(RestoreError):
        await DeletedItems(crm.sql, crm.sql, _reactor()).restore_ids(user, [k.id])



@pytest_twisted.ensureDeferred
async def test_crm_restore_crashed_after_the_crm_made_the_record_makes_no_duplicate(
        crm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CRM accepted the re-created record, then the process failed before the
    mirror recorded it: the restore was written to the CRM store's journal before
    the create, so the retry finds that record (and marks the kept row with it)
    instead of asking the CRM for a second one."""
    from backends.crm import mirror

    user = await crm.add_user("mario", "h", "mario@example.com", True)
    folder = await contacts_folder(crm, user)
    sids = await add_contacts(crm, user, folder, 2)
    state = StateWrite("PHONE-A", f"sync:{folder}", {"x": 1})
    await crm.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A",
                                      ref=sids[0])], state)
    (k,) = await crm.sql.list_deleted(user)
    real = mirror.commit_device_write

    def crash(*args: Any, **kw: Any) -> Any:
        monkeypatch.setattr(mirror, "commit_device_write", real)
        raise RuntimeError("crashed before the mirror recorded the CRM's answer")

    monkeypatch.setattr(mirror, "commit_device_write", crash)
    svc = DeletedItems(crm.sql, crm.crm, _reactor(), backend="crm")
    first = await svc.restore_ids(user, [k.id])
    assert [i for i, _ in first.failed] == [k.id]
    assert sorted(r["lastname"] for r in crm.fake.live("Contacts", "mario")) == [
        "Last0", "Last1"]                       # the CRM made it
    creates = crm.fake.calls["create"]
    again = await svc.restore_ids(user, [k.id])
    assert crm.fake.calls["create"] == creates  # no second create
    assert sorted(r["lastname"] for r in crm.fake.live("Contacts", "mario")) == [
        "Last0", "Last1"]
    # the record the first attempt made is the restored item
    assert [kk.id for kk, _ in again.restored] == [k.id]
    batch = await crm.changes_since(user, folder, 0, 100)
    assert _live_first_names(batch) == ["First0", "First1"]
    (row,) = await crm.sql.list_deleted(user, restored=True)
    assert row.restored_id in {c.server_id for c in batch.changes if c.item is not None
                               and c.item.data["FirstName"] == "First0"}



@pytest_twisted.ensureDeferred
async def test_crm_restore_whose_record_the_poller_mirrored_first_is_marked_with_it(
        crm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The poller (of this or another process) sees the re-created record before the
    restore records it: the restore adopts that item (one item, one CRM record) and
    the kept row is marked restored as that item."""
    user = await crm.add_user("mario", "h", "mario@example.com", True)
    folder = await contacts_folder(crm, user)
    sids = await add_contacts(crm, user, folder, 2)
    state = StateWrite("PHONE-A", f"sync:{folder}", {"x": 1})
    await crm.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A",
                                      ref=sids[0])], state)
    (k,) = await crm.sql.list_deleted(user)
    real = crm.crm.client.create

    async def create_then_poll(*args: Any, **kw: Any) -> Any:
        rec = await real(*args, **kw)
        await crm.crm.poll_once()       # the poller mirrors it before the restore does
        return rec

    def stopped(done: Any) -> Any:
        raise RuntimeError("the process stopped here")

    monkeypatch.setattr(crm.crm.client, "create", create_then_poll)
    # the step after the store's write fails: the mark must be the store's own
    monkeypatch.setattr(crm.sql, "finish_restore", stopped)
    polls = crm.crm.polls
    with pytest.raises(RuntimeError):
        await DeletedItems(crm.sql, crm.crm, _reactor(), backend="crm").restore_ids(
            user, [k.id])
    assert crm.crm.polls > polls
    batch = await crm.changes_since(user, folder, 0, 100)
    assert _live_first_names(batch) == ["First0", "First1"]
    assert sorted(r["lastname"] for r in crm.fake.live("Contacts", "mario")) == [
        "Last0", "Last1"]
    (row,) = await crm.sql.list_deleted(user, restored=True)
    assert row.restored_id in {c.server_id for c in batch.changes if c.item is not None
                               and c.item.data["FirstName"] == "First0"}


@pytest_twisted.ensureDeferred
async def test_crm_refused_delete_keeps_nothing(crm: Any) -> None:
    user = await crm.add_user("mario", "h", "mario@example.com", True)
    folder = await contacts_folder(crm, user)
    sids = await add_contacts(crm, user, folder, 1)
    crm.fake.fail_next = [("ACCESS_DENIED_TO_DELETE",
                           "Permission to perform the operation is denied")]
    state = StateWrite("PHONE-A", f"sync:{folder}", {"x": 1})
    done = await crm.apply(user, folder, [Op("delete", server_id=sids[0], keep="PHONE-A",
                                             ref=sids[0])], state)
    assert not done[0].ok
    assert await crm.sql.list_deleted(user) == []


def test_the_mass_delete_alarm() -> None:
    """More than the share of the folder, and at least the minimum: logged, audited,
    counted; at or under the share, or under the minimum, nothing."""
    from twisted.logger import globalLogPublisher

    from easync.deleted import MassDeletes
    from easync.metrics import Metrics

    audits: list[tuple[Any, ...]] = []

    async def audit(*row: Any) -> None:
        audits.append(row)

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        alarm = MassDeletes(0.5, 10, audit=audit)
        metrics = Metrics()
        alarm.register(metrics)
        user = User(7, "rosa")
        for deleted, left in ((9, 0), (10, 10), (3, 17)):
            d = ensureDeferred(alarm.check(user, "A", "5", deleted, left))
            assert d.result is False
        d = ensureDeferred(alarm.check(user, "A", "5", 15, 2))
        assert d.result is True
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert alarm.count == 1
    assert "easync_mass_deletes_total 1" in metrics.render()
    assert audits == [("device A", "rosa", "mass-delete",
                       "device A deleted 15 of 17 items of folder 5 in one Sync")]
    warned = [e for e in events if "mass delete" in str(e.get("log_format", ""))]
    assert len(warned) == 1 and warned[0]["n"] == 15 and warned[0]["m"] == 17
    assert MassDeletes(0, 10).needs_count(1000) is False     # share 0: off


def test_options_and_config_file_keys(tmp_path: Path) -> None:
    """--deleted-keep, --mass-delete-share, --mass-delete-min: defaults, the config file
    (its keys are the option names), the command line winning, bad values refused."""
    from twisted.python.usage import UsageError

    from easync.tap import Options

    def parse(*argv: str) -> Any:
        o = Options()
        o.parseOptions(list(argv))
        return o

    o = parse()
    assert o.config.store.deleted_keep == 30 * 86400
    assert (o.settings().mass_delete_share, o.settings().mass_delete_min) == (0.5, 10)
    conf = tmp_path / "easync.toml"
    conf.write_text('deleted-keep = "7d"\nmass-delete-share = "40%"\nmass-delete-min = 25\n')
    o = parse("--config", str(conf), "--mass-delete-min", "5")
    assert o.config.store.deleted_keep == 7 * 86400
    assert o.settings().mass_delete_share == pytest.approx(0.4)
    assert o.settings().mass_delete_min == 5
    for argv, message in ((["--mass-delete-share", "1.5"], "between 0 and 1"),
                          (["--mass-delete-share", "half"], "such as 0.5"),
                          (["--mass-delete-min", "0"], "at least 1"),
                          (["--deleted-keep", "a month"], "such as 90d")):
        with pytest.raises(UsageError) as e:
            parse(*argv)
        assert message in str(e.value)
