"""Calendar items (MS-ASCAL, code page 4 + AirSyncBase) ↔ canonical dict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from easync.items import tz as tzmod
from easync.items._common import (
    DROPPED,
    VALUE_ERRORS,
    BodyPreference,
    DeviceQuirks,
    ItemError,
    body_to_eas,
    clean_text,
    drop_value,
    fill_recurrence,
    fmt_compact,
    infer_recurrence_type,
    list_element,
    list_of,
    parse_body,
    parse_datetime,
    parse_int,
    parse_recurrence,
    recurrence_to_eas,
    text_of,
    to_compact,
    vt,
)
from easync.wbxml.element import Element

# name -> (low, high, first protocol version that has the element)
INT_FIELDS: dict[str, tuple[int, int, tuple[int, int]]] = {
    "AllDayEvent": (0, 1, (0, 0)),
    "BusyStatus": (0, 5, (0, 0)),
    "Sensitivity": (0, 3, (0, 0)),
    "MeetingStatus": (0, 15, (0, 0)),
    "Reminder": (0, 2**31 - 1, (0, 0)),
    "ResponseRequested": (0, 1, (14, 0)),
    "ResponseType": (0, 5, (14, 0)),
    "DisallowNewTimeProposal": (0, 1, (14, 0)),
}
DATE_FIELDS: dict[str, tuple[int, int]] = {
    "StartTime": (0, 0), "EndTime": (0, 0), "DtStamp": (0, 0), "AppointmentReplyTime": (14, 0),
}
STR_FIELDS: dict[str, tuple[int, int]] = {
    "Subject": (0, 0), "OrganizerName": (0, 0), "OrganizerEmail": (0, 0),
    "OnlineMeetingConfLink": (14, 1), "OnlineMeetingExternalLink": (14, 1),
}
# Schema order of the top-level elements (MS-ASCAL 2.2.2).
TOP_ORDER: tuple[str, ...] = (
    "Timezone", "AllDayEvent", "Body", "BusyStatus", "OrganizerName", "OrganizerEmail",
    "DtStamp", "EndTime", "Location", "Reminder", "Sensitivity", "Subject", "StartTime", "UID",
    "MeetingStatus", "Attendees", "Categories", "Recurrence", "Exceptions", "ResponseRequested",
    "AppointmentReplyTime", "ResponseType", "DisallowNewTimeProposal", "NativeBodyType",
    "OnlineMeetingConfLink", "OnlineMeetingExternalLink",
)
EXCEPTION_ORDER: tuple[str, ...] = (
    "Subject", "StartTime", "EndTime", "Body", "Location", "Categories", "Sensitivity",
    "BusyStatus", "AllDayEvent", "Reminder", "DtStamp", "MeetingStatus", "Attendees",
    "AppointmentReplyTime", "ResponseType", "OnlineMeetingConfLink", "OnlineMeetingExternalLink",
)
EXCEPTION_FIELDS: frozenset[str] = frozenset(EXCEPTION_ORDER) | {"LocationDetails"}
RECURRENCE_ORDER: tuple[str, ...] = (
    "Type", "Occurrences", "Interval", "WeekOfMonth", "DayOfWeek", "MonthOfYear", "Until",
    "DayOfMonth", "CalendarType", "IsLeapMonth", "FirstDayOfWeek",
)
LOCATION_PARTS: tuple[str, ...] = (
    "Annotation", "Street", "City", "State", "Country", "PostalCode", "Latitude", "Longitude",
    "Accuracy", "Altitude", "AltitudeAccuracy", "LocationUri",
)
MAX_EXCEPTIONS = 256
# Client-visible properties (for Supported/ghosting); TimezoneId follows Timezone,
# LocationDetails follows Location.
PROPERTIES: frozenset[str] = frozenset(
    set(INT_FIELDS) | set(DATE_FIELDS) | set(STR_FIELDS)
    | {"Timezone", "Location", "UID", "Attendees", "Categories", "Recurrence", "Exceptions",
       "Body"})


# -- zones and all-day ---------------------------------------------------------------------

def event_zone(data: dict[str, Any]) -> tzinfo:
    """The zone that defines local time for an item: TimezoneId, else the blob, else UTC."""
    tzid = data.get("TimezoneId")
    if tzid:
        z = tzmod._load(str(tzid))
        if z is not None:
            return z
    rule = tzmod.decode_blob(data.get("Timezone"))
    if rule is not None:
        return tzmod.BlobZone(rule)
    return UTC


def _local_midnight(day: datetime, zone: tzinfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def _is_midnight(dt: datetime) -> bool:
    return (dt.hour, dt.minute, dt.second) == (0, 0, 0)


def snap_all_day(start: str, end: str | None, zone: tzinfo) -> tuple[str, str]:
    """All-day start/end → local midnights in ``zone`` (start back, end forward).

    A start or end at exactly 00:00 UTC that is not local midnight is taken as a
    floating UTC date (what several clients send) rather than floored a day back.
    """
    s_utc = parse_datetime(start)
    s_loc = s_utc.astimezone(zone)
    if _is_midnight(s_loc):
        s_day = s_loc
    elif _is_midnight(s_utc):
        s_day = s_utc
    else:
        s_day = s_loc
    new_start = _local_midnight(s_day, zone)
    new_end: datetime | None = None
    if end:
        e_utc = parse_datetime(end)
        e_loc = e_utc.astimezone(zone)
        if _is_midnight(e_loc):
            new_end = e_utc
        elif _is_midnight(e_utc):
            new_end = _local_midnight(e_utc, zone)
        else:
            new_end = _local_midnight(e_loc + timedelta(days=1), zone)
    if new_end is None or new_end <= new_start:
        first_day = new_start.astimezone(zone)
        new_end = _local_midnight(first_day + timedelta(days=1), zone)
    return fmt_compact(new_start), fmt_compact(new_end)


def _snap_if_all_day(values: dict[str, Any], all_day: Any, zone: tzinfo) -> None:
    """For an all-day event (``all_day`` 1): its StartTime and EndTime in ``values`` put
    on whole days in ``zone`` (left as they are when they cannot be read)."""
    if all_day in (1, "1") and values.get("StartTime"):
        try:
            values["StartTime"], values["EndTime"] = snap_all_day(
                str(values["StartTime"]), values.get("EndTime"), zone)
        except VALUE_ERRORS:
            pass


def _year_of(data: dict[str, Any]) -> int | None:
    try:
        return parse_datetime(data["StartTime"]).year if data.get("StartTime") else None
    except ItemError:
        return None


# -- parsing ------------------------------------------------------------------------------

def _parse_attendees(el: Element) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    bad = 0
    for att in el.findall("Calendar:Attendee"):
        entry: dict[str, Any] = {}
        email = att.findtext("Calendar:Email")
        name = att.findtext("Calendar:Name")
        if email:
            entry["Email"] = clean_text(email).strip()
        if name:
            entry["Name"] = clean_text(name)
        for key, lo, hi in (("AttendeeStatus", 0, 5), ("AttendeeType", 1, 3)):
            text = (att.findtext(f"Calendar:{key}") or "").strip()
            if text:
                try:
                    entry[key] = parse_int(text, key, lo, hi)
                except ItemError:
                    bad += 1
        if entry.get("Email") or entry.get("Name"):
            out.append(entry)
    if bad:
        drop_value({}, "AttendeeStatus/AttendeeType", "Calendar Attendee",
                   ItemError(f"{bad} values out of range"))
    return out


def _parse_location(el: Element, out: dict[str, Any]) -> None:
    if not el.children:                       # tolerate a plain-text AirSyncBase:Location
        out["Location"] = text_of(el)
        return
    out["Location"] = clean_text(el.findtext("AirSyncBase:DisplayName", "") or "")
    details = {}
    for part in LOCATION_PARTS:
        value = el.findtext(f"AirSyncBase:{part}")
        if value:
            details[part] = clean_text(value)
    if details:
        out["LocationDetails"] = details


def _parse_prop(child: Element, out: dict[str, Any], allowed: frozenset[str] | None) -> bool:
    """Parse one property shared by items and exceptions; False if not one of them."""
    page, _, name = child.tag.partition(":")
    if page == "AirSyncBase":
        if name == "Body" and (allowed is None or "Body" in allowed):
            out["Body"] = parse_body(child)
            return True
        if name == "Location" and (allowed is None or "Location" in allowed):
            _parse_location(child, out)
            return True
        return False
    if page != "Calendar" or (allowed is not None and name not in allowed):
        return False
    if name in INT_FIELDS:
        value = text_of(child).strip()
        lo, hi, _ = INT_FIELDS[name]
        out[name] = parse_int(value, name, lo, hi) if value else ""
    elif name in DATE_FIELDS:
        value = text_of(child).strip()
        out[name] = to_compact(value) if value else ""
    elif name in STR_FIELDS or name == "Location":
        out[name] = text_of(child)
    elif name == "Attendees":
        out["Attendees"] = _parse_attendees(child)
    elif name == "Categories":
        out["Categories"] = list_of(child, "Calendar:Category")
    elif name == "Body":                                   # 2.5-style text body
        out["Body"] = {"Type": 1, "Data": text_of(child)}
    else:
        return False
    return True


def _parse_exceptions(el: Element) -> list[dict[str, Any]]:
    """The Exceptions container; an exception that cannot be read is left out, and so
    is every one past the 256 MS-ASCAL 2.2.2.22 allows (one log line for all of them)."""
    found: dict[str, dict[str, Any]] = {}
    unreadable = over = 0
    for exc_el in el.findall("Calendar:Exception"):
        try:
            start = (exc_el.findtext("Calendar:ExceptionStartTime")
                     or exc_el.findtext("AirSyncBase:InstanceId") or "").strip()
            if not start:
                raise ItemError("Exception without ExceptionStartTime")
            key = to_compact(start)
        except ItemError:
            unreadable += 1
            continue
        if key not in found and len(found) >= MAX_EXCEPTIONS:
            over += 1
            continue
        exc: dict[str, Any] = {"ExceptionStartTime": key}
        deleted = (exc_el.findtext("Calendar:Deleted") or "").strip()
        if deleted == "1":
            exc["Deleted"] = 1
        else:
            for child in exc_el.children:
                try:
                    _parse_prop(child, exc, EXCEPTION_FIELDS)
                except VALUE_ERRORS as err:
                    drop_value(exc, child.tag.partition(":")[2], "Calendar Exception", err)
            exc = {k: v for k, v in exc.items() if v != "" and v != [] and k != DROPPED}
        found[key] = exc
    if unreadable or over:
        drop_value({}, "Exception", "Calendar", ItemError(
            f"{unreadable} without a readable start, {over} over {MAX_EXCEPTIONS}"))
    return [found[k] for k in sorted(found)]


def _parse_recurrence(el: Element, v: tuple[int, int]) -> dict[str, Any] | str:
    """Calendar:Recurrence → dict, or "" for "no recurrence".

    An empty element is "no recurrence" at every version: iOS 16.x sends
    ``<Recurrence/>`` for events that do not recur (MS-ASCAL 2.2.2.37).  From 16.0 Type
    may be left out (MS-ASCAL 2.2.2.45): it is taken from the pattern fields, or from the
    stored series by ``merge_change`` (``_TYPE_FROM_STORED``).
    """
    rec = parse_recurrence(el, "Calendar", ("Until",), to_compact, require_type=v < (16, 0))
    for task_only in ("Start", "Regenerate", "DeadOccur"):
        rec.pop(task_only, None)
    if not rec:
        return ""
    if "Type" not in rec:
        inferred = infer_recurrence_type(rec)
        if inferred is None:
            rec[TYPE_FROM_STORED] = 1
        else:
            rec["Type"] = inferred
    return rec


# In a parsed 16.x Recurrence without Type: take Type (and pattern) from the stored one.
TYPE_FROM_STORED = "_type_from_stored"


def from_eas(appdata: Element, version: str, quirks: DeviceQuirks) -> dict[str, Any]:
    """The client's ApplicationData as sent (see ``easync.items.convert.from_eas``).

    All-day snapping and recurrence completion need the whole item and happen in
    ``normalize`` once a Change has been merged with what is stored.
    """
    v = vt(version)
    out: dict[str, Any] = {}
    for child in appdata.children:
        page, _, name = child.tag.partition(":")
        try:
            if _parse_prop(child, out, None) or page != "Calendar":
                continue
            if name == "Timezone":
                out["Timezone"] = "".join(text_of(child).split())
            elif name == "UID":
                if v < (16, 0):                                 # 16.x: the server owns UID
                    out["UID"] = text_of(child).strip()
            elif name == "ClientUid":
                out["ClientUid"] = text_of(child).strip()
            elif name == "Recurrence":
                out["Recurrence"] = _parse_recurrence(child, v)
            elif name == "Exceptions":
                out["Exceptions"] = _parse_exceptions(child)
        except VALUE_ERRORS as exc:
            drop_value(out, name, "Calendar", exc)
    if out.get("Timezone"):
        zone_name = tzmod.blob_to_zone(out["Timezone"], _year_of(out))
        if zone_name:
            out["TimezoneId"] = zone_name
    return normalize(out, final=False)


def normalize(data: dict[str, Any], final: bool = True) -> dict[str, Any]:
    """An event made whole: all-day times on local midnights of its zone (start
    back, end forward: MS-ASCAL 2.2.2.1), the recurrence pattern completed from the
    start.  ``final`` (a merged item): a recurrence that still cannot be completed is
    left out (logged); otherwise (what one request sent) it is left for the merge."""
    zone = event_zone(data)
    _snap_if_all_day(data, data.get("AllDayEvent"), zone)
    rec = data.get("Recurrence")
    if data.get("AllDayEvent") in (1, "1"):
        # a 16.x device names the days of an all-day series in the date form
        _from_date_form(rec if isinstance(rec, dict) else {}, "Until", zone)
        for one in data.get("Exceptions") or []:
            if isinstance(one, dict):
                _from_date_form(one, "ExceptionStartTime", zone)
    if isinstance(rec, dict):
        try:
            start = parse_datetime(data["StartTime"]).astimezone(zone) \
                if data.get("StartTime") else None
            if "Type" in rec:
                fill_recurrence(rec, start)
            elif final:
                raise ItemError("Recurrence without Type")
        except VALUE_ERRORS as exc:
            if not final:
                return data
            drop_value(data, "Recurrence", "Calendar", exc)
            data.pop(DROPPED, None)
            data.pop("Exceptions", None)
    for one in data.get("Exceptions") or []:
        if isinstance(one, dict):
            _snap_if_all_day(one, one.get("AllDayEvent", data.get("AllDayEvent")), zone)
    return data


# -- output -------------------------------------------------------------------------------

def timezone_blob(data: dict[str, Any]) -> str:
    """The blob to send: the device's own, unless TimezoneId says otherwise; else built."""
    year = _year_of(data) or datetime.now(UTC).year
    blob = data.get("Timezone") or ""
    tzid = data.get("TimezoneId") or ""
    valid_zone = bool(tzid) and tzmod.zone_rule(str(tzid), year) is not None
    if blob:
        if valid_zone and not tzmod.blob_matches_zone(blob, str(tzid), year):
            return tzmod.zone_to_blob(str(tzid), year)
        return str(blob)
    if valid_zone:
        return tzmod.zone_to_blob(str(tzid), year)
    return tzmod.UTC_BLOB


def _attendees_el(attendees: list[dict[str, Any]]) -> Element | None:
    el = Element("Calendar:Attendees")
    for att in attendees:
        if not isinstance(att, dict) or not att.get("Email"):
            continue
        a = el.add("Calendar:Attendee")
        a.add("Calendar:Email", str(att["Email"]))
        a.add("Calendar:Name", str(att.get("Name") or att["Email"]))
        for key in ("AttendeeStatus", "AttendeeType"):
            if att.get(key) not in (None, ""):
                a.add(f"Calendar:{key}", int(att[key]))
    return el if el.children else None


def _location_el(data: dict[str, Any], v: tuple[int, int]) -> Element | None:
    name = data.get("Location") or ""
    details = data.get("LocationDetails") or {}
    if v < (16, 0):
        return Element("Calendar:Location", str(name)) if name else None
    if not name and not details:
        return None
    el = Element("AirSyncBase:Location")
    el.add("AirSyncBase:DisplayName", str(name))
    for part in LOCATION_PARTS:
        if details.get(part) not in (None, ""):
            el.add(f"AirSyncBase:{part}", str(details[part]))
    return el


def _props_to_eas(data: dict[str, Any], order: tuple[str, ...], version: str,
                  prefs: list[BodyPreference] | None) -> dict[str, Element]:
    """Elements for the shared properties of ``data`` keyed by name (not yet ordered)."""
    v = vt(version)
    out: dict[str, Element] = {}
    for name in order:
        value = data.get(name)
        if name == "Location":
            loc = _location_el(data, v)
            if loc is not None:
                out[name] = loc
            continue
        if value is None or value == "" or value == []:
            continue
        if name in INT_FIELDS:
            if v >= INT_FIELDS[name][2]:
                try:
                    out[name] = Element(f"Calendar:{name}", str(int(value)))
                except (TypeError, ValueError):
                    pass
        elif name in DATE_FIELDS:
            if v >= DATE_FIELDS[name]:
                try:
                    out[name] = Element(f"Calendar:{name}", to_compact(str(value)))
                except ItemError:
                    pass
        elif name in STR_FIELDS:
            if v >= STR_FIELDS[name]:
                out[name] = Element(f"Calendar:{name}", str(value))
        elif name == "Body":
            body, native = body_to_eas(value, prefs, version)
            if body is not None and native is not None:
                out["Body"] = body
                out["NativeBodyType"] = native
        elif name == "Categories":
            el = list_element("Calendar:Categories", "Calendar:Category", value)
            if el is not None:
                out[name] = el
        elif name == "Attendees" and isinstance(value, list):
            el = _attendees_el(value)
            if el is not None:
                out[name] = el
    return out


def date_form(value: str, zone: tzinfo) -> str:
    """The 16.x form of an all-day boundary: the local date in ``zone`` written as
    midnight UTC ("fake local as UTC"), read as a plain date by 16.x clients."""
    local = parse_datetime(value).astimezone(zone)
    return f"{local.year:04d}{local.month:02d}{local.day:02d}T000000Z"


def from_date_form(value: str, zone: tzinfo) -> str:
    """The reverse of ``date_form``: a 16.x all-day instant (midnight UTC of a date) →
    local midnight of that date in ``zone``; any other instant is returned as it is."""
    dt = parse_datetime(value)
    if not _is_midnight(dt):
        return fmt_compact(dt)
    return fmt_compact(_local_midnight(dt, zone))


def _from_date_form(values: dict[str, Any], key: str, zone: tzinfo) -> None:
    if values.get(key):
        try:
            values[key] = from_date_form(str(values[key]), zone)
        except VALUE_ERRORS:
            pass


def _to_date_form(values: dict[str, Any], zone: tzinfo) -> None:
    for key in ("StartTime", "EndTime"):
        if values.get(key):
            try:
                values[key] = date_form(str(values[key]), zone)
            except VALUE_ERRORS:
                pass


def _exception_el(exc: dict[str, Any], version: str, prefs: list[BodyPreference] | None,
                  zone: tzinfo, master_all_day: Any) -> Element | None:
    v = vt(version)
    floating = v >= (16, 0) and master_all_day in (1, "1")
    try:
        start = to_compact(str(exc.get("ExceptionStartTime") or ""))
        if floating:
            start = date_form(start, zone)
    except VALUE_ERRORS:
        return None
    el = Element("Calendar:Exception")
    if exc.get("Deleted") in (1, "1", True):
        el.add("Calendar:Deleted", 1)
    if v >= (16, 0):
        el.add("AirSyncBase:InstanceId", start)
    else:
        el.add("Calendar:ExceptionStartTime", start)
    if exc.get("Deleted") in (1, "1", True):
        return el
    values = dict(exc)
    all_day = values.get("AllDayEvent", master_all_day)
    _snap_if_all_day(values, all_day, zone)
    if v >= (16, 0) and all_day in (1, "1"):
        _to_date_form(values, zone)
    props = _props_to_eas(values, EXCEPTION_ORDER, version, prefs)
    for name in EXCEPTION_ORDER:
        if name in props:
            el.append(props[name])
    return el


def to_eas(data: dict[str, Any], version: str, prefs: list[BodyPreference] | None,
           quirks: DeviceQuirks) -> list[Element]:
    """Server→client ApplicationData.  An all-day event goes to 12.x/14.x as local
    midnights of its zone with that zone's Timezone, and to 16.x in the date form
    (``date_form``, with the UTC Timezone): the same dates on every device."""
    values = dict(data)
    zone = event_zone(values)
    _snap_if_all_day(values, values.get("AllDayEvent"), zone)
    floating = vt(version) >= (16, 0) and values.get("AllDayEvent") in (1, "1")
    rec = values.get("Recurrence")
    if floating:
        _to_date_form(values, zone)
        if isinstance(rec, dict) and rec.get("Until"):
            rec = dict(rec)
            try:
                rec["Until"] = date_form(str(rec["Until"]), zone)
            except VALUE_ERRORS:
                rec.pop("Until")
    elements = _props_to_eas(values, TOP_ORDER, version, prefs)
    elements["Timezone"] = Element("Calendar:Timezone",
                                   tzmod.UTC_BLOB if floating else timezone_blob(values))
    if values.get("UID"):
        elements["UID"] = Element("Calendar:UID", str(values["UID"]))
    if isinstance(rec, dict) and rec.get("Type") is not None:
        elements["Recurrence"] = recurrence_to_eas(rec, "Calendar", RECURRENCE_ORDER, version,
                                                   to_compact, ("Until",))
    excs = values.get("Exceptions")
    if isinstance(excs, list) and excs and isinstance(rec, dict):
        container = Element("Calendar:Exceptions")
        ordered = sorted((e for e in excs if isinstance(e, dict)),
                         key=lambda e: str(e.get("ExceptionStartTime", "")))
        for exc in ordered[:MAX_EXCEPTIONS]:
            exc_el = _exception_el(exc, version, prefs, zone, values.get("AllDayEvent"))
            if exc_el is not None:
                container.append(exc_el)
        if container.children:
            elements["Exceptions"] = container
    return [elements[name] for name in TOP_ORDER if name in elements]
