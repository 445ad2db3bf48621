"""Colleagues' shared folders with the CRM as the store (issue #14 point 1, CRM side).

mario shares his Calendar (the CRM's Events assigned to him) with anna through the
SQL store's ``folder_shares`` — the same ``easync-admin share`` / account-page rules
as with ``--backend sql``.  anna's hierarchy then holds it as a user-created calendar
(type 13, MS-ASCMD 2.2.3.186.3) named "Calendar — mario", read from mario's mirror
folder; the poller's change of mario's record wakes every holder; a read-only share
refuses a device's write item by item ("readonly": the engine answers Status 7 and
resends the server's version, MS-ASCMD 2.2.3.177.17) and nothing reaches the CRM; a
read-write share writes the CRM record *as mario's* (``assigned_user_id`` stays
mario) through the usual write path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from crmtest import make_env
from fakecrm import FakeCrm
from test_crm_shared import DBS, make_db_env
from test_crm_store import event_fields, feed

from easync.model import Op, StateWrite


async def env_with_share(tmp_path: Path, write: bool, db: str = "sqlite", **kw: Any
                         ) -> tuple[FakeCrm, Any, str]:
    crm = FakeCrm("vtiger")
    for name in ("mario", "anna"):
        crm.add_user(name)
    crm.add_record("Events", event_fields("Standup"), owner="mario")
    crm.add_record("Events", event_fields("AnnaOwn"), owner="anna")
    env = await make_db_env(tmp_path, db, crm=crm, users=("mario", "anna"), **kw)
    # mario's default Calendar folder, shared without mario having synced yet
    (cal,) = [f.server_id for f in await env.sql.list_folders(env.users["mario"])
              if f.type == 8]
    assert await env.sql.share_folder(cal, env.users["anna"].id, write)
    return crm, env, cal


def subjects(items: dict[str, Any]) -> set[str]:
    return {d["Subject"] for d in items.values() if d is not None}


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_anna_lists_and_reads_marios_calendar(tmp_path: Path, db: str) -> None:
    _crm, env, cal = await env_with_share(tmp_path, write=False, db=db)
    try:
        anna = env.users["anna"]
        shared = [f for f in await env.store.list_folders(anna) if f.server_id == cal]
        assert [(f.name, f.type, f.parent_id, f.read_only, f.owner) for f in shared] == [
            ("Calendar \u2014 mario", 13, "0", True, "mario")]
        # mario's records were loaded for her (he never synced)
        assert subjects(await feed(env, "anna", cal)) == {"Standup"}
        own = (await env.folders("anna"))["Calendar"]
        assert subjects(await feed(env, "anna", own)) == {"AnnaOwn"}
        sids = list(await feed(env, "anna", cal))
        assert [i.data["Subject"] for i in await env.store.get_items(anna, sids)] == \
            ["Standup"]
        assert await env.store.count_changes_since(anna, cal, 0) == 1
        # mario sees his folder as shared out, under its own name
        mine = [f for f in await env.store.list_folders(env.users["mario"])
                if f.server_id == cal]
        assert [(f.name, f.shared_out, f.owner) for f in mine] == [("Calendar", True, None)]
    finally:
        await env.close()


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_crm_change_of_owner_record_reaches_and_wakes_the_holder(
        tmp_path: Path, db: str) -> None:
    crm, env, cal = await env_with_share(tmp_path, write=False, db=db)
    try:
        anna, mario = env.users["anna"], env.users["mario"]
        await env.store.list_folders(anna)
        await env.store.poll_once()
        env.hub.published.clear()
        (rec,) = crm.live("Events", "mario")
        crm.modify_record(rec["id"], {"subject": "Standup moved"})
        await env.store.poll_once()
        assert {(u, f) for u, f in env.hub.published if f == cal} == {
            (mario.id, cal), (anna.id, cal)}
        assert subjects(await feed(env, "anna", cal)) == {"Standup moved"}
        # a share made while the server runs is known to the poller at once
        crm.add_user("luca")
        luca = await env.sql.add_user("luca", None, "luca@example.org", True)
        env.users["luca"] = luca
        assert await env.store.share_folder(cal, luca.id, False)
        env.hub.published.clear()
        crm.modify_record(rec["id"], {"subject": "Standup again"})
        await env.store.poll_once()
        assert (luca.id, cal) in env.hub.published
    finally:
        await env.close()


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_read_only_share_refuses_writes_and_sends_nothing_to_the_crm(
        tmp_path: Path, db: str) -> None:
    crm, env, cal = await env_with_share(tmp_path, write=False, db=db)
    try:
        anna = env.users["anna"]
        await env.store.list_folders(anna)
        ((sid, data),) = (await feed(env, "anna", cal)).items()
        before = dict(crm.calls)
        records = {r["id"]: r for r in crm.live("Events")}
        res = await env.store.apply(anna, cal, [
            Op("change", server_id=sid, data=dict(data, Subject="Hacked"), ref="x"),
            Op("add", data=dict(data, Subject="New"), ref="c1", cls="Calendar"),
            Op("delete", server_id=sid, ref="y")],
            StateWrite("phone", f"sync:{cal}", {"cursor": 3}))
        assert [(r.ok, r.error) for r in res] == [(False, "readonly")] * 3
        for op in ("create", "revise", "update", "delete"):
            assert crm.calls.get(op, 0) == before.get(op, 0)
        assert {r["id"]: r for r in crm.live("Events")} == records
        assert subjects(await feed(env, "mario", cal)) == {"Standup"}
        assert await env.sql.get_state(anna, "phone", f"sync:{cal}") == {"cursor": 3}
    finally:
        await env.close()


@pytest.mark.parametrize("db", DBS)
@pytest_twisted.ensureDeferred
async def test_read_write_share_writes_the_crm_record_as_the_owners(
        tmp_path: Path, db: str) -> None:
    crm, env, cal = await env_with_share(tmp_path, write=True, db=db)
    try:
        anna, mario = env.users["anna"], env.users["mario"]
        await env.store.list_folders(anna)
        ((sid, data),) = (await feed(env, "anna", cal)).items()
        (ch, add) = await env.store.apply(anna, cal, [
            Op("change", server_id=sid, data=dict(data, Subject="Standup by anna"),
               ref="x"),
            Op("add", data=dict(data, Subject="Planning", UID="UID-anna"), ref="c1",
               cls="Calendar")], StateWrite("phone", f"sync:{cal}", {"cursor": 1}))
        assert ch.ok and add.ok and add.server_id.startswith(f"{cal}:")
        assert sorted((r["subject"], r["owner"]) for r in crm.live("Events", "mario")) == [
            ("Planning", "mario"), ("Standup by anna", "mario")]
        assert [r["subject"] for r in crm.live("Events", "anna")] == ["AnnaOwn"]
        # the poller sees both records as mario's, in place: no second copy, no delete
        await env.store.poll_once()
        got = await feed(env, "mario", cal)
        assert subjects(got) == {"Planning", "Standup by anna"}
        assert set(got) == {sid, add.server_id}
        assert await feed(env, "anna", cal) == got
        # anna's phone deletes mario's event: gone from the CRM
        (d,) = await env.store.apply(anna, cal, [Op("delete", server_id=add.server_id)])
        assert d.ok
        assert [r["subject"] for r in crm.live("Events", "mario")] == ["Standup by anna"]
        await env.store.poll_once()
        assert subjects(await feed(env, "mario", cal)) == {"Standup by anna"}
        assert mario.id != anna.id
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_unshare_removes_the_folder_and_its_access(tmp_path: Path) -> None:
    crm, env, cal = await env_with_share(tmp_path, write=True)
    try:
        anna = env.users["anna"]
        await env.store.list_folders(anna)
        ((sid, data),) = (await feed(env, "anna", cal)).items()
        assert await env.store.unshare_folder(cal, anna.id)
        assert cal not in {f.server_id for f in await env.store.list_folders(anna)}
        assert await feed(env, "anna", cal) == {}
        assert await env.store.get_items(anna, [sid]) == []
        before = dict(crm.calls)
        try:
            res = await env.store.apply(anna, cal, [
                Op("change", server_id=sid, data=dict(data, Subject="Late"))])
        except KeyError:
            pass
        else:
            assert [r.ok for r in res] == [False]
        assert crm.calls.get("revise", 0) == before.get("revise", 0)
        assert [r["subject"] for r in crm.live("Events", "mario")] == ["Standup"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_an_item_of_another_user_cannot_be_named_through_ones_own_folder(
        tmp_path: Path) -> None:
    """Item ids are one sequence for every user: anna's phone naming mario's item
    (not shared) under her own Calendar's id is "not found" (MS-ASCMD 2.2.3.177.17,
    Status 8) and the CRM is not asked."""
    crm, env, cal = await env_with_share(tmp_path, write=False)
    try:
        anna = env.users["anna"]
        assert await env.store.unshare_folder(cal, anna.id)
        own = (await env.folders("anna"))["Calendar"]
        ((sid, data),) = (await feed(env, "mario", cal)).items()
        stolen = f"{own}:{sid.split(':')[1]}"
        before = dict(crm.calls)
        for op in (Op("change", server_id=stolen, data=dict(data, Subject="Stolen")),
                   Op("delete", server_id=stolen)):
            (res,) = await env.store.apply(anna, own, [op])
            assert (res.ok, res.error) == (False, "notfound")
        for call in ("revise", "update", "delete"):
            assert crm.calls.get(call, 0) == before.get(call, 0)
        assert [r["subject"] for r in crm.live("Events", "mario")] == ["Standup"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_the_company_book_is_not_a_users_to_share(tmp_path: Path) -> None:
    from easync.sharing import ShareError, Sharing

    crm = FakeCrm("vtiger")
    env = await make_env(tmp_path, crm=crm, users=("mario", "anna"), shared_contacts="all")
    try:
        (book,) = [f for f in await env.store.list_folders(env.users["mario"])
                   if f.type == 14]

        async def audit(*_: Any) -> None:
            pass

        sharing = Sharing(env.store, audit)
        try:
            await sharing.share("t", "mario", book.server_id, "anna", False)
        except ShareError:
            pass
        else:
            raise AssertionError("the company address book was shared")
        assert await env.store.list_shares(None) == []
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_account_page_shares_a_crm_calendar(tmp_path: Path) -> None:
    """The account page's sharing card over the CRM store (``--backend crm``): the
    user's Calendar and Contacts are offered, the company address book is not; a
    share made there reaches the colleague's folder list."""
    from account_http import AccountServer
    from fakecrm import serve
    from treq.client import HTTPClient
    from twisted.internet import reactor
    from twisted.web.client import Agent, HTTPConnectionPool

    from backends.crm.client import CrmClient
    from backends.crm.store import CrmStore

    crm = FakeCrm("vtiger")
    for name in ("mario", "anna"):
        crm.add_user(name)
    crm.add_record("Events", event_fields("Standup"), owner="mario")
    port = serve(crm, reactor)
    pool = HTTPConnectionPool(reactor, persistent=True)
    srv = await AccountServer(reactor, tmp_path).start()
    try:
        client = CrmClient(reactor, HTTPClient(Agent(reactor, pool=pool)),
                           f"http://127.0.0.1:{port.getHost().port}/webservice.php",
                           "admin", "adminKEY123", timeout=5)
        store = CrmStore(reactor, srv.store, client, shared_contacts="all")
        await store.open()
        for name in ("mario", "anna"):
            await srv.add_user(name, email=f"{name}@example.org")
        published: list[tuple[int, str]] = []
        srv.resource.ops.enable_sharing(store, lambda uid, folders: [
            published.append((uid, f)) for f in folders])
        c = srv.client()
        assert (await c.api("POST", "login", {"username": "mario",
                                              "password": "login password 1"})).status == 200
        body = (await c.api("GET", "shares")).json()
        assert body["available"] is True
        offered = {f["name"]: f["folder_id"] for f in body["folders"]}
        assert set(offered) == {"Calendar", "Contacts", "Tasks"}   # not the company book
        r = await c.api("POST", "shares/add", {"folder_id": offered["Calendar"],
                                               "to": "anna", "write": False})
        assert r.status == 200, r.text
        anna = await srv.store.get_user("anna")
        assert anna is not None and (anna.id, "hierarchy") in published
        mine = [(f.name, f.read_only) for f in await store.list_folders(anna)
                if f.server_id == offered["Calendar"]]
        assert mine == [("Calendar \u2014 mario", True)]
    finally:
        await srv.stop()
        await pool.closeCachedConnections()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_add_through_a_share_lost_in_a_crash_is_recorded_as_the_owners(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """anna's Add into mario's calendar, shared read-write: the CRM made the record
    (mario's), the process died before the mirror recorded it.  The journal finds it
    and the phone's retry maps to it: one CRM record, one item in mario's folder,
    which the poller then keeps as his (no Delete and Add as for a re-assign)."""
    from test_crm_journal import crash_once

    crm, env, cal = await env_with_share(tmp_path, write=True)
    try:
        anna = env.users["anna"]
        await env.store.list_folders(anna)
        ((_sid, data),) = (await feed(env, "anna", cal)).items()
        ops = [Op("add", data=dict(data, Subject="Retro", UID="UID-retro"), ref="r1",
                  cls="Calendar")]
        crash_once(monkeypatch)
        try:
            await env.store.apply(anna, cal, ops, StateWrite("phone", f"sync:{cal}", {}))
        except RuntimeError:
            pass
        else:
            raise AssertionError("did not crash")
        assert sorted(r["subject"] for r in crm.live("Events", "mario")) == \
            ["Retro", "Standup"]
        (res,) = await env.store.apply(anna, cal, ops,
                                       StateWrite("phone", f"sync:{cal}", {}))
        assert res.ok and res.server_id.startswith(f"{cal}:")
        assert sorted(r["subject"] for r in crm.live("Events", "mario")) == \
            ["Retro", "Standup"]
        before = await feed(env, "mario", cal)
        assert subjects(before) == {"Retro", "Standup"} and res.server_id in before
        await env.store.poll_once()
        assert await feed(env, "mario", cal) == before
    finally:
        await env.close()


@pytest.mark.parametrize(("module", "type_", "key", "crm_key", "fields"), [
    ("Contacts", 9, "LastName", "lastname", {"firstname": "Carla", "lastname": "Client"}),
    ("Calendar", 7, "Subject", "subject", {"subject": "Call Carla",
                                            "date_start": "2030-01-07",
                                            "time_start": "09:00",
                                            "due_date": "2030-01-08",
                                            "taskstatus": "Not Started"})])
@pytest_twisted.ensureDeferred
async def test_contacts_and_tasks_are_shared_the_same_way(
        tmp_path: Path, module: str, type_: int, key: str, crm_key: str,
        fields: dict[str, str]) -> None:
    """mario's Contacts (type 9) and Tasks (type 7, the CRM's Calendar module) shared
    read-write: listed as user-created folders (Contacts 14, Tasks 15, MS-ASCMD
    2.2.3.186.3) and a change from anna's phone is mario's CRM record's."""
    crm = FakeCrm("vtiger")
    for name in ("mario", "anna"):
        crm.add_user(name)
    rec = crm.add_record(module, fields, owner="mario")
    env = await make_env(tmp_path, crm=crm, users=("mario", "anna"))
    try:
        anna = env.users["anna"]
        (fid,) = [f.server_id for f in await env.sql.list_folders(env.users["mario"])
                  if f.type == type_]
        assert await env.store.share_folder(fid, anna.id, True)
        listed = [(f.name, f.type) for f in await env.store.list_folders(anna)
                  if f.server_id == fid]
        assert listed == [(f"{'Contacts' if module == 'Contacts' else 'Tasks'} \u2014 mario",
                           14 if module == "Contacts" else 15)]
        ((sid, data),) = (await feed(env, "anna", fid)).items()
        (res,) = await env.store.apply(anna, fid, [
            Op("change", server_id=sid, data=dict(data, **{key: "Changed by anna"}))])
        assert res.ok
        got = crm.record(rec)
        assert (got[crm_key], got["owner"]) == ("Changed by anna", "mario")
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_shared_with_everyone_wakes_every_user(tmp_path: Path) -> None:
    """``easync-admin share add mario N --everyone`` (grantee 0): every user lists it
    and a CRM change of mario's event is published to each of them."""
    crm, env, cal = await env_with_share(tmp_path, write=False)
    try:
        anna, mario = env.users["anna"], env.users["mario"]
        assert await env.store.unshare_folder(cal, anna.id)
        assert await env.store.share_folder(cal, 0, False)
        assert [f.name for f in await env.store.list_folders(anna)
                if f.server_id == cal] == ["Calendar \u2014 mario"]
        await env.store.poll_once()
        env.hub.published.clear()
        (rec,) = crm.live("Events", "mario")
        crm.modify_record(rec["id"], {"subject": "All hands"})
        await env.store.poll_once()
        assert {(u, f) for u, f in env.hub.published if f == cal} == {
            (mario.id, cal), (anna.id, cal)}
    finally:
        await env.close()
