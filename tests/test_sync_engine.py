"""The sync engine's rules, driven through the Sync/GetItemEstimate handlers in process
against a real SQLite store (no HTTP: that is what the e2e tests are for)."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from sqlserver import memory_server, until

from easync.commands import getitemestimate, sync
from easync.handler import EasRequest
from easync.model import Op
from easync.wbxml import decode, encode
from easync.wbxml.element import E, Element


@pytest_twisted.async_yield_fixture()
async def env(tmp_path):
    async with memory_server(tmp_path, "engine.sqlite", ("zoe", "zoe@example.org"),
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


# -- issue 8, point 9: WindowSize 0 ------------------------------------------------------

def n_commands(body: Element | None) -> int:
    return len(commands(body))


@pytest_twisted.ensureDeferred
async def test_window_size_zero_and_above_512_mean_512(env) -> None:
    """MS-ASCMD 2.2.3.199: "The server interprets the value 0 (zero) and values above
    512 as 512"; an absent WindowSize is 100.  Per collection and for the request."""
    server, user, folders = env
    cid = folders["Contacts"]
    await add_on_server(server, user, cid, 1100)
    keys = {}
    for dev in ("w0", "w1", "w2", "w3", "w4"):
        keys[dev] = key_of(await run(server, user, sync_body(coll(cid, "0")), dev))

    async def first(dev: str, inner: list[Element], top: list[Element] | None = None) -> Element:
        return await run(server, user, sync_body(coll(cid, keys[dev], *inner), top=top), dev)

    body = await first("w0", [E("AirSync:WindowSize", "0")])
    assert n_commands(body) == 512 and the_coll(body).find("AirSync:MoreAvailable") is not None
    body = await first("w1", [])
    assert n_commands(body) == 100
    body = await first("w2", [E("AirSync:WindowSize", "1000")])
    assert n_commands(body) == 512
    # the request-wide WindowSize: 0 is 512 too, and it caps the collection's
    body = await first("w3", [E("AirSync:WindowSize", "0")], top=[E("AirSync:WindowSize", "0")])
    assert n_commands(body) == 512
    body = await first("w4", [E("AirSync:WindowSize", "0")], top=[E("AirSync:WindowSize", "7")])
    assert n_commands(body) == 7


def test_window_size_rule() -> None:
    """MS-ASCMD 2.2.3.199, and --max-window caps whatever the device asks."""
    assert sync.window_size(None, 100, 512) == 100
    assert sync.window_size(0, 100, 512) == 512
    assert sync.window_size(513, 100, 512) == 512
    assert sync.window_size(7, 100, 512) == 7
    assert sync.window_size(0, 100, 50) == 50
    assert sync.window_size(None, None, 512) == 512


# -- issue 8, point 6: a re-added event maps to the existing one ----------------------------

CLIENT_UID = "7D3C1F0E9A8B4C2DA1B2C3D4E5F60718"


def meeting(subject: str, uid: str | None, version: str, start: str = "20270105T090000Z",
            end: str = "20270105T100000Z") -> Element:
    app = E("AirSync:ApplicationData", E("Calendar:Subject", subject),
            E("Calendar:StartTime", start), E("Calendar:EndTime", end))
    if uid is not None:
        # iOS sends its ClientUid with a trailing NUL (32 hex + NUL)
        app.append(E("Calendar:ClientUid", uid + "\x00") if version.startswith("16")
                   else E("Calendar:UID", uid))
    return app


def add_cmds(*pairs: tuple[str, Element]) -> Element:
    return E("AirSync:Commands", *[E("AirSync:Add", E("AirSync:ClientId", c), app)
                                   for c, app in pairs])


def add_responses(body: Element) -> list[tuple[str, str | None, str, str | None]]:
    """(ClientId, ServerId, Status, UID) of each Responses/Add."""
    resp = the_coll(body).find("AirSync:Responses")
    out = []
    for a in resp.findall("AirSync:Add") if resp is not None else []:
        app = a.find("AirSync:ApplicationData")
        out.append((a.findtext("AirSync:ClientId"), a.findtext("AirSync:ServerId"),
                    a.findtext("AirSync:Status"),
                    app.findtext("Calendar:UID") if app is not None else None))
    return out


async def all_items(server, user, cid) -> list[Any]:
    feed = await server.items.changes_since(user, cid, 0, 100_000)
    return [c.item for c in feed.changes if c.item is not None]


class Phone:
    """What a device holds after applying the answers it gets (ServerId -> data)."""

    def __init__(self) -> None:
        self.held: dict[str, Element | None] = {}
        self.adds = 0

    def apply(self, body: Element | None, sent: dict[str, Element] | None = None) -> None:
        if body is None:
            return
        for cid, sid, status, _uid in add_responses(body):
            if status == "1" and sid:
                self.held[sid] = (sent or {}).get(cid)
        for kind, sid, app in commands(body):
            if kind == "Add":
                assert sid not in self.held, f"Add of {sid}, which the phone holds"
                self.held[sid] = app
            elif kind == "Change":
                self.held[sid] = app
            elif kind in ("Delete", "SoftDelete"):
                self.held.pop(sid, None)


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
@pytest_twisted.ensureDeferred
async def test_readded_event_after_a_resync_maps_to_the_existing_item(env, version) -> None:
    """MS-ASCAL 2.2.2.13: the server uses ClientUid (16.x; UID before) to find that an
    added event already exists.  A phone that resyncs (SyncKey 0) and re-adds its
    events gets Status 1 with the existing ServerId (and at 16.x its UID), nothing is
    written, and the phone ends with exactly one copy."""
    server, user, folders = env
    cid = folders["Calendar"]
    dev = f"re{version}"
    key = await prime(server, user, cid, dev)
    body = await run(server, user, sync_body(coll(cid, key, E("AirSync:GetChanges", "0"),
                                                  add_cmds(("c1", meeting("Mine", CLIENT_UID,
                                                                          version))))),
                     dev, version)
    [(_c, sid, status, uid)] = add_responses(body)
    assert status == "1" and sid
    [before] = await server.items.get_items(user, [sid])
    # another event from elsewhere, so the feed has something to send
    await server.items.apply(user, cid, [Op(kind="add", cls="Calendar", data={
        "Subject": "Theirs", "StartTime": "20270106T090000Z", "EndTime": "20270106T100000Z",
        "UID": "THEIRS-1"})])
    # the phone is reset: SyncKey 0, then its events come back as Adds
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0")), dev, version))
    again = meeting("Mine", CLIENT_UID, version)
    body = await run(server, user, sync_body(coll(cid, key, add_cmds(("c9", again)))), dev,
                     version)
    phone.apply(body, {"c9": again})
    [(c9, sid2, status, uid2)] = add_responses(body)
    assert (c9, sid2, status) == ("c9", sid, "1")
    if version.startswith("16"):
        assert uid2 == uid == CLIENT_UID
    else:
        assert uid2 is None
    items = await all_items(server, user, cid)
    assert sorted(i.data["Subject"] for i in items) == ["Mine", "Theirs"]
    [after] = await server.items.get_items(user, [sid])
    assert after.modseq == before.modseq and after.data == before.data
    # the phone goes on syncing: the other event arrives, its own never comes as an Add
    key = key_of(body)
    while True:
        body = await run(server, user, sync_body(coll(cid, key)), dev, version)
        if body is None:
            break
        phone.apply(body)
        key = key_of(body)
    assert len(phone.held) == 2 and sid in phone.held
    # a later change of it on the server reaches the phone as a Change
    await server.items.apply(user, cid, [Op(kind="change", server_id=sid, data=dict(
        before.data, Subject="Mine v2"))])
    body = await run(server, user, sync_body(coll(cid, key)), dev, version)
    assert [(k, s) for k, s, _a in commands(body)] == [("Change", sid)]


@pytest_twisted.ensureDeferred
async def test_two_adds_with_one_client_uid_in_one_request_make_one_item(env) -> None:
    """MS-ASCAL 2.2.2.13: the same ClientUid twice in one Sync is one event."""
    server, user, folders = env
    cid = folders["Calendar"]
    key = await prime(server, user, cid, "twice")
    cmds = add_cmds(("a", meeting("Twice", CLIENT_UID, "16.1")),
                    ("b", meeting("Twice", CLIENT_UID, "16.1")),
                    ("c", meeting("Other", "0" * 31 + "1", "16.1")))
    body = await run(server, user, sync_body(coll(cid, key, cmds)), "twice", "16.1")
    got = {c: (s, st, u) for c, s, st, u in add_responses(body)}
    assert got["a"][0] and got["a"] == got["b"]
    assert got["a"][1] == "1" and got["a"][2] == CLIENT_UID
    assert got["c"][0] != got["a"][0]
    assert sorted(i.data["Subject"] for i in await all_items(server, user, cid)) == \
        ["Other", "Twice"]
    # and the resent request answers the same, writing nothing
    again = await run(server, user, sync_body(coll(cid, key, cmds)), "twice", "16.1")
    assert add_responses(again) == add_responses(body)
    assert len(await all_items(server, user, cid)) == 2


@pytest_twisted.ensureDeferred
async def test_readd_with_get_changes_leaves_the_item_out_of_the_commands(env) -> None:
    """The re-added event is also due to the reset phone as an Add in the same
    response (its cursor is 0): it is sent once, as the Responses' ServerId."""
    server, user, folders = env
    cid = folders["Calendar"]
    [res] = await server.items.apply(user, cid, [Op(kind="add", cls="Calendar", data={
        "Subject": "Known", "StartTime": "20270105T090000Z", "EndTime": "20270105T100000Z",
        "UID": CLIENT_UID})])
    key = key_of(await run(server, user, sync_body(coll(cid, "0")), "gc", "16.1"))
    body = await run(server, user, sync_body(coll(cid, key, add_cmds(
        ("k", meeting("Known", CLIENT_UID, "16.1"))))), "gc", "16.1")
    assert add_responses(body) == [("k", res.server_id, "1", CLIENT_UID)]
    assert commands(body) == []
    assert await run(server, user, sync_body(coll(cid, key_of(body))), "gc", "16.1") is None
    # a new event with another ClientUid is still added
    body = await run(server, user, sync_body(coll(cid, key_of(body), add_cmds(
        ("n", meeting("New", "1" * 32, "16.1"))))), "gc", "16.1")
    [(_c, sid, status, uid)] = add_responses(body)
    assert status == "1" and sid != res.server_id and uid == "1" * 32
    assert len(await all_items(server, user, cid)) == 2


# -- issue 8, point 8: FilterType on a live SyncKey, and the clock ---------------------------

def compact(ts: float) -> str:
    import time as _time

    return _time.strftime("%Y%m%dT%H%M%SZ", _time.gmtime(ts))


def cal_event(subject: str, start: float, hours: float = 1, **extra: Any) -> dict[str, Any]:
    return {"Subject": subject, "StartTime": compact(start),
            "EndTime": compact(start + hours * 3600), **extra}


def options(filter_type: int | None = None, window: int | None = None) -> list[Element]:
    out: list[Element] = []
    if window is not None:
        out.append(E("AirSync:WindowSize", str(window)))
    if filter_type is not None:
        out.append(E("AirSync:Options", E("AirSync:FilterType", str(filter_type))))
    return out


async def estimate(server, user, cid, key, filter_type, device) -> int:
    opts = [E("AirSync:Options", E("AirSync:FilterType", str(filter_type)))] \
        if filter_type is not None else []
    est = await getitemestimate.handle(server, req(user, E(
        "ItemEstimate:GetItemEstimate", E("ItemEstimate:Collections", E(
            "ItemEstimate:Collection", E("AirSync:SyncKey", key),
            E("ItemEstimate:CollectionId", cid), *opts))), device, cmd="GetItemEstimate"))
    resp = est.body.find("ItemEstimate:Response")
    assert resp.findtext("ItemEstimate:Status") == "1"
    return int(resp.find("ItemEstimate:Collection").findtext("ItemEstimate:Estimate"))


async def sync_all(server, user, cid, key, phone, device, filter_type=None, window=None,
                   check_resend=False) -> tuple[str, list[tuple[str, str]], int]:
    """Sync until nothing more (the first request with ``filter_type``); the phone
    applies each answer.  Returns (key, [(command, ServerId)...], responses)."""
    sent: list[tuple[str, str]] = []
    rounds = 0
    while True:
        body = await run(server, user, sync_body(coll(cid, key, *options(filter_type, window))),
                         device)
        if body is None:
            return key, sent, rounds
        if check_resend:
            # the answer was lost: the same key again gives the same answer
            again = await run(server, user, sync_body(coll(cid, key, *options(
                filter_type, window))), device)
            assert key_of(again) == key_of(body)
            assert [(k, s) for k, s, _a in commands(again)] == \
                [(k, s) for k, s, _a in commands(body)]
        rounds += 1
        phone.apply(body)
        got = [(k, s) for k, s, _a in commands(body)]
        sent += got
        assert window is None or len(got) <= window
        key = key_of(body)
        more = the_coll(body).find("AirSync:MoreAvailable") is not None
        assert more or not check_resend or len(got) <= (window or 100)
        if not more:
            return key, sent, rounds


async def expected(server, user, cid, inside) -> set[str]:
    """The ServerIds the device should hold: computed from the items' own fields."""
    return {i.server_id for i in await all_items(server, user, cid) if inside(i.data)}


@pytest_twisted.ensureDeferred
async def test_calendar_filter_type_changed_on_a_live_key(env) -> None:
    """MS-ASCMD 2.2.3.68.2: the server keeps the FilterType window — a wider one sends
    Adds for what enters it, a narrower one SoftDelete (MS-ASCMD 2.2.3.172) for what
    leaves it; windowed with MoreAvailable, each answer replayable, no duplicate.  A
    series whose last occurrence ended before the window is outside it."""
    server, user, folders = env
    cid = folders["Calendar"]
    now = server.clock.seconds()
    day = 86400
    datas = [cal_event(f"old{i}", now - (400 + i) * day) for i in range(23)]
    datas += [cal_event(f"future{i}", now + (3 + i) * day) for i in range(3)]
    datas += [cal_event("recent", now - 5 * day)]
    datas.append(cal_event("old series (count)", now - 400 * day, Recurrence={
        "Type": 1, "Interval": 1, "DayOfWeek": 2, "Occurrences": 5}))
    datas.append(cal_event("old series (until)", now - 400 * day, Recurrence={
        "Type": 0, "Interval": 1, "Until": compact(now - 390 * day)}))
    datas.append(cal_event("open series", now - 400 * day, Recurrence={
        "Type": 1, "Interval": 1, "DayOfWeek": 2}))
    datas.append(cal_event("live series", now - 400 * day, Recurrence={
        "Type": 0, "Interval": 1, "Occurrences": 1000}))
    await server.items.apply(user, cid, [Op(kind="add", data=d, cls="Calendar") for d in datas])

    def in_two_weeks(d: dict[str, Any]) -> bool:
        return not d["Subject"].startswith("old")

    dev = "ft"
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(4))), dev))
    assert await estimate(server, user, cid, key, None, dev) == 6
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, window=10)
    assert set(phone.held) == await expected(server, user, cid, in_two_weeks)
    assert len(phone.held) == 6
    # nothing changed, same FilterType: the same key, nothing sent
    assert await run(server, user, sync_body(coll(cid, key, *options(4))), dev) is None

    # wider: FilterType 0 (everything) on the same key
    est = await estimate(server, user, cid, key, 0, dev)
    key, sent, rounds = await sync_all(server, user, cid, key, phone, dev, 0, window=10,
                                       check_resend=True)
    assert {k for k, _s in sent} == {"Add"} and len(sent) == est == 25 and rounds == 3
    assert set(phone.held) == await expected(server, user, cid, lambda d: True)
    assert await run(server, user, sync_body(coll(cid, key, *options(0))), dev) is None

    # narrower again: FilterType 4
    est = await estimate(server, user, cid, key, 4, dev)
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 4, window=10,
                                   check_resend=True)
    assert {k for k, _s in sent} == {"SoftDelete"} and len(sent) == est == 25
    assert set(phone.held) == await expected(server, user, cid, in_two_weeks)
    # the items stay in the store
    assert len(await all_items(server, user, cid)) == len(datas)

    # a wider window in steps: 4 -> 7 (six months) -> 5 (one month)
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 7)
    assert sent == []       # nothing ended between six months and two weeks ago
    extra = await server.items.apply(user, cid, [Op(kind="add", cls="Calendar", data=cal_event(
        "two months ago", now - 60 * day))])
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 7)
    assert sent == [("Add", extra[0].server_id)]
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 5)
    assert sent == [("SoftDelete", extra[0].server_id)]


@pytest_twisted.ensureDeferred
async def test_filter_change_and_server_changes_in_one_answer(env) -> None:
    """A FilterType change while the server has news: the move and the feed both come,
    each item once, and the phone ends with what the new window holds."""
    server, user, folders = env
    cid = folders["Calendar"]
    now = server.clock.seconds()
    day = 86400
    ids = [r.server_id for r in await server.items.apply(user, cid, [
        Op(kind="add", cls="Calendar", data=cal_event(f"old{i}", now - 100 * day - i))
        for i in range(5)] + [Op(kind="add", cls="Calendar", data=cal_event("soon", now + day))])]
    dev = "mix"
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(4))), dev))
    key, _s, _n = await sync_all(server, user, cid, key, phone, dev)
    assert set(phone.held) == {ids[5]}
    # the server: one old event changes (still old), one is deleted, a new one comes
    await server.items.apply(user, cid, [
        Op(kind="change", server_id=ids[0], data=cal_event("old0 v2", now - 100 * day)),
        Op(kind="delete", server_id=ids[1]),
        Op(kind="add", cls="Calendar", data=cal_event("new", now + 2 * day))])
    est = await estimate(server, user, cid, key, 0, dev)
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 0, window=2,
                                   check_resend=True)
    assert len(sent) == est
    assert len({s for _k, s in sent}) == len(sent)
    assert set(phone.held) == await expected(server, user, cid, lambda d: True)
    assert len(phone.held) == 6


@pytest_twisted.ensureDeferred
async def test_events_leave_the_window_as_time_passes(env) -> None:
    """FilterType 4: an event that ended two weeks and a day ago has left the window;
    the next Sync sends its SoftDelete (as Exchange does), even with nothing changed in
    the folder.  The window follows the clock in steps of a day."""
    server, user, folders = env
    cid = folders["Calendar"]
    now = server.clock.seconds()
    day = 86400
    [near, far] = [r.server_id for r in await server.items.apply(user, cid, [
        Op(kind="add", cls="Calendar", data=cal_event("13 days ago", now - 13 * day - 3600)),
        Op(kind="add", cls="Calendar", data=cal_event("next week", now + 7 * day))])]
    dev = "clock"
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(4))), dev))
    key, _s, _n = await sync_all(server, user, cid, key, phone, dev)
    assert set(phone.held) == {near, far}
    server.clock.advance(12 * 3600)
    assert await run(server, user, sync_body(coll(cid, key)), dev) is None
    server.clock.advance(2 * day)
    assert await estimate(server, user, cid, key, None, dev) == 1
    body = await run(server, user, sync_body(coll(cid, key)), dev)
    assert [(k, s) for k, s, _a in commands(body)] == [("SoftDelete", near)]
    phone.apply(body)
    key = key_of(body)
    assert await run(server, user, sync_body(coll(cid, key)), dev) is None
    # the wider window brings it back
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 0)
    assert sent == [("Add", near)]


@pytest_twisted.ensureDeferred
async def test_event_moved_out_of_the_window_is_soft_deleted(env) -> None:
    """An event the phone holds, moved by the server to before the window: the phone
    drops it (SoftDelete) instead of keeping the old date."""
    server, user, folders = env
    cid = folders["Calendar"]
    now = server.clock.seconds()
    [sid] = [r.server_id for r in await server.items.apply(user, cid, [
        Op(kind="add", cls="Calendar", data=cal_event("meeting", now + 86400))])]
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(4))), "moved"))
    key, _s, _n = await sync_all(server, user, cid, key, phone, "moved")
    assert set(phone.held) == {sid}
    await server.items.apply(user, cid, [Op(kind="change", server_id=sid, data=cal_event(
        "meeting", now - 100 * 86400))])
    body = await run(server, user, sync_body(coll(cid, key, *options(4))), "moved")
    assert [(k, s) for k, s, _a in commands(body)] == [("SoftDelete", sid)]


@pytest_twisted.ensureDeferred
async def test_tasks_filter_type_8_keeps_incomplete_tasks_only(env) -> None:
    """Tasks FilterType 8 (incomplete only) and 0, changed on a live key; a task
    completed on the server leaves a phone under FilterType 8."""
    server, user, folders = env
    cid = folders["Tasks"]
    res = await server.items.apply(user, cid, [
        Op(kind="add", cls="Tasks", data={"Subject": f"t{i}", "Complete": i % 2})
        for i in range(6)])
    ids = [r.server_id for r in res]
    dev = "tasks"
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(0))), dev))
    key, _s, _n = await sync_all(server, user, cid, key, phone, dev)
    assert set(phone.held) == set(ids)
    est = await estimate(server, user, cid, key, 8, dev)
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 8)
    assert sorted(sent) == sorted(("SoftDelete", ids[i]) for i in (1, 3, 5)) and est == 3
    await server.items.apply(user, cid, [Op(kind="change", server_id=ids[0], data={
        "Subject": "t0", "Complete": 1})])
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 8)
    assert sent == [("SoftDelete", ids[0])]
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 0)
    assert sorted(sent) == sorted(("Add", ids[i]) for i in (0, 1, 3, 5))
    assert set(phone.held) == set(ids)


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
@pytest_twisted.ensureDeferred
async def test_filter_change_over_10000_events_holds_the_reactor_briefly(env) -> None:
    """The move between windows is found by the database (one indexed walk, in its
    thread): a FilterType change over 10,000 events keeps the reactor free (< 50 ms
    between turns) and each Sync returns its window."""
    import time as _time

    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    server, user, folders = env
    cid = folders["Calendar"]
    now = server.clock.seconds()
    for part in range(10):
        await server.items.apply(user, cid, [
            Op(kind="add", cls="Calendar", data=cal_event(f"old{part}-{i}",
                                                          now - (30 + i % 300) * 86400))
            for i in range(1000)])
    dev = "big"
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(4))), dev))
    assert await run(server, user, sync_body(coll(cid, key, *options(4))), dev) is None
    gaps: list[float] = []
    last = [_time.perf_counter()]

    def tick() -> None:
        t = _time.perf_counter()
        gaps.append(t - last[0])
        last[0] = t

    loop = LoopingCall(tick)
    loop.clock = reactor
    loop.start(0.002)
    try:
        t0 = _time.perf_counter()
        body = await run(server, user, sync_body(coll(cid, key, *options(0, 50))), dev)
        took = _time.perf_counter() - t0
    finally:
        loop.stop()
    assert n_commands(body) == 50 and the_coll(body).find("AirSync:MoreAvailable") is not None
    print(f"max reactor gap {max(gaps) * 1000:.1f} ms, Sync {took * 1000:.0f} ms")
    assert max(gaps) < 0.05, (max(gaps), took)


@pytest_twisted.ensureDeferred
async def test_own_events_outside_the_window_are_not_sent_back_when_it_widens(env) -> None:
    """A phone under FilterType 4 that makes an event a month ago, or re-adds an old
    one it holds (MS-ASCAL 2.2.2.13), holds them although they are outside its window:
    a wider FilterType (MS-ASCMD 2.2.3.68.2) does not Add them again; one it deletes
    is forgotten; one the server changes reaches it as a Change."""
    server, user, folders = env
    cid = folders["Calendar"]
    now = server.clock.seconds()
    day = 86400
    [old, other] = [r.server_id for r in await server.items.apply(user, cid, [
        Op(kind="add", cls="Calendar", data=cal_event("old", now - 90 * day, UID="OLD-1")),
        Op(kind="add", cls="Calendar", data=cal_event("other old", now - 80 * day))])]
    dev = "own-out"
    phone = Phone()
    key = key_of(await run(server, user, sync_body(coll(cid, "0", *options(4))), dev, "16.1"))
    key, _s, _n = await sync_all(server, user, cid, key, phone, dev)
    assert phone.held == {}
    past = E("AirSync:ApplicationData", E("Calendar:Subject", "made in the past"),
             E("Calendar:StartTime", compact(now - 30 * day)),
             E("Calendar:EndTime", compact(now - 30 * day + 3600)))
    gone = E("AirSync:ApplicationData", E("Calendar:Subject", "deleted later"),
             E("Calendar:StartTime", compact(now - 40 * day)),
             E("Calendar:EndTime", compact(now - 40 * day + 3600)))
    body = await run(server, user, sync_body(coll(cid, key, *options(4), add_cmds(
        ("p", past), ("g", gone), ("o", meeting("old", "OLD-1", "16.1",
                                                compact(now - 90 * day),
                                                compact(now - 90 * day + 3600)))))),
        dev, "16.1")
    got = {c: s for c, s, _st, _u in add_responses(body)}
    assert got["o"] == old
    phone.apply(body, {"p": past, "g": gone, "o": None})
    key = key_of(body)
    body = await run(server, user, sync_body(coll(cid, key, *options(4), E(
        "AirSync:Commands", E("AirSync:Delete", E("AirSync:ServerId", got["g"]))))),
        dev, "16.1")
    phone.apply(body)
    phone.held.pop(got["g"], None)
    key = key_of(body)
    # the server changes the re-added one (still outside): the phone holds it, so gets it
    [item] = await server.items.get_items(user, [old])
    await server.items.apply(user, cid, [Op(kind="change", server_id=old, data=dict(
        item.data, Subject="old v2"))])
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 4)
    assert sent == [("Change", old)]
    # wider: only the event the phone never had comes
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 0)
    assert sent == [("Add", other)]
    assert set(phone.held) == {old, other, got["p"]}
    # and narrower again takes all three away
    key, sent, _n = await sync_all(server, user, cid, key, phone, dev, 4)
    assert sorted(sent) == sorted(("SoftDelete", s) for s in (old, other, got["p"]))


# -- issue 10, point 3: a resend that carries more than the original ------------------------

def change_cmd(sid: str, first: str) -> Element:
    return E("AirSync:Change", E("AirSync:ServerId", sid), contact(first))


def add_cmd(client_id: str, first: str) -> Element:
    return E("AirSync:Add", E("AirSync:ClientId", client_id), contact(first))


def responses_of(body: Element) -> list[tuple[str, str | None, str | None, str | None]]:
    """(kind, ClientId, ServerId, Status) of each Responses entry."""
    resp = the_coll(body).find("AirSync:Responses")
    return [(r.tag.split(":")[1], r.findtext("AirSync:ClientId"),
             r.findtext("AirSync:ServerId"), r.findtext("AirSync:Status"))
            for r in (resp.children if resp is not None else [])]


async def first_names(server, user, cid) -> list[str]:
    return sorted(i.data.get("FirstName", "") for i in await all_items(server, user, cid))


@pytest_twisted.ensureDeferred
async def test_resend_with_more_commands_applies_what_is_new(env) -> None:
    """Issue #10 point 3; MS-ASCMD 2.2.3.166.4 and 3.1.5.3: a device that did not get
    the answer to SyncKey n-1 sends n-1 again, and phones rebuild that resend from
    their dirty items, so it may carry more than the original.  What was answered is
    answered again (the same ServerId for the same ClientId, nothing written twice);
    what is new (an Add with a new ClientId, a Change or Delete the original did not
    carry, a Change of the same item with other data) is applied and answered, under
    a new SyncKey.  Another device sees every change once."""
    server, user, folders = env
    cid = folders["Contacts"]
    [x, y, z] = await add_on_server(server, user, cid, 3, prefix="X")
    ka = await prime(server, user, cid, "devA")
    kb = await prime(server, user, cid, "devB")
    # Sync(K1, Add c2, Change Y): answered, but the answer is lost
    first = await run(server, user, sync_body(coll(cid, ka, E("AirSync:GetChanges", "0"),
                                                   E("AirSync:Commands", add_cmd("c2", "Two"),
                                                     change_cmd(y, "Y2")))))
    [(_k, _c, c2_sid, status)] = responses_of(first)
    assert status == "1" and c2_sid
    # the phone resends K1 with Add c2 and Change Y again, and Change X, Add c3, Delete Z
    resend = E("AirSync:Commands", add_cmd("c2", "Two"), change_cmd(y, "Y2"),
               change_cmd(x, "X2"), add_cmd("c3", "Three"),
               E("AirSync:Delete", E("AirSync:ServerId", z)))
    second = await run(server, user, sync_body(coll(cid, ka, E("AirSync:GetChanges", "0"),
                                                    resend)))
    assert the_coll(second).findtext("AirSync:Status") == "1"
    adds = {c: (s, st) for k, c, s, st in responses_of(second) if k == "Add"}
    assert adds["c2"] == (c2_sid, "1")                  # replayed, the same ServerId
    assert adds["c3"][1] == "1" and adds["c3"][0] not in (None, c2_sid)
    assert [r for r in responses_of(second) if r[0] != "Add"] == []   # all applied
    assert key_of(second) not in (ka, key_of(first))     # something new: a new key
    assert await first_names(server, user, cid) == ["Three", "Two", "X2", "Y2"]
    # the same resend once more (that answer lost too): the same answer, nothing written
    top = (await server.items.list_folders(user))
    modseq = {f.server_id: f.modseq for f in top}[cid]
    third = await run(server, user, sync_body(coll(cid, ka, E("AirSync:GetChanges", "0"),
                                                   resend)))
    assert key_of(third) == key_of(second)
    assert sorted(responses_of(third)) == sorted(responses_of(second))
    assert {f.server_id: f.modseq for f in await server.items.list_folders(user)}[cid] == modseq
    # lost again, and by now the phone has one more contact: that one is applied too
    fourth = await run(server, user, sync_body(coll(cid, ka, E("AirSync:GetChanges", "0"),
                                                    E("AirSync:Commands", *resend.children,
                                                      add_cmd("c4", "Four")))))
    adds4 = {c: (s, st) for k, c, s, st in responses_of(fourth) if k == "Add"}
    assert adds4["c2"] == adds["c2"] and adds4["c3"] == adds["c3"]
    assert adds4["c4"][1] == "1" and adds4["c4"][0] not in (c2_sid, adds["c3"][0])
    assert key_of(fourth) not in (ka, key_of(first), key_of(second))
    assert the_coll(await run(server, user, sync_body(coll(cid, key_of(second))))
                    ).findtext("AirSync:Status") == "3"
    assert await first_names(server, user, cid) == ["Four", "Three", "Two", "X2", "Y2"]
    # the phone moves on: none of its own writes comes back to it
    assert await run(server, user, sync_body(coll(cid, key_of(fourth)))) is None
    # the other device gets each change once
    body = await run(server, user, sync_body(coll(cid, kb)), "devB")
    got = sorted((k, s) for k, s, _a in commands(body))
    assert got == sorted([("Add", c2_sid), ("Add", adds["c3"][0]), ("Add", adds4["c4"][0]),
                          ("Change", x), ("Change", y), ("Delete", z)])
    names = {s: a.findtext("Contacts:FirstName") for _k, s, a in commands(body) if a}
    assert names[x] == "X2" and names[y] == "Y2"


@pytest_twisted.ensureDeferred
async def test_resend_change_with_other_data_is_applied(env) -> None:
    """Issue #10 point 3: a Change of the same ServerId is "already answered" only with
    the same ApplicationData; edited again on the phone before the resend, it is new
    and applied.  A resend of exactly the original writes nothing and keeps the key
    (MS-ASCMD 3.1.5.3)."""
    server, user, folders = env
    cid = folders["Contacts"]
    [x] = await add_on_server(server, user, cid, 1, prefix="X")
    ka = await prime(server, user, cid, "devA")
    cmds = E("AirSync:Commands", change_cmd(x, "v1"))
    first = await run(server, user, sync_body(coll(cid, ka, cmds)))
    [item] = await server.items.get_items(user, [x])
    again = await run(server, user, sync_body(coll(cid, ka, cmds)))
    assert key_of(again) == key_of(first)
    [same] = await server.items.get_items(user, [x])
    assert same.modseq == item.modseq
    edited = await run(server, user, sync_body(coll(cid, ka, E("AirSync:Commands",
                                                               change_cmd(x, "v2")))))
    assert key_of(edited) != key_of(first)
    [now] = await server.items.get_items(user, [x])
    assert now.data["FirstName"] == "v2"
    # the key of the lost answer is no longer valid; the new one is, and is quiet
    assert the_coll(await run(server, user, sync_body(coll(cid, key_of(first))))
                    ).findtext("AirSync:Status") == "3"
    assert await run(server, user, sync_body(coll(cid, key_of(edited)))) is None


@pytest_twisted.ensureDeferred
async def test_resend_change_of_an_item_the_lost_answer_changed_is_a_conflict(env) -> None:
    """Issue #10 point 3 with MS-ASCMD 2.2.3.177.17 (Status 7): the lost answer carried
    the server's new version of Y; the resend brings a phone edit of Y made without
    it.  Server wins (the default Conflict, MS-ASCMD 2.2.3.34): Status 7, and the
    replayed Commands carry the server's version."""
    server, user, folders = env
    cid = folders["Contacts"]
    [y] = await add_on_server(server, user, cid, 1, prefix="Y")
    ka = await prime(server, user, cid, "devA")
    await server.items.apply(user, cid, [Op(kind="change", server_id=y,
                                            data={"FirstName": "Server"})])
    first = await run(server, user, sync_body(coll(cid, ka)))
    assert [(k, s) for k, s, _a in commands(first)] == [("Change", y)]
    body = await run(server, user, sync_body(coll(cid, ka, E("AirSync:Commands",
                                                             change_cmd(y, "Phone")))))
    assert ("Change", None, y, "7") in responses_of(body)
    sent = {s: a.findtext("Contacts:FirstName") for _k, s, a in commands(body)}
    assert sent == {y: "Server"}
    [item] = await server.items.get_items(user, [y])
    assert item.data["FirstName"] == "Server"


@pytest_twisted.ensureDeferred
async def test_resend_change_of_an_item_the_lost_answer_changed_client_wins(env) -> None:
    """Issue #10 point 3 with Conflict 0 (client wins, MS-ASCMD 2.2.3.34): the phone's
    edit in the resend replaces the server's version, which then leaves the replayed
    Commands; a further resend answers the same, writing nothing."""
    server, user, folders = env
    cid = folders["Contacts"]
    [y, w] = await add_on_server(server, user, cid, 2, prefix="Y")
    ka = await prime(server, user, cid, "devA")
    await server.items.apply(user, cid, [
        Op(kind="change", server_id=y, data={"FirstName": "Server"}),
        Op(kind="change", server_id=w, data={"FirstName": "Server W"})])
    first = await run(server, user, sync_body(coll(cid, ka)))
    assert sorted(s for _k, s, _a in commands(first)) == sorted([y, w])
    client_wins = E("AirSync:Options", E("AirSync:Conflict", "0"))
    resend = sync_body(coll(cid, ka, client_wins, E("AirSync:Commands",
                                                    change_cmd(y, "Phone"))))
    body = await run(server, user, resend)
    assert responses_of(body) == []
    assert [(k, s) for k, s, _a in commands(body)] == [("Change", w)]
    [item] = await server.items.get_items(user, [y])
    assert item.data["FirstName"] == "Phone"
    again = await run(server, user, resend)
    assert key_of(again) == key_of(body)
    assert [(k, s) for k, s, _a in commands(again)] == [("Change", w)]
    [same] = await server.items.get_items(user, [y])
    assert same.modseq == item.modseq
    assert await run(server, user, sync_body(coll(cid, key_of(body)))) is None


@pytest_twisted.ensureDeferred
async def test_request_cache_form_is_kept(env) -> None:
    """MS-ASCMD 2.2.3.124 (Partial) and the empty Sync: the request cache is saved
    in this JSON form (a state saved by an earlier version must read the same): per
    collection its id, GetChanges, WindowSize, DeletesAsMoves, and FilterType,
    Conflict and the BodyPreferences as sent when given; no SyncKey, Commands or
    Supported."""
    server, user, folders = env
    cid, tid = folders["Contacts"], folders["Tasks"]
    opts = E("AirSync:Options", E("AirSync:FilterType", "0"), E("AirSync:Conflict", "0"),
             E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", "2"),
               E("AirSyncBase:TruncationSize", "200"), E("AirSyncBase:AllOrNone", "")))
    await run(server, user, sync_body(
        coll(cid, "0", E("AirSync:GetChanges", "0"), E("AirSync:WindowSize", "7"), opts,
             E("AirSync:Supported", E("Contacts:FirstName"))),
        coll(tid, "0", E("AirSync:DeletesAsMoves", "0")),
        top=[E("AirSync:WindowSize", "30")]))
    assert await server.state.get_state(user, "devA", "synccache") == {
        "hold": None, "window": 30, "collections": [
            {"id": cid, "getchanges": False, "window": 7, "deletes_as_moves": True,
             "filter": 0, "conflict": 0, "prefs": [["2", "200", "", None]]},
            {"id": tid, "getchanges": None, "window": None, "deletes_as_moves": False}]}


@pytest_twisted.ensureDeferred
async def test_unknown_client_command_still_gets_an_answer(env) -> None:
    """A Commands child the server does not act on (here a SoftDelete, which only the
    server sends: MS-ASCMD 2.2.3.172) applies nothing, but the request carried
    commands: it is answered (the same key), not with an empty body."""
    server, user, folders = env
    cid = folders["Contacts"]
    key = await prime(server, user, cid)
    body = await run(server, user, sync_body(coll(cid, key, E("AirSync:Commands", E(
        "AirSync:SoftDelete", E("AirSync:ServerId", "nope"))))))
    assert body is not None and key_of(body) == key
    assert the_coll(body).findtext("AirSync:Status") == "1"
    assert the_coll(body).find("AirSync:Responses") is None
