"""``easync-admin export``: a user's contacts as vCard 3.0, events and tasks as iCalendar.

What ``easync-admin import`` reads back into the same items (``easync.items.vcard``
and ``easync.items.icalendar_reader`` are the other half of every mapping here): an
import of an export gives the items it was made from, field by field, for everything
an import produces.  Fields a vCard or iCalendar cannot carry (say a Body in HTML, a
Business2 phone without a Business one, a Personal sensitivity) are counted in the
report's warnings, never silently dropped.

Items are read from the store's change feed a batch at a time and written as they
come, so memory does not grow with the folder.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from easync.i18n import _
from easync.importer import live_items
from easync.items import parse_compact
from easync.items.icalendar_reader import load_zone

EXTENSIONS = {"Contacts": "vcf", "Calendar": "ics", "Tasks": "ics"}
DEFAULT_NAMES = {"Contacts": "contacts", "Calendar": "calendar", "Tasks": "tasks"}


class ExportFailed(Exception):
    """Nothing can be exported (unknown folder, unwritable directory)."""


@dataclass
class FolderExport:
    path: str
    cls: str
    count: int = 0
    skipped: Counter[str] = field(default_factory=Counter)   # field → items that lost it


# ---------------------------------------------------------------- vCard

def _esc(value: Any) -> str:
    r"""A vCard text value: \ ; , and line ends escaped (RFC 6350 3.4)."""
    text = str(value).replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return text.replace("\r\n", "\n").replace("\n", "\\n")


def _fold(line: str) -> str:
    """A content line folded at 75 octets (RFC 6350 3.2), with its CRLF."""
    out: list[str] = []
    size = 0
    start = 0
    for i, ch in enumerate(line):
        n = len(ch.encode("utf-8"))
        if size + n > (75 if not out else 74):
            out.append(line[start:i])
            start, size = i, 0
        size += n
    out.append(line[start:])
    return "\r\n ".join(out) + "\r\n"


# Phone slots and the TEL types ``easync.items.vcard._phone_slots`` puts back there (a
# second HOME or WORK number takes the second slot: the order below matters).
_PHONES = (
    ("MobilePhoneNumber", "CELL"), ("HomePhoneNumber", "HOME,VOICE"),
    ("Home2PhoneNumber", "HOME,VOICE"), ("BusinessPhoneNumber", "WORK,VOICE"),
    ("Business2PhoneNumber", "WORK,VOICE"), ("HomeFaxNumber", "HOME,FAX"),
    ("BusinessFaxNumber", "WORK,FAX"), ("PagerNumber", "PAGER"), ("CarPhoneNumber", "CAR"),
    ("AssistantPhoneNumber", "X-ASSISTANT"), ("RadioPhoneNumber", "X-RADIO"),
    ("CompanyMainPhone", "X-COMPANY-MAIN"),
)
_ADDRESSES = (("Home", ";TYPE=HOME"), ("Business", ";TYPE=WORK"), ("Other", ""))
_X_TEXT = (("Spouse", "X-SPOUSE"), ("ManagerName", "X-MANAGER"),
           ("AssistantName", "X-ASSISTANT"), ("YomiFirstName", "X-PHONETIC-FIRST-NAME"),
           ("YomiLastName", "X-PHONETIC-LAST-NAME"), ("YomiCompanyName", "X-PHONETIC-ORG"),
           ("OfficeLocation", "X-MS-OFFICE"), ("AccountName", "X-ACCOUNT"),
           ("CustomerId", "X-CUSTOMER-ID"), ("GovernmentId", "X-GOVERNMENT-ID"))
_CONTACT_FIELDS = ({"UID", "FileAs", "FirstName", "LastName", "MiddleName", "Title",
                    "Suffix", "CompanyName", "Department", "JobTitle", "Email1Address",
                    "Email2Address", "Email3Address", "Birthday", "Anniversary", "Body",
                    "Categories", "Picture", "WebPage", "NickName", "IMAddress",
                    "IMAddress2", "IMAddress3", "Children"}
                   | {k for k, _ in _PHONES} | {k for k, _ in _X_TEXT}
                   | {f"{p}Address{x}" for p, _ in _ADDRESSES
                      for x in ("Street", "City", "State", "PostalCode", "Country")})


def contact_to_vcard(data: dict[str, Any]) -> tuple[str, list[str]]:
    """A canonical contact → (one vCard 3.0, the fields it could not carry)."""
    lost = sorted(k for k, v in data.items() if k not in _CONTACT_FIELDS and v not in
                  (None, "", []))
    lines = ["BEGIN:VCARD", "VERSION:3.0"]

    def add(name: str, value: Any) -> None:
        if value not in (None, "", []):
            lines.append(f"{name}:{value}")

    add("UID", _esc(data.get("UID") or ""))
    names = [data.get(k) or "" for k in ("LastName", "FirstName", "MiddleName", "Title",
                                         "Suffix")]
    if any(names):
        add("N", ";".join(_esc(n) for n in names))
    fn = data.get("FileAs") or " ".join(
        n for n in (data.get("FirstName"), data.get("LastName")) if n) or \
        data.get("CompanyName") or ""
    add("FN", _esc(fn))
    if fn and not any(data.get(k) for k in ("FirstName", "LastName", "MiddleName")):
        # no person's name: shown as the company (else a reader makes names of FN)
        add("X-ABSHOWAS", "COMPANY")
    if data.get("CompanyName") or data.get("Department"):
        add("ORG", ";".join(_esc(data.get(k) or "") for k in ("CompanyName", "Department")))
    add("TITLE", _esc(data.get("JobTitle") or ""))
    add("NICKNAME", _esc(data.get("NickName") or ""))
    for i in (1, 2, 3):
        add("EMAIL;TYPE=INTERNET", _esc(data.get(f"Email{i}Address") or ""))
    for key, types in _PHONES:
        add(f"TEL;TYPE={types}", _esc(data.get(key) or ""))
    for prefix, param in _ADDRESSES:
        parts = [data.get(f"{prefix}Address{x}") or ""
                 for x in ("Street", "City", "State", "PostalCode", "Country")]
        if any(parts):
            add(f"ADR{param}", ";;" + ";".join(_esc(p) for p in parts))
    add("BDAY", data.get("Birthday") or "")
    add("ANNIVERSARY", data.get("Anniversary") or "")
    body = data.get("Body") or {}
    if body.get("Data"):
        if str(body.get("Type", 1)) != "1":
            lost.append("Body (not plain text)")
        add("NOTE", _esc(body["Data"]))
    add("CATEGORIES", ",".join(_esc(c) for c in data.get("Categories") or []))
    add("URL", _esc(data.get("WebPage") or ""))
    for key in ("IMAddress", "IMAddress2", "IMAddress3"):
        add("IMPP", _esc(data.get(key) or ""))
    for key, prop in _X_TEXT:
        add(prop, _esc(data.get(key) or ""))
    add("X-MS-CHILD", ",".join(_esc(c) for c in data.get("Children") or []))
    if data.get("Picture"):
        add("PHOTO;ENCODING=b;TYPE=JPEG", re.sub(r"\s+", "", data["Picture"]))
    lines.append("END:VCARD")
    return "".join(_fold(line) for line in lines), lost


# ---------------------------------------------------------------- iCalendar

_CLASS = {0: "PUBLIC", 2: "PRIVATE", 3: "CONFIDENTIAL"}
_BUSY = {0: "FREE", 1: "TENTATIVE", 2: "BUSY", 3: "OOF", 4: "WORKINGELSEWHERE"}
_PARTSTAT = {5: "NEEDS-ACTION", 3: "ACCEPTED", 4: "DECLINED", 2: "TENTATIVE",
             0: "DELEGATED"}
_DAYS = (("SU", 1), ("MO", 2), ("TU", 4), ("WE", 8), ("TH", 16), ("FR", 32), ("SA", 64))
_WKST = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _rrule(rec: dict[str, Any], until: datetime | None) -> dict[str, Any] | None:
    """A canonical Recurrence → the RRULE ``icalendar_reader.recurrence`` reads back
    into it (None: a Type it does not know)."""
    kind = _int(rec.get("Type"), -1)
    days = [d for d, bit in _DAYS if _int(rec.get("DayOfWeek")) & bit]
    week = _int(rec.get("WeekOfMonth"))
    nth = -1 if week == 5 else week
    rule: dict[str, Any] = {}
    if kind == 0:
        rule["FREQ"] = "DAILY"
    elif kind == 1:
        rule.update(FREQ="WEEKLY", BYDAY=days)
    elif kind == 2:
        rule.update(FREQ="MONTHLY", BYMONTHDAY=_int(rec.get("DayOfMonth")))
    elif kind == 5:
        rule.update(FREQ="YEARLY", BYMONTHDAY=_int(rec.get("DayOfMonth")),
                    BYMONTH=_int(rec.get("MonthOfYear")))
    elif kind in (3, 6):
        rule["FREQ"] = "MONTHLY" if kind == 3 else "YEARLY"
        if len(days) == 1:
            rule["BYDAY"] = [f"{nth}{days[0]}"]
        else:
            rule.update(BYDAY=days, BYSETPOS=nth)
        if kind == 6:
            rule["BYMONTH"] = _int(rec.get("MonthOfYear"))
    else:
        return None
    rule["INTERVAL"] = _int(rec.get("Interval"), 1) or 1
    if rec.get("Occurrences"):
        rule["COUNT"] = _int(rec["Occurrences"])
    if until is not None:
        rule["UNTIL"] = until
    if "FirstDayOfWeek" in rec:
        rule["WKST"] = _WKST[_int(rec["FirstDayOfWeek"]) % 7]
    return rule


def _when(value: str, zone: ZoneInfo | None, all_day: bool) -> date | datetime:
    """A compact UTC time as the reader wants it: a local date (all-day), a time in
    its zone, or UTC."""
    utc = parse_compact(value)
    if all_day:
        return utc.astimezone(zone or UTC).date()
    return utc.astimezone(zone) if zone is not None and zone.key != "UTC" else utc


def _event_props(comp: Any, data: dict[str, Any], zone: ZoneInfo | None) -> None:
    """The properties of one VEVENT (a master, or an override with its own values)."""
    from icalendar import Alarm, vCalAddress, vText

    all_day = _int(data.get("AllDayEvent")) == 1
    comp.add("DTSTART", _when(data["StartTime"], zone, all_day))
    if data.get("EndTime"):
        comp.add("DTEND", _when(data["EndTime"], zone, all_day))
    for key, prop in (("Subject", "SUMMARY"), ("Location", "LOCATION")):
        if data.get(key):
            comp.add(prop, data[key])
    if (data.get("Body") or {}).get("Data"):
        comp.add("DESCRIPTION", data["Body"]["Data"])
    if data.get("Categories"):
        comp.add("CATEGORIES", list(data["Categories"]))
    if _int(data.get("Sensitivity"), -1) in _CLASS:
        comp.add("CLASS", _CLASS[_int(data["Sensitivity"])])
    if _int(data.get("BusyStatus"), -1) in _BUSY:
        comp.add("X-MICROSOFT-CDO-BUSYSTATUS", _BUSY[_int(data["BusyStatus"])])
    if data.get("Reminder") not in (None, ""):
        alarm = Alarm()
        alarm.add("ACTION", "DISPLAY")
        alarm.add("DESCRIPTION", vText("Reminder"))
        alarm.add("TRIGGER", timedelta(minutes=-_int(data["Reminder"])))
        comp.add_component(alarm)
    if data.get("OrganizerEmail"):
        org = vCalAddress(f"mailto:{data['OrganizerEmail']}")
        org.params["CN"] = data.get("OrganizerName") or data["OrganizerEmail"]
        comp.add("ORGANIZER", org)
    for att in data.get("Attendees") or []:
        if not att.get("Email"):
            continue
        a = vCalAddress(f"mailto:{att['Email']}")
        a.params["CN"] = att.get("Name") or att["Email"]
        if _int(att.get("AttendeeStatus"), -1) in _PARTSTAT:
            a.params["PARTSTAT"] = _PARTSTAT[_int(att["AttendeeStatus"])]
        kind = _int(att.get("AttendeeType"), 1)
        if kind == 3:
            a.params["CUTYPE"] = "RESOURCE"
        a.params["ROLE"] = "OPT-PARTICIPANT" if kind == 2 else "REQ-PARTICIPANT"
        comp.add("ATTENDEE", a)
    if _int(data.get("MeetingStatus")) in (5, 7):
        comp.add("STATUS", "CANCELLED")


_EVENT_FIELDS = {"UID", "StartTime", "EndTime", "AllDayEvent", "Subject", "Location",
                 "Body", "Categories", "Sensitivity", "BusyStatus", "Reminder",
                 "OrganizerEmail", "OrganizerName", "Attendees", "MeetingStatus",
                 "ResponseType", "DtStamp", "TimezoneId", "Timezone", "Recurrence",
                 "Exceptions", "ClientUid"}


def event_to_vevents(data: dict[str, Any], all_day_zone: ZoneInfo
                     ) -> tuple[list[Any], list[str]]:
    """A canonical event → (its VEVENTs: the series, then one per changed occurrence;
    the fields they could not carry)."""
    from icalendar import Event

    lost = sorted(k for k in data if k not in _EVENT_FIELDS)
    all_day = _int(data.get("AllDayEvent")) == 1
    zone = all_day_zone if all_day else load_zone(data.get("TimezoneId"))
    if all_day and data.get("TimezoneId") not in (None, all_day_zone.key):
        lost.append("TimezoneId (an all-day event in another zone than the file's)")
    master = Event()
    if data.get("UID"):
        master.add("UID", data["UID"])
    if data.get("DtStamp"):
        master.add("DTSTAMP", parse_compact(data["DtStamp"]))
    _event_props(master, data, zone)
    rec = data.get("Recurrence")
    out = [master]
    if isinstance(rec, dict):
        until = parse_compact(rec["Until"]) if rec.get("Until") else None
        rule = _rrule(rec, until)
        if rule is None:
            lost.append("Recurrence")
            return out, lost
        master.add("RRULE", rule)
        for exc in data.get("Exceptions") or []:
            when = parse_compact(exc["ExceptionStartTime"])
            if exc.get("Deleted"):
                master.add("EXDATE", when)
                continue
            ov = Event()
            if data.get("UID"):
                ov.add("UID", data["UID"])
            ov.add("RECURRENCE-ID", when)
            merged = {k: v for k, v in data.items() if k not in ("Recurrence", "Exceptions")}
            merged.update({k: v for k, v in exc.items() if k != "ExceptionStartTime"})
            _event_props(ov, merged, zone)
            out.append(ov)
    return out, lost


def _extended(value: str) -> datetime:
    return parse_compact(value)


def _task_time(local: str | None, utc: str | None) -> datetime | None:
    """A task's start or due time: UTC, or in the fixed-offset zone (Etc/GMT±N) that
    makes its local and UTC forms agree (the reader keeps both)."""
    if not utc and not local:
        return None
    at = _extended(utc or local or "")
    if not local or not utc:
        return at
    offset = _extended(local) - at
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    if offset == timedelta(0) or rest or not -14 <= hours <= 14:
        return at
    zone = ZoneInfo(f"Etc/GMT{-hours:+d}")           # POSIX sign: Etc/GMT-1 is UTC+1
    return at.astimezone(zone)


_TASK_FIELDS = {"UID", "Subject", "Body", "StartDate", "UtcStartDate", "DueDate",
                "UtcDueDate", "Complete", "DateCompleted", "Importance", "Sensitivity",
                "Categories", "ReminderSet", "ReminderTime", "Recurrence"}


def task_to_vtodo(data: dict[str, Any]) -> tuple[Any, list[str]]:
    """A canonical task → (its VTODO, the fields it could not carry)."""
    from icalendar import Alarm, Todo

    lost = sorted(k for k in data if k not in _TASK_FIELDS)
    todo = Todo()
    if data.get("UID"):
        todo.add("UID", data["UID"])
    todo.add("SUMMARY", data.get("Subject") or "")
    if (data.get("Body") or {}).get("Data"):
        todo.add("DESCRIPTION", data["Body"]["Data"])
    start = _task_time(data.get("StartDate"), data.get("UtcStartDate"))
    due = _task_time(data.get("DueDate"), data.get("UtcDueDate"))
    if start is not None:
        todo.add("DTSTART", start)
    if due is not None:
        todo.add("DUE", due)
    if _int(data.get("Complete")) == 1:
        todo.add("STATUS", "COMPLETED")
        if data.get("DateCompleted"):
            todo.add("COMPLETED", _extended(data["DateCompleted"]))
    importance = _int(data.get("Importance"), -1)
    if importance in (0, 1, 2):
        todo.add("PRIORITY", {2: 1, 1: 5, 0: 9}[importance])
    if _int(data.get("Sensitivity"), -1) in _CLASS:
        todo.add("CLASS", _CLASS[_int(data["Sensitivity"])])
    if data.get("Categories"):
        todo.add("CATEGORIES", list(data["Categories"]))
    if _int(data.get("ReminderSet")) == 1 and data.get("ReminderTime"):
        if start is None and due is None:
            lost.append("ReminderTime (a task without start or due date)")
        else:
            alarm = Alarm()
            alarm.add("ACTION", "DISPLAY")
            alarm.add("DESCRIPTION", "Reminder")
            alarm.add("TRIGGER", _extended(data["ReminderTime"]),
                      parameters={"VALUE": "DATE-TIME"})
            todo.add_component(alarm)
    rec = data.get("Recurrence")
    if isinstance(rec, dict):
        until = _extended(rec["Until"]) if rec.get("Until") else None
        rule = _rrule(rec, until)
        if rule is None or (start is None and due is None):
            lost.append("Recurrence")
        else:
            todo.add("RRULE", rule)
        if _int(rec.get("Regenerate")) or _int(rec.get("DeadOccur")):
            lost.append("Recurrence Regenerate/DeadOccur")
    return todo, lost


# ---------------------------------------------------------------- folders

def _zones_named(cls: str, data: dict[str, Any]) -> set[str]:
    """The zones the item's VEVENT or VTODO names in a TZID."""
    if cls == "Calendar":
        zone = load_zone(data.get("TimezoneId"))
        timed = _int(data.get("AllDayEvent")) != 1
        return {zone.key} if timed and zone is not None and zone.key != "UTC" else set()
    out = set()
    for local, utc in ((data.get("StartDate"), data.get("UtcStartDate")),
                       (data.get("DueDate"), data.get("UtcDueDate"))):
        at = _task_time(local, utc)
        if isinstance(at, datetime) and isinstance(at.tzinfo, ZoneInfo) and \
                at.tzinfo.key != "UTC":
            out.add(at.tzinfo.key)
    return out


def _note_lost(skipped: Counter[str], lost: Iterable[str]) -> None:
    for name in lost:
        skipped[name] += 1


async def export_folder(store: Any, user: Any, folder: Any, out: TextIO,
                        path: str = "-") -> FolderExport:
    """Write one Contacts, Calendar or Tasks folder to ``out``."""
    from icalendar import Timezone

    result = FolderExport(path, folder.cls)
    if folder.cls == "Contacts":
        async for items in live_items(store, user, folder.server_id):
            for it in items:
                text, lost = contact_to_vcard(it.data)
                out.write(text)
                _note_lost(result.skipped, lost)
                result.count += 1
        return result
    # All-day events are read in the file's X-WR-TIMEZONE: the zone most of them have.
    # The zones TZIDs name get their VTIMEZONE (RFC 5545 3.6.5), for other readers.
    all_day: Counter[str] = Counter()
    named: set[str] = set()
    async for items in live_items(store, user, folder.server_id):
        for it in items:
            named.update(_zones_named(folder.cls, it.data))
            if folder.cls == "Calendar" and _int(it.data.get("AllDayEvent")) == 1 and \
                    load_zone(it.data.get("TimezoneId")) is not None:
                all_day[str(it.data["TimezoneId"])] += 1
    zone_name = all_day.most_common(1)[0][0] if all_day else "UTC"
    all_day_zone = load_zone(zone_name) or ZoneInfo("UTC")
    out.write("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//easync//export//EN\r\n"
              f"X-WR-TIMEZONE:{zone_name}\r\n")
    out.writelines(Timezone.from_tzid(name).to_ical().decode("utf-8")
                   for name in sorted(named))
    async for items in live_items(store, user, folder.server_id):
        for it in items:
            if folder.cls == "Calendar":
                comps, lost = event_to_vevents(it.data, all_day_zone)
            else:
                todo, lost = task_to_vtodo(it.data)
                comps = [todo]
            out.writelines(comp.to_ical().decode("utf-8") for comp in comps)
            _note_lost(result.skipped, lost)
            result.count += 1
    out.write("END:VCALENDAR\r\n")
    return result


async def export_user(store: Any, user: Any, out_dir: str | None, out: TextIO,
                      folder_id: str | None = None) -> list[FolderExport]:
    """Export the user's own Contacts, Calendar and Tasks folders (or only ``folder_id``,
    which may be one shared with them)
    into ``out_dir`` (one file each: contacts.vcf, calendar.ics, tasks.ics for the
    default ones, <class>-<id>.vcf/.ics for others), or the one folder to ``out``."""
    folders = [f for f in await store.list_folders(user) if f.cls in EXTENSIONS]
    if folder_id is None:
        # the user's own data: folders others share with them are theirs to export
        folders = [f for f in folders if f.owner is None]
    if folder_id is not None:
        folders = [f for f in folders if f.server_id == folder_id]
        if not folders:
            raise ExportFailed(_("user {name} has no Contacts, Calendar or Tasks "
                                 "folder {folder!r}").format(name=user.name,
                                                             folder=folder_id))
    elif out_dir is None:
        raise ExportFailed(_("give --folder to export to standard output, or --out DIR"))
    if out_dir is None:
        return [await export_folder(store, user, folders[0], out)]
    if not os.path.isdir(out_dir):
        raise ExportFailed(_("no directory {path}").format(path=out_dir))
    done = []
    for folder in folders:
        name = DEFAULT_NAMES[folder.cls] if folder.is_default else \
            f"{folder.cls.lower()}-{folder.server_id}"
        path = os.path.join(out_dir, f"{name}.{EXTENSIONS[folder.cls]}")
        f = _create(path)
        try:
            done.append(await export_folder(store, user, folder, f, path))
        except OSError as e:
            raise ExportFailed(_("cannot write {path}: {reason}").format(
                path=path, reason=e.strerror)) from None
        finally:
            f.close()
    return done


def _create(path: str) -> TextIO:
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as e:
        raise ExportFailed(_("cannot write {path}: {reason}").format(
            path=path, reason=e.strerror)) from None
