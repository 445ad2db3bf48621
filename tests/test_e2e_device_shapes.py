"""Acceptance (issue 8): the contact and calendar shapes real phones send are kept and
come back right, through ``twistd easync`` with raw WBXML made by libwbxml, on the SQL
store and on the CRM store (the fake vtenext web service in its own process).

Each test names the MS-AS section its expectation comes from.  The device corpus with
the captures these shapes come from is ``tests/corpus/devices/``.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator

import needs
import pytest
from backendsites import BACKENDS, add_user, started
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_e2e_calendar_raw import ROME
from test_e2e_crm import FakeCrmProcess

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "shapes-Pa55word"
UTC_BLOB = base64.b64encode(bytes(172)).decode()    # MS-ASDTYPE 2.7.6: UTC
_names = itertools.count(1)

IPHONE = ("iPhone", "Apple-iPhone15C2/2102.40")            # iOS 18, EAS 16.1
GMAIL = ("Android", "Android-Mail/2024.05.19.6")            # Gmail app
AOSP = ("Android", "Android/10-EAS-2.0")                    # stock Android Exchange
OUTLOOK = ("WindowsOutlook15", "Outlook/16.0 (16.0.17928; x64)")


class Site:
    def __init__(self, server: RunningServer, crm: FakeCrmProcess | None) -> None:
        self.server = server
        self.crm = crm

    def user(self) -> str:
        name = f"shape{next(_names)}"
        add_user(self.server, self.crm, name, PASSWORD)
        return name

    def device(self, user: str, dev: str, version: str,
               kind: tuple[str, str] = IPHONE) -> RawDevice:
        d = RawDevice(self.server.url, user, PASSWORD, dev, version=version,
                      device_type=kind[0], user_agent=kind[1])
        d.provision()
        return d


@pytest.fixture(scope="module", params=BACKENDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Site]:
    with started(tmp_path_factory, request.param, "shapes") as (srv, crm):
        yield Site(srv, crm)


# -- helpers ---------------------------------------------------------------------------

def start(d: RawDevice, folder: str, supported: str | None = None) -> str:
    """Sync key 0 (with a Supported list if given), then everything there is."""
    r = d.sync(folder, "0", options=supported or "")
    assert r is not None
    key = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    assert key and key != "0"
    key, _, _, _ = d.pull(folder, key)
    return key


def collection(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1", r
    return coll


def add(d: RawDevice, folder: str, key: str, appdata: str, cid: str = "c1"
        ) -> tuple[str, str]:
    """(new key, ServerId) of an Add that must succeed (per-item Status 1)."""
    r = d.sync(folder, key, f"<Commands><Add><ClientId>{cid}</ClientId>"
                            f"<ApplicationData>{appdata}</ApplicationData></Add></Commands>")
    coll = collection(r)
    resp = coll.find("AirSync:Responses/AirSync:Add")
    assert resp is not None and resp.text_of("AirSync:Status") == "1", r
    sid = resp.text_of("AirSync:ServerId")
    assert sid
    return coll.text_of("AirSync:SyncKey") or key, sid


def change(d: RawDevice, folder: str, key: str, sid: str, appdata: str) -> str:
    r = d.sync(folder, key, f"<Commands><Change><ServerId>{sid}</ServerId>"
                            f"<ApplicationData>{appdata}</ApplicationData></Change></Commands>")
    coll = collection(r)
    for resp in coll.iter("AirSync:Change"):
        assert resp.text_of("AirSync:Status") in (None, "1"), r
    return coll.text_of("AirSync:SyncKey") or key


def read(site: Site, user: str, folder_name: str, version: str,
         kind: tuple[str, str] = IPHONE, dev: str | None = None) -> list[Node]:
    """Everything a fresh device of ``user`` gets in that folder."""
    d = site.device(user, dev or f"reader{next(_names)}", version, kind)
    folder = d.folders()[folder_name]
    r = d.sync(folder, "0")
    key = collection(r).text_of("AirSync:SyncKey") or "0"
    _, items, _, _ = d.pull(folder, key)
    return list(items.values())


def one(site: Site, user: str, folder_name: str, version: str,
        kind: tuple[str, str] = IPHONE) -> Node:
    items = read(site, user, folder_name, version, kind)
    assert len(items) == 1, items
    return items[0]


EVENT = """<C:Timezone>{tz}</C:Timezone><C:AllDayEvent>0</C:AllDayEvent>
<C:StartTime>20261214T090000Z</C:StartTime><C:EndTime>20261214T100000Z</C:EndTime>
<C:Subject>{subject}</C:Subject><C:BusyStatus>2</C:BusyStatus><C:Sensitivity>0</C:Sensitivity>
<C:MeetingStatus>0</C:MeetingStatus>"""


# -- 1. an empty Recurrence ------------------------------------------------------------

@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_empty_recurrence_is_a_single_event(site: Site, version: str) -> None:
    """iOS 16.x sends <Recurrence/> for an event that does not recur (Z-Push issue 99).
    MS-ASCAL 2.2.2.37/2.2.2.45: Type is required only up to 14.1; an empty container
    means "no recurrence" and never costs the item, at any version."""
    user = site.user()
    d = site.device(user, "ios-empty-rec", version)
    cal = d.folders()["Calendar"]
    key = start(d, cal)
    client_uid = "<C:ClientUid>0A1B2C3D4E5F60718293A4B5C6D7E8F9</C:ClientUid>" \
        if version == "16.1" else ""
    key, sid = add(d, cal, key, EVENT.format(tz=UTC_BLOB, subject="Dentist")
                   + "<C:Recurrence/>" + client_uid)
    got = one(site, user, "Calendar", version)
    assert got.text_of("Calendar:Subject") == "Dentist"
    assert got.text_of("Calendar:StartTime") == "20261214T090000Z"
    assert got.find("Calendar:Recurrence") is None
    # the same on a Change (iOS sends it on every edit)
    change(d, cal, key, sid, EVENT.format(tz=UTC_BLOB, subject="Dentist, moved")
           .replace("T09", "T11").replace("T10", "T12") + "<C:Recurrence/>")
    got = one(site, user, "Calendar", "14.1")
    assert got.text_of("Calendar:Subject") == "Dentist, moved"
    assert got.text_of("Calendar:StartTime") == "20261214T110000Z"
    assert got.find("Calendar:Recurrence") is None


# -- 2. ghosting -----------------------------------------------------------------------

MEETING = """<C:Timezone>{tz}</C:Timezone><C:AllDayEvent>0</C:AllDayEvent>
<B:Body><B:Type>1</B:Type><B:Data>Bring the figures.</B:Data></B:Body>
<C:StartTime>20261202T090000Z</C:StartTime><C:EndTime>20261202T100000Z</C:EndTime>
<C:Subject>Budget</C:Subject><C:Reminder>15</C:Reminder><C:MeetingStatus>1</C:MeetingStatus>
<C:OrganizerName>Me</C:OrganizerName><C:OrganizerEmail>me@example.org</C:OrganizerEmail>
<C:Attendees><C:Attendee><C:Email>bob@example.org</C:Email><C:Name>Bob</C:Name>
<C:AttendeeType>1</C:AttendeeType></C:Attendee></C:Attendees>
<C:Recurrence><C:Type>1</C:Type><C:Interval>1</C:Interval><C:Occurrences>6</C:Occurrences>
<C:DayOfWeek>8</C:DayOfWeek></C:Recurrence>"""


def _check_meeting_kept(got: Node, subject: str) -> None:
    assert got.text_of("Calendar:Subject") == subject
    assert got.text_of("Calendar:StartTime") == "20261202T090000Z"
    assert got.text_of("Calendar:EndTime") == "20261202T100000Z"
    assert got.text_of("Calendar:Reminder") == "15"
    assert got.text_of("AirSyncBase:Body/AirSyncBase:Data") == "Bring the figures."
    att = got.find("Calendar:Attendees/Calendar:Attendee")
    assert att is not None and att.text_of("Calendar:Email") == "bob@example.org"
    assert got.text_of("Calendar:Recurrence/Calendar:Occurrences") == "6"


def test_16_change_ghosts_what_it_leaves_out(site: Site) -> None:
    """MS-ASCAL 3.1.5.3: in 16.0 and 16.1 every top-level Calendar element a Change
    leaves out is ghosted (kept), with or without Supported."""
    user = site.user()
    d = site.device(user, "ios16-ghost", "16.1")
    cal = d.folders()["Calendar"]
    key = start(d, cal)
    key, sid = add(d, cal, key, MEETING.format(tz=UTC_BLOB))
    change(d, cal, key, sid, "<C:Subject>Budget (room 2)</C:Subject>")
    for version in ("14.1", "16.1"):
        _check_meeting_kept(one(site, user, "Calendar", version), "Budget (room 2)")


def test_14_change_follows_supported(site: Site) -> None:
    """MS-ASCMD 2.2.3.179: up to 14.1, an empty Supported ghosts every ghostable
    property; without Supported a Change replaces the item (what it leaves out goes)."""
    user = site.user()
    d = site.device(user, "ol14-ghost", "14.1", OUTLOOK)
    cal = d.folders()["Calendar"]
    key = start(d, cal, supported="<Supported/>")
    key, sid = add(d, cal, key, MEETING.format(tz=UTC_BLOB))
    change(d, cal, key, sid, "<C:Subject>Budget (ghosted)</C:Subject>")
    _check_meeting_kept(one(site, user, "Calendar", "14.1"), "Budget (ghosted)")
    # a second device without Supported: a Change is the whole item
    e = site.device(user, "ol14-full", "14.1", OUTLOOK)
    key2 = e.initial(cal)
    key2, _, _, _ = e.pull(cal, key2)
    change(e, cal, key2, sid, EVENT.format(tz=UTC_BLOB, subject="Replaced"))
    got = one(site, user, "Calendar", "14.1")
    assert got.text_of("Calendar:Subject") == "Replaced"
    assert got.find("Calendar:Attendees") is None and got.find("Calendar:Recurrence") is None


# -- 3./4. dates and birthdays -----------------------------------------------------------

@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_old_and_yearless_birthdays_are_kept(site: Site, version: str) -> None:
    """MS-ASDTYPE 2.3 dateTime has no lower bound: 1815 is a birthday like any other.
    iOS keeps a birthday without a year as 1604 (Apple's convention), which must come
    back exactly.  One unreadable value is left out, the contact kept."""
    user = site.user()
    d = site.device(user, "ios-dates", version)
    contacts = d.folders()["Contacts"]
    key = start(d, contacts)
    key, _ = add(d, contacts, key, "<K:FirstName>Ada</K:FirstName><K:LastName>Lovelace</K:LastName>"
                 "<K:Birthday>1815-12-10T00:00:00.000Z</K:Birthday>", "a")
    key, _ = add(d, contacts, key, "<K:FirstName>Nonna</K:FirstName>"
                 "<K:Birthday>1604-03-21T00:00:00.000Z</K:Birthday>", "b")
    key, _ = add(d, contacts, key, "<K:FirstName>Odd</K:FirstName><K:JobTitle>Clerk</K:JobTitle>"
                 "<K:Birthday>sometime in May</K:Birthday>", "c")
    got = {n.text_of("Contacts:FirstName"): n for n in read(site, user, "Contacts", version)}
    assert got["Ada"].text_of("Contacts:Birthday") == "1815-12-10T00:00:00.000Z"
    assert got["Nonna"].text_of("Contacts:Birthday") == "1604-03-21T00:00:00.000Z"
    assert got["Odd"].text_of("Contacts:JobTitle") == "Clerk"
    assert got["Odd"].find("Contacts:Birthday") is None
    # a stock Android reader gets the same dates in its own form (08:00Z)
    aosp = {n.text_of("Contacts:FirstName"): n
            for n in read(site, user, "Contacts", "14.1", AOSP)}
    assert aosp["Ada"].text_of("Contacts:Birthday") == "1815-12-10T08:00:00.000Z"


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_birthday_comes_back_to_its_writer_as_written(site: Site, version: str) -> None:
    """MS-ASCNTC 2.2.2.6: Birthday is a date.  A phone at UTC-4 writes local midnight
    (04:00Z); it must get exactly that back (00:00Z would show a day early there), and
    every other device the same date in its own form."""
    user = site.user()
    d = site.device(user, "outlook-west", version, OUTLOOK)
    contacts = d.folders()["Contacts"]
    key = start(d, contacts)
    key, sid = add(d, contacts, key, "<K:FirstName>July</K:FirstName><K:LastName>Fourth</K:LastName>"
                   "<K:Birthday>1968-07-04T04:00:00.000Z</K:Birthday>"
                   "<K:Anniversary>1990-06-01T04:00:00.000Z</K:Anniversary>")
    # the writer resyncs from scratch (same device id): its own form comes back
    r = d.sync(contacts, "0")
    key0 = collection(r).text_of("AirSync:SyncKey") or "0"
    _, items, _, _ = d.pull(contacts, key0)
    assert items[sid].text_of("Contacts:Birthday") == "1968-07-04T04:00:00.000Z"
    assert items[sid].text_of("Contacts:Anniversary") == "1990-06-01T04:00:00.000Z"
    # others: the same calendar date in their own form
    ios = one(site, user, "Contacts", version, IPHONE)
    assert ios.text_of("Contacts:Birthday") == "1968-07-04T00:00:00.000Z"
    aosp = one(site, user, "Contacts", "14.1", AOSP)
    assert aosp.text_of("Contacts:Birthday") == "1968-07-04T08:00:00.000Z"
    # once another device writes a new birthday, the writer gets the new date
    g = site.device(user, "gmail-other", "14.1", GMAIL)
    gkey = start(g, contacts, supported="<Supported/>")
    change(g, contacts, gkey, sid, "<K:Birthday>1968-07-05T00:00:00.000Z</K:Birthday>")
    r = d.sync(contacts, "0")
    key0 = collection(r).text_of("AirSync:SyncKey") or "0"
    _, items, _, _ = d.pull(contacts, key0)
    assert items[sid].text_of("Contacts:Birthday") == "1968-07-05T00:00:00.000Z"
    assert items[sid].text_of("Contacts:Anniversary") == "1990-06-01T04:00:00.000Z"


# -- 5. all-day events across versions ---------------------------------------------------

ALL_DAY_141 = f"""<C:Timezone>{ROME}</C:Timezone><C:AllDayEvent>1</C:AllDayEvent>
<C:StartTime>20261219T230000Z</C:StartTime><C:EndTime>20261220T230000Z</C:EndTime>
<C:Subject>Holiday</C:Subject><C:BusyStatus>0</C:BusyStatus>"""
ALL_DAY_161 = """<C:AllDayEvent>1</C:AllDayEvent>
<C:StartTime>20261220T000000Z</C:StartTime><C:EndTime>20261221T000000Z</C:EndTime>
<C:Subject>Holiday</C:Subject><C:BusyStatus>0</C:BusyStatus>"""


@pytest.mark.parametrize("writer", ["14.1", "16.1", "16.1-with-zone"])
def test_all_day_event_has_the_same_date_at_every_version(site: Site, writer: str) -> None:
    """MS-ASCAL 2.2.2.1: an all-day event runs from midnight to midnight.  12.x/14.x
    read local midnight of the event's zone with its Timezone; 16.x reads the date form
    (midnight UTC of the date, as 16.x clients write it: EAS-4-TbSync PR 324).  20 Dec
    in Rome is 20 Dec on every reader, whichever version wrote it."""
    user = site.user()
    version = writer.split("-")[0]
    d = site.device(user, f"allday-{writer}", version)
    cal = d.folders()["Calendar"]
    key = start(d, cal)
    body = ALL_DAY_141 if version == "14.1" else ALL_DAY_161
    if writer == "16.1-with-zone":
        body = f"<C:Timezone>{ROME}</C:Timezone>" + body
    add(d, cal, key, body)
    for reader in ("12.1", "14.1"):
        got = one(site, user, "Calendar", reader)
        assert got.text_of("Calendar:AllDayEvent") == "1"
        if writer == "16.1":            # written without a zone: UTC midnights
            assert got.text_of("Calendar:Timezone") == UTC_BLOB
            assert got.text_of("Calendar:StartTime") == "20261220T000000Z"
            assert got.text_of("Calendar:EndTime") == "20261221T000000Z"
        else:                           # local midnights in Rome, with Rome's Timezone
            assert got.text_of("Calendar:Timezone") == ROME
            assert got.text_of("Calendar:StartTime") == "20261219T230000Z"
            assert got.text_of("Calendar:EndTime") == "20261220T230000Z"
    got = one(site, user, "Calendar", "16.1")
    assert got.text_of("Calendar:AllDayEvent") == "1"
    assert got.text_of("Calendar:StartTime") == "20261220T000000Z"
    assert got.text_of("Calendar:EndTime") == "20261221T000000Z"
    assert got.text_of("Calendar:Timezone") == UTC_BLOB


# -- 7. FileAs ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_missing_file_as_is_made(site: Site, version: str) -> None:
    """MS-ASCNTC 2.2.2.32 FileAs is how a contact is filed and shown: a contact sent
    without one gets "Last, First", else its company, else its e-mail address; a
    device's own FileAs is kept."""
    user = site.user()
    d = site.device(user, "gmail-fileas", version, GMAIL)
    contacts = d.folders()["Contacts"]
    key = start(d, contacts)
    key, _ = add(d, contacts, key, "<K:FirstName>Anna</K:FirstName><K:LastName>Rossi</K:LastName>",
                 "a")
    key, _ = add(d, contacts, key, "<K:CompanyName>ACME S.p.A.</K:CompanyName>", "b")
    key, _ = add(d, contacts, key,
                 "<K:Email1Address>\"Info\" &lt;info@example.org&gt;</K:Email1Address>", "c")
    key, _ = add(d, contacts, key, "<K:FirstName>Bea</K:FirstName><K:LastName>Neri</K:LastName>"
                 "<K:FileAs>Dr. Bea</K:FileAs>", "d")
    shown = sorted(n.text_of("Contacts:FileAs") or "" for n in read(site, user, "Contacts",
                                                                   version, IPHONE))
    assert shown == ["ACME S.p.A.", "Dr. Bea", "Rossi, Anna", "info@example.org"]


def test_server_settings_shape_what_sync_sends_and_keeps(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """--fileas-order decides the FileAs Sync makes; --max-picture-size is the limit a
    contact's Picture is held to in Sync (it is left out, the contact kept: issue 8)."""
    srv = RunningServer(tmp_path_factory.mktemp("shapes-settings"),
                        ["--fileas-order", "first-last", "--max-picture-size", "1K"]).start()
    try:
        site = Site(srv, None)
        user = site.user()
        d = site.device(user, "settings-phone", "14.1", GMAIL)
        contacts = d.folders()["Contacts"]
        key = start(d, contacts)
        big = base64.b64encode(bytes(2048)).decode()
        add(d, contacts, key, "<K:FirstName>Anna</K:FirstName><K:LastName>Rossi</K:LastName>"
            f"<K:Picture>{big}</K:Picture>")
        got = one(site, user, "Contacts", "16.1")
        assert got.text_of("Contacts:FileAs") == "Anna Rossi"
        assert got.find("Contacts:Picture") is None
        assert "Contacts property Picture left out" in srv.log_text()
    finally:
        srv.stop()
