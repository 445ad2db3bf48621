"""The CRM field mapping (backends/crm/mapping.py) on records of a real vtiger 8.2.0.

The CRM records and describe answers are the recorded ones (``../shared/crm-transcripts/
vtiger-8.2.0.jsonl``, see its README): tasks (activitytype, the mandatory time_start),
all-day events in UTC, the salutation picklist, reminders (3600 s reads back 61, a
revise without reminder_time deletes the reminder) and entity-encoded text after an
update.  Issue 9, points 4, 5, 9, 10 and 14.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import needs

from backends.crm import mapping
from backends.crm.mapping import Context

RECORDING = Path(__file__).resolve().parents[2] / "shared" / "crm-transcripts" / \
    "vtiger-8.2.0.jsonl"
pytestmark = needs.mark(None if RECORDING.exists() else
                        f"the recorded CRM transcript {RECORDING} is missing (../shared beside"
                        " the repository)")


@cache
def steps() -> dict[str, dict[str, Any]]:
    with RECORDING.open(encoding="utf-8") as fh:
        return {s["step"]: s for s in map(json.loads, fh)}


def answer(step: str) -> Any:
    body = steps()[step]["response"]["body"]
    assert body["success"], body
    return body["result"]


def sent(step: str) -> dict[str, Any]:
    """The element a recorded create/revise/update sent."""
    return json.loads(steps()[step]["request"]["params"]["element"])


def shown(step: str) -> dict[str, Any]:
    """What the recorded UI's Edit view showed (the JSON in the step's note)."""
    note = steps()[step]["note"]
    return json.loads(note[note.index("{"):])


def describe(module: str) -> dict[str, Any]:
    return answer(f"describe-{module}")


def mandatory(module: str) -> set[str]:
    return {f["name"] for f in describe(module)["fields"] if f["mandatory"]}


def vtiger(local: str = "Europe/Rome") -> Context:
    """vtiger 8.2 as recorded: UTC storage, the service user (admin) in Europe/Rome."""
    return Context(flavour="vtiger", zone_name="UTC", local_zone_name=local,
                   date_format="dd-mm-yyyy", email2_field="secondaryemail",
                   event_fields=frozenset(f["name"] for f in describe("Events")["fields"]),
                   salutations=mapping.salutations(describe("Contacts")),
                   now=datetime(2026, 12, 4, 12, 0, tzinfo=UTC))


def vtenext() -> Context:
    """vtenext: server-local (Rome) storage and an is_all_day_event flag."""
    return Context(flavour="vtenext", zone_name="Europe/Rome",
                   local_zone_name="Europe/Rome", email2_field="yahooid",
                   event_fields=frozenset({"is_all_day_event", "ical_uuid"}),
                   now=datetime(2026, 12, 4, 12, 0, tzinfo=UTC))


def record(step: str, **changes: str) -> dict[str, Any]:
    return {**answer(step), **changes}


def from_crm(module: str, rec: dict[str, Any], ctx: Context,
             data: dict[str, Any] | None = None, old: dict[str, str] | None = None
             ) -> tuple[dict[str, Any], dict[str, str]]:
    """The phone's item after reading ``rec`` (and the view it leaves as snapshot)."""
    new = mapping.view(module, rec, "retrieve", ctx)
    return mapping.merge(module, data, old, new, ctx, crm_id=str(rec.get("id", ""))), new


def revise_keys(module: str, data: dict[str, Any], snapshot: dict[str, str],
                ctx: Context) -> set[str]:
    want = mapping.desired_view(module, data, snapshot, ctx)
    return {k for k in want if want[k] != snapshot.get(k)}


# -- point 4: tasks ------------------------------------------------------------------------------

def test_a_new_task_sends_every_field_describe_makes_mandatory_and_is_a_task() -> None:
    ctx = vtiger()
    for task in ({"Subject": "call back"}, {"Subject": "x", "DueDate": "2027-01-22T00:00:00.000Z"},
                 {"Subject": "y", "StartDate": "2027-01-20T00:00:00.000Z",
                  "DueDate": "2027-01-22T00:00:00.000Z", "Importance": 2}, {}):
        want = mapping.desired_view("Calendar", task, None, ctx)
        el = mapping.element("Calendar", want, None, ctx)
        el["assigned_user_id"] = "19x5"               # the store adds the owner
        # task-create-no-time-start: MANDATORY_FIELDS_MISSING without time_start
        missing = {f for f in mandatory("Calendar") if el.get(f) in (None, "")}
        assert not missing, (task, missing)
        # task-create-no-activitytype: without it the record becomes an Events one
        assert el["activitytype"] == sent("task-create")["activitytype"] == "Task"
        assert re.fullmatch(r"\d{2}:\d{2}", el["time_start"])
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", el["due_date"])


def test_a_task_starts_at_its_local_midnight_in_utc_and_reads_back_the_same_day() -> None:
    ctx = vtiger()
    task = {"Subject": "Rec: API task", "StartDate": "2027-01-20T00:00:00.000Z",
            "UtcStartDate": "2027-01-19T23:00:00.000Z", "DueDate": "2027-01-22T00:00:00.000Z",
            "UtcDueDate": "2027-01-21T23:00:00.000Z", "Importance": 2, "Complete": 0,
            "Body": {"Type": 1, "Data": "call back"}}
    want = mapping.desired_view("Calendar", task, None, ctx)
    el = mapping.element("Calendar", want, None, ctx)
    # vtiger keeps UTC and its UI shows it in the user's zone: Rome midnight of the 20th
    assert (el["date_start"], el["time_start"], el["due_date"]) == (
        "2027-01-19", "23:00", "2027-01-22")
    assert (el["taskpriority"], el["taskstatus"]) == ("High", "Not Started")
    # the CRM's answer (the recorded task with these dates) is what the phone wrote
    answered = record("task-create", date_start=el["date_start"],
                      time_start=el["time_start"], due_date=el["due_date"])
    assert mapping.view("Calendar", answered, "retrieve", ctx) == want
    assert revise_keys("Calendar", task, want, ctx) == set()


def test_a_crm_task_reaches_the_phone_with_its_dates_status_priority() -> None:
    ctx = vtiger()
    # task-retrieve: 2027-01-20 08:00 UTC (09:00 in Rome), due 2027-01-22, High
    item, snap = from_crm("Calendar", answer("task-retrieve"), ctx)
    assert item == {
        "Subject": "Rec: API task", "Body": {"Type": 1, "Data": "call back"},
        "StartDate": "2027-01-20T00:00:00.000Z", "UtcStartDate": "2027-01-19T23:00:00.000Z",
        "DueDate": "2027-01-22T00:00:00.000Z", "UtcDueDate": "2027-01-21T23:00:00.000Z",
        "Importance": 2, "Complete": 0}
    # completed in the CRM
    done, _ = from_crm("Calendar", record("task-retrieve", taskstatus="Completed"), ctx,
                       item, snap)
    assert done["Complete"] == 1 and done["DateCompleted"] == "2026-12-04T12:00:00.000Z"
    # the phone completes it: status, and nothing else, is revised
    mine = dict(item, Complete=1)
    assert revise_keys("Calendar", mine, snap, ctx) == {"taskstatus"}
    el = mapping.element("Calendar", mapping.desired_view("Calendar", mine, snap, ctx),
                         {"taskstatus"}, ctx)
    assert el == {"taskstatus": "Completed"}
    # a start late in the UTC day is the next local day (23:30 UTC = 00:30 in Rome)
    late, _ = from_crm("Calendar", record("task-retrieve", date_start="2027-01-19",
                                          time_start="23:30:00"), ctx)
    assert late["StartDate"] == "2027-01-20T00:00:00.000Z"


def test_a_task_without_dates_keeps_the_crm_ones() -> None:
    ctx = vtiger()
    item, snap = from_crm("Calendar", answer("task-retrieve"), ctx)
    no_dates = {k: v for k, v in item.items() if "Date" not in k}
    # the CRM cannot hold a task without dates (mandatory; a revise may not empty them)
    assert revise_keys("Calendar", no_dates, snap, ctx) == set()


# -- point 5: all-day events ----------------------------------------------------------------------

ALLDAY_ROME = {"Subject": "Santo Stefano", "AllDayEvent": 1, "TimezoneId": "Europe/Rome",
               "StartTime": "20261219T230000Z", "EndTime": "20261220T230000Z"}


def test_an_all_day_event_is_written_as_the_users_local_day_in_utc() -> None:
    ctx = vtiger()
    want = mapping.desired_view("Events", ALLDAY_ROME, None, ctx)
    el = mapping.element("Events", want, None, ctx)
    # issue 9 point 5: 20 Dec in Rome -> 2026-12-19 23:00 … 2026-12-20 22:59
    assert (el["date_start"], el["time_start"], el["due_date"], el["time_end"]) == (
        "2026-12-19", "23:00", "2026-12-20", "22:59")
    assert not {f for f in mandatory("Events") - {"assigned_user_id"} if el.get(f) in (
        None, "")}
    # two days, from a 16.x phone in New York
    ny = {"Subject": "trip", "AllDayEvent": 1, "TimezoneId": "America/New_York",
          "StartTime": "20270104T050000Z", "EndTime": "20270106T050000Z"}
    el = mapping.element("Events", mapping.desired_view("Events", ny, None, ctx), None, ctx)
    assert (el["date_start"], el["time_start"], el["due_date"], el["time_end"]) == (
        "2027-01-04", "05:00", "2027-01-06", "04:59")


def test_such_a_record_reads_back_as_the_all_day_event() -> None:
    ctx = vtiger()
    rec = record("event-retrieve-allday", subject="Santo Stefano", date_start="2026-12-19",
                 time_start="23:00:00",
                 due_date="2026-12-20", time_end="22:59:00", duration_hours="23",
                 duration_minutes="59")
    item, snap = from_crm("Events", rec, ctx)
    assert (item["AllDayEvent"], item["StartTime"], item["EndTime"], item["TimezoneId"]) == (
        1, "20261219T230000Z", "20261220T230000Z", "Europe/Rome")
    # the phone's own all-day event: its view is the record's, nothing to revise
    assert revise_keys("Events", ALLDAY_ROME, snap, ctx) == set()
    # and a CRM change of its subject leaves it all-day on the same day
    mine = dict(ALLDAY_ROME)
    after, _ = from_crm("Events", dict(rec, subject="renamed"), ctx, mine, snap)
    assert after == dict(ALLDAY_ROME, Subject="renamed")
    # moved to a time of day in the CRM: a timed event
    timed, _ = from_crm("Events", dict(rec, time_start="09:00", time_end="10:00",
                                       due_date="2026-12-19"), ctx, mine, snap)
    assert (timed["AllDayEvent"], timed["StartTime"], timed["EndTime"]) == (
        0, "20261219T090000Z", "20261219T100000Z")


def test_utc_midnights_are_not_a_rome_day() -> None:
    # event-retrieve-allday: 00:00 to 00:00 UTC is 01:00 to 01:00 in Rome, not all day
    item, _ = from_crm("Events", answer("event-retrieve-allday"), vtiger())
    assert (item["AllDayEvent"], item["StartTime"], item["EndTime"]) == (
        0, "20270201T000000Z", "20270202T000000Z")
    # for users whose day is UTC's it is 1 Feb, all day
    item, _ = from_crm("Events", answer("event-retrieve-allday"), vtiger("UTC"))
    assert (item["AllDayEvent"], item["StartTime"], item["EndTime"]) == (
        1, "20270201T000000Z", "20270202T000000Z")


def test_vtenext_keeps_its_all_day_flag_and_server_local_dates() -> None:
    ctx = vtenext()
    want = mapping.desired_view("Events", ALLDAY_ROME, None, ctx)
    el = mapping.element("Events", want, None, ctx)
    assert (el["date_start"], el["time_start"], el["due_date"], el["time_end"],
            el["is_all_day_event"]) == ("2026-12-20", "00:00", "2026-12-20", "23:59", "1")
    rec = {"id": "27x1", "subject": "S", "date_start": "2026-12-20", "time_start": "00:00",
           "due_date": "2026-12-20", "time_end": "23:59", "is_all_day_event": "1"}
    item, _ = from_crm("Events", rec, ctx)
    assert (item["AllDayEvent"], item["StartTime"], item["EndTime"]) == (
        1, "20261219T230000Z", "20261220T230000Z")


# -- point 9: salutation ---------------------------------------------------------------------------

def test_the_salutation_picklist_is_what_the_crm_ui_offers() -> None:
    # vtiger's describe types salutationtype as a string and lists no values …
    (field,) = [f for f in describe("Contacts")["fields"] if f["name"] == "salutationtype"]
    assert field["type"] == {"name": "string"}
    # … its UI offers these (the recorded Edit view); a listed picklist wins
    offered = [v for v in shown("ui-edit-ing-contact")["salutation_options"] if v]
    assert list(vtiger().salutations) == offered
    listed = {"fields": [{"name": "salutationtype", "type": {"name": "picklist", "picklistValues": [
        {"label": "--None--", "value": "--None--"}, {"label": "Dott.", "value": "Dott."}]}}]}
    assert mapping.salutations(listed) == ("Dott.",)


def test_a_title_outside_the_picklist_is_never_written() -> None:
    ctx = vtiger()
    for title, crm in (("Ing.", ""), ("Mr.", "Mr."), ("dr", "Dr."), ("PROF.", "Prof."),
                       ("", "")):
        want = mapping.desired_view("Contacts", {"LastName": "L", "Title": title}, None, ctx)
        assert mapping.element("Contacts", want, None, ctx)["salutationtype"] == crm, title


def test_a_ui_edit_that_blanks_a_title_outside_the_picklist_keeps_the_phones() -> None:
    ctx = vtiger()
    # contact-create-ing: 'Ing.' written through the API is kept as it is …
    item, snap = from_crm("Contacts", answer("contact-create-ing"), ctx)
    assert item["Title"] == "Ing."
    # … the phone edits something else: 'Ing.' is neither sent nor blanked
    assert revise_keys("Contacts", dict(item, JobTitle="Lead"), snap, ctx) == {"title"}
    # ui-edit-ing-contact-retrieve: the UI's save blanked it; the phone keeps its Title
    after, snap2 = from_crm("Contacts", answer("ui-edit-ing-contact-retrieve"), ctx, item,
                            snap)
    assert after["Title"] == "Ing." and after["Department"] == "Engineering"
    assert revise_keys("Contacts", after, snap2, ctx) == set()


def test_a_picklist_salutation_set_in_the_crm_reaches_the_phone() -> None:
    ctx = vtiger()
    item, snap = from_crm("Contacts", answer("contact-create-third"), ctx)
    assert "Title" not in item
    item, snap = from_crm("Contacts", record("contact-create-third", salutationtype="Prof."),
                          ctx, item, snap)
    assert item["Title"] == "Prof."
    # removed in the CRM: removed on the phone
    item, _ = from_crm("Contacts", answer("contact-create-third"), ctx, item, snap)
    assert "Title" not in item
    # contact-retrieve: 'Mr.' and every other field
    full, _ = from_crm("Contacts", answer("contact-retrieve"), ctx)
    assert (full["Title"], full["FirstName"], full["LastName"], full["Email2Address"]) == (
        "Mr.", "Marco", "Rec Rossi", "m.rossi@example.net")


# -- point 10: reminders --------------------------------------------------------------------------

def test_a_reminder_the_phone_did_not_change_is_not_rewritten() -> None:
    ctx = vtiger()
    # a 60-minute reminder set in the CRM's UI (remhrs 1, remmin 0)
    rec = record("event-retrieve", reminder_time="60")
    item, snap = from_crm("Events", rec, ctx)
    assert item["Reminder"] == 60
    # an edit of something the CRM does not hold makes no write at all
    assert revise_keys("Events", dict(item, Categories=["x"]), snap, ctx) == set()
    # a subject edit revises the subject; the reminder is not one of the changes …
    keys = revise_keys("Events", dict(item, Subject="v2"), snap, ctx)
    assert keys == {"subject"}
    # … but is carried, since a revise without it deletes it (event-revise-subject)
    assert answer("event-revise-subject")["reminder_time"] == ""
    el = mapping.element("Events", mapping.desired_view("Events", dict(item, Subject="v2"),
                                                        snap, ctx), keys, ctx)
    assert int(el["reminder_time"]) > 0


def test_a_reminder_written_by_a_phone_reads_back_unchanged() -> None:
    ctx = vtiger()
    # event-create: 3600 s written, read back '61'; the phone's 60 stays 60
    assert sent("event-create")["reminder_time"] == "3600"
    assert answer("event-create")["reminder_time"] == "61"
    phone = {"Subject": "Rec: API weekly meeting", "StartTime": "20270113T090000Z",
             "EndTime": "20270113T100000Z", "Reminder": 60}
    want = mapping.desired_view("Events", phone, None, ctx)
    assert mapping.element("Events", want, None, ctx)["reminder_time"] == "3600"
    item, snap = from_crm("Events", answer("event-retrieve"), ctx)
    assert item["Reminder"] == 60
    assert revise_keys("Events", item, snap, ctx) == set()
    # a changed reminder is sent: 45 minutes
    keys = revise_keys("Events", dict(item, Reminder=45), snap, ctx)
    assert keys == {"reminder"}
    el = mapping.element("Events", mapping.desired_view("Events", dict(item, Reminder=45),
                                                        snap, ctx), keys, ctx)
    assert el["reminder_time"] == "2700"
    # and a removed one
    no = {k: v for k, v in item.items() if k != "Reminder"}
    el = mapping.element("Events", mapping.desired_view("Events", no, snap, ctx), {"reminder"},
                         ctx)
    assert el["reminder_time"] == "0"


# -- point 14: HTML entities ----------------------------------------------------------------------

def test_entity_encoded_text_reaches_the_phone_as_typed() -> None:
    ctx = vtiger()
    typed = sent("contact-create")["description"]
    encoded = answer("contact-retrieve-after-mandatory-only")["description"]
    assert "&quot;" in encoded and "&agrave;" in encoded and "&euro;" in encoded
    assert mapping.decode_entities(encoded) == typed
    # the phone had the text as typed: the encoded copy is no change for it …
    item, snap = from_crm("Contacts", answer("contact-retrieve-after-update"), ctx)
    assert item["Body"]["Data"] == typed
    after, snap2 = from_crm("Contacts", answer("contact-retrieve-after-mandatory-only"), ctx,
                            item, snap)
    assert after == item and snap2 == snap
    # … and nothing is sent back (no second encoding)
    assert revise_keys("Contacts", dict(after, JobTitle="VP"), snap2, ctx) == {"title"}


def test_entities_in_every_text_field_and_twice_encoded_text() -> None:
    ctx = vtiger()
    rec = record("event-retrieve", subject="Budget &amp; roadmap", location="Caf&eacute;",
                 description="&amp;amp;quot;Q1&amp;amp;quot; &egrave; ok")
    item, _ = from_crm("Events", rec, ctx)
    assert (item["Subject"], item["Location"], item["Body"]["Data"]) == (
        "Budget & roadmap", "Café", '"Q1" è ok')
    task, _ = from_crm("Calendar", record("task-retrieve", subject="R&amp;D &#8364; &#x20AC;"),
                       ctx)
    assert task["Subject"] == "R&D € €"
    # what is not a complete reference stays as it is
    for text in ("AT&T", "a & b", "&nosuchentity;", "&amp", "100&euro"):
        assert mapping.decode_entities(text) == text
