"""The sync engine's rules, driven through the Sync/GetItemEstimate handlers in process
against a real SQLite store (no HTTP: that is what the e2e tests are for)."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from sqlserver import sqlite_server, until

from easync.commands import getitemestimate, sync
from easync.context import EasRequest
from easync.model import Op
from easync.wbxml import decode, encode
from easync.wbxml.element import E, Element


@pytest_twisted.async_yield_fixture()
async def env(tmp_path):
    async with sqlite_server(tmp_path, "engine.sqlite", ("zoe", "zoe@example.org"),
                             clocked=True) as (server, user, store):
        folders = {f.name: f.server_id for f in await store.list_folders(user)}
        yield server, user, folders


def req(user: Any, body: Element | None, device: str = "devA", version: str = "14.1",
        cmd: str = "Sync") -> EasRequest:
    return EasRequest(cmd=cmd, user=user, device_id=device, device_type="iPhone",
                      version=version, body=body, user_agent="Apple-iPhone13C2/2003.68")


def coll(cid: str, key: str, *extra: Element | None) -> Element:
    return E("AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
             *extra)


def sync_body(*colls: Element, top: list[Element] | None = None) -> Element:
    return E("AirSync:Sync", E("AirSync:Collections", *colls), *(top or []))


def contact(first: str, **more: str) -> Element:
    app = E("AirSync:ApplicationData", E("Contacts:FirstName", first))
    for k, v in more.items():
        app.add(f"Contacts:{k}", v)
    return app


async def run(server, user, body, device="devA", version="14.1"):
    """One Sync; the answer goes through the real WBXML encoder and decoder."""
    resp = await sync.handle(server, req(user, body, device, version))
    return None if resp.body is None else decode(encode(resp.body))


def the_coll(body: Element) -> Element:
    return body.find("AirSync:Collections").find("AirSync:Collection")


def key_of(body: Element) -> str:
    return the_coll(body).findtext("AirSync:SyncKey")


async def prime(server, user, cid, device="devA") -> str:
    body = await run(server, user, sync_body(coll(cid, "0")), device)
    key = key_of(body)
    while True:
        body = await run(server, user, sync_body(coll(cid, key)), device)
        if body is None:
            return key
        key = key_of(body)
        if the_coll(body).find("AirSync:MoreAvailable") is None:
            return key


async def add_on_server(server, user, cid, n, prefix="S"):
    ops = [Op(kind="add", data={"FirstName": f"{prefix}{i}"}, cls="Contacts") for i in range(n)]
    res = await server.items.apply(user, cid, ops)
    server.notifier.publish(user.id, cid)
    return [r.server_id for r in res]


def commands(body: Element | None) -> list[tuple[str, str, Element | None]]:
    if body is None:
        return []
    cmds = the_coll(body).find("AirSync:Commands")
    out = []
    for c in cmds.children if cmds is not None else []:
        out.append((c.tag.split(":")[1], c.findtext("AirSync:ServerId"),
                    c.find("AirSync:ApplicationData")))
    return out


@pytest_twisted.ensureDeferred
async def test_synckey_zero_gives_key_and_no_commands(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await add_on_server(server, user, cid, 3)
    body = await run(server, user, sync_body(coll(cid, "0", E("AirSync:WindowSize", "50"),
                                                  E("AirSync:GetChanges", "1"))))
    assert the_coll(body).findtext("AirSync:Status") == "1"
    assert key_of(body) not in ("0", "")
    assert commands(body) == []


@pytest_twisted.ensureDeferred
async def test_nothing_new_gives_empty_response_and_same_key(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    key = await prime(server, user, cid)
    assert await run(server, user, sync_body(coll(cid, key))) is None
    # and the key is still the valid one
    await add_on_server(server, user, cid, 1)
    body = await run(server, user, sync_body(coll(cid, key)))
    assert len(commands(body)) == 1


@pytest_twisted.ensureDeferred
async def test_window_size_and_more_available_across_collections(env) -> None:
    server, user, folders = env
    c1, c2 = folders["Contacts"], folders["Tasks"]
    await add_on_server(server, user, c1, 30)
    k1 = key_of(await run(server, user, sync_body(coll(c1, "0"))))
    k2 = key_of(await run(server, user, sync_body(coll(c2, "0"))))
    await server.items.apply(user, c2, [Op(kind="add", data={"Subject": f"T{i}"}, cls="Tasks")
                                        for i in range(5)])
    body = await run(server, user, sync_body(
        coll(c1, k1, E("AirSync:WindowSize", "10")), coll(c2, k2, E("AirSync:WindowSize", "10")),
        top=[E("AirSync:WindowSize", "12")]))
    colls = body.find("AirSync:Collections").findall("AirSync:Collection")
    got1 = colls[0].find("AirSync:Commands").children
    assert len(got1) == 10
    assert colls[0].find("AirSync:MoreAvailable") is not None
    total = sum(len(c.find("AirSync:Commands").children) for c in colls
                if c.find("AirSync:Commands") is not None)
    assert total == 12                       # 10 contacts, then 2 of the 5 tasks
    assert colls[1].find("AirSync:MoreAvailable") is not None
    # a request whose overall window is used up by the first collection still tells
    # the device that the second has more
    k1 = colls[0].findtext("AirSync:SyncKey")
    k2 = colls[1].findtext("AirSync:SyncKey")
    body = await run(server, user, sync_body(
        coll(c1, k1, E("AirSync:WindowSize", "10")), coll(c2, k2, E("AirSync:WindowSize", "10")),
        top=[E("AirSync:WindowSize", "10")]))
    colls = body.find("AirSync:Collections").findall("AirSync:Collection")
    assert len(colls[0].find("AirSync:Commands").children) == 10
    assert colls[1].find("AirSync:Commands") is None
    assert colls[1].find("AirSync:MoreAvailable") is not None


@pytest_twisted.ensureDeferred
async def test_own_changes_not_echoed_but_others_are(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    ka = await prime(server, user, cid, "devA")
    kb = await prime(server, user, cid, "devB")
    add = E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", "c1"), contact("Ann")))
    body = await run(server, user, sync_body(coll(cid, ka, E("AirSync:GetChanges", "0"), add)))
    sid = the_coll(body).find("AirSync:Responses").find("AirSync:Add").findtext("AirSync:ServerId")
    ka = key_of(body)
    assert await run(server, user, sync_body(coll(cid, ka))) is None   # no echo to A
    body = await run(server, user, sync_body(coll(cid, kb)), "devB")
    assert [(k, s) for k, s, _ in commands(body)] == [("Add", sid)]


@pytest_twisted.ensureDeferred
async def test_conflict_server_wins_with_status_7_and_client_wins_when_asked(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    [sid] = await add_on_server(server, user, cid, 1)
    ka = await prime(server, user, cid)
    # the server changes it after A synced
    await server.items.apply(user, cid, [Op(kind="change", server_id=sid,
                                            data={"FirstName": "Server"})])
    change = E("AirSync:Commands", E("AirSync:Change", E("AirSync:ServerId", sid),
                                     contact("Client")))
    body = await run(server, user, sync_body(coll(cid, ka, change)))
    resp = the_coll(body).find("AirSync:Responses").find("AirSync:Change")
    assert resp.findtext("AirSync:Status") == "7"
    sent = [a for k, s, a in commands(body) if s == sid]
    assert sent and sent[0].findtext("Contacts:FirstName") == "Server"
    [item] = await server.items.get_items(user, [sid])
    assert item.data["FirstName"] == "Server"
    ka = key_of(body)
    # client wins (Conflict 0)
    await server.items.apply(user, cid, [Op(kind="change", server_id=sid,
                                            data={"FirstName": "Server2"})])
    opts = E("AirSync:Options", E("AirSync:Conflict", "0"))
    body = await run(server, user, sync_body(coll(cid, ka, opts, change)))
    [item] = await server.items.get_items(user, [sid])
    assert item.data["FirstName"] == "Client"
    assert all(s != sid for _k, s, _a in commands(body))


@pytest_twisted.ensureDeferred
async def test_change_and_delete_of_unknown_item_are_status_8_and_fetch(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    [sid] = await add_on_server(server, user, cid, 1)
    key = await prime(server, user, cid)
    cmds = E("AirSync:Commands",
             E("AirSync:Change", E("AirSync:ServerId", f"{cid}:999999"), contact("X")),
             E("AirSync:Delete", E("AirSync:ServerId", f"{cid}:999998")),
             E("AirSync:Fetch", E("AirSync:ServerId", sid)))
    body = await run(server, user, sync_body(coll(cid, key, cmds)))
    responses = the_coll(body).find("AirSync:Responses")
    statuses = {(r.tag, r.findtext("AirSync:ServerId")): r.findtext("AirSync:Status")
                for r in responses.children}
    assert statuses[("AirSync:Change", f"{cid}:999999")] == "8"
    assert statuses[("AirSync:Delete", f"{cid}:999998")] == "8"
    assert statuses[("AirSync:Fetch", sid)] == "1"
    fetched = responses.find("AirSync:Fetch").find("AirSync:ApplicationData")
    assert fetched.findtext("Contacts:FirstName") == "S0"


@pytest_twisted.ensureDeferred
async def test_add_without_client_id_is_status_4_and_bad_item_status_6(env) -> None:
    server, user, folders = env
    cid = folders["Calendar"]
    key = await prime(server, user, cid)
    # an Add without ApplicationData cannot be an item (MS-ASCMD 2.2.3.177.17: 6) ...
    cmds = E("AirSync:Commands",
             E("AirSync:Add", contact("NoId")),
             E("AirSync:Add", E("AirSync:ClientId", "b1")))
    body = await run(server, user, sync_body(coll(cid, key, cmds)))
    adds = the_coll(body).find("AirSync:Responses").findall("AirSync:Add")
    assert [a.findtext("AirSync:Status") for a in adds] == ["4", "6"]
    changes = await server.items.changes_since(user, cid, 0, 100)
    assert changes.changes == []
    # ... but one unreadable value costs only that value (issue 8, point 3)
    key = the_coll(body).findtext("AirSync:SyncKey")
    bad = E("AirSync:ApplicationData", E("Calendar:StartTime", "not a date"),
            E("Calendar:Subject", "x"))
    body = await run(server, user, sync_body(coll(cid, key, E(
        "AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", "b2"), bad)))))
    add = the_coll(body).find("AirSync:Responses").find("AirSync:Add")
    assert add.findtext("AirSync:Status") == "1"
    [item] = await server.items.get_items(user, [add.findtext("AirSync:ServerId")])
    assert item.data["Subject"] == "x" and "StartTime" not in item.data


@pytest_twisted.ensureDeferred
async def test_resend_of_previous_key_replays_without_applying_again(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    await add_on_server(server, user, cid, 2)
    key = await prime(server, user, cid)
    await add_on_server(server, user, cid, 3, prefix="New")
    add = E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", "r1"), contact("Mine")))
    body1 = await run(server, user, sync_body(coll(cid, key, add)))
    body2 = await run(server, user, sync_body(coll(cid, key, add)))
    assert key_of(body1) == key_of(body2)
    assert commands(body1) and [(k, s) for k, s, _ in commands(body1)] == \
        [(k, s) for k, s, _ in commands(body2)]
    r1 = the_coll(body1).find("AirSync:Responses").find("AirSync:Add")
    r2 = the_coll(body2).find("AirSync:Responses").find("AirSync:Add")
    assert r1.findtext("AirSync:ServerId") == r2.findtext("AirSync:ServerId")
    feed = await server.items.changes_since(user, cid, 0, 1000)
    names = [c.item.data.get("FirstName") for c in feed.changes if c.item]
    assert names.count("Mine") == 1
    # the key before that is no longer accepted
    body = await run(server, user, sync_body(coll(cid, "{00000000}1")))
    assert the_coll(body).findtext("AirSync:Status") == "3"


@pytest_twisted.ensureDeferred
async def test_empty_and_partial_requests_use_the_cache(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    # nothing cached yet → Status 13
    resp = await sync.handle(server, req(user, None, "devC"))
    assert resp.body.findtext("AirSync:Status") == "13"
    key = await prime(server, user, cid, "devC")
    await add_on_server(server, user, cid, 2)
    resp = await sync.handle(server, req(user, None, "devC"))       # empty body
    assert len(commands(decode(encode(resp.body)))) == 2
    await add_on_server(server, user, cid, 1)
    partial = E("AirSync:Sync", E("AirSync:Partial"))
    resp = await sync.handle(server, req(user, partial, "devC"))
    assert len(commands(decode(encode(resp.body)))) == 1
    assert key != key_of(resp.body)


@pytest_twisted.ensureDeferred
async def test_wait_and_heartbeat_limits(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    key = await prime(server, user, cid)
    both = sync_body(coll(cid, key), top=[E("AirSync:Wait", "5"),
                                          E("AirSync:HeartbeatInterval", "300")])
    resp = await sync.handle(server, req(user, both))
    assert resp.body.findtext("AirSync:Status") == "4"
    too_long = sync_body(coll(cid, key), top=[E("AirSync:Wait", "90")])
    resp = await sync.handle(server, req(user, too_long))
    assert resp.body.findtext("AirSync:Status") == "14"
    assert resp.body.findtext("AirSync:Limit") == "59"
    too_short = sync_body(coll(cid, key), top=[E("AirSync:HeartbeatInterval", "5")])
    resp = await sync.handle(server, req(user, too_short))
    assert resp.body.findtext("AirSync:Status") == "14"
    assert resp.body.findtext("AirSync:Limit") == str(server.settings.heartbeat_min)


@pytest_twisted.ensureDeferred
async def test_sync_wait_is_answered_by_a_change(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    key = await prime(server, user, cid)
    from twisted.internet.defer import Deferred

    d = Deferred.fromCoroutine(sync.handle(server, req(user, sync_body(
        coll(cid, key), top=[E("AirSync:HeartbeatInterval", "300")]))))
    await until(lambda: server.notifier.waiting == 1)
    assert not d.called
    await add_on_server(server, user, cid, 1)
    resp = await d
    assert len(commands(decode(encode(resp.body)))) == 1
    assert server.notifier.waiting == 0
    # and with nothing new the heartbeat ends it with an empty response
    key = key_of(resp.body)
    d = Deferred.fromCoroutine(sync.handle(server, req(user, sync_body(
        coll(cid, key), top=[E("AirSync:HeartbeatInterval", "300")]))))
    await until(lambda: server.notifier.waiting == 1)
    server.clock.advance(299)
    assert not d.called
    server.clock.advance(2)
    resp = await d
    assert resp.body is None and server.notifier.waiting == 0


@pytest_twisted.ensureDeferred
async def test_supported_ghosts_unlisted_properties(env) -> None:
    server, user, folders = env
    cid = folders["Contacts"]
    [sid] = await add_on_server(server, user, cid, 1)
    await server.items.apply(user, cid, [Op(kind="change", server_id=sid, data={
        "FirstName": "Gina", "LastName": "Ghost", "JobTitle": "Boss"})])
    supported = E("AirSync:Supported", E("Contacts:FirstName"), E("Contacts:JobTitle"))
    body = await run(server, user, sync_body(coll(cid, "0", supported)), "devG")
    key = key_of(body)
    key = key_of(await run(server, user, sync_body(coll(cid, key)), "devG"))
    change = E("AirSync:Commands", E("AirSync:Change", E("AirSync:ServerId", sid),
                                     contact("Gina2")))
    await run(server, user, sync_body(coll(cid, key, change)), "devG")
    [item] = await server.items.get_items(user, [sid])
    # FirstName changed; JobTitle is managed by the device and was left out → cleared;
    # LastName is not in Supported → ghosted, kept.
    assert item.data.get("FirstName") == "Gina2"
    assert "JobTitle" not in item.data
    assert item.data.get("LastName") == "Ghost"


@pytest_twisted.ensureDeferred
async def test_calendar_filter_type_leaves_out_old_events(env) -> None:
    server, user, folders = env
    cid = folders["Calendar"]
    old = {"Subject": "Old", "StartTime": "20000101T100000Z", "EndTime": "20000101T110000Z"}
    new = {"Subject": "New", "StartTime": "20991201T100000Z", "EndTime": "20991201T110000Z"}
    await server.items.apply(user, cid, [Op(kind="add", data=old, cls="Calendar"),
                                         Op(kind="add", data=new, cls="Calendar")])
    opts = E("AirSync:Options", E("AirSync:FilterType", "4"))
    key = key_of(await run(server, user, sync_body(coll(cid, "0", opts))))
    est = await getitemestimate.handle(server, req(user, E(
        "ItemEstimate:GetItemEstimate", E("ItemEstimate:Collections", E(
            "ItemEstimate:Collection", E("AirSync:SyncKey", key),
            E("ItemEstimate:CollectionId", cid), opts))), cmd="GetItemEstimate"))
    assert est.body.find("ItemEstimate:Response").find("ItemEstimate:Collection").findtext(
        "ItemEstimate:Estimate") == "1"
    body = await run(server, user, sync_body(coll(cid, key, opts)))
    subjects = [a.findtext("Calendar:Subject") for _k, _s, a in commands(body)]
    assert subjects == ["New"]


@pytest_twisted.ensureDeferred
async def test_events_linked_to_contacts_through_sync(env) -> None:
    server, user, folders = env
    contacts, cal = folders["Contacts"], folders["Calendar"]
    [ann] = (await server.items.apply(user, contacts, [Op(kind="add", cls="Contacts", data={
        "FirstName": "Ann", "Email1Address": '"Ann" <ann@example.org>'})]))
    key = await prime(server, user, cal)
    meeting = E("AirSync:ApplicationData",
                E("Calendar:Subject", "Review"), E("Calendar:StartTime", "20270105T090000Z"),
                E("Calendar:EndTime", "20270105T100000Z"),
                E("Calendar:Attendees", E("Calendar:Attendee",
                                          E("Calendar:Email", "ann@example.org"),
                                          E("Calendar:Name", "Ann"))))
    body = await run(server, user, sync_body(coll(cal, key, E("AirSync:Commands", E(
        "AirSync:Add", E("AirSync:ClientId", "m"), meeting)))))
    event = the_coll(body).find("AirSync:Responses").find("AirSync:Add").findtext(
        "AirSync:ServerId")
    key = key_of(body)
    assert await server.items.linked_contacts(user, event) == [ann.server_id]
    # the phone moves the meeting: the link stays
    moved = E("AirSync:ApplicationData",
              E("Calendar:Subject", "Review"), E("Calendar:StartTime", "20270106T090000Z"),
              E("Calendar:EndTime", "20270106T100000Z"),
              E("Calendar:Attendees", E("Calendar:Attendee",
                                        E("Calendar:Email", "ann@example.org"),
                                        E("Calendar:Name", "Ann"))))
    body = await run(server, user, sync_body(coll(cal, key, E("AirSync:Commands", E(
        "AirSync:Change", E("AirSync:ServerId", event), moved)))))
    key = key_of(body)
    assert await server.items.linked_contacts(user, event) == [ann.server_id]
    # the contact's address changes: the link still stands
    await server.items.apply(user, contacts, [Op(kind="change", server_id=ann.server_id,
                                                 data={"FirstName": "Ann",
                                                       "Email1Address": "ann@new.example"})])
    assert await server.items.linked_events(user, ann.server_id) == [event]
    # the attendee is removed: the link goes
    alone = E("AirSync:ApplicationData",
              E("Calendar:Subject", "Review"), E("Calendar:StartTime", "20270106T090000Z"),
              E("Calendar:EndTime", "20270106T100000Z"))
    await run(server, user, sync_body(coll(cal, key, E("AirSync:Commands", E(
        "AirSync:Change", E("AirSync:ServerId", event), alone)))))
    assert await server.items.linked_contacts(user, event) == []


@pytest_twisted.ensureDeferred
async def test_moveitems_is_not_echoed_to_the_moving_device(env) -> None:
    from easync.commands import moveitems

    server, user, folders = env
    src = folders["Contacts"]
    dst = (await server.items.create_folder(user, "0", "Clients", 14)).server_id
    [sid] = await add_on_server(server, user, src, 1)
    ka = await prime(server, user, src, "devM")
    kd = await prime(server, user, dst, "devM")
    kb = await prime(server, user, src, "devN")
    kbd = await prime(server, user, dst, "devN")
    resp = await moveitems.handle(server, req(user, E("Move:MoveItems", E(
        "Move:Move", E("Move:SrcMsgId", sid), E("Move:SrcFldId", src),
        E("Move:DstFldId", dst))), "devM", cmd="MoveItems"))
    move = resp.body.find("Move:Response")
    assert move.findtext("Move:Status") == "3"
    new_id = move.findtext("Move:DstMsgId")
    assert await run(server, user, sync_body(coll(src, ka)), "devM") is None
    assert await run(server, user, sync_body(coll(dst, kd)), "devM") is None
    # another device does see the move: a Delete in the source, an Add in the destination
    body = await run(server, user, sync_body(coll(src, kb)), "devN")
    assert [(k, s) for k, s, _ in commands(body)] == [("Delete", sid)]
    body = await run(server, user, sync_body(coll(dst, kbd)), "devN")
    assert [(k, s) for k, s, _ in commands(body)] == [("Add", new_id)]
