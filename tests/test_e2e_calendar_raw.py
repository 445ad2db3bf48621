"""Acceptance: raw 14.1 and 16.1 calendar traffic, encoded and decoded by libwbxml.

A weekly meeting with a deleted and a moved occurrence, an attendee, a
Europe/Rome timezone and a body, plus an all-day event, created on one device
and read back intact on another; then a change and a delete travel back.
"""

from __future__ import annotations

import struct

import needs
import pytest
from easync_server import RunningServer
from rawclient import RawDevice, b64

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "s3cret-Pa55"


def systemtime(month: int, dow: int, week: int, hour: int) -> bytes:
    # SYSTEMTIME: Year, Month, DayOfWeek, Day(=week of month), Hour, Minute, Second, Ms
    return struct.pack("<8H", 0, month, dow, week, hour, 0, 0, 0)


def rome_blob() -> str:
    """TIME_ZONE_INFORMATION for Europe/Rome, laid out by hand from MS-ASDTYPE 2.7.6."""
    name = "W. Europe Standard Time".encode("utf-16-le").ljust(64, b"\0")
    dname = "W. Europe Daylight Time".encode("utf-16-le").ljust(64, b"\0")
    data = (struct.pack("<i", -60) + name + systemtime(10, 0, 5, 3) + struct.pack("<i", 0)
            + dname + systemtime(3, 0, 5, 2) + struct.pack("<i", -60))
    assert len(data) == 172
    return b64(data)


ROME = rome_blob()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = RunningServer(tmp_path_factory.mktemp("cal")).start()
    srv.add_user("dana", PASSWORD, email="dana@example.org")
    srv.add_user("eve", PASSWORD, email="eve@example.org")
    yield srv
    srv.stop()


def device(server: RunningServer, user: str, dev: str, version: str) -> RawDevice:
    d = RawDevice(server.url, user, PASSWORD, dev, version=version)
    d.provision()
    return d


MEETING_COMMON = f"""
<C:Timezone>{ROME}</C:Timezone>
<C:AllDayEvent>0</C:AllDayEvent>
<B:Body><B:Type>1</B:Type><B:Data>Agenda: budget, hiring.</B:Data></B:Body>
<C:BusyStatus>2</C:BusyStatus>
<C:OrganizerName>Dana</C:OrganizerName>
<C:OrganizerEmail>dana@example.org</C:OrganizerEmail>
<C:EndTime>20261202T100000Z</C:EndTime>
<C:Reminder>15</C:Reminder>
<C:Sensitivity>0</C:Sensitivity>
<C:Subject>Weekly sync</C:Subject>
<C:StartTime>20261202T090000Z</C:StartTime>
<C:MeetingStatus>1</C:MeetingStatus>
<C:Attendees><C:Attendee><C:Email>bob@example.org</C:Email><C:Name>Bob</C:Name>
<C:AttendeeStatus>3</C:AttendeeStatus><C:AttendeeType>1</C:AttendeeType></C:Attendee>
</C:Attendees>
<C:Categories><C:Category>Work</C:Category></C:Categories>
<C:Recurrence><C:Type>1</C:Type><C:Interval>1</C:Interval><C:Occurrences>10</C:Occurrences>
<C:DayOfWeek>8</C:DayOfWeek></C:Recurrence>
"""

EXCEPTIONS_141 = """
<C:Exceptions>
<C:Exception><C:Deleted>1</C:Deleted><C:ExceptionStartTime>20261209T090000Z</C:ExceptionStartTime></C:Exception>
<C:Exception><C:ExceptionStartTime>20261216T090000Z</C:ExceptionStartTime>
<C:StartTime>20261217T130000Z</C:StartTime><C:EndTime>20261217T140000Z</C:EndTime>
<C:Subject>Weekly sync (moved)</C:Subject></C:Exception>
</C:Exceptions>
"""

ALLDAY = f"""
<C:Timezone>{ROME}</C:Timezone>
<C:AllDayEvent>1</C:AllDayEvent>
<C:BusyStatus>0</C:BusyStatus>
<C:EndTime>20261225T230000Z</C:EndTime>
<C:Subject>Santo Stefano</C:Subject>
<C:StartTime>20261224T230000Z</C:StartTime>
"""


def add_xml(client_id: str, appdata: str) -> str:
    return (f"<GetChanges>0</GetChanges><Commands><Add><ClientId>{client_id}</ClientId>"
            f"<ApplicationData>{appdata}</ApplicationData></Add></Commands>")


def responses(r) -> dict[str, tuple[str, str | None, object]]:
    coll = r.find("AirSync:Collections/AirSync:Collection")
    out = {}
    for add in coll.iter("AirSync:Add"):
        cid = add.text_of("AirSync:ClientId")
        if cid:
            out[cid] = (add.text_of("AirSync:Status"), add.text_of("AirSync:ServerId"), add)
    return out


def check_meeting(app) -> None:
    assert app.text_of("Calendar:Subject") == "Weekly sync"
    assert app.text_of("Calendar:StartTime") == "20261202T090000Z"
    assert app.text_of("Calendar:EndTime") == "20261202T100000Z"
    assert app.text_of("Calendar:Timezone") == ROME
    assert app.text_of("Calendar:AllDayEvent") == "0"
    assert app.text_of("Calendar:Reminder") == "15"
    assert app.text_of("Calendar:BusyStatus") == "2"
    assert app.text_of("Calendar:OrganizerEmail") == "dana@example.org"
    assert app.text_of("AirSyncBase:Body/AirSyncBase:Data") == "Agenda: budget, hiring."
    assert app.text_of("Calendar:UID")
    rec = app.find("Calendar:Recurrence")
    assert rec is not None
    assert rec.text_of("Calendar:Type") == "1"
    assert rec.text_of("Calendar:DayOfWeek") == "8"
    assert rec.text_of("Calendar:Occurrences") == "10"
    att = app.find("Calendar:Attendees/Calendar:Attendee")
    assert att is not None
    assert att.text_of("Calendar:Email") == "bob@example.org"
    assert att.text_of("Calendar:Name") == "Bob"
    assert att.text_of("Calendar:AttendeeStatus") == "3"
    assert att.text_of("Calendar:AttendeeType") == "1"
    assert [c.text for c in app.iter("Calendar:Category")] == ["Work"]
    # up to 14.1 an exception names its occurrence by ExceptionStartTime, from 16.0 by
    # AirSyncBase:InstanceId (MS-ASCAL 2.2.2.21)
    exc = {e.text_of("Calendar:ExceptionStartTime") or e.text_of("AirSyncBase:InstanceId"): e
           for e in app.iter("Calendar:Exception")}
    assert set(exc) == {"20261209T090000Z", "20261216T090000Z"}
    assert exc["20261209T090000Z"].text_of("Calendar:Deleted") == "1"
    moved = exc["20261216T090000Z"]
    assert moved.text_of("Calendar:Deleted") in (None, "0")
    assert moved.text_of("Calendar:StartTime") == "20261217T130000Z"
    assert moved.text_of("Calendar:EndTime") == "20261217T140000Z"
    assert moved.text_of("Calendar:Subject") == "Weekly sync (moved)"


def check_allday(app, version: str = "14.1") -> None:
    """25 December in Rome: local midnights with Rome's Timezone up to 14.1, the date
    form (midnight UTC of the date, UTC Timezone) from 16.0 (MS-ASCAL 2.2.2.1; issue 8)."""
    assert app.text_of("Calendar:Subject") == "Santo Stefano"
    assert app.text_of("Calendar:AllDayEvent") == "1"
    if version.startswith("16"):
        assert app.text_of("Calendar:StartTime") == "20261225T000000Z"
        assert app.text_of("Calendar:EndTime") == "20261226T000000Z"
        assert app.text_of("Calendar:Timezone") == b64(bytes(172))
        return
    assert app.text_of("Calendar:StartTime") == "20261224T230000Z"
    assert app.text_of("Calendar:EndTime") == "20261225T230000Z"
    assert app.text_of("Calendar:Timezone") == ROME


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_meeting_and_allday_round_trip(server: RunningServer, version: str) -> None:
    tag = version.replace(".", "")
    a = device(server, "dana", f"calA{tag}", version)
    b = device(server, "dana", f"calB{tag}", version)
    cal = a.folders()["Calendar"]
    ka = a.initial(cal)
    kb = b.initial(cal)
    kb, _, _, _ = b.pull(cal, kb)
    ka, _, _, _ = a.pull(cal, ka)

    if version == "14.1":
        meeting = MEETING_COMMON + "<C:UID>040000008200E00074C5B7101A82E008</C:UID>" + \
            "<C:Location>Sala Verde</C:Location>" + EXCEPTIONS_141
    else:
        meeting = MEETING_COMMON + "<C:ClientUid>7D3C1F0E9A8B4C2DA1B2C3D4E5F60718</C:ClientUid>" \
            + "<B:Location><B:DisplayName>Sala Verde</B:DisplayName></B:Location>"
    r = a.sync(cal, ka, add_xml("m1", meeting) + "")
    got = responses(r)
    assert got["m1"][0] == "1"
    meeting_id = got["m1"][1]
    ka = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    if version == "16.1":
        # 16.x: the server makes the UID and returns it; occurrences are changed by InstanceId
        assert got["m1"][2].text_of("AirSync:ApplicationData/Calendar:UID")
        inner = (
            "<GetChanges>0</GetChanges><Commands>"
            f"<Delete><ServerId>{meeting_id}</ServerId><B:InstanceId>20261209T090000Z"
            "</B:InstanceId></Delete>"
            f"<Change><ServerId>{meeting_id}</ServerId><B:InstanceId>20261216T090000Z"
            "</B:InstanceId><ApplicationData><C:StartTime>20261217T130000Z</C:StartTime>"
            "<C:EndTime>20261217T140000Z</C:EndTime><C:Subject>Weekly sync (moved)</C:Subject>"
            "</ApplicationData></Change></Commands>")
        r = a.sync(cal, ka, inner)
        coll = r.find("AirSync:Collections/AirSync:Collection")
        assert coll.text_of("AirSync:Status") == "1"
        for resp in coll.iter("AirSync:Change") + coll.iter("AirSync:Delete"):
            assert resp.text_of("AirSync:Status") in (None, "1")
        ka = coll.text_of("AirSync:SyncKey")
    r = a.sync(cal, ka, add_xml("d1", ALLDAY))
    got = responses(r)
    assert got["d1"][0] == "1"
    allday_id = got["d1"][1]
    ka = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")

    # device B reads both back intact
    kb, items, _, _ = b.pull(cal, kb)
    assert meeting_id in items and allday_id in items
    check_meeting(items[meeting_id])
    loc = items[meeting_id].text_of("Calendar:Location") or items[meeting_id].text_of(
        "AirSyncBase:Location/AirSyncBase:DisplayName")
    assert loc == "Sala Verde"
    check_allday(items[allday_id], version)

    # B changes the meeting's subject (full item, as a device sends it); A sees it
    changed = MEETING_COMMON.replace("<C:Subject>Weekly sync</C:Subject>",
                                     "<C:Subject>Weekly sync v2</C:Subject>")
    if version == "14.1":
        changed += EXCEPTIONS_141
    inner = (f"<GetChanges>0</GetChanges><Commands><Change><ServerId>{meeting_id}</ServerId>"
             f"<ApplicationData>{changed}</ApplicationData></Change>"
             f"<Delete><ServerId>{allday_id}</ServerId></Delete></Commands>")
    r = b.sync(cal, kb, inner)
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll.text_of("AirSync:Status") == "1"
    ka, items_a, deleted_a, _ = a.pull(cal, ka)
    assert items_a[meeting_id].text_of("Calendar:Subject") == "Weekly sync v2"
    assert items_a[meeting_id].text_of("Calendar:UID")
    assert allday_id in deleted_a


def test_resent_sync_gives_same_answer_and_no_duplicate(server: RunningServer) -> None:
    a = device(server, "eve", "resend1", "14.1")
    b = device(server, "eve", "resend2", "14.1")
    contacts = a.folders()["Contacts"]
    key = a.initial(contacts)
    key, _, _, _ = a.pull(contacts, key)
    inner = ("<GetChanges>0</GetChanges><Commands>"
             "<Add><ClientId>r1</ClientId><ApplicationData><K:FirstName>Once</K:FirstName>"
             "<K:LastName>Only</K:LastName></ApplicationData></Add>"
             "<Add><ClientId>r2</ClientId><ApplicationData><K:FirstName>Twice</K:FirstName>"
             "</ApplicationData></Add></Commands>")
    first = a.sync(contacts, key, inner)
    second = a.sync(contacts, key, inner)       # the answer was "lost": same request again
    r1, r2 = responses(first), responses(second)
    assert r1["r1"][1] and r1["r2"][1]
    assert (r1["r1"][1], r1["r2"][1]) == (r2["r1"][1], r2["r2"][1])
    k1 = first.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    k2 = second.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    assert k1 == k2
    # another device sees exactly two new contacts
    kb = b.initial(contacts)
    _, items, _, _ = b.pull(contacts, kb)
    names = [n.text_of("Contacts:FirstName") for n in items.values()]
    assert names.count("Once") == 1 and names.count("Twice") == 1
    # and the resending device can go on from the key it got
    _k3, more, _, _ = a.pull(contacts, k1)
    assert r1["r1"][1] not in more
