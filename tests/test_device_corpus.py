"""Replay the device corpus (tests/corpus/devices/) through a real ``twistd easync``.

Every file is sent by a fresh, provisioned RawDevice with the device's own DeviceType,
User-Agent and protocol version (and again at the other versions it speaks where the
shape is valid there), after FolderSync and Sync key 0 of the right folder, with SQL and
with the CRM backend (the fake CRM in its own process).  What it added is read back by
SECOND devices of the same user at 16.1 and 14.1.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import needs
import pytest
from backendsites import BACKENDS, add_user, started
from devicecorpus import Capture, fill, load, names, send, to_141, tz_rules
from easync_server import RunningServer
from rawclient import Node, RawDevice, parse_xml, wbxml_to_xml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "corpus-Pa55word"
_users = itertools.count(1)
_devices = itertools.count(1)

BERLIN = load("outlook2016_140_calendar_change_allday.xml").body.split(
    "<C:Timezone>")[1].split("<")[0]
NY = load("iphone_ios17_161_calendar_add_allday.xml").body.split(
    "<C:Timezone>")[1].split("<")[0]
# a 1x1 PNG
PICTURE = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63000100000500010d0a2db40000000049454e44ae426082")).decode()


# -- servers ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[RunningServer, Any]]:
    with started(tmp_path_factory, request.param, "corpus") as site:
        yield site


class Case:
    """One replay: a fresh user, the capture's device at ``version``, reader devices."""

    def __init__(self, backend: tuple[RunningServer, Any], cap: Capture, version: str) -> None:
        self.server, crm = backend
        self.cap = cap
        self.version = version
        self.user = f"corpus{next(_users)}"
        add_user(self.server, crm, self.user, PASSWORD)
        self.device_id = cap.meta.get("DeviceId") or f"corpusdev{next(_devices)}"
        self.dev = self.device(cap.device_type, cap.user_agent, version, self.device_id)
        self.folder = self.dev.folders()[cap.meta["Folder"]]
        self.key, _, _, _ = self.dev.pull(self.folder, self.dev.initial(self.folder))

    def device(self, device_type: str, user_agent: str, version: str,
               device_id: str | None = None) -> RawDevice:
        d = RawDevice(self.server.url, self.user, PASSWORD,
                      device_id or f"corpusdev{next(_devices)}", version=version,
                      device_type=device_type, user_agent=user_agent)
        d.provision()
        return d

    def body(self, name: str | None = None) -> str:
        cap = load(name) if name else self.cap
        return to_141(cap.body) if self.version < "16.0" and "C:ClientUid" in cap.body \
            else cap.body

    def send(self, body: str, **values: str) -> Node:
        """Send ``body`` (placeholders filled) from the capture's device; the key moves on."""
        r = send(self.dev, fill(body, SYNCKEY=self.key, COLLECTION=self.folder, **values))
        if r is None:           # an empty answer: nothing to report, same key
            r = Node("AirSync:Sync", None, [Node("AirSync:Collections", None, [
                Node("AirSync:Collection", None, [Node("AirSync:Status", "1"),
                                                  Node("AirSync:SyncKey", self.key)])])])
        coll = collection(r)
        # MS-ASCMD 2.2.3.177.17: Status 1 = success for the collection
        assert coll.text_of("AirSync:Status") == "1", r
        self.key = coll.text_of("AirSync:SyncKey") or self.key
        return r

    def add(self, body: str, **values: str) -> tuple[str, Node]:
        """Send an Add; MS-ASCMD 2.2.3.177.17 / 2.2.3.156: Status 1 and a ServerId."""
        r = self.send(body, **values)
        (add,) = collection(r).iter("AirSync:Add")
        assert add.text_of("AirSync:Status") == "1", r
        sid = add.text_of("AirSync:ServerId")
        assert sid, r
        return sid, add

    def readers(self) -> dict[str, dict[str, Node]]:
        """What SECOND devices of the same user (16.1 and 14.1) read from the folder."""
        out = {}
        for version, dtype, ua in (("16.1", "iPhone", "Apple-iPhone14C5/2006.3"),
                                   ("14.1", "WindowsOutlook",
                                    "Outlook/16.0 (16.0.7167.6539; C2R; x86)")):
            d = self.device(dtype, ua, version)
            _, items, _, _ = d.pull(self.folder, d.initial(self.folder))
            out[version] = items
        return out

    def reread_by_writer(self) -> dict[str, Node]:
        """The writing device starts its folder over (Sync key 0) and reads everything."""
        _, items, _, _ = self.dev.pull(self.folder, self.dev.initial(self.folder))
        return items


def collection(r: Node) -> Node:
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None, r
    return coll


def location(app: Node) -> str | None:
    return app.text_of("Calendar:Location") or app.text_of(
        "AirSyncBase:Location/AirSyncBase:DisplayName")


def one_by(items: dict[str, Node], tag: str, value: str) -> Node:
    found = [n for n in items.values() if n.text_of(tag) == value]
    assert len(found) == 1, (value, len(found))
    return found[0]


# -- calendar -----------------------------------------------------------------------------

def check_harbour(app: Node, version: str, *, subject: str = "Møde på havnen",
                  start: str = "20240816T170000Z", end: str = "20240816T180000Z") -> None:
    assert app.text_of("Calendar:Subject") == subject
    assert app.text_of("Calendar:StartTime") == start
    assert app.text_of("Calendar:EndTime") == end
    assert app.text_of("Calendar:AllDayEvent") in (None, "0")
    # MS-ASCAL 2.2.2.27 (Location ≤14.1) / MS-ASAIRS 2.2.2.27 (airsyncbase:Location, 16.x)
    assert location(app) == "Havneplads 1, 8500 Grenaa, Denmark"
    assert app.text_of("AirSyncBase:Body/AirSyncBase:Data") == "Husk bådpapirerne."
    assert app.text_of("Calendar:Reminder") == "15"
    assert app.text_of("Calendar:BusyStatus") == "2"
    # MS-ASCAL 2.2.2.37: an empty Recurrence is "does not recur": none comes back
    assert app.find("Calendar:Recurrence") is None
    # MS-ASCAL 2.2.2.44 Timezone: the event's zone (Europe/Berlin rules) comes back
    assert tz_rules(app.text_of("Calendar:Timezone") or "") == tz_rules(BERLIN)
    assert app.text_of("Calendar:UID")


def scenario_add_empty_recurrence(case: Case) -> None:
    sid, add = case.add(case.body())
    if case.version >= "16.0":
        # MS-ASCAL 2.2.2.46: at 16.x the server makes the UID and returns it in the Add
        assert add.text_of("AirSync:ApplicationData/Calendar:UID")
    for version, items in case.readers().items():
        check_harbour(items[sid], version)
        if case.version < "16.0":
            # MS-ASCAL 2.2.2.46: up to 14.1 the client's UID is the event's UID
            assert items[sid].text_of("Calendar:UID") == "3F6B1C2D9E8A4B7C8D1E2F3A4B5C6D7E"


def scenario_change_partial(case: Case) -> None:
    sid, _ = case.add(case.body(case.cap.meta["Setup"]))
    r = case.send(case.body(), SERVERID=sid)
    for ch in collection(r).iter("AirSync:Change"):
        assert ch.text_of("AirSync:Status") in (None, "1"), r
    for version, items in case.readers().items():
        # MS-ASCAL 3.1.5.3: at 16.0/16.1 what the Change left out is ghosted (kept):
        # Location, Body, Reminder, BusyStatus stay as the Add made them
        check_harbour(items[sid], version, subject="Møde på havnen (flyttet)",
                      start="20240816T180000Z", end="20240816T193000Z")


def scenario_resent_clientuid(case: Case) -> None:
    sid, _ = case.add(case.body(case.cap.meta["Setup"]))
    again, _ = case.add(case.body())
    # MS-ASCAL 2.2.2.13 (ClientUid) / issue 6: the live event's ServerId, nothing added
    assert again == sid
    for version, items in case.readers().items():
        app = one_by(items, "Calendar:Subject", "Møde på havnen")
        check_harbour(app, version)
        assert len(items) == 1


def check_allday(app: Node, version: str, day: str, zone_blob: str, utc_offset_h: int) -> None:
    """MS-ASCAL 2.2.2.1 AllDayEvent: from midnight to midnight.  16.x readers get the date
    form (the date at 00:00Z); 12.x/14.x readers local midnight of the event's zone with
    that zone's Timezone: the same dates on all."""
    first = datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC)
    assert app.text_of("Calendar:AllDayEvent") == "1"
    if version >= "16.0":
        start, end = first, first + timedelta(days=1)
    else:
        start = first - timedelta(hours=utc_offset_h)
        end = start + timedelta(days=1)
        assert tz_rules(app.text_of("Calendar:Timezone") or "") == tz_rules(zone_blob)
    assert app.text_of("Calendar:StartTime") == start.strftime("%Y%m%dT%H%M%SZ")
    assert app.text_of("Calendar:EndTime") == end.strftime("%Y%m%dT%H%M%SZ")


def scenario_add_allday(case: Case) -> None:
    sid, _ = case.add(case.body())
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "Independence Day picnic"
        check_allday(app, version, "20240704", NY, -4)      # New York, EDT
        assert app.find("Calendar:Recurrence") is None      # MS-ASCAL 2.2.2.37


def scenario_birthday_yearly(case: Case) -> None:
    sid, _ = case.add(case.body())
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "Ada Lovelace's birthday"
        check_allday(app, version, "20241210", BERLIN, 1)   # Berlin, CET
        assert app.text_of("Calendar:Reminder") == "900"
        rec = app.find("Calendar:Recurrence")               # MS-ASCAL 2.2.2.37
        assert rec is not None
        assert (rec.text_of("Calendar:Type"), rec.text_of("Calendar:DayOfMonth"),
                rec.text_of("Calendar:MonthOfYear")) == ("5", "10", "12")
        assert rec.text_of("Calendar:Interval") in (None, "1")


OUTLOOK_SETUP_ADD = f"""<Sync xmlns="AirSync:" xmlns:C="Calendar:"><Collections><Collection>
<SyncKey>{{SYNCKEY}}</SyncKey><CollectionId>{{COLLECTION}}</CollectionId>
<GetChanges>0</GetChanges><Commands><Add><ClientId>1</ClientId><ApplicationData>
<C:Timezone>{BERLIN}</C:Timezone><C:DtStamp>20150218T140000Z</C:DtStamp>
<C:StartTime>20150216T230000Z</C:StartTime><C:Subject>jupp (before)</C:Subject>
<C:UID>184520936e</C:UID><C:EndTime>20150217T230000Z</C:EndTime>
<C:Sensitivity>0</C:Sensitivity><C:BusyStatus>0</C:BusyStatus><C:AllDayEvent>1</C:AllDayEvent>
<C:MeetingStatus>0</C:MeetingStatus></ApplicationData></Add></Commands></Collection>
</Collections></Sync>"""


def scenario_outlook_change_allday(case: Case) -> None:
    sid, _ = case.add(OUTLOOK_SETUP_ADD)
    r = case.send(case.body(), SERVERID=sid)
    for ch in collection(r).iter("AirSync:Change"):
        assert ch.text_of("AirSync:Status") in (None, "1"), r
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "jupp"
        assert app.text_of("Calendar:OrganizerEmail") == "test@domain.net"
        assert app.text_of("Calendar:Reminder") == "1080"
        check_allday(app, version, "20150217", BERLIN, 1)
        if version < "16.0":
            assert app.text_of("Calendar:UID") == "184520936e"      # MS-ASCAL 2.2.2.46


def _event(subject: str, start: datetime, hours: int = 1) -> str:
    fmt = "%Y%m%dT%H%M%SZ"
    return (f"<C:Timezone>{BERLIN}</C:Timezone><C:AllDayEvent>0</C:AllDayEvent>"
            f"<C:StartTime>{start.strftime(fmt)}</C:StartTime>"
            f"<C:EndTime>{(start + timedelta(hours=hours)).strftime(fmt)}</C:EndTime>"
            f"<C:Subject>{subject}</C:Subject><C:BusyStatus>2</C:BusyStatus>")


def _add_events(case: Case, events: list[str]) -> None:
    """Another device of the user adds ``events`` (ApplicationData contents)."""
    other = case.device("iPhone", "Apple-iPhone14C5/2006.3", "14.1")
    key, _, _, _ = other.pull(case.folder, other.initial(case.folder))
    for chunk in range(0, len(events), 100):
        adds = "".join(f"<Add><ClientId>e{chunk + n}</ClientId><ApplicationData>{e}"
                       "</ApplicationData></Add>"
                       for n, e in enumerate(events[chunk:chunk + 100]))
        r = other.sync(case.folder, key, f"<GetChanges>0</GetChanges><Commands>{adds}</Commands>")
        coll = collection(r)
        assert coll.text_of("AirSync:Status") == "1"
        assert [a.text_of("AirSync:Status") for a in coll.iter("AirSync:Add")] == \
            ["1"] * len(events[chunk:chunk + 100])
        key = coll.text_of("AirSync:SyncKey")


def _commands(r: Node) -> dict[str, list[tuple[str, str]]]:
    """{command tag: [(ServerId, Subject)]} of a Sync answer."""
    out: dict[str, list[tuple[str, str]]] = {}
    cmds = collection(r).find("AirSync:Commands")
    for c in cmds.children if cmds else []:
        out.setdefault(c.tag.split(":")[1], []).append(
            (c.text_of("AirSync:ServerId") or "",
             c.text_of("AirSync:ApplicationData/Calendar:Subject") or ""))
    return out


def scenario_filtertype(case: Case) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    _add_events(case, [_event("twenty days ago", now - timedelta(days=20, hours=2)),
                       _event("sixty days ago", now - timedelta(days=60)),
                       _event("tomorrow", now + timedelta(days=1))])
    # FilterType 5 (one month; MS-ASCMD 2.2.3.68.2): what is inside comes as Add
    adds: list[tuple[str, str]] = []
    while True:
        r = case.send(case.body(), FILTERTYPE="5")
        adds += _commands(r).get("Add", [])
        if collection(r).find("AirSync:MoreAvailable") is None:
            break
    sid = {subject: server_id for server_id, subject in adds}
    assert sorted(sid) == ["tomorrow", "twenty days ago"], adds
    # the same SyncKey with FilterType 4 (two weeks): what leaves the window is
    # SoftDeleted (MS-ASCMD 2.2.3.162), nothing else is sent
    got = _commands(case.send(case.body(), FILTERTYPE="4"))
    assert [s for s, _ in got.get("SoftDelete", [])] == [sid["twenty days ago"]], got
    assert "Add" not in got and "Delete" not in got, got
    # FilterType 6 (three months): what enters the window comes as Add
    got = _commands(case.send(case.body(), FILTERTYPE="6"))
    assert sorted(subject for _, subject in got.get("Add", [])) == [
        "sixty days ago", "twenty days ago"], got
    assert "SoftDelete" not in got, got


def scenario_windowsize0(case: Case) -> None:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=2)
    _add_events(case, [_event(f"slot {n:03d}", start + timedelta(hours=n)) for n in range(520)])
    r = case.send(case.body())
    got = _commands(r)
    # MS-ASCMD 2.2.3.199.2 / issue 9: WindowSize 0 means 512 (Horde: "if WINDOWSIZE is out
    # of bounds, interpret as 512")
    assert len(got.get("Add", [])) == 512, {k: len(v) for k, v in got.items()}
    assert collection(r).find("AirSync:MoreAvailable") is not None
    r = case.send(case.body())
    assert len(_commands(r).get("Add", [])) == 8


# -- contacts -----------------------------------------------------------------------------

def scenario_contact_empty_picture(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert (app.text_of("Contacts:FirstName"), app.text_of("Contacts:LastName"),
                app.text_of("Contacts:FileAs"), app.text_of("Contacts:MobilePhoneNumber"),
                app.text_of("Contacts:Email1Address"), app.text_of("Contacts:CompanyName")) \
            == ("Grace", "Hopper", "Hopper, Grace", "+1 202 555 0143",
                "grace.hopper@example.org", "US Navy")
        # MS-ASCNTC 2.2.2.6: the date is what counts
        assert (app.text_of("Contacts:Birthday") or "")[:10] == "1906-12-09"
        assert not app.text_of("Contacts:Picture")          # an empty Picture is no picture


CONTACT_WITH_PICTURE = (
    "<K:FileAs>Lamarr, Hedy</K:FileAs><K:FirstName>Hedy</K:FirstName>"
    "<K:LastName>Lamarr</K:LastName><K:MobilePhoneNumber>+1 310 555 0100</K:MobilePhoneNumber>"
    f"<K:Email1Address>hedy@example.org</K:Email1Address><K:Picture>{PICTURE}</K:Picture>")


def scenario_contact_change_empty_picture(case: Case) -> None:
    other = case.device("WindowsOutlook", "Outlook/16.0 (16.0.7167.6539; C2R; x86)", "14.1")
    key, _, _, _ = other.pull(case.folder, other.initial(case.folder))
    r = other.sync(case.folder, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>p1"
                   f"</ClientId><ApplicationData>{CONTACT_WITH_PICTURE}</ApplicationData>"
                   "</Add></Commands>")
    sid = collection(r).find("AirSync:Responses/AirSync:Add").text_of("AirSync:ServerId")
    assert sid
    case.key, items, _, _ = case.dev.pull(case.folder, case.key)
    assert sid in items
    r = case.send(case.body(), SERVERID=sid)
    for ch in collection(r).iter("AirSync:Change"):
        assert ch.text_of("AirSync:Status") in (None, "1"), r
    for items in case.readers().values():
        app = items[sid]
        assert app.text_of("Contacts:MobilePhoneNumber") == "+1 310 555 0199"
        # iOS ≥8.2 sends an empty Picture on every edit (Horde
        # QUIRK_INCORRECTLY_SENDS_EMPTY_PICTURE_TAG): the picture is kept
        assert app.text_of("Contacts:Picture") == PICTURE


def _birthday_round_trip(case: Case, written: str, first: str, last: str) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert app.text_of("Contacts:FirstName") == first
        assert app.text_of("Contacts:LastName") == last
        # MS-ASCNTC 2.2.2.6: the same calendar date for every other device
        assert (app.text_of("Contacts:Birthday") or "")[:10] == written[:10]
    # issue 3/4: the device that wrote it gets it back exactly as written
    assert case.reread_by_writer()[sid].text_of("Contacts:Birthday") == written


def scenario_birthday_1604(case: Case) -> None:
    # MS-ASDTYPE 2.3: dateTime years 1601-9999; iOS's year-less birthday is year 1604
    _birthday_round_trip(case, "1604-03-20T00:00:00.000Z", "Yolanda", "Yearless")


def scenario_birthday_west(case: Case) -> None:
    _birthday_round_trip(case, "1968-07-04T04:00:00.000Z", "Walter", "Westward")


def scenario_birthday_1815(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert (app.text_of("Contacts:FirstName"), app.text_of("Contacts:LastName"),
                app.text_of("Contacts:Email1Address")) == ("Ada", "Lovelace", "ada@example.org")
        # MS-ASCNTC 2.2.2.6 / MS-ASDTYPE 2.3 (1601-9999): 1815 is a date like any other
        assert (app.text_of("Contacts:Birthday") or "")[:10] == "1815-12-10"


def scenario_no_fileas(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        # MS-ASCNTC 2.2.2.34 FileAs; issue 7: none sent → "Last, First"
        assert app.text_of("Contacts:FileAs") == "Turing, Alan"
        assert app.text_of("Contacts:MobilePhoneNumber") == "+44 20 7946 0958"


def scenario_own_fileas(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        # MS-ASCNTC 2.2.2.34: the device's own FileAs is kept
        assert app.text_of("Contacts:FileAs") == "Katherine Johnson (NASA)"
        assert app.text_of("Contacts:Email1Address") == \
            '"Katherine Johnson" <kjohnson@example.org>'
        assert app.text_of("Contacts:CompanyName") == "NASA"



# -- published shapes of other servers' reports and fixtures (tine20, Syncroton, TbSync) --

SETUP_DATA = {
    "Calendar": _event("before the change", datetime(2030, 1, 7, 9, tzinfo=UTC)),
    "Tasks": "<T:Subject>before the change</T:Subject>",
    "Contacts": "<K:FirstName>Before</K:FirstName><K:LastName>Change</K:LastName>",
}


def _other_adds(case: Case, folder: str, datas: list[str]) -> list[str]:
    """A second device of the user adds ``datas`` (ApplicationData contents) to
    ``folder``; their ServerIds."""
    other = case.device("iPhone", "Apple-iPhone14C5/2006.3", "14.1")
    key, _, _, _ = other.pull(folder, other.initial(folder))
    adds = "".join(f"<Add><ClientId>o{n}</ClientId><ApplicationData>{d}</ApplicationData>"
                   "</Add>" for n, d in enumerate(datas))
    r = other.sync(folder, key, f"<GetChanges>0</GetChanges><Commands>{adds}</Commands>")
    assert r is not None
    done = collection(r).iter("AirSync:Add")
    assert [a.text_of("AirSync:Status") for a in done] == ["1"] * len(datas), r
    return [a.text_of("AirSync:ServerId") or "" for a in done]


def _change_after_setup(case: Case) -> str:
    """The capture's Change sent on an item a second device made (its Setup); the
    item's ServerId.  MS-ASCMD 2.2.3.177.17: a Change answered with no Status or 1."""
    (sid,) = _other_adds(case, case.folder, [SETUP_DATA[case.cap.meta["Folder"]]])
    case.key, items, _, _ = case.dev.pull(case.folder, case.key)
    assert sid in items
    r = case.send(case.body(), SERVERID=sid)
    for ch in collection(r).iter("AirSync:Change"):
        assert ch.text_of("AirSync:Status") in (None, "1"), r
    return sid


def _exceptions(app: Node, version: str) -> dict[str, Node]:
    """An event's exceptions by the start of the occurrence they replace: ExceptionStartTime
    up to 14.1, AirSyncBase:InstanceId at 16.x (MS-ASCAL 2.2.2.20, MS-ASAIRS 2.2.2.20.1)."""
    tag = "AirSyncBase:InstanceId" if version >= "16.0" else "Calendar:ExceptionStartTime"
    return {e.text_of(tag) or "": e for e in app.iter("Calendar:Exception")}


def scenario_empty_reminder_attendees(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "Test2"
        assert (app.text_of("Calendar:StartTime"), app.text_of("Calendar:EndTime")) == \
            ("20240822T100000Z", "20240822T120000Z")
        assert tz_rules(app.text_of("Calendar:Timezone") or "") == tz_rules(BERLIN)
        # MS-ASCAL 2.2.2.36 Reminder: an empty one is no reminder; 2.2.2.3 Attendees,
        # 2.2.2.37 Recurrence, MS-ASAIRS 2.2.2.27 Location: empty ones are none
        assert app.find("Calendar:Reminder") is None
        assert not app.iter("Calendar:Attendee")
        assert app.find("Calendar:Recurrence") is None
        assert not location(app)
        if case.version < "16.0":
            # MS-ASCAL 2.2.2.46: up to 14.1 the client's UID is the event's UID
            assert app.text_of("Calendar:UID") == "414E89DDBEEB47F29EB88E957211BE6B0.32"


def _check_tdfffdd(app: Node) -> None:
    assert app.text_of("Calendar:Subject") == "Tdfffdd"
    assert (app.text_of("Calendar:StartTime"), app.text_of("Calendar:EndTime")) == \
        ("20101220T090000Z", "20101220T100000Z")
    assert app.text_of("Calendar:Reminder") == "15"
    assert tz_rules(app.text_of("Calendar:Timezone") or "") == tz_rules(BERLIN)


def scenario_daily_until(case: Case) -> None:
    sid, _ = case.add(case.body())
    for version, items in case.readers().items():
        app = items[sid]
        _check_tdfffdd(app)
        rec = app.find("Calendar:Recurrence")                # MS-ASCAL 2.2.2.37
        assert rec is not None
        assert (rec.text_of("Calendar:Type"), rec.text_of("Calendar:Interval"),
                rec.text_of("Calendar:Until")) == ("0", "1", "20101222T230000Z")
        if version < "16.0":
            # MS-ASCAL 2.2.2.46: the client's (Outlook-style) UID is the event's UID
            assert (app.text_of("Calendar:UID") or "").startswith("040000008200E000")


def scenario_first_instance_exception(case: Case) -> None:
    sid, _ = case.add(case.body())
    for version, items in case.readers().items():
        app = items[sid]
        _check_tdfffdd(app)
        rec = app.find("Calendar:Recurrence")
        assert rec is not None
        assert (rec.text_of("Calendar:Type"), rec.text_of("Calendar:DayOfWeek")) == ("1", "2")
        # MS-ASCAL 2.2.2.19/2.2.2.20: the first occurrence, moved to the next day
        exc = _exceptions(app, version)
        assert list(exc) == ["20101220T090000Z"], exc
        e = exc["20101220T090000Z"]
        assert e.text_of("Calendar:Deleted") in (None, "0")
        assert (e.text_of("Calendar:Subject"), e.text_of("Calendar:StartTime"),
                e.text_of("Calendar:EndTime")) == \
            ("First Instance Exception", "20101221T090000Z", "20101221T100000Z")


def scenario_palm_allday_organizer(case: Case) -> None:
    sid = _change_after_setup(case)
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "GM straussberg2"
        # MS-ASCAL 2.2.2.1: three whole days, 4 to 6 November in Berlin
        assert app.text_of("Calendar:AllDayEvent") == "1"
        if version >= "16.0":
            want = ("20101104T000000Z", "20101107T000000Z")
        else:
            want = ("20101103T230000Z", "20101106T230000Z")
        assert (app.text_of("Calendar:StartTime"), app.text_of("Calendar:EndTime")) == want
        data = app.text_of("AirSyncBase:Body/AirSyncBase:Data") or ""
        assert data.replace("\r\n", "\n") == "test beschreibung zeile 1\nZeile 2\nZeile 3"
        assert app.text_of("Calendar:OrganizerEmail") == "meine@mail.com"
        assert [a.text_of("Calendar:Email") for a in app.iter("Calendar:Attendee")] == \
            ["meine@mail.com"]                                # MS-ASCAL 2.2.2.3
        assert app.text_of("Calendar:BusyStatus") == "0"


def scenario_exceptions_deleted(case: Case) -> None:
    sid = _change_after_setup(case)
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "Repeat"
        assert app.text_of("Calendar:Sensitivity") == "2"
        assert app.text_of("Calendar:Reminder") == "15"
        assert app.text_of("AirSyncBase:Body/AirSyncBase:Data") == "Hello"
        assert [a.text_of("Calendar:Email") for a in app.iter("Calendar:Attendee")] == \
            ["lars@kneschke.de"]
        rec = app.find("Calendar:Recurrence")
        assert rec is not None
        assert (rec.text_of("Calendar:Type"), rec.text_of("Calendar:Until")) == \
            ("0", "20121128T225959Z")
        exc = _exceptions(app, version)
        assert sorted(exc) == ["20121124T130000Z", "20121125T130000Z"], exc
        # MS-ASCAL 2.2.2.18 Deleted: the 24th is gone, the 25th moved
        assert exc["20121124T130000Z"].text_of("Calendar:Deleted") == "1"
        moved = exc["20121125T130000Z"]
        assert moved.text_of("Calendar:Deleted") in (None, "0")
        assert (moved.text_of("Calendar:Subject"), moved.text_of("Calendar:StartTime"),
                moved.text_of("Calendar:EndTime")) == \
            ("Repeat mal anders", "20121125T140000Z", "20121125T170000Z")


def scenario_samsung_attendees(case: Case) -> None:
    sid = _change_after_setup(case)
    for items in case.readers().values():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "testtermin"
        assert (app.text_of("Calendar:StartTime"), app.text_of("Calendar:EndTime")) == \
            ("20120229T120000Z", "20120229T140000Z")
        assert app.text_of("Calendar:Reminder") == "30"
        assert app.text_of("Calendar:OrganizerEmail") == "user2@example.com"
        # MS-ASCAL 2.2.2.3/2.2.2.5: the three attendees, required (AttendeeType 1)
        assert [(a.text_of("Calendar:Email"), a.text_of("Calendar:AttendeeType"))
                for a in app.iter("Calendar:Attendee")] == \
            [(f"user{n}@example.com", "1") for n in (1, 2, 3)]


def scenario_outlook2013_exception_attendees(case: Case) -> None:
    sid = _change_after_setup(case)
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "TEST9"
        assert tz_rules(app.text_of("Calendar:Timezone") or "") == tz_rules(BERLIN)
        top = [a for a in (app.find("Calendar:Attendees") or Node("x")).children]
        # MS-ASCAL 2.2.2.3 Attendees, 2.2.2.4 AttendeeStatus
        assert [(a.text_of("Calendar:Email"), a.text_of("Calendar:AttendeeStatus"))
                for a in top] == [("unittest@tine20.org", "3"), ("pwulf@tine20.org", "0")]
        rec = app.find("Calendar:Recurrence")
        assert rec is not None
        assert (rec.text_of("Calendar:Type"), rec.text_of("Calendar:Occurrences")) == ("0", "3")
        exc = _exceptions(app, version)
        assert list(exc) == ["20120916T140000Z"], exc
        e = exc["20120916T140000Z"]
        assert (e.text_of("Calendar:StartTime"), e.text_of("Calendar:EndTime")) == \
            ("20120916T140000Z", "20120916T143000Z")
        assert e.text_of("Calendar:Deleted") in (None, "0")


def scenario_contact_birthday_date_only(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert (app.text_of("Contacts:FirstName"), app.text_of("Contacts:LastName"),
                app.text_of("Contacts:FileAs")) == ("Fritzchen", "Meinen", "Fritzchen")
        # MS-ASCNTC 2.2.2.6: the calendar date the device wrote, 31 December 1969
        assert (app.text_of("Contacts:Birthday") or "")[:10] == "1969-12-31"
        assert app.text_of("Contacts2:ManagerName") == "The Boss"     # MS-ASCNTC 2.2.2.50
        assert [c.text for c in app.iter("Contacts:Category")] == ["1234", "5678"]
        assert [c.text for c in app.iter("Contacts:Child")] == ["1234", "5678"]
        assert app.text_of("Contacts:Picture") == "cGljdHVyZQ=="        # MS-ASCNTC 2.2.2.56
        assert app.text_of("AirSyncBase:Body/AirSyncBase:Data") == "Rewdfyyh fddg"


def scenario_task_categories_weekly(case: Case) -> None:
    sid = _change_after_setup(case)
    for items in case.readers().values():
        app = items[sid]
        assert app.text_of("Tasks:Subject") == "Testaufgabe auf mfe"
        assert (app.text_of("Tasks:UtcDueDate") or "")[:16] == "2010-11-28T22:59"
        assert app.text_of("Tasks:Importance") == "1"
        assert [c.text for c in app.iter("Tasks:Category")] == ["1234", "5678"]
        data = app.text_of("AirSyncBase:Body/AirSyncBase:Data") or ""
        assert data.replace("\r\n", "\n") == "test beschreibung zeile 1\nZeile 2\nZeile 3"
        rec = app.find("Tasks:Recurrence")                  # MS-ASTASK 2.2.2.18
        assert rec is not None and rec.text_of("Tasks:Type") == "1"


def scenario_task_regenerate(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert app.text_of("Tasks:Subject") == "Regen"
        assert (app.text_of("Tasks:UtcStartDate") or "")[:16] == "2018-04-02T22:00"
        assert (app.text_of("Tasks:UtcDueDate") or "")[:16] == "2018-05-09T21:00"
        rec = app.find("Tasks:Recurrence")
        assert rec is not None
        # MS-ASTASK 2.2.2.18 Recurrence, 2.2.2.20 Regenerate, 2.2.2.7 DeadOccur
        assert (rec.text_of("Tasks:Type"), rec.text_of("Tasks:Interval"),
                rec.text_of("Tasks:Occurrences"), rec.text_of("Tasks:Regenerate")) == \
            ("1", "1", "10", "1")
        assert rec.text_of("Tasks:DeadOccur") in (None, "0")
        assert (rec.text_of("Tasks:Start") or "")[:10] == "2018-04-03"


def scenario_options_class(case: Case) -> None:
    (sid,) = _other_adds(case, case.folder, [
        "<K:FirstName>Olga</K:FirstName><K:LastName>Optionsklasse</K:LastName>"])
    r = case.send(case.body())
    # MS-ASCMD 2.2.3.27.5: Class in Options is allowed; the contact comes as an Add
    adds = {a.text_of("AirSync:ServerId"): a for a in collection(r).iter("AirSync:Add")}
    assert list(adds) == [sid], r
    assert adds[sid].text_of("AirSync:ApplicationData/Contacts:LastName") == "Optionsklasse"


def _full_sync_both(case: Case, calendar: str, calendar_key: str) -> tuple[str, str]:
    """The first Sync of Contacts and Calendar with all options (what Partial reuses)."""
    xml = (f'<Sync xmlns="AirSync:" xmlns:B="AirSyncBase:"><Collections>'
           f"<Collection><SyncKey>{case.key}</SyncKey><CollectionId>{case.folder}"
           "</CollectionId><DeletesAsMoves/><GetChanges/><WindowSize>100</WindowSize>"
           "<Options><B:BodyPreference><B:Type>1</B:Type></B:BodyPreference></Options>"
           f"</Collection><Collection><SyncKey>{calendar_key}</SyncKey><CollectionId>"
           f"{calendar}</CollectionId><DeletesAsMoves/><GetChanges/><WindowSize>100"
           "</WindowSize><Options><FilterType>0</FilterType><B:BodyPreference><B:Type>1"
           "</B:Type></B:BodyPreference></Options></Collection></Collections></Sync>")
    r = send(case.dev, xml)
    keys = {case.folder: case.key, calendar: calendar_key}
    for coll in r.iter("AirSync:Collection") if r else []:
        assert coll.text_of("AirSync:Status") == "1", r
        keys[coll.text_of("AirSync:CollectionId") or ""] = coll.text_of("AirSync:SyncKey") or ""
    return keys[case.folder], keys[calendar]


def scenario_partial_two_collections(case: Case) -> None:
    calendar = case.dev.folders()["Calendar"]
    keys = dict(zip((case.folder, calendar),
                    _full_sync_both(case, calendar, case.dev.initial(calendar)), strict=True))
    contacts = _other_adds(case, case.folder, [f"<K:FirstName>P{n}</K:FirstName>"
                                               for n in range(3)])
    events = _other_adds(case, calendar, [
        _event(f"E{n}", datetime(2030, 1, 1 + n, 10, tzinfo=UTC)) for n in range(3)])
    got: list[str] = []
    for _ in range(10):
        r = send(case.dev, fill(case.body(), SYNCKEY=keys[case.folder], COLLECTION=case.folder,
                                SYNCKEY2=keys[calendar], COLLECTION2=calendar))
        if r is None:
            break
        sent = 0
        more = False
        for coll in r.iter("AirSync:Collection"):
            assert coll.text_of("AirSync:Status") == "1", r          # MS-ASCMD 2.2.3.177.17
            keys[coll.text_of("AirSync:CollectionId") or ""] = \
                coll.text_of("AirSync:SyncKey") or ""
            adds = [a.text_of("AirSync:ServerId") or "" for a in coll.iter("AirSync:Add")]
            got += adds
            sent += len(adds)
            more = more or coll.find("AirSync:MoreAvailable") is not None
        # MS-ASCMD 2.2.3.199.1: the request-wide WindowSize bounds all collections
        assert sent <= 2, r
        if not more:
            break
    # nothing lost, nothing twice
    assert sorted(got) == sorted(contacts + events), got


def scenario_partial_synckey_only(case: Case) -> None:
    # MS-ASCMD 2.2.3.124 Partial: the cached request's collection (the Case's first Sync)
    r = send(case.dev, fill(case.body(), SYNCKEY=case.key, COLLECTION=case.folder))
    # MS-ASCMD 2.2.1.21: nothing new, an empty answer (or one without Commands)
    assert r is None or collection(r).find("AirSync:Commands") is None, r
    if r is not None:
        assert collection(r).text_of("AirSync:Status") == "1", r
        case.key = collection(r).text_of("AirSync:SyncKey") or case.key
    (sid,) = _other_adds(case, case.folder, ["<K:FirstName>Paula</K:FirstName>"])
    r = case.send(case.body())
    assert [a.text_of("AirSync:ServerId") for a in collection(r).iter("AirSync:Add")] == [sid]


def scenario_heartbeat(case: Case) -> None:
    result: dict[str, Node | None] = {}

    def held() -> None:
        result["r"] = send(case.dev, fill(case.body(), SYNCKEY=case.key,
                                          COLLECTION=case.folder))

    started = time.monotonic()
    t = threading.Thread(target=held)
    t.start()
    (sid,) = _other_adds(case, case.folder, [
        "<K:FirstName>Hanna</K:FirstName><K:LastName>Heartbeat</K:LastName>"])
    t.join(110)
    assert not t.is_alive()
    # MS-ASCMD 2.2.3.79.1: a held Sync answers when something changes, not at the end
    # of its 120 s
    assert time.monotonic() - started < 90
    r = result["r"]
    assert r is not None
    coll = collection(r)
    assert coll.text_of("AirSync:Status") == "1", r
    assert [a.text_of("AirSync:ServerId") for a in coll.iter("AirSync:Add")] == [sid], r


def _empty_sync(case: Case) -> Node | None:
    """An empty Sync (no body): the cached request again (MS-ASCMD 2.2.2.21)."""
    r = case.dev.post("Sync", None)
    assert r.status_code == 200, r.status_code
    return parse_xml(wbxml_to_xml(r.content)) if r.content else None


def scenario_unknown_collection_key0(case: Case) -> None:
    r = send(case.dev, fill(case.body()))
    assert r is not None
    coll = collection(r)
    # MS-ASCMD 2.2.3.177.17: Status 12, the folder hierarchy has changed
    assert (coll.text_of("AirSync:CollectionId"), coll.text_of("AirSync:Status"),
            coll.text_of("AirSync:SyncKey")) == ("48ru47fhf7ghf7fgh4", "12", "0"), r
    # the same collection from the cached request: the same answer, not Status 3
    r = _empty_sync(case)
    assert r is not None
    got = {c.text_of("AirSync:CollectionId"): c.text_of("AirSync:Status")
           for c in r.iter("AirSync:Collection")}
    assert got == {"48ru47fhf7ghf7fgh4": "12"}, r


def scenario_unknown_collection_heartbeat10(case: Case) -> None:
    r = send(case.dev, fill(case.body()))
    assert r is not None
    # MS-ASCMD 2.2.3.177.16 Status 14 and 2.2.3.90.2 Limit: the allowed minimum
    assert r.text_of("AirSync:Status") == "14", r
    assert int(r.text_of("AirSync:Limit") or "0") > 10, r
    assert r.find("AirSync:Collections") is None, r
    # the refused request was not cached: the empty Sync is the device's previous one
    r = _empty_sync(case)
    names = [c.text_of("AirSync:CollectionId") for c in r.iter("AirSync:Collection")] \
        if r is not None else []
    assert "48ru47fhf7ghf7fgh4" not in names, r
    for c in r.iter("AirSync:Collection") if r is not None else []:
        assert c.text_of("AirSync:Status") == "1", r


def scenario_contact_email_display_name(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert (app.text_of("Contacts:FirstName"), app.text_of("Contacts:LastName"),
                app.text_of("Contacts:FileAs")) == ("asdf", "asdfasdfaasd", "ads2f, asdfadsf")
        # MS-ASCNTC 2.2.2.26: the address with its display name, as sent
        assert app.text_of("Contacts:Email2Address") == "Cornelius Weiß <c.weiss@example.de>"
        assert app.text_of("Contacts:Email1Address") == "l.kneschke@example.com"
        assert app.text_of("Contacts:WebPage") == "fb://some.dumb.fb.url"   # 2.2.2.81
        assert app.text_of("Contacts:BusinessAddressStreet") == "Pickhuben 2"
        assert [c.text for c in app.iter("Contacts:Category")] == ["1234", "5678"]
        assert app.text_of("AirSyncBase:Body/AirSyncBase:Data") == "Hello"
        # MS-ASCNTC 2.2.2.6: 23:00Z is midnight of the 26th east of UTC (Berlin): the
        # date other devices get
        assert (app.text_of("Contacts:Birthday") or "")[:10] == "2000-12-26"
    # issue 3/4: the device that wrote it gets it back exactly as written
    assert case.reread_by_writer()[sid].text_of("Contacts:Birthday") == \
        "2000-12-25T23:00:00.000Z"


def scenario_contact_empty_body_categories_picture(case: Case) -> None:
    sid, _ = case.add(case.body())
    for items in case.readers().values():
        app = items[sid]
        assert (app.text_of("Contacts:FirstName"), app.text_of("Contacts:LastName")) == \
            ("Fritzchen", "Meinen")
        assert (app.text_of("Contacts:Birthday") or "")[:10] == "1969-12-31"
        # empty elements are no values (MS-ASAIRS 2.2.2.9 Body, MS-ASCNTC 2.2.2.12,
        # 2.2.2.56): nothing to show for them
        assert not app.text_of("AirSyncBase:Body/AirSyncBase:Data")
        assert not app.iter("Contacts:Category")
        assert not app.text_of("Contacts:Picture")

# -- Outlook mobile and the Gmail app at 16.x -------------------------------------------

def scenario_gmail_location(case: Case) -> None:
    sid, _ = case.add(case.body())
    for version, items in case.readers().items():
        app = items[sid]
        assert app.text_of("Calendar:Subject") == "Havnefest"
        # MS-ASCAL 2.2.2.27: 16.x readers get AirSyncBase:Location/DisplayName, 14.1
        # readers Calendar:Location; the place as the Gmail app sent it
        if version >= "16.0":
            assert app.text_of("AirSyncBase:Location/AirSyncBase:DisplayName") == \
                "Havneplads 1, 8500 Grenaa, Denmark"
        else:
            assert app.text_of("Calendar:Location") == "Havneplads 1, 8500 Grenaa, Denmark"
        assert app.text_of("AirSyncBase:Body/AirSyncBase:Data") == \
            "fb://event/10000000000000001"
        assert (app.text_of("Calendar:StartTime"), app.text_of("Calendar:EndTime")) == \
            ("20240831T140000Z", "20240831T170000Z")


def scenario_window_above_512(case: Case) -> None:
    calendar = case.dev.folders()["Calendar"]
    calendar_key, _, _, _ = case.dev.pull(calendar, case.dev.initial(calendar))
    contacts = _other_adds(case, case.folder, [f"<K:FirstName>W{n}</K:FirstName>"
                                               for n in range(3)])
    events = _other_adds(case, calendar, [
        _event(f"W{n}", datetime(2030, 2, 1 + n, 10, tzinfo=UTC)) for n in range(3)])
    r = send(case.dev, fill(case.body(), SYNCKEY=case.key, COLLECTION=case.folder,
                            SYNCKEY2=calendar_key, COLLECTION2=calendar))
    assert r is not None
    # MS-ASCMD 2.2.1.21 / 2.2.3.177.17: a top-level Status other than 1 (4: protocol
    # error) would refuse the whole request
    assert r.text_of("AirSync:Status") in (None, "1"), r
    got: dict[str, list[str]] = {}
    for coll in r.iter("AirSync:Collection"):
        assert coll.text_of("AirSync:Status") == "1", r           # MS-ASCMD 2.2.3.177.17
        # MS-ASCMD 2.2.3.199.2: above 512 is read as 512: six items fit, nothing held back
        assert coll.find("AirSync:MoreAvailable") is None, r
        got[coll.text_of("AirSync:CollectionId") or ""] = [
            a.text_of("AirSync:ServerId") or "" for a in coll.iter("AirSync:Add")]
    assert sorted(got.get(case.folder, [])) == sorted(contacts), r
    assert sorted(got.get(calendar, [])) == sorted(events), r


def scenario_gmail_html_200000(case: Case) -> None:
    text = "".join(f"line{n:06d} " for n in range(12000))          # 132,000 characters
    (sid,) = _other_adds(case, case.folder, [
        _event("Long agenda", datetime(2030, 3, 4, 9, tzinfo=UTC))
        + f"<B:Body><B:Type>1</B:Type><B:Data>{text}</B:Data></B:Body>"])
    r = case.send(case.body())
    adds = {a.text_of("AirSync:ServerId"): a for a in collection(r).iter("AirSync:Add")}
    body = adds[sid].find("AirSync:ApplicationData/AirSyncBase:Body")
    assert body is not None, r
    # MS-ASAIRS 2.2.2.40.1 / 2.2.2.43: below the asked 200000 nothing is cut
    assert body.text_of("AirSyncBase:Truncated") in (None, "0"), r
    data = body.text_of("AirSyncBase:Data") or ""
    assert "line000000 " in data and "line011999" in data, len(data)
    assert data.count("line") == 12000, len(data)


def scenario_location_retried(case: Case) -> None:
    first_key = case.key
    sid, _ = case.add(case.body())
    # the answer was lost: the same request again, with the same SyncKey
    case.key = first_key
    again, _ = case.add(case.body())
    # MS-ASCMD 3.1.5.3 / MS-ASCAL 2.2.2.13: the same event, not a second one
    assert again == sid
    for version, items in case.readers().items():
        app = one_by(items, "Calendar:Subject", "Walk to the harbour")
        assert len(items) == 1, items
        if version >= "16.0":
            # MS-ASAIRS 2.2.2.27: the whole place
            loc = app.find("AirSyncBase:Location")
            assert loc is not None, app
            got = {c.tag.removeprefix("AirSyncBase:"): c.text for c in loc.children}
            want = {"DisplayName": "Kongens Nytorv", "City": "København K",
                    "Street": "Kongens Nytorv 1", "Country": "Denmark", "PostalCode": "1050"}
            if case.version >= "16.0":
                want |= {"Annotation": "by the metro exit",
                         "LocationUri": "https://www.openstreetmap.org/node/1"}
                assert float(got.get("Latitude") or 0) == 55.6795, got
                assert float(got.get("Longitude") or 0) == 12.5856, got
            else:
                want = {"DisplayName": "Kongens Nytorv"}
            assert {k: got.get(k) for k in want} == want, got
        else:
            assert app.text_of("Calendar:Location") == "Kongens Nytorv"


def scenario_inbox_mail_options(case: Case) -> None:
    calendar = case.dev.folders()["Calendar"]
    calendar_key, _, _, _ = case.dev.pull(calendar, case.dev.initial(calendar))
    events = _other_adds(case, calendar, [
        _event(f"M{n}", datetime(2030, 4, 1 + n, 10, tzinfo=UTC)) for n in range(2)])
    r = send(case.dev, fill(case.body(), SYNCKEY=case.key, COLLECTION=case.folder,
                            SYNCKEY2=calendar_key, COLLECTION2=calendar))
    assert r is not None
    assert r.text_of("AirSync:Status") in (None, "1"), r          # MS-ASCMD 2.2.3.177.17
    got = {}
    for coll in r.iter("AirSync:Collection"):
        assert coll.text_of("AirSync:Status") == "1", r
        got[coll.text_of("AirSync:CollectionId")] = [
            a.text_of("AirSync:ServerId") for a in coll.iter("AirSync:Add")]
    # the Inbox (no mail kept) answers with nothing to add; the Calendar its two events
    assert got.get(case.folder, []) == [], r
    assert sorted(got.get(calendar, [])) == sorted(events), r


SCENARIOS: dict[str, Callable[[Case], None]] = {
    "iphone_ios17_161_calendar_add_empty_recurrence.xml": scenario_add_empty_recurrence,
    "iphone_ios17_161_calendar_change_partial.xml": scenario_change_partial,
    "iphone_ios17_161_calendar_add_resent_clientuid.xml": scenario_resent_clientuid,
    "iphone_ios17_161_calendar_add_allday.xml": scenario_add_allday,
    "iphone_ios17_161_calendar_add_birthday_yearly.xml": scenario_birthday_yearly,
    "outlook2016_140_calendar_change_allday.xml": scenario_outlook_change_allday,
    "nine_android_141_calendar_sync_filtertype.xml": scenario_filtertype,
    "samsung_gts5830_141_calendar_sync_windowsize0.xml": scenario_windowsize0,
    "iphone_ios17_161_contact_add_empty_picture.xml": scenario_contact_empty_picture,
    "iphone_ios17_161_contact_change_empty_picture.xml": scenario_contact_change_empty_picture,
    "iphone_ios17_161_contact_add_birthday_1604.xml": scenario_birthday_1604,
    "outlook2016_140_contact_add_birthday_west_of_utc.xml": scenario_birthday_west,
    "samsung_gts5830_141_contact_add_birthday_1815.xml": scenario_birthday_1815,
    "gmail_android_161_contact_add_no_fileas.xml": scenario_no_fileas,
    "outlook2016_140_contact_add_own_fileas.xml": scenario_own_fileas,
    "iphone_ios17_161_calendar_add_empty_reminder_attendees.xml":
        scenario_empty_reminder_attendees,
    "iphone_ios4_121_calendar_add_daily_until.xml": scenario_daily_until,
    "iphone_ios4_121_calendar_add_first_instance_exception.xml":
        scenario_first_instance_exception,
    "palm_pre_121_calendar_change_allday_organizer.xml": scenario_palm_allday_organizer,
    "webos_121_calendar_change_exceptions_deleted.xml": scenario_exceptions_deleted,
    "samsung_gti9100_121_calendar_change_attendees.xml": scenario_samsung_attendees,
    "outlook2013_140_calendar_change_exception_attendees.xml":
        scenario_outlook2013_exception_attendees,
    "android_120_contact_add_birthday_date_only.xml": scenario_contact_birthday_date_only,
    "palm_pre_121_tasks_change_categories_weekly.xml": scenario_task_categories_weekly,
    "tbsync_140_tasks_add_regenerate.xml": scenario_task_regenerate,
    "tbsync_140_contacts_sync_options_class.xml": scenario_options_class,
    "iphone_ios4_141_sync_partial_two_collections.xml": scenario_partial_two_collections,
    "iphone_ios4_141_sync_partial_synckey_only.xml": scenario_partial_synckey_only,
    "iphone_ios4_141_sync_heartbeat.xml": scenario_heartbeat,
    "iphone_ios4_141_sync_unknown_collection_key0.xml": scenario_unknown_collection_key0,
    "iphone_ios4_141_sync_unknown_collection_heartbeat10.xml":
        scenario_unknown_collection_heartbeat10,
    "iphone_ios4_121_contact_add_email_display_name.xml": scenario_contact_email_display_name,
    "android_120_contact_add_empty_body_categories_picture.xml":
        scenario_contact_empty_body_categories_picture,
    "gmail_android_161_calendar_add_location.xml": scenario_gmail_location,
    "outlook_mobile_161_sync_two_collections_window1000.xml": scenario_window_above_512,
    "gmail_android_160_calendar_sync_html_200000.xml": scenario_gmail_html_200000,
    "outlook_mobile_161_calendar_add_location_retried.xml": scenario_location_retried,
    "outlook_mobile_161_sync_inbox_mail_options_and_calendar.xml": scenario_inbox_mail_options,
}

CASES = [(name, version) for name in names() for version in load(name).versions]


def test_every_capture_is_described_listed_and_replayed() -> None:
    readme = (Path(__file__).parent / "corpus" / "devices" / "README.md").read_text("utf-8")
    assert set(SCENARIOS) == set(names())
    for name in names():
        cap = load(name)
        missing = [k for k in ("Source", "Device", "DeviceType", "User-Agent", "Protocol",
                               "Folder", "Command", "Shows", "Changed") if not cap.meta.get(k)]
        assert not missing, (name, missing)
        assert name in readme, name
        assert cap.body.startswith("<Sync "), name


@pytest.mark.parametrize(("name", "version"), CASES,
                         ids=[f"{n.removesuffix('.xml')}@{v}" for n, v in CASES])
def test_device_capture(backend: tuple[RunningServer, Any], name: str, version: str) -> None:
    case = Case(backend, load(name), version)
    SCENARIOS[name](case)
