"""FolderSync, FolderCreate, FolderUpdate, FolderDelete."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from hubtest import Heard
from sqlserver import memory_server

from easync.commands import COMMANDS
from easync.handler import EasRequest
from easync.model import StateWrite
from easync.wbxml import encode
from easync.wbxml.element import E, Element

H = "FolderHierarchy:"
MODULES = COMMANDS


@pytest_twisted.async_yield_fixture
async def env(tmp_path: Any) -> Any:
    async with memory_server(tmp_path) as (server, user, _store):
        yield server, user


async def call(env: Any, cmd: str, *children: Element, device_id: str = "dev1",
               version: str = "16.1") -> Element:
    server, user = env
    body = E(H + cmd, *children)
    req = EasRequest(cmd=cmd, user=user, device_id=device_id, device_type="iPhone",
                     version=version, body=body)
    resp = await MODULES[cmd].handle(server, req)
    assert resp.http_status == 200
    assert resp.body is not None and resp.body.tag == H + cmd
    assert resp.status == resp.body.findtext(H + "Status")
    encode(resp.body)
    return resp.body


async def fsync(env: Any, key: str, device_id: str = "dev1") -> Element:
    return await call(env, "FolderSync", E(H + "SyncKey", key), device_id=device_id)


def status(body: Element) -> str | None:
    return body.findtext(H + "Status")


def entries(body: Element, tag: str) -> list[dict[str, str | None]]:
    changes = body.find(H + "Changes")
    assert changes is not None
    out = []
    for el in changes.findall(H + tag):
        out.append({c.tag.split(":")[1]: c.value for c in el.children})
    return out


def count(body: Element) -> int:
    changes = body.find(H + "Changes")
    assert changes is not None
    n = int(changes.findtext(H + "Count") or "-1")
    assert n == len([c for c in changes.children if c.tag != H + "Count"])
    return n


async def folder_id(env: Any, name: str) -> str:
    server, user = env
    for f in await server.items.list_folders(user):
        if f.name == name:
            return f.server_id
    raise AssertionError(name)


async def initial(env: Any, device_id: str = "dev1") -> str:
    body = await fsync(env, "0", device_id)
    assert status(body) == "1"
    key = body.findtext(H + "SyncKey")
    assert key
    return key


# --------------------------------------------------------------------------- FolderSync

@pytest_twisted.ensureDeferred
async def test_initial_folder_sync_lists_everything(env: Any) -> None:
    body = await fsync(env, "0")
    assert [c.tag for c in body.children] == [H + "Status", H + "SyncKey", H + "Changes"]
    assert status(body) == "1"
    key = body.findtext(H + "SyncKey")
    assert key and key != "0"
    adds = entries(body, "Add")
    assert count(body) == len(adds) == 8
    by_name = {a["DisplayName"]: a for a in adds}
    assert {name: a["Type"] for name, a in by_name.items()} == {
        "Contacts": "9", "Calendar": "8", "Tasks": "7", "Inbox": "2", "Drafts": "3",
        "Deleted Items": "4", "Sent Items": "5", "Outbox": "6"}
    for a in adds:
        assert set(a) == {"ServerId", "ParentId", "DisplayName", "Type"}
        assert a["ParentId"] == "0"
        assert a["ServerId"]
    assert len({a["ServerId"] for a in adds}) == 8


@pytest_twisted.ensureDeferred
async def test_server_ids_are_stable_across_resets(env: Any) -> None:
    server, user = env
    await server.items.create_folder(user, "0", "Work", 13)
    first = {a["DisplayName"]: a["ServerId"] for a in entries(await fsync(env, "0"), "Add")}
    second = {a["DisplayName"]: a["ServerId"] for a in entries(await fsync(env, "0"), "Add")}
    assert first == second
    assert "Work" in first


@pytest_twisted.ensureDeferred
async def test_no_changes_gives_count_zero(env: Any) -> None:
    key = await initial(env)
    body = await fsync(env, key)
    assert status(body) == "1"
    assert count(body) == 0
    key2 = body.findtext(H + "SyncKey")
    assert key2
    body = await fsync(env, key2)
    assert status(body) == "1" and count(body) == 0


@pytest_twisted.ensureDeferred
async def test_incremental_add_update_delete_and_resend(env: Any) -> None:
    server, user = env
    key1 = await initial(env)
    work = await server.items.create_folder(user, "0", "Work", 13)
    people = await server.items.create_folder(user, "0", "People", 14)

    body = await fsync(env, key1)
    assert status(body) == "1" and count(body) == 2
    key2 = body.findtext(H + "SyncKey")
    assert key2 and key2 != key1
    adds = {a["ServerId"]: a for a in entries(body, "Add")}
    assert adds[work.server_id] == {"ServerId": work.server_id, "ParentId": "0",
                                    "DisplayName": "Work", "Type": "13"}
    assert adds[people.server_id]["Type"] == "14"

    # The device never got that answer and sends key1 again: the same answer.
    again = await fsync(env, key1)
    assert status(again) == "1"
    assert again.findtext(H + "SyncKey") == key2
    assert {a["ServerId"] for a in entries(again, "Add")} == set(adds)

    await server.items.update_folder(user, work.server_id, "0", "Work stuff")
    await server.items.delete_folder(user, people.server_id)
    body = await fsync(env, key2)
    assert status(body) == "1" and count(body) == 2
    assert entries(body, "Update") == [{"ServerId": work.server_id, "ParentId": "0",
                                        "DisplayName": "Work stuff", "Type": "13"}]
    assert entries(body, "Delete") == [{"ServerId": people.server_id}]
    key3 = body.findtext(H + "SyncKey")
    assert key3 not in (key1, key2)
    body = await fsync(env, key3)
    assert count(body) == 0


@pytest_twisted.ensureDeferred
async def test_resent_key_after_further_changes_reports_all_of_them(env: Any) -> None:
    server, user = env
    key1 = await initial(env)
    a = await server.items.create_folder(user, "0", "A", 13)
    key2 = (await fsync(env, key1)).findtext(H + "SyncKey")
    b = await server.items.create_folder(user, "0", "B", 15)
    body = await fsync(env, key1)  # the device still holds key1
    assert status(body) == "1"
    assert {x["ServerId"] for x in entries(body, "Add")} == {a.server_id, b.server_id}
    key3 = body.findtext(H + "SyncKey")
    assert key3 not in (key1, key2)
    assert count(await fsync(env, key3)) == 0


@pytest_twisted.ensureDeferred
async def test_subfolder_add_comes_after_its_parent(env: Any) -> None:
    server, user = env
    key = await initial(env)
    parent = await server.items.create_folder(user, "0", "Parent", 14)
    child = await server.items.create_folder(user, parent.server_id, "Child", 14)
    adds = entries(await fsync(env, key), "Add")
    ids = [x["ServerId"] for x in adds]
    assert ids.index(parent.server_id) < ids.index(child.server_id)
    assert adds[ids.index(child.server_id)]["ParentId"] == parent.server_id


@pytest_twisted.ensureDeferred
async def test_folder_moved_below_a_newer_one_is_added_after_it(env: Any) -> None:
    server, user = env
    key = await initial(env)
    older = await server.items.create_folder(user, "0", "Older", 13)
    newer = await server.items.create_folder(user, "0", "Newer", 13)
    await server.items.update_folder(user, older.server_id, newer.server_id, "Older")
    ids = [x["ServerId"] for x in entries(await fsync(env, key), "Add")]
    assert ids == [newer.server_id, older.server_id]


@pytest_twisted.ensureDeferred
async def test_unknown_sync_key_is_status_9(env: Any) -> None:
    assert status(await fsync(env, "1", device_id="never-synced")) == "9"
    key = await initial(env)
    body = await fsync(env, str(int(key) + 50))
    assert status(body) == "9"
    assert body.find(H + "Changes") is None
    assert status(await fsync(env, "garbage")) == "9"


@pytest_twisted.ensureDeferred
async def test_malformed_folder_sync_is_status_10(env: Any) -> None:
    assert status(await call(env, "FolderSync")) == "10"
    assert status(await call(env, "FolderSync", E(H + "SyncKey", ""))) == "10"


@pytest_twisted.ensureDeferred
async def test_folder_sync_0_keeps_item_sync_states(env: Any) -> None:
    server, user = env
    key = await initial(env)
    contacts = await folder_id(env, "Contacts")
    await server.state.save_state(user, StateWrite("dev1", f"sync:{contacts}",
                                                   {"key": "3", "cursor": 17}))
    await initial(env)
    await initial(env)
    assert await server.state.get_state(user, "dev1", f"sync:{contacts}") == {
        "key": "3", "cursor": 17}
    # The old hierarchy key is gone after a reset, the new one works.
    assert status(await fsync(env, key)) == "9"


@pytest_twisted.ensureDeferred
async def test_devices_have_separate_hierarchy_states(env: Any) -> None:
    server, user = env
    key_a = await initial(env, "devA")
    key_b = await initial(env, "devB")
    await server.items.create_folder(user, "0", "Shared", 13)
    assert count(await fsync(env, key_a, "devA")) == 1
    assert count(await fsync(env, key_b, "devB")) == 1


# ------------------------------------------------------------------------- FolderCreate

def create(key: str, name: str, ftype: int | str | None = 13, parent: str | None = "0"
           ) -> list[Element]:
    return [x for x in (E(H + "SyncKey", key),
                        None if parent is None else E(H + "ParentId", parent),
                        None if name is None else E(H + "DisplayName", name),
                        None if ftype is None else E(H + "Type", str(ftype))) if x is not None]


@pytest_twisted.ensureDeferred
async def test_create_folder_and_snapshot_update(env: Any) -> None:
    server, user = env
    key_other = await initial(env, "other")
    key = await initial(env)
    waiter = Heard(server.notifier, user.id, ["hierarchy"])
    body = await call(env, "FolderCreate", *create(key, "Team calendar", 13))
    assert [c.tag for c in body.children] == [H + "Status", H + "SyncKey", H + "ServerId"]
    assert status(body) == "1"
    new_key = body.findtext(H + "SyncKey")
    sid = body.findtext(H + "ServerId")
    assert new_key and new_key != key and sid
    assert waiter.called
    folders = {f.server_id: f for f in await server.items.list_folders(user)}
    assert folders[sid].name == "Team calendar" and folders[sid].type == 13

    # The creating device does not get its own folder back ...
    assert count(await fsync(env, new_key)) == 0
    # ... its old key is no longer current ...
    assert status(await call(env, "FolderCreate", *create(key, "Again", 13))) == "9"
    # ... and every other device does get it.
    body = await fsync(env, key_other, "other")
    assert entries(body, "Add") == [{"ServerId": sid, "ParentId": "0",
                                     "DisplayName": "Team calendar", "Type": "13"}]


@pytest_twisted.ensureDeferred
async def test_create_keeps_concurrent_changes_for_the_next_folder_sync(env: Any) -> None:
    server, user = env
    key = await initial(env)
    elsewhere = await server.items.create_folder(user, "0", "From the CRM", 14)
    body = await call(env, "FolderCreate", *create(key, "Mine", 15))
    assert status(body) == "1"
    mine = body.findtext(H + "ServerId")
    follow = await fsync(env, body.findtext(H + "SyncKey"))
    adds = entries(follow, "Add")
    assert [a["ServerId"] for a in adds] == [elsewhere.server_id]
    assert mine != elsewhere.server_id


@pytest_twisted.ensureDeferred
async def test_create_every_user_type_and_subfolders(env: Any) -> None:
    key = await initial(env)
    for ftype in (13, 14, 15):
        body = await call(env, "FolderCreate", *create(key, f"F{ftype}", ftype))
        assert status(body) == "1"
        key = body.findtext(H + "SyncKey")
    parent = await folder_id(env, "F14")
    body = await call(env, "FolderCreate", *create(key, "Sub", 14, parent))
    assert status(body) == "1"


@pytest_twisted.ensureDeferred
async def test_create_errors(env: Any) -> None:
    key = await initial(env)
    # No hierarchy key yet on this device / a stale key.
    assert status(await call(env, "FolderCreate", *create("1", "X"), device_id="new")) == "9"
    assert status(await call(env, "FolderCreate", *create("999", "X"))) == "9"
    # Mail, generic and notes folders are not kept by easync.
    for ftype in (1, 12, 17, 19):
        assert status(await call(env, "FolderCreate", *create(key, "X", ftype))) == "10"
    # Missing or bad fields.
    assert status(await call(env, "FolderCreate", *create(key, "X", None))) == "10"
    assert status(await call(env, "FolderCreate", *create(key, "X", "abc"))) == "10"
    assert status(await call(env, "FolderCreate", E(H + "SyncKey", key), E(H + "ParentId", "0"),
                             E(H + "Type", "13"))) == "10"
    assert status(await call(env, "FolderCreate", *create(key, "   ", 13))) == "10"
    assert status(await call(env, "FolderCreate", E(H + "ParentId", "0"),
                             E(H + "DisplayName", "X"), E(H + "Type", "13"))) == "10"
    # Unknown parent.
    assert status(await call(env, "FolderCreate", *create(key, "X", 13, "no-such"))) == "5"
    # Name taken under the same parent.
    body = await call(env, "FolderCreate", *create(key, "Dup", 13))
    assert status(body) == "1"
    key = body.findtext(H + "SyncKey")
    body = await call(env, "FolderCreate", *create(key, "Dup", 13))
    assert status(body) == "2"
    assert body.find(H + "ServerId") is None
    # Failed creates did not change the key.
    assert status(await call(env, "FolderCreate", *create(key, "Fine", 14))) == "1"


# ------------------------------------------------------------------------- FolderUpdate

def update(key: str, sid: str, name: str, parent: str = "0") -> list[Element]:
    return [E(H + "SyncKey", key), E(H + "ServerId", sid), E(H + "ParentId", parent),
            E(H + "DisplayName", name)]


@pytest_twisted.ensureDeferred
async def test_update_folder(env: Any) -> None:
    server, user = env
    key_other = await initial(env, "other")
    folder = await server.items.create_folder(user, "0", "Old", 14)
    key = await initial(env)
    body = await call(env, "FolderUpdate", *update(key, folder.server_id, "New"))
    assert [c.tag for c in body.children] == [H + "Status", H + "SyncKey"]
    assert status(body) == "1"
    new_key = body.findtext(H + "SyncKey")
    assert new_key != key
    folders = {f.server_id: f for f in await server.items.list_folders(user)}
    assert folders[folder.server_id].name == "New"
    assert count(await fsync(env, new_key)) == 0
    body = await fsync(env, key_other, "other")
    assert entries(body, "Add") == [{"ServerId": folder.server_id, "ParentId": "0",
                                     "DisplayName": "New", "Type": "14"}]


@pytest_twisted.ensureDeferred
async def test_update_moves_under_another_parent(env: Any) -> None:
    server, user = env
    a = await server.items.create_folder(user, "0", "A", 14)
    b = await server.items.create_folder(user, "0", "B", 14)
    key = await initial(env)
    body = await call(env, "FolderUpdate", *update(key, b.server_id, "B", a.server_id))
    assert status(body) == "1"
    folders = {f.server_id: f for f in await server.items.list_folders(user)}
    assert folders[b.server_id].parent_id == a.server_id
    key = body.findtext(H + "SyncKey")
    # A folder cannot go below itself or its own child.
    assert status(await call(env, "FolderUpdate",
                             *update(key, a.server_id, "A", a.server_id))) == "10"
    assert status(await call(env, "FolderUpdate",
                             *update(key, a.server_id, "A", b.server_id))) == "10"


@pytest_twisted.ensureDeferred
async def test_update_errors(env: Any) -> None:
    server, user = env
    x = await server.items.create_folder(user, "0", "X", 13)
    await server.items.create_folder(user, "0", "Y", 13)
    key = await initial(env)
    calendar = await folder_id(env, "Calendar")
    assert status(await call(env, "FolderUpdate", *update("999", x.server_id, "Z"))) == "9"
    assert status(await call(env, "FolderUpdate", *update(key, "no-such", "Z"))) == "4"
    assert status(await call(env, "FolderUpdate", *update(key, calendar, "Cal"))) == "3"
    assert status(await call(env, "FolderUpdate", *update(key, x.server_id, "Z",
                                                           "no-such"))) == "5"
    assert status(await call(env, "FolderUpdate", *update(key, x.server_id, "Y"))) == "2"
    assert status(await call(env, "FolderUpdate", E(H + "SyncKey", key),
                             E(H + "ServerId", x.server_id),
                             E(H + "DisplayName", "Z"))) == "10"
    assert status(await call(env, "FolderUpdate", E(H + "ServerId", x.server_id),
                             E(H + "ParentId", "0"), E(H + "DisplayName", "Z"))) == "10"
    assert status(await call(env, "FolderUpdate", *update(key, x.server_id, ""))) == "10"
    # None of that changed anything.
    assert status(await call(env, "FolderUpdate", *update(key, x.server_id, "Z"))) == "1"


# ------------------------------------------------------------------------- FolderDelete

@pytest_twisted.ensureDeferred
async def test_delete_folder(env: Any) -> None:
    server, user = env
    folder = await server.items.create_folder(user, "0", "Doomed", 15)
    key_other = await initial(env, "other")
    key = await initial(env)
    waiter = Heard(server.notifier, user.id, ["hierarchy"])
    body = await call(env, "FolderDelete", E(H + "SyncKey", key),
                      E(H + "ServerId", folder.server_id))
    assert [c.tag for c in body.children] == [H + "Status", H + "SyncKey"]
    assert status(body) == "1"
    assert waiter.called
    new_key = body.findtext(H + "SyncKey")
    assert folder.server_id not in {f.server_id for f in await server.items.list_folders(user)}
    assert count(await fsync(env, new_key)) == 0
    assert entries(await fsync(env, key_other, "other"), "Delete") == [
        {"ServerId": folder.server_id}]


@pytest_twisted.ensureDeferred
async def test_delete_errors(env: Any) -> None:
    server, user = env
    folder = await server.items.create_folder(user, "0", "Keep", 15)
    key = await initial(env)
    contacts = await folder_id(env, "Contacts")
    inbox = await folder_id(env, "Inbox")

    def delete(k: str, sid: str) -> list[Element]:
        return [E(H + "SyncKey", k), E(H + "ServerId", sid)]

    assert status(await call(env, "FolderDelete", *delete("999", folder.server_id))) == "9"
    assert status(await call(env, "FolderDelete", *delete(key, "no-such"))) == "4"
    assert status(await call(env, "FolderDelete", *delete(key, contacts))) == "3"
    assert status(await call(env, "FolderDelete", *delete(key, inbox))) == "3"
    assert status(await call(env, "FolderDelete", E(H + "SyncKey", key))) == "10"
    assert status(await call(env, "FolderDelete", E(H + "ServerId", folder.server_id))) == "10"
    assert status(await call(env, "FolderDelete", *delete(key, folder.server_id))) == "1"
