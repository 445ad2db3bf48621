"""The sync engine's read-only folders, on a store that knows nothing of sharing
(``easync.testing.MemoryStore``): the engine is driven by ``Folder.read_only`` and by a
store's ``OpResult(error="readonly")`` alone, so any store gets the same behaviour
(issue #14 point 1; the CRM store's company address book too).

MS-ASCMD 2.2.3.177.17 / 2.2.3.34: Status 7, the client's object discarded, the
server's version sent; 2.2.3.84: with GetChanges 0, no Commands in that answer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest_twisted
from twisted.internet.task import Clock

from easync.handler import EasServer
from easync.model import Folder, Op, OpResult, StateWrite, User
from easync.notify import LocalNotifier
from easync.syncengine import SyncEngine, quirks_for
from easync.synctypes import (
    AddCommand,
    ChangeCommand,
    ClientCommand,
    CollectionRequest,
    CollectionResult,
    DeleteCommand,
)
from easync.testing import MemoryStore


class RefusingStore(MemoryStore):
    """A store whose folder turned read-only after the request looked it up: every
    write refused with "readonly", nothing stored but the state."""

    refuse = False

    def apply(self, user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Any:
        if not self.refuse:
            return super().apply(user, folder_id, ops, state)
        results = [OpResult(op.ref, op.server_id, False, error="readonly") for op in ops]

        async def go() -> list[OpResult]:
            if state is not None:
                if state.build is not None:
                    state.state = state.build(results)
                await self.save_state(user, state)
            return results

        from twisted.internet.defer import Deferred
        return Deferred.fromCoroutine(go())


class Env:
    def __init__(self, store: RefusingStore, user: User, engine: SyncEngine) -> None:
        self.store, self.user, self.engine = store, user, engine
        self.read_only = True

    async def folder(self) -> Folder:
        f = next(f for f in await self.store.list_folders(self.user) if f.name == "Contacts")
        return dataclasses.replace(f, read_only=self.read_only)

    async def sync(self, key: str, *commands: ClientCommand, get_changes: bool = True
                   ) -> CollectionResult:
        folder = await self.folder()
        creq = CollectionRequest(collection_id=folder.server_id, sync_key=key, window=100,
                                 get_changes=get_changes if key != "0" else False,
                                 commands=list(commands))
        return await self.engine.sync_collection(
            self.user, "dev", "14.1", quirks_for("iPhone", "", None, "14.1"), folder,
            creq, 512)


async def _env() -> Env:
    from twisted.internet import reactor

    store = RefusingStore()
    await store.open()
    user = await store.add_user("bob", None, None, True)
    clock = Clock()
    clock.advance(reactor.seconds())
    server = EasServer(users=store, items=store, state=store,
                       notifier=LocalNotifier(clock), clock=clock)
    return Env(store, user, SyncEngine(server))


async def _primed(env: Env) -> tuple[str, list[str]]:
    folder = await env.folder()
    res = await env.store.apply(env.user, folder.server_id, [
        Op("add", data={"FirstName": n}, cls="Contacts") for n in ("Ada", "Bea")])
    key = (await env.sync("0")).sync_key
    got = await env.sync(key)
    assert sorted(c.kind for c in got.commands) == ["Add", "Add"]
    return got.sync_key, [r.server_id or "" for r in res]


def _first(item: Any) -> str:
    return str(item.data.get("FirstName"))


@pytest_twisted.ensureDeferred
async def test_read_only_folder_on_any_store() -> None:
    env = await _env()
    key, (ada, bea) = await _primed(env)
    before = {i.server_id: dict(i.data) for i in await env.store.get_items(env.user,
                                                                             [ada, bea])}
    res = await env.sync(key,
                         ChangeCommand(ada, data={"FirstName": "Adaline"}),
                         DeleteCommand(bea),
                         AddCommand("c1", {"FirstName": "New"}))
    statuses = sorted((r.kind, r.ref, r.status, r.server_id) for r in res.responses)
    assert statuses == sorted([("Change", ada, "7", None), ("Delete", bea, "7", None),
                               ("Add", "c1", "6", None)])
    sent = {(c.kind, c.server_id): c.item for c in res.commands}
    assert set(sent) == {("Change", ada), ("Add", bea)}
    assert _first(sent[("Change", ada)]) == "Ada" and _first(sent[("Add", bea)]) == "Bea"
    after = {i.server_id: dict(i.data) for i in await env.store.get_items(env.user,
                                                                            [ada, bea])}
    assert after == before
    folder = await env.folder()
    feed = await env.store.changes_since(env.user, folder.server_id, 0, 10)
    assert len(feed.changes) == 2                                  # nothing added
    # nothing more owed, nothing echoed
    again = await env.sync(res.sync_key)
    assert again.commands == []


@pytest_twisted.ensureDeferred
async def test_get_changes_zero_owes_the_version_to_the_next_sync() -> None:
    env = await _env()
    key, (ada, _bea) = await _primed(env)
    res = await env.sync(key, ChangeCommand(ada, data={"FirstName": "X"}), get_changes=False)
    assert [(r.ref, r.status) for r in res.responses] == [(ada, "7")]
    assert res.commands == []                       # MS-ASCMD 2.2.3.84: none asked for
    nxt = await env.sync(res.sync_key)
    assert [(c.kind, c.server_id, _first(c.item)) for c in nxt.commands] == [
        ("Change", ada, "Ada")]
    assert (await env.sync(nxt.sync_key)).commands == []


@pytest_twisted.ensureDeferred
async def test_store_refusing_as_read_only_after_the_lookup() -> None:
    """The folder was writable when the request looked it up, and read-only when the
    store wrote (a share changed meanwhile): Status 7, and the server's version comes
    with the next Sync."""
    env = await _env()
    env.read_only = False
    key, (ada, bea) = await _primed(env)
    env.store.refuse = True
    res = await env.sync(key, ChangeCommand(ada, data={"FirstName": "X"}), DeleteCommand(bea),
                         AddCommand("c9", {"FirstName": "Y"}))
    assert sorted((r.kind, r.status) for r in res.responses) == [
        ("Add", "6"), ("Change", "7"), ("Delete", "7")]
    env.store.refuse = False
    nxt = await env.sync(res.sync_key)
    assert sorted((c.kind, c.server_id) for c in nxt.commands) == sorted(
        [("Change", ada), ("Add", bea)])
