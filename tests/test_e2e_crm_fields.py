"""Acceptance: the CRM field mapping through ``twistd easync --backend crm``, raw WBXML
at 14.1 and 16.1, against the fake CRM (tests/fakecrm.py) in its own process.

Issue 9, what a real vtiger 8.2.0 did (``../shared/crm-transcripts/``):

* point 4, tasks (MS-ASTASK 2.2.2: StartDate/UtcStartDate, DueDate/UtcDueDate,
  Importance, Complete, DateCompleted): every task a phone creates is accepted, with the
  Calendar module's mandatory time_start and activitytype "Task", and reads back right;
* point 5, all-day events (MS-ASCAL 2.2.2.1 AllDayEvent; MS-ASDTYPE 2.7.6 Timezone):
  vtiger keeps UTC, so 20 Dec in Rome is 2026-12-19 23:00 … 2026-12-20 22:59, and such a
  record reaches 14.1 phones as Rome midnights and 16.1 phones in the date form; vtenext
  keeps its flag and server-local dates;
* point 9, Title (MS-ASCNTC 2.2.2 Title) ↔ salutationtype, a picklist in the CRM's UI;
* point 10, Reminder (MS-ASCAL 2.2.2 Reminder, minutes): 3600 s reads back 61, a
  revise without reminder_time deletes the reminder;
* point 14, text the CRM returns HTML-entity-encoded (MS-ASAIRS 2.2.2 Body).

The service user of the vtiger CRM is ``svc``, an administrator in Europe/Rome (as the
recording's admin).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import needs
import pytest
import requests
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_e2e_calendar_raw import ROME, add_xml
from test_e2e_crm import FakeCrmProcess

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "crm-fields-Pa55"
SVC_KEY = "svcKEY456"
POLL = 0.3
VERSIONS = ["14.1", "16.1"]
USERS = ("dana", "erin", "fred", "gina")
# the recorded description (contact-create) and how vtiger returned it after an update
# that did not send it (contact-retrieve-after-mandatory-only)
TYPED = 'Met at the fair.\nLikes espresso; "quotes" & <tags> àèìòù €'
ENCODED = ("Met at the fair.\nLikes espresso; &quot;quotes&quot; &amp; &lt;tags&gt; "
           "&agrave;&egrave;&igrave;&ograve;&ugrave; &euro;")


def _start(tmp: pytest.TempPathFactory, flavour: str, service: str, key: str
           ) -> tuple[RunningServer, FakeCrmProcess]:
    crm = FakeCrmProcess(tmp.mktemp(f"fields-crm-{flavour}"), flavour=flavour)
    if service != "admin":
        crm("add_user", name=service, access_key=key, is_admin=True, timezone="Europe/Rome")
    for name in USERS:
        crm("add_user", name=name, email=f"{name}@example.org", timezone="Europe/Rome")
    work = tmp.mktemp(f"fields-easync-{flavour}")
    (work / "crm.key").write_text(key + "\n")
    srv = RunningServer(work, ["--backend", "crm", "--crm-url", crm.url, "--crm-user", service,
                               "--crm-access-key-file", str(work / "crm.key"),
                               "--crm-poll-interval", str(POLL), "--crm-timeout", "5"])
    try:
        srv.start()
        for name in USERS:
            srv.add_user(name, PASSWORD, email=f"{name}@example.org")
    except BaseException:
        srv.stop()
        crm.stop()
        raise
    return srv, crm


@pytest.fixture(scope="module")
def vtiger(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[RunningServer, FakeCrmProcess]]:
    srv, crm = _start(tmp_path_factory, "vtiger", "svc", SVC_KEY)
    yield srv, crm
    srv.stop()
    crm.stop()


@pytest.fixture(scope="module")
def vtenext(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[RunningServer, FakeCrmProcess]]:
    srv, crm = _start(tmp_path_factory, "vtenext", "admin", "adminKEY123")
    yield srv, crm
    srv.stop()
    crm.stop()


def phone(srv: RunningServer, user: str, name: str, version: str) -> RawDevice:
    d = RawDevice(srv.url, user, PASSWORD, f"{name}{version.replace('.', '')}",
                  version=version)
    d.provision()
    return d


def collection(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None
    return coll


def add(d: RawDevice, folder: str, key: str, appdata: str) -> tuple[str, str]:
    """Add one item; (new SyncKey, its ServerId).  The item's Status must be 1."""
    coll = collection(d.sync(folder, key, add_xml("n1", appdata)))
    assert coll.text_of("AirSync:Status") == "1"
    resp = coll.find("AirSync:Responses/AirSync:Add")
    assert resp is not None and resp.text_of("AirSync:Status") == "1", resp
    return coll.text_of("AirSync:SyncKey") or key, resp.text_of("AirSync:ServerId") or ""


def change(d: RawDevice, folder: str, key: str, sid: str, appdata: str) -> str:
    inner = (f"<GetChanges>0</GetChanges><Commands><Change><ServerId>{sid}</ServerId>"
             f"<ApplicationData>{appdata}</ApplicationData></Change></Commands>")
    coll = collection(d.sync(folder, key, inner))
    assert coll.text_of("AirSync:Status") == "1"
    resp = coll.find("AirSync:Responses/AirSync:Change")
    assert resp is None or resp.text_of("AirSync:Status") == "1", resp
    return coll.text_of("AirSync:SyncKey") or key


def until(d: RawDevice, folder: str, key: str, seen: Callable[[dict[str, Node]], bool]
          ) -> tuple[str, dict[str, Node]]:
    """Sync until the items that came satisfy ``seen`` (the poller brings CRM changes)."""
    got: dict[str, Node] = {}
    deadline = time.monotonic() + 15
    while True:
        key, items, _gone, _last = d.pull(folder, key)
        got.update(items)
        if seen(got):
            return key, got
        assert time.monotonic() < deadline, {k: v.text_of("Calendar:Subject") for k, v in
                                             got.items()}
        time.sleep(0.1)


def start(d: RawDevice, folder: str) -> str:
    key, _items, _gone, _last = d.pull(folder, d.initial(folder))
    return key


def live(crm: FakeCrmProcess, module: str, owner: str, **match: str) -> dict[str, Any]:
    (rec,) = [r for r in crm("live", module=module, owner=owner)
              if all(r.get(k) == v for k, v in match.items())]
    return rec


def by_subject(items: dict[str, Node], ns: str, subject: str) -> Node | None:
    return next((n for n in items.values() if n.text_of(f"{ns}:Subject") == subject), None)


# -- point 4: tasks --------------------------------------------------------------------------------

TASK = """<B:Body><B:Type>1</B:Type><B:Data>call back</B:Data></B:Body>
<T:Subject>{subject}</T:Subject><T:Importance>2</T:Importance>
<T:UtcStartDate>2027-01-19T23:00:00.000Z</T:UtcStartDate>
<T:StartDate>2027-01-20T00:00:00.000Z</T:StartDate>
<T:UtcDueDate>2027-01-21T23:00:00.000Z</T:UtcDueDate>
<T:DueDate>2027-01-22T00:00:00.000Z</T:DueDate><T:Complete>0</T:Complete>"""


@pytest.mark.parametrize("version", VERSIONS)
def test_every_task_a_phone_creates_is_accepted_and_reads_back(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    a, b = phone(srv, "dana", "taskA", version), phone(srv, "dana", "taskB", version)
    tasks = a.folders()["Tasks"]
    ka, kb = start(a, tasks), start(b, tasks)
    subject = f"Call Marco {version}"
    ka, sid = add(a, tasks, ka, TASK.format(subject=subject))
    # task-create: time_start (mandatory in describe) and activitytype 'Task' (without it
    # vtiger makes an Events record); the Rome day's midnight in UTC, the UI shows the 20th
    rec = live(crm, "Calendar", "dana", subject=subject)
    assert (rec["activitytype"], rec["date_start"], rec["time_start"], rec["due_date"],
            rec["taskpriority"], rec["taskstatus"], rec["description"]) == (
        "Task", "2027-01-19", "23:00", "2027-01-22", "High", "Not Started", "call back")
    # a bare task (no dates): accepted too, the CRM gets the dates it requires
    ka, bare = add(a, tasks, ka, f"<T:Subject>Bare {version}</T:Subject>"
                                 "<T:Complete>0</T:Complete>")
    rec2 = live(crm, "Calendar", "dana", subject=f"Bare {version}")
    assert rec2["time_start"] and rec2["date_start"] and rec2["due_date"]
    # the second phone reads them back as written
    kb, items, _, _ = b.pull(tasks, kb)
    got = items[sid]
    assert (got.text_of("Tasks:StartDate"), got.text_of("Tasks:UtcStartDate"),
            got.text_of("Tasks:DueDate"), got.text_of("Tasks:UtcDueDate"),
            got.text_of("Tasks:Importance"), got.text_of("Tasks:Complete")) == (
        "2027-01-20T00:00:00.000Z", "2027-01-19T23:00:00.000Z", "2027-01-22T00:00:00.000Z",
        "2027-01-21T23:00:00.000Z", "2", "0")
    assert got.text_of("AirSyncBase:Body/AirSyncBase:Data") == "call back"
    assert items[bare].text_of("Tasks:DueDate") is None      # as the phone wrote it
    # completed in the CRM: the phone sees it complete
    crm("modify_record", id=rec["id"], fields={"taskstatus": "Completed"})
    kb, items = until(b, tasks, kb, lambda it: sid in it and
                      it[sid].text_of("Tasks:Complete") == "1")
    assert items[sid].text_of("Tasks:DateCompleted")
    assert items[sid].text_of("Tasks:StartDate") == "2027-01-20T00:00:00.000Z"


@pytest.mark.parametrize("version", VERSIONS)
def test_a_crm_task_reaches_the_phone_on_its_local_day(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    d = phone(srv, "erin", "crmtask", version)
    tasks = d.folders()["Tasks"]
    key = start(d, tasks)
    subject = f"Rec: API task {version}"
    # task-create as recorded (08:00 UTC) and one made at 00:30 Rome (23:30 UTC the day
    # before)
    crm("add_record", module="Calendar", owner="erin", fields={
        "subject": subject, "date_start": "2027-01-20", "time_start": "08:00",
        "due_date": "2027-01-22", "taskstatus": "Not Started", "taskpriority": "High",
        "description": "call back", "activitytype": "Task"})
    crm("add_record", module="Calendar", owner="erin", fields={
        "subject": f"late {version}", "date_start": "2027-01-19", "time_start": "23:30:00",
        "due_date": "2027-01-20", "taskstatus": "In Progress", "taskpriority": "Low",
        "activitytype": "Task"})
    key, items = until(d, tasks, key, lambda it: bool(
        by_subject(it, "Tasks", subject) and by_subject(it, "Tasks", f"late {version}")))
    got = by_subject(items, "Tasks", subject)
    late = by_subject(items, "Tasks", f"late {version}")
    assert got is not None and late is not None
    assert (got.text_of("Tasks:StartDate"), got.text_of("Tasks:DueDate"),
            got.text_of("Tasks:Importance"), got.text_of("Tasks:Complete")) == (
        "2027-01-20T00:00:00.000Z", "2027-01-22T00:00:00.000Z", "2", "0")
    assert (late.text_of("Tasks:StartDate"), late.text_of("Tasks:UtcStartDate"),
            late.text_of("Tasks:Importance")) == (
        "2027-01-20T00:00:00.000Z", "2027-01-19T23:00:00.000Z", "0")


# -- point 5: all-day events ---------------------------------------------------------------------

def all_day_xml(subject: str, version: str) -> str:
    # 14.1: local midnights of the event's zone (MS-ASCAL 2.2.2.1); 16.1: the date form
    start, end = (("20261219T230000Z", "20261220T230000Z") if version < "16"
                  else ("20261220T000000Z", "20261221T000000Z"))
    return (f"<C:Timezone>{ROME}</C:Timezone><C:AllDayEvent>1</C:AllDayEvent>"
            f"<C:StartTime>{start}</C:StartTime><C:EndTime>{end}</C:EndTime>"
            f"<C:Subject>{subject}</C:Subject><C:BusyStatus>0</C:BusyStatus>"
            "<C:Sensitivity>0</C:Sensitivity><C:MeetingStatus>0</C:MeetingStatus>")


def zone_rule(blob: str | None) -> bytes:
    """A Timezone blob without its names: Bias, StandardDate, StandardBias, DaylightDate,
    DaylightBias (MS-ASDTYPE 2.7.6)."""
    raw = base64.b64decode(blob or "")
    return raw[0:4] + raw[68:88] + raw[152:172]


def assert_all_day_20_dec(node: Node | None, version: str) -> None:
    assert node is not None
    assert node.text_of("Calendar:AllDayEvent") == "1"
    if version < "16":
        # local midnights of Europe/Rome, with Rome's rule
        assert (node.text_of("Calendar:StartTime"), node.text_of("Calendar:EndTime")) == (
            "20261219T230000Z", "20261220T230000Z")
        assert zone_rule(node.text_of("Calendar:Timezone")) == zone_rule(ROME)
    else:
        assert (node.text_of("Calendar:StartTime"), node.text_of("Calendar:EndTime")) == (
            "20261220T000000Z", "20261221T000000Z")


@pytest.mark.parametrize("version", VERSIONS)
def test_an_all_day_event_is_the_local_day_in_utc_on_vtiger(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    a = phone(srv, "fred", "dayA", version)
    cal = a.folders()["Calendar"]
    ka = start(a, cal)
    subject = f"Santo Stefano {version}"
    ka, sid = add(a, cal, ka, all_day_xml(subject, version))
    rec = live(crm, "Events", "fred", subject=subject)
    # issue 9 point 5: 20 Dec in Rome -> 2026-12-19 23:00 … 2026-12-20 22:59 (UTC)
    assert (rec["date_start"], rec["time_start"], rec["due_date"], rec["time_end"]) == (
        "2026-12-19", "23:00", "2026-12-20", "22:59")
    # such a record, saved in the CRM's UI by fred (Europe/Rome) from 00:00 to 23:59 on
    # 20 Dec (the UI stores UTC: tz-ui-winter-create), reaches 14.1 and 16.1 phones as
    # 20 Dec, all day
    made = f"CRM all day {version}"
    (made_id,) = crm("ui_save_event", user="fred", changes={
        "subject": made, "date_start": "2026-12-20", "time_start": "00:00",
        "due_date": "2026-12-20", "time_end": "23:59", "activitytype": "Meeting"})
    assert (crm("record", id=made_id)["date_start"], crm("record", id=made_id)["time_start"]
            ) == ("2026-12-19", "23:00:00")
    for reader in ("14.1", "16.1"):
        b = phone(srv, "fred", f"dayB{version.replace('.', '')}", reader)
        _kb, items = until(b, cal, b.initial(cal), lambda it: bool(
            by_subject(it, "Calendar", made) and sid in it))
        assert_all_day_20_dec(items[sid], reader)
        assert_all_day_20_dec(by_subject(items, "Calendar", made), reader)
    # a CRM change of the phone's all-day event leaves it all day on the same day
    crm("modify_record", id=rec["id"], fields={"location": "Duomo"})
    b = phone(srv, "fred", f"dayC{version.replace('.', '')}", version)
    _kb, items = until(b, cal, b.initial(cal), lambda it: sid in it and it[sid].text_of(
        "Calendar:Location" if version < "16" else
        "AirSyncBase:Location/AirSyncBase:DisplayName") == "Duomo")
    assert_all_day_20_dec(items[sid], version)


@pytest.mark.parametrize("version", VERSIONS)
def test_an_all_day_event_keeps_the_vtenext_flag_and_dates(
        vtenext: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtenext
    a = phone(srv, "dana", "nextA", version)
    cal = a.folders()["Calendar"]
    ka = start(a, cal)
    subject = f"Santo Stefano {version}"
    ka, sid = add(a, cal, ka, all_day_xml(subject, version))
    rec = live(crm, "Events", "dana", subject=subject)
    # vtenext keeps server-local (Rome) times and says all day itself
    assert (rec["date_start"], rec["time_start"], rec["due_date"], rec["time_end"],
            rec["is_all_day_event"]) == ("2026-12-20", "00:00", "2026-12-20", "23:59", "1")
    made = f"vtenext all day {version}"
    crm("add_record", module="Events", owner="dana", fields={
        "subject": made, "date_start": "2026-12-20", "time_start": "00:00",
        "due_date": "2026-12-20", "time_end": "23:59", "duration_hours": "23",
        "duration_minutes": "59", "eventstatus": "Planned", "activitytype": "Meeting",
        "is_all_day_event": "1"})
    for reader in ("14.1", "16.1"):
        b = phone(srv, "dana", f"nextB{version.replace('.', '')}", reader)
        _kb, items = until(b, cal, b.initial(cal), lambda it: bool(
            by_subject(it, "Calendar", made) and sid in it))
        assert_all_day_20_dec(items[sid], reader)
        assert_all_day_20_dec(by_subject(items, "Calendar", made), reader)


# -- point 9: Title and the salutation picklist ----------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_a_title_outside_the_picklist_stays_on_the_phone(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    a, b = phone(srv, "gina", "titleA", version), phone(srv, "gina", "titleB", version)
    contacts = a.folders()["Contacts"]
    ka, kb = start(a, contacts), start(b, contacts)
    last = f"Bianchi{version.replace('.', '')}"
    ka, ing = add(a, contacts, ka, f"<K:Title>Ing.</K:Title><K:FirstName>Giulia</K:FirstName>"
                                   f"<K:LastName>{last}</K:LastName>")
    ka, dr = add(a, contacts, ka, f"<K:Title>Dr.</K:Title><K:FirstName>Luca</K:FirstName>"
                                  f"<K:LastName>{last}</K:LastName>")
    # never a value the CRM's UI does not offer ("", Mr., Ms., Mrs., Dr., Prof.)
    rec = live(crm, "Contacts", "gina", lastname=last, firstname="Giulia")
    assert rec["salutationtype"] == ""
    assert live(crm, "Contacts", "gina", lastname=last, firstname="Luca")[
        "salutationtype"] == "Dr."
    kb, items, _, _ = b.pull(contacts, kb)
    assert items[ing].text_of("Contacts:Title") == "Ing."
    assert items[dr].text_of("Contacts:Title") == "Dr."
    # a CRM holding 'Ing.' (written through the API by another client, contact-create-
    # ing) and a UI edit of the department that blanks it (ui-edit-ing-contact): the
    # phone keeps its Title
    crm("modify_record", id=rec["id"], fields={"salutationtype": "Ing."})
    kb, items = until(b, contacts, kb, lambda it: ing in it)
    assert items[ing].text_of("Contacts:Title") == "Ing."
    crm("ui_save_contact", user="gina", record=rec["id"],
        changes={"department": "Engineering"})
    assert crm("record", id=rec["id"])["salutationtype"] == ""
    kb, items = until(b, contacts, kb, lambda it: ing in it and it[ing].text_of(
        "Contacts:Department") == "Engineering")
    assert items[ing].text_of("Contacts:Title") == "Ing."
    # a picklist value picked in the CRM's UI reaches the phone
    crm("ui_save_contact", user="gina", record=rec["id"], changes={"salutationtype": "Prof."})
    kb, items = until(b, contacts, kb, lambda it: ing in it and it[ing].text_of(
        "Contacts:Title") == "Prof.")
    # and one removed there is removed on the phone
    crm("ui_save_contact", user="gina", record=rec["id"], changes={"salutationtype": ""})
    kb, items = until(b, contacts, kb, lambda it: ing in it and it[ing].text_of(
        "Contacts:Title") is None)


# -- point 10: reminders -------------------------------------------------------------------------

def location(name: str, version: str) -> str:
    if version < "16":
        return f"<C:Location>{name}</C:Location>"
    return f"<B:Location><B:DisplayName>{name}</B:DisplayName></B:Location>"


def event_fields(subject: str, **extra: str) -> dict[str, str]:
    return {"subject": subject, "date_start": "2027-01-13", "time_start": "09:00",
            "due_date": "2027-01-13", "time_end": "10:00", "duration_hours": "1",
            "duration_minutes": "0", "eventstatus": "Planned", "activitytype": "Meeting",
            "visibility": "Public", **extra}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_reminder_the_phone_did_not_change_is_not_rewritten(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    d = phone(srv, "dana", "remind", version)
    cal = d.folders()["Calendar"]
    key = start(d, cal)
    subject = f"UI reminder {version}"
    # a 60-minute reminder set in the CRM's UI (remhrs 1, remmin 0 -> 60), 10:00-11:00
    # in Rome
    (eid,) = crm("ui_save_event", user="dana", changes={
        "subject": subject, "date_start": "2027-01-13", "time_start": "10:00",
        "due_date": "2027-01-13", "time_end": "11:00", "activitytype": "Meeting",
        "set_reminder": "Yes", "remdays": "0", "remhrs": "1", "remmin": "0"})
    assert crm("record", id=eid)["reminder_time"] == "60"
    key, items = until(d, cal, key, lambda it: bool(by_subject(it, "Calendar", subject)))
    sid = next(s for s, n in items.items() if n.text_of("Calendar:Subject") == subject)
    assert items[sid].text_of("Calendar:Reminder") == "60"
    # the phone edits what the CRM does not hold (BusyStatus, Categories): no CRM write,
    # the 60 stays 60
    calls = crm("calls")
    key = change(d, cal, key, sid, f"<C:Timezone>{ROME}</C:Timezone>"
                 "<C:StartTime>20270113T090000Z</C:StartTime>"
                 "<C:EndTime>20270113T100000Z</C:EndTime>"
                 f"<C:Subject>{subject}</C:Subject><C:Reminder>60</C:Reminder>"
                 "<C:BusyStatus>1</C:BusyStatus><C:Categories><C:Category>Work</C:Category>"
                 "</C:Categories><C:AllDayEvent>0</C:AllDayEvent>")
    assert crm("record", id=eid)["reminder_time"] == "60"
    assert crm("calls").get("revise", 0) == calls.get("revise", 0)
    # a 45-minute one and a subject edit: the revise carries it unchanged (a revise
    # without reminder_time deletes it, event-revise-subject)
    subject2 = f"UI reminder 45 {version}"
    eid2 = crm("add_record", module="Events", owner="dana",
               fields=event_fields(subject2, reminder_time="45"))
    key, items = until(d, cal, key, lambda it: bool(by_subject(it, "Calendar", subject2)))
    sid2 = next(s for s, n in items.items() if n.text_of("Calendar:Subject") == subject2)
    key = change(d, cal, key, sid2, f"<C:Timezone>{ROME}</C:Timezone>"
                 "<C:StartTime>20270113T090000Z</C:StartTime>"
                 "<C:EndTime>20270113T100000Z</C:EndTime>"
                 f"<C:Subject>{subject2} renamed</C:Subject><C:Reminder>45</C:Reminder>"
                 "<C:AllDayEvent>0</C:AllDayEvent>")
    rec = crm("record", id=eid2)
    assert (rec["subject"], rec["reminder_time"]) == (f"{subject2} renamed", "45")


@pytest.mark.parametrize("version", VERSIONS)
def test_a_phones_reminder_reads_back_as_it_was_set(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    a, b = phone(srv, "erin", "remA", version), phone(srv, "erin", "remB", version)
    cal = a.folders()["Calendar"]
    ka, kb = start(a, cal), start(b, cal)
    subject = f"Phone reminder {version}"
    ka, sid = add(a, cal, ka, f"<C:Timezone>{ROME}</C:Timezone>"
                              "<C:StartTime>20270113T090000Z</C:StartTime>"
                              "<C:EndTime>20270113T100000Z</C:EndTime>"
                              f"<C:Subject>{subject}</C:Subject><C:Reminder>60</C:Reminder>"
                              "<C:AllDayEvent>0</C:AllDayEvent>")
    rec = live(crm, "Events", "erin", subject=subject)
    assert rec["reminder_time"] == "61"           # event-create: 3600 s reads back 61
    # the CRM renames it: the phones keep 60
    crm("modify_record", id=rec["id"], fields={"subject": f"{subject} (CRM)"})
    kb, items = until(b, cal, kb, lambda it: sid in it and it[sid].text_of(
        "Calendar:Subject") == f"{subject} (CRM)")
    assert items[sid].text_of("Calendar:Reminder") == "60"
    # the phone edits the location: the reminder is carried, still 61 in the CRM
    ka, _items, _gone, _last = a.pull(cal, ka)
    ka = change(a, cal, ka, sid, f"<C:Timezone>{ROME}</C:Timezone>"
                "<C:StartTime>20270113T090000Z</C:StartTime>"
                "<C:EndTime>20270113T100000Z</C:EndTime>"
                f"<C:Subject>{subject} (CRM)</C:Subject><C:Reminder>60</C:Reminder>"
                f"{location('Sala B', version)}<C:AllDayEvent>0</C:AllDayEvent>")
    rec = crm("record", id=rec["id"])
    assert (rec["location"], rec["reminder_time"]) == ("Sala B", "61")


# -- point 14: HTML entities ---------------------------------------------------------------------

def ws_update(crm: FakeCrmProcess, ws_id: str, **fields: str) -> None:
    """An ``update`` of ``fields`` through the CRM's web service, as another client (the
    svc user) does it: the id and the mandatory fields (lastname, assigned_user_id)."""
    token = requests.get(crm.url, params={"operation": "getchallenge", "username": "svc"},
                         timeout=10).json()["result"]["token"]
    login = requests.post(crm.url, data={
        "operation": "login", "username": "svc",
        "accessKey": hashlib.md5((token + SVC_KEY).encode()).hexdigest()}, timeout=10).json()
    session = login["result"]["sessionName"]
    have = requests.get(crm.url, params={"operation": "retrieve", "sessionName": session,
                                         "id": ws_id}, timeout=10).json()["result"]
    element = {"id": ws_id, "lastname": have["lastname"],
               "assigned_user_id": have["assigned_user_id"], **fields}
    r = requests.post(crm.url, data={"operation": "update", "element": json.dumps(element),
                                     "sessionName": session}, timeout=10).json()
    assert r["success"], r


@pytest.mark.parametrize("version", VERSIONS)
def test_entity_encoded_text_reaches_the_phone_as_typed(
        vtiger: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = vtiger
    a, b = phone(srv, "fred", "entA", version), phone(srv, "fred", "entB", version)
    contacts = a.folders()["Contacts"]
    ka, kb = start(a, contacts), start(b, contacts)
    last = f"Rossi{version.replace('.', '')}"
    body = TYPED.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    ka, sid = add(a, contacts, ka, f"<B:Body><B:Type>1</B:Type><B:Data>{body}</B:Data>"
                                   f"</B:Body><K:FirstName>Marco</K:FirstName>"
                                   f"<K:LastName>{last}</K:LastName>"
                                   "<K:CompanyName>Rossi &amp; Figli</K:CompanyName>")
    rec = live(crm, "Contacts", "fred", lastname=last)
    assert rec["description"] == TYPED                # create keeps the text as sent
    # another client's update of the department re-saves the text it did not send
    # entity-encoded (contact-update-mandatory-only, contact-retrieve-after-mandatory-only)
    ws_update(crm, rec["id"], department="Sales & Marketing")
    assert crm("record", id=rec["id"])["description"] == ENCODED
    kb, items = until(b, contacts, kb, lambda it: sid in it and it[sid].text_of(
        "Contacts:Department") == "Sales & Marketing")
    assert items[sid].text_of("AirSyncBase:Body/AirSyncBase:Data") == TYPED
    # more such updates: the kept text is encoded again each time (R&D -> R&amp;D ->
    # R&amp;amp;D); the phone still sees what was typed
    ws_update(crm, rec["id"], department="R&D")
    ws_update(crm, rec["id"], mailingcity="Forlì")
    ws_update(crm, rec["id"], firstname="Marco")
    before = crm("record", id=rec["id"])
    assert (before["department"], before["mailingcity"]) == ("R&amp;amp;D", "Forl&igrave;")
    kb, items = until(b, contacts, kb, lambda it: sid in it and it[sid].text_of(
        "Contacts:BusinessAddressCity") is not None)
    assert (items[sid].text_of("Contacts:Department"),
            items[sid].text_of("Contacts:BusinessAddressCity"),
            items[sid].text_of("AirSyncBase:Body/AirSyncBase:Data")) == ("R&D", "Forlì", TYPED)
    # the phone edits its job title: only that is sent, nothing is encoded again
    ka, _items, _gone, _last = a.pull(contacts, ka)
    ka = change(a, contacts, ka, sid, f"<B:Body><B:Type>1</B:Type><B:Data>{body}</B:Data>"
                f"</B:Body><K:FirstName>Marco</K:FirstName><K:LastName>{last}</K:LastName>"
                "<K:Department>R&amp;D</K:Department>"
                "<K:BusinessAddressCity>Forlì</K:BusinessAddressCity>"
                "<K:JobTitle>Owner</K:JobTitle>")
    after = crm("record", id=rec["id"])
    assert after["title"] == "Owner"
    assert {k: after[k] for k in ("description", "department", "mailingcity", "firstname")
            } == {k: before[k] for k in ("description", "department", "mailingcity",
                                         "firstname")}
