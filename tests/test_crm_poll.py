"""The CRM store's poller against the fake CRM that follows the vtiger 8.2 recording
(issue #9, points 1, 2 and 3):

* ``sync`` is never the change feed: vtiger 8.2 answers it HTTP 500, and since
  ``syncType`` never reaches its handler it lists only the service user's records
  (vtenext); changes of every mapped user are found by ``query``;
* an idle poll costs a constant number of requests (a count and a query of modified
  records per module) whatever the number of users and records;
* a CRM deletion reaches a held waiter within two poll intervals, also when a creation
  between two polls keeps the CRM's count unchanged;
* a device's Change of a record the CRM deleted (ACCESS_DENIED on vtiger 8.2) gets
  "not found" and the item is tombstoned for every device; a Delete of it succeeds; a
  record that exists but may not be changed is not tombstoned.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from crmtest import make_env, reactor
from fakecrm import FakeCrm
from test_crm_store import event_fields, feed
from twisted.internet.task import deferLater

from easync.model import Op, StateWrite

FLAVOURS = ["vtiger", "vtenext"]


async def live_items(env: Any, name: str, folder: str) -> dict[str, Any]:
    """server id -> data of the live items of a folder."""
    return {sid: d for sid, d in (await feed(env, name, folder)).items() if d is not None}


# -- point 1: every mapped user's changes, never through sync ------------------------------

@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest_twisted.ensureDeferred
async def test_changes_of_every_mapped_user_are_found_without_sync(tmp_path: Path,
                                                                   flavour: str) -> None:
    crm = FakeCrm(flavour)
    for name in ("dana", "eve"):
        crm.add_user(name)
    env = await make_env(tmp_path, crm=crm, users=("dana", "eve"))
    try:
        folders = {n: await env.folders(n) for n in ("dana", "eve")}
        await env.store.poll_once()
        made = {n: crm.add_record("Contacts", {"firstname": n, "lastname": "Made"}, owner=n)
                for n in ("dana", "eve")}
        ev = crm.add_record("Events", event_fields("Eve's meeting"), owner="eve")
        # the service user (admin) owns none of them: sync would list none of these
        await env.store.poll_once()
        for n in ("dana", "eve"):
            got = await live_items(env, n, folders[n]["Contacts"])
            assert [d["FirstName"] for d in got.values()] == [n]
        crm.modify_record(made["eve"], {"lastname": "Changed"})
        crm.modify_record(ev, {"subject": "Moved"})
        await env.store.poll_once()
        (c,) = (await live_items(env, "eve", folders["eve"]["Contacts"])).values()
        (e,) = (await live_items(env, "eve", folders["eve"]["Calendar"])).values()
        assert (c["LastName"], e["Subject"]) == ("Changed", "Moved")
        assert crm.calls["sync"] == 0 and env.store.poll_failures == 0
    finally:
        await env.close()


# -- point 2: an idle poll is O(1) requests per module ----------------------------------------

@pytest.mark.parametrize("users,per_poll", [(1, 6), (30, 6), (250, 9)])
@pytest_twisted.ensureDeferred
async def test_idle_poll_costs_a_count_and_a_query_per_module(tmp_path: Path, users: int,
                                                              per_poll: int) -> None:
    crm = FakeCrm("vtiger")
    names = tuple(f"u{i:03d}" for i in range(users))
    old = "2026-01-01 00:00:00"             # settled long ago
    for name in names:
        crm.add_user(name)
        for k in range(3):
            crm.add_record("Contacts", {"firstname": f"{name}-{k}", "lastname": "x"},
                           owner=name, modifiedtime=old)
    env = await make_env(tmp_path, crm=crm, users=names, settle=0.0)
    try:
        for name in names:
            await env.folders(name)
        await env.store.poll_once()
        before, scans = sum(crm.calls.values()), env.store.scans
        for _ in range(4):
            await env.store.poll_once()
        # 250 users: the counts go 200 users a request (2 for each module)
        assert (sum(crm.calls.values()) - before) / 4 == per_poll
        assert env.store.scans == scans and crm.calls["sync"] == 0
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_deletion_scans_only_its_users_ids(tmp_path: Path) -> None:
    """The group of users is halved down to the one whose count differs: a deletion
    among 32 users costs about log2(32) pairs of counts and that user's id page."""
    crm = FakeCrm("vtiger")
    names = tuple(f"u{i:02d}" for i in range(32))
    for name in names:
        crm.add_user(name)
        for k in range(3):
            crm.add_record("Contacts", {"lastname": f"{name}-{k}"}, owner=name)
    env = await make_env(tmp_path, crm=crm, users=names)
    try:
        for name in names:
            await env.folders(name)
        await env.store.poll_once()
        victim = crm.live("Contacts", "u17")[1]["id"]
        crm.delete_record(victim)
        logged = len(crm.log)
        await env.store.poll_once()
        queries = [p["query"] for op, p in crm.log[logged:] if op == "query"]
        id_pages = [q for q in queries if q.startswith("SELECT id FROM")]
        assert len(id_pages) == 1 and "assigned_user_id = " in id_pages[0]
        counts = [q for q in queries if q.startswith("SELECT count(*)")]
        assert len(counts) <= 3 + 2 * 5            # 3 modules, then 5 halvings
        got = await live_items(env, "u17", (await env.folders("u17"))["Contacts"])
        assert sorted(d["LastName"] for d in got.values()) == ["u17-0", "u17-2"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_records_of_users_without_easync_account_cost_no_scan(tmp_path: Path) -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("dana")
    crm.add_user("outsider")
    theirs = [crm.add_record("Contacts", {"lastname": f"o{i}"}, owner="outsider")
              for i in range(5)]
    env = await make_env(tmp_path, crm=crm)
    try:
        await env.folders("dana")
        await env.store.poll_once()
        scans = env.store.scans
        crm.delete_record(theirs[0])
        crm.add_record("Contacts", {"lastname": "new"}, owner="outsider")
        await env.store.poll_once()
        await env.store.poll_once()
        assert env.store.scans == scans
    finally:
        await env.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest_twisted.ensureDeferred
async def test_deletion_reaches_a_waiter_within_two_poll_intervals(tmp_path: Path,
                                                                   flavour: str) -> None:
    crm = FakeCrm(flavour)
    crm.add_user("dana")
    ids = [crm.add_record("Contacts", {"lastname": f"L{i}"}, owner="dana") for i in range(3)]
    interval = 0.3
    env = await make_env(tmp_path, crm=crm, poll_interval=interval)
    try:
        f = await env.folders("dana")
        env.store.startService()
        await deferLater(reactor(), 2 * interval, lambda: None)
        for victim in ids[:2]:
            woke = env.hub.next(env.users["dana"].id, f["Contacts"])
            crm.delete_record(victim)
            started = time.monotonic()
            await woke
            assert time.monotonic() - started < 2 * interval
        got = await live_items(env, "dana", f["Contacts"])
        assert [d["LastName"] for d in got.values()] == ["L2"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_creation_that_cancels_a_deletion_in_the_count_is_no_hiding_place(
        tmp_path: Path) -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("dana")
    a = crm.add_record("Contacts", {"lastname": "A"}, owner="dana")
    env = await make_env(tmp_path, crm=crm)
    try:
        f = await env.folders("dana")
        await env.store.poll_once()
        crm.delete_record(a)                    # the count stays 1 ...
        crm.add_record("Contacts", {"lastname": "B"}, owner="dana")
        await env.store.poll_once()             # ... but the mirror's becomes 2
        got = await live_items(env, "dana", f["Contacts"])
        assert [d["LastName"] for d in got.values()] == ["B"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_record_back_with_an_old_modifiedtime_is_added_by_the_scan(
        tmp_path: Path) -> None:
    """A record restored from the CRM's recycle bin keeps its modifiedtime: the query of
    modified records never lists it, the count does."""
    crm = FakeCrm("vtiger")
    crm.add_user("dana")
    old = "2026-01-01 00:00:00"
    a = crm.add_record("Contacts", {"lastname": "A"}, owner="dana", modifiedtime=old)
    crm.delete_record(a, modifiedtime=old)
    env = await make_env(tmp_path, crm=crm, settle=0.0)
    try:
        f = await env.folders("dana")
        await env.store.poll_once()
        assert await live_items(env, "dana", f["Contacts"]) == {}
        crm._record(a, live_only=False)["deleted"] = False     # restored (the UI's bin)
        await env.store.poll_once()
        got = await live_items(env, "dana", f["Contacts"])
        assert [d["LastName"] for d in got.values()] == ["A"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_full_scan_catches_what_counts_cannot(tmp_path: Path) -> None:
    """A restore and a deletion between two polls: equal counts, nothing modified.  The
    hourly full scan finds both."""
    crm = FakeCrm("vtiger")
    crm.add_user("dana")
    old = "2026-01-01 00:00:00"
    a = crm.add_record("Contacts", {"lastname": "A"}, owner="dana", modifiedtime=old)
    b = crm.add_record("Contacts", {"lastname": "B"}, owner="dana", modifiedtime=old)
    crm.delete_record(b, modifiedtime=old)
    env = await make_env(tmp_path, crm=crm, settle=0.0, full_scan=3600.0)
    try:
        f = await env.folders("dana")
        await env.store.poll_once()
        crm.delete_record(a, modifiedtime=old)
        crm._record(b, live_only=False)["deleted"] = False
        await env.store.poll_once()
        got = await live_items(env, "dana", f["Contacts"])
        assert [d["LastName"] for d in got.values()] == ["A"]      # not seen (documented)
        env.store.full_scan = 0.0
        await env.store.poll_once()
        got = await live_items(env, "dana", f["Contacts"])
        assert [d["LastName"] for d in got.values()] == ["B"]
    finally:
        await env.close()


# -- point 3: a device's change of a record the CRM deleted ------------------------------------

async def _item_in_crm(env: Any, name: str, folder: str, module: str,
                       fields: dict[str, Any]) -> tuple[str, str]:
    """(server id, CRM id) of a record made in the CRM and mirrored."""
    cid = env.crm.add_record(module, fields, owner=name)
    await env.store.poll_once()
    got = await live_items(env, name, folder)
    (sid,) = [s for s in got]
    return sid, cid


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest_twisted.ensureDeferred
async def test_change_of_a_record_the_crm_deleted_is_not_lost(tmp_path: Path,
                                                              flavour: str) -> None:
    env = await make_env(tmp_path, flavour=flavour)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        sid, cid = await _item_in_crm(env, "dana", f["Contacts"], "Contacts",
                                      {"firstname": "Gone", "lastname": "Soon"})
        cursor = (await env.sql.changes_since(u, f["Contacts"], 0, 100)).high
        env.crm.delete_record(cid)              # the poller has not seen it yet
        state = StateWrite("PHONE", "sync:" + f["Contacts"], {"k": 1})
        (res,) = await env.store.apply(u, f["Contacts"], [Op(
            "change", server_id=sid, data={"FirstName": "Gone", "LastName": "Edited"},
            ref=sid)], state)
        assert (res.ok, res.error) == (False, "notfound")       # Sync: Status 8
        # every device (this one too, its change was not applied) gets the Delete
        after = await feed(env, "dana", f["Contacts"], cursor)
        assert after == {sid: None}
        assert env.crm.calls["revise"] == 1 and env.crm.live("Contacts", "dana") == []
        assert await env.sql.get_state(u, "PHONE", "sync:" + f["Contacts"]) == {"k": 1}
        await env.store.poll_once()             # nothing more to find
        assert await feed(env, "dana", f["Contacts"], cursor) == {sid: None}
    finally:
        await env.close()


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest_twisted.ensureDeferred
async def test_delete_of_a_record_the_crm_deleted_succeeds(tmp_path: Path,
                                                           flavour: str) -> None:
    env = await make_env(tmp_path, flavour=flavour)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        sid, cid = await _item_in_crm(env, "dana", f["Calendar"], "Events",
                                      event_fields("Cancelled"))
        env.crm.delete_record(cid)
        (res,) = await env.store.apply(u, f["Calendar"], [Op("delete", server_id=sid,
                                                             ref=sid)])
        assert res.ok
        assert await live_items(env, "dana", f["Calendar"]) == {}
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_refused_change_of_a_live_record_is_not_a_deletion(tmp_path: Path) -> None:
    """ACCESS_DENIED for a record the query still lists (a permission, not a
    deletion): the change fails, the item stays."""
    env = await make_env(tmp_path, flavour="vtiger")
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        sid, cid = await _item_in_crm(env, "dana", f["Contacts"], "Contacts",
                                      {"firstname": "Kept", "lastname": "Here"})
        denied = "Permission to perform the operation is denied"
        env.crm.fail_next = [("ACCESS_DENIED", denied)]
        env.crm.fail_ops = {"revise"}
        (res,) = await env.store.apply(u, f["Contacts"], [Op(
            "change", server_id=sid, data={"FirstName": "Kept", "LastName": "Edited"},
            ref=sid)])
        assert (res.ok, res.error) == (False, "invalid")
        got = await live_items(env, "dana", f["Contacts"])
        assert [d["LastName"] for d in got.values()] == ["Here"]
        assert env.crm.record(cid)["lastname"] == "Here"
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_client_retrieve_and_delete_of_a_missing_id(tmp_path: Path) -> None:
    """The client: ACCESS_DENIED (vtiger 8.2) for a missing id means "none" to retrieve
    and "done" to delete; for a live record the error stands."""
    from backends.crm.client import CrmError

    env = await make_env(tmp_path, flavour="vtiger")
    try:
        live = env.crm.add_record("Contacts", {"lastname": "Live"}, owner="dana")
        gone = env.crm.add_record("Contacts", {"lastname": "Gone"}, owner="dana")
        env.crm.delete_record(gone)
        assert await env.client.retrieve(gone) is None
        await env.client.delete(gone)
        assert (await env.client.retrieve(live) or {}).get("lastname") == "Live"
        env.crm.fail_next = [("ACCESS_DENIED", "no")]
        env.crm.fail_ops = {"delete"}
        with pytest.raises(CrmError, match="ACCESS_DENIED"):
            await env.client.delete(live)
        assert env.crm.record(live)["deleted"] is False
    finally:
        await env.close()
