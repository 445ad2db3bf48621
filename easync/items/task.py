"""Tasks (MS-ASTASK, code page 9 + AirSyncBase) ↔ canonical dict."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from easync.items._common import (
    VALUE_ERRORS,
    BodyPreference,
    DeviceQuirks,
    ItemError,
    body_to_eas,
    drop_value,
    fill_recurrence,
    fmt_extended,
    list_element,
    list_of,
    parse_body,
    parse_datetime,
    parse_int,
    parse_recurrence,
    recurrence_to_eas,
    text_of,
    to_extended,
)
from easync.wbxml.element import Element

INT_FIELDS: dict[str, tuple[int, int]] = {
    "Complete": (0, 1), "Importance": (0, 2), "ReminderSet": (0, 1), "Sensitivity": (0, 3),
}
DATE_FIELDS = frozenset({"DateCompleted", "DueDate", "UtcDueDate", "StartDate", "UtcStartDate",
                         "ReminderTime", "OrdinalDate"})
STR_FIELDS = frozenset({"Subject", "SubOrdinalDate"})
TOP_ORDER: tuple[str, ...] = (
    "Body", "Subject", "Importance", "UtcStartDate", "StartDate", "UtcDueDate", "DueDate",
    "Categories", "Recurrence", "Complete", "DateCompleted", "Sensitivity", "ReminderTime",
    "ReminderSet", "OrdinalDate", "SubOrdinalDate", "NativeBodyType",
)
RECURRENCE_ORDER: tuple[str, ...] = (
    "Type", "Start", "Until", "Occurrences", "Interval", "DayOfWeek", "DayOfMonth",
    "WeekOfMonth", "MonthOfYear", "Regenerate", "DeadOccur", "CalendarType", "IsLeapMonth",
    "FirstDayOfWeek",
)
RECURRENCE_DATES = ("Start", "Until")
PROPERTIES: frozenset[str] = frozenset(set(INT_FIELDS) | DATE_FIELDS | STR_FIELDS
                                       | {"Categories", "Recurrence", "Body"})


def _now_extended() -> str:
    return fmt_extended(datetime.fromtimestamp(time.time(), UTC))


def _series_start(data: dict[str, Any]) -> str | None:
    for key in ("StartDate", "UtcStartDate", "DueDate", "UtcDueDate"):
        if data.get(key):
            try:
                return to_extended(str(data[key]))
            except ItemError:
                continue
    return None


def from_eas(appdata: Element, version: str, quirks: DeviceQuirks) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in appdata.children:
        page, _, name = child.tag.partition(":")
        try:
            if page == "AirSyncBase" and name == "Body":
                out["Body"] = parse_body(child)
                continue
            if page != "Tasks":
                continue
            if name in INT_FIELDS:
                value = text_of(child).strip()
                lo, hi = INT_FIELDS[name]
                out[name] = parse_int(value, name, lo, hi) if value else ""
            elif name in DATE_FIELDS:
                value = text_of(child).strip()
                out[name] = to_extended(value) if value else ""
            elif name in STR_FIELDS:
                out[name] = text_of(child)
            elif name == "Categories":
                out["Categories"] = list_of(child, "Tasks:Category")
            elif name == "Body":                              # 2.5-style text body
                out["Body"] = {"Type": 1, "Data": text_of(child)}
            elif name == "Recurrence":
                pattern = parse_recurrence(child, "Tasks", RECURRENCE_DATES, to_extended)
                out["Recurrence"] = pattern or ""   # empty: no recurrence
        except VALUE_ERRORS as exc:
            drop_value(out, name, "Tasks", exc)
    if out.get("Complete") == 1 and not out.get("DateCompleted"):
        out["DateCompleted"] = _now_extended()
    rec = out.get("Recurrence")
    if isinstance(rec, dict):
        try:
            if not rec.get("Start"):
                start = _series_start(out)
                if start is None:
                    raise ItemError("task Recurrence without Start")
                rec["Start"] = start
            fill_recurrence(rec, parse_datetime(rec["Start"]))
        except VALUE_ERRORS as exc:
            drop_value(out, "Recurrence", "Tasks", exc)
    return out


def to_eas(data: dict[str, Any], version: str, prefs: list[BodyPreference] | None,
           quirks: DeviceQuirks) -> list[Element]:
    values = dict(data)
    for utc_key, local_key in (("UtcDueDate", "DueDate"), ("UtcStartDate", "StartDate")):
        if values.get(utc_key) and not values.get(local_key):
            values[local_key] = values[utc_key]
        elif values.get(local_key) and not values.get(utc_key):
            values[utc_key] = values[local_key]
    complete = 1 if str(values.get("Complete", 0)) == "1" else 0
    values["Complete"] = complete
    if complete and not values.get("DateCompleted"):
        values["DateCompleted"] = _now_extended()
    if not complete:
        values.pop("DateCompleted", None)
    if values.get("Importance") in (None, ""):
        values["Importance"] = 1
    if values.get("ReminderTime") and values.get("ReminderSet") in (None, ""):
        values["ReminderSet"] = 1
    elements: dict[str, Element] = {}
    body, native = body_to_eas(values.get("Body"), prefs, version)
    if body is not None and native is not None:
        elements["Body"], elements["NativeBodyType"] = body, native
    for name in TOP_ORDER:
        value = values.get(name)
        if value is None or value == "" or value == [] or name in elements:
            continue
        if name in INT_FIELDS:
            try:
                elements[name] = Element(f"Tasks:{name}", str(int(value)))
            except (TypeError, ValueError):
                continue
        elif name in DATE_FIELDS:
            try:
                elements[name] = Element(f"Tasks:{name}", to_extended(str(value)))
            except ItemError:
                continue
        elif name in STR_FIELDS:
            elements[name] = Element(f"Tasks:{name}", str(value))
        elif name == "Categories":
            el = list_element("Tasks:Categories", "Tasks:Category", value)
            if el is not None:
                elements[name] = el
        elif name == "Recurrence" and isinstance(value, dict) and value.get("Type") is not None:
            rec = dict(value)
            if not rec.get("Start"):
                start = _series_start(values)
                if start is None:
                    continue          # a recurrence without a start cannot be expressed
                rec["Start"] = start
            elements[name] = recurrence_to_eas(rec, "Tasks", RECURRENCE_ORDER, version,
                                               to_extended, RECURRENCE_DATES)
    return [elements[name] for name in TOP_ORDER if name in elements]
