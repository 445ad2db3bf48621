"""The CRM store against the fake CRM over loopback HTTP: loads, device writes with
the overlay, the contact–event link, the poller, sessions, failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from crmtest import make_env, reactor
from fakecrm import FakeCrm
from twisted.internet.task import deferLater

from backends.crm.client import LoginRefused
from easync.errors import Unavailable
from easync.model import Op, StateWrite


async def feed(env: Any, name: str, folder: str, cursor: int = 0) -> dict[str, Any]:
    """server id -> data (None for a tombstone) of the changes after ``cursor``."""
    out: dict[str, Any] = {}
    while True:
        b = await env.store.changes_since(env.users[name], folder, cursor, 100)
        for ch in b.changes:
            out[ch.server_id] = None if ch.deleted else ch.item.data
        cursor = b.high
        if not b.more:
            return out


def event_fields(subject: str, **extra: Any) -> dict[str, Any]:
    return {"subject": subject, "date_start": "2026-12-02", "time_start": "10:00",
            "due_date": "2026-12-02", "time_end": "11:00", "duration_hours": "1",
            "eventstatus": "Planned", "activitytype": "Meeting", **extra}


RICH_CONTACT = {
    "Title": "Dott.", "FirstName": "Giulia", "LastName": "Rossi", "MiddleName": "Maria",
    "Email1Address": "giulia@example.org", "Email2Address": "g@home.example",
    "Email3Address": "third@example.org",
    "BusinessPhoneNumber": "+39 02 3333", "MobilePhoneNumber": "+39 333 5555",
    "HomePhoneNumber": "+39 06 1111", "Home2PhoneNumber": "+39 06 2222",
    "Business2PhoneNumber": "+39 02 4444", "BusinessFaxNumber": "+39 02 6666",
    "AssistantName": "Marco", "AssistantPhoneNumber": "+39 02 1212",
    "JobTitle": "Engineer", "Department": "R&D", "CompanyName": "ACME S.p.A.",
    "BusinessAddressStreet": "Via Roma 1", "BusinessAddressCity": "Milano",
    "BusinessAddressState": "MI", "BusinessAddressPostalCode": "20100",
    "BusinessAddressCountry": "Italia", "HomeAddressCity": "Roma",
    "OtherAddressStreet": "Rue 3", "OtherAddressCity": "Paris",
    "Birthday": "1985-03-14", "Categories": ["Clienti", "VIP"], "Picture": "iVBORw0KGgo=",
    "Body": {"Type": 1, "Data": "Met at the fair."},
}


# -- first load --------------------------------------------------------------------------

@pytest.mark.parametrize("flavour", ["vtenext", "vtiger"])
@pytest_twisted.ensureDeferred
async def test_load_pages_past_100_with_shared_seconds(tmp_path: Path, flavour: str) -> None:
    crm = FakeCrm(flavour)
    crm.add_user("dana")
    crm.add_user("other")
    stamp = "2026-03-01 10:00:00"
    contacts = [crm.add_record("Contacts", {"firstname": f"C{n}", "lastname": "L",
                                            "email": f"c{n}@x.org"}, owner="dana",
                               modifiedtime=stamp if n % 2 else "2026-03-01 10:00:01")
                for n in range(250)]
    for n in range(250):
        crm.add_record("Events", event_fields(f"E{n}"), owner="dana", modifiedtime=stamp)
    for n in range(30):
        crm.add_record("Contacts", {"lastname": f"noise{n}"}, owner="other")
    env = await make_env(tmp_path, crm=crm)
    try:
        f = await env.folders("dana")
        got = await feed(env, "dana", f["Contacts"])
        assert len(got) == 250
        assert sorted(d["FirstName"] for d in got.values()) == sorted(f"C{n}" for n in range(250))
        events = await feed(env, "dana", f["Calendar"])
        assert len(events) == 250 and {d["Subject"] for d in events.values()} == {
            f"E{n}" for n in range(250)}
        # pages of 100 walked by id: ceil(250/100) per module (+ the Users list)
        assert crm.calls["query"] <= 3 + 3 + 1 + 1
        assert contacts
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_user_without_crm_account(tmp_path: Path) -> None:
    env = await make_env(tmp_path, users=())
    try:
        env.users["zed"] = await env.sql.add_user("zed", None, None, True)
        f = await env.folders("zed")
        assert await feed(env, "zed", f["Contacts"]) == {}
        res = await env.store.apply(env.users["zed"], f["Contacts"],
                                    [Op("add", data={"FirstName": "x"}, ref="1")])
        assert [(r.ok, r.error) for r in res] == [(False, "invalid")]
        assert env.crm.live("Contacts") == []
    finally:
        await env.close()


# -- device writes and the overlay -----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_contact_fields_both_ways_and_overlay(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        (res,) = await env.store.apply(u, f["Contacts"], [Op("add", data=RICH_CONTACT,
                                                              ref="c1")])
        assert res.ok
        (rec,) = env.crm.live("Contacts", "dana")
        assert {k: rec[k] for k in ("salutationtype", "firstname", "lastname", "email",
                                    "yahooid", "phone", "mobile", "homephone", "otherphone",
                                    "fax", "assistant", "assistantphone", "title",
                                    "department", "mailingstreet", "mailingcity",
                                    "mailingzip", "mailingcountry", "otherstreet",
                                    "othercity", "birthday", "description")} == {
            # "Dott." is not a value of the CRM's salutation picklist: the Title stays in
            # the overlay, the CRM gets none (issue 9, point 9)
            "salutationtype": "", "firstname": "Giulia", "lastname": "Rossi",
            "email": "giulia@example.org", "yahooid": "g@home.example",
            "phone": "+39 02 3333", "mobile": "+39 333 5555", "homephone": "+39 06 1111",
            "otherphone": "+39 02 4444", "fax": "+39 02 6666", "assistant": "Marco",
            "assistantphone": "+39 02 1212", "title": "Engineer", "department": "R&D",
            "mailingstreet": "Via Roma 1", "mailingcity": "Milano", "mailingzip": "20100",
            "mailingcountry": "Italia", "otherstreet": "Rue 3", "othercity": "Paris",
            "birthday": "1985-03-14", "description": "Met at the fair."}
        # read back: nothing lost (what the CRM cannot hold is in the overlay)
        (item,) = await env.store.get_items(u, [res.server_id])
        assert item.data == RICH_CONTACT
        # a poll sees our own write and changes nothing
        before = await env.sql.changes_since(u, f["Contacts"], 0, 100)
        await env.store.poll_once()
        assert await env.sql.changes_since(u, f["Contacts"], 0, 100) == before
        # a change in the CRM: only that field moves, the overlay stays
        env.crm.modify_record(rec["id"], {"mobile": "+39 333 0000", "birthday": "1985-03-15"})
        await env.store.poll_once()
        (item,) = await env.store.get_items(u, [res.server_id])
        assert item.data == dict(RICH_CONTACT, MobilePhoneNumber="+39 333 0000",
                                 Birthday="1985-03-15")
        # a device change of an overlay-only property does not touch the CRM
        calls = sum(env.crm.calls.values())
        changed = dict(item.data, Categories=["VIP"])
        (r2,) = await env.store.apply(u, f["Contacts"], [Op("change", server_id=res.server_id,
                                                              data=changed)])
        assert r2.ok and sum(env.crm.calls.values()) == calls
        # a device change of a mapped one revises only that field
        changed = dict(changed, JobTitle="CTO")
        await env.store.apply(u, f["Contacts"], [Op("change", server_id=res.server_id,
                                                    data=changed)])
        op, params = env.crm.log[-1]
        assert op == "revise" and '"title": "CTO"' in params["element"]
        assert '"firstname"' not in params["element"]
        assert env.crm.record(rec["id"])["title"] == "CTO"
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_contact_without_last_name_gets_one_in_crm_only(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        (res,) = await env.store.apply(u, f["Contacts"], [Op("add", data={"FirstName": "Solo"})])
        (rec,) = env.crm.live("Contacts", "dana")
        assert rec["lastname"] == "Solo"           # mandatory in the CRM
        (item,) = await env.store.get_items(u, [res.server_id])
        assert item.data == {"FirstName": "Solo"}
    finally:
        await env.close()


MEETING = {
    "Subject": "Weekly sync", "StartTime": "20261202T090000Z", "EndTime": "20261202T100000Z",
    "TimezoneId": "Europe/Rome", "Location": "Sala Verde", "Reminder": 60, "BusyStatus": 2,
    "Sensitivity": 0, "MeetingStatus": 1, "AllDayEvent": 0, "UID": "UID-1",
    "OrganizerEmail": "dana@example.org", "OrganizerName": "Dana",
    "Body": {"Type": 1, "Data": "Agenda"}, "Categories": ["Work"],
    "Attendees": [{"Email": "ann@x.org", "Name": "Ann", "AttendeeStatus": 3,
                   "AttendeeType": 1},
                  {"Email": "bob@elsewhere.org", "Name": "Bob", "AttendeeStatus": 4,
                   "AttendeeType": 2}],
    "Recurrence": {"Type": 1, "Interval": 1, "Occurrences": 10, "DayOfWeek": 8},
    "Exceptions": [{"ExceptionStartTime": "20261209T090000Z", "Deleted": 1}],
}


@pytest_twisted.ensureDeferred
async def test_event_fields_link_and_invitees(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        (c,) = await env.store.apply(u, f["Contacts"], [Op("add", data={
            "FirstName": "Ann", "LastName": "A", "Email1Address": "Ann <ann@x.org>"})])
        (ev,) = await env.store.apply(u, f["Calendar"], [Op("add", data=MEETING)])
        (contact,) = env.crm.live("Contacts", "dana")
        (rec,) = env.crm.live("Events", "dana")
        # Europe/Rome server: 09:00Z is 10:00 local
        assert (rec["subject"], rec["date_start"], rec["time_start"], rec["due_date"],
                rec["time_end"], rec["duration_hours"], rec["location"]) == (
            "Weekly sync", "2026-12-02", "10:00", "2026-12-02", "11:00", "1", "Sala Verde")
        assert rec["reminder_time"] == "61"         # 3600 s written, read as 61 minutes
        assert rec["recurringtype"] == "Weekly" and rec["ical_uuid"] == "UID-1"
        assert rec["contact_id"] == contact["id"]      # the link (by web-service id)
        assert [(i["module"], i["partecipation"]) for i in rec["invitees"]] == [
            ("Contacts", 2)]                        # bob is nobody in the CRM
        (item,) = await env.store.get_items(u, [ev.server_id])
        assert item.data == MEETING                 # overlay: nothing lost
        # the phone edits the subject only: the CRM's link and reminder are kept
        await env.store.apply(u, f["Calendar"], [Op("change", server_id=ev.server_id,
                                                    data=dict(MEETING, Subject="v2"))])
        rec = env.crm.record(rec["id"])
        assert rec["subject"] == "v2" and rec["reminder_time"] == "61"
        assert rec["contact_id"] == contact["id"]
        # the CRM links another contact: it becomes an attendee on the phone
        other = env.crm.add_record("Contacts", {"firstname": "Carl", "lastname": "C",
                                                "email": "carl@x.org"}, owner="dana")
        await env.store.poll_once()
        env.crm.modify_record(rec["id"], {"contact_id": other})
        await env.store.poll_once()
        (item,) = await env.store.get_items(u, [ev.server_id])
        assert [a["Email"] for a in item.data["Attendees"]] == [
            "ann@x.org", "bob@elsewhere.org", "carl@x.org"]
        assert item.data["Subject"] == "v2" and item.data["Reminder"] == 60
        assert c.ok
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_all_day_and_tasks(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        allday = {"Subject": "Santo Stefano", "AllDayEvent": 1, "TimezoneId": "Europe/Rome",
                  "StartTime": "20261225T230000Z", "EndTime": "20261226T230000Z"}
        (ev,) = await env.store.apply(u, f["Calendar"], [Op("add", data=allday)])
        (rec,) = env.crm.live("Events", "dana")
        assert (rec["date_start"], rec["due_date"], rec["is_all_day_event"]) == (
            "2026-12-26", "2026-12-26", "1")
        task = {"Subject": "Call back", "DueDate": "2026-12-03T00:00:00.000Z",
                "UtcDueDate": "2026-12-02T23:00:00.000Z", "Importance": 2, "Complete": 0,
                "Categories": ["x"]}
        (t,) = await env.store.apply(u, f["Tasks"], [Op("add", data=task)])
        (trec,) = env.crm.live("Calendar", "dana")
        assert (trec["subject"], trec["due_date"], trec["taskpriority"], trec["taskstatus"],
                trec["activitytype"]) == ("Call back", "2026-12-03", "High", "Not Started",
                                          "Task")
        assert trec["date_start"]                   # mandatory: filled in the CRM only
        (item,) = await env.store.get_items(u, [t.server_id])
        assert item.data == task
        env.crm.modify_record(trec["id"], {"taskstatus": "Completed"})
        env.crm.modify_record(rec["id"], {"due_date": "2026-12-27"})
        await env.store.poll_once()
        (item,) = await env.store.get_items(u, [t.server_id])
        assert item.data["Complete"] == 1 and item.data["DateCompleted"]
        (item,) = await env.store.get_items(u, [ev.server_id])
        assert (item.data["StartTime"], item.data["EndTime"]) == (
            "20261225T230000Z", "20261227T230000Z")
    finally:
        await env.close()


# -- the poller ------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_crm_changes_and_deletes_reach_the_feed_and_the_hub(tmp_path: Path) -> None:
    env = await make_env(tmp_path, users=("dana", "eve"))
    try:
        crm = env.crm
        a = crm.add_record("Contacts", {"firstname": "A", "lastname": "L"}, owner="dana")
        e = crm.add_record("Events", event_fields("E"), owner="dana")
        f = await env.folders("dana")
        g = await env.folders("eve")
        cursor = (await env.sql.changes_since(env.users["dana"], f["Contacts"], 0, 100)).high
        env.store.startService()
        woke = env.hub.next(env.users["dana"].id, f["Calendar"])
        crm.modify_record(e, {"subject": "E2"})
        await woke                              # within one poll interval
        woke = env.hub.next(env.users["dana"].id, f["Contacts"])
        crm.delete_record(a)
        await woke
        got = await feed(env, "dana", f["Contacts"], cursor)
        assert list(got.values()) == [None]
        events = await feed(env, "dana", f["Calendar"])
        assert [d["Subject"] for d in events.values()] == ["E2"]
        # reassigned to eve: gone for dana, new for eve (once eve's folders were read)
        woke = env.hub.next(env.users["eve"].id, g["Calendar"])
        crm.modify_record(e, {"assigned_user_id": "eve"})
        await woke
        assert list((await feed(env, "dana", f["Calendar"])).values()) == [None]
        assert [d["Subject"] for d in (await feed(env, "eve", g["Calendar"])).values()] == [
            "E2"]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_poll_cost_does_not_grow_with_users(tmp_path: Path) -> None:
    names = tuple(f"u{n}" for n in range(10))
    env = await make_env(tmp_path, users=names, settle=0.0)
    try:
        for name in names:
            await env.folders(name)
        await env.store.poll_once()
        before = sum(env.crm.calls.values())
        for _ in range(5):
            await env.store.poll_once()
        per_poll = (sum(env.crm.calls.values()) - before) / 5
        # per module one count and one query of modified records, for everyone
        assert per_poll == 6 and env.crm.calls["sync"] == 0
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_record_written_later_in_the_same_second_is_not_missed(tmp_path: Path) -> None:
    env = await make_env(tmp_path, settle=3600.0)
    try:
        f = await env.folders("dana")
        crm = env.crm
        crm.add_record("Contacts", {"lastname": "first"}, owner="dana",
                       modifiedtime=crm.now_local())
        await env.store.poll_once()
        stamp = crm.record(crm.live("Contacts")[0]["id"])["modifiedtime"]
        # the same second, after the poll read it
        crm.add_record("Contacts", {"lastname": "second"}, owner="dana", modifiedtime=stamp)
        await env.store.poll_once()
        got = await feed(env, "dana", f["Contacts"])
        assert sorted(d["LastName"] for d in got.values()) == ["first", "second"]
    finally:
        await env.close()


@pytest.mark.parametrize("flavour", ["vtenext", "vtiger"])
@pytest_twisted.ensureDeferred
async def test_delete_in_the_second_just_polled_is_found(tmp_path: Path,
                                                         flavour: str) -> None:
    crm = FakeCrm(flavour)
    crm.add_user("dana")
    # (a query never lists deleted records: the count tells, an id scan finds them)
    env = await make_env(tmp_path, crm=crm)
    try:
        f = await env.folders("dana")
        stamp = crm.now_local()
        a = crm.add_record("Contacts", {"lastname": "A"}, owner="dana", modifiedtime=stamp)
        await env.store.poll_once()
        crm.delete_record(a, modifiedtime=stamp)        # still the same second
        crm.add_record("Contacts", {"lastname": "B"}, owner="dana", modifiedtime=stamp)
        await env.store.poll_once()
        got = await feed(env, "dana", f["Contacts"])
        assert sorted(d["LastName"] for d in got.values() if d) == ["B"]
        assert list(got.values()).count(None) == 1
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_changes_and_deletions_found_without_sync(tmp_path: Path) -> None:
    """vtiger 8.2 answers sync with HTTP 500 (issue 9, point 1): the poller never asks."""
    crm = FakeCrm("vtiger")
    crm.add_user("dana")
    a = crm.add_record("Contacts", {"lastname": "A"}, owner="dana")
    crm.vtiger_sync_broken = True
    env = await make_env(tmp_path, crm=crm)
    try:
        f = await env.folders("dana")
        await env.store.poll_once()
        assert env.store.poll_failures == 0 and crm.calls["sync"] == 0
        b = crm.add_record("Contacts", {"lastname": "B"}, owner="dana")
        crm.modify_record(a, {"lastname": "A2"})
        await env.store.poll_once()
        got = await feed(env, "dana", f["Contacts"])
        assert sorted(d["LastName"] for d in got.values()) == ["A2", "B"]
        crm.delete_record(b)
        await env.store.poll_once()
        got = await feed(env, "dana", f["Contacts"])
        assert sorted(d["LastName"] for d in got.values() if d) == ["A2"]
    finally:
        await env.close()


# -- sessions and failures ------------------------------------------------------------------

@pytest.mark.parametrize("code", ["INVALID_SESSIONID", "SESSION_EXPIRED", "SESSION_LEFT_IDLE"])
@pytest_twisted.ensureDeferred
async def test_session_expiry_logs_in_again(tmp_path: Path, code: str) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        assert env.client.logins == 1
        env.crm.expire_sessions(code)
        (r,) = await env.store.apply(u, f["Contacts"], [Op("add", data={"LastName": "x"})])
        assert r.ok and env.client.logins == 2
        assert len(env.crm.live("Contacts", "dana")) == 1
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_refused_login_is_not_retried(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        env.client._access_key = "wrong"
        with pytest.raises(LoginRefused):
            await env.folders("dana")
        sent = sum(env.crm.calls.values())
        for _ in range(3):
            with pytest.raises(Unavailable):
                await env.client.call("listtypes")
        assert sum(env.crm.calls.values()) == sent      # nothing sent while refused
        assert env.crm.calls["login"] == 1
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_crm_down_then_back_nothing_lost_or_doubled(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        state = StateWrite("DEV", "sync:" + f["Contacts"], {}, build=lambda res: {"n": len(res)})
        ops = [Op("add", data={"LastName": f"n{i}"}, ref=f"c{i}") for i in range(3)]
        # the CRM fails after the first create: the device will repeat the request
        env.crm.fail_next = [("DATABASE_QUERY_ERROR", "x")] * 0
        env.crm.http500_next = 0
        created: list[str] = []
        original = env.client.create

        async def flaky(module: str, element: dict[str, Any]) -> dict[str, Any]:
            if created:
                env.crm.down = True
            rec = await original(module, element)
            created.append(rec["id"])
            return rec

        env.client.create = flaky  # type: ignore[method-assign]
        with pytest.raises(Unavailable):
            await env.store.apply(u, f["Contacts"], ops, state)
        assert await env.sql.get_state(u, "DEV", "sync:" + f["Contacts"]) is None
        assert len(env.crm.live("Contacts", "dana")) == 1
        env.crm.down = False
        env.client.create = original  # type: ignore[method-assign]
        res = await env.store.apply(u, f["Contacts"], ops, state)
        assert all(r.ok for r in res) and len({r.server_id for r in res}) == 3
        assert sorted(r["lastname"] for r in env.crm.live("Contacts", "dana")) == [
            "n0", "n1", "n2"]
        assert await env.sql.get_state(u, "DEV", "sync:" + f["Contacts"]) == {"n": 3}
        assert len(await feed(env, "dana", f["Contacts"])) == 3
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_crm_errors_and_slowness(tmp_path: Path) -> None:
    env = await make_env(tmp_path, timeout=0.5)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        # an error envelope for one record: that op fails, the others go through
        env.crm.fail_next = [("MANDATORY_FIELDS_MISSING", "lastname does not have a value")]
        env.crm.fail_ops = {"create"}
        res = await env.store.apply(u, f["Contacts"], [Op("add", data={"LastName": "a"}),
                                                       Op("add", data={"LastName": "b"})])
        assert [(r.ok, r.error) for r in res] == [(False, "invalid"), (True, None)]
        # an error about the CRM's own state (not the record's): the request is retried
        env.crm.fail_next = [("DATABASE_QUERY_ERROR", "deadlock")]
        with pytest.raises(Unavailable, match="DATABASE_QUERY_ERROR"):
            await env.store.apply(u, f["Contacts"], [Op("add", data={"LastName": "x"})])
        # an HTTP 500 page, a CRM slower than the timeout, a CRM that is down: 503
        env.crm.http500_next = 1
        with pytest.raises(Unavailable):
            await env.store.apply(u, f["Contacts"], [Op("add", data={"LastName": "c"})])
        env.crm.delay = 2.0
        with pytest.raises(Unavailable, match="within"):
            await env.store.apply(u, f["Contacts"], [Op("add", data={"LastName": "d"})])
        env.crm.delay = 0.0
        env.crm.down = True
        with pytest.raises(Unavailable):
            await env.store.poll_once()
        env.crm.down = False
        await env.store.poll_once()
        await deferLater(reactor(), 0, lambda: None)
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_poller_backs_off_while_the_crm_is_down(tmp_path: Path) -> None:
    env = await make_env(tmp_path, poll_interval=0.05)
    try:
        await env.folders("dana")
        env.crm.down = True
        env.store.startService()
        await deferLater(reactor(), 1.0, lambda: None)
        # 0.05, 0.1, 0.2, 0.4 …: a handful of tries in a second, not twenty
        assert 2 <= env.store.poll_failures <= 6
        env.crm.down = False
        await deferLater(reactor(), 1.6, lambda: None)
        assert env.store.poll_failures == 0 and env.store.polls >= 1
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_vtenext_zone_difference_and_date_format(tmp_path: Path) -> None:
    # the service user reads in New York time and dd-mm-yyyy; the server keeps Rome time
    crm = FakeCrm("vtenext", admin_tz="America/New_York", admin_date_format="dd-mm-yyyy")
    crm.add_user("dana")
    crm.add_record("Events", event_fields("Stored", date_start="2026-12-02",
                                          time_start="10:00"), owner="dana")
    crm.add_record("Contacts", {"lastname": "B", "birthday": "1985-03-14"}, owner="dana")
    env = await make_env(tmp_path, crm=crm, zone="Europe/Rome")
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        (item,) = (await feed(env, "dana", f["Calendar"])).values()
        assert item["StartTime"] == "20261202T090000Z"      # 10:00 Rome
        (c,) = (await feed(env, "dana", f["Contacts"])).values()
        assert c["Birthday"] == "1985-03-14"
        (r,) = await env.store.apply(u, f["Calendar"], [Op("add", data={
            "Subject": "New", "StartTime": "20261203T150000Z",
            "EndTime": "20261203T160000Z"})])
        rec = next(x for x in crm.live("Events") if x["subject"] == "New")
        assert (rec["date_start"], rec["time_start"]) == ("2026-12-03", "16:00")   # Rome
        before = await env.sql.changes_since(u, f["Calendar"], 0, 100)
        await env.store.poll_once()                 # sync path reads it the same way
        assert await env.sql.changes_since(u, f["Calendar"], 0, 100) == before
        assert r.ok
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_mirror_matches_a_model_of_random_phone_and_crm_changes(tmp_path: Path) -> None:
    """Seeded random adds, changes and deletes made on the phone or in the CRM, with polls
    in between: the feed then holds exactly the live items, each once, with the phone's
    overlay plus the CRM's changes, and the CRM holds the same records."""
    import random

    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = (await env.folders("dana"))["Contacts"]
        crm = env.crm
        for seed in range(8):
            rnd = random.Random(seed)
            model: dict[str, dict[str, Any]] = {}        # token -> expected EAS dict
            where: dict[str, tuple[str, str]] = {}       # token -> (server id, CRM id)
            points = []
            for i in range(rnd.randrange(8, 20)):
                token = f"s{seed}n{i}"
                live = sorted(model)
                kind = rnd.choice(["padd", "padd", "pchange", "pdel", "cadd", "cmod", "cdel"])
                if kind.endswith(("change", "del", "mod")) and not live:
                    kind = "padd"
                if kind == "padd":
                    data = {"FirstName": token, "Categories": [token], "JobTitle": "t"}
                    (r,) = await env.store.apply(u, f, [Op("add", data=data)])
                    model[token] = data
                    rec = next(x for x in crm.live("Contacts") if x["firstname"] == token)
                    where[token] = (r.server_id, rec["id"])
                elif kind == "cadd":
                    cid = crm.add_record("Contacts", {"firstname": token, "lastname": "L"},
                                         owner="dana")
                    model[token] = {"FirstName": token, "LastName": "L"}
                    where[token] = ("", cid)
                else:
                    victim = rnd.choice(live)
                    sid, cid = where[victim]
                    if not sid:                         # learn it from the mirror
                        await env.store.poll_once()
                        got = await feed(env, "dana", f)
                        sid = next(s for s, d in got.items() if d and d["FirstName"] == victim)
                        where[victim] = (sid, cid)
                    if kind == "pchange":
                        new = dict(model[victim], JobTitle=f"t{i}", Categories=["x", token])
                        (r,) = await env.store.apply(u, f, [Op("change", server_id=sid,
                                                              data=new)])
                        assert r.ok
                        model[victim] = new
                    elif kind == "cmod":
                        crm.modify_record(cid, {"title": f"c{i}"})
                        model[victim] = dict(model[victim], JobTitle=f"c{i}")
                    else:
                        if kind == "pdel":
                            (r,) = await env.store.apply(u, f, [Op("delete", server_id=sid)])
                            assert r.ok
                        else:
                            crm.delete_record(cid)
                        del model[victim]
                if rnd.random() < 0.5:
                    await env.store.poll_once()
                points.append(next(x.modseq for x in await env.sql.list_folders(u)
                                   if x.server_id == f))
            await env.store.poll_once()
            got = await feed(env, "dana", f)
            mine = {d["FirstName"]: d for d in got.values()
                    if d and d["FirstName"].startswith(f"s{seed}n")}
            assert mine == model, seed
            assert sorted(r["firstname"] for r in crm.live("Contacts", "dana")
                          if r["firstname"].startswith(f"s{seed}n")) == sorted(model)
            # from any earlier point: each item once, in modseq order
            for point in rnd.sample(points, min(4, len(points))):
                batch = await env.store.changes_since(u, f, point, 10_000)
                ids = [c.server_id for c in batch.changes]
                assert len(ids) == len(set(ids))
                assert [c.modseq for c in batch.changes] == sorted(
                    c.modseq for c in batch.changes)
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_stopping_with_a_poll_under_way_closes_the_database_after_it(
        tmp_path: Path) -> None:
    """twistd stops its services together (``MultiService.stopService`` stops every
    child at once): the SQL store must not close under a CRM poll that is still
    writing the mirror.  The poll under way finishes, its change is in the mirror,
    and nothing is logged as a failure ("SqlStore is not open" was, at a server's
    shutdown in CI)."""
    from twisted.application.service import MultiService
    from twisted.logger import globalLogPublisher

    env = await make_env(tmp_path, poll_interval=0.05)
    failures: list[Any] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        f = await env.folders("dana")
        top = MultiService()
        env.sql.setServiceParent(top)           # as easync.tap: the SQL store first,
        env.store.setServiceParent(top)         # the CRM store after it
        top.startService()
        await deferLater(reactor(), 0.3, lambda: None)
        env.crm.delay = 0.4                     # the next poll's answers come slowly
        env.crm.add_record("Contacts", {"firstname": "Late", "lastname": "Poll"},
                           owner="dana")
        before = env.store._round_running       # a poll begun before the add may miss it
        for _ in range(500):                    # wait for a poll that began after it
            now = env.store._round_running
            if now is not None and now is not before:
                break
            await deferLater(reactor(), 0.01, lambda: None)
        assert env.store._round_running is not None, "no poll under way"
        await deferLater(reactor(), 0.1, lambda: None)
        assert env.store._round_running is not None, "the poll ended before the stop"
        await top.stopService()
        assert not env.sql.db.is_open
        assert failures == [], failures
        await env.sql.open()
        got = await feed(env, "dana", f["Contacts"])
        assert [d.get("LastName") for d in got.values()] == ["Poll"]
    finally:
        globalLogPublisher.removeObserver(observe)
        env.crm.delay = 0.0
        await env.pool.closeCachedConnections()
        await env.port.stopListening()
        await env.sql.close()
