"""Issue #10 point 11: a folder deleted while another device syncs it.

MS-ASCMD 2.2.3.177.17 (Sync Status 12: the folder hierarchy has changed) and 2.2.1.13
(Ping Status 7): a device that syncs or watches a folder that is gone must be told to
FolderSync.  An empty Sync answer says "no changes" (MS-ASCMD 2.2.1.21) and a Ping
Status 1 "nothing happened": both are wrong for a deleted folder.

The other device's FolderDelete is made to land between two steps of the Sync (or
Ping, GetItemEstimate) with a wrapper around the real SQLite store that deletes the
folder just before (or after) one named call: every interleaving is reproduced
deterministically, in process (the end-to-end trial loop is test_e2e_folder_race.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest_twisted
from sqlserver import sqlite_server, until
from twisted.internet.defer import Deferred

from easync.commands import folders as hierarchy
from easync.commands import getitemestimate, ping, sync
from easync.handler import EasRequest, EasResponse
from easync.model import Op
from easync.wbxml import decode, encode
from easync.wbxml.element import E, Element

HIERARCHY = "hierarchy"


class DeletingStore:
    """The real store; the folder is deleted (as by another device's FolderDelete,
    which announces it on the hub unless ``announce`` is off) once, just before the
    first call of ``before`` or just after the first call of ``after`` returns."""

    def __init__(self, server: Any, user: Any, folder_id: str, *, before: str = "",
                 after: str = "", announce: bool = True) -> None:
        self.inner = server.items
        self.server = server
        self.user = user
        self.folder_id = folder_id
        self.before = before
        self.after = after
        self.announce = announce
        self.deleted = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in (self.before, self.after) or not callable(attr):
            return attr

        async def call(*args: Any, **kw: Any) -> Any:
            if name == self.before:
                await self.delete()
            result = await attr(*args, **kw)
            if name == self.after:
                await self.delete()
            return result

        return lambda *a, **k: Deferred.fromCoroutine(call(*a, **k))

    async def delete(self) -> None:
        if self.deleted:
            return
        self.deleted = True
        await self.inner.delete_folder(self.user, self.folder_id)
        if self.announce:
            self.server.notifier.publish(self.user.id, HIERARCHY)


@pytest_twisted.async_yield_fixture()
async def env(tmp_path):
    async with sqlite_server(tmp_path, "race.sqlite", ("rita", "rita@example.org"),
                             clocked=True) as (server, user, store):
        folder = await store.create_folder(user, "0", "Clients", 14)
        yield server, user, folder.server_id


def req(user: Any, body: Element | None, device: str = "devB", cmd: str = "Sync"
        ) -> EasRequest:
    return EasRequest(cmd=cmd, user=user, device_id=device, device_type="iPhone",
                      version="14.1", body=body, user_agent="Apple-iPhone13C2/2003.68")


def sync_body(cid: str, key: str, *extra: Element, top: list[Element] | None = None
              ) -> Element:
    return E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
        *extra)), *(top or []))


async def run(server: Any, user: Any, body: Element, device: str = "devB"
              ) -> Element | None:
    resp = await sync.handle(server, req(user, body, device))
    return None if resp.body is None else decode(encode(resp.body))


def collection(body: Element | None) -> Element:
    assert body is not None, "an empty Sync answer: 'no changes' for a deleted folder"
    return body.find("AirSync:Collections").find("AirSync:Collection")


async def prime(server: Any, user: Any, cid: str, device: str = "devB") -> str:
    key = collection(await run(server, user, sync_body(cid, "0"), device)).findtext(
        "AirSync:SyncKey")
    while True:
        body = await run(server, user, sync_body(cid, key), device)
        if body is None:
            return key
        key = collection(body).findtext("AirSync:SyncKey")


async def add_items(server: Any, user: Any, cid: str, n: int) -> list[str]:
    res = await server.items.apply(user, cid, [
        Op(kind="add", data={"FirstName": f"P{i}"}, cls="Contacts") for i in range(n)])
    server.notifier.publish(user.id, cid)
    return [r.server_id for r in res]


def racing(server: Any, user: Any, cid: str, **where: Any) -> Any:
    """The server with its item store wrapped by a DeletingStore."""
    store = DeletingStore(server, user, cid, **where)
    return dataclasses.replace(server, items=store, holds=server.holds), store


async def answer_12(server: Any, user: Any, body: Element, cid: str) -> None:
    got = collection(await run(server, user, body))
    assert got.findtext("AirSync:CollectionId") == cid
    assert got.findtext("AirSync:Status") == "12", got


# -- a Sync that runs while the folder goes ------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_deleted_before_the_changes_are_read(env) -> None:
    """The Sync found the folder, then it was deleted with what it held: reading its
    changes finds none.  That is not "no changes": Status 12."""
    server, user, cid = env
    key = await prime(server, user, cid)
    await add_items(server, user, cid, 3)
    srv, store = racing(server, user, cid, before="changes_since")
    await answer_12(srv, user, sync_body(cid, key), cid)
    assert store.deleted


@pytest_twisted.ensureDeferred
async def test_deleted_before_the_device_writes(env) -> None:
    """The device's Add reaches the store's write transaction after the folder went:
    Status 12 (not an HTTP 500), nothing stored, the device's key unchanged."""
    server, user, cid = env
    key = await prime(server, user, cid)
    srv, store = racing(server, user, cid, before="apply")
    add = E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", "n1"), E(
        "AirSync:ApplicationData", E("Contacts:FirstName", "Nina"))))
    await answer_12(srv, user, sync_body(cid, key, E("AirSync:GetChanges", "0"), add), cid)
    assert store.deleted
    st = await server.state.get_state(user, "devB", f"sync:{cid}")
    assert f"{{{st['epoch']}}}{st['key']}" == key
    assert (await server.items.changes_since(user, cid, 0, 100)).changes == []


@pytest_twisted.ensureDeferred
async def test_deleted_before_a_change_is_looked_up(env) -> None:
    """The device changes an item of the folder; the folder (and the item) went just
    before: Status 12 for the collection, not Status 8 per item under a new key."""
    server, user, cid = env
    [sid] = await add_items(server, user, cid, 1)
    key = await prime(server, user, cid)
    srv, store = racing(server, user, cid, before="get_items")
    change = E("AirSync:Commands", E("AirSync:Change", E("AirSync:ServerId", sid), E(
        "AirSync:ApplicationData", E("Contacts:FirstName", "Paul"))))
    await answer_12(srv, user, sync_body(cid, key, change), cid)
    assert store.deleted


@pytest_twisted.ensureDeferred
async def test_deleted_before_a_resend_writes(env) -> None:
    """Issue #10 point 3 meets point 11: a resend that carries a new Add reaches the
    write after the folder went: Status 12."""
    server, user, cid = env
    key = await prime(server, user, cid)
    one = E("AirSync:Add", E("AirSync:ClientId", "a1"), E(
        "AirSync:ApplicationData", E("Contacts:FirstName", "Ann")))
    two = E("AirSync:Add", E("AirSync:ClientId", "a2"), E(
        "AirSync:ApplicationData", E("Contacts:FirstName", "Bob")))
    await run(server, user, sync_body(cid, key, E("AirSync:Commands", one)))
    srv, store = racing(server, user, cid, before="apply")
    await answer_12(srv, user, sync_body(cid, key, E("AirSync:Commands", one, two)), cid)
    assert store.deleted


# -- a Sync that waits (Wait / HeartbeatInterval) --------------------------------------------

def hold_sync(server: Any, user: Any, cid: str, key: str) -> Deferred[EasResponse]:
    return Deferred.fromCoroutine(sync.handle(server, req(user, sync_body(
        cid, key, top=[E("AirSync:HeartbeatInterval", "300")]))))


@pytest_twisted.ensureDeferred
async def test_waiting_sync_is_answered_12_when_the_folder_is_deleted(env) -> None:
    """Another device's FolderDelete ends a Sync held on that folder at once, with
    Status 12; before, the Sync waited for its heartbeat and answered empty."""
    server, user, cid = env
    key = await prime(server, user, cid)
    d = hold_sync(server, user, cid, key)
    await until(lambda: server.holds.counts["Sync"] == 1)
    # FolderDelete by device A, through its handler (it announces the hierarchy)
    fs = await hierarchy.folder_sync(server, req(user, E(
        "FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", "0")), "devA", "FolderSync"))
    fkey = fs.body.findtext("FolderHierarchy:SyncKey")
    fd = await hierarchy.folder_delete(server, req(user, E(
        "FolderHierarchy:FolderDelete", E("FolderHierarchy:SyncKey", fkey),
        E("FolderHierarchy:ServerId", cid)), "devA", "FolderDelete"))
    assert fd.body.findtext("FolderHierarchy:Status") == "1"
    try:
        await until(lambda: d.called, 3.0)
    finally:
        server.clock.advance(301)          # (a failing run ends at the heartbeat)
    resp = await d
    got = collection(None if resp.body is None else decode(encode(resp.body)))
    assert got.findtext("AirSync:Status") == "12"


@pytest_twisted.ensureDeferred
async def test_waiting_sync_heartbeat_checks_the_folder(env) -> None:
    """The folder was deleted where no change reached this process (another node,
    a lost notification): the heartbeat answer is Status 12, not an empty body."""
    server, user, cid = env
    key = await prime(server, user, cid)
    d = hold_sync(server, user, cid, key)
    await until(lambda: server.holds.counts["Sync"] == 1)
    await server.items.delete_folder(user, cid)       # nothing announced
    server.clock.advance(301)
    resp = await d
    got = collection(None if resp.body is None else decode(encode(resp.body)))
    assert got.findtext("AirSync:Status") == "12"


@pytest_twisted.ensureDeferred
async def test_waiting_sync_stays_held_when_another_folder_changes(env) -> None:
    """A hierarchy change that leaves the folder alone (another folder made) does not
    end the held Sync; the heartbeat still answers empty."""
    server, user, cid = env
    key = await prime(server, user, cid)
    d = hold_sync(server, user, cid, key)
    await until(lambda: server.holds.counts["Sync"] == 1)
    await server.items.create_folder(user, "0", "Suppliers", 14)
    server.notifier.publish(user.id, HIERARCHY)
    await until(lambda: server.notifier.waiting == 1)
    assert not d.called
    server.clock.advance(301)
    resp = await d
    assert resp.body is None


# -- Ping and GetItemEstimate ----------------------------------------------------------------

def ping_body(cid: str) -> Element:
    return E("Ping:Ping", E("Ping:HeartbeatInterval", "300"), E("Ping:Folders", E(
        "Ping:Folder", E("Ping:Id", cid), E("Ping:Class", "Contacts"))))


async def ping_answer(server: Any, user: Any, cid: str) -> str:
    d = Deferred.fromCoroutine(ping.handle(server, req(user, ping_body(cid), cmd="Ping")))
    try:
        await until(lambda: d.called, 3.0)
    finally:
        server.clock.advance(301)          # (a failing run ends at the heartbeat)
    resp = await d
    return resp.body.findtext("Ping:Status")


@pytest_twisted.ensureDeferred
async def test_ping_started_as_the_folder_goes_answers_7(env) -> None:
    """MS-ASCMD 2.2.1.13 (Ping Status 7): the folder is deleted, and announced, just
    after the Ping listed the folders and before it starts waiting.  Before, the
    announcement was missed and the Ping answered Status 1 at its heartbeat."""
    server, user, cid = env
    await prime(server, user, cid)
    srv, store = racing(server, user, cid, after="list_folders")
    assert await ping_answer(srv, user, cid) == "7"
    assert store.deleted


@pytest_twisted.ensureDeferred
async def test_ping_with_changes_as_the_folder_goes_answers_7(env) -> None:
    """The watched folder had changes for the device, and was deleted just before the
    Ping read them: Status 7, not a wait ending in Status 1."""
    server, user, cid = env
    await prime(server, user, cid)
    await add_items(server, user, cid, 2)
    srv, store = racing(server, user, cid, before="changes_since")
    assert await ping_answer(srv, user, cid) == "7"
    assert store.deleted


@pytest_twisted.ensureDeferred
async def test_estimate_of_a_folder_deleted_meanwhile_is_status_2(env) -> None:
    """MS-ASCMD 2.2.3.177.8 (GetItemEstimate Status 2: a collection is invalid): the
    folder went between the look-up and the count; not "Estimate 0"."""
    server, user, cid = env
    key = await prime(server, user, cid)
    await add_items(server, user, cid, 2)
    srv, store = racing(server, user, cid, before="changes_since")
    resp = await getitemestimate.handle(srv, req(user, E(
        "ItemEstimate:GetItemEstimate", E("ItemEstimate:Collections", E(
            "ItemEstimate:Collection", E("AirSync:SyncKey", key),
            E("ItemEstimate:CollectionId", cid)))), cmd="GetItemEstimate"))
    r = resp.body.find("ItemEstimate:Response")
    assert r.findtext("ItemEstimate:Status") == "2"
    assert store.deleted
