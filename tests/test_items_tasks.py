"""Tasks <-> EAS."""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easync.items._common import DROPPED
from easync.items.convert import (
    BodyPreference,
    filter_window,
    from_eas,
    merge_change,
    to_eas,
)
from easync.versions import version_tuple
from easync.wbxml import codepages
from easync.wbxml.element import E, Element

VERSIONS = ("12.1", "14.1", "16.1")
SINCE = {"Tasks:CalendarType": (14, 0), "Tasks:IsLeapMonth": (14, 0),
         "Tasks:FirstDayOfWeek": (14, 1), "AirSyncBase:Preview": (14, 0)}
NEVER = {"Tasks:Body", "Tasks:BodySize", "Tasks:BodyTruncated", "Tasks:CompressedRTF"}
# MS-ASTASK 2.2.2 order of the top-level elements
SCHEMA_ORDER = ["Body", "Subject", "Importance", "UtcStartDate", "StartDate", "UtcDueDate",
                "DueDate", "Categories", "Recurrence", "Complete", "DateCompleted",
                "Sensitivity", "ReminderTime", "ReminderSet", "OrdinalDate", "SubOrdinalDate",
                "NativeBodyType"]


def appdata(children: list[Element]) -> Element:
    return Element("AirSync:ApplicationData", children=children)


def roundtrip(data: dict[str, Any], version: str) -> dict[str, Any]:
    return from_eas("Tasks", appdata(to_eas("Tasks", data, version)), version)


def rich_task() -> dict[str, Any]:
    return {
        "Body": {"Type": 1, "Data": "Cover sheet!"},
        "Subject": "TPS reports",
        "Importance": 2,
        "UtcStartDate": "2026-03-09T23:00:00.000Z",
        "StartDate": "2026-03-10T00:00:00.000Z",
        "UtcDueDate": "2026-03-12T23:00:00.000Z",
        "DueDate": "2026-03-13T00:00:00.000Z",
        "Categories": ["Business", "Reports"],
        "Recurrence": {"Type": 1, "Start": "2026-03-10T00:00:00.000Z",
                       "Until": "2026-12-31T00:00:00.000Z", "Interval": 1, "DayOfWeek": 4,
                       "Regenerate": 0, "DeadOccur": 0, "CalendarType": 1, "IsLeapMonth": 0,
                       "FirstDayOfWeek": 1},
        "Complete": 1,
        "DateCompleted": "2026-03-11T15:30:00.000Z",
        "Sensitivity": 2,
        "ReminderTime": "2026-03-12T07:00:00.000Z",
        "ReminderSet": 1,
        "OrdinalDate": "2026-03-01T10:00:00.000Z",
        "SubOrdinalDate": "5555555",
    }


def expected_for(data: dict[str, Any], version: str) -> dict[str, Any]:
    d = copy.deepcopy(data)
    v = version_tuple(version)
    rec = d.get("Recurrence", {})
    if v < (14, 0):
        rec.pop("CalendarType", None)
        rec.pop("IsLeapMonth", None)
    if v < (14, 1):
        rec.pop("FirstDayOfWeek", None)
    return d


def check_tags(elements: list[Element], version: str) -> None:
    v = version_tuple(version)
    for top in elements:
        for node in top.iter():
            assert node.tag in codepages.TAG_CODES, node.tag
            assert node.tag not in NEVER
            assert v >= SINCE.get(node.tag, (0, 0)), node.tag


@pytest.mark.parametrize("version", VERSIONS)
def test_rich_task_round_trip(version: str) -> None:
    data = rich_task()
    assert roundtrip(data, version) == expected_for(data, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_order_and_tags(version: str) -> None:
    els = to_eas("Tasks", rich_task(), version, [BodyPreference(type=1, preview=10)])
    check_tags(els, version)
    names = [e.tag.partition(":")[2] for e in els]
    assert names == SCHEMA_ORDER
    rec = next(e for e in els if e.tag == "Tasks:Recurrence")
    order = ["Type", "Start", "Until", "Occurrences", "Interval", "DayOfWeek", "DayOfMonth",
             "WeekOfMonth", "MonthOfYear", "Regenerate", "DeadOccur", "CalendarType",
             "IsLeapMonth", "FirstDayOfWeek"]
    got = [c.tag.partition(":")[2] for c in rec.children]
    assert got == [n for n in order if n in got]


def test_dates_are_eas_datetime_strings_and_compact_accepted() -> None:
    ad = appdata([E("Tasks:Subject", "x"), E("Tasks:DueDate", "20260313T000000Z"),
                  E("Tasks:UtcDueDate", "2026-03-12T23:00:00Z"),
                  E("Tasks:StartDate", "2026-03-10"),
                  E("Tasks:Recurrence", E("Tasks:Type", 0), E("Tasks:Start", "20260310T000000Z"),
                    E("Tasks:Until", "20261231"))])
    data = from_eas("Tasks", ad, "14.1")
    assert data["DueDate"] == "2026-03-13T00:00:00.000Z"
    assert data["UtcDueDate"] == "2026-03-12T23:00:00.000Z"
    assert data["StartDate"] == "2026-03-10T00:00:00.000Z"
    assert data["Recurrence"] == {"Type": 0, "Start": "2026-03-10T00:00:00.000Z",
                                  "Until": "2026-12-31T00:00:00.000Z"}
    els = to_eas("Tasks", data, "14.1")
    assert E("Tasks:DueDate", "2026-03-13T00:00:00.000Z") in els


def test_importance_and_complete_always_sent() -> None:
    els = to_eas("Tasks", {"Subject": "bare"}, "14.1")
    assert els == [E("Tasks:Subject", "bare"), E("Tasks:Importance", 1),
                   E("Tasks:Complete", 0)]


def test_complete_without_date_completed_is_filled() -> None:
    before = time.time() - 1
    data = from_eas("Tasks", appdata([E("Tasks:Subject", "done"), E("Tasks:Complete", 1)]),
                    "14.1")
    filled = datetime.strptime(data["DateCompleted"], "%Y-%m-%dT%H:%M:%S.000Z").replace(
        tzinfo=UTC).timestamp()
    assert before <= filled <= time.time() + 1
    els = to_eas("Tasks", {"Subject": "done", "Complete": 1}, "16.1")
    names = [e.tag for e in els]
    assert "Tasks:DateCompleted" in names
    assert names.index("Tasks:DateCompleted") == names.index("Tasks:Complete") + 1
    # an incomplete task never carries DateCompleted
    els = to_eas("Tasks", {"Subject": "x", "Complete": 0,
                           "DateCompleted": "2026-03-11T15:30:00.000Z"}, "16.1")
    assert "Tasks:DateCompleted" not in [e.tag for e in els]


def test_utc_and_local_dates_go_in_pairs() -> None:
    els = to_eas("Tasks", {"UtcDueDate": "2026-03-12T23:00:00.000Z"}, "14.1")
    assert E("Tasks:UtcDueDate", "2026-03-12T23:00:00.000Z") in els
    assert E("Tasks:DueDate", "2026-03-12T23:00:00.000Z") in els
    els = to_eas("Tasks", {"StartDate": "2026-03-10T00:00:00.000Z"}, "14.1")
    assert E("Tasks:UtcStartDate", "2026-03-10T00:00:00.000Z") in els


def test_reminder_set_follows_reminder_time() -> None:
    els = to_eas("Tasks", {"ReminderTime": "2026-03-12T07:00:00.000Z"}, "14.1")
    assert E("Tasks:ReminderSet", 1) in els


def test_recurrence_start_required() -> None:
    ad = appdata([E("Tasks:DueDate", "2026-03-13T00:00:00.000Z"),
                  E("Tasks:Recurrence", E("Tasks:Type", 2), E("Tasks:DayOfMonth", 13))])
    assert from_eas("Tasks", ad, "14.1")["Recurrence"] == {
        "Type": 2, "DayOfMonth": 13, "Start": "2026-03-13T00:00:00.000Z"}
    # no date to start the series from: the recurrence is left out, the task kept
    ad = appdata([E("Tasks:Subject", "s"), E("Tasks:Recurrence", E("Tasks:Type", 0))])
    d = from_eas("Tasks", ad, "14.1")
    assert "Recurrence" not in d and d["Subject"] == "s" and d[DROPPED] == ["Recurrence"]
    # output: Start is supplied from the task's dates
    els = to_eas("Tasks", {"StartDate": "2026-03-10T00:00:00.000Z",
                           "Recurrence": {"Type": 0}}, "14.1")
    rec = next(e for e in els if e.tag == "Tasks:Recurrence")
    assert rec.findtext("Tasks:Start") == "2026-03-10T00:00:00.000Z"
    els = to_eas("Tasks", {"Recurrence": {"Type": 0}}, "14.1")
    assert all(e.tag != "Tasks:Recurrence" for e in els)


RECURRENCES = [
    {"Type": 0, "Interval": 3, "Occurrences": 5},
    {"Type": 1, "DayOfWeek": 62, "Interval": 1, "FirstDayOfWeek": 1, "Regenerate": 0,
     "DeadOccur": 0},
    {"Type": 2, "DayOfMonth": 31, "Interval": 1},
    {"Type": 3, "WeekOfMonth": 5, "DayOfWeek": 32},
    {"Type": 5, "DayOfMonth": 29, "MonthOfYear": 2},
    {"Type": 6, "WeekOfMonth": 1, "DayOfWeek": 2, "MonthOfYear": 9, "CalendarType": 1,
     "IsLeapMonth": 0, "Regenerate": 1, "DeadOccur": 1},
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("rec", RECURRENCES, ids=lambda r: f"type{r['Type']}")
def test_recurrence_types(rec: dict[str, Any], version: str) -> None:
    data = {"Subject": "r", "Complete": 0, "Importance": 1,
            "StartDate": "2026-03-10T00:00:00.000Z", "UtcStartDate": "2026-03-09T23:00:00.000Z",
            "Recurrence": dict(rec, Start="2026-03-10T00:00:00.000Z")}
    els = to_eas("Tasks", data, version)
    check_tags(els, version)
    assert from_eas("Tasks", appdata(els), version) == expected_for(data, version)


@pytest.mark.parametrize("bad", [
    E("Tasks:Complete", 2), E("Tasks:Importance", 3), E("Tasks:Sensitivity", 4),
    E("Tasks:ReminderSet", "yes"), E("Tasks:DueDate", "soon"),
    E("Tasks:Recurrence", E("Tasks:Type", 4), E("Tasks:Start", "2026-03-10T00:00:00.000Z")),
    E("Tasks:Recurrence", E("Tasks:Type", 0), E("Tasks:Start", "2026-03-10T00:00:00.000Z"),
      E("Tasks:Regenerate", 2)),
])
def test_invalid_task_value_is_left_out(bad: Element) -> None:
    """Issue 8: no item is refused for one bad value; that value is left out."""
    d = from_eas("Tasks", appdata([E("Tasks:Subject", "keep me"), bad]), "14.1")
    name = bad.tag.partition(":")[2]
    assert d["Subject"] == "keep me"
    if name == "Recurrence" and "Recurrence" in d:      # only its bad field is left out
        assert d["Recurrence"] == {"Type": 0, "Start": "2026-03-10T00:00:00.000Z"}
    else:
        assert name not in d and d[DROPPED] == [name]


def test_tasks_are_never_ghosted() -> None:
    old = rich_task()
    new = {"Subject": "only subject", "Complete": 0}
    assert merge_change("Tasks", old, new, []) == new
    assert merge_change("Tasks", old, new, ["Subject"]) == new
    assert merge_change("Tasks", old, new, None) == new


def test_filter_window_tasks() -> None:
    assert filter_window(8, "Tasks", 1_700_000_000) == (None, 1)
    assert filter_window(0, "Tasks", 1_700_000_000) is None
    assert filter_window(4, "Tasks", 1_700_000_000) is None


# C0 controls but tab, LF, CR are removed on input (issue #10, point 8)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(
    chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))),
                min_size=1, max_size=30)
_stamp = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.000Z"))


@settings(max_examples=80, deadline=None)
@given(st.fixed_dictionaries({
    "Subject": _text, "Importance": st.integers(0, 2), "Complete": st.just(0),
    "Sensitivity": st.integers(0, 3)}, optional={
    "Categories": st.lists(_text, min_size=1, max_size=3),
    "Body": _text.map(lambda t: {"Type": 1, "Data": t}),
    "ReminderSet": st.integers(0, 1)}),
    _stamp, _stamp, st.sampled_from(VERSIONS))
def test_round_trip_property(data: dict[str, Any], due: str, start: str, version: str) -> None:
    data = dict(data, DueDate=due, UtcDueDate=due, StartDate=start, UtcStartDate=start)
    assert roundtrip(data, version) == data
