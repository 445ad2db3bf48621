"""``easync-admin import``: vCard and iCalendar mappings, folders, re-import idempotence."""

from __future__ import annotations

import base64
import os
import shutil
import textwrap
from typing import Any

import pytest
import pytest_twisted

from easync import importer
from easync.importer import ImportFailed
from easync.items import vcard
from easync.items.icalendar_reader import ICalendarError, parse_icalendar
from easync.items.vcard import VCardError, card_to_contact, split_cards

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
VCF = os.path.join(DATA, "contacts.vcf")
ICS = os.path.join(DATA, "calendar.ics")
PHOTO = base64.b64encode(bytes(range(256)) * 2).decode()


def contacts() -> list[tuple[dict[str, Any], list[str]]]:
    return [card_to_contact(p) for p in split_cards(importer.read_text(VCF))]


def calendar(user_email: str | None = "mario@example.it"
             ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[str]]:
    events, tasks, warnings = parse_icalendar(importer.read_text(ICS), user_email=user_email)
    return ({e["UID"]: e for e in events}, {t["UID"]: t for t in tasks}, warnings)


def write(path: str, text: str) -> str:
    with open(path, "w", newline="") as f:
        f.write(text)
    return path


def edited(src: str, dst: str, *replacements: tuple[str, str]) -> str:
    """A copy of ``src`` with some text replaced."""
    with open(src, newline="") as f:
        text = f.read()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    return write(dst, text)


def ics(body: str, extra: str = "") -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" + extra + textwrap.dedent(body).strip()
            + "\r\nEND:VCALENDAR\r\n")


# ====================================================================== vCard

def test_vcard_30_all_fields() -> None:
    c, warnings = contacts()[0]
    assert c["UID"] == "5B2E0F4C-7D7A-4C1B-9D46-1A2B3C4D5E6F"
    assert (c["LastName"], c["FirstName"], c["MiddleName"]) == ("Rossi", "Mario", "Giuseppe")
    assert (c["Title"], c["Suffix"]) == ("Dott.", "Jr.")
    assert c["FileAs"] == "Mario Rossi"
    assert c["NickName"] == "Mariolino"
    assert (c["CompanyName"], c["Department"]) == ("Rossi & Figli S.r.l.", "Vendite")
    assert c["JobTitle"] == "Direttore commerciale"        # TITLE wins over ROLE
    # The preferred address first, then file order; the fourth one is reported.
    assert c["Email1Address"] == "mario@example.it"
    assert c["Email2Address"] == "mario.rossi@rossifigli.it"
    assert c["Email3Address"] == "m.rossi@altro.example"
    assert any("quarto@example.org" in w for w in warnings)
    assert c["MobilePhoneNumber"] == "+39 333 1234567"
    assert c["BusinessPhoneNumber"] == "+39 06 1111111"
    assert c["Business2PhoneNumber"] == "+39 06 2222222"
    assert c["HomePhoneNumber"] == "+39 06 3333333"
    assert c["BusinessFaxNumber"] == "+39 06 4444444"
    assert c["HomeFaxNumber"] == "+39 06 5555555"
    assert c["PagerNumber"] == "+39 06 6666666"
    assert c["AssistantPhoneNumber"] == "+39 06 7777777"    # Apple label on a group
    assert c["CarPhoneNumber"] == "+39 347 8888888"
    assert c["BusinessAddressStreet"] == "Via del Corso 10\nScala B"
    assert (c["BusinessAddressCity"], c["BusinessAddressState"]) == ("Roma", "RM")
    assert (c["BusinessAddressPostalCode"], c["BusinessAddressCountry"]) == ("00186", "Italia")
    assert c["HomeAddressStreet"] == "Via Appia 250, int. 3"  # escaped comma
    assert c["OtherAddressCity"] == "Ostia"
    assert c["Birthday"] == "1975-06-21"
    assert c["Spouse"] == "Giulia Bianchi"
    assert c["ManagerName"] == "Paolo Verdi"
    assert c["Body"] == {"Type": 1, "Data": "Cliente dal 2010.\nPreferisce essere chiamato "
                                             "la mattina, mai dopo le 18."}
    assert c["Categories"] == ["Clienti", "VIP"]
    assert c["WebPage"] == "https://www.rossifigli.it"
    assert c["IMAddress"] == "mario@jabber.example"
    assert c["IMAddress2"] == "mario.rossi"
    assert c["Picture"] == PHOTO


def test_vcard_21_quoted_printable_and_bare_types() -> None:
    c, warnings = contacts()[1]
    assert warnings == []
    assert (c["FirstName"], c["LastName"], c["FileAs"]) == ("Lucia", "Bianchi", "Lucia Bianchi")
    assert c["MobilePhoneNumber"] == "+39 340 0000001"
    assert c["HomePhoneNumber"] == "+39 02 0000002"
    assert c["BusinessPhoneNumber"] == "+39 02 0000003"
    assert c["Email1Address"] == "lucia.bianchi@example.com"
    # A soft line break inside a quoted-printable value, and UTF-8 bytes.
    assert c["HomeAddressStreet"] == "Via Garibaldi 7\nPiano 2"
    assert c["HomeAddressCity"] == "Milano"
    assert c["Body"]["Data"] == "Città natale: Cantù\nSeconda riga"
    assert c["Birthday"] == "1982-03-14"
    assert c["Picture"] == PHOTO


def test_vcard_40() -> None:
    c, warnings = contacts()[2]
    assert c["UID"] == "urn:uuid:0c8bd2a0-4f8f-4a53-8c5b-0e5f0e5a1b2c"
    assert c["Email1Address"] == "anna.verdi@example.com"
    assert c["BusinessPhoneNumber"] == "+39-011-555-0101"   # TYPE="work,voice", tel: URI
    assert c["MobilePhoneNumber"] == "+39-320-555-0102"
    assert c["HomeAddressStreet"] == "Corso Francia 12"
    assert c["Anniversary"] == "2009-09-12"
    # --0412 has no year: kept as iOS keeps such a birthday, in year 1604 (issue 8)
    assert c["Birthday"] == "1604-04-12"
    assert not any("BDAY" in w for w in warnings)
    assert c["Spouse"] == "Marco Verdi"
    assert c["Children"] == ["Sara Verdi"]
    assert c["Picture"] == PHOTO                            # data: URI
    assert c["NickName"] == "Annetta, Nina"


def test_vcard_company_and_fn_only() -> None:
    company, _ = contacts()[3]
    assert company["CompanyName"] == "ACME Forniture S.p.A."
    assert company["CompanyMainPhone"] == "+39 011 999999"
    assert "FirstName" not in company and "LastName" not in company
    person, warnings = contacts()[4]
    assert (person["FirstName"], person["LastName"]) == ("Carlo", "Neri")  # from FN
    assert "Picture" not in person
    assert any("link" in w for w in warnings)


def test_vcard_phone_overflow_is_reported() -> None:
    lines = ["BEGIN:VCARD", "VERSION:3.0", "FN:Tanti Numeri"]
    lines += [f"TEL;TYPE=CELL:+39 300 00000{i}" for i in range(6)]
    lines += ["END:VCARD"]
    [props] = split_cards("\r\n".join(lines))
    c, warnings = card_to_contact(props)
    assert c["MobilePhoneNumber"] == "+39 300 000000"
    # The others take the remaining general slots, the last one is reported.
    assert c["HomePhoneNumber"] == "+39 300 000001"
    assert c["Business2PhoneNumber"] == "+39 300 000004"
    assert warnings == ["phone number +39 300 000005 dropped: no free phone slot"]


def test_vcard_folded_lines_and_nested_agent() -> None:
    text = ("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Piegata\r\nNOTE:una riga \r\n molto lunga\r\n"
            "AGENT:BEGIN:VCARD\r\nBEGIN:VCARD\r\nFN:Agente\r\nEND:VCARD\r\nEND:VCARD\r\n")
    cards = split_cards(text)
    assert len(cards) == 1
    c, _ = card_to_contact(cards[0])
    assert c["Body"]["Data"] == "una riga molto lunga"
    assert c["FileAs"] == "Piegata"


def test_vcard_commas_survive_vobject() -> None:
    # vobject's own vCard behaviours would keep only the text before the first comma.
    text = ("BEGIN:VCARD\r\nVERSION:2.1\r\nN:Rossi;Mario\r\nFN:Rossi, Mario\r\n"
            "TITLE:Capo, vice\r\nORG:Rossi, Bianchi & C.;Vendite\r\n"
            "NOTE;ENCODING=QUOTED-PRINTABLE:uno, due=0D=0A=\r\ntre\r\n"
            "X-MS-CHILD:Anna,Luca\r\nURL:http\\://example.it/a\\,b\r\nEND:VCARD\r\n")
    [props] = split_cards(text)
    c, _ = card_to_contact(props)
    assert c["FileAs"] == "Rossi, Mario"
    assert c["JobTitle"] == "Capo, vice"
    assert (c["CompanyName"], c["Department"]) == ("Rossi, Bianchi & C.", "Vendite")
    assert c["Body"]["Data"] == "uno, due\ntre"
    assert c["Children"] == ["Anna", "Luca"]
    assert c["WebPage"] == "http://example.it/a,b"


def test_vcard_line_ends_and_unreadable_lines() -> None:
    card = ["BEGIN:VCARD", "VERSION:3.0", "FN:Mac", "NOTE:una riga ", " piegata",
            "not a property", "END:VCARD "]
    for eol in ("\r", "\r\r\n", "\n"):
        cards, warnings = vcard.read_cards(eol.join(card) + eol)
        assert len(cards) == 1
        c, _ = card_to_contact(cards[0])
        assert (c["FileAs"], c["Body"]["Data"]) == ("Mac", "una riga piegata")
        assert warnings == [("a line that is not a vCard property was skipped: "
                             "'not a property'")]


def test_vcard_damaged_photo_is_a_warning() -> None:
    text = ("BEGIN:VCARD\nVERSION:3.0\nFN:Uno\nPHOTO;ENCODING=b;TYPE=JPEG:AAECA\nEND:VCARD\n"
            "BEGIN:VCARD\nVERSION:3.0\nFN:Due\nEND:VCARD\n")
    first, second = split_cards(text)
    c, warnings = card_to_contact(first)
    assert "Picture" not in c and warnings == ["an unreadable PHOTO was skipped"]
    assert card_to_contact(second)[0]["FileAs"] == "Due"


@pytest.mark.parametrize("text, error", [
    ("BEGIN:VCARD\nVERSION:3.0\nFN:A\n", "VCARD component wasn't closed"),
    ("BEGIN:VCARD\nFN:A\nEND:VCARD\nEND:VCARD\n", "line 4: END without its BEGIN"),
    ("BEGIN:VCARD\nVERSION:2.1\nFN;ENCODING=QUOTED-PRINTABLE:J=F6rg\nEND:VCARD\n",
     "quoted-printable value cannot be decoded with its CHARSET"),
])
def test_vcard_unreadable_files(text: str, error: str) -> None:
    with pytest.raises(VCardError, match=error):
        split_cards(text)


# ====================================================================== iCalendar

def test_event_with_tzid_rrule_exdate_override_attendees() -> None:
    events, _tasks, _w = calendar()
    e = events["weekly-standup@easync.test"]
    # 09:30 in Rome (CET, +01:00) is 08:30 UTC.
    assert e["StartTime"] == "20260105T083000Z"
    assert e["EndTime"] == "20260105T090000Z"
    assert e["TimezoneId"] == "Europe/Rome"
    assert e["Timezone"]                                   # the EAS blob for the zone
    assert e["AllDayEvent"] == 0
    assert e["Subject"] == "Riunione di reparto"
    assert e["Location"] == "Sala Verde"
    assert e["Body"] == {"Type": 1, "Data": "Ordine del giorno:\n1. vendite\n2. varie"}
    assert e["Categories"] == ["Lavoro", "Riunioni"]
    assert e["Sensitivity"] == 2                           # CLASS:PRIVATE
    assert e["BusyStatus"] == 2                            # TRANSP:OPAQUE
    assert e["Reminder"] == 10
    assert e["DtStamp"] == "20260101T080000Z"
    assert e["Recurrence"] == {"Type": 1, "DayOfWeek": 2 | 8 | 32, "Interval": 1,
                               "Until": "20260630T215959Z", "FirstDayOfWeek": 1}
    assert e["OrganizerEmail"] == "mario@example.it"
    assert e["OrganizerName"] == "Mario Rossi"
    assert e["MeetingStatus"] == 1                         # the user organizes it
    assert e["Attendees"] == [
        {"Email": "mario@example.it", "Name": "Mario Rossi", "AttendeeStatus": 3,
         "AttendeeType": 1},
        {"Email": "lucia.bianchi@example.com", "Name": "Bianchi, Lucia",
         "AttendeeStatus": 2, "AttendeeType": 1},
        {"Email": "anna.verdi@example.com", "Name": "Anna Verdi", "AttendeeStatus": 5,
         "AttendeeType": 2},
        {"Email": "sala.verde@example.it", "Name": "Sala Verde", "AttendeeStatus": 3,
         "AttendeeType": 3},
    ]
    assert e["Exceptions"] == [
        {"ExceptionStartTime": "20260107T083000Z", "Deleted": 1},      # EXDATE
        {"ExceptionStartTime": "20260109T083000Z", "Deleted": 1},      # EXDATE
        {"ExceptionStartTime": "20260114T083000Z",                     # moved, renamed
         "StartTime": "20260114T100000Z", "EndTime": "20260114T103000Z",
         "Subject": "Riunione di reparto (spostata)"},
        {"ExceptionStartTime": "20260116T083000Z", "Deleted": 1},      # STATUS:CANCELLED
    ]


def test_all_day_events() -> None:
    events, _t, _w = calendar()
    e = events["ferragosto@easync.test"]
    assert e["AllDayEvent"] == 1
    # Midnight to midnight in the calendar's zone (X-WR-TIMEZONE Europe/Rome, CEST).
    assert (e["StartTime"], e["EndTime"]) == ("20260814T220000Z", "20260815T220000Z")
    assert e["TimezoneId"] == "Europe/Rome"
    assert e["BusyStatus"] == 0                            # TRANSP:TRANSPARENT
    assert e["Sensitivity"] == 0
    assert e["Recurrence"] == {"Type": 5, "DayOfMonth": 15, "MonthOfYear": 8, "Interval": 1}
    ferie = events["ferie@easync.test"]
    assert (ferie["StartTime"], ferie["EndTime"]) == ("20260802T220000Z", "20260807T220000Z")
    assert ferie["BusyStatus"] == 3                        # X-MICROSOFT-CDO-BUSYSTATUS:OOF
    # Without a DTEND an all-day event lasts one day.
    assert events["thanksgiving@easync.test"]["EndTime"] == "20261126T230000Z"


def test_recurrence_patterns() -> None:
    events, _t, _w = calendar()
    board = events["board@easync.test"]
    assert board["Recurrence"] == {"Type": 3, "WeekOfMonth": 2, "DayOfWeek": 4,
                                   "Interval": 1, "Occurrences": 10}      # 2nd Tuesday
    assert board["EndTime"] == "20260113T160000Z"                        # DURATION:PT2H
    assert board["Reminder"] == 24 * 60
    # BYSETPOS=-1 over the weekdays: the last weekday of the month.
    assert events["closing@easync.test"]["Recurrence"] == {
        "Type": 3, "WeekOfMonth": 5, "DayOfWeek": 62, "Interval": 1}
    assert events["closing@easync.test"]["Sensitivity"] == 3
    assert events["thanksgiving@easync.test"]["Recurrence"] == {
        "Type": 6, "WeekOfMonth": 4, "DayOfWeek": 16, "MonthOfYear": 11, "Interval": 1}
    # FREQ=DAILY on weekdays is EAS's "every weekday" (weekly, Monday to Friday).
    workdays = events["workdays@easync.test"]
    assert workdays["Recurrence"] == {"Type": 1, "DayOfWeek": 62, "Interval": 1,
                                      "Occurrences": 20}
    assert workdays["TimezoneId"] == "UTC"
    # A date UNTIL on a timed event: the last start on that day (08:00 CEST = 06:00Z).
    assert events["every-two-days@easync.test"]["Recurrence"] == {
        "Type": 0, "Interval": 2, "Until": "20260331T060000Z"}


def test_meeting_received_by_the_user() -> None:
    events, _t, _w = calendar()
    board = events["board@easync.test"]
    assert board["OrganizerEmail"] == "paolo.verdi@example.com"
    assert board["MeetingStatus"] == 3
    assert board["ResponseType"] == 3                      # the user's PARTSTAT=ACCEPTED


def test_unsupported_rrule_imported_without_recurrence() -> None:
    events, _t, warnings = calendar()
    e = events["hourly@easync.test"]
    assert "Recurrence" not in e
    assert e["Subject"] == "Pausa"
    assert [w for w in warnings if "hourly@easync.test" in w] == [
        ("event hourly@easync.test (Pausa): RRULE FREQ=DAILY;BYHOUR=9,12,15 cannot be "
         "expressed in ActiveSync (BYHOUR not supported); imported without recurrence")]
    assert len(warnings) == 1


def test_other_zone() -> None:
    events, _t, _w = calendar()
    ny = events["ny@easync.test"]
    assert ny["TimezoneId"] == "America/New_York"
    assert ny["StartTime"] == "20260310T130000Z"            # EDT since March 8th


def test_tasks() -> None:
    _e, tasks, _w = calendar()
    t = tasks["todo-report@easync.test"]
    assert t["Subject"] == "Preparare report vendite"
    assert t["Body"] == {"Type": 1, "Data": "Dati del Q4"}
    assert t["StartDate"] == "2026-01-05T09:00:00.000Z"    # local time, EAS style
    assert t["UtcStartDate"] == "2026-01-05T08:00:00.000Z"
    assert t["DueDate"] == "2026-01-10T18:00:00.000Z"
    assert t["UtcDueDate"] == "2026-01-10T17:00:00.000Z"
    assert t["Importance"] == 2
    assert t["Complete"] == 0
    assert t["Categories"] == ["Lavoro"]
    assert (t["ReminderSet"], t["ReminderTime"]) == (1, "2026-01-05T07:30:00.000Z")
    done = tasks["todo-done@easync.test"]
    assert done["Complete"] == 1
    assert done["DateCompleted"] == "2026-01-01T12:00:00.000Z"
    assert done["Importance"] == 0
    assert done["Sensitivity"] == 2
    assert done["DueDate"] == "2026-01-02T00:00:00.000Z"


def test_task_recurrence() -> None:
    _e, tasks, _w = parse_icalendar(ics("""
        BEGIN:VTODO
        UID:t1
        SUMMARY:Backup
        DTSTART;VALUE=DATE:20260105
        RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4
        END:VTODO
    """))
    assert tasks[0]["Recurrence"] == {"Type": 1, "DayOfWeek": 2, "Interval": 1,
                                      "Occurrences": 4, "Start": "2026-01-05T00:00:00.000Z",
                                      "Regenerate": 0, "DeadOccur": 0}


@pytest.mark.parametrize("rrule, why", [
    ("FREQ=HOURLY", "FREQ HOURLY"),
    ("FREQ=MONTHLY;BYMONTHDAY=1,15", "several BYMONTHDAY"),
    ("FREQ=MONTHLY;BYDAY=1MO,3WE", "different ordinals"),
    ("FREQ=MONTHLY;BYDAY=MO", "without an occurrence"),
    ("FREQ=DAILY;INTERVAL=3;BYDAY=MO,FR", "every N days"),
    ("FREQ=YEARLY;BYWEEKNO=20", "BYWEEKNO"),
])
def test_inexpressible_rrules(rrule: str, why: str) -> None:
    events, _t, warnings = parse_icalendar(ics(f"""
        BEGIN:VEVENT
        UID:x
        DTSTART:20260105T090000Z
        RRULE:{rrule}
        END:VEVENT
    """))
    assert "Recurrence" not in events[0]
    assert len(warnings) == 1 and why in warnings[0]


def test_floating_time_and_unknown_tzid() -> None:
    events, _t, warnings = parse_icalendar(ics("""
        BEGIN:VEVENT
        UID:floating
        DTSTART:20260701T100000
        END:VEVENT
        BEGIN:VEVENT
        UID:unknown
        DTSTART;TZID=Mars/Olympus:20260701T100000
        DTEND;TZID=Mars/Olympus:20260701T110000
        END:VEVENT
    """), default_tz="Europe/Rome")
    assert events[0]["StartTime"] == events[0]["EndTime"] == "20260701T080000Z"
    assert events[1]["StartTime"] == "20260701T080000Z"
    assert warnings == [("event unknown (no title): unknown time zone 'Mars/Olympus', "
                         "times taken in Europe/Rome")]


def test_override_without_master_and_missing_dtstart() -> None:
    events, _t, warnings = parse_icalendar(ics("""
        BEGIN:VEVENT
        UID:lonely
        RECURRENCE-ID:20260701T100000Z
        DTSTART:20260701T120000Z
        SUMMARY:Solo
        END:VEVENT
        BEGIN:VEVENT
        UID:nostart
        SUMMARY:Senza inizio
        END:VEVENT
    """))
    assert [e["UID"] for e in events] == ["lonely"]
    assert events[0]["StartTime"] == "20260701T120000Z"
    assert len(warnings) == 2


def test_unknown_default_zone_is_an_error() -> None:
    with pytest.raises(ICalendarError, match="unknown time zone"):
        parse_icalendar(ics(""), default_tz="Nowhere/City")


def test_summary() -> None:
    report = importer.ImportReport()
    assert report.summary() == "imported nothing"
    report.contacts.added = 12
    report.events.added = 2
    report.events.updated = 1
    report.tasks.unchanged = 1
    report.warnings.append("x")
    assert report.summary() == ("imported 12 contacts, 3 events, 1 task (1 updated, "
                                "1 unchanged); 1 warning")


# ====================================================================== into the store

@pytest.fixture
def store() -> Any:
    # the importer writes through IItemStore.apply: the in-memory store keeps the
    # same contract (tests/test_store_contract.py), no SQL needed
    from easync.testing import MemoryStore

    return MemoryStore()


async def _user(store: Any) -> Any:
    return await store.add_user("mario", None, "mario@example.it", True)


async def _items(store: Any, user: Any, cls: str) -> list[Any]:
    folder = next(f for f in await store.list_folders(user) if f.cls == cls and f.is_default)
    return await importer._existing(store, user, folder.server_id)


@pytest_twisted.ensureDeferred
async def test_import_vcf_into_default_contacts(store: Any) -> None:
    user = await _user(store)
    folders = {f.cls: f for f in await store.list_folders(user) if f.is_default}
    before = folders["Contacts"].modseq
    report = await importer.import_file(store, user, VCF)
    assert report.contacts.added == 5
    assert report.summary().startswith("imported 5 contacts; ")
    items = await _items(store, user, "Contacts")
    assert sorted(i.data.get("FileAs") for i in items) == [
        "ACME Forniture", "Anna Verdi", "Carlo Neri", "Lucia Bianchi", "Mario Rossi"]
    # Written through apply: the folder's change feed moved.
    after = {f.cls: f for f in await store.list_folders(user)}["Contacts"].modseq
    assert after > before


@pytest_twisted.ensureDeferred
async def test_reimport_is_idempotent(store: Any) -> None:
    user = await _user(store)
    await importer.import_file(store, user, VCF)
    await importer.import_file(store, user, ICS)
    again = await importer.import_file(store, user, VCF)
    assert (again.contacts.added, again.contacts.updated, again.contacts.unchanged) == (0, 0, 5)
    again = await importer.import_file(store, user, ICS)
    assert (again.events.added, again.events.updated, again.events.unchanged) == (0, 0, 10)
    assert (again.tasks.added, again.tasks.unchanged) == (0, 2)
    assert len(await _items(store, user, "Contacts")) == 5
    assert len(await _items(store, user, "Calendar")) == 10
    assert len(await _items(store, user, "Tasks")) == 2


@pytest_twisted.ensureDeferred
async def test_reimport_updates_changed_items(store: Any, tmp_path: Any) -> None:
    user = await _user(store)
    await importer.import_file(store, user, ICS)
    await importer.import_file(store, user, VCF)
    changed_ics = edited(ICS, os.path.join(tmp_path, "changed.ics"),
                         ("SUMMARY:Ferie", "SUMMARY:Ferie estive"))
    report = await importer.import_file(store, user, changed_ics)
    assert (report.events.added, report.events.updated, report.events.unchanged) == (0, 1, 9)
    events = {i.data["UID"]: i.data for i in await _items(store, user, "Calendar")}
    assert events["ferie@easync.test"]["Subject"] == "Ferie estive"
    # Contacts: a card without UID matches by name and first e-mail; one with a UID by UID.
    changed_vcf = edited(VCF, os.path.join(tmp_path, "changed.vcf"),
                         ("FN:Carlo Neri", "FN:Carlo Neri\r\nTITLE:Geometra"),
                         ("FN:Mario Rossi", "FN:Mario G. Rossi"))
    report = await importer.import_file(store, user, changed_vcf)
    assert (report.contacts.added, report.contacts.updated) == (0, 2)
    by_name = {i.data["FileAs"]: i.data for i in await _items(store, user, "Contacts")}
    assert by_name["Carlo Neri"]["JobTitle"] == "Geometra"
    assert "Mario G. Rossi" in by_name and "Mario Rossi" not in by_name


@pytest_twisted.ensureDeferred
async def test_same_name_different_uid_is_another_contact(store: Any, tmp_path: Any) -> None:
    user = await _user(store)
    path = write(os.path.join(tmp_path, "two.vcf"),
                 "BEGIN:VCARD\nVERSION:3.0\nUID:a\nFN:Omonimo\nEND:VCARD\n"
                 "BEGIN:VCARD\nVERSION:3.0\nUID:b\nFN:Omonimo\nEND:VCARD\n")
    report = await importer.import_file(store, user, path)
    assert report.contacts.added == 2
    report = await importer.import_file(store, user, path)
    assert report.contacts.unchanged == 2
    assert len(await _items(store, user, "Contacts")) == 2


@pytest_twisted.ensureDeferred
async def test_import_into_a_chosen_folder(store: Any) -> None:
    user = await _user(store)
    folder = await store.create_folder(user, "0", "Clienti", 14)
    report = await importer.import_file(store, user, VCF, folder_id=folder.server_id)
    assert report.contacts.added == 5
    assert len(await importer._existing(store, user, folder.server_id)) == 5
    assert await _items(store, user, "Contacts") == []
    with pytest.raises(ImportFailed, match="no folder"):
        await importer.import_file(store, user, VCF, folder_id="999999")


@pytest_twisted.ensureDeferred
async def test_import_into_a_folder_of_another_kind_is_refused(store: Any) -> None:
    """Issue #13 point 5: --folder naming a folder of a kind the file does not hold is
    refused and nothing is imported (it used to be ignored silently)."""
    user = await _user(store)
    contacts = await store.create_folder(user, "0", "Clienti", 14)
    with pytest.raises(ImportFailed) as e:
        await importer.import_file(store, user, ICS, folder_id=contacts.server_id)
    assert str(e.value) == (f"folder {contacts.server_id} (Clienti) is a Contacts folder "
                            f"and {ICS} holds events and tasks: nothing imported")
    assert await _items(store, user, "Calendar") == []
    assert await _items(store, user, "Tasks") == []
    calendar = await store.create_folder(user, "0", "Ferie", 13)
    with pytest.raises(ImportFailed, match="is a Calendar folder and .* holds contacts"):
        await importer.import_file(store, user, VCF, folder_id=calendar.server_id)
    assert await _items(store, user, "Contacts") == []
    assert await importer._existing(store, user, calendar.server_id) == []
    # a folder of one of the file's kinds: that kind there, the other in its default
    # folder, said in a warning
    report = await importer.import_file(store, user, ICS, folder_id=calendar.server_id)
    assert (report.events.added, report.tasks.added) == (10, 2)
    assert len(await importer._existing(store, user, calendar.server_id)) == 10
    assert len(await _items(store, user, "Tasks")) == 2
    assert f"{ICS} also holds tasks: imported into the default Tasks folder" in report.warnings


@pytest_twisted.ensureDeferred
async def test_bad_files(store: Any, tmp_path: Any) -> None:
    user = await _user(store)
    with pytest.raises(ImportFailed, match="cannot read"):
        await importer.import_file(store, user, os.path.join(tmp_path, "missing.vcf"))
    junk = write(os.path.join(tmp_path, "notes.txt"), "hello\n")
    with pytest.raises(ImportFailed, match="neither a vCard nor an iCalendar"):
        await importer.import_file(store, user, junk)
    # The content decides, not the name.
    renamed = os.path.join(tmp_path, "calendar.txt")
    shutil.copy(ICS, renamed)
    report = await importer.import_file(store, user, renamed)
    assert report.events.added == 10


@pytest_twisted.ensureDeferred
async def test_unreadable_contents_fail_the_import(store: Any, tmp_path: Any) -> None:
    """The readers' errors (easync.items.vcard, .icalendar_reader) end an import as
    ImportFailed, with their message, and nothing is written."""
    user = await _user(store)
    card = write(os.path.join(tmp_path, "bad.vcf"), "BEGIN:VCARD\nVERSION:3.0\nFN:A\n")
    with pytest.raises(ImportFailed, match="VCARD component wasn't closed"):
        await importer.import_file(store, user, card)
    with pytest.raises(ImportFailed, match="unknown time zone"):
        await importer.import_file(store, user, ICS, default_tz="Nowhere/City")
    assert await _items(store, user, "Contacts") == []
    assert await _items(store, user, "Calendar") == []
