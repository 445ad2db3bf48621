"""The sync engine alone: a typed ``CollectionRequest`` in, a typed ``CollectionResult``
out (``easync.synctypes``), no WBXML on either side.  Each test names the MS-ASCMD
section of the behaviour it pins.  Rendering (``easync.commands.sync``) is checked at
the end: the answer to a resent SyncKey is byte-identical, warm cache or cold.

The store under the engine is made by ``open_store`` (one line to change for another
implementation of the store interfaces, e.g. ``easync.testing.MemoryStore``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from easync.commands import sync
from easync.handler import EasRequest, EasServer
from easync.model import Folder, Op, User
from easync.notify import LocalNotifier
from easync.syncengine import SyncEngine, quirks_for
from easync.synctypes import (
    AddCommand,
    ChangeCommand,
    ClientCommand,
    ClientResponse,
    CollectionRequest,
    CollectionResult,
    DeleteCommand,
    FetchCommand,
    ServerChange,
)
from easync.wbxml import encode
from easync.wbxml.element import E, Element

ROOT = Path(__file__).resolve().parent.parent


async def open_store(tmp_path: Path) -> Any:
    """The store the engine runs on: ``easync.testing.MemoryStore``, which passes the same
    contract suite as the SQL and CRM stores (tests/test_store_contract.py)."""
    from easync.testing import MemoryStore

    store = MemoryStore()
    await store.open()
    return store


class Env:
    """A server on the store, one user, and a device that speaks in typed requests."""

    def __init__(self, server: EasServer, user: User, store: Any) -> None:
        self.server = server
        self.user = user
        self.store = store
        self.engine = SyncEngine(server)

    async def folder(self, name: str) -> Folder:
        for f in await self.store.list_folders(self.user):
            if f.name == name:
                return f
        raise KeyError(name)

    async def sync(self, name: str, key: str, *commands: ClientCommand, window: int = 100,
                   conflict: int = 1, filter_type: int | None = None,
                   get_changes: bool | None = None, device: str = "devA",
                   remaining: int = 512, version: str = "14.1") -> CollectionResult:
        folder = await self.folder(name)
        creq = CollectionRequest(
            collection_id=folder.server_id, sync_key=key, window=window,
            get_changes=(key != "0") if get_changes is None else get_changes,
            filter_type=filter_type, conflict=conflict, commands=list(commands))
        quirks = quirks_for("iPhone", "Apple-iPhone13C2/2003.68", None, version,
                            self.server.settings)
        return await self.engine.sync_collection(self.user, device, version, quirks, folder,
                                                 creq, remaining)

    async def add_on_server(self, name: str, n: int, cls: str = "Contacts") -> list[str]:
        folder = await self.folder(name)
        res = await self.store.apply(self.user, folder.server_id, [
            Op(kind="add", data={"FirstName": f"S{i}"}, cls=cls) for i in range(n)])
        self.server.notifier.publish(self.user.id, folder.server_id)
        return [r.server_id for r in res]

    async def change_on_server(self, sid: str, data: dict[str, Any], name: str = "Contacts"
                               ) -> None:
        folder = await self.folder(name)
        await self.store.apply(self.user, folder.server_id,
                               [Op(kind="change", server_id=sid, data=data)])

    async def primed(self, name: str = "Contacts", device: str = "devA") -> str:
        """A key with everything delivered."""
        key = (await self.sync(name, "0", device=device)).sync_key
        while True:
            res = await self.sync(name, key, device=device)
            key = res.sync_key
            if not res.more_available:
                return key


@pytest_twisted.async_yield_fixture()
async def env(tmp_path: Path) -> Any:
    from twisted.internet import reactor

    store = await open_store(tmp_path)
    user = await store.add_user("zoe", None, "zoe@example.org", True)
    clock = Clock()
    clock.advance(reactor.seconds())
    server = EasServer(users=store, items=store, state=store, notifier=LocalNotifier(clock),
                       clock=clock)
    yield Env(server, user, store)
    await store.close()


def kinds(result: CollectionResult) -> list[tuple[str, str]]:
    return [(c.kind, c.server_id) for c in result.commands]


@pytest_twisted.ensureDeferred
async def test_synckey_zero_starts_a_state_with_no_commands(env: Env) -> None:
    """MS-ASCMD 2.2.3.166.4: SyncKey 0 gets a new key and no changes."""
    await env.add_on_server("Contacts", 3)
    res = await env.sync("Contacts", "0", get_changes=True)
    assert res.status == "1" and res.sync_key not in ("", "0") and res.changed
    assert res.commands == [] and res.responses == [] and not res.more_available


@pytest_twisted.ensureDeferred
async def test_unknown_key_is_status_3_and_missing_folder_status_12(env: Env) -> None:
    """MS-ASCMD 2.2.3.177.17: Status 3 (invalid SyncKey, answered with key 0), Status
    12 (the folder is not there: FolderSync)."""
    await env.primed()
    res = await env.sync("Contacts", "{00000000}7")
    assert (res.status, res.sync_key, res.commands) == ("3", "0", [])
    quirks = quirks_for("iPhone", "", None, "14.1")
    creq = CollectionRequest("no-such-folder", "{00000000}1", 100, True)
    res = await env.engine.sync_collection(env.user, "devA", "14.1", quirks, None, creq, 512)
    assert (res.collection_id, res.status) == ("no-such-folder", "12")


@pytest_twisted.ensureDeferred
async def test_window_and_more_available(env: Env) -> None:
    """MS-ASCMD 2.2.3.199 WindowSize and 2.2.3.106 MoreAvailable: at most the window
    per answer, each Add carrying the item; ``remaining`` (the request-wide window)
    caps it too."""
    ids = await env.add_on_server("Contacts", 5)
    key = (await env.sync("Contacts", "0")).sync_key
    res = await env.sync("Contacts", key, window=2)
    assert res.more_available and res.delivered == 2 and len(res.commands) == 2
    assert all(c.kind == "Add" and c.item is not None and c.item.data["FirstName"]
               for c in res.commands)
    seen = [c.server_id for c in res.commands]
    res = await env.sync("Contacts", res.sync_key, window=10, remaining=1)
    assert res.more_available and res.delivered == 1
    seen += [c.server_id for c in res.commands]
    res = await env.sync("Contacts", res.sync_key, window=10)
    assert not res.more_available
    seen += [c.server_id for c in res.commands]
    assert sorted(seen) == sorted(ids)


@pytest_twisted.ensureDeferred
async def test_nothing_new_keeps_the_key_and_is_not_a_change(env: Env) -> None:
    """MS-ASCMD 2.2.1.21: with nothing to send the key stays; ``changed`` False lets
    the command answer empty (or hold the request)."""
    key = await env.primed()
    res = await env.sync("Contacts", key)
    assert (res.sync_key, res.changed, res.commands) == (key, False, [])


@pytest_twisted.ensureDeferred
async def test_client_add_gets_a_server_id_and_is_not_echoed(env: Env) -> None:
    """MS-ASCMD 2.2.3.7.5 (Add) and 2.2.3.152.16 (Status 1): the Response maps the
    ClientId to a new ServerId; the device's own write never comes back to it, but
    does reach another device."""
    key = await env.primed()
    other = await env.primed(device="devB")
    res = await env.sync("Contacts", key, AddCommand("c1", {"FirstName": "Ann"}))
    [resp] = res.responses
    assert (resp.kind, resp.ref, resp.status) == ("Add", "c1", "1") and resp.server_id
    assert res.commands == []
    again = await env.sync("Contacts", res.sync_key)
    assert again.commands == [] and not again.changed
    seen = await env.sync("Contacts", other, device="devB")
    assert kinds(seen) == [("Add", resp.server_id)]
    assert seen.commands[0].item is not None
    assert seen.commands[0].item.data["FirstName"] == "Ann"


@pytest_twisted.ensureDeferred
async def test_per_command_statuses(env: Env) -> None:
    """MS-ASCMD 2.2.3.177.17: an Add without ClientId is Status 4, data that cannot
    be read Status 6, a Change or Delete of an unknown item Status 8; a Fetch answers
    with the item (2.2.3.63.2), or Status 8."""
    [sid] = await env.add_on_server("Contacts", 1)
    key = await env.primed()
    res = await env.sync("Contacts", key,
                         AddCommand(""), AddCommand("bad", error="no such property"),
                         ChangeCommand("nope", data={"FirstName": "x"}),
                         DeleteCommand("nope"), FetchCommand(sid), FetchCommand("nope"))
    got = [(r.kind, r.ref, r.status) for r in res.responses]
    assert got == [("Add", "", "4"), ("Add", "bad", "6"), ("Change", "nope", "8"),
                   ("Delete", "nope", "8"), ("Fetch", sid, "1"), ("Fetch", "nope", "8")]
    fetched = res.responses[4].item
    assert fetched is not None and fetched.data["FirstName"] == "S0"
    assert res.responses[5].item is None


@pytest_twisted.ensureDeferred
async def test_conflict_server_wins_unless_client_wins_is_asked(env: Env) -> None:
    """MS-ASCMD 2.2.3.34 Conflict: with 1 (the default) a Change of an item changed
    on the server since is Status 7 and the server's version is sent; with 0 the
    client's version is stored and the server's is not sent."""
    [sid] = await env.add_on_server("Contacts", 1)
    key = await env.primed()
    await env.change_on_server(sid, {"FirstName": "server"})
    res = await env.sync("Contacts", key, ChangeCommand(sid, data={"FirstName": "client"}))
    assert [(r.kind, r.status) for r in res.responses] == [("Change", "7")]
    assert kinds(res) == [("Change", sid)]
    item = res.commands[0].item
    assert item is not None and item.data["FirstName"] == "server"

    await env.change_on_server(sid, {"FirstName": "server2"})
    res = await env.sync("Contacts", res.sync_key,
                         ChangeCommand(sid, data={"FirstName": "client"}), conflict=0)
    assert res.responses == [] and res.commands == []
    [stored] = await env.store.get_items(env.user, [sid])
    assert stored.data["FirstName"] == "client"


@pytest_twisted.ensureDeferred
async def test_server_delete_and_soft_delete(env: Env) -> None:
    """MS-ASCMD 2.2.3.42.2 Delete and 2.2.3.172 SoftDelete: a deleted item leaves the
    device; a task completed under FilterType 8 (incomplete only, 2.2.3.68.2) is
    soft-deleted (the store keeps it)."""
    ids = await env.add_on_server("Contacts", 2)
    key = await env.primed()
    folder = await env.folder("Contacts")
    await env.store.apply(env.user, folder.server_id, [Op(kind="delete", server_id=ids[0])])
    res = await env.sync("Contacts", key)
    assert kinds(res) == [("Delete", ids[0])] and res.commands[0].item is None

    tasks = await env.folder("Tasks")
    [tid] = [r.server_id for r in await env.store.apply(env.user, tasks.server_id, [
        Op(kind="add", cls="Tasks", data={"Subject": "t", "Complete": 0})])]
    key = (await env.sync("Tasks", "0", filter_type=8)).sync_key
    res = await env.sync("Tasks", key, filter_type=8)
    assert kinds(res) == [("Add", tid)]
    await env.store.apply(env.user, tasks.server_id, [
        Op(kind="change", server_id=tid, data={"Subject": "t", "Complete": 1})])
    res = await env.sync("Tasks", res.sync_key, filter_type=8)
    assert kinds(res) == [("SoftDelete", tid)]
    assert await env.store.get_items(env.user, [tid])


@pytest_twisted.ensureDeferred
async def test_resend_gets_the_same_result_and_applies_nothing_twice(env: Env) -> None:
    """MS-ASCMD 2.2.3.166.4 and 3.1.5.3: the previous key sent again (the answer was
    lost) gets the same Responses (the same ServerId for the ClientId) and the same
    Commands; the Add is stored once."""
    ids = await env.add_on_server("Contacts", 2)
    key = (await env.sync("Contacts", "0")).sync_key
    first = await env.sync("Contacts", key, AddCommand("c1", {"FirstName": "Ann"}))
    again = await env.sync("Contacts", key, AddCommand("c1", {"FirstName": "Ann"}))
    assert again == first
    assert sorted(kinds(first)) == sorted(("Add", s) for s in ids)
    feed = await env.store.changes_since(env.user, (await env.folder("Contacts")).server_id,
                                         0, 1000)
    names = sorted(c.item.data["FirstName"] for c in feed.changes if c.item is not None)
    assert names == ["Ann", "S0", "S1"]


@pytest_twisted.ensureDeferred
async def test_resend_with_a_new_command_applies_it_under_the_next_key(env: Env) -> None:
    """Issue #10 point 3 (MS-ASCMD 3.1.5.3): a resend that carries a command the
    original did not (by fingerprint: ClientId, ServerId, digest of the data) applies
    it and answers both under key n+1."""
    [sid] = await env.add_on_server("Contacts", 1)
    key = await env.primed()
    first = await env.sync("Contacts", key, AddCommand("c1", {"FirstName": "Ann"}))
    res = await env.sync("Contacts", key, AddCommand("c1", {"FirstName": "Ann"}),
                         ChangeCommand(sid, data={"FirstName": "Bob"}, digest="d1"))
    assert res.sync_key != first.sync_key
    assert res.responses == first.responses
    [stored] = await env.store.get_items(env.user, [sid])
    assert stored.data["FirstName"] == "Bob"
    # the same Change again (same digest) is not applied again; another digest is
    await env.change_on_server(sid, {"FirstName": "server"})
    res2 = await env.sync("Contacts", key, ChangeCommand(sid, data={"FirstName": "Bob"},
                                                         digest="d1"))
    assert res2.sync_key == res.sync_key
    [stored] = await env.store.get_items(env.user, [sid])
    assert stored.data["FirstName"] == "server"


def test_engine_imports_no_wbxml_and_no_command() -> None:
    """Issue 11 point 2: the engine and its types stay on plain data."""
    for rel in ("easync/syncengine.py", "easync/synctypes.py"):
        tree = ast.parse((ROOT / rel).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in names if m.startswith(("easync.wbxml", "easync.commands"))], rel


# -- rendering: the command's side ------------------------------------------------------

def req(user: User, body: Element) -> EasRequest:
    return EasRequest(cmd="Sync", user=user, device_id="devA", device_type="iPhone",
                      version="14.1", body=body, user_agent="Apple-iPhone13C2/2003.68")


def body(cid: str, key: str, *commands: Element) -> Element:
    coll = E("AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
             E("AirSync:Options", E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", "1"),
                                    E("AirSyncBase:TruncationSize", "5"))))
    if commands:
        coll.append(E("AirSync:Commands", *commands))
    return E("AirSync:Sync", E("AirSync:Collections", coll))


@pytest_twisted.ensureDeferred
async def test_resent_answer_is_byte_identical_warm_cache_or_cold(env: Env) -> None:
    """MS-ASCMD 3.1.5.3: the answer to a resent SyncKey is the answer the device lost,
    to the byte, whether the server's fragment cache still holds the items (the same
    server) or not (a fresh server object on the same store, as after a restart)."""
    folder = await env.folder("Contacts")
    cid = folder.server_id
    await env.store.apply(env.user, cid, [
        Op(kind="add", cls="Contacts", data={"FirstName": f"P{i}", "Body": {
            "Type": 1, "Data": "a long note"}}) for i in range(3)])
    r0 = await sync.handle(env.server, req(env.user, body(cid, "0")))
    assert r0.body is not None
    key = r0.body.find("AirSync:Collections").find("AirSync:Collection").findtext(
        "AirSync:SyncKey")
    add = E("AirSync:Add", E("AirSync:ClientId", "c1"),
            E("AirSync:ApplicationData", E("Contacts:FirstName", "Ann")))
    first = await sync.handle(env.server, req(env.user, body(cid, key, add)))
    assert first.body is not None
    fetches = env.server.caches.fragments.misses
    resent = await sync.handle(env.server, req(env.user, body(cid, key, add)))
    assert resent.body is not None and encode(resent.body) == encode(first.body)
    assert env.server.caches.fragments.misses == fetches      # served from the cache
    cold = EasServer(users=env.store, items=env.store, state=env.store,
                     notifier=env.server.notifier, clock=env.server.clock)
    assert cold.caches is not env.server.caches
    resent = await sync.handle(cold, req(env.user, body(cid, key, add)))
    assert resent.body is not None and encode(resent.body) == encode(first.body)
    assert cold.caches.fragments.misses == 3


def test_client_response_keeps_the_state_form() -> None:
    """The sync state keeps each Response as [kind, ref, server id, status, uid]
    (states saved before issue 11 are read the same way)."""
    r = ClientResponse("Add", "c1", "s1", "1", None)
    assert r.to_json() == ["Add", "c1", "s1", "1", None]
    assert ClientResponse.from_json(["Fetch", "s2", None, "1", None]) == \
        ClientResponse("Fetch", "s2")
    assert ServerChange("Delete", "x").item is None


def test_parse_gives_the_typed_request() -> None:
    """MS-ASCMD 2.2.3.30.2 (Collection), 2.2.3.115 (Options: the ones of another
    Class are skipped), 2.2.3.199 (WindowSize), 2.2.3.79 (GetChanges): the request as
    ``SyncRequest``; ApplicationData is read once the folder's class is known."""
    from easync.settings import Settings

    body = E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", "{ab}3"), E("AirSync:CollectionId", "7"),
        E("AirSync:Class", "Contacts"), E("AirSync:GetChanges", ""),
        E("AirSync:WindowSize", "25"),
        E("AirSync:Options", E("AirSync:Class", "Email"), E("AirSync:FilterType", "3")),
        E("AirSync:Options", E("AirSync:Conflict", "0"), E(
            "AirSyncBase:BodyPreference", E("AirSyncBase:Type", "1"),
            E("AirSyncBase:TruncationSize", "512"))),
        E("AirSync:Commands",
          E("AirSync:Add", E("AirSync:ClientId", "c1"),
            E("AirSync:ApplicationData", E("Contacts:FirstName", "Ann"))),
          E("AirSync:Change", E("AirSync:ServerId", "s1"),
            E("AirSync:ApplicationData", E("Contacts:FirstName", "Bob"))),
          E("AirSync:Delete", E("AirSync:ServerId", "s2")),
          E("AirSync:Fetch", E("AirSync:ServerId", "s3"))))),
        E("AirSync:WindowSize", "60"))
    spec = sync.parse(body, Settings())
    assert (spec.hold, spec.window, spec.partial) == (None, 60, False)
    [c] = spec.collections
    assert (c.collection_id, c.sync_key, c.get_changes, c.window) == ("7", "{ab}3", True, 25)
    assert (c.filter_type, c.conflict) == (None, 0)
    [pref] = c.preferences()
    assert (pref.type, pref.truncation_size, pref.all_or_none) == (1, 512, False)
    quirks = quirks_for("iPhone", "", None, "14.1")
    add, change, delete, fetch = (sync.to_engine(cmd, "Contacts", "14.1", quirks)
                                  for cmd in c.commands)
    assert add == AddCommand("c1", {"FirstName": "Ann"})
    assert isinstance(change, ChangeCommand) and change.data == {"FirstName": "Bob"}
    assert change.server_id == "s1" and len(change.digest) == 24
    assert (delete, fetch) == (DeleteCommand("s2"), FetchCommand("s3"))
    other = sync.to_engine(c.commands[1], "Contacts", "14.1", quirks)
    assert isinstance(other, ChangeCommand) and other.digest == change.digest
    # data that cannot be read (here: no item class) is kept as its error (Status 6)
    bad = sync.to_engine(c.commands[1], "Email", "14.1", quirks)
    assert isinstance(bad, ChangeCommand) and bad.data is None and bad.error
    assert sync.to_engine(c.commands[0], "Email", "14.1", quirks) == AddCommand("c1")


def test_expired_states_after_a_purge() -> None:
    """Issue #13 point 6: which sync states a purged tombstone invalidates (Sync
    Status 3, MS-ASCMD 2.2.3.177.17).  A state needs the tombstones above its cursor;
    at cursor 0 only those of its own writes; after a start from SyncKey 0 none at or
    below the folder's purged mark of that moment (``base``)."""
    from easync.model import Folder
    from easync.storerules import feed_cursor
    from easync.syncengine import expired

    folder = Folder("7", "0", "Contacts", 9, modseq=50, purged=20)
    cases = [
        ({"cursor": 19, "own": {}}, 19, True),          # missed the tombstone at 20
        ({"cursor": 20, "own": {"7:1": 25}}, 20, False),
        ({"cursor": 0, "own": {}}, None, False),         # holds nothing yet
        ({"cursor": 0, "own": {"7:1": 12, "7:2": -30}}, 12, True),
        ({"cursor": 0, "own": {"7:1": 22}}, 22, False),
        ({"cursor": 5, "own": {}, "base": 20}, 20, False),   # began after the purge
        ({"cursor": 5, "own": {}, "base": 18}, 18, True),
    ]
    for st, floor, gone in cases:
        assert feed_cursor("sync:7", st) == floor, st
        assert expired(st, folder) is gone, st
    assert feed_cursor("folders", {"cursor": 3}) is None


@pytest_twisted.ensureDeferred
async def test_a_tombstone_purged_while_the_sync_reads_gives_status_3(env: Env) -> None:
    """Issue #13 point 6: a device behind a tombstone whose purge (by age) lands after
    the request looked at the folder but before it read the feed must not be moved
    past the delete it never got: its Sync answers Status 3 (MS-ASCMD 2.2.3.177.17)
    and its state stays as it was; the resync from SyncKey 0 lacks the item."""
    sids = await env.add_on_server("Contacts", 2)
    key = await env.primed()
    folder = await env.folder("Contacts")
    await env.store.apply(env.user, folder.server_id, [Op(kind="delete", server_id=sids[0])])
    await env.change_on_server(sids[1], {"FirstName": "later"})   # the feed goes on past it
    folder = await env.folder("Contacts")          # as the request read it: not purged
    reads = env.store.changes_since

    def purge_then_read(*args: Any, **kwargs: Any) -> Any:
        env.store.purge_older(env.server.clock.seconds() + 3600, 100)
        return reads(*args, **kwargs)

    env.store.changes_since = purge_then_read
    creq = CollectionRequest(collection_id=folder.server_id, sync_key=key, window=100,
                             get_changes=True)
    quirks = quirks_for("iPhone", "", None, "14.1")
    res = await env.engine.sync_collection(env.user, "devA", "14.1", quirks, folder, creq,
                                           512)
    del env.store.changes_since
    assert (res.status, res.sync_key, res.commands) == ("3", "0", [])
    assert (await env.sync("Contacts", key)).status == "3"     # and it stays invalid
    fresh = (await env.sync("Contacts", "0")).sync_key
    res = await env.sync("Contacts", fresh)
    assert kinds(res) == [("Add", sids[1])]
