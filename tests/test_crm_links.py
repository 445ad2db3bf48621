"""Recurrence and contact links of the CRM store (issue #9, points 6, 7, 8 and 11),
against the fake CRM over loopback HTTP as vtiger 8.2 (``vtiger-8.2.0.jsonl`` in
``../shared/crm-transcripts``) shows them:

* 6: a weekly series saved in the CRM's UI is one record per occurrence, each
  ``recurringtype`` Weekly, all at the first occurrence's UTC time
  (``ui-series-query``): each reaches the phones as a single event, never as an
  endless series.
* 7: a series made on a phone is one record with ``recurringtype``; a UI save of any
  other field posts ``recurringtype=--None--`` (``ui-edit-api-event-location``,
  ``ui-edit-api-event-retrieve``): the phone's pattern and exceptions stay.
* 8: an event linked to two contacts: ``retrieve`` names the lower id, ``query`` the
  other, and a revise keeps only the contact ``retrieve`` names
  (``ui-two-contacts-*``).  vtiger's save (``modules/Calendar/Activity.php``
  ``save_module``) keeps every contact a request names in ``contactidlist`` (read
  from the source, not in the recording, so not in the fake): easync names them all.
* 11: a link stays with its contact while that attendee stays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest_twisted
from crmtest import make_env
from fakecrm import FakeCrm
from test_crm_store import feed

from easync.model import Op

# the UI series of ui-series-create/ui-series-query: Wednesdays 10:00-11:00 Rome from
# 17 March to 7 April 2027, every occurrence stored at 09:00:00 UTC (also after DST)
UI_SERIES = [{"subject": "Rec: UI weekly series", "date_start": day, "time_start": "09:00:00",
              "due_date": day, "time_end": "10:00:00", "recurringtype": "Weekly",
              "duration_hours": "1", "duration_minutes": "0", "eventstatus": "Planned",
              "activitytype": "Meeting", "location": "Sala A", "visibility": "Public"}
             for day in ("2027-03-17", "2027-03-24", "2027-03-31", "2027-04-07")]

# a phone's weekly meeting (Wednesdays 09:00Z from 13 Jan 2027, ten times, the second
# occurrence deleted), as in event-create
PHONE_SERIES = {
    "Subject": "Rec: API weekly meeting", "Location": "Sala B", "TimezoneId": "UTC",
    "StartTime": "20270113T090000Z", "EndTime": "20270113T100000Z", "AllDayEvent": 0,
    "BusyStatus": 2, "Sensitivity": 0, "MeetingStatus": 0, "UID": "PHONE-SERIES-1",
    "Recurrence": {"Type": 1, "Interval": 1, "Occurrences": 10, "DayOfWeek": 8},
    "Exceptions": [{"ExceptionStartTime": "20270120T090000Z", "Deleted": 1}],
}


def sent(crm: FakeCrm, op: str) -> list[dict[str, Any]]:
    """The form fields of every ``op`` request the fake got, element decoded."""
    out = []
    for name, params in crm.log:
        if name == op:
            p = dict(params)
            if "element" in p:
                p["element"] = json.loads(p["element"])
            out.append(p)
    return out


# -- 6: a series made in the CRM's UI ---------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_ui_series_occurrences_are_single_events(tmp_path: Path) -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("dana", email="dana@example.org")
    ids = [crm.add_record("Events", f, owner="dana") for f in UI_SERIES[:2]]
    env = await make_env(tmp_path, crm=crm)
    try:
        f = await env.folders("dana")
        # first load (query) and then the poller bring the occurrences
        ids += [crm.add_record("Events", fl, owner="dana") for fl in UI_SERIES[2:]]
        await env.store.poll_once()
        got = await feed(env, "dana", f["Calendar"])
        assert len(got) == 4 == len(ids)
        assert sorted(d["StartTime"] for d in got.values()) == [
            "20270317T090000Z", "20270324T090000Z", "20270331T090000Z", "20270407T090000Z"]
        for d in got.values():
            assert "Recurrence" not in d and "Exceptions" not in d, d
            assert d["Subject"] == "Rec: UI weekly series" and d["Location"] == "Sala A"
        # a UI edit of one occurrence (its time) does not make it a series either
        crm.modify_record(ids[1], {"time_start": "10:00:00", "time_end": "11:00:00",
                                   "location": "Sala D"})
        await env.store.poll_once()
        got = await feed(env, "dana", f["Calendar"])
        assert sorted(d["StartTime"] for d in got.values()) == [
            "20270317T090000Z", "20270324T100000Z", "20270331T090000Z", "20270407T090000Z"]
        assert not any("Recurrence" in d for d in got.values())
        # a phone edit of one occurrence leaves its CRM recurringtype alone
        sid = next(s for s, d in got.items() if d["StartTime"] == "20270331T090000Z")
        (res,) = await env.store.apply(env.users["dana"], f["Calendar"], [Op(
            "change", server_id=sid, data=dict(got[sid], Subject="Rec: moved room"))])
        assert res.ok
        (revise,) = sent(crm, "revise")
        assert "recurringtype" not in revise["element"], revise
        assert crm.record(ids[2])["recurringtype"] == "Weekly"
    finally:
        await env.close()


# -- 7: a phone's series survives a CRM UI edit ---------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_phone_series_survives_a_ui_edit(tmp_path: Path) -> None:
    env = await make_env(tmp_path, flavour="vtiger")
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        (res,) = await env.store.apply(u, f["Calendar"], [Op("add", data=PHONE_SERIES,
                                                              ref="s1")])
        assert res.ok
        (rec,) = env.crm.live("Events", "dana")
        assert rec["recurringtype"] == "Weekly"
        # the UI save of ui-edit-api-event-location: location changed, the repeat box
        # unticked (the UI shows no recurrence), times re-saved with seconds
        env.crm.modify_record(rec["id"], {"location": "Sala C", "recurringtype": "--None--",
                                          "time_start": "09:00:00", "time_end": "10:00:00"})
        await env.store.poll_once()
        (item,) = await env.store.get_items(u, [res.server_id])
        assert item.data["Location"] == "Sala C"
        assert item.data["Recurrence"] == PHONE_SERIES["Recurrence"]
        assert item.data["Exceptions"] == PHONE_SERIES["Exceptions"]
        assert item.data["StartTime"] == PHONE_SERIES["StartTime"]
        # the phone's next edit writes its recurrence type back
        await env.store.apply(u, f["Calendar"], [Op("change", server_id=res.server_id,
                                                    data=dict(item.data, Subject="v2"))])
        assert env.crm.record(rec["id"])["recurringtype"] == "Weekly"
        # the CRM moves the meeting a day and an hour later (Thursdays 10:00Z): the
        # series moves whole, its deleted occurrence with it
        env.crm.modify_record(rec["id"], {"date_start": "2027-01-14", "time_start": "10:00:00",
                                          "due_date": "2027-01-14", "time_end": "11:00:00",
                                          "recurringtype": "--None--"})
        await env.store.poll_once()
        (item,) = await env.store.get_items(u, [res.server_id])
        assert item.data["StartTime"] == "20270114T100000Z"
        assert item.data["Recurrence"] == {"Type": 1, "Interval": 1, "Occurrences": 10,
                                           "DayOfWeek": 16}
        assert item.data["Exceptions"] == [{"ExceptionStartTime": "20270121T100000Z",
                                            "Deleted": 1}]
        # the phone drops the recurrence: the CRM is told
        single = {k: v for k, v in item.data.items() if k not in ("Recurrence", "Exceptions")}
        await env.store.apply(u, f["Calendar"], [Op("change", server_id=res.server_id,
                                                    data=single)])
        assert env.crm.record(rec["id"])["recurringtype"] == "--None--"
    finally:
        await env.close()


# -- 8: several contacts on one event --------------------------------------------------------------

def numbers(ids: list[str]) -> list[str]:
    return sorted(i.split("x")[1] for i in ids)


@pytest_twisted.ensureDeferred
async def test_a_phone_edit_names_every_crm_contact_link(tmp_path: Path) -> None:
    """The fake follows the recording: a revise keeps only the contact ``retrieve``
    names, whatever else the request carries (the recording has no API write with
    ``contactidlist``).  What easync controls is checked: every revise names every
    link it knows in ``contactidlist``, from both read paths, and easync's own side
    keeps them."""
    crm = FakeCrm("vtiger")
    crm.add_user("dana", email="dana@example.org")
    giulia = crm.add_record("Contacts", {"firstname": "Giulia", "lastname": "Rec Bianchi",
                                         "email": "giulia.bianchi@example.org"}, owner="dana")
    paolo = crm.add_record("Contacts", {"firstname": "Paolo", "lastname": "Rec Verdi",
                                        "email": "paolo.verdi@example.org"}, owner="dana")
    event = crm.add_record("Events", {
        "subject": "Rec: UI two contacts", "date_start": "2027-02-10",
        "time_start": "14:00:00", "due_date": "2027-02-10", "time_end": "15:00:00",
        "duration_hours": "1", "eventstatus": "Planned", "activitytype": "Meeting",
        "location": "Ufficio", "recurringtype": "--None--"}, owner="dana")
    # ui-two-contacts-create: the UI links both contacts
    crm.ui_link_contacts("dana", event, [giulia, paolo])
    assert numbers(crm.record(event)["contacts"]) == numbers([giulia, paolo])
    env = await make_env(tmp_path, crm=crm)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        await feed(env, "dana", f["Contacts"])
        (sid, data), = (await feed(env, "dana", f["Calendar"])).items()
        # the first load reads through query: the higher contact is the attendee
        assert [a["Email"] for a in data["Attendees"]] == ["paolo.verdi@example.org"]
        # the phone changes the subject only (ui-two-contacts-revise-subject)
        (res,) = await env.store.apply(u, f["Calendar"], [Op(
            "change", server_id=sid, data=dict(data, Subject="Rec: UI two contacts (rev)"))])
        assert res.ok
        (revise,) = sent(crm, "revise")
        assert sorted(revise["contactidlist"].split(";")) == numbers([giulia, paolo])
        # a later edit still names both: easync remembers the links it wrote
        (res,) = await env.store.apply(u, f["Calendar"], [Op(
            "change", server_id=sid, data=dict(data, Subject="Rec: third"))])
        assert sorted(sent(crm, "revise")[-1]["contactidlist"].split(";")) == numbers(
            [giulia, paolo])
        # the phone removes Paolo as an attendee: that link goes, Giulia's stays
        (res,) = await env.store.apply(u, f["Calendar"], [Op(
            "change", server_id=sid, data=dict(data, Subject="Rec: fourth", Attendees=[]))])
        assert sent(crm, "revise")[-1]["contactidlist"] == giulia.split("x")[1]
        assert crm.record(event)["contacts"] == [giulia]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_phone_event_with_two_contacts_names_both(tmp_path: Path) -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("dana", email="dana@example.org")
    ann = crm.add_record("Contacts", {"lastname": "Ann", "email": "ann@x.org"}, owner="dana")
    bob = crm.add_record("Contacts", {"lastname": "Bob", "email": "bob@x.org"}, owner="dana")
    env = await make_env(tmp_path, crm=crm)
    try:
        u = env.users["dana"]
        f = await env.folders("dana")
        await feed(env, "dana", f["Contacts"])
        meeting = dict(PHONE_SERIES, Attendees=[
            {"Email": "bob@x.org", "Name": "Bob", "AttendeeType": 1},
            {"Email": "ann@x.org", "Name": "Ann", "AttendeeType": 1},
            {"Email": "eve@elsewhere.org", "Name": "Eve", "AttendeeType": 1}])
        (res,) = await env.store.apply(u, f["Calendar"], [Op("add", data=meeting, ref="m")])
        assert res.ok
        (create,) = sent(crm, "create")
        assert create["element"]["contact_id"] == bob       # the first attendee's
        assert sorted(create["contactidlist"].split(";")) == numbers([ann, bob])
        (rec,) = crm.live("Events", "dana")
        # contactidlist keeps both links; retrieve names the lower id (recorded:
        # ui-two-contacts-retrieve), whichever was the element's contact_id
        assert sorted(rec["contacts"]) == sorted([ann, bob])
        assert rec["contact_id"] == min((ann, bob), key=lambda c: int(c.split("x")[1]))
    finally:
        await env.close()


# -- 11: a link follows its attendee, not an address -------------------------------------------

@pytest_twisted.ensureDeferred
async def test_link_stays_with_its_contact_when_its_address_changes(tmp_path: Path) -> None:
    for flavour in ("vtiger", "vtenext"):
        (tmp_path / flavour).mkdir()
        env = await make_env(tmp_path / flavour, flavour=flavour)
        try:
            u = env.users["dana"]
            f = await env.folders("dana")
            (carla,) = await env.store.apply(u, f["Contacts"], [Op("add", data={
                "FirstName": "Carla", "LastName": "Neri", "Email1Address": "carla@old.org"})])
            meeting = dict(PHONE_SERIES, Attendees=[
                {"Email": "carla@old.org", "Name": "Carla Neri", "AttendeeType": 1}])
            (ev,) = await env.store.apply(u, f["Calendar"], [Op("add", data=meeting)])
            (rec,) = env.crm.live("Events", "dana")
            (person,) = env.crm.live("Contacts", "dana")
            carla_no = person["id"]
            assert rec["contact_id"] == carla_no
            # another contact has the old address (a colleague's shared mailbox)
            env.crm.add_record("Contacts", {"firstname": "Desk", "lastname": "Old",
                                            "email": "carla@old.org"}, owner="dana")
            await env.store.poll_once()
            # the phone changes Carla's address, then edits the meeting, which still
            # lists her old address
            await env.store.apply(u, f["Contacts"], [Op("change", server_id=carla.server_id,
                                                        data={"FirstName": "Carla",
                                                              "LastName": "Neri",
                                                              "Email1Address": "carla@new.org"})])
            assert env.crm.record(person["id"])["email"] == "carla@new.org"
            await env.store.apply(u, f["Calendar"], [Op("change", server_id=ev.server_id,
                                                        data=dict(meeting, Location="B2"))])
            rec = env.crm.record(rec["id"])
            assert rec["location"] == "B2"
            assert rec["contact_id"] == carla_no, flavour
            # while she stays an attendee (with a new one added) the link stays hers
            await env.store.apply(u, f["Calendar"], [Op("change", server_id=ev.server_id,
                                                        data=dict(meeting, Location="B3",
                                                                  Attendees=[
                {"Email": "zed@elsewhere.org", "AttendeeType": 1},
                *meeting["Attendees"]]))])
            assert env.crm.record(rec["id"])["contact_id"] == carla_no, flavour
        finally:
            await env.close()
