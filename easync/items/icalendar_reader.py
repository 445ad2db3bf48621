"""iCalendar files read into canonical event and task dicts (``easync.items``).

``parse_icalendar`` reads an iCalendar file with the ``icalendar`` package (this
module's name keeps clear of it): its VEVENTs become canonical event dicts (a series
with its exceptions from RECURRENCE-ID overrides), its VTODOs canonical task dicts,
with warnings about what could not be kept.  Times without a zone are read in
``default_tz``, else the file's X-WR-TIMEZONE, else UTC.  Used by ``easync.importer``
(``easync-admin import``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from easync.items import email_address
from easync.items._common import fmt_compact, fmt_extended


class ICalendarError(ValueError):
    """A text that cannot be read as iCalendar at all (or an unknown default zone)."""


_WEEKDAYS = {"SU": 1, "MO": 2, "TU": 4, "WE": 8, "TH": 16, "FR": 32, "SA": 64}
_WKST = {"SU": 0, "MO": 1, "TU": 2, "WE": 3, "TH": 4, "FR": 5, "SA": 6}
_RRULE_KEYS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH",
               "WKST", "BYSETPOS"}
_PARTSTAT = {"NEEDS-ACTION": 5, "ACCEPTED": 3, "DECLINED": 4, "TENTATIVE": 2,
             "DELEGATED": 0}
_RESPONSE = {"NEEDS-ACTION": 5, "ACCEPTED": 3, "DECLINED": 4, "TENTATIVE": 2}
_ROLE = {"REQ-PARTICIPANT": 1, "CHAIR": 1, "OPT-PARTICIPANT": 2, "NON-PARTICIPANT": 2}
_CLASS = {"PUBLIC": 0, "PRIVATE": 2, "CONFIDENTIAL": 3}
_CDO_BUSY = {"FREE": 0, "TENTATIVE": 1, "BUSY": 2, "OOF": 3, "WORKINGELSEWHERE": 4}


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _text(component: Any, name: str) -> str:
    value = _first(component.get(name))
    return str(value).strip() if value is not None else ""


def _categories(component: Any) -> list[str]:
    out: list[str] = []
    values = component.get("CATEGORIES")
    for prop in values if isinstance(values, list) else [values] if values else []:
        for cat in getattr(prop, "cats", None) or [prop]:
            c = str(cat).strip()
            if c and c not in out:
                out.append(c)
    return out


def _zone_name(tz: tzinfo | None) -> str | None:
    """The IANA name of a zone; None for one built from a VTIMEZONE with another name."""
    if isinstance(tz, ZoneInfo):
        return tz.key
    if isinstance(tz, timezone) and tz.utcoffset(None) == timedelta(0):
        return "UTC"
    return None


def load_zone(name: str | None) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


class _Calendar:
    """The conversion of one iCalendar file."""

    def __init__(self, default_tz: ZoneInfo, user_email: str | None) -> None:
        self.tz = default_tz
        self.user_email = (user_email or "").lower() or None
        self.warnings: list[str] = []

    # ---------------------------------------------------------------- times

    def prop_dt(self, component: Any, name: str, what: str) -> date | datetime | None:
        """The date or (aware) datetime of a property; a floating time or unknown TZID
        is taken in the default zone."""
        prop = _first(component.get(name))
        if prop is None:
            return None
        return self.aware(getattr(prop, "dt", prop), getattr(prop, "params", {}), what)

    def aware(self, value: Any, params: Any, what: str) -> date | datetime:
        if isinstance(value, datetime) and value.tzinfo is None:
            tzid = (params or {}).get("TZID")
            if tzid:
                self.warnings.append(f"{what}: unknown time zone {tzid!r}, times taken "
                                     f"in {self.tz.key}")
            return value.replace(tzinfo=self.tz)
        return value

    def utc(self, value: date | datetime) -> datetime:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.combine(value, time(0), self.tz).astimezone(UTC)

    def zone_of(self, value: date | datetime) -> str | None:
        if isinstance(value, datetime):
            return _zone_name(value.tzinfo)
        return self.tz.key

    @staticmethod
    def local(value: date | datetime) -> datetime:
        if isinstance(value, datetime):
            return value.replace(tzinfo=None)
        return datetime.combine(value, time(0))

    def reminder_minutes(self, component: Any, start: datetime | None,
                         end: datetime | None) -> int | None:
        """Minutes before the start of the first VALARM that fires before the start."""
        for alarm in component.walk("VALARM"):
            trigger = alarm.get("TRIGGER")
            if trigger is None:
                continue
            value = trigger.dt
            if isinstance(value, timedelta):
                anchor = end if str(trigger.params.get("RELATED", "")).upper() == "END" \
                    else start
                if anchor is None or start is None:
                    continue
                fire = anchor + value
            elif isinstance(value, datetime) and start is not None:
                fire = self.utc(self.aware(value, trigger.params, "VALARM"))
            else:
                continue
            minutes = int((start - fire).total_seconds() // 60)
            if minutes >= 0:
                return minutes
        return None

    # ---------------------------------------------------------------- recurrence

    def recurrence(self, rrule: Any, start: date | datetime, what: str
                   ) -> dict[str, Any] | None:
        """An RRULE → canonical Recurrence; None (and a warning) when EAS cannot say it."""
        rule = {k.upper(): v for k, v in dict(rrule).items()}
        text = rrule.to_ical().decode("ascii", "replace")

        def refuse(why: str) -> None:
            self.warnings.append(f"{what}: RRULE {text} cannot be expressed in "
                                 f"ActiveSync ({why}); imported without recurrence")

        unknown = set(rule) - _RRULE_KEYS
        if unknown:
            refuse(", ".join(sorted(unknown)) + " not supported")
            return None
        freq = str(_first(rule.get("FREQ")) or "").upper()
        interval = int(_first(rule.get("INTERVAL")) or 1)
        byday = [str(d).upper() for d in rule.get("BYDAY", [])]
        bymonthday = [int(d) for d in rule.get("BYMONTHDAY", [])]
        bymonth = [int(m) for m in rule.get("BYMONTH", [])]
        setpos = [int(s) for s in rule.get("BYSETPOS", [])]
        local = self.local(start)
        rec: dict[str, Any] = {}

        days: list[tuple[int | None, int]] = []   # (ordinal, weekday bit)
        for d in byday:
            m = re.match(r"^([+-]?\d{1,2})?(SU|MO|TU|WE|TH|FR|SA)$", d)
            if not m:
                refuse(f"BYDAY {d}")
                return None
            days.append((int(m.group(1)) if m.group(1) else None, _WEEKDAYS[m.group(2)]))
        mask = sum({bit for _n, bit in days})
        ordinals = {n for n, _bit in days}
        if len(setpos) > 1:
            refuse("more than one BYSETPOS")
            return None
        if setpos:
            if ordinals != {None}:
                refuse("BYSETPOS with ordinal BYDAY")
                return None
            ordinals = {setpos[0]}
        if len(ordinals) > 1:
            refuse("BYDAY with different ordinals")
            return None
        nth = next(iter(ordinals), None)
        if nth is not None and not (1 <= nth <= 4 or nth == -1):
            refuse(f"occurrence {nth} in the month")
            return None
        week = 5 if nth == -1 else nth
        if len(bymonthday) > 1 or len(bymonth) > 1:
            refuse("several BYMONTHDAY or BYMONTH values")
            return None

        if freq == "DAILY":
            if bymonthday or bymonth or nth is not None:
                refuse("daily with BYMONTHDAY, BYMONTH or an ordinal")
                return None
            if mask:
                if interval != 1:
                    refuse("every N days on given weekdays")
                    return None
                rec.update(Type=1, DayOfWeek=mask)       # e.g. every weekday
            else:
                rec["Type"] = 0
        elif freq == "WEEKLY":
            if bymonthday or bymonth or nth is not None:
                refuse("weekly with BYMONTHDAY, BYMONTH or an ordinal")
                return None
            rec.update(Type=1, DayOfWeek=mask or 1 << ((local.weekday() + 1) % 7))
        elif freq in ("MONTHLY", "YEARLY"):
            yearly = freq == "YEARLY"
            if bymonth and not yearly:
                refuse("monthly with BYMONTH")
                return None
            if bymonthday and mask:
                refuse("both BYMONTHDAY and BYDAY")
                return None
            if mask:
                if week is None:
                    refuse("BYDAY without an occurrence in the month")
                    return None
                rec.update(Type=6 if yearly else 3, WeekOfMonth=week, DayOfWeek=mask)
            elif bymonthday and bymonthday[0] == -1 and not yearly:
                rec.update(Type=3, WeekOfMonth=5, DayOfWeek=127)   # the last day
            elif bymonthday and not 1 <= bymonthday[0] <= 31:
                refuse(f"BYMONTHDAY {bymonthday[0]}")
                return None
            else:
                rec.update(Type=5 if yearly else 2,
                           DayOfMonth=bymonthday[0] if bymonthday else local.day)
            if yearly:
                rec["MonthOfYear"] = bymonth[0] if bymonth else local.month
        else:
            refuse(f"FREQ {freq or 'missing'}")
            return None

        rec["Interval"] = interval
        if rule.get("COUNT"):
            rec["Occurrences"] = int(_first(rule["COUNT"]))
        if rule.get("UNTIL"):
            until = _first(rule["UNTIL"])
            if isinstance(start, datetime):
                if not isinstance(until, datetime):
                    # A date UNTIL on a timed event: the last start on that day.
                    until = datetime.combine(until, start.timetz())
                elif until.tzinfo is None:
                    until = until.replace(tzinfo=start.tzinfo)   # floating: DTSTART's zone
            rec["Until"] = self.utc(self.aware(until, {}, what))
        if rule.get("WKST"):
            rec["FirstDayOfWeek"] = _WKST.get(str(_first(rule["WKST"])).upper(), 0)
        return rec

    # ---------------------------------------------------------------- events

    def attendees(self, component: Any) -> tuple[list[dict[str, Any]], int | None]:
        """(Attendees, the user's own ResponseType if the user is one of them)."""
        out: list[dict[str, Any]] = []
        own = None
        values = component.get("ATTENDEE")
        for att in values if isinstance(values, list) else [values] if values else []:
            addr = email_address(str(att).removeprefix("mailto:").removeprefix("MAILTO:"))
            if not addr:
                continue
            params = getattr(att, "params", {})
            entry: dict[str, Any] = {"Email": addr, "Name": str(params.get("CN") or addr)}
            partstat = str(params.get("PARTSTAT", "")).upper()
            if partstat in _PARTSTAT:
                entry["AttendeeStatus"] = _PARTSTAT[partstat]
            cutype = str(params.get("CUTYPE", "")).upper()
            role = str(params.get("ROLE", "REQ-PARTICIPANT")).upper()
            if cutype in ("RESOURCE", "ROOM"):
                entry["AttendeeType"] = 3
            elif role in _ROLE:
                entry["AttendeeType"] = _ROLE[role]
            if self.user_email and addr == self.user_email and partstat in _RESPONSE:
                own = _RESPONSE[partstat]
            out.append(entry)
        return out, own

    def event_fields(self, ev: Any, what: str) -> dict[str, Any]:
        """The properties a VEVENT (master or override) sets, without recurrence."""
        data: dict[str, Any] = {}
        start = self.prop_dt(ev, "DTSTART", what)
        if start is None:
            raise ValueError("no DTSTART")
        end = self.prop_dt(ev, "DTEND", what)
        if end is None:
            duration = _first(ev.get("DURATION"))
            if duration is not None and isinstance(duration.dt, timedelta):
                end = start + duration.dt
            elif isinstance(start, datetime):
                end = start
            else:
                end = start + timedelta(days=1)
        all_day = not isinstance(start, datetime)
        if all_day and isinstance(end, datetime):
            end = end.date()
        start_utc, end_utc = self.utc(start), self.utc(end)
        end_utc = max(end_utc, start_utc)
        data["StartTime"] = fmt_compact(start_utc)
        data["EndTime"] = fmt_compact(end_utc)
        data["AllDayEvent"] = 1 if all_day else 0
        data["_start"] = start
        for key, name in (("Subject", "SUMMARY"), ("Location", "LOCATION")):
            if _text(ev, name):
                data[key] = _text(ev, name)
        if _text(ev, "DESCRIPTION"):
            data["Body"] = {"Type": 1, "Data": _text(ev, "DESCRIPTION")}
        cats = _categories(ev)
        if cats:
            data["Categories"] = cats
        cls = _text(ev, "CLASS").upper()
        if cls in _CLASS:
            data["Sensitivity"] = _CLASS[cls]
        busy = _text(ev, "X-MICROSOFT-CDO-BUSYSTATUS").upper()
        if busy in _CDO_BUSY:
            data["BusyStatus"] = _CDO_BUSY[busy]
        elif _text(ev, "TRANSP").upper() == "TRANSPARENT":
            data["BusyStatus"] = 0
        else:
            data["BusyStatus"] = 1 if _text(ev, "STATUS").upper() == "TENTATIVE" else 2
        minutes = self.reminder_minutes(ev, start_utc, end_utc)
        if minutes is not None:
            data["Reminder"] = minutes
        attendees, own = self.attendees(ev)
        if attendees:
            data["Attendees"] = attendees
        organizer = _first(ev.get("ORGANIZER"))
        org_email = email_address(str(organizer).removeprefix("mailto:")) if organizer else None
        if org_email:
            data["OrganizerEmail"] = org_email
            data["OrganizerName"] = str(organizer.params.get("CN") or org_email)
        cancelled = _text(ev, "STATUS").upper() == "CANCELLED"
        if attendees or org_email:
            mine = org_email is None or org_email == self.user_email
            data["MeetingStatus"] = (1 if mine else 3) + (4 if cancelled else 0)
            data["ResponseType"] = 1 if mine else (own if own is not None else 5)
        else:
            data["MeetingStatus"] = 0
        stamp = self.prop_dt(ev, "DTSTAMP", what)
        if isinstance(stamp, datetime):
            data["DtStamp"] = fmt_compact(self.utc(stamp))
        return data

    def event(self, master: Any, overrides: list[Any]) -> dict[str, Any]:
        uid = _text(master, "UID")
        what = f"event {uid or '(no UID)'} ({_text(master, 'SUMMARY') or 'no title'})"
        data = self.event_fields(master, what)
        start = data.pop("_start")
        if uid:
            data["UID"] = uid
        zone = self.zone_of(start)
        if zone:
            data["TimezoneId"] = zone
            blob = _zone_blob(zone, self.utc(start).year)
            if blob:
                data["Timezone"] = blob
        rrule = _first(master.get("RRULE"))
        if master.get("RDATE"):
            self.warnings.append(f"{what}: RDATE (extra dates) cannot be expressed in "
                                 "ActiveSync; ignored")
        if rrule is None:
            if overrides or master.get("EXDATE"):
                self.warnings.append(f"{what}: EXDATE or RECURRENCE-ID on an event "
                                     "without RRULE ignored")
            return data
        rec = self.recurrence(rrule, start, what)
        if rec is None:
            return data
        if "Until" in rec:
            rec["Until"] = fmt_compact(rec["Until"])
        data["Recurrence"] = rec
        exceptions: dict[str, dict[str, Any]] = {}
        exdates = master.get("EXDATE")
        for exdate in exdates if isinstance(exdates, list) else [exdates] if exdates else []:
            for d in exdate.dts:
                when = fmt_compact(self.utc(self.aware(d.dt, exdate.params, what)))
                exceptions[when] = {"ExceptionStartTime": when, "Deleted": 1}
        for ov in overrides:
            rid = self.prop_dt(ov, "RECURRENCE-ID", what)
            if rid is None:
                continue
            when = fmt_compact(self.utc(rid))
            rid_prop = _first(ov.get("RECURRENCE-ID"))
            if str(rid_prop.params.get("RANGE", "")).upper() == "THISANDFUTURE":
                self.warnings.append(f"{what}: RANGE=THISANDFUTURE at {when} applied to "
                                     "that occurrence only")
            if _text(ov, "STATUS").upper() == "CANCELLED":
                exceptions[when] = {"ExceptionStartTime": when, "Deleted": 1}
                continue
            try:
                fields = self.event_fields(ov, what)
            except ValueError:
                self.warnings.append(f"{what}: override at {when} without DTSTART skipped")
                continue
            fields.pop("_start")
            exc: dict[str, Any] = {"ExceptionStartTime": when}
            for key in ("StartTime", "EndTime"):
                exc[key] = fields[key]
            for key, value in fields.items():
                if key in ("StartTime", "EndTime", "DtStamp", "OrganizerEmail",
                           "OrganizerName", "ResponseType", "MeetingStatus"):
                    continue
                if data.get(key) != value:
                    exc[key] = value
            exceptions[when] = exc
        if exceptions:
            data["Exceptions"] = [exceptions[k] for k in sorted(exceptions)]
        return data

    # ---------------------------------------------------------------- tasks

    def task(self, todo: Any) -> dict[str, Any]:
        uid = _text(todo, "UID")
        what = f"task {uid or '(no UID)'} ({_text(todo, 'SUMMARY') or 'no title'})"
        data: dict[str, Any] = {"Subject": _text(todo, "SUMMARY")}
        if uid:
            data["UID"] = uid
        if _text(todo, "DESCRIPTION"):
            data["Body"] = {"Type": 1, "Data": _text(todo, "DESCRIPTION")}
        start = self.prop_dt(todo, "DTSTART", what)
        due = self.prop_dt(todo, "DUE", what)
        duration = _first(todo.get("DURATION"))
        if due is None and start is not None and duration is not None:
            due = start + duration.dt
        for name, value in (("Start", start), ("Due", due)):
            if value is not None:
                data[f"{name}Date"] = fmt_extended(self.local(value).replace(tzinfo=UTC))
                data[f"Utc{name}Date"] = fmt_extended(self.utc(value))
        completed = self.prop_dt(todo, "COMPLETED", what)
        status = _text(todo, "STATUS").upper()
        percent = _text(todo, "PERCENT-COMPLETE")
        done = status == "COMPLETED" or completed is not None or percent == "100"
        data["Complete"] = 1 if done else 0
        if done:
            # Without COMPLETED, the last change stands for it (not "now": a second
            # import of the same file must give the same data).
            when = completed or self.prop_dt(todo, "LAST-MODIFIED", what) or \
                self.prop_dt(todo, "DTSTAMP", what)
            if when is not None:
                data["DateCompleted"] = fmt_extended(self.utc(when))
        priority = _text(todo, "PRIORITY")
        if priority.isdigit() and int(priority):
            p = int(priority)
            data["Importance"] = 2 if p < 5 else 1 if p == 5 else 0
        cls = _text(todo, "CLASS").upper()
        if cls in _CLASS:
            data["Sensitivity"] = _CLASS[cls]
        cats = _categories(todo)
        if cats:
            data["Categories"] = cats
        anchor = self.utc(start) if start is not None else \
            self.utc(due) if due is not None else None
        minutes = self.reminder_minutes(todo, anchor, self.utc(due) if due else None)
        if minutes is not None and anchor is not None:
            data["ReminderSet"] = 1
            data["ReminderTime"] = fmt_extended(anchor - timedelta(minutes=minutes))
        else:
            data["ReminderSet"] = 0
        rrule = _first(todo.get("RRULE"))
        if rrule is not None:
            base = start if start is not None else due
            if base is None:
                self.warnings.append(f"{what}: RRULE without DTSTART or DUE ignored")
            else:
                rec = self.recurrence(rrule, base, what)
                if rec is not None:
                    rec["Start"] = fmt_extended(self.local(base).replace(tzinfo=UTC))
                    if "Until" in rec:
                        rec["Until"] = fmt_extended(rec["Until"])
                    rec.setdefault("Regenerate", 0)
                    rec.setdefault("DeadOccur", 0)
                    data["Recurrence"] = rec
        return data


def _zone_blob(zone: str, year: int) -> str | None:
    try:
        from easync.items.tz import zone_to_blob
    except ImportError:
        return None
    try:
        return zone_to_blob(zone, year)
    except ValueError:
        return None


def parse_icalendar(text: str, default_tz: str | None = None, user_email: str | None = None
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """An iCalendar file → (events, tasks, warnings) as canonical dicts."""
    import icalendar

    try:
        cal = icalendar.Calendar.from_ical(text)
    except ValueError as e:
        raise ICalendarError(f"not a valid iCalendar file: {e}") from None
    zone_name = default_tz or _text(cal, "X-WR-TIMEZONE") or "UTC"
    zone = load_zone(zone_name)
    if zone is None and default_tz:
        raise ICalendarError(f"unknown time zone {default_tz!r}")
    conv = _Calendar(zone or ZoneInfo("UTC"), user_email)
    warnings = conv.warnings
    if zone is None:
        warnings.append(f"unknown X-WR-TIMEZONE {zone_name!r}; UTC used")

    masters: dict[str, Any] = {}
    order: list[str] = []
    overrides: dict[str, list[Any]] = {}
    anonymous = 0
    for ev in cal.walk("VEVENT"):
        uid = _text(ev, "UID")
        if not uid:
            anonymous += 1
            uid = f"\x00{anonymous}"          # no UID: never matched, never merged
        if ev.get("RECURRENCE-ID") is not None:
            overrides.setdefault(uid, []).append(ev)
            continue
        if uid in masters:
            warnings.append(f"event {uid}: several VEVENTs with this UID; the last one kept")
        else:
            order.append(uid)
        masters[uid] = ev
    events = []
    for uid in order:
        try:
            events.append(conv.event(masters[uid], overrides.pop(uid, [])))
        except ValueError as e:
            warnings.append(f"event {uid.lstrip(chr(0))}: skipped ({e})")
    for uid, evs in overrides.items():
        for ev in evs:
            warnings.append(f"event {uid}: an occurrence (RECURRENCE-ID) of a series "
                            "not in the file; imported as a single event")
            try:
                events.append(conv.event(ev, []))
            except ValueError as e:
                warnings.append(f"event {uid}: skipped ({e})")
    tasks = [conv.task(todo) for todo in cal.walk("VTODO")]
    return events, tasks, list(dict.fromkeys(warnings))     # each warning once


# ---------------------------------------------------------------- reading in parts

_BEGIN_END = re.compile(r"^(BEGIN|END):([A-Za-z0-9-]+)[ \t]*$", re.IGNORECASE)


class _Layout:
    """What a first look at an iCalendar file found (no parsing of values)."""

    def __init__(self) -> None:
        self.header: list[str] = []          # VCALENDAR's own lines and its VTIMEZONEs
        self.grouped: set[str] = set()       # UIDs of series with overrides or repeats
        self.simple = True                   # one VCALENDAR, components one level down


def _unfolded(lines: Iterable[str]) -> Iterator[tuple[list[str], str]]:
    """(physical lines, the logical line they make) of a content-line stream."""
    raw: list[str] = []
    for line in lines:
        if raw and line[:1] in (" ", "\t"):
            raw.append(line)
            continue
        if raw:
            yield raw, raw[0] + "".join(r[1:] for r in raw[1:])
        raw = [line]
    if raw:
        yield raw, raw[0] + "".join(r[1:] for r in raw[1:])


def _components(lines: Iterable[str], layout: _Layout | None
                ) -> Iterator[tuple[str, str | None, bool, list[str]]]:
    """The top-level components of the file's VCALENDAR: (name, raw UID, has a
    RECURRENCE-ID, their lines).  With ``layout``, its header is filled (and
    ``simple`` cleared if the file is not one plain VCALENDAR)."""
    depth = calendars = 0
    current: list[str] = []
    name = ""
    uid: str | None = None
    override = False
    for raw, line in _unfolded(lines):
        edge = _BEGIN_END.match(line)
        if edge is not None and edge.group(1).upper() == "BEGIN":
            depth += 1
            if depth == 1:
                calendars += 1
                if layout is not None and (calendars > 1 or
                                           edge.group(2).upper() != "VCALENDAR"):
                    layout.simple = False
            elif depth == 2:
                name, uid, override, current = edge.group(2).upper(), None, False, []
        if depth >= 2:
            current.extend(raw)
            if depth == 2 and edge is None:
                prop = line.split(":", 1)[0].split(";", 1)[0].upper()
                if prop == "UID":
                    uid = line.split(":", 1)[1].strip() if ":" in line else None
                elif prop == "RECURRENCE-ID":
                    override = True
        elif depth == 1 and edge is None and layout is not None and line.strip():
            layout.header.extend(raw)
        if edge is not None and edge.group(1).upper() == "END":
            if depth == 2:
                if name == "VTIMEZONE" and layout is not None:
                    layout.header.extend(current)
                yield name, uid, override, current
            depth -= 1
            if depth < 0 and layout is not None:
                layout.simple = False
                depth = 0
    if depth != 0 and layout is not None:
        layout.simple = False


def icalendar_parts(lines: Callable[[], Iterable[str]], default_tz: str | None = None,
                    user_email: str | None = None, size: int = 500
                    ) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]],
                                        list[str]]]:
    """An iCalendar file read as ``parse_icalendar`` reads it, ``size`` components at a
    time: (events, tasks, warnings) per part.  ``lines()`` gives the file's lines
    (line ends removed) afresh: the file is looked through once to find the series
    that have overrides (or repeated UIDs) and its VTIMEZONEs, then read.  Events and
    tasks that stand alone are read a part at a time; the series with overrides are
    read together at the end (their VEVENTs are the only ones kept until then).  A
    file that is not one plain VCALENDAR is read whole, as ``parse_icalendar`` does."""
    layout = _Layout()
    masters: dict[str, int] = {}
    for name, uid, override, _lines in _components(lines(), layout):
        if name == "VEVENT" and uid:
            if override:
                layout.grouped.add(uid)
            else:
                masters[uid] = masters.get(uid, 0) + 1
                if masters[uid] > 1:
                    layout.grouped.add(uid)
    del masters
    if not layout.simple:
        yield parse_icalendar("\n".join(lines()), default_tz, user_email)
        return
    head = "BEGIN:VCALENDAR\n" + "\n".join(layout.header) + "\n"
    part: list[str] = []
    count = 0
    kept: list[str] = []
    for name, uid, _override, comp in _components(lines(), None):
        if name not in ("VEVENT", "VTODO"):
            continue
        if name == "VEVENT" and uid in layout.grouped:
            kept.extend(comp)
            continue
        part.extend(comp)
        count += 1
        if count >= size:
            yield parse_icalendar(head + "\n".join(part) + "\nEND:VCALENDAR\n",
                                  default_tz, user_email)
            part, count = [], 0
    if part or not kept:
        yield parse_icalendar(head + "\n".join(part) + "\nEND:VCALENDAR\n",
                              default_tz, user_email)
    if kept:
        yield parse_icalendar(head + "\n".join(kept) + "\nEND:VCALENDAR\n",
                              default_tz, user_email)
