"""Acceptance (issue #9, points 6, 7 and 11): ``twistd easync --backend crm`` against
the fake vtiger in its own process, with raw WBXML (libwbxml) at 14.1 and 16.1.

* 6: a weekly series saved in the CRM's UI is one record per occurrence, each
  ``recurringtype`` Weekly (recording ``ui-series-query``): the phone gets one Add per
  occurrence with no ``Recurrence`` (MS-ASCAL 2.2.2.39: an event without it is a
  single appointment), never one endless series.
* 7: a series a phone made keeps its ``Recurrence`` (MS-ASCAL 2.2.2.39) and
  ``Exceptions`` (MS-ASCAL 2.2.2.22) when the CRM's UI saves the record with another
  location and ``recurringtype=--None--`` (``ui-edit-api-event-location``); the phones
  get a Change (MS-ASCMD 2.2.3.24) with the new location and the series intact.
* 11: a meeting's CRM contact link stays on its contact after the phone changed that
  contact's e-mail and sends the meeting with the old address (MS-ASCAL 2.2.2.4
  Attendees).
"""

from __future__ import annotations

from collections.abc import Iterator

import needs
import pytest
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_e2e_calendar_raw import add_xml, responses
from test_e2e_crm import FakeCrmProcess

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "series-Pa55"
POLL = 0.3
VERSIONS = ("14.1", "16.1")
USERS = [f"s{v.replace('.', '')}" for v in VERSIONS]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[RunningServer, FakeCrmProcess]]:
    crm = FakeCrmProcess(tmp_path_factory.mktemp("series-crm"), flavour="vtiger")
    work = tmp_path_factory.mktemp("series-easync")
    (work / "crm.key").write_text("adminKEY123\n")
    srv = RunningServer(work, ["--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                               "--crm-access-key-file", str(work / "crm.key"),
                               "--crm-poll-interval", str(POLL)])
    try:
        srv.start()
        for name in USERS:
            crm("add_user", name=name, email=f"{name}@example.org")
            srv.add_user(name, PASSWORD, email=f"{name}@example.org")
        yield srv, crm
    finally:
        srv.stop()
        crm.stop()


def device(srv: RunningServer, user: str, dev: str, version: str) -> RawDevice:
    d = RawDevice(srv.url, user, PASSWORD, dev, version=version)
    d.provision()
    return d


def pull_until(d: RawDevice, folder: str, key: str, done, tries: int = 60
               ) -> tuple[str, dict[str, Node]]:
    """Sync until ``done(items so far)`` (the poller brings CRM changes within POLL)."""
    import time

    seen: dict[str, Node] = {}
    for _ in range(tries):
        key, items, _deleted, _last = d.pull(folder, key)
        seen.update(items)
        if done(seen):
            return key, seen
        time.sleep(0.1)
    raise AssertionError(f"not reached: {sorted(seen)}")


def ui_series(subject: str) -> list[dict[str, str]]:
    return [{"subject": subject, "date_start": day, "time_start": "09:00:00", "due_date": day,
             "time_end": "10:00:00", "recurringtype": "Weekly", "duration_hours": "1",
             "duration_minutes": "0", "eventstatus": "Planned", "activitytype": "Meeting",
             "location": "Sala A", "visibility": "Public"}
            for day in ("2027-03-17", "2027-03-24", "2027-03-31", "2027-04-07")]


@pytest.mark.parametrize("version", VERSIONS)
def test_ui_series_reaches_the_phone_as_single_events(
        env: tuple[RunningServer, FakeCrmProcess], version: str) -> None:
    srv, crm = env
    user = f"s{version.replace('.', '')}"
    subject = f"Rec: UI weekly series {version}"
    d = device(srv, user, f"series{user}", version)
    cal = d.folders()["Calendar"]
    key = d.initial(cal)
    crm("add_records", module="Events", owner=user, fields=ui_series(subject))
    key, items = pull_until(d, cal, key, lambda s: sum(
        n.text_of("Calendar:Subject") == subject for n in s.values()) == 4)
    mine = [n for n in items.values() if n.text_of("Calendar:Subject") == subject]
    assert sorted(n.text_of("Calendar:StartTime") for n in mine) == [
        "20270317T090000Z", "20270324T090000Z", "20270331T090000Z", "20270407T090000Z"]
    for n in mine:
        assert n.find("Calendar:Recurrence") is None
        assert n.find("Calendar:Exceptions") is None


PHONE_SERIES = """
<C:AllDayEvent>0</C:AllDayEvent><C:BusyStatus>2</C:BusyStatus>
<C:StartTime>20270113T090000Z</C:StartTime><C:EndTime>20270113T100000Z</C:EndTime>
<C:Subject>Rec: API weekly meeting</C:Subject><C:Location>Sala B</C:Location>
<C:Sensitivity>0</C:Sensitivity><C:MeetingStatus>0</C:MeetingStatus>
<C:Recurrence><C:Type>1</C:Type><C:Interval>1</C:Interval><C:Occurrences>10</C:Occurrences>
<C:DayOfWeek>8</C:DayOfWeek></C:Recurrence>
"""
EXCEPTION_141 = ("<C:Exceptions><C:Exception><C:Deleted>1</C:Deleted><C:ExceptionStartTime>"
                 "20270120T090000Z</C:ExceptionStartTime></C:Exception></C:Exceptions>")


def location(n: Node) -> str | None:
    """Calendar:Location (before 16.0), AirSyncBase:Location/DisplayName (16.x)."""
    return n.text_of("Calendar:Location") or n.text_of(
        "AirSyncBase:Location/AirSyncBase:DisplayName")


def recurrence(n: Node) -> tuple[str | None, ...]:
    r = n.find("Calendar:Recurrence")
    assert r is not None, "the series was lost"
    return tuple(r.text_of(f"Calendar:{k}") for k in ("Type", "Interval", "Occurrences",
                                                      "DayOfWeek"))


@pytest.mark.parametrize("version", VERSIONS)
def test_phone_series_survives_a_crm_ui_edit(env: tuple[RunningServer, FakeCrmProcess],
                                             version: str) -> None:
    srv, crm = env
    user = f"s{version.replace('.', '')}"
    a = device(srv, user, f"seriesA{user}", version)
    b = device(srv, user, f"seriesB{user}", version)
    cal = a.folders()["Calendar"]
    ka, _i, _d, _r = a.pull(cal, a.initial(cal))
    kb, _i, _d, _r = b.pull(cal, b.initial(cal))
    appdata = PHONE_SERIES + (EXCEPTION_141 if version == "14.1" else "")
    got = responses(a.sync(cal, ka, add_xml("w1", appdata)))
    status, sid, _add = got["w1"]
    assert status == "1" and sid
    (rec,) = [r for r in crm("live", module="Events", owner=user)
              if r["subject"] == "Rec: API weekly meeting"]
    assert rec["recurringtype"] == "Weekly"
    kb, items = pull_until(b, cal, kb, lambda s: sid in s)
    # the CRM's UI saves it with another location: recurringtype --None--, seconds added
    crm("modify_record", id=rec["id"], fields={"location": "Sala C",
                                               "recurringtype": "--None--",
                                               "time_start": "09:00:00",
                                               "time_end": "10:00:00"})
    kb, items = pull_until(b, cal, kb, lambda s: s.get(sid) is not None and location(
        s[sid]) == "Sala C")
    item = items[sid]
    assert recurrence(item) == ("1", "1", "10", "8")
    assert item.text_of("Calendar:StartTime") == "20270113T090000Z"
    if version == "14.1":
        (exc,) = item.iter("Calendar:Exception")
        assert exc.text_of("Calendar:ExceptionStartTime") == "20270120T090000Z"
        assert exc.text_of("Calendar:Deleted") == "1"


@pytest.mark.parametrize("version", VERSIONS)
def test_link_stays_with_its_contact(env: tuple[RunningServer, FakeCrmProcess],
                                     version: str) -> None:
    srv, crm = env
    user = f"s{version.replace('.', '')}"
    d = device(srv, user, f"links{user}", version)
    folders = d.folders()
    contacts, cal = folders["Contacts"], folders["Calendar"]
    kc, _i, _d, _r = d.pull(contacts, d.initial(contacts))
    got = responses(d.sync(contacts, kc, add_xml("c1", (
        "<K:FirstName>Carla</K:FirstName><K:LastName>Neri</K:LastName>"
        "<K:Email1Address>carla@old.example</K:Email1Address>"))))
    assert got["c1"][0] == "1"
    carla_sid = got["c1"][1]
    (carla,) = [r for r in crm("live", module="Contacts", owner=user)
                if r["firstname"] == "Carla"]
    kc, _i, _d, _r = d.pull(contacts, d.initial(contacts))
    kk, _i, _d, _r = d.pull(cal, d.initial(cal))
    meeting = ("<C:AllDayEvent>0</C:AllDayEvent><C:StartTime>20270210T140000Z</C:StartTime>"
               "<C:EndTime>20270210T150000Z</C:EndTime><C:Subject>Rec: link</C:Subject>"
               "<C:BusyStatus>2</C:BusyStatus><C:MeetingStatus>1</C:MeetingStatus>"
               "<C:Attendees><C:Attendee><C:Email>carla@old.example</C:Email>"
               "<C:Name>Carla Neri</C:Name><C:AttendeeType>1</C:AttendeeType></C:Attendee>"
               "</C:Attendees>")
    got = responses(d.sync(cal, kk, add_xml("m1", meeting)))
    assert got["m1"][0] == "1"
    meeting_sid = got["m1"][1]
    (ev,) = [r for r in crm("live", module="Events", owner=user) if r["subject"] == "Rec: link"]
    carla_no = carla["id"]
    assert ev["contact_id"] == carla_no
    # another contact with the old address appears in the CRM
    crm("add_record", module="Contacts", owner=user,
        fields={"firstname": "Desk", "lastname": "Old", "email": "carla@old.example"})
    kc, _items = pull_until(d, contacts, kc, lambda s: any(
        n.text_of("Contacts:FirstName") == "Desk" for n in s.values()))
    # the phone changes Carla's address ...
    r = d.sync(contacts, kc, "<GetChanges>0</GetChanges><Commands><Change><ServerId>"
               f"{carla_sid}</ServerId><ApplicationData><K:FirstName>Carla</K:FirstName>"
               "<K:LastName>Neri</K:LastName><K:Email1Address>carla@new.example"
               "</K:Email1Address></ApplicationData></Change></Commands>")
    assert r.find("AirSync:Collections/AirSync:Collection").text_of("AirSync:Status") == "1"
    assert crm("record", id=carla["id"])["email"] == "carla@new.example"
    # ... then sends the meeting, which still has her old address, with a new room
    kk, _i, _d, _r = d.pull(cal, kk)
    r = d.sync(cal, kk, "<GetChanges>0</GetChanges><Commands><Change><ServerId>"
               f"{meeting_sid}</ServerId><ApplicationData>{meeting}"
               "<C:Location>B2</C:Location></ApplicationData></Change></Commands>")
    assert r.find("AirSync:Collections/AirSync:Collection").text_of("AirSync:Status") == "1"
    ev = crm("record", id=ev["id"])
    assert ev["location"] == "B2"
    assert ev["contact_id"] == carla_no
