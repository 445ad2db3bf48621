"""Contract tests for the stores: the SQL store on SQLite and on PostgreSQL, the CRM
store (its mirror in SQLite) and the in-memory store of ``easync.testing``.

PostgreSQL: a database ``easync_contract_<pid>_<n>`` is created at ``$EASYNC_TEST_PG``
(tests/pgtest.py) for the session (its schema reset before each test) and dropped at the
end; when the server is unreachable those cases are skipped, or with CI=true fail
(tests/needs.py).
"""

from __future__ import annotations

import calendar
import json
import os
import random
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
import pytest_twisted
from crmtest import crm_under_test
from pgtest import fresh_database, unreachable
from twisted.internet.defer import DeferredList, ensureDeferred
from zope.interface.verify import verifyObject

from backends.sql.engines import DriverMissing, PostgresEngine, SqliteEngine, create_engine
from backends.sql.migrations import load_migrations, split_statements
from backends.sql.store import SqlStore
from easync.auth.local import Unavailable
from easync.interfaces import (
    IHoldStore,
    IItemStore,
    IRetentionStore,
    IStateStore,
    IUserStore,
)
from easync.lookup import contact_tokens
from easync.model import DEFAULT_FOLDERS, ChangeBatch, Op, StateWrite, User
from easync.testing import MemoryStore

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "backends" / "sql" / "schema"


# -- fixtures -------------------------------------------------------------------------

def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


@pytest.fixture(scope="session")
def pg_database() -> Iterator[tuple[str | None, str]]:
    """(url of a fresh session database, or None; why not)."""
    reason = unreachable()
    if reason:
        yield None, reason
        return
    with fresh_database("contract") as url:
        yield url, ""


def _reset_pg(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture
def db_url(request: Any, tmp_path: Path, pg_database: tuple[str | None, str]) -> str:
    """A fresh database of the kind ``request.param`` ("sqlite" or "postgres", from
    ``pytest_generate_tests``)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    url, reason = pg_database
    needs.require(reason if url is None else None)
    assert url is not None
    _reset_pg(url)
    return url


# The item-store contract also runs against the CRM store (backends/crm, over the fake
# CRM of tests/fakecrm.py, its mirror in SQLite), except what does not apply to it:
SQL_ONLY = {
    "test_users": "users stay in the SQL store",
    "test_folder_operations": "the CRM has no folders: user folders are refused",
    "test_delete_folder_takes_subfolders": "the CRM has no folders",
    "test_folders_are_per_user": "the CRM has no folders",
    "test_thousand_items_page_flat": "needs a user folder; the query plan is the SQL store's",
    "test_feed_matches_model": "moves items between user folders",
    "test_links_survive_moves": "moves items between user folders",
    "test_move_item": "moves items between user folders",
    "test_find_contacts_by_name_in_one_folder": "needs a user folder",
    "test_devices": "device state stays in the SQL store",
    "test_states": "sync state stays in the SQL store",
    "test_held_requests": "held requests are recorded in the SQL store",
    "test_find_users": "users stay in the SQL store",
    "test_name_lookups_walk_their_index": "the query plan is the SQL store's",
    "test_lookup_tokens_follow_moves_and_folder_deletes": "the CRM has no folders",
}


# ... and against the in-memory store (easync.testing), except what is about SQL:
NOT_MEMORY = {
    "test_name_lookups_walk_their_index": "a query plan of the SQL store",
}


DATABASES = ["sqlite", "postgres"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The databases and stores a test runs on, only those that apply.

    A test of the stores (fixture ``backend``) runs on the SQL store on every database,
    on the CRM store once (its mirror on SQLite: the SQL is the same) unless it is in
    ``SQL_ONLY``, and on the memory store once (it has no database) unless it is in
    ``NOT_MEMORY``.  A test of the SQL store alone (``db_url``) runs on every database,
    or on those its own ``parametrize("db_url", …, indirect=True)`` names."""
    fixtures = metafunc.fixturenames
    name = metafunc.function.__name__
    if "backend" in fixtures:
        stores = [(db, "sql") for db in DATABASES]
        if name not in SQL_ONLY:
            stores.append(("sqlite", "crm"))
        if name not in NOT_MEMORY:
            stores.append(("sqlite", "memory"))
        metafunc.parametrize(("db_url", "backend"), stores, indirect=True,
                             ids=[f"{db}-{b}" for db, b in stores])
    elif "db_url" in fixtures and not any(
            "db_url" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize")):
        metafunc.parametrize("db_url", DATABASES, indirect=True)


@pytest.fixture
def backend(request: Any, db_url: str) -> str:
    """The store under test: "sql", "crm" or "memory" (from ``pytest_generate_tests``)."""
    return str(request.param)


@pytest_twisted.async_yield_fixture()
async def store(db_url: str, backend: str) -> AsyncIterator[Any]:
    if backend == "memory":
        yield MemoryStore()
        return
    s = SqlStore(_reactor(), db_url)
    await s.open()
    crm = None
    try:
        if backend == "crm":
            crm = await crm_under_test(s)
            yield crm
        else:
            yield s
    finally:
        if crm is not None:
            await crm.close()
        await s.close()


@pytest_twisted.async_fixture()
async def user(store: SqlStore) -> User:
    return await store.add_user("Alice", "hash", "alice@example.com", True)


async def folder_ids(store: SqlStore, user: User) -> dict[str, str]:
    return {f.name: f.server_id for f in await store.list_folders(user)}


def contact(first: str, *emails: str) -> dict[str, Any]:
    data: dict[str, Any] = {"FirstName": first}
    for n, addr in enumerate(emails, 1):
        data[f"Email{n}Address"] = addr
    return data


def event(subject: str, attendees: list[str] = (), start: str = "20300101T100000Z",
          end: str = "20300101T110000Z", **extra: Any) -> dict[str, Any]:
    return {"Subject": subject, "StartTime": start, "EndTime": end,
            "Attendees": [{"Email": a, "Name": a.split("@")[0]} for a in attendees],
            **extra}


async def add(store: SqlStore, user: User, folder: str, *datas: dict[str, Any],
              **kw: Any) -> list[str]:
    results = await store.apply(user, folder, [Op("add", data=d, ref=str(i))
                                               for i, d in enumerate(datas)], **kw)
    assert all(r.ok for r in results), results
    return [r.server_id for r in results]


async def drain(store: SqlStore, user: User, folder: str, cursor: int = 0,
                limit: int = 100, window: Any = None) -> tuple[list[Any], int, int]:
    """All changes after cursor, paging; (changes, high, number of calls)."""
    out: list[Any] = []
    calls = 0
    while True:
        batch = await store.changes_since(user, folder, cursor, limit, window)
        calls += 1
        out.extend(batch.changes)
        assert batch.high >= cursor
        cursor = batch.high
        if not batch.more:
            return out, cursor, calls


async def user_modseq(store: Any, user: User) -> int:
    """The user's modseq counter (the newest modseq given out)."""
    if isinstance(store, MemoryStore):
        return store.user_modseq(user)
    return int((await store.raw_query("SELECT modseq FROM users WHERE id = ?",
                                      (user.id,)))[0][0])


async def index_rows(store: Any, table: str) -> list[tuple[Any, ...]]:
    """The rows of an index table (contact_names: item, user, token; event_contacts:
    event, contact, e-mail)."""
    if isinstance(store, MemoryStore):
        return store.index_rows(table)
    cols = {"contact_names": "item_id, user_id, token",
            "event_contacts": "event_item_id, contact_item_id, email"}[table]
    return await store.raw_query(f"SELECT {cols} FROM {table}")


# -- interfaces, engines ----------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_provides_interfaces(store: SqlStore) -> None:
    sql = getattr(store, "sql", store)              # the CRM store: users, state in SQL
    assert verifyObject(IUserStore, sql)
    assert verifyObject(IItemStore, getattr(store, "crm", store))
    assert verifyObject(IStateStore, sql)
    assert verifyObject(IHoldStore, sql)
    assert verifyObject(IRetentionStore, sql)


def test_create_engine_urls() -> None:
    e = create_engine("sqlite:///relative.sqlite")
    assert isinstance(e, SqliteEngine) and e.path == "relative.sqlite"
    e = create_engine("sqlite:////abs/path.sqlite")
    assert isinstance(e, SqliteEngine) and e.path == "/abs/path.sqlite"
    e = create_engine("sqlite:///:memory:")
    assert isinstance(e, SqliteEngine) and e.in_memory
    e = create_engine("postgresql://u@h:5433/db")
    assert isinstance(e, PostgresEngine) and e.sql("a = ? AND b = ?") == "a = %s AND b = %s"
    for bad in ("mysql://x/y", "sqlite://relative", "postgresql://host:5432/"):
        with pytest.raises(ValueError):
            create_engine(bad)
    # the refusal is shown and logged: never with the URL's password
    for bad in ("postgresql://easync:s3cret-pw@host:5432/", "mysql://easync:s3cret-pw@h/db"):
        with pytest.raises(ValueError) as e:
            create_engine(bad)
        assert "s3cret-pw" not in str(e.value) and "easync:***@" in str(e.value), e.value


def test_a_postgresql_url_without_its_driver_names_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13 point 2: ``postgresql://`` where psycopg cannot be imported is refused
    when the engine is made (not a server answering 503 for ever), with one line that
    names the package to install and no password of the URL; SQLite needs no driver."""
    monkeypatch.setitem(sys.modules, "psycopg", None)     # what `import psycopg` finds
    with pytest.raises(DriverMissing) as e:
        create_engine("postgresql://easync:s3cret-pw@db.example.org/easync")
    message = str(e.value)
    assert "psycopg[binary]" in message and "\n" not in message
    assert "s3cret-pw" not in message
    assert e.value.package == "psycopg[binary]"
    with pytest.raises(DriverMissing):           # the store makes its engine at once
        SqlStore(_reactor(), "postgres://easync@localhost/easync")
    assert isinstance(create_engine("sqlite:///:memory:"), SqliteEngine)


@pytest_twisted.ensureDeferred
async def test_memory_database() -> None:
    s = SqlStore(_reactor(), "sqlite:///:memory:")
    await s.open()
    try:
        u = await s.add_user("m", None, None, False)
        (sid,) = await add(s, u, (await folder_ids(s, u))["Contacts"], contact("x"))
        assert [i.server_id for i in await s.get_items(u, [sid])] == [sid]
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_service_start_stop(db_url: str) -> None:
    s = SqlStore(_reactor(), db_url)
    await s.startService()
    assert s.running
    assert await s.get_user("nobody") is None
    await s.stopService()
    assert not s.running
    with pytest.raises(RuntimeError):
        await s.list_users()


@pytest_twisted.ensureDeferred
async def test_calls_wait_for_open(db_url: str) -> None:
    s = SqlStore(_reactor(), db_url)
    opened = s.startService()          # not awaited: the migration is still running
    try:
        assert not opened.called and not s.db.is_open
        assert await _add_and_list(s) == ["early"]
        # the early calls ran on the opened, migrated database; open() itself may
        # still be finishing (it then looks for a lookup backfill to resume, one more
        # query: "opened.called" here was a race, lost once under two test processes)
        assert s.db.is_open
        await opened
    finally:
        await s.stopService()
    broken = SqlStore(_reactor(), "sqlite:////nonexistent/dir/x.sqlite")
    with pytest.raises(Exception):  # noqa: B017 - sqlite3.OperationalError
        await broken.open()
    with pytest.raises(RuntimeError):
        await broken.list_users()


async def _add_and_list(s: SqlStore) -> list[str]:
    await s.add_user("early", None, None, False)
    return [u.name for u in await s.list_users()]


# -- users ----------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_users(store: SqlStore) -> None:
    bob = await store.add_user("Bob", None, "bob@example.com", False)
    assert bob.name == "bob" and bob.email == "bob@example.com" and not bob.activesync
    with pytest.raises(KeyError):
        await store.add_user("BOB", None, None, False)
    await store.add_user("alice", "h", None, True)
    got = await store.get_user("bOb")
    assert got == bob
    assert await store.get_user("carol") is None
    assert [u.name for u in await store.list_users()] == ["alice", "bob"]

    upd = await store.update_user("BOB", password_hash="x", activesync=True,
                                  email="b@x.org", totp_secret="S", otp_mode="totp")
    assert (upd.password_hash, upd.activesync, upd.email) == ("x", True, "b@x.org")
    assert upd.extra == {"totp_secret": "S", "otp_mode": "totp"}
    upd = await store.update_user("bob", totp_secret=None, extra={"as_hash": "y"})
    assert upd.extra == {"otp_mode": "totp", "as_hash": "y"}
    assert await store.get_user("bob") == upd
    with pytest.raises(KeyError):
        await store.update_user("carol", email="c@x")


@pytest_twisted.ensureDeferred
async def test_add_user_creates_default_folders(store: SqlStore, user: User) -> None:
    folders = await store.list_folders(user)
    assert [(f.type, f.name) for f in folders] == list(DEFAULT_FOLDERS)
    assert all(f.parent_id == "0" and f.is_default and f.modseq == 0 for f in folders)
    assert len({f.server_id for f in folders}) == len(folders)
    other = await store.add_user("other", None, None, False)
    assert not {f.server_id for f in folders} & {
        f.server_id for f in await store.list_folders(other)}


# -- folders ----------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_folder_operations(store: SqlStore, user: User) -> None:
    v0 = await store.hierarchy_version(user)
    work = await store.create_folder(user, "0", "Work", 14)
    assert (work.parent_id, work.name, work.type, work.cls) == ("0", "Work", 14, "Contacts")
    assert not work.is_default
    assert await store.hierarchy_version(user) > v0
    with pytest.raises(ValueError, match="exists"):
        await store.create_folder(user, "0", "work", 14)
    with pytest.raises(ValueError, match="exists"):
        await store.create_folder(user, "0", "Contacts", 14)
    with pytest.raises(ValueError, match="parent"):
        await store.create_folder(user, "99999", "X", 14)
    sub = await store.create_folder(user, work.server_id, "Sub", 14)
    # same name under another parent is fine
    await store.create_folder(user, sub.server_id, "Work", 14)

    v1 = await store.hierarchy_version(user)
    renamed = await store.update_folder(user, work.server_id, "0", "Job")
    assert renamed.name == "Job" and renamed.server_id == work.server_id
    assert await store.hierarchy_version(user) > v1
    moved = await store.update_folder(user, sub.server_id, "0", "Sub")
    assert moved.parent_id == "0"
    with pytest.raises(ValueError, match="exists"):
        await store.update_folder(user, sub.server_id, "0", "JOB")
    with pytest.raises(ValueError, match="parent"):
        await store.update_folder(user, sub.server_id, "424242", "Sub")
    with pytest.raises(ValueError, match="parent"):   # not into itself
        await store.update_folder(user, sub.server_id, sub.server_id, "Sub")
    fids = await folder_ids(store, user)
    with pytest.raises(ValueError, match="special"):
        await store.update_folder(user, fids["Contacts"], "0", "Kontakte")
    with pytest.raises(KeyError):
        await store.update_folder(user, "424242", "0", "X")

    # a failed operation changes nothing
    v2 = await store.hierarchy_version(user)
    with pytest.raises(ValueError):
        await store.create_folder(user, "0", "Job", 14)
    assert await store.hierarchy_version(user) == v2

    with pytest.raises(ValueError, match="special"):
        await store.delete_folder(user, fids["Calendar"])
    with pytest.raises(KeyError):
        await store.delete_folder(user, "424242")
    (sid,) = await add(store, user, work.server_id, contact("In work", "w@x.org"))
    await store.delete_folder(user, work.server_id)
    assert await store.hierarchy_version(user) > v2
    assert work.server_id not in await folder_ids(store, user)
    assert await store.get_items(user, [sid]) == []
    with pytest.raises(KeyError):
        await store.delete_folder(user, work.server_id)
    # ids are never reused
    again = await store.create_folder(user, "0", "Work", 14)
    assert int(again.server_id) > int(work.server_id)


@pytest_twisted.ensureDeferred
async def test_delete_folder_takes_subfolders(store: SqlStore, user: User) -> None:
    top = await store.create_folder(user, "0", "Top", 13)
    mid = await store.create_folder(user, top.server_id, "Mid", 13)
    (sid,) = await add(store, user, mid.server_id, event("deep"))
    await store.delete_folder(user, top.server_id)
    names = await folder_ids(store, user)
    assert "Top" not in names and "Mid" not in names
    assert await store.get_items(user, [sid]) == []


@pytest_twisted.ensureDeferred
async def test_folders_are_per_user(store: SqlStore, user: User) -> None:
    other = await store.add_user("mallory", None, None, False)
    mine = await store.create_folder(user, "0", "Mine", 14)
    with pytest.raises(KeyError):
        await store.delete_folder(other, mine.server_id)
    with pytest.raises(ValueError, match="parent"):
        await store.create_folder(other, mine.server_id, "X", 14)
    with pytest.raises(KeyError):
        await store.apply(other, mine.server_id, [Op("add", data=contact("x"))])


# -- items ------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_add_change_delete_get(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    res = await store.apply(user, f["Contacts"], [
        Op("add", data=contact("Ann", "ann@x.org"), ref="c1"),
        Op("add", data=contact("Ben"), ref="c2"),
    ])
    assert [r.ref for r in res] == ["c1", "c2"] and all(r.ok for r in res)
    assert res[0].modseq < res[1].modseq
    a, b = res[0].server_id, res[1].server_id
    assert a.startswith(f["Contacts"] + ":") and a != b
    items = await store.get_items(user, [b, "nonsense", "1:999999", a])
    assert [i.server_id for i in items] == [b, a]
    assert items[1].data == contact("Ann", "ann@x.org")
    assert items[1].cls == "Contacts" and items[1].folder_id == f["Contacts"]
    assert items[1].modseq == res[0].modseq

    res = await store.apply(user, f["Contacts"], [
        Op("change", server_id=a, data=contact("Anna", "anna@x.org"), ref="x"),
        Op("delete", server_id=b),
        Op("change", server_id=f["Contacts"] + ":999999", data=contact("?")),
        Op("delete", server_id=b),
        Op("change", server_id="garbage", data={}),
        Op("delete", server_id=f["Calendar"] + ":" + a.split(":")[1]),
    ])
    assert [(r.ok, r.error) for r in res] == [
        (True, None), (True, None), (False, "notfound"), (False, "notfound"),
        (False, "notfound"), (False, "notfound")]
    assert res[0].server_id == a and res[0].ref == "x"
    (item,) = await store.get_items(user, [a, b])
    assert item.data["FirstName"] == "Anna" and item.modseq == res[0].modseq

    # the class comes from the folder, or from the op (not in the CRM: a folder is a module)
    (t,) = await add(store, user, f["Tasks"], {"Subject": "do", "Complete": "0"})
    assert (await store.get_items(user, [t]))[0].cls == "Tasks"
    res = await store.apply(user, f["Tasks"], [Op("add", data={"Subject": "x"}, cls="Notes"),
                                               Op("add", data=None), Op("frob")])
    assert res[0].ok and (await store.get_items(user, [res[0].server_id]))[0].cls == (
        "Tasks" if hasattr(store, "crm") else "Notes")
    assert [(r.ok, r.error) for r in res[1:]] == [(False, "invalid"), (False, "invalid")]

    # another user sees nothing of it
    other = await store.add_user("eve", None, None, False)
    assert await store.get_items(other, [a]) == []
    assert (await store.apply(other, (await folder_ids(store, other))["Contacts"],
                              [Op("delete", server_id=a)]))[0].error == "notfound"


@pytest_twisted.ensureDeferred
async def test_unicode_and_nested_data_round_trip(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    data = event("Café ☕ — 会议", ["zoë@example.org"], Categories=["a", "ß"],
                 Body={"Type": 1, "Data": "line1\nline2 \"quoted\" \\ ; ? %s"},
                 Exceptions=[{"ExceptionStartTime": "20300108T100000Z", "Deleted": 1}])
    (sid,) = await add(store, user, f["Calendar"], data)
    (item,) = await store.get_items(user, [sid])
    assert item.data == data


@pytest_twisted.ensureDeferred
async def test_lone_surrogates_do_not_break_writes(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    data = contact("bad \ud800 half", "x@y.org")
    (sid,) = await add(store, user, f["Contacts"], data)
    assert (await store.get_items(user, [sid]))[0].data == data


@pytest_twisted.ensureDeferred
async def test_unreachable_database_is_unavailable(db_url: str) -> None:
    """A database that cannot answer gives Unavailable (HTTP 503), and the store
    recovers once it can."""
    s = SqlStore(_reactor(), db_url)
    if s.engine.name == "sqlite":
        s.engine.busy_timeout_ms = 100      # type: ignore[attr-defined]
    await s.open()
    try:
        await s.add_user("u", None, None, False)
        if s.engine.name == "sqlite":
            import sqlite3

            path = db_url[len("sqlite:///"):]
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            with pytest.raises(Unavailable):
                await s.add_user("v", None, None, False)
            blocker.execute("ROLLBACK")
            blocker.close()
            assert (await s.add_user("v", None, None, False)).name == "v"
        else:
            import psycopg

            with psycopg.connect(db_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = current_database()"
                              " AND pid <> pg_backend_pid()")
            outcomes = []
            for _ in range(s.engine.cp_max + 2):    # type: ignore[attr-defined]
                try:
                    outcomes.append((await s.get_user("u")).name)
                except Unavailable:
                    outcomes.append("unavailable")
            # calls on a killed connection fail as Unavailable (never another error),
            # and each of those connections is replaced
            assert set(outcomes) <= {"u", "unavailable"} and outcomes[-1] == "u", outcomes
    finally:
        await s.close()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite: one connection
@pytest_twisted.ensureDeferred
async def test_out_of_file_descriptors_is_unavailable_and_says_so(db_url: str) -> None:
    """A process at its open-files limit cannot open a pool connection: the calls that
    need one fail as Unavailable (HTTP 503 with Retry-After, MS-ASHTTP 3.2.5.2), whose
    text names the cause (libpq itself says only "connection is bad: no error details
    available"), never as another error (an HTTP 500 with a traceback in the log);
    with descriptors free again the store answers."""
    import resource

    s = SqlStore(_reactor(), db_url)
    await s.open()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    try:
        await s.add_user("u", None, None, False)
        resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 8,
                                                     hard))
        try:
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        calls = [ensureDeferred(s.get_user("u")) for _ in range(8)]
        outcomes = await DeferredList(calls, consumeErrors=True)
        errors = [r for ok, r in outcomes if not ok]
        assert errors, "every call found a connection already open"
        for f in errors:
            assert f.check(Unavailable), f.getTraceback()
            assert "out of file descriptors" in str(f.value), f.value
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        for _ in range(8):
            assert (await s.get_user("u")).name == "u"
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_modseqs_unique_and_increasing_per_user(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    seen: list[int] = []
    for folder, data in ((f["Contacts"], contact("a")), (f["Calendar"], event("e")),
                         (f["Tasks"], {"Subject": "t"}), (f["Contacts"], contact("b"))):
        res = await store.apply(user, folder, [Op("add", data=data), Op("add", data=data)])
        seen.extend(r.modseq for r in res)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    folders = {x.server_id: x.modseq for x in await store.list_folders(user)}
    assert folders[f["Contacts"]] == seen[-1]
    assert folders[f["Calendar"]] == seen[3]
    assert folders[f["Inbox"]] == 0


@pytest_twisted.ensureDeferred
async def test_concurrent_writers_get_distinct_modseqs(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    ds = [ensureDeferred(_apply_one(store, user, f["Contacts" if n % 2 else "Tasks"], n))
          for n in range(40)]
    results = await DeferredList(ds, fireOnOneErrback=True, consumeErrors=True)
    modseqs = [m for _ok, ms in results for m in ms]
    assert len(modseqs) == 80 and len(set(modseqs)) == 80
    changes, _high, _calls = await drain(store, user, f["Contacts"], limit=7)
    assert [c.modseq for c in changes] == sorted(c.modseq for c in changes)
    assert len(changes) == 40


async def _apply_one(store: SqlStore, user: User, folder: str, n: int) -> list[int]:
    res = await store.apply(user, folder, [Op("add", data=contact(f"c{n}")),
                                           Op("add", data=contact(f"d{n}"))])
    return [r.modseq for r in res]


# -- the change feed --------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_changes_since_paging(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Contacts"]
    empty = await store.changes_since(user, f, 0, 10)
    assert empty == ChangeBatch([], False, 0)
    sids = await add(store, user, f, *[contact(f"c{n}") for n in range(25)])
    b1 = await store.changes_since(user, f, 0, 10)
    assert len(b1.changes) == 10 and b1.more and b1.high == b1.changes[-1].modseq
    assert [c.server_id for c in b1.changes] == sids[:10]
    assert all(not c.deleted and c.item and c.item.server_id == c.server_id
               and c.created_modseq == c.modseq for c in b1.changes)
    b2 = await store.changes_since(user, f, b1.high, 10)
    b3 = await store.changes_since(user, f, b2.high, 10)
    assert (len(b2.changes), b2.more, len(b3.changes), b3.more) == (10, True, 5, False)
    assert [c.server_id for c in b1.changes + b2.changes + b3.changes] == sids
    # exactly limit left: no more
    exact = await store.changes_since(user, f, b1.high, 15)
    assert len(exact.changes) == 15 and not exact.more
    # nothing new: same cursor back
    none = await store.changes_since(user, f, b3.high, 10)
    assert none == ChangeBatch([], False, b3.high)
    # limit 0 only says whether there is anything
    assert await store.changes_since(user, f, 0, 0) == ChangeBatch([], True, 0)
    assert await store.changes_since(user, f, b3.high, 0) == ChangeBatch([], False, b3.high)
    # unknown folders have no changes
    assert (await store.changes_since(user, "999999", 0, 10)).changes == []
    assert (await store.changes_since(user, "junk", 0, 10)).changes == []
    assert await store.count_changes_since(user, f, 0) == 25
    assert await store.count_changes_since(user, f, b1.high) == 15
    assert await store.count_changes_since(user, f, b3.high) == 0


@pytest_twisted.ensureDeferred
async def test_changes_since_each_item_once_newest_state(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Contacts"]
    a, b, c = await add(store, user, f, contact("a"), contact("b"), contact("c"))
    cursor = (await store.changes_since(user, f, 0, 100)).high
    for n in range(3):
        await store.apply(user, f, [Op("change", server_id=a, data=contact(f"a{n}"))])
    await store.apply(user, f, [Op("delete", server_id=b)])
    (d,) = await add(store, user, f, contact("d"))
    await store.apply(user, f, [Op("change", server_id=d, data=contact("d2")),
                                Op("delete", server_id=d)])  # created+deleted after cursor
    batch = await store.changes_since(user, f, cursor, 100)
    assert [(ch.server_id, ch.deleted) for ch in batch.changes] == [
        (a, False), (b, True), (d, True)]
    assert batch.changes[0].item.data == contact("a2")
    assert batch.changes[1].item is None and batch.changes[1].created_modseq <= cursor
    assert batch.changes[2].created_modseq > cursor
    assert [ch.modseq for ch in batch.changes] == sorted(ch.modseq for ch in batch.changes)
    assert batch.high == batch.changes[-1].modseq and not batch.more
    assert await store.count_changes_since(user, f, cursor) == 3
    # from the start: c unchanged still appears once, at its creation
    everything, _h, _n = await drain(store, user, f, 0, limit=2)
    assert sorted(ch.server_id for ch in everything) == sorted([a, b, c, d])


@pytest_twisted.ensureDeferred
async def test_changes_since_window_calendar(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Calendar"]
    past = event("past", start="20200101T100000Z", end="20200101T110000Z")
    future = event("future", start="20300101T100000Z", end="20300101T110000Z")
    weekly = event("weekly", start="20200101T100000Z", end="20200101T110000Z",
                   Recurrence={"Type": 1, "Interval": 1, "DayOfWeek": 4})
    old = await add(store, user, f, *[past] * 5)
    fut, rec = await add(store, user, f, future, weekly)
    tail = await add(store, user, f, *[past] * 3)
    since = calendar.timegm((2025, 1, 1, 0, 0, 0))
    batch = await store.changes_since(user, f, 0, 100, (since, None))
    assert [c.server_id for c in batch.changes] == [fut, rec]
    assert batch.high == max(c.modseq for c in (await store.changes_since(
        user, f, 0, 100)).changes)   # filtered rows still advance high
    assert not batch.more
    # paging with a window: the filtered rows do not fill batches
    got, high, _calls = await drain(store, user, f, 0, limit=1, window=(since, None))
    assert [c.server_id for c in got] == [fut, rec]
    # deletions of filtered-out items still come through
    await store.apply(user, f, [Op("delete", server_id=old[0])])
    b = await store.changes_since(user, f, high, 10, (since, None))
    assert [(c.server_id, c.deleted) for c in b.changes] == [(old[0], True)]
    # an upper bound leaves out what starts after it
    b = await store.changes_since(user, f, 0, 100, (since, calendar.timegm(
        (2026, 1, 1, 0, 0, 0))))
    assert [c.server_id for c in b.changes] == [rec, old[0]]
    assert tail


@pytest_twisted.ensureDeferred
async def test_changes_since_window_tasks(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Tasks"]
    done, todo = await add(store, user, f, {"Subject": "d", "Complete": "1"},
                           {"Subject": "t", "Complete": "0"})
    batch = await store.changes_since(user, f, 0, 10, (None, 1))
    assert [c.server_id for c in batch.changes] == [todo]
    assert batch.high == (await store.changes_since(user, f, 0, 10)).high
    assert len((await store.changes_since(user, f, 0, 10)).changes) == 2
    assert done


@pytest_twisted.ensureDeferred
async def test_changes_since_held_upto_returns_soft_entries(store: SqlStore, user: User
                                                            ) -> None:
    """With ``held_upto``, a live item outside the window that a device may hold (made
    at or before that modseq) comes back as a soft entry (SoftDelete, MS-ASCMD
    2.2.3.172); one made after it is still left out."""
    f = (await folder_ids(store, user))["Calendar"]
    since = calendar.timegm((2025, 1, 1, 0, 0, 0))
    a, b = await add(store, user, f, event("a"), event("b"))
    held = (await store.changes_since(user, f, 0, 10)).high
    late = (await add(store, user, f, event("late", start="20200101T100000Z",
                                            end="20200101T110000Z")))[0]
    await store.apply(user, f, [Op("change", server_id=a, data=event(
        "a moved", start="20200101T100000Z", end="20200101T110000Z"))])
    batch = await store.changes_since(user, f, held, 10, (since, None), held)
    assert [(c.server_id, c.soft, c.deleted, c.item) for c in batch.changes] == \
        [(a, True, False, None)]
    assert late and b
    # without held_upto: left out as before
    assert (await store.changes_since(user, f, held, 10, (since, None))).changes == []


@pytest_twisted.ensureDeferred
async def test_window_changes(store: SqlStore, user: User) -> None:
    """The items that enter or leave when a device's window moves (MS-ASCMD
    2.2.3.68.2), among a modseq range, paged; a bounded series that ended before the
    window is outside it, an unbounded one inside."""
    f = (await folder_ids(store, user))["Calendar"]
    y2020 = {"start": "20200101T100000Z", "end": "20200101T110000Z"}
    ids = await add(store, user, f,
                    event("old1", **y2020), event("future"), event("old2", **y2020),
                    event("old series", **y2020, Recurrence={
                        "Type": 1, "Interval": 1, "DayOfWeek": 4, "Occurrences": 3}),
                    event("open series", **y2020, Recurrence={
                        "Type": 1, "Interval": 1, "DayOfWeek": 4}),
                    event("until series", **y2020, Recurrence={
                        "Type": 0, "Interval": 1, "Until": "20200110T100000Z"}),
                    event("old3", **y2020))
    old1, future, old2, old_series, open_series, until_series, old3 = ids
    upto = (await store.changes_since(user, f, 0, 100)).high
    await store.apply(user, f, [Op("delete", server_id=old3)])
    since = calendar.timegm((2025, 1, 1, 0, 0, 0))
    wide = await store.window_changes(user, f, 0, upto, (since, None), None, 100)
    assert [(c.server_id, c.enters, c.soft) for c in wide.changes] == [
        (old1, True, False), (old2, True, False), (old_series, True, False),
        (until_series, True, False)]
    assert not wide.more and wide.high == upto
    assert all(c.item is None and not c.deleted for c in wide.changes)
    narrow = await store.window_changes(user, f, 0, upto, None, (since, None), 100)
    assert [(c.server_id, c.soft) for c in narrow.changes] == [
        (old1, True), (old2, True), (old_series, True), (until_series, True)]
    # paged: two at a time, resuming from high
    page = await store.window_changes(user, f, 0, upto, None, (since, None), 2)
    assert [c.server_id for c in page.changes] == [old1, old2] and page.more
    rest = await store.window_changes(user, f, page.high, upto, None, (since, None), 2)
    assert [c.server_id for c in rest.changes] == [old_series, until_series]
    assert not rest.more
    # the range's upper end is kept, and equal windows move nothing
    assert (await store.window_changes(user, f, 0, upto - 2, None, (since, None), 100)
            ).changes[-1].server_id == old_series
    assert (await store.window_changes(user, f, 0, upto, (since, None), (since, None), 9)
            ).changes == []
    assert future and open_series
    # tasks: (None, 1) keeps incomplete ones
    t = (await folder_ids(store, user))["Tasks"]
    done, todo = await add(store, user, t, {"Subject": "d", "Complete": 1},
                           {"Subject": "t", "Complete": 0})
    top = (await store.changes_since(user, t, 0, 10)).high
    moved = await store.window_changes(user, t, 0, top, None, (None, 1), 10)
    assert [(c.server_id, c.soft) for c in moved.changes] == [(done, True)]
    assert todo


@pytest_twisted.ensureDeferred
async def test_find_by_uids(store: SqlStore, user: User) -> None:
    """Live events of one folder by UID (MS-ASCAL 2.2.2.13 de-duplication)."""
    f = (await folder_ids(store, user))["Calendar"]
    a, b, gone = await add(store, user, f, event("a", UID="U-A"), event("b", UID="U-B"),
                           event("gone", UID="U-GONE"))
    await store.apply(user, f, [Op("delete", server_id=gone)])
    found = await store.find_by_uids(user, f, ["U-A", "U-B", "U-GONE", "U-NONE", ""])
    assert {u: i.server_id for u, i in found.items()} == {"U-A": a, "U-B": b}
    assert found["U-A"].data["Subject"] == "a" and found["U-A"].modseq > 0
    other = (await folder_ids(store, user))["Tasks"]
    assert await store.find_by_uids(user, other, ["U-A"]) == {}
    assert await store.find_by_uids(user, f, []) == {}


@pytest_twisted.ensureDeferred
async def test_thousand_items_page_flat(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Contacts"]
    other = await store.create_folder(user, "0", "Other", 14)
    for start in range(0, 1000, 250):
        await add(store, user, f, *[contact(f"c{n}", f"c{n}@x.org")
                                    for n in range(start, start + 250)])
        await add(store, user, other.server_id, *[contact("noise")] * 50)
    sizes = []
    cursor = 0
    seen: list[str] = []
    while True:
        batch = await store.changes_since(user, f, cursor, 100)
        sizes.append((len(batch.changes), batch.more))
        seen.extend(c.server_id for c in batch.changes)
        cursor = batch.high
        if not batch.more:
            break
    assert sizes == [(100, True)] * 9 + [(100, False)]
    assert len(set(seen)) == 1000
    # the plan for the first page (the whole folder qualifies) and for a later one
    await assert_feed_uses_index(store, user, f, 0)
    await assert_feed_uses_index(store, user, f, cursor // 2)
    await assert_feed_uses_index(store, user, f, cursor)


async def assert_feed_uses_index(store: SqlStore, user: User, folder: str,
                                 cursor: int) -> None:
    """The feed query walks index items_feed in order from the cursor and stops after
    limit+1 rows: no table scan, no sort of the folder's rows."""
    # (no ANALYZE first: the plan must not depend on fresh statistics)
    if isinstance(store, MemoryStore):
        return                          # (no query plan: the rest of the test holds)
    details = " | ".join(await store.explain_feed(user, folder, cursor, 100))
    assert "items_feed" in details, details
    for bad in ("SCAN items", "TEMP B-TREE", "Seq Scan", "Bitmap", "Sort"):
        assert bad not in details, details


# -- the feed against a model ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_feed_matches_model(store: SqlStore) -> None:
    """After random sequences of adds, changes, deletes and moves, changes_since from any
    earlier point returns exactly the items touched since, each once, live ones at
    their current data, gone ones as tombstones (seeded, so failures reproduce)."""
    for seed in range(20):
        rnd = random.Random(seed)
        ops = [(rnd.choice(["add", "add", "change", "delete", "move"]), rnd.randrange(30),
                rnd.randrange(2)) for _ in range(rnd.randrange(1, 25))]
        await _feed_against_model(store, ops, rnd.randrange(1, 8), seed)


async def _feed_against_model(store: SqlStore, ops: list[tuple[str, int, int]],
                              limit: int, seed: int) -> None:
    u = await store.add_user(f"model{seed}", None, None, False)
    folders = [(await folder_ids(store, u))["Contacts"],
               (await store.create_folder(u, "0", "Second", 14)).server_id]
    live: dict[str, dict[str, Any]] = {}
    touched: dict[str, int] = {}          # server id -> index of the last op touching it
    points: list[int] = []                # the user's modseq after op i

    async def modseq() -> int:
        return await user_modseq(store, u)

    points.append(await modseq())
    for i, (kind, pick, where) in enumerate(ops, 1):
        sids = sorted(live)
        if kind == "add" or not sids:
            data = contact(f"n{i}", f"p{i}@x.org")
            (sid,) = await add(store, u, folders[where], data)
            live[sid] = data
            touched[sid] = i
        else:
            sid = sids[pick % len(sids)]
            folder = sid.split(":")[0]
            if kind == "change":
                data = contact(f"c{i}")
                assert (await store.apply(u, folder, [
                    Op("change", server_id=sid, data=data)]))[0].ok
                live[sid] = data
                touched[sid] = i
            elif kind == "delete":
                assert (await store.apply(u, folder, [Op("delete", server_id=sid)]))[0].ok
                del live[sid]
                touched[sid] = i
            else:
                dst = folders[where]
                new = await store.move_item(u, sid, dst)
                if new != sid:
                    live[new] = live.pop(sid)
                    touched[sid] = touched[new] = i
        points.append(await modseq())

    for since, cursor in enumerate(points):
        for folder in folders:
            changes, _high, _calls = await drain(store, u, folder, cursor, limit)
            got = {c.server_id: c for c in changes}
            assert len(got) == len(changes), "an item appeared twice"
            expected = {sid for sid, at in touched.items()
                        if at > since and sid.split(":")[0] == folder}
            assert set(got) == expected
            for sid, ch in got.items():
                assert ch.deleted == (sid not in live)
                if not ch.deleted:
                    assert ch.item is not None and ch.item.data == live[sid]
                assert ch.modseq > cursor
            assert await store.count_changes_since(u, folder, cursor) == len(expected)


# -- atomicity --------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_apply_with_state_is_atomic(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Contacts"]
    (a,) = await add(store, user, f, contact("keep"))
    before = await store.changes_since(user, f, 0, 100)
    folders_before = await store.list_folders(user)
    bad = StateWrite("dev1", "sync:" + f, {"oops": object()})
    with pytest.raises(TypeError):
        await store.apply(user, f, [Op("add", data=contact("new")),
                                    Op("change", server_id=a, data=contact("changed")),
                                    Op("delete", server_id=a)], bad)
    assert await store.changes_since(user, f, 0, 100) == before
    assert await store.list_folders(user) == folders_before
    assert await store.get_state(user, "dev1", "sync:" + f) is None
    # a working state write lands with the items
    res = await store.apply(user, f, [Op("add", data=contact("new"))],
                            StateWrite("dev1", "sync:" + f, {"key": 2, "ids": [a]}))
    assert res[0].modseq == before.high + 1       # the failed attempt used no modseq
    assert await store.get_state(user, "dev1", "sync:" + f) == {"key": 2, "ids": [a]}
    # state only, no ops
    assert await store.apply(user, f, [], StateWrite("dev1", "x", {"n": 1})) == []
    assert await store.get_state(user, "dev1", "x") == {"n": 1}


@pytest_twisted.ensureDeferred
async def test_apply_state_build_sees_results(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Contacts"]
    seen: list[Any] = []

    def build(results: list[Any]) -> dict[str, Any]:
        seen.extend(results)
        return {"own": {r.server_id: r.modseq for r in results if r.ok}}

    res = await store.apply(user, f, [Op("add", data=contact("a"), ref="c"),
                                      Op("delete", server_id=f + ":424242")],
                            StateWrite("D", "sync:" + f, {}, build=build))
    assert seen == res
    assert await store.get_state(user, "D", "sync:" + f) == {
        "own": {res[0].server_id: res[0].modseq}}

    def explode(results: list[Any]) -> dict[str, Any]:
        raise RuntimeError("engine bug")

    with pytest.raises(RuntimeError):
        await store.apply(user, f, [Op("add", data=contact("b"))],
                          StateWrite("D", "sync:" + f, {}, build=explode))
    assert len((await store.changes_since(user, f, 0, 10)).changes) == 1


# -- event <-> contact links ------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_links(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    ann, ben, cat = await add(store, user, f["Contacts"],
                              contact("Ann", "Ann Smith <ANN@example.org>"),
                              contact("Ben", "x@y.org", "ben@example.org"),
                              contact("Cat", "cat@example.org"))
    (ev,) = await add(store, user, f["Calendar"],
                      event("meet", ["ann@example.org", "Ben@Example.org", "nobody@x.org"]))
    assert await store.linked_contacts(user, ev) == sorted([ann, ben])
    assert await store.linked_events(user, ann) == [ev]
    assert await store.linked_events(user, cat) == []

    # a contact changing its address keeps its links
    await store.apply(user, f["Contacts"], [
        Op("change", server_id=ann, data=contact("Ann", "ann@new.org"))])
    assert ann in await store.linked_contacts(user, ev)
    # ... also when the event changes but keeps that attendee
    await store.apply(user, f["Calendar"], [Op("change", server_id=ev, data=event(
        "meet2", ["ann@example.org", "ben@example.org", "cat@example.org"]))])
    assert await store.linked_contacts(user, ev) == sorted([ann, ben, cat])
    # attendees removed lose their links
    await store.apply(user, f["Calendar"], [Op("change", server_id=ev, data=event(
        "meet3", ["cat@example.org"]))])
    assert await store.linked_contacts(user, ev) == [cat]
    assert await store.linked_events(user, ann) == []
    # a contact deleted: its links go
    await store.apply(user, f["Contacts"], [Op("delete", server_id=cat)])
    assert await store.linked_contacts(user, ev) == []
    assert await index_rows(store, "event_contacts") == []
    # deleted contacts are not matched any more; live ones by their new address
    await store.apply(user, f["Calendar"], [Op("change", server_id=ev, data=event(
        "meet4", ["cat@example.org", "ann@new.org", "ann@example.org"]))])
    assert await store.linked_contacts(user, ev) == [ann]
    # an event deleted: its links go
    await store.apply(user, f["Calendar"], [Op("delete", server_id=ev)])
    assert await store.linked_events(user, ann) == []
    assert await index_rows(store, "event_contacts") == []


@pytest_twisted.ensureDeferred
async def test_links_are_per_user_and_match_all_addresses(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    other = await store.add_user("zed", None, None, False)
    g = await folder_ids(store, other)
    (theirs,) = await add(store, other, g["Contacts"], contact("T", "t@x.org"))
    c1, c2 = await add(store, user, f["Contacts"], contact("A", "a@x.org"),
                       contact("A again", "q@x.org", "r@x.org", "a@x.org"))
    (ev,) = await add(store, user, f["Calendar"], event("e", ["t@x.org", "a@x.org"]))
    assert await store.linked_contacts(user, ev) == sorted([c1, c2])
    assert await store.linked_events(other, theirs) == []
    assert await store.linked_contacts(other, ev) == []
    assert await store.linked_contacts(user, "garbage") == []


@pytest_twisted.ensureDeferred
async def test_links_survive_moves(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    (ann,) = await add(store, user, f["Contacts"], contact("Ann", "ann@x.org"))
    (ev,) = await add(store, user, f["Calendar"], event("e", ["ann@x.org"]))
    cfold = await store.create_folder(user, "0", "Friends", 14)
    efold = await store.create_folder(user, "0", "Work cal", 13)
    ann2 = await store.move_item(user, ann, cfold.server_id)
    ev2 = await store.move_item(user, ev, efold.server_id)
    assert await store.linked_contacts(user, ev2) == [ann2]
    assert await store.linked_events(user, ann2) == [ev2]
    assert await store.linked_contacts(user, ev) == []     # the old id is a tombstone
    # still recognised after the move: a new event matches the moved contact
    (ev3,) = await add(store, user, f["Calendar"], event("e3", ["ann@x.org"]))
    assert await store.linked_contacts(user, ev3) == [ann2]


# -- recipient and directory lookups (issue #10 point 2) -------------------------------

def named(first: str, last: str, *emails: str, **more: Any) -> dict[str, Any]:
    return {**contact(first, *emails), "LastName": last, **more}


async def by_name(store: SqlStore, user: User, prefix: str, limit: int = 50) -> list[str]:
    return [i.server_id for i in await store.find_contacts_by_name(user, prefix, limit)]


@pytest_twisted.ensureDeferred
async def test_find_contacts_by_emails(store: SqlStore, user: User) -> None:
    """ResolveRecipients by address (MS-ASCMD 2.2.1.15, issue #10 point 2): exact,
    case-insensitive on both sides, per address bounded by the limit, only the user's
    live contacts, kept true by every write."""
    f = await folder_ids(store, user)
    ann, ann2, ben, nomail = await add(
        store, user, f["Contacts"], contact("Ann", "Ann Smith <ANN@Example.org>"),
        contact("Ann again", "x@y.org", "ann@example.org"), contact("Ben", "ben@example.org"),
        contact("Nomail"))
    other = await store.add_user("zed", None, None, False)
    await add(store, other, (await folder_ids(store, other))["Contacts"],
              contact("Theirs", "ann@example.org"))
    found = await store.find_contacts_by_emails(
        user, ["ann@EXAMPLE.org", "Someone <BEN@example.org>", "nobody@example.org",
               "not an address"], 10)
    assert {k: [i.server_id for i in v] for k, v in found.items()} == {
        "ann@example.org": sorted([ann, ann2]), "ben@example.org": [ben]}
    assert found["ben@example.org"][0].data == contact("Ben", "ben@example.org")
    limited = await store.find_contacts_by_emails(user, ["ann@example.org"], 1)
    assert len(limited["ann@example.org"]) == 1
    assert await store.find_contacts_by_emails(user, [], 10) == {}
    # a change of address, a delete
    await store.apply(user, f["Contacts"], [
        Op("change", server_id=ann, data=contact("Ann", "ann@new.org")),
        Op("delete", server_id=ann2)])
    found = await store.find_contacts_by_emails(user, ["ann@example.org", "ann@new.org"], 10)
    assert {k: [i.server_id for i in v] for k, v in found.items()} == {"ann@new.org": [ann]}
    assert nomail


@pytest_twisted.ensureDeferred
async def test_find_contacts_by_emails_refuses_what_cannot_be_an_address(
        store: SqlStore, user: User) -> None:
    """An address longer than RFC 5321's 254 characters (issue #10 point 1's 32 kB
    Email1Address) or with characters a database refuses is stored in the item but not
    indexed, and asking for it finds nothing (no error)."""
    f = await folder_ids(store, user)
    long_addr = "a" * 32_000 + "@example.org"
    weird = "nul\x00@example.org"
    sid, ok = await add(store, user, f["Contacts"], contact("Long", long_addr, weird),
                        contact("Fine", "fine@example.org"))
    assert (await store.get_items(user, [sid]))[0].data["Email1Address"] == long_addr
    assert await store.find_contacts_by_emails(user, [long_addr, weird, "\ud800@x.org"],
                                               5) == {}
    assert await by_name(store, user, "long") == []   # no usable address: no recipient
    assert await by_name(store, user, "fine") == [ok]


@pytest_twisted.ensureDeferred
async def test_find_contacts_by_name_prefix_of_words(store: SqlStore, user: User) -> None:
    """Names match as Exchange's ANR: the query begins a word or a whole name
    (FirstName, LastName, FileAs, CompanyName, "first last", "last first"), case-
    insensitive; a substring inside a word does not (issue #10 point 2)."""
    f = await folder_ids(store, user)
    ada, adam, acme = await add(
        store, user, f["Contacts"],
        named("Ada", "Lovelace", "ada@example.org", FileAs="Lovelace, Ada"),
        named("Adam", "Smith", "adam@example.org", MiddleName="J."),
        {"CompanyName": "ACME Widgets S.p.A.", "Email1Address": "info@acme.example"})
    cases = {
        "ada": [ada, adam], "ADA": [ada, adam], "adam": [adam], "love": [ada],
        "ada lov": [ada], "lovelace, a": [ada], "lovelace ada": [ada],
        "smith": [adam], "adam j. sm": [adam], "j.": [adam], "j": [adam],
        "acme": [acme], "widgets": [acme], "s.p.a": [acme], "  Ada   LOVE  ": [ada],
        # not a prefix of any word
        "ace": [], "mith": [], "dam": [], "": [], "   ": [], "zzz": [],
    }
    for query, want in cases.items():
        assert sorted(await by_name(store, user, query)) == sorted(want), query
    assert len(await by_name(store, user, "a", limit=2)) == 2
    assert len(await by_name(store, user, "a", limit=10)) == 3
    assert await by_name(store, user, "a", limit=0) == []
    # a change renames, a delete removes, another user's contacts are not seen
    await store.apply(user, f["Contacts"], [
        Op("change", server_id=ada, data=named("Grace", "Hopper", "ada@example.org")),
        Op("delete", server_id=acme)])
    assert await by_name(store, user, "love") == []
    assert await by_name(store, user, "hop") == [ada]
    assert await by_name(store, user, "acme") == []
    other = await store.add_user("zed", None, None, False)
    assert await store.find_contacts_by_name(other, "grace", 5) == []
    items = await store.find_contacts_by_name(user, "grace", 5)
    assert items[0].data["LastName"] == "Hopper" and items[0].server_id == ada


@pytest_twisted.ensureDeferred
async def test_find_contacts_by_name_hostile_text(store: SqlStore, user: User) -> None:
    """32 kB names, many words, control characters and lone surrogates are stored
    whole and indexed on a bounded number of bounded tokens (issue #10 points 1-2)."""
    f = await folder_ids(store, user)
    huge = "Zed" + "x" * 32_000
    words = " ".join(f"w{i:03d}" for i in range(5000))
    a, b, c = await add(store, user, f["Contacts"], named(huge, "Long", "z@example.org"),
                        named(words, "Many", "m@example.org"),
                        named("Bad\ud800Half", "Nul\x00Name", "b@example.org"))
    assert await by_name(store, user, "zedxxx") == [a]
    assert await by_name(store, user, "zed" + "x" * 40_000) == [a]   # compared on 254
    assert await by_name(store, user, "w001") == [b]
    assert await by_name(store, user, "w4999") == []                 # 16 words a field
    assert await by_name(store, user, "bad") == [c]
    assert await by_name(store, user, "half") == [c]
    assert await by_name(store, user, "\ud800") == []
    tokens = [row[2] for row in await index_rows(store, "contact_names")]
    assert len(tokens) < 200 and max(map(len, tokens)) <= 254


@pytest_twisted.ensureDeferred
async def test_name_lookups_walk_their_index(store: SqlStore, user: User) -> None:
    """The name lookups are one ordered walk of their index that stops at the LIMIT
    (issue #10 point 2: O(log n + limit), whatever the database's statistics): no
    table scan, no sort of every token with the prefix."""
    f = await folder_ids(store, user)
    await add(store, user, f["Contacts"], *[named(f"Lee{n}", "Li", f"l{n}@x.org")
                                           for n in range(300)])
    # (no ANALYZE first: the plan must not depend on fresh statistics)
    details = " | ".join(await store.explain_lookups(user, "l", 20, f["Contacts"]))
    # recipients (ResolveRecipients), every contact and one folder's (Find): schema 14
    for index in ("contact_names_recipients", "contact_names_lookup",
                  "contact_names_folder", "user_names_lookup"):
        assert index in details, details
    for bad in ("SCAN contact_names", "SCAN user_names", "TEMP B-TREE", "Seq Scan",
                "Bitmap", "Sort"):
        assert bad not in details, details


@pytest_twisted.ensureDeferred
async def test_lookup_tokens_follow_moves_and_folder_deletes(store: SqlStore, user: User
                                                             ) -> None:
    f = await folder_ids(store, user)
    (ann,) = await add(store, user, f["Contacts"], contact("Ann", "ann@x.org"))
    friends = await store.create_folder(user, "0", "Friends", 14)
    moved = await store.move_item(user, ann, friends.server_id)
    assert await by_name(store, user, "ann") == [moved]
    await store.delete_folder(user, friends.server_id)
    assert await by_name(store, user, "ann") == []
    assert await store.find_contacts_by_emails(user, ["ann@x.org"], 5) == {}


async def every(store: Any, user: User, prefix: str, limit: int = 50,
                folder_id: str | None = None) -> list[str]:
    """The server ids Find gets: every contact, by name or address (schema 14)."""
    return [i.server_id for i in await store.find_contacts_by_name(
        user, prefix, limit, recipients=False, folder_id=folder_id)]


@pytest_twisted.ensureDeferred
async def test_find_contacts_by_name_every_contact(store: SqlStore, user: User) -> None:
    """Find (issue 14 point 5) looks up every contact — one with a phone number only
    too — by its name tokens and by the beginning of its addresses; the recipient
    lookup (ResolveRecipients, the default) still gives only contacts with an
    address, by name only.  Every write keeps both true."""
    f = await folder_ids(store, user)
    phone, ada = await add(
        store, user, f["Contacts"],
        named("Mario", "Rossi", CompanyName="Idraulica", NickName="Supermario",
              MobilePhoneNumber="+39 333 1"),
        named("Ada", "Lovelace", "countess@example.org"))
    for query in ("mario", "rossi", "rossi mario", "idra", "superm"):
        assert await every(store, user, query) == [phone], query
        assert await by_name(store, user, query) == [], query
    assert await every(store, user, "COUNTESS@ex") == [ada]
    assert await by_name(store, user, "countess") == []       # addresses: whole, elsewhere
    assert await every(store, user, "lovelace") == [ada] == await by_name(store, user, "love")
    assert sorted(await every(store, user, "")) == [] and await every(store, user, "m", 0) == []
    # the plumber gets an address: now a recipient; Ada loses hers: only Find has her
    await store.apply(user, f["Contacts"], [
        Op("change", server_id=phone, data=named("Mario", "Rossi", "mario@idra.example")),
        Op("change", server_id=ada, data=named("Ada", "Lovelace"))])
    assert await by_name(store, user, "mario") == [phone]
    assert await every(store, user, "mario@") == [phone]
    assert await by_name(store, user, "ada") == [] and await every(store, user, "ada") == [ada]
    assert await every(store, user, "countess") == []
    other = await store.add_user("zed", None, None, False)
    assert await every(store, other, "ada") == []
    await store.apply(user, f["Contacts"], [Op("delete", server_id=ada)])
    assert await every(store, user, "ada") == []


@pytest_twisted.ensureDeferred
async def test_find_contacts_by_name_in_one_folder(store: SqlStore, user: User) -> None:
    """Find with a CollectionId (MS-ASCMD 2.2.3.30.5) walks that folder's tokens
    only: its matches whatever the other folders hold before them in token order;
    moves and folder deletes follow.  A folder id that is none finds nothing."""
    f = await folder_ids(store, user)
    await add(store, user, f["Contacts"], *[named(f"Aa{n:02d}", "Smith") for n in range(30)])
    friends = await store.create_folder(user, "0", "Friends", 14)
    (zed,) = await add(store, user, friends.server_id, named("Zed", "Smith"))
    assert await every(store, user, "smith", 5, friends.server_id) == [zed]
    assert len(await every(store, user, "smith", 100, f["Contacts"])) == 30
    assert zed not in await every(store, user, "smith", 100, f["Contacts"])
    assert await every(store, user, "smith", 5, "nonsense") == []
    assert await every(store, user, "smith", 5, "999999") == []
    (aa,) = await every(store, user, "aa07")
    moved = await store.move_item(user, aa, friends.server_id)
    assert sorted(await every(store, user, "smith", 5, friends.server_id)) == sorted(
        [zed, moved])
    assert await every(store, user, "aa07", 5, f["Contacts"]) == []
    other = await store.add_user("zed", None, None, False)
    assert await every(store, other, "smith", 5, friends.server_id) == []
    await store.delete_folder(user, friends.server_id)
    assert await every(store, user, "zed") == []


@pytest_twisted.ensureDeferred
async def test_migration_14_indexes_every_contact(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upgrading to schema 14 (issue 14 point 5): the contacts of an older database —
    name tokens only for those with an address, no folder — are indexed again in the
    background, in batches, so that Find gets every contact, in its folder, and the
    recipient lookup still only those with an address."""
    import backends.sql.store as store_module

    old = SqlStore(_reactor(), db_url)
    await old.open(target_version=8)
    try:
        u = await old.add_user("olga", None, None, True)
        ((fid,),) = await old.raw_query(
            "SELECT id FROM folders WHERE user_id = ? AND type = 9", (u.id,))
        rows = [named("Mail", f"Person{n}", f"p{n}@example.org") for n in range(4)]
        rows += [named("Phone", f"Only{n}", MobilePhoneNumber=f"+39 {n}") for n in range(3)]
        for n, data in enumerate(rows):
            await old.raw_query(
                "INSERT INTO items (user_id, folder_id, cls, data, modseq, created_modseq)"
                " VALUES (?, ?, 'Contacts', ?, ?, ?)", (u.id, fid, json.dumps(data),
                                                        n + 1, n + 1))
        # as version 5-13 left them: the name tokens of contacts with an address
        for iid, data in await old.raw_query(
                "SELECT id, data FROM items WHERE cls = 'Contacts'"):
            values = json.loads(data)
            if values.get("Email1Address"):
                for tok in contact_tokens(values):
                    await old.raw_query("INSERT INTO contact_names (item_id, user_id,"
                                        " token) VALUES (?, ?, ?)", (iid, u.id, tok))
        await old.raw_query("UPDATE lookup_backfill SET next_id = last_id")
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "CONTACTS_SPAN", 3)       # several batches
    new = SqlStore(_reactor(), db_url)
    await new.open()
    try:
        assert new.schema_version >= 14
        assert new.backfilling is not None
        await new.backfilling
        olga = await new.get_user("olga")
        assert olga is not None
        folder = str(fid)
        assert len(await new.find_contacts_by_name(olga, "mail", 10)) == 4
        assert await new.find_contacts_by_name(olga, "phone", 10) == []
        found = await new.find_contacts_by_name(olga, "phone", 10, recipients=False,
                                                folder_id=folder)
        assert sorted(i.data["LastName"] for i in found) == ["Only0", "Only1", "Only2"]
        assert len(await new.find_contacts_by_name(olga, "p", 10, recipients=False,
                                                   folder_id=folder)) == 7
        assert [i.data["LastName"] for i in await new.find_contacts_by_name(
            olga, "p2@", 10, recipients=False)] == ["Person2"]
        assert await new.raw_query("SELECT COUNT(*) FROM contact_names WHERE folder_id = 0"
                                   ) == [(0,)]
        assert await new.raw_query("SELECT what, next_id = last_id FROM lookup_backfill"
                                   " ORDER BY what") == [("contacts", 1), ("users", 1)]
    finally:
        await new.close()


@pytest_twisted.ensureDeferred
async def test_backfill_held_at_an_older_version_writes_its_columns(db_url: str) -> None:
    """A database opened at a version between 5 and 13 (an upgrade test, or a
    ``target_version``) is backfilled as that version's contact_names has it: the
    name tokens of the contacts with an address, no recipient or folder columns."""
    old = SqlStore(_reactor(), db_url)
    await old.open(target_version=3)
    try:
        await old.raw_query("INSERT INTO users (name, email) VALUES ('vera', 'v@x.org')")
        ((uid,),) = await old.raw_query("SELECT id FROM users WHERE name = 'vera'")
        await old.raw_query("INSERT INTO folders (user_id, name, type) VALUES (?, ?, 9)",
                            (uid, "Contacts"))
        ((fid,),) = await old.raw_query("SELECT id FROM folders WHERE user_id = ?", (uid,))
        for n, data in enumerate((named("Mail", "Person", "m@example.org"),
                                  named("Phone", "Only")), 1):
            await old.raw_query(
                "INSERT INTO items (user_id, folder_id, cls, data, modseq, created_modseq)"
                " VALUES (?, ?, 'Contacts', ?, ?, ?)", (uid, fid, json.dumps(data), n, n))
    finally:
        await old.close()
    mid = SqlStore(_reactor(), db_url)
    await mid.open(target_version=8)
    try:
        assert mid.backfilling is not None
        await mid.backfilling
        tokens = {t for (t,) in await mid.raw_query("SELECT token FROM contact_names")}
        assert tokens == contact_tokens(named("Mail", "Person"))
    finally:
        await mid.close()


@pytest_twisted.ensureDeferred
async def test_find_users(store: SqlStore, user: User) -> None:
    """The GAL (MS-ASCMD 2.2.1.16) and ResolveRecipients' Type 1: users by a prefix of
    login, address, display name or its words; by exact address; kept true by
    update_user (issue #10 point 2)."""
    bob = await store.add_user("Bob", None, "Bob@Example.com", True)
    await store.update_user("bob", display_name="Robert Brown")
    carol = await store.add_user("carol", None, None, True)

    async def names(query: str, limit: int = 10) -> list[str]:
        return [u.name for u in await store.find_users(query, limit)]

    assert await names("rob") == ["bob"]
    assert await names("BROWN") == ["bob"]
    assert await names("robert br") == ["bob"]
    assert await names("bob@ex") == ["bob"]
    assert await names("car") == ["carol"]
    assert sorted(await names("a")) == ["alice"]
    assert await names("example.com") == [] and await names("own") == []
    assert await names("") == [] and await names("b", 0) == []
    assert len(await names("", 10)) == 0
    found = await store.find_users_by_emails(
        ["bob@example.com", "ALICE@example.com", "carol", "rob@nowhere.org"], 5)
    assert {k: [u.name for u in v] for k, v in found.items()} == {
        "bob@example.com": ["bob"], "alice@example.com": ["alice"]}
    # a display-name word equal to another's address is not that address
    await store.update_user("carol", display_name="bob@example.com")
    found = await store.find_users_by_emails(["bob@example.com"], 5)
    assert [u.name for u in found["bob@example.com"]] == ["bob"]
    await store.update_user("bob", email="robert@example.org", display_name=None)
    assert await names("rob") == ["bob"] and await names("brown") == []
    assert await store.find_users_by_emails(["bob@example.com"], 5) == {}
    assert bob.id != carol.id and user.name == "alice"


@pytest_twisted.ensureDeferred
async def test_lookup_tokens_backfilled_for_an_older_database(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A database from before schema version 5 (items written with no tokens) gets
    its tokens at open, in batches in the background; lookups answer after that."""
    import backends.sql.store as store_module

    old = SqlStore(_reactor(), db_url)
    await old.open(target_version=3)
    try:
        await old.raw_query("INSERT INTO users (name, email, extra) VALUES (?, ?, ?)",
                            ("olga", "olga@example.org", '{"display_name": "Olga Old"}'))
        (uid,), = await old.raw_query("SELECT id FROM users WHERE name = 'olga'")
        await old.raw_query("INSERT INTO folders (user_id, name, type) VALUES (?, ?, ?)",
                            (uid, "Contacts", 9))
        (fid,), = await old.raw_query("SELECT id FROM folders WHERE user_id = ?", (uid,))
        for n in range(7):
            data = json.dumps(named(f"First{n}", f"Last{n}", f"c{n}@example.org"))
            await old.raw_query(
                "INSERT INTO items (user_id, folder_id, cls, data, modseq, created_modseq)"
                " VALUES (?, ?, 'Contacts', ?, ?, ?)", (uid, fid, data, n + 1, n + 1))
    finally:
        await old.close()
    monkeypatch.setattr(store_module, "BACKFILL_SPAN", 3)       # several batches
    monkeypatch.setattr(store_module, "CONTACTS_SPAN", 3)
    new = SqlStore(_reactor(), db_url)
    await new.open()
    try:
        assert new.backfilling is not None
        await new.backfilling
        olga = await new.get_user("olga")
        assert [u.name for u in await new.find_users("old", 5)] == ["olga"]
        assert sorted(i.data["FirstName"] for i in await new.find_contacts_by_name(
            olga, "first", 10)) == [f"First{n}" for n in range(7)]
        assert [i.data["FirstName"] for i in await new.find_contacts_by_name(
            olga, "last6", 10)] == ["First6"]
        assert await new.raw_query("SELECT what, next_id = last_id FROM lookup_backfill"
                                   " ORDER BY what") == [("contacts", 1), ("users", 1)]
    finally:
        await new.close()
    again = SqlStore(_reactor(), db_url)
    await again.open()
    try:
        assert again.backfilling is None                        # nothing left to do
    finally:
        await again.close()


# -- move -------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_move_item(store: SqlStore, user: User) -> None:
    f = await folder_ids(store, user)
    a, b = await add(store, user, f["Contacts"], contact("a"), contact("b"))
    dst = await store.create_folder(user, "0", "Dst", 14)
    src_cursor = (await store.changes_since(user, f["Contacts"], 0, 100)).high
    new = await store.move_item(user, a, dst.server_id)
    assert new != a and new.startswith(dst.server_id + ":")
    assert await store.get_items(user, [a]) == []
    (moved,) = await store.get_items(user, [new])
    assert moved.data == contact("a") and moved.folder_id == dst.server_id
    src_batch = await store.changes_since(user, f["Contacts"], src_cursor, 100)
    assert [(c.server_id, c.deleted) for c in src_batch.changes] == [(a, True)]
    dst_batch = await store.changes_since(user, dst.server_id, 0, 100)
    assert [(c.server_id, c.deleted) for c in dst_batch.changes] == [(new, False)]
    assert dst_batch.changes[0].modseq > src_batch.changes[0].modseq > src_cursor
    assert dst_batch.changes[0].created_modseq == dst_batch.changes[0].modseq
    # and back again: yet another server id, never a reused one
    back = await store.move_item(user, new, f["Contacts"])
    assert back not in (a, new)
    assert await store.move_item(user, back, f["Contacts"]) == back    # same folder
    with pytest.raises(KeyError, match="src"):
        await store.move_item(user, a, dst.server_id)
    with pytest.raises(KeyError, match="src"):
        await store.move_item(user, "nonsense", dst.server_id)
    with pytest.raises(KeyError, match="dst"):
        await store.move_item(user, b, "999999")
    with pytest.raises(ValueError, match="class"):
        await store.move_item(user, b, f["Calendar"])
    other = await store.add_user("o", None, None, False)
    with pytest.raises(KeyError, match="src"):
        await store.move_item(other, b, (await folder_ids(store, other))["Contacts"])
    with pytest.raises(KeyError, match="dst"):
        await store.move_item(user, b, (await folder_ids(store, other))["Contacts"])


# -- devices and state ------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_devices(store: SqlStore, user: User) -> None:
    assert await store.get_device(user, "DEV1") is None
    dev = await store.save_device(user, "DEV1", device_type="iPhone", user_agent="iOS/17",
                                  info={"Model": "iPhone15"})
    assert dev["device_id"] == "DEV1" and dev["device_type"] == "iPhone"
    assert dev["wipe"] == "none" and dev["blocked"] is False and dev["policy_key"] is None
    assert dev["info"] == {"Model": "iPhone15"}
    assert dev["first_seen"] is not None and dev["last_seen"] is not None
    dev2 = await store.save_device(user, "DEV1", policy_key=3_000_000_000, wipe="pending",
                                   blocked=True, last_sync=123.5)
    assert dev2["policy_key"] == 3_000_000_000 and dev2["wipe"] == "pending"
    assert dev2["blocked"] is True and dev2["last_sync"] == 123.5
    assert dev2["device_type"] == "iPhone" and dev2["first_seen"] == dev["first_seen"]
    assert await store.get_device(user, "DEV1") == dev2
    with pytest.raises(ValueError):
        await store.save_device(user, "DEV1", colour="red")
    with pytest.raises(ValueError):
        await store.save_device(user, "DEV1", wipe="maybe")

    other = await store.add_user("bob", None, None, False)
    await store.save_device(other, "B1", device_type="Android")
    assert [d["device_id"] for d in await store.list_devices(user)] == ["DEV1"]
    everyone = await store.list_devices(None)
    assert [(d["user"], d["device_id"]) for d in everyone] == [
        ("alice", "DEV1"), ("bob", "B1")]

    await store.save_state(user, StateWrite("DEV1", "folders", {"key": 1}))
    await store.save_state(other, StateWrite("B1", "folders", {"key": 9}))
    await store.delete_device(user, "DEV1")
    assert await store.get_device(user, "DEV1") is None
    assert await store.get_state(user, "DEV1", "folders") is None
    assert await store.get_state(other, "B1", "folders") == {"key": 9}
    assert [d["device_id"] for d in await store.list_devices(None)] == ["B1"]


@pytest_twisted.ensureDeferred
async def test_device_access(store: Any, user: User) -> None:
    """Issue #14 point 3: a device's own access decision (which keeps ``blocked`` true
    for block and quarantine: retention never forgets it) and the device access rules,
    a user's and everyone's, read with each request (``read_request``'s ``rules``)."""
    from easync.requestread import RequestRead

    state = getattr(store, "sql", store)            # the CRM store: state in SQL
    other = await state.add_user("bob", None, None, False)
    assert await state.set_device_access(user, "NOPE", "block") is None
    await state.save_device(user, "DEV1", device_type="iPhone", protocol_version="16.1")
    dev = await state.get_device(user, "DEV1")
    assert dev["access"] is None and dev["protocol_version"] == "16.1"
    dev = await state.set_device_access(user, "DEV1", "quarantine")
    assert dev["access"] == "quarantine" and dev["blocked"] is True
    dev = await state.set_device_access(user, "DEV1", "allow")
    assert dev["access"] == "allow" and dev["blocked"] is False
    with pytest.raises(ValueError):
        await state.set_device_access(user, "DEV1", "maybe")
    assert (await state.get_device(user, "DEV1"))["access"] == "allow"
    await state.set_device_access(user, "DEV1", None)
    assert (await state.get_device(user, "DEV1"))["access"] is None

    everyone = await state.add_device_rule(None, "device_type", "iPad", "quarantine", "root")
    mine = await state.add_device_rule(user, "user_agent", "Apple-*", "block", "root")
    theirs = await state.add_device_rule(other, "any", "*", "allow")
    assert everyone.id < mine.id < theirs.id
    assert (mine.user, mine.user_id, mine.created_by) == ("alice", user.id, "root")
    with pytest.raises(ValueError):
        await state.add_device_rule(None, "colour", "red", "block")
    with pytest.raises(ValueError):
        await state.add_device_rule(None, "device_type", "iPad", "explode")
    with pytest.raises(ValueError):
        await state.add_device_rule(None, "device_type", "", "block")
    assert [r.id for r in await state.list_device_rules(None)] == [
        everyone.id, mine.id, theirs.id]
    assert [r.id for r in await state.list_device_rules(user)] == [everyone.id, mine.id]
    assert [r.id for r in await state.list_device_rules(other)] == [everyone.id, theirs.id]
    snap = await state.read_request(RequestRead("alice", "DEV1"))
    assert [(r.id, r.kind, r.pattern, r.action, r.user) for r in snap.rules] == [
        (everyone.id, "device_type", "iPad", "quarantine", None),
        (mine.id, "user_agent", "Apple-*", "block", "alice")]
    removed = await state.remove_device_rule(mine.id)
    assert removed is not None and removed.id == mine.id
    assert await state.remove_device_rule(mine.id) is None
    assert [r.id for r in await state.list_device_rules(user)] == [everyone.id]


@pytest_twisted.ensureDeferred
async def test_states(store: SqlStore, user: User) -> None:
    assert await store.get_state(user, "D", "sync:1") is None
    await store.save_state(user, StateWrite("D", "sync:1", {"key": 1, "ids": ["1:2"]}))
    await store.save_state(user, StateWrite("D", "sync:2", {"key": 7}))
    await store.save_state(user, StateWrite("D", "sync:1", {"key": 2}))
    assert await store.get_state(user, "D", "sync:1") == {"key": 2}
    assert await store.get_state(user, "D", "sync:2") == {"key": 7}
    assert await store.get_state(user, "E", "sync:1") is None
    await store.delete_state(user, "D", "sync:2")
    assert await store.get_state(user, "D", "sync:2") is None


@pytest_twisted.ensureDeferred
async def test_read_request(store: Any, user: User) -> None:
    """``read_request`` (issue #12 point 4) gives in one transaction what get_user,
    get_device, get_state and list_folders give one by one."""
    from easync.requestread import RequestRead

    state = getattr(store, "sql", store)            # the CRM store: state in SQL
    read = RequestRead("ALICE", "DEV1", ("sync:1", "sync:2", "synccache"), folders=True)
    snap = await state.read_request(read)
    assert snap.user == await state.get_user("alice")
    assert snap.device is None
    assert snap.states == {"sync:1": None, "sync:2": None, "synccache": None}
    assert snap.folders == await state.list_folders(user)
    assert snap.familiar is None and snap.counters == {}
    await state.save_device(user, "DEV1", device_type="iPhone", policy_key=7, wipe="pending")
    await state.save_state(user, StateWrite("DEV1", "sync:1", {"key": 3, "own": {"a": 1}}))
    await state.save_state(user, StateWrite("DEV2", "sync:2", {"key": 4}))
    snap = await state.read_request(RequestRead("alice", "DEV1", ("sync:1", "sync:2")))
    assert snap.device == await state.get_device(user, "DEV1")
    assert snap.device["wipe"] == "pending" and snap.device["policy_key"] == 7
    assert snap.states == {"sync:1": {"key": 3, "own": {"a": 1}}, "sync:2": None}
    assert snap.folders is None
    gone = await state.read_request(RequestRead("nobody", "DEV1", ("sync:1",), folders=True))
    assert gone.user is None and gone.device is None and gone.folders is None


@pytest_twisted.ensureDeferred
async def test_read_request_follows_the_ping_cache(store: Any, user: User) -> None:
    """``RequestRead.follow`` (issue #12, an empty Ping: MS-ASCMD 2.2.1.13 reuses the
    cached Folders): the sync states of the folders the named state lists are read
    too, the first ``follow_max`` of them; a missing or odd cache reads nothing more."""
    from easync.requestread import RequestRead

    state = getattr(store, "sql", store)            # the CRM store: state in SQL
    ping = RequestRead("alice", "DEV1", ("ping", "folders"), follow="ping", follow_max=2)
    snap = await state.read_request(ping)
    assert snap.states == {"ping": None, "folders": None}
    await state.save_state(user, StateWrite("DEV1", "ping",
                                            {"heartbeat": 480, "folders": ["1", "2", "3"]}))
    await state.save_state(user, StateWrite("DEV1", "sync:1", {"cursor": 4}))
    await state.save_state(user, StateWrite("DEV2", "sync:2", {"cursor": 5}))
    await state.save_state(user, StateWrite("DEV1", "sync:3", {"cursor": 6}))
    snap = await state.read_request(ping)
    assert snap.states == {"ping": {"heartbeat": 480, "folders": ["1", "2", "3"]},
                           "folders": None, "sync:1": {"cursor": 4}, "sync:2": None}
    # a state read by name is not read again; one the cache does not name is not read
    snap = await state.read_request(RequestRead("alice", "DEV1", ("ping", "sync:1"),
                                                follow="ping", follow_max=5))
    assert snap.states == {"ping": {"heartbeat": 480, "folders": ["1", "2", "3"]},
                           "sync:1": {"cursor": 4}, "sync:2": None, "sync:3": {"cursor": 6}}
    await state.save_state(user, StateWrite("DEV1", "ping", {"heartbeat": 480}))
    snap = await state.read_request(ping)
    assert snap.states == {"ping": {"heartbeat": 480}, "folders": None}


@pytest_twisted.ensureDeferred
async def test_find_by_uid(store: SqlStore, user: User) -> None:
    f = (await folder_ids(store, user))["Calendar"]
    (sid,) = await add(store, user, f, event("e", UID="abc-123"))
    assert [i.server_id for i in await store.find_by_uid(user, "abc-123")] == [sid]
    await store.apply(user, f, [Op("delete", server_id=sid)])
    assert await store.find_by_uid(user, "abc-123") == []


# -- migrations -------------------------------------------------------------------------

def test_split_statements_and_variants(tmp_path: Path) -> None:
    assert split_statements("-- a; comment;\nCREATE TABLE a (x INT);\n\nSELECT 1;") == [
        "CREATE TABLE a (x INT)", "SELECT 1"]
    (tmp_path / "001_a.sql").write_text("SELECT @SERIAL_PK@;")
    (tmp_path / "002_b.sql").write_text("SELECT 'generic';")
    (tmp_path / "002_b.sql.postgres").write_text("SELECT 'pg';")
    (tmp_path / "README").write_text("ignored")
    lite = load_migrations(SqliteEngine(":memory:"), tmp_path)
    pg = load_migrations(PostgresEngine("postgresql://x/y"), tmp_path)
    assert [(m.version, m.sql) for m in lite] == [
        (1, "SELECT INTEGER PRIMARY KEY AUTOINCREMENT;"), (2, "SELECT 'generic';")]
    assert [(m.version, m.sql) for m in pg] == [
        (1, "SELECT BIGSERIAL PRIMARY KEY;"), (2, "SELECT 'pg';")]
    shipped = load_migrations(SqliteEngine(":memory:"))
    assert shipped and shipped[0].version == 1 and "CREATE TABLE items" in shipped[0].sql


@pytest_twisted.ensureDeferred
async def test_migrations_fresh_and_rerun(db_url: str) -> None:
    shipped = sorted({(int(p.name[:3]), p.name[4:].split(".")[0])   # dialect variants once
                      for p in SCHEMA_DIR.iterdir() if p.name[:3].isdigit()})
    s = SqlStore(_reactor(), db_url)
    await s.open()
    try:
        assert s.schema_version == shipped[-1][0]
        rows = await s.raw_query("SELECT version, name FROM schema_version")
        assert sorted(rows) == shipped
        await s.add_user("kept", None, None, False)
    finally:
        await s.close()
    s = SqlStore(_reactor(), db_url)
    await s.open()          # idempotent: nothing re-applied, data kept
    try:
        assert s.schema_version == shipped[-1][0]
        assert len(await s.raw_query("SELECT version FROM schema_version")) == len(shipped)
        assert await s.get_user("kept") is not None
    finally:
        await s.close()


@pytest_twisted.ensureDeferred
async def test_migration_upgrades_old_database(db_url: str, tmp_path: Path) -> None:
    schema = tmp_path / "schema"
    schema.mkdir()
    for p in SCHEMA_DIR.iterdir():
        if p.name[:1].isdigit():
            shutil.copy(p, schema / p.name)
    base = max(int(p.name[:3]) for p in SCHEMA_DIR.iterdir() if p.name[:3].isdigit())
    (schema / f"{base + 1:03d}_nicknames.sql").write_text(
        "-- a test upgrade; with a comment\n"
        "ALTER TABLE users ADD COLUMN nickname TEXT;\n"
        "UPDATE users SET nickname = name || '!';\n"
        "CREATE TABLE extra_thing (id @SERIAL_PK@, note TEXT);\n")
    old = SqlStore(_reactor(), db_url, schema_dir=schema)
    await old.open(target_version=base)    # a database as an older easync left it
    try:
        assert old.schema_version == base
        u = await old.add_user("Old", None, None, False)
        (sid,) = await add(old, u, (await folder_ids(old, u))["Contacts"], contact("x"))
    finally:
        await old.close()
    new = SqlStore(_reactor(), db_url, schema_dir=schema)
    await new.open()
    try:
        assert new.schema_version == base + 1
        assert await new.raw_query("SELECT nickname FROM users") == [("old!",)]
        assert await new.raw_query("SELECT COUNT(*) FROM extra_thing") == [(0,)]
        shipped = sorted({int(p.name[:3]) for p in SCHEMA_DIR.iterdir() if p.name[:3].isdigit()})
        assert [v for (v,) in await new.raw_query(
            "SELECT version FROM schema_version ORDER BY version")] == [*shipped, base + 1]
        assert [i.server_id for i in await new.get_items(u, [sid])] == [sid]
    finally:
        await new.close()
    # a failing migration leaves the database at the old version (one transaction)
    (schema / f"{base + 2:03d}_broken.sql").write_text(
        "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n")
    broken = SqlStore(_reactor(), db_url, schema_dir=schema)
    with pytest.raises(Exception):  # noqa: B017 - the dialects raise different errors
        await broken.open()
    (schema / f"{base + 2:03d}_broken.sql").unlink()
    again = SqlStore(_reactor(), db_url, schema_dir=schema)
    await again.open()
    try:
        assert again.schema_version == base + 1
        if again.engine.name == "sqlite":
            tables = await again.raw_query(
                "SELECT name FROM sqlite_master WHERE name = 'half_done'")
        else:
            tables = await again.raw_query("SELECT to_regclass('half_done')::text"
                                           " WHERE to_regclass('half_done') IS NOT NULL")
        assert tables == []
    finally:
        await again.close()
    # a database newer than the code is refused
    older_code = tmp_path / "older"
    older_code.mkdir()
    shutil.copy(schema / "001_initial.sql", older_code / "001_initial.sql")
    refused = SqlStore(_reactor(), db_url, schema_dir=older_code)
    with pytest.raises(RuntimeError, match="newer"):
        await refused.open()


# The CRM mirror's tables as the CRM backend created them itself before they joined the
# numbered migrations (schema version 6): a database it made must open and keep its rows.
OLD_CRM_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS crm_items ("
     " item_id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, module TEXT NOT NULL,"
     " crm_id TEXT NOT NULL, mtime TEXT NOT NULL DEFAULT '', snapshot TEXT NOT NULL,"
     " deleted INTEGER NOT NULL DEFAULT 0)"),
    "CREATE INDEX IF NOT EXISTS crm_items_crm ON crm_items (crm_id)",
    "CREATE INDEX IF NOT EXISTS crm_items_user ON crm_items (user_id, module, deleted)",
    ("CREATE TABLE IF NOT EXISTS crm_users ("
     " user_id BIGINT PRIMARY KEY, crm_user_id TEXT, loaded INTEGER NOT NULL DEFAULT 0)"),
    "CREATE TABLE IF NOT EXISTS crm_state (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS crm_client_adds ("
     " user_id BIGINT NOT NULL, device_id TEXT NOT NULL, folder_id TEXT NOT NULL,"
     " client_id TEXT NOT NULL, item_id BIGINT NOT NULL, created REAL NOT NULL,"
     " PRIMARY KEY (user_id, device_id, folder_id, client_id))"),
    ("CREATE TABLE IF NOT EXISTS crm_event_links ("
     " item_id BIGINT NOT NULL, contact_id TEXT NOT NULL, email TEXT NOT NULL DEFAULT '',"
     " PRIMARY KEY (item_id, contact_id))"),
    ("CREATE TABLE IF NOT EXISTS crm_journal ("
     " jid TEXT PRIMARY KEY, user_id BIGINT NOT NULL, device_id TEXT NOT NULL,"
     " folder_id TEXT NOT NULL, client_id TEXT NOT NULL, module TEXT NOT NULL,"
     " owner TEXT NOT NULL, element TEXT NOT NULL, data TEXT NOT NULL,"
     " since TEXT NOT NULL, node TEXT NOT NULL, created REAL NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS crm_journal_device ON crm_journal (user_id, device_id)",
)
CRM_TABLES = ("crm_client_adds", "crm_event_links", "crm_items", "crm_journal",
              "crm_shared", "crm_state", "crm_users")


async def _tables(s: SqlStore, prefix: str) -> list[str]:
    if s.engine.name == "sqlite":
        rows = await s.raw_query("SELECT name FROM sqlite_master WHERE type = 'table'")
    else:
        rows = await s.raw_query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return sorted(str(r[0]) for r in rows if str(r[0]).startswith(prefix))


@pytest_twisted.ensureDeferred
async def test_crm_tables_are_a_migration(db_url: str, tmp_path: Path) -> None:
    """The CRM mirror's tables come with schema version 6, in a fresh database and in
    one the CRM backend had already given them (created the old way, with rows):
    those tables and rows are kept, and the CRM store opens on it."""
    from backends.crm import mirror

    schema = tmp_path / "schema"
    schema.mkdir()
    for p in SCHEMA_DIR.iterdir():
        if p.name[:1].isdigit() and int(p.name[:3]) < 6:
            shutil.copy(p, schema / p.name)
    old = SqlStore(_reactor(), db_url, schema_dir=schema)
    await old.open()                    # an easync of schema 5 ...
    try:
        assert old.schema_version == 5 and await _tables(old, "crm_") == []
        for stmt in OLD_CRM_SCHEMA:     # ... whose CRM backend made its tables
            await old.raw_query(stmt)
        await old.raw_query("INSERT INTO crm_state (name, value) VALUES (?, ?)",
                            ("schema_version", "1"))
        await old.raw_query("INSERT INTO crm_state (name, value) VALUES (?, ?)",
                            ("cursor:Contacts", '"2024-01-01 00:00:00"'))
        await old.raw_query("INSERT INTO crm_items (item_id, user_id, module, crm_id, mtime,"
                            " snapshot) VALUES (?, ?, ?, ?, ?, ?)",
                            (7, 1, "Contacts", "12x34", "2024-01-01", '{"a":1}'))
        await old.raw_query("INSERT INTO crm_journal VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                            " ?, ?)", ("j1", 1, "dev", "3", "c1", "Contacts", "19x1", "{}",
                                       "{}", "2024", "node", 1.5))
    finally:
        await old.close()
    new = SqlStore(_reactor(), db_url)
    await new.open()
    try:
        assert new.schema_version >= 6
        assert await _tables(new, "crm_") == list(CRM_TABLES)
        assert sorted(await new.raw_query("SELECT name, value FROM crm_state")) == [
            ("cursor:Contacts", '"2024-01-01 00:00:00"'),
            ("schema_version", str(mirror.SCHEMA_VERSION))]
        assert await new.raw_query("SELECT item_id, crm_id, snapshot FROM crm_items") == [
            (7, "12x34", '{"a":1}')]
        assert await new.raw_query("SELECT jid, created FROM crm_journal") == [("j1", 1.5)]
        await new.db.run_interaction("check", lambda cur: mirror.check_schema(new, cur))
    finally:
        await new.close()
    fresh_url = db_url
    if db_url.startswith("sqlite"):
        fresh_url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    else:
        _reset_pg(db_url)
    fresh = SqlStore(_reactor(), fresh_url)
    await fresh.open()
    try:
        assert await _tables(fresh, "crm_") == list(CRM_TABLES)
        await fresh.db.run_interaction("check", lambda cur: mirror.check_schema(fresh, cur))
    finally:
        await fresh.close()


# -- held long polls (easync.push.HoldRecorder, easync-admin device list) ---------------------

@pytest_twisted.ensureDeferred
async def test_held_requests(store: SqlStore, user: User) -> None:
    bob = await store.add_user("Bob", None, None, True)
    await store.save_device(user, "A1")
    await store.record_holds("n1", [(user.id, "A1", "Ping", 100.0, 160.0),
                                    (bob.id, "B1", "Sync", 101.5, 9e9)], [])
    rows = await store.list_holds(None)
    assert [(r["user"], r["device_id"], r["node"], r["command"], r["started"], r["deadline"])
            for r in rows] == [("alice", "A1", "n1", "Ping", 100.0, 160.0),
                               ("bob", "B1", "n1", "Sync", 101.5, 9e9)]
    assert [r["device_id"] for r in await store.list_holds(bob)] == ["B1"]
    # the device moves to node n2; n1's late "ended" must not remove n2's row
    await store.record_holds("n2", [(user.id, "A1", "Ping", 200.0, 260.0)], [])
    await store.record_holds("n1", [], [(user.id, "A1", 100.0)])
    (row,) = await store.list_holds(user)
    assert (row["node"], row["started"]) == ("n2", 200.0)
    # an end with the wrong start time removes nothing; the right one does
    await store.record_holds("n2", [], [(user.id, "A1", 199.0)])
    assert len(await store.list_holds(user)) == 1
    await store.record_holds("n2", [], [(user.id, "A1", 200.0)])
    assert await store.list_holds(user) == []
    # a node starting again clears its rows, and expired rows of any node
    await store.record_holds("n3", [(user.id, "A1", "Ping", 1.0, 2.0)], [])
    await store.clear_holds("n1")
    assert [r["node"] for r in await store.list_holds(None)] == []
    await store.record_holds("n1", [(bob.id, "B1", "Ping", 1.0, 9e9)], [])
    await store.record_holds("n4", [(user.id, "A1", "Ping", 1.0, 9e9)], [])
    await store.clear_holds("n1")
    assert [r["node"] for r in await store.list_holds(None)] == ["n4"]
    # forgetting the device forgets its row
    await store.delete_device(user, "A1")
    assert await store.list_holds(None) == []



# -- retention: tombstones purged, idle devices forgotten (issue #13 point 6) -----------

def sync_state(cursor: int, own: dict[str, int] | None = None) -> dict[str, Any]:
    """A collection's sync state as the engine saves it (easync.syncengine)."""
    return {"epoch": "e", "key": 2, "cursor": cursor, "own": own or {}, "cls": "Contacts"}


async def tombstones(store: Any, user: User, folder: str) -> list[tuple[str, int]]:
    """(server id, modseq) of the folder's tombstones still in the feed."""
    changes, _high, _calls = await drain(store, user, folder)
    return [(c.server_id, c.modseq) for c in changes if c.deleted]


async def purged_mark(store: Any, user: User, folder: str) -> int:
    return next(f.purged for f in await store.list_folders(user) if f.server_id == folder)


async def delete(store: Any, user: User, folder: str, *sids: str) -> None:
    results = await store.apply(user, folder, [Op("delete", server_id=s) for s in sids])
    assert all(r.ok for r in results), results


@pytest_twisted.ensureDeferred
async def test_purge_synced_keeps_what_a_state_needs(store: Any, user: User,
                                                     backend: str) -> None:
    """A tombstone goes once every sync state of its folder has a cursor at or past
    it; the lowest cursor decides.  A state holding nothing yet (cursor 0, no writes
    of its own) needs none; one already behind the purged mark does not hold them."""
    sql = getattr(store, "sql", store)              # the CRM store: state in SQL
    fid = (await folder_ids(store, user))["Contacts"]
    a, b, c = await add(store, user, fid, contact("a"), contact("b"), contact("c"))
    await delete(store, user, fid, a)
    await delete(store, user, fid, b)
    (ta, ma), (tb, mb) = await tombstones(store, user, fid)
    assert (ta, tb) == (a, b)
    name = f"sync:{fid}"
    await sql.save_state(user, StateWrite("PHONE", name, sync_state(ma)))   # saw a's delete
    await sql.save_state(user, StateWrite("TABLET", name, sync_state(mb)))
    await sql.save_state(user, StateWrite("NEW", name, sync_state(0)))      # holds nothing
    await sql.save_state(user, StateWrite("PHONE", "sync:other", sync_state(0, {"x": 1})))

    step = await sql.purge_synced(0, 100)
    assert step.done == 1 and not step.busy
    assert await tombstones(store, user, fid) == [(b, mb)]
    assert await purged_mark(store, user, fid) == ma
    # its own writes count: a state at cursor 0 that made an item at modseq m needs
    # the tombstones above m (of its own items) only
    await sql.save_state(user, StateWrite("NEW", name, sync_state(0, {c: mb + 1})))
    assert (await sql.purge_synced(0, 100)).done == 0     # PHONE (at ma) needs b's
    await sql.save_state(user, StateWrite("NEW", name, sync_state(0, {c: ma})))
    await sql.save_state(user, StateWrite("PHONE", name, sync_state(mb)))
    assert (await sql.purge_synced(0, 100)).done == 0     # NEW needs those above ma
    await sql.save_state(user, StateWrite("NEW", name, sync_state(mb)))
    assert (await sql.purge_synced(0, 100)).done == 1
    assert await tombstones(store, user, fid) == []
    assert await purged_mark(store, user, fid) == mb
    # live items are never purged
    assert [i.server_id for i in await store.get_items(user, [c])] == [c]
    if backend == "crm":
        rows = await sql.raw_query("SELECT item_id FROM crm_items ORDER BY item_id")
        assert [f"{fid}:{r[0]}" for r in rows] == [c]    # the CRM ties of a, b went too


@pytest_twisted.ensureDeferred
async def test_purge_older_raises_the_purged_mark(store: Any, user: User) -> None:
    """Tombstones older than the age go whoever needs them; the folder's purged mark
    tells the engine which states missed one (they get Status 3,
    ``easync.syncengine.expired``); such a state no longer holds back the purge of
    later tombstones."""
    import time

    sql = getattr(store, "sql", store)
    fid = (await folder_ids(store, user))["Contacts"]
    a, b = await add(store, user, fid, contact("a"), contact("b"))
    await delete(store, user, fid, a)
    ((_ta, ma),) = await tombstones(store, user, fid)
    await sql.save_state(user, StateWrite("IDLE", f"sync:{fid}", sync_state(1)))
    assert (await sql.purge_synced(0, 100)).done == 0      # IDLE still needs it
    assert (await sql.purge_older(time.time() - 3600, 100)).done == 0   # younger
    step = await sql.purge_older(time.time() + 1, 100)
    assert step.done == 1 and not step.more
    assert await tombstones(store, user, fid) == []
    assert await purged_mark(store, user, fid) == ma
    # IDLE (cursor 1 < the mark) is expired: it does not keep b's tombstone
    await delete(store, user, fid, b)
    assert (await sql.purge_synced(0, 100)).done == 1
    assert await tombstones(store, user, fid) == []


@pytest_twisted.ensureDeferred
async def test_purge_batches_are_bounded(store: Any, user: User) -> None:
    """A batch removes at most ``limit`` rows and says whether more are left."""
    import time

    sql = getattr(store, "sql", store)
    fid = (await folder_ids(store, user))["Contacts"]
    sids = await add(store, user, fid, *(contact(f"n{i}") for i in range(5)))
    await delete(store, user, fid, *sids)
    assert len(await tombstones(store, user, fid)) == 5
    step = await sql.purge_synced(0, 2)
    assert (step.done, step.more) == (2, True)
    step = await sql.purge_synced(step.after, 2)
    assert (step.done, step.more) == (2, True)
    step = await sql.purge_older(time.time() + 1, 2)
    assert (step.done, step.more) == (1, False)
    assert await tombstones(store, user, fid) == []


@pytest_twisted.ensureDeferred
async def test_forget_devices(store: Any, user: User, backend: str) -> None:
    """Devices unseen since the cutoff go with their states and held-request rows; a
    blocked one, one with a wipe pending and a recent one stay."""
    sql = getattr(store, "sql", store)
    for dev, seen, extra in (("OLD", 100.0, {}), ("OLD2", 150.0, {}),
                             ("BLOCKED", 100.0, {"blocked": True}),
                             ("WIPING", 100.0, {"wipe": "pending"}), ("NEW", 900.0, {})):
        await sql.save_device(user, dev, device_type="iPhone", last_seen=seen, **extra)
        await sql.save_state(user, StateWrite(dev, "sync:1", sync_state(1)))
    await sql.record_holds("node", [(user.id, "OLD", "Ping", 1.0, 9e9)], [])
    step = await sql.forget_devices(500.0, 1)
    assert (step.done, step.more) == (1, True)
    assert (await sql.forget_devices(500.0, 10)).done == 1
    assert sorted(d["device_id"] for d in await sql.list_devices(user)) == [
        "BLOCKED", "NEW", "WIPING"]
    for dev in ("OLD", "OLD2"):
        assert await sql.get_state(user, dev, "sync:1") is None
    assert await sql.get_state(user, "NEW", "sync:1") is not None
    assert await sql.list_holds(user) == []
    # a forgotten device is a new one when it comes back
    dev = await sql.save_device(user, "OLD", device_type="iPhone")
    assert dev["policy_key"] is None and dev["first_seen"] > 500


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite: its write lock
@pytest_twisted.ensureDeferred
async def test_retention_lock(db_url: str) -> None:
    """PostgreSQL: a batch finding another process's batch under way answers busy and
    does nothing; two stores purging at once remove each tombstone once."""
    import time

    import psycopg

    from backends.sql.retention import RETENTION_LOCK

    s1, s2 = SqlStore(_reactor(), db_url), SqlStore(_reactor(), db_url)
    await s1.open()
    await s2.open()
    try:
        u = await s1.add_user("alice", None, None, True)
        fid = (await folder_ids(s1, u))["Contacts"]
        sids = await add(s1, u, fid, *(contact(f"n{i}") for i in range(40)))
        await delete(s1, u, fid, *sids)
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s, %s)", RETENTION_LOCK)
            step = await s1.purge_older(time.time() + 1, 100)
            assert step.busy and step.done == 0
            assert (await s2.purge_synced(0, 100)).busy
        total = 0
        for _ in range(100):
            results = await DeferredList([s.purge_older(time.time() + 1, 3)
                                          for s in (s1, s2, s1, s2)], consumeErrors=True)
            assert all(ok for ok, _ in results), results
            total += sum(r.done for _, r in results)
            if not any(r.busy or r.more for _, r in results):
                break
        assert total == 40          # each tombstone counted once, by one of them
        assert await tombstones(s1, u, fid) == []
    finally:
        await s1.close()
        await s2.close()


@pytest_twisted.ensureDeferred
async def test_migration_8_dates_tombstones_and_reads_cursors(db_url: str) -> None:
    """Upgrading to schema 8: existing tombstones are dated (kept a full max age from
    the upgrade) and collection states get their feed cursor from their JSON."""
    import time

    old = SqlStore(_reactor(), db_url)
    await old.open(target_version=7)
    u = await old.add_user("alice", None, None, True)
    ((fid,),) = await old.raw_query("SELECT id FROM folders WHERE user_id = ? AND type = 9",
                                    (u.id,))
    await old.raw_query("INSERT INTO items (user_id, folder_id, cls, data, modseq,"
                        " created_modseq, deleted) VALUES (?, ?, 'Contacts', NULL, 1, 1, 1)",
                        (u.id, fid))
    a = f"{fid}:1"
    for dev, st in (("D1", sync_state(5)), ("D2", sync_state(0)),
                    ("D3", sync_state(0, {a: 9}))):
        await old.raw_query("INSERT INTO sync_states (user_id, device_id, name, state)"
                            " VALUES (?, ?, ?, ?)", (u.id, dev, f"sync:{fid}", json.dumps(st)))
    await old.raw_query("INSERT INTO sync_states (user_id, device_id, name, state)"
                        " VALUES (?, 'D1', 'folders', '{\"cursor\": 3}')", (u.id,))
    await old.close()
    new = SqlStore(_reactor(), db_url)
    before = time.time()
    await new.open()
    try:
        assert new.schema_version >= 8
        ((at,),) = await new.raw_query("SELECT deleted_at FROM items WHERE deleted = 1")
        assert before - 2 <= float(at) <= time.time() + 2
        rows = await new.raw_query("SELECT device_id, name, feed_cursor FROM sync_states"
                                   " ORDER BY device_id, name")
        assert [(d, n[:5], c) for d, n, c in rows] == [
            ("D1", "folde", None), ("D1", "sync:", 5), ("D2", "sync:", None),
            ("D3", "sync:", 0)]
    finally:
        await new.close()


@pytest_twisted.ensureDeferred
async def test_a_state_write_replacing_a_state_replaced_meanwhile_is_refused(
        store: Any, user: User) -> None:
    """Two requests of one device read the same sync state (a resend arriving with the
    first, MS-ASCMD 3.1.5.3); the first saves key 3.  The second's write names the
    state it replaces, key 2, which is no longer stored: refused with StateConflict,
    and its item writes with it (no second copy of the Add)."""
    from easync.errors import StateConflict

    sql = getattr(store, "sql", store)
    fid = (await folder_ids(store, user))["Contacts"]
    name = f"sync:{fid}"
    await sql.save_state(user, StateWrite("D", name, sync_state(0)))        # key 2
    first = {**sync_state(0), "key": 3}
    await store.apply(user, fid, [Op("add", data=contact("a"), ref="1")],
                      StateWrite("D", name, first, replaces=("e", 2)))
    with pytest.raises(StateConflict):
        await store.apply(user, fid, [Op("add", data=contact("a"), ref="1")],
                          StateWrite("D", name, {**first, "cursor": 9}, replaces=("e", 2)))
    with pytest.raises(StateConflict):
        await sql.save_state(user, StateWrite("D", name, {**first, "cursor": 9},
                                              replaces=("e", 2)))
    with pytest.raises(StateConflict):          # (a state that is not there at all)
        await sql.save_state(user, StateWrite("N", name, first, replaces=("e", 2)))
    changes, _high, _calls = await drain(store, user, fid)
    assert len([c for c in changes if not c.deleted]) == 1
    assert (await sql.get_state(user, "D", name)) == first
    assert await sql.get_state(user, "N", name) is None
    # naming the state stored: saved
    await sql.save_state(user, StateWrite("D", name, {**first, "key": 4}, replaces=("e", 3)))
    assert (await sql.get_state(user, "D", name))["key"] == 4


@pytest_twisted.ensureDeferred
async def test_a_state_write_behind_the_purged_mark_is_refused(store: Any, user: User) -> None:
    """A Sync that read the feed while a tombstone it needed was purged must not save
    a state past it (the device would keep an item deleted elsewhere): the write, and
    the device's item writes with it, are refused with StateExpired (→ Status 3)."""
    import time

    from easync.errors import StateExpired

    sql = getattr(store, "sql", store)
    fid = (await folder_ids(store, user))["Contacts"]
    name = f"sync:{fid}"
    (a,) = await add(store, user, fid, contact("a"))
    await delete(store, user, fid, a)
    ((_ta, ma),) = await tombstones(store, user, fid)
    assert (await sql.purge_older(time.time() + 1, 10)).done == 1      # mark: ma
    with pytest.raises(StateExpired):
        await sql.save_state(user, StateWrite("D", name, sync_state(ma + 5),
                                              feed_from=ma - 1))
    assert await sql.get_state(user, "D", name) is None
    with pytest.raises(StateExpired):
        await store.apply(user, fid, [Op("add", data=contact("b"), ref="1")],
                          StateWrite("D", name, sync_state(ma + 5), feed_from=ma - 1))
    assert await tombstones(store, user, fid) == []
    changes, _high, _calls = await drain(store, user, fid)
    assert changes == []                        # the Add went with the refused state
    # at or past the mark (or no check asked for): saved
    await sql.save_state(user, StateWrite("D", name, sync_state(ma + 5), feed_from=ma))
    await sql.save_state(user, StateWrite("E", name, sync_state(1)))
    assert (await sql.get_state(user, "D", name))["cursor"] == ma + 5
