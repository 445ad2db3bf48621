"""EAS canonical item dicts <-> CRM records, field by field (the table is in README.md).

A CRM record is compared through its *view*: the mapped fields only, normalised so
that every read path gives the same strings (event times as ``YYYY-MM-DD HH:MM`` in
the zone the CRM stores, dates as ``YYYY-MM-DD``, empty as ``""``).  The mirror keeps
the view of the last version it saw (the *snapshot*) next to the item's full EAS
dict.  That gives the overlay for free:

* CRM → phone: only the units whose view changed are converted and written over
  the item's dict; everything else (the device's Timezone blob, Categories,
  Picture, recurrence details, attendee statuses, a reminder of 60 the CRM keeps as
  61…) stays as the phone sent it.
* phone → CRM: the device's dict is turned into the view it *would* produce; only
  the fields of units that differ from the snapshot are sent (``revise``).

Units (view key: CRM fields ↔ EAS properties) are listed in ``CONTACT_TEXT`` and
the ``*_units`` functions below.  The module knows nothing about HTTP or SQL.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from easync.items import email_address
from easync.items.event import event_zone

MODULE_OF = {"Contacts": "Contacts", "Calendar": "Events", "Tasks": "Calendar"}
CLASS_OF = {v: k for k, v in MODULE_OF.items()}
#: module -> the FolderSync Type of the user's default folder holding its records
FOLDER_TYPE = {"Contacts": 9, "Events": 8, "Calendar": 7}


def default_folders(folders: Iterable[Any]) -> dict[str, str]:
    """module -> server id of the user's default folder of its records, from the
    user's folders as the SQL store lists them (``easync.model.Folder``)."""
    by_type = {f.type: f.server_id for f in folders}
    return {m: by_type[t] for m, t in FOLDER_TYPE.items() if t in by_type}
UID_NAMESPACE = uuid.UUID("5b0e8a4e-8c61-4d4a-9f0e-3c1f8e6a1d27")

# Contacts: view key (= CRM field) -> EAS property, plain text both ways
CONTACT_TEXT: tuple[tuple[str, str], ...] = (
    ("salutationtype", "Title"),
    ("firstname", "FirstName"),
    ("email", "Email1Address"),
    ("@email2", "Email2Address"),          # yahooid (vtenext) / secondaryemail (vtiger)
    ("phone", "BusinessPhoneNumber"),
    ("mobile", "MobilePhoneNumber"),
    ("homephone", "HomePhoneNumber"),
    ("otherphone", "Business2PhoneNumber"),
    ("fax", "BusinessFaxNumber"),
    ("assistant", "AssistantName"),
    ("assistantphone", "AssistantPhoneNumber"),
    ("title", "JobTitle"),
    ("department", "Department"),
    ("mailingstreet", "BusinessAddressStreet"),
    ("mailingcity", "BusinessAddressCity"),
    ("mailingstate", "BusinessAddressState"),
    ("mailingzip", "BusinessAddressPostalCode"),
    ("mailingcountry", "BusinessAddressCountry"),
    ("otherstreet", "OtherAddressStreet"),
    ("othercity", "OtherAddressCity"),
    ("otherstate", "OtherAddressState"),
    ("otherzip", "OtherAddressPostalCode"),
    ("othercountry", "OtherAddressCountry"),
)
RECURRING = {0: "Daily", 1: "Weekly", 2: "Monthly", 3: "Monthly", 5: "Yearly", 6: "Yearly"}
RECURRING_BACK = {"Daily": 0, "Weekly": 1, "Monthly": 2, "Yearly": 5}
TASK_PRIORITY = {0: "Low", 1: "Medium", 2: "High"}
TASK_PRIORITY_BACK = {"low": 0, "medium": 1, "normal": 1, "high": 2, "urgent": 2}
# salutationtype as the stock vtiger 8.2 UI offers it (recorded: the Contacts Edit view's
# select; vtiger's describe types the field as a plain string and lists none)
STOCK_SALUTATIONS: tuple[str, ...] = ("Mr.", "Ms.", "Mrs.", "Dr.", "Prof.")
# EAS AttendeeStatus <-> vtenext partecipation (2 yes, 1 no, 0 no answer)
PARTECIPATION = {3: 2, 4: 1}
PARTECIPATION_BACK = {2: 3, 1: 4}


@dataclass
class Context:
    """What the mapping needs to know about this CRM and this moment."""

    flavour: str = "vtenext"            # "vtenext" | "vtiger"
    zone_name: str = "UTC"              # the zone the CRM stores event times in
    diff: int = 0                       # vtenext: seconds added on retrieve/create paths
    date_format: str = "yyyy-mm-dd"     # how the service user reads dates
    email2_field: str = "yahooid"
    event_fields: frozenset[str] = frozenset()
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # the zone of the CRM's users' wall clock (the service user's; "" = ``zone_name``):
    # vtiger stores UTC, but a task's date or an all-day event's day is a local one
    local_zone_name: str = ""
    # the values the CRM's UI offers for salutationtype (``salutations``)
    salutations: tuple[str, ...] = field(default_factory=lambda: STOCK_SALUTATIONS)

    @property
    def zone(self) -> tzinfo:
        try:
            return ZoneInfo(self.zone_name)
        except (KeyError, ValueError):
            return UTC

    @property
    def local_zone(self) -> tzinfo:
        try:
            return ZoneInfo(self.local_zone_name) if self.local_zone_name else self.zone
        except (KeyError, ValueError):
            return self.zone

    @property
    def has_allday(self) -> bool:
        return "is_all_day_event" in self.event_fields

    @property
    def has_ical_uuid(self) -> bool:
        return "ical_uuid" in self.event_fields


@dataclass
class Links:
    """The user's mirrored contacts, for the event ↔ contact link."""

    by_email: dict[str, str] = field(default_factory=dict)    # address -> CRM contact id
    by_id: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (address, name)
    # event item id -> its CRM contact links (contact id -> the address each stands for)
    events: dict[int, dict[str, str]] = field(default_factory=dict)

    def add(self, other: Links) -> None:
        """Take in what ``other`` knows (what this one knows first)."""
        for addr, cid in other.by_email.items():
            self.by_email.setdefault(addr, cid)
        for cid, found in other.by_id.items():
            self.by_id.setdefault(cid, found)


# -- values ---------------------------------------------------------------------------------

def _s(value: Any) -> str:
    return "" if value is None else str(value).strip()


_DATE_PARTS = re.compile(r"^\s*(\d{1,4})[-./](\d{1,2})[-./](\d{1,4})")


def parse_date(value: Any, date_format: str = "yyyy-mm-dd") -> str:
    """A CRM date (in the reader's format, or Y-m-d) as ``YYYY-MM-DD``; "" if none."""
    text = _s(value)
    if not text or text.startswith("0000"):
        return ""
    m = _DATE_PARTS.match(text)
    if not m:
        return ""
    a, b, c = m.groups()
    if len(a) == 4:
        y, mo, d = a, b, c
    elif date_format.startswith("mm"):
        mo, d, y = a, b, c
    else:
        d, mo, y = a, b, c
    try:
        return date(int(y), int(mo), int(d)).isoformat()
    except ValueError:
        return ""


def _parse_time(value: Any) -> str:
    text = _s(value)
    m = re.match(r"^(\d{1,2}):(\d{2})", text)
    return f"{int(m.group(1)):02d}:{m.group(2)}" if m else ""


def stored_local(record: dict[str, Any], dkey: str, tkey: str, path: str, ctx: Context) -> str:
    """``YYYY-MM-DD HH:MM`` in the CRM's storage zone, whatever the read path."""
    day = parse_date(record.get(dkey), ctx.date_format)
    clock = _parse_time(record.get(tkey)) or "00:00"
    if not day:
        return ""
    if ctx.flavour == "vtenext" and ctx.diff and path == "retrieve":
        dt = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M") - timedelta(seconds=ctx.diff)
        return dt.strftime("%Y-%m-%d %H:%M")
    return f"{day} {clock}"


def local_to_utc(local: str, zone: tzinfo) -> datetime:
    dt = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=zone)
    return dt.astimezone(UTC)


def utc_to_local(dt: datetime, zone: tzinfo) -> str:
    return dt.astimezone(zone).strftime("%Y-%m-%d %H:%M")


def compact(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def parse_compact(value: str) -> datetime | None:
    digits = re.sub(r"[^0-9]", "", value or "")
    if len(digits) < 8:
        return None
    try:
        return datetime(int(digits[0:4]), int(digits[4:6]), int(digits[6:8]),
                        int(digits[8:10] or 0), int(digits[10:12] or 0),
                        int(digits[12:14] or 0), tzinfo=UTC)
    except ValueError:
        return None


def write_pair(local: str, ctx: Context) -> tuple[str, str]:
    """(date, time) to send for a storage-zone local time (vtenext reads writes in the
    caller's zone, ``diff`` seconds away)."""
    dt = datetime.strptime(local, "%Y-%m-%d %H:%M")
    if ctx.flavour == "vtenext" and ctx.diff:
        dt += timedelta(seconds=ctx.diff)
    return dt.strftime("%Y-%m-%d"), dt.strftime("%H:%M")


def reminder_read_back(minutes: int) -> int:
    """What the CRM answers after we write ``minutes`` (in seconds): a whole hour count
    gains a minute, 0 stays none."""
    if minutes <= 0:
        return 0
    seconds = minutes * 60
    mins = (seconds // 60) % 60
    hours = (seconds // 3600) % 24
    days = seconds // 86400
    return days * 1440 + hours * 60 + (mins or 1)


def reminder_from_crm(minutes: int) -> int:
    """The EAS Reminder for a CRM reminder: undo the API's extra minute (61 → 60)."""
    if minutes > 60 and minutes % 60 == 1:
        return minutes - 1
    return minutes


def reminder_seconds(minutes: str) -> int:
    """``reminder_time`` to write (seconds) for a CRM reminder of ``minutes`` (view
    form): what reads back as it (61 -> 3600, as recorded).  A whole number of hours
    cannot be written through the web service (it turns 0 minutes into 1): 60 becomes
    61, one minute earlier, never none."""
    try:
        n = int(minutes or 0)
    except ValueError:
        return 0
    return reminder_from_crm(n) * 60 if n > 0 else 0


def reminder_desired(data: dict[str, Any], old: dict[str, str]) -> str:
    """The CRM reminder (minutes, view form) for a device's event: the one the CRM has
    while the device's Reminder is still what that one gave it (a 60-minute reminder
    set in the CRM stays 60, a 61 stays 61), else what the device's value reads back
    as."""
    try:
        phone = max(int(data.get("Reminder") or 0), 0)
    except (TypeError, ValueError):
        phone = 0
    if "reminder" in old:
        try:
            current = int(old["reminder"] or 0)
        except ValueError:
            current = 0
        if (reminder_from_crm(current) if current > 0 else 0) == phone:
            return old["reminder"]
    return str(reminder_read_back(phone)) if phone > 0 else ""


_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def decode_entities(text: str) -> str:
    """CRM text with its HTML entities decoded (``&quot;`` ``&amp;`` ``&agrave;``
    ``&euro;`` ``&#39;``): vtiger re-saves the text an ``update`` did not send
    entity-encoded, again on each update (``&amp;amp;``), so decoding repeats until
    nothing changes.  Only complete references (with their ``;``) are decoded; one
    that names nothing stays as it is.  The residual ambiguity: text whose author
    typed an entity literally ("&amp;") reads as the character it names."""
    for _ in range(64):
        if "&" not in text:
            break
        new = _ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
        if new == text:
            break
        text = new
    return text


def _t(value: Any) -> str:
    """A CRM text value as a person typed it (see ``decode_entities``)."""
    return decode_entities(_s(value))


def salutations(describe: dict[str, Any] | None) -> tuple[str, ...]:
    """The salutationtype values of a CRM: its describe's picklist when it lists one,
    else the stock vtiger list (vtiger 8.2's describe types the field as a string and
    lists none; its UI offers only these)."""
    for f in (describe or {}).get("fields") or []:
        if isinstance(f, dict) and f.get("name") == "salutationtype":
            values = [str(p.get("value") or "") for p in
                      (f.get("type") or {}).get("picklistValues") or []
                      if isinstance(p, dict)]
            values = [v for v in values if v.strip() and v.strip() != "--None--"]
            if values:
                return tuple(values)
    return STOCK_SALUTATIONS


def _salutation_key(value: str) -> str:
    return value.strip().rstrip(".").strip().casefold()


def picklist_salutation(title: str, ctx: Context) -> str:
    """The CRM's own spelling of a Title it offers ("dr" -> "Dr."), "" if it offers
    none such."""
    key = _salutation_key(title)
    if not key:
        return ""
    return next((v for v in ctx.salutations if _salutation_key(v) == key), "")


def salutation_desired(title: Any, current: str, ctx: Context) -> str:
    """salutationtype for a device's Title: a value of the CRM's picklist, never one
    outside it (the CRM's UI blanks those on its next save; the Title stays in the
    overlay).  A value the CRM already holds for this Title is left alone; any other
    becomes "" (it no longer says what the phone says)."""
    text = _s(title)
    if not text:
        return ""
    found = picklist_salutation(text, ctx)
    if found:
        return found
    return current if current and current == text else ""


# -- times of tasks and all-day events ---------------------------------------------------------

def task_day(record: dict[str, Any], ctx: Context) -> str:
    """A task's start as a local date (``YYYY-MM-DD``): date_start/time_start are the
    CRM's storage zone (UTC on vtiger, whose UI writes the user's local time as UTC),
    read in the users' zone; a start without a time is a plain date."""
    day = parse_date(record.get("date_start"), ctx.date_format)
    clock = _parse_time(record.get("time_start"))
    if not day or not clock:
        return day
    dt = datetime.strptime(f"{day} {clock}", "%Y-%m-%d %H:%M").replace(tzinfo=ctx.zone)
    return dt.astimezone(ctx.local_zone).date().isoformat()


def task_start_pair(day: str, ctx: Context) -> tuple[str, str]:
    """(date_start, time_start) for a task starting on local ``day``: its local
    midnight in the storage zone (Rome 2027-01-20 -> 2027-01-19 23:00 on vtiger), so
    the CRM's UI shows the day and ``task_day`` reads it back; the Calendar module
    wants a time_start (describe: mandatory)."""
    d = date.fromisoformat(day)
    dt = datetime(d.year, d.month, d.day, tzinfo=ctx.local_zone).astimezone(ctx.zone)
    return dt.strftime("%Y-%m-%d"), dt.strftime("%H:%M")


def all_day_local(first: date, last: date, zone: tzinfo, ctx: Context) -> tuple[str, str]:
    """Storage-zone (start, end) views of an all-day event from ``first`` to ``last``
    in ``zone``.  A CRM with an all-day flag (vtenext) gets the dates as they are
    (00:00-23:59); one without (vtiger, which stores UTC) gets the local midnight and
    23:59 of those days in its storage zone (20 Dec in Rome -> 2026-12-19 23:00 …
    2026-12-20 22:59), which its UI shows as that whole day."""
    if ctx.has_allday:
        return f"{first.isoformat()} 00:00", f"{last.isoformat()} 23:59"
    start = datetime(first.year, first.month, first.day, tzinfo=zone)
    end = datetime(last.year, last.month, last.day, 23, 59, tzinfo=zone)
    return utc_to_local(start, ctx.zone), utc_to_local(end, ctx.zone)


def all_day_span(start: str, end: str, zone: tzinfo, ctx: Context) -> tuple[date, date] | None:
    """(first, last) local day of an event whose storage-zone times are whole days in
    ``zone`` (local 00:00 to 23:59, or to a later 00:00), else None: how an all-day
    event reads back from a CRM without an all-day flag."""
    try:
        s = datetime.strptime(start, "%Y-%m-%d %H:%M").replace(tzinfo=ctx.zone)
        e = datetime.strptime(end or start, "%Y-%m-%d %H:%M").replace(tzinfo=ctx.zone)
    except ValueError:
        return None
    s, e = s.astimezone(zone), e.astimezone(zone)
    if (s.hour, s.minute) != (0, 0):
        return None
    if (e.hour, e.minute) == (23, 59):
        last = e.date()
    elif (e.hour, e.minute) == (0, 0):
        last = e.date() - timedelta(days=1)
    else:
        return None
    return (s.date(), last) if last >= s.date() else None


def _body_text(data: dict[str, Any]) -> str:
    body = data.get("Body")
    if isinstance(body, dict):
        text = str(body.get("Data") or "")
        if str(body.get("Type")) == "2":
            from easync.items._common import html_to_text

            text = html_to_text(text)
        return text.strip()
    return ""


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    if value in (None, "", []):
        data.pop(key, None)
    else:
        data[key] = value


# -- views of CRM records ----------------------------------------------------------------------

def view(module: str, record: dict[str, Any], path: str, ctx: Context) -> dict[str, str]:
    """The normalised mapped fields of a CRM record read through ``path`` ("retrieve"
    for retrieve/create/revise answers, "query" for query and sync)."""
    if module == "Contacts":
        out = {key: _t(record.get(ctx.email2_field if key == "@email2" else key))
               for key, _prop in CONTACT_TEXT}
        out["lastname"] = _t(record.get("lastname"))
        out["birthday"] = parse_date(record.get("birthday"), ctx.date_format)
        out["description"] = _t(record.get("description"))
        return out
    if module == "Events":
        out = {
            "subject": _t(record.get("subject")),
            "location": _t(record.get("location")),
            "description": _t(record.get("description")),
            "start": stored_local(record, "date_start", "time_start", path, ctx),
            "end": stored_local(record, "due_date", "time_end", path, ctx),
            "visibility": _s(record.get("visibility")),
            "reminder": _reminder_view(record.get("reminder_time")),
            "recurringtype": _recurring_view(record.get("recurringtype")),
            "contact_id": _s(record.get("contact_id")),
        }
        if ctx.has_allday:
            out["allday"] = "1" if _s(record.get("is_all_day_event")) in ("1", "on", "yes") \
                else "0"
        if ctx.has_ical_uuid:
            out["ical_uuid"] = _s(record.get("ical_uuid"))
        return out
    if module == "Calendar":
        return {
            "subject": _t(record.get("subject")),
            "description": _t(record.get("description")),
            "start": task_day(record, ctx),
            "due": parse_date(record.get("due_date"), ctx.date_format),
            "taskstatus": _s(record.get("taskstatus")),
            "taskpriority": _s(record.get("taskpriority")),
        }
    raise ValueError(module)


def _reminder_view(value: Any) -> str:
    try:
        n = int(float(_s(value) or 0))
    except ValueError:
        n = 0
    return str(n) if n > 0 else ""


def _recurring_view(value: Any) -> str:
    v = _s(value)
    return "" if v in ("", "--None--", "None") else v


# -- what a device's item would make the CRM hold --------------------------------------------

def desired_view(module: str, data: dict[str, Any], old: dict[str, str] | None, ctx: Context,
                 links: Links | None = None, prev: dict[str, Any] | None = None,
                 known: dict[str, str] | None = None) -> dict[str, str]:
    """The view the CRM should show for this EAS dict (``old``: the snapshot, which
    keeps CRM values the device cannot express, e.g. a task's "In Progress"; ``prev``:
    the item as the mirror held it before this device change; ``known``: an event's CRM
    contact links, see ``wanted_links``)."""
    old = old or {}
    if module == "Contacts":
        out = {key: _s(data.get(prop)) for key, prop in CONTACT_TEXT}
        out["salutationtype"] = salutation_desired(data.get("Title"),
                                                   old.get("salutationtype", ""), ctx)
        for key in ("email", "@email2"):
            # the CRM holds a bare address ("Ann <ann@x.org>" is kept in the overlay)
            out[key] = email_address(out[key]) or out[key]
        if not ctx.email2_field:
            out["@email2"] = ""
        out["lastname"] = _s(data.get("LastName")) or _fallback_lastname(data, old)
        out["birthday"] = _s(data.get("Birthday"))[:10]
        out["description"] = _body_text(data)
        return out
    if module == "Events":
        return _event_desired(data, old, ctx, links or Links(), prev, known)
    if module == "Calendar":
        complete = str(data.get("Complete", "0")) == "1"
        status = old.get("taskstatus", "")
        if complete:
            status = "Completed"
        elif not status or status == "Completed":
            status = "Not Started"
        try:
            importance = int(data.get("Importance", 1))
        except (TypeError, ValueError):
            importance = 1
        start = _s(data.get("StartDate"))[:10]
        due = _s(data.get("DueDate"))[:10]
        # the CRM needs a start and a due date (describe: mandatory; a revise may not
        # empty them): keep the ones it has, else the other one or today
        start = start or old.get("start") or due or ctx.now.astimezone(
            ctx.local_zone).date().isoformat()
        return {
            "subject": _s(data.get("Subject")) or "(no subject)",
            "description": _body_text(data),
            "start": start,
            "due": due or old.get("due") or start,
            "taskstatus": status,
            "taskpriority": TASK_PRIORITY.get(importance, "Medium"),
        }
    raise ValueError(module)


def _fallback_lastname(data: dict[str, Any], old: dict[str, str]) -> str:
    """The CRM's mandatory lastname for a contact the device gave none."""
    if old.get("lastname"):
        return old["lastname"]
    for key in ("FileAs", "FirstName", "CompanyName", "Email1Address", "NickName"):
        if _s(data.get(key)):
            return _s(data.get(key))
    return "(no name)"


def _event_desired(data: dict[str, Any], old: dict[str, str], ctx: Context,
                   links: Links, prev: dict[str, Any] | None = None,
                   known: dict[str, str] | None = None) -> dict[str, str]:
    zone = ctx.zone
    start = parse_compact(_s(data.get("StartTime")))
    end = parse_compact(_s(data.get("EndTime"))) or start
    allday = str(data.get("AllDayEvent", "0")) == "1"
    if start is None:
        start_l, end_l = old.get("start", ""), old.get("end", "")
    elif allday:
        # the days in the event's own zone (the users' when it names none)
        ez = event_zone(data) if data.get("TimezoneId") or data.get("Timezone") \
            else ctx.local_zone
        first = start.astimezone(ez).date()
        last = ((end or start) - timedelta(seconds=1)).astimezone(ez).date()
        start_l, end_l = all_day_local(first, max(last, first), ez, ctx)
    else:
        start_l = utc_to_local(start, zone)
        end_l = utc_to_local(end or start, zone)
    sensitivity = str(data.get("Sensitivity", "0"))
    out = {
        "subject": _s(data.get("Subject")) or "(no subject)",
        "location": _s(data.get("Location")),
        "description": _body_text(data),
        "start": start_l,
        "end": end_l,
        "visibility": _visibility(sensitivity, old),
        "reminder": reminder_desired(data, old),
        "recurringtype": _recurring_desired(data, old, prev),
        "contact_id": primary_link(wanted_links(data, prev, current_links(
            old.get("contact_id", ""), known, links), links), old.get("contact_id", "")),
    }
    if ctx.has_allday:
        out["allday"] = "1" if allday else "0"
    if ctx.has_ical_uuid:
        out["ical_uuid"] = _s(data.get("UID")) or old.get("ical_uuid", "")
    return out


def _visibility(sensitivity: str, old: dict[str, str]) -> str:
    """Private for a private or confidential event; otherwise what the CRM has (Public
    for a new record, or one the CRM held as Private)."""
    if sensitivity in ("2", "3"):
        return "Private"
    if not old or old.get("visibility") == "Private":
        return "Public"
    return old.get("visibility", "")


def _recurrence_type(data: dict[str, Any] | None) -> str:
    rec = (data or {}).get("Recurrence")
    if not isinstance(rec, dict):
        return ""
    try:
        return RECURRING.get(int(rec.get("Type", -1)), "")
    except (TypeError, ValueError):
        return ""


def _recurring_desired(data: dict[str, Any], old: dict[str, str],
                       prev: dict[str, Any] | None) -> str:
    """``recurringtype`` for a device's event: the type of its Recurrence; with none,
    "" when the device has just removed one, else what the CRM has (a CRM series is
    one record per occurrence, each ``Weekly``: an edit of one occurrence on a phone,
    which shows it as a single event, leaves its type alone)."""
    rtype = _recurrence_type(data)
    if rtype or _recurrence_type(prev):
        return rtype
    return old.get("recurringtype", "")


def attendee_addresses(data: dict[str, Any] | None) -> list[str]:
    """The bare addresses of an event's attendees, in order, without repeats."""
    out: list[str] = []
    for a in (data or {}).get("Attendees") or []:
        addr = email_address(a.get("Email")) if isinstance(a, dict) else ""
        if addr and addr not in out:
            out.append(addr)
    return out


def current_links(contact_id: str, known: dict[str, str] | None, links: Links
                  ) -> dict[str, str]:
    """The event's CRM contact links as easync knows them (contact id -> the attendee
    address each stands for): ``known`` (the mirror's), with the snapshot's
    ``contact_id`` added when missing (with its contact's address)."""
    out = dict(known or {})
    if contact_id and contact_id not in out:
        out[contact_id] = (links.by_id.get(contact_id) or ("", ""))[0]
    return out


def wanted_links(data: dict[str, Any], prev: dict[str, Any] | None,
                 known: dict[str, str], links: Links) -> dict[str, str]:
    """The CRM contacts a device's event should be linked to (contact id -> the
    attendee address the link stands for), in order.

    A link stays with its contact while that attendee stays: it is dropped only when
    the device removed the attendee it stands for (its address as it was when the link
    was made, or one of the contact's addresses now).  A phone that changed a contact's
    e-mail and still sends the meeting with the old address keeps the link on that
    contact, even if another contact has the old address.  A link the phone never had
    as an attendee (the CRM UI linked several contacts) is kept.  Attendees that are
    the user's contacts and are not already standing for a link are linked too."""
    now = attendee_addresses(data)
    before = set(attendee_addresses(prev)) if prev is not None else set()
    out: dict[str, str] = {}
    claimed: set[str] = set()
    for cid, addr in known.items():
        mine = {a for a in now if links.by_email.get(a) == cid}
        if addr in now:
            mine.add(addr)
        removed = addr in before and not mine
        if removed:
            continue
        out[cid] = addr
        claimed |= mine
    for addr in now:
        owner = links.by_email.get(addr)
        if addr in claimed or owner is None or owner in out:
            continue
        out[owner] = addr
        claimed.add(addr)
    return out


def primary_link(wanted: dict[str, str], current: str) -> str:
    """The one contact the CRM's ``contact_id`` names: the current one while it is
    wanted, else the first wanted."""
    if current and current in wanted:
        return current
    return next(iter(wanted), "")


def contact_list(links: dict[str, str]) -> str:
    """vtiger's ``contactidlist`` for these links: the bare record numbers, ';'-joined
    (what the CRM's own Edit view posts, e.g. ``12;13``)."""
    return ";".join(cid.split("x", 1)[-1] for cid in links)


def invitees(data: dict[str, Any]) -> list[dict[str, Any]]:
    """vtenext ``invitees`` for the event's attendees."""
    out = []
    for a in data.get("Attendees") or []:
        if not isinstance(a, dict) or not email_address(a.get("Email")):
            continue
        try:
            status = int(a.get("AttendeeStatus") or 0)
        except (TypeError, ValueError):
            status = 0
        out.append({"email": email_address(a.get("Email")),
                    "partecipation": PARTECIPATION.get(status, 0)})
    return out


def attendee_key(data: dict[str, Any] | None) -> list[tuple[str, int]]:
    return sorted((i["email"], i["partecipation"]) for i in invitees(data or {}))


# -- writing to the CRM ------------------------------------------------------------------------

def element(module: str, want: dict[str, str], keys: set[str] | None, ctx: Context
            ) -> dict[str, Any]:
    """CRM fields for the view units ``keys`` (None: all) of ``want``."""
    out: dict[str, Any] = {}
    every = keys is None
    keys = set(want) if keys is None else keys
    if module == "Contacts":
        for key, _prop in CONTACT_TEXT:
            if key in keys:
                out[ctx.email2_field if key == "@email2" else key] = want[key]
        for key in ("lastname", "birthday", "description"):
            if key in keys:
                out[key] = want[key]
        return out
    if module == "Events":
        for key in ("subject", "location", "description", "visibility", "contact_id"):
            if key in keys:
                out[key] = want[key]
        if "recurringtype" in keys:
            out["recurringtype"] = want["recurringtype"] or "--None--"
        if keys & {"start", "end"} and want.get("start"):
            out["date_start"], out["time_start"] = write_pair(want["start"], ctx)
            out["due_date"], out["time_end"] = write_pair(want["end"] or want["start"], ctx)
            minutes = max(0, int((datetime.strptime(want["end"] or want["start"],
                                                    "%Y-%m-%d %H:%M")
                                  - datetime.strptime(want["start"], "%Y-%m-%d %H:%M")
                                  ).total_seconds() // 60))
            out["duration_hours"] = str(minutes // 60)
            out["duration_minutes"] = str(minutes % 60)
        if "allday" in keys and "allday" in want:
            out["is_all_day_event"] = want["allday"]
        if "ical_uuid" in keys and "ical_uuid" in want:
            out["ical_uuid"] = want["ical_uuid"]
        # the CRM drops a reminder a write does not repeat: always send it (seconds)
        out["reminder_time"] = str(reminder_seconds(want.get("reminder", "")))
        if every:
            out.setdefault("eventstatus", "Planned")
            out.setdefault("activitytype", "Meeting")
        return out
    if module == "Calendar":
        for key in ("subject", "description", "taskstatus", "taskpriority"):
            if key in keys:
                out[key] = want[key]
        if "start" in keys and want.get("start"):
            out["date_start"], out["time_start"] = task_start_pair(want["start"], ctx)
        if "due" in keys and want.get("due"):
            out["due_date"] = want["due"]
        if every:
            # without it vtiger makes the record an Events one (recorded)
            out["activitytype"] = "Task"
        return out
    raise ValueError(module)


# -- reading from the CRM --------------------------------------------------------------------

def merge(module: str, data: dict[str, Any] | None, old: dict[str, str] | None,
          new: dict[str, str], ctx: Context, links: Links | None = None,
          crm_id: str = "") -> dict[str, Any]:
    """The item's EAS dict after the CRM record changed from view ``old`` to ``new``:
    only the units that changed are written over ``data`` (all of them for a record
    seen for the first time)."""
    out = dict(data or {})
    changed = {k for k in new if old is None or old.get(k) != new.get(k)}
    if not changed:
        return out
    if module == "Contacts":
        for key, prop in CONTACT_TEXT:
            if key in changed and key != "salutationtype":
                _set(out, prop, new[key])
        if "salutationtype" in changed:
            _merge_salutation(out, new["salutationtype"], ctx)
        if "lastname" in changed:
            _set(out, "LastName", new["lastname"])
        if "birthday" in changed:
            _set(out, "Birthday", new["birthday"])
        if "description" in changed:
            _set(out, "Body", {"Type": 1, "Data": new["description"]}
                 if new["description"] else None)
        return out
    if module == "Events":
        return _merge_event(out, old, new, changed, ctx, links or Links(), crm_id)
    if module == "Calendar":
        if "subject" in changed:
            _set(out, "Subject", new["subject"])
        if "description" in changed:
            _set(out, "Body", {"Type": 1, "Data": new["description"]}
                 if new["description"] else None)
        zone = ctx.local_zone
        for key, local_key, utc_key in (("start", "StartDate", "UtcStartDate"),
                                        ("due", "DueDate", "UtcDueDate")):
            if key in changed:
                if new[key]:
                    day = date.fromisoformat(new[key])
                    out[local_key] = f"{day.isoformat()}T00:00:00.000Z"
                    utc = datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)
                    out[utc_key] = utc.strftime("%Y-%m-%dT%H:%M:%S.000Z")
                else:
                    out.pop(local_key, None)
                    out.pop(utc_key, None)
        if "taskstatus" in changed:
            done = new["taskstatus"].lower() == "completed"
            out["Complete"] = 1 if done else 0
            if done:
                out.setdefault("DateCompleted", ctx.now.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            else:
                out.pop("DateCompleted", None)
        if "taskpriority" in changed:
            out["Importance"] = TASK_PRIORITY_BACK.get(new["taskpriority"].lower(), 1)
        out.setdefault("Complete", 0)
        return out
    raise ValueError(module)


def _merge_salutation(out: dict[str, Any], value: str, ctx: Context) -> None:
    """The Title after the CRM's salutationtype changed to ``value``: a value reaches
    the phone; a blank one removes the Title only when the CRM could have held it (a
    picklist value): a Title outside the picklist lives in the overlay, and the CRM's
    UI blanks such a value on any save of the contact."""
    if value:
        out["Title"] = value
    elif picklist_salutation(_s(out.get("Title")), ctx):
        out.pop("Title", None)


def _merge_event(out: dict[str, Any], old: dict[str, str] | None, new: dict[str, str],
                 changed: set[str], ctx: Context, links: Links, crm_id: str
                 ) -> dict[str, Any]:
    zone = ctx.zone
    if old is None:
        out.setdefault("TimezoneId", ctx.local_zone_name or ctx.zone_name)
        out.setdefault("BusyStatus", 2)
        out.setdefault("MeetingStatus", 0)
        out.setdefault("Sensitivity", 0)
        if not new.get("ical_uuid"):
            out.setdefault("UID", str(uuid.uuid5(UID_NAMESPACE, crm_id)).upper()
                           if crm_id else uuid.uuid4().hex.upper())
    for key, prop in (("subject", "Subject"), ("location", "Location")):
        if key in changed:
            _set(out, prop, new[key])
    if "description" in changed:
        _set(out, "Body", {"Type": 1, "Data": new["description"]}
             if new["description"] else None)
    before_start = parse_compact(_s(out.get("StartTime")))
    if changed & {"start", "end", "allday"} and new.get("start"):
        # all day: the CRM's flag says so (its dates are the days), or, without one,
        # its times are whole days of the event's zone (the users' for a new record)
        ez = event_zone(out) if out.get("TimezoneId") or out.get("Timezone") \
            else ctx.local_zone
        span: tuple[date, date] | None
        if "allday" in new:
            first = date.fromisoformat(new["start"][:10])
            last = date.fromisoformat((new["end"] or new["start"])[:10])
            span = (first, max(first, last)) if new["allday"] == "1" else None
        else:
            span = all_day_span(new["start"], new["end"], ez, ctx)
        if span is not None:
            first, last = span
            nxt = last + timedelta(days=1)
            out["AllDayEvent"] = 1
            out["StartTime"] = compact(datetime(first.year, first.month, first.day,
                                                tzinfo=ez))
            out["EndTime"] = compact(datetime(nxt.year, nxt.month, nxt.day, tzinfo=ez))
        else:
            out["AllDayEvent"] = 0
            out["StartTime"] = compact(local_to_utc(new["start"], zone))
            out["EndTime"] = compact(local_to_utc(new["end"] or new["start"], zone))
    if "visibility" in changed:
        out["Sensitivity"] = 2 if new["visibility"].lower() == "private" else 0
    if "reminder" in changed:
        if new["reminder"]:
            out["Reminder"] = reminder_from_crm(int(new["reminder"]))
        else:
            out.pop("Reminder", None)
    # ``recurringtype`` never makes nor ends a series on the phones: a series made in
    # the CRM's UI is one record per occurrence (each says Weekly, none holds the
    # pattern), so each is a single event; a phone's series is one record whose
    # pattern only easync keeps, and a CRM UI save of any field posts "--None--".
    if old is not None and old.get("start") and "start" in changed and new.get("start"):
        _move_series(out, before_start, ctx)
    if "ical_uuid" in changed and new.get("ical_uuid"):
        out["UID"] = new["ical_uuid"]
    if "contact_id" in changed and new["contact_id"]:
        found = links.by_id.get(new["contact_id"])
        if found and found[0]:
            addr, name = found
            attendees = [a for a in out.get("Attendees") or [] if isinstance(a, dict)]
            if addr not in {email_address(a.get("Email")) for a in attendees}:
                attendees.append({"Email": addr, "Name": name or addr, "AttendeeType": 1})
                out["Attendees"] = attendees
    return out


def _move_series(out: dict[str, Any], before: datetime | None, ctx: Context) -> None:
    """A phone's series whose start the CRM moved moves whole: a pattern day that was
    the old start's (weekday, day of month, week, month) becomes the new start's, and
    each exception moves by the same time (it names an occurrence of the series)."""
    rec = out.get("Recurrence")
    after = parse_compact(_s(out.get("StartTime")))
    if not isinstance(rec, dict) or before is None or after is None or before == after:
        return
    from easync.items._common import fill_recurrence

    zone = event_zone(out) if out.get("TimezoneId") or out.get("Timezone") else ctx.zone
    keys = ("DayOfWeek", "DayOfMonth", "WeekOfMonth", "MonthOfYear")
    try:
        natural: dict[str, Any] = {"Type": int(rec.get("Type", -1))}
        fill_recurrence(natural, before.astimezone(zone))
        moved: dict[str, Any] = {"Type": natural["Type"]}
        fill_recurrence(moved, after.astimezone(zone))
    except (TypeError, ValueError):
        return
    fresh = dict(rec)
    for key in keys:
        if key in natural and str(rec.get(key)) == str(natural[key]):
            fresh[key] = moved[key]
    out["Recurrence"] = fresh
    shift = after - before
    exceptions = out.get("Exceptions")
    if isinstance(exceptions, list):
        kept = []
        for exc in exceptions:
            when = parse_compact(_s(exc.get("ExceptionStartTime"))) \
                if isinstance(exc, dict) else None
            if when is None:
                kept.append(exc)
                continue
            kept.append({**exc, "ExceptionStartTime": compact(when + shift)})
        out["Exceptions"] = kept


def contact_name(data: dict[str, Any]) -> str:
    parts = [_s(data.get("FirstName")), _s(data.get("LastName"))]
    return " ".join(p for p in parts if p) or _s(data.get("FileAs"))
