"""Contacts, calendar events and tasks: the canonical item dict and its EAS forms.

The canonical item dict (what stores keep, what ``Item.data`` holds) is JSON-able
and keyed by the MS-AS property names, the same for every protocol version:

Contacts (MS-ASCNTC + Contacts2 names, e.g. "FirstName", "Email1Address",
"BusinessAddressStreet", "NickName", "IMAddress"):
  * plain properties: str
  * "Birthday", "Anniversary": "YYYY-MM-DD" (a calendar date, never an instant)
  * "Categories", "Children": list[str]
  * "Picture": base64 str
  * "Body": {"Type": 1|2|3, "Data": str}

Calendar (MS-ASCAL names):
  * "StartTime", "EndTime", "DtStamp", "AppointmentReplyTime": compact UTC
    "YYYYMMDDTHHMMSSZ"
  * "Timezone": the device's base64 blob, kept verbatim; "TimezoneId": the IANA
    name we mapped it to (or chose when the item came from elsewhere), may be absent.
    When both are present and disagree, TimezoneId wins on output; with TimezoneId
    only, the blob is generated for the event's year; with neither, UTC is sent
  * "ClientUid": what a 16.x client sent in Calendar:ClientUid (NUL stripped), for
    de-duplicating resent Adds; never sent to clients
  * "LocationDetails": 16.x AirSyncBase:Location parts other than DisplayName
    ({"City": ..., "Latitude": ...}, strings); "Location" is the display name
  * "AllDayEvent", "BusyStatus", "Sensitivity", "MeetingStatus", "Reminder",
    "ResponseType", "ResponseRequested", "DisallowNewTimeProposal": int
  * "Subject", "Location", "UID", "OrganizerName", "OrganizerEmail", ...: str
  * "Categories": list[str]
  * "Attendees": list of {"Email": str, "Name": str, "AttendeeStatus": int,
    "AttendeeType": int} (status/type absent when unknown)
  * "Recurrence": {"Type": int, "Interval": int, "Until": compact str,
    "Occurrences": int, "DayOfWeek": int, "DayOfMonth": int, "WeekOfMonth": int,
    "MonthOfYear": int, "CalendarType": int, "IsLeapMonth": int,
    "FirstDayOfWeek": int} (only the keys that apply)
  * "Exceptions": list of {"ExceptionStartTime": compact str (the original start),
    "Deleted": 1} or {"ExceptionStartTime": ..., <overridden properties>}
  * "Body": {"Type": ..., "Data": ...}

Tasks (MS-ASTASK names):
  * "DueDate", "UtcDueDate", "StartDate", "UtcStartDate", "DateCompleted",
    "ReminderTime": EAS dateTime "YYYY-MM-DDTHH:MM:SS.000Z"
  * "Complete", "Importance", "ReminderSet", "Sensitivity": int
  * "Subject": str, "Categories": list[str], "Body": {...}
  * "Recurrence": {"Type", "Start", "Until", "Occurrences", "Interval",
    "DayOfWeek", "DayOfMonth", "WeekOfMonth", "MonthOfYear", "Regenerate",
    "DeadOccur", ...} (dates as EAS dateTime strings)
  * "OrdinalDate": EAS dateTime, "SubOrdinalDate": str

``easync.items.convert.from_eas`` returns what a client sent: a property the client
sent *empty* appears as "" ([] for lists) so that ``merge_change`` can tell "delete"
from "not sent"; ``merge_change(cls, {}, data, None)`` removes those markers.
The conversions live in ``easync.items.convert`` (contacts: ``contact``, events:
``event``, tasks: ``task``) and ``easync.items.tz`` (timezone blobs).
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime
from typing import Any

# Both patterns run in time linear in the length of the value (issue #10): ``_ADDR``
# can only start at a "<" and stops at the next "<", ">" or space; ``_BARE`` may only
# start where a run of address characters starts (the lookbehind), so its
# backtracking stays inside one run. Without that lookbehind the search retried from
# every position of a long run and was quadratic: a 1 MB value took minutes.
_ADDR = re.compile(r"<([^<>@\s]+@[^<>\s]+)>")
_BARE = re.compile(r"(?<![^\s<>\"',;])([^\s<>\"',;]+@[^\s<>\"',;]+)")


def email_address(value: str | None) -> str | None:
    """The bare, lower-cased address in an RFC 822-style value, or None.

    No length cap is applied here: the parse is linear, and a display-name form
    (``"Name" <addr>``, RFC 5322 section 3.4) may legitimately be longer than the
    254 characters RFC 5321 section 4.5.3.1 allows for the address itself.
    """
    if not value:
        return None
    m = _ADDR.search(value) or _BARE.search(value)
    return m.group(1).lower() if m else None


def parse_compact(value: str) -> datetime:
    """Parse a compact ("20261122T101500Z") or extended EAS date-time as UTC."""
    v = value.strip().rstrip("\x00")
    digits = re.sub(r"[^0-9]", "", v)
    if len(digits) < 8:
        raise ValueError(f"not a date: {value!r}")
    year, month, day = int(digits[0:4]), int(digits[4:6]), int(digits[6:8])
    hour = int(digits[8:10] or 0)
    minute = int(digits[10:12] or 0)
    second = int(digits[12:14] or 0)
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def _ts(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return calendar.timegm(parse_compact(value).timetuple())
    except (ValueError, OverflowError):
        return None


_DAY = 86400
# The longest a step of each Recurrence Type (MS-ASCAL 2.2.2.37: 0 daily, 1 weekly,
# 2/3 monthly, 5/6 yearly) can take, in days: a month that lacks the 29th-31st and a
# 29 February are skipped by some writers, so those steps count double / four times.
_STEP_DAYS = {0: 1, 1: 7, 2: 31, 3: 31, 5: 366, 6: 366}
_LAST_TS = 253402300799            # 9999-12-31T23:59:59Z


def _int_or(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def series_end(data: dict[str, Any]) -> int | None:
    """An upper bound of when a recurring event's last occurrence ends (Unix seconds),
    or None when the series has no end (neither Until nor Occurrences) or it cannot be
    told.  Never earlier than the truth: a window that leaves the series out is sure
    the series is over (occurrences moved by an exception count too)."""
    rec = data.get("Recurrence")
    if not isinstance(rec, dict):
        return None
    start = _ts(data.get("StartTime"))
    end = _ts(data.get("EndTime"))
    if start is None:
        return None
    duration = max(0, (end or start) - start)
    until = _ts(rec.get("Until")) if rec.get("Until") else None
    count = _int_or(rec.get("Occurrences"), 0)
    if until is not None:
        # Until is the day of the last occurrence, written in any zone (or at midnight
        # of that day): the occurrence starts within a day and a half of it
        last_start = max(until, start) + _DAY + _DAY // 2
    elif count > 0:
        step = _STEP_DAYS.get(_int_or(rec.get("Type"), -1))
        if step is None:
            return None
        interval = max(1, _int_or(rec.get("Interval"), 1))
        if step == 31 and _int_or(rec.get("DayOfMonth"), 0) > 28:
            step *= 2
        if step == 366 and _int_or(rec.get("MonthOfYear"), 0) == 2 and \
                _int_or(rec.get("DayOfMonth"), 0) == 29:
            step *= 4
        span = count * interval * step * _DAY
        if span > _LAST_TS:
            return None
        last_start = start + span + _DAY
    else:
        return None
    last_end = last_start + duration
    for exc in data.get("Exceptions") or []:
        if isinstance(exc, dict) and not exc.get("Deleted"):
            moved = _ts(exc.get("EndTime")) or _ts(exc.get("StartTime"))
            if moved is not None:
                last_end = max(last_end, moved)
    return last_end if last_end <= _LAST_TS else None


def index_fields(cls: str, data: dict[str, Any]) -> dict[str, Any]:
    """The columns a store indexes for an item.

    Returns uid (str|None), start and end (Unix seconds or None; a recurring event
    ends with its last occurrence — ``series_end`` — or has end None, meaning
    'open', when unbounded), complete (0/1 for tasks, else None) and emails
    (the sorted bare addresses: a contact's three addresses, an event's attendees).
    """
    out: dict[str, Any] = {"uid": None, "start": None, "end": None, "complete": None,
                           "emails": []}
    if cls == "Contacts":
        emails = {email_address(data.get(k)) for k in
                  ("Email1Address", "Email2Address", "Email3Address")}
        out["emails"] = sorted(e for e in emails if e)
    elif cls == "Calendar":
        out["uid"] = data.get("UID") or None
        out["start"] = _ts(data.get("StartTime"))
        out["end"] = series_end(data) if data.get("Recurrence") else \
            _ts(data.get("EndTime"))
        emails = {email_address(a.get("Email")) for a in data.get("Attendees") or []}
        out["emails"] = sorted(e for e in emails if e)
    elif cls == "Tasks":
        out["complete"] = 1 if str(data.get("Complete", "0")) == "1" else 0
        out["start"] = _ts(data.get("UtcStartDate") or data.get("StartDate"))
        out["end"] = _ts(data.get("UtcDueDate") or data.get("DueDate"))
    return out
