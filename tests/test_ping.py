"""Ping (MS-ASCMD 2.2.1.13) through its handler, in process, against a real SQLite
store; time is a ``Clock`` so heartbeats are exact.  The HTTP side (disconnects over
a real socket) is in ``test_push_http.py``, pyactivesync in ``test_e2e_push.py``."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from sqlserver import memory_server, until
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from easync.commands import folders as hierarchy
from easync.commands import ping, sync
from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import Op
from easync.settings import Settings
from easync.wbxml.element import E, Element


@pytest_twisted.async_yield_fixture()
async def env(tmp_path):
    settings = Settings(heartbeat_min=30, heartbeat_max=600, max_ping_folders=3)
    async with memory_server(tmp_path, "ping.sqlite", ("zoe", "zoe@example.org"),
                             clocked=True, settings=settings) as (server, user, store):
        folders = {f.name: f.server_id for f in await store.list_folders(user)}
        yield server, user, folders


def req(user: Any, cmd: str, body: Element | None, device: str = "devA") -> EasRequest:
    return EasRequest(cmd=cmd, user=user, device_id=device, device_type="iPhone",
                      version="14.1", body=body, user_agent="Apple-iPhone13C2/2003.68")


def ping_body(heartbeat: int | str | None = None, folders: list[str] | None = None,
              cls: str = "Contacts") -> Element:
    root = E("Ping:Ping")
    if heartbeat is not None:
        root.add("Ping:HeartbeatInterval", str(heartbeat))
    if folders is not None:
        el = root.add("Ping:Folders")
        for fid in folders:
            el.append(E("Ping:Folder", E("Ping:Id", fid), E("Ping:Class", cls)))
    return root


def start_ping(server: EasServer, user: Any, body: Element | None,
               device: str = "devA") -> Deferred[EasResponse]:
    return Deferred.fromCoroutine(ping.handle(server, req(user, "Ping", body, device)))


async def do_ping(server: EasServer, user: Any, body: Element | None,
                  device: str = "devA") -> EasResponse:
    return await start_ping(server, user, body, device)


def status(resp: EasResponse) -> str:
    assert resp.body is not None and resp.body.tag == "Ping:Ping"
    return resp.body.findtext("Ping:Status")


def folders_of(resp: EasResponse) -> list[str]:
    el = resp.body.find("Ping:Folders")
    return [f.text for f in el.children] if el is not None else []


async def prime(server: EasServer, user: Any, cid: str, device: str = "devA") -> str:
    """SyncKey 0 then Sync until nothing is left: the device holds the folder."""
    def body(key: str) -> Element:
        return E("AirSync:Sync", E("AirSync:Collections", E(
            "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid))))

    resp = await sync.handle(server, req(user, "Sync", body("0"), device))
    key = resp.body.find("AirSync:Collections").find("AirSync:Collection").findtext(
        "AirSync:SyncKey")
    while True:
        resp = await sync.handle(server, req(user, "Sync", body(key), device))
        if resp.body is None:
            return key
        key = resp.body.find("AirSync:Collections").find("AirSync:Collection").findtext(
            "AirSync:SyncKey")


async def add_contact(server: EasServer, user: Any, cid: str, name: str = "New") -> str:
    """A write made elsewhere (another device, an import), announced on the hub."""
    (res,) = await server.items.apply(user, cid, [Op(kind="add", data={"FirstName": name},
                                                     cls="Contacts")])
    server.notifier.publish(user.id, cid)
    return res.server_id


async def held(server: EasServer, n: int = 1) -> None:
    """``n`` Pings held, each one waiting (past its reads: the store's threads may
    take a while when the machine is busy)."""
    await until(lambda: server.holds.counts["Ping"] == n and all(
        h._waiter is not None for h in server.holds.by_device.values()))


def nothing_held(server: EasServer) -> bool:
    """No Ping registered, no hub subscription, no heartbeat timer left."""
    return (len(server.holds) == 0 and server.holds.counts["Ping"] == 0
            and server.notifier.waiting == 0 and not server.clock.getDelayedCalls())


# -- parameters and their Statuses ---------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_missing_parameters_status_3(env) -> None:
    server, user, folders = env
    assert status(await do_ping(server, user, None)) == "3"             # empty, no cache
    assert status(await do_ping(server, user, ping_body(60))) == "3"    # no folders ever
    assert status(await do_ping(server, user, ping_body(None, [folders["Contacts"]]))) == "3"
    assert nothing_held(server)


@pytest.mark.parametrize("body", [
    ping_body("soon", ["1"]),                                   # not a number
    ping_body(60, []),                                          # Folders without Folder
    E("Ping:Ping", E("Ping:Folders", E("Ping:Folder", E("Ping:Class", "Contacts")))),
    E("Ping:Ping", E("Ping:Folders", E("Ping:Folder", E("Ping:Id", "")))),
    E("Ping:Ping", E("Ping:HeartbeatInterval", "60"), E("Ping:Status", "1")),  # stray
    E("Ping:Ping", E("Ping:Folders", E("Ping:Id", "1"))),      # Id outside a Folder
], ids=["text-heartbeat", "empty-folders", "no-id", "empty-id", "stray-element",
        "bare-id"])
@pytest_twisted.ensureDeferred
async def test_malformed_status_4(env, body: Element) -> None:
    server, user, _folders = env
    assert status(await do_ping(server, user, body)) == "4"
    assert await server.state.get_state(user, "devA", ping.CACHE) is None   # nothing cached


@pytest_twisted.ensureDeferred
async def test_heartbeat_out_of_range_status_5_with_the_limit(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    low = await do_ping(server, user, ping_body(29, [cid]))
    assert status(low) == "5" and low.body.findtext("Ping:HeartbeatInterval") == "30"
    high = await do_ping(server, user, ping_body(601, [cid]))
    assert status(high) == "5" and high.body.findtext("Ping:HeartbeatInterval") == "600"
    assert nothing_held(server)


@pytest_twisted.ensureDeferred
async def test_too_many_folders_status_6_with_max(env) -> None:
    server, user, folders = env
    ids = [folders[n] for n in ("Contacts", "Calendar", "Tasks", "Inbox")]
    resp = await do_ping(server, user, ping_body(60, ids))
    assert status(resp) == "6" and resp.body.findtext("Ping:MaxFolders") == "3"
    # the same folder twice counts once
    d = start_ping(server, user, ping_body(60, [ids[0]] * 4))
    await held(server)
    server.clock.advance(60)
    assert status(await d) == "1"


@pytest_twisted.ensureDeferred
async def test_unknown_folder_status_7(env) -> None:
    server, user, _folders = env
    assert status(await do_ping(server, user, ping_body(60, ["999999"]))) == "7"
    other = await server.users.add_user("mallory", None, None, True)
    theirs = next(f.server_id for f in await server.items.list_folders(other))
    assert status(await do_ping(server, user, ping_body(60, [theirs]))) == "7"
    assert nothing_held(server)


async def folder_sync(server: EasServer, user: Any, device: str = "devA") -> str:
    body = E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", "0"))
    resp = await hierarchy.folder_sync(server, req(user, "FolderSync", body, device))
    return resp.body.findtext("FolderHierarchy:SyncKey")


async def create_folder(server: EasServer, user: Any, key: str, device: str) -> None:
    body = E("FolderHierarchy:FolderCreate", E("FolderHierarchy:SyncKey", key),
             E("FolderHierarchy:ParentId", "0"),
             E("FolderHierarchy:DisplayName", "Clients"), E("FolderHierarchy:Type", "14"))
    resp = await hierarchy.folder_create(server, req(user, "FolderCreate", body, device))
    assert resp.body.findtext("FolderHierarchy:Status") == "1"


@pytest_twisted.ensureDeferred
async def test_hierarchy_changed_since_foldersync_status_7(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await folder_sync(server, user, "devA")
    key_b = await folder_sync(server, user, "devB")
    await create_folder(server, user, key_b, "devB")
    # devA's folder list is now out of date: its Ping says so at once
    assert status(await do_ping(server, user, ping_body(60, [cid]))) == "7"
    await folder_sync(server, user, "devA")
    d = start_ping(server, user, ping_body(60, [cid]))
    await held(server)
    # ... and while it is held: another device adds a folder
    key_b = await folder_sync(server, user, "devB")
    body = E("FolderHierarchy:FolderCreate", E("FolderHierarchy:SyncKey", key_b),
             E("FolderHierarchy:ParentId", "0"),
             E("FolderHierarchy:DisplayName", "More"), E("FolderHierarchy:Type", "14"))
    await hierarchy.folder_create(server, req(user, "FolderCreate", body, "devB"))
    assert status(await d) == "7"
    assert nothing_held(server)


# -- holding --------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_heartbeat_expires_status_1(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid)
    d = start_ping(server, user, ping_body(45, [cid]))
    await held(server)
    assert server.notifier.waiting == 1
    server.clock.advance(44.9)
    await deferLater(reactor, 0.05, lambda: None)
    assert not d.called
    server.clock.advance(0.1)
    resp = await d
    assert status(resp) == "1" and folders_of(resp) == []
    assert nothing_held(server)


@pytest_twisted.ensureDeferred
async def test_change_by_another_device_status_2_naming_the_folder(env) -> None:
    server, user, folders = env
    cid, tasks = folders["Contacts"], folders["Tasks"]
    await prime(server, user, cid)
    await prime(server, user, tasks)
    d = start_ping(server, user, ping_body(300, [cid, tasks]))
    await held(server)
    await add_contact(server, user, cid)
    resp = await d
    assert status(resp) == "2" and folders_of(resp) == [cid]
    assert resp.woken is not None
    assert nothing_held(server)
    # the device has not synced it yet: the next Ping answers at once
    assert folders_of(await do_ping(server, user, None)) == [cid]


@pytest_twisted.ensureDeferred
async def test_pending_change_answers_at_once(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid)
    await add_contact(server, user, cid)
    resp = await do_ping(server, user, ping_body(300, [cid]))
    assert status(resp) == "2" and folders_of(resp) == [cid]
    assert nothing_held(server)


@pytest_twisted.ensureDeferred
async def test_own_write_does_not_wake(env) -> None:
    """devA adds a contact through Sync (on another connection) while its Ping is held:
    the Ping goes on waiting; a change by devB then answers it."""
    server, user, folders = env
    cid = folders["Contacts"]
    key = await prime(server, user, cid)
    d = start_ping(server, user, ping_body(300, [cid]))
    await held(server)
    new = E("AirSync:Add", E("AirSync:ClientId", "c1"),
            E("AirSync:ApplicationData", E("Contacts:FirstName", "Mine")))
    add = E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
        E("AirSync:Commands", new))))
    await sync.handle(server, req(user, "Sync", add))
    await deferLater(reactor, 0.3, lambda: None)
    assert not d.called and server.holds.counts["Ping"] == 1
    assert server.notifier.waiting == 1            # subscribed again
    await add_contact(server, user, cid, "Theirs")
    assert folders_of(await d) == [cid]


@pytest_twisted.ensureDeferred
async def test_never_synced_folder_counts_when_it_changes(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await add_contact(server, user, cid, "Old")      # there before: not a reason to wake
    d = start_ping(server, user, ping_body(300, [cid]))
    await held(server)
    await add_contact(server, user, cid)
    assert folders_of(await d) == [cid]


@pytest_twisted.ensureDeferred
async def test_cached_parameters_reused(env) -> None:
    server, user, folders = env
    cid, tasks = folders["Contacts"], folders["Tasks"]
    await prime(server, user, cid)
    await prime(server, user, tasks)
    # first Ping: both parameters; it times out
    d = start_ping(server, user, ping_body(40, [cid]))
    await held(server)
    server.clock.advance(40)
    assert status(await d) == "1"
    # empty body: the same heartbeat and folders
    d = start_ping(server, user, None)
    await held(server)
    assert server.holds.by_device[(user.id, "devA")].deadline == server.clock.seconds() + 40
    await add_contact(server, user, cid)
    assert folders_of(await d) == [cid]
    await prime(server, user, cid)
    # only HeartbeatInterval: the cached folders; only Folders: the cached heartbeat
    d = start_ping(server, user, ping_body(50))
    await held(server)
    assert server.holds.by_device[(user.id, "devA")].folders[:1] == [cid]
    server.clock.advance(50)
    assert status(await d) == "1"
    d = start_ping(server, user, ping_body(None, [tasks]))
    await held(server)
    hold = server.holds.by_device[(user.id, "devA")]
    assert hold.deadline == server.clock.seconds() + 50 and hold.folders[:1] == [tasks]
    server.clock.advance(50)
    assert status(await d) == "1"
    assert await server.state.get_state(user, "devA", ping.CACHE) == {
        "heartbeat": 50, "folders": [tasks]}


@pytest_twisted.ensureDeferred
async def test_second_ping_ends_the_first(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid)
    first = start_ping(server, user, ping_body(300, [cid]))
    await held(server)
    second = start_ping(server, user, ping_body(300, [cid]))
    # the first is answered at once (before the second has even read its parameters)
    assert first.called
    assert status(await first) == "1"
    await held(server)
    assert server.notifier.waiting == 1 and len(server.holds) == 1
    # another device's Ping is independent
    other = start_ping(server, user, ping_body(300, [cid]), device="devB")
    await held(server, 2)
    assert not second.called
    await add_contact(server, user, cid)
    assert folders_of(await second) == [cid]
    assert status(await other) == "1" or folders_of(await other) == [cid]
    assert nothing_held(server)


@pytest_twisted.ensureDeferred
async def test_cancel_while_held_frees_the_waiter(env) -> None:
    """What the HTTP layer does when the client disconnects: cancel the handler."""
    server, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid)
    d = start_ping(server, user, ping_body(300, [cid]))
    await held(server)
    assert server.notifier.waiting == 1 and server.clock.getDelayedCalls()
    d.cancel()
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures and failures[0].check(Exception)
    assert nothing_held(server)
    # a change afterwards wakes nobody and breaks nothing
    await add_contact(server, user, cid)
    assert nothing_held(server)


@pytest_twisted.ensureDeferred
async def test_cancel_while_checking_frees_the_waiter(env) -> None:
    """Disconnect while the Ping is still looking at the database."""
    server, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid)
    d = start_ping(server, user, ping_body(300, [cid]))
    for _ in range(200):
        await deferLater(reactor, 0.001, lambda: None)
        if server.holds.counts["Ping"]:
            break
    d.cancel()
    d.addErrback(lambda _f: None)
    await until(lambda: nothing_held(server))


@pytest_twisted.ensureDeferred
async def test_hub_reconnect_wakes_and_the_ping_waits_on(env) -> None:
    """The PostgreSQL hub answers every waiter with all its folders after reconnecting
    (it may have missed changes): a Ping with nothing new goes on waiting."""
    server, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid)
    await folder_sync(server, user)
    d = start_ping(server, user, ping_body(300, [cid]))
    await held(server)
    server.notifier.publish(user.id, ping.HIERARCHY)   # as a hub that may have missed some
    server.notifier.publish(user.id, cid)
    await deferLater(reactor, 0.3, lambda: None)
    assert not d.called and server.notifier.waiting == 1
    await add_contact(server, user, cid)
    assert folders_of(await d) == [cid]
