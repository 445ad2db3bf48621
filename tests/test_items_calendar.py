"""Calendar items <-> EAS: versions, time zones, all-day, recurrence, exceptions, ghosting."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easync.items._common import DROPPED
from easync.items.convert import (
    BodyPreference,
    DeviceQuirks,
    ItemError,
    apply_instance_change,
    filter_window,
    from_eas,
    merge_change,
    supported_names,
    to_eas,
)
from easync.items.tz import zone_to_blob
from easync.versions import version_tuple
from easync.wbxml import codec as wbxml
from easync.wbxml import codepages
from easync.wbxml.element import E, Element

VERSIONS = ("12.1", "14.1", "16.1")
ROME = "Europe/Rome"
ROME_BLOB = zone_to_blob(ROME, 2026)
NY_BLOB = zone_to_blob("America/New_York", 2026)
UTC_BLOB = base64.b64encode(bytes(172)).decode()

# MS-ASCAL 2.2.2: the order of the top-level elements (Location is airsyncbase:Location
# from 16.0 on, at the same place).
SCHEMA_ORDER = [
    "Timezone", "AllDayEvent", "Body", "BusyStatus", "OrganizerName", "OrganizerEmail",
    "DtStamp", "EndTime", "Location", "Reminder", "Sensitivity", "Subject", "StartTime",
    "UID", "MeetingStatus", "Attendees", "Categories", "Recurrence", "Exceptions",
    "ResponseRequested", "AppointmentReplyTime", "ResponseType", "DisallowNewTimeProposal",
    "NativeBodyType", "OnlineMeetingConfLink", "OnlineMeetingExternalLink",
]
# Tags that exist only from / until a protocol version (MS-ASWBXML, MS-ASCAL, MS-ASAIRS).
SINCE = {
    "Calendar:DisallowNewTimeProposal": (14, 0), "Calendar:ResponseRequested": (14, 0),
    "Calendar:AppointmentReplyTime": (14, 0), "Calendar:ResponseType": (14, 0),
    "Calendar:CalendarType": (14, 0), "Calendar:IsLeapMonth": (14, 0),
    "Calendar:FirstDayOfWeek": (14, 1), "Calendar:OnlineMeetingConfLink": (14, 1),
    "Calendar:OnlineMeetingExternalLink": (14, 1), "AirSyncBase:Preview": (14, 0),
    "AirSyncBase:InstanceId": (16, 0), "AirSyncBase:Location": (16, 0),
    "AirSyncBase:Annotation": (16, 0), "AirSyncBase:City": (16, 0),
    "AirSyncBase:Latitude": (16, 0), "AirSyncBase:Longitude": (16, 0),
}
UNTIL = {"Calendar:ExceptionStartTime": (14, 1), "Calendar:Location": (14, 1)}
NEVER = {"Calendar:ClientUid", "Calendar:Body", "Calendar:BodyTruncated"}


def appdata(children: list[Element]) -> Element:
    return Element("AirSync:ApplicationData", children=children)


def roundtrip(data: dict[str, Any], version: str, **kw: Any) -> dict[str, Any]:
    return from_eas("Calendar", appdata(to_eas("Calendar", data, version, **kw)), version)


def check_tags(elements: list[Element], version: str) -> None:
    v = version_tuple(version)
    for top in elements:
        for node in top.iter():
            assert node.tag in codepages.TAG_CODES, node.tag
            assert node.tag not in NEVER, node.tag
            assert v >= SINCE.get(node.tag, (0, 0)), (node.tag, version)
            assert v <= UNTIL.get(node.tag, (99, 0)), (node.tag, version)


def rich_event() -> dict[str, Any]:
    attendee = {"Email": "bob@example.org", "Name": "Bob", "AttendeeStatus": 3,
                "AttendeeType": 1}
    return {
        "Timezone": ROME_BLOB, "TimezoneId": ROME, "AllDayEvent": 0,
        "Body": {"Type": 1, "Data": "Agenda: everything"}, "BusyStatus": 2,
        "OrganizerName": "Jane Doe", "OrganizerEmail": "jane@example.org",
        "DtStamp": "20260301T080000Z", "StartTime": "20260310T090000Z",
        "EndTime": "20260310T100000Z", "Location": "Room 1", "Reminder": 15, "Sensitivity": 1,
        "Subject": "Weekly sync", "UID": "040000008200E00074C5B7101A82E008", "MeetingStatus": 1,
        "Attendees": [attendee, {"Email": "carol@example.org", "Name": "Carol",
                                 "AttendeeStatus": 5, "AttendeeType": 2},
                      {"Email": "room@example.org", "Name": "Room", "AttendeeType": 3}],
        "Categories": ["Work", "Team"],
        "Recurrence": {"Type": 1, "Interval": 1, "DayOfWeek": 4, "Until": "20261229T090000Z",
                       "FirstDayOfWeek": 1, "CalendarType": 1, "IsLeapMonth": 0},
        "Exceptions": [
            {"ExceptionStartTime": "20260317T090000Z", "Deleted": 1},
            {"ExceptionStartTime": "20260324T090000Z", "Subject": "Moved sync",
             "StartTime": "20260324T130000Z", "EndTime": "20260324T140000Z",
             "Body": {"Type": 1, "Data": "moved"}, "Location": "Room 2",
             "Categories": ["Moved"], "Sensitivity": 0, "BusyStatus": 1, "AllDayEvent": 0,
             "Reminder": 5, "DtStamp": "20260320T080000Z", "MeetingStatus": 1,
             "Attendees": [attendee], "AppointmentReplyTime": "20260321T080000Z",
             "ResponseType": 3, "OnlineMeetingConfLink": "https://meet.example/x",
             "OnlineMeetingExternalLink": "https://meet.example/y"},
        ],
        "ResponseRequested": 1, "AppointmentReplyTime": "20260302T080000Z", "ResponseType": 1,
        "DisallowNewTimeProposal": 0, "OnlineMeetingConfLink": "https://meet.example/conf",
        "OnlineMeetingExternalLink": "https://meet.example/ext",
    }


def expected_for(data: dict[str, Any], version: str) -> dict[str, Any]:
    """What survives a trip through ``version``."""
    d = copy.deepcopy(data)
    v = version_tuple(version)
    if v < (14, 0):
        for key in ("ResponseRequested", "AppointmentReplyTime", "ResponseType",
                    "DisallowNewTimeProposal"):
            d.pop(key, None)
        for key in ("CalendarType", "IsLeapMonth"):
            d.get("Recurrence", {}).pop(key, None)
        for exc in d.get("Exceptions", []):
            exc.pop("AppointmentReplyTime", None)
            exc.pop("ResponseType", None)
    if v < (14, 1):
        for key in ("OnlineMeetingConfLink", "OnlineMeetingExternalLink"):
            d.pop(key, None)
            for exc in d.get("Exceptions", []):
                exc.pop(key, None)
        d.get("Recurrence", {}).pop("FirstDayOfWeek", None)
    if v >= (16, 0):
        d.pop("UID", None)                 # a 16.x client never sets UID
    else:
        d.pop("LocationDetails", None)
    return d


# -- round trips, order, tags ------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_rich_event_round_trip(version: str) -> None:
    data = rich_event()
    assert roundtrip(data, version) == expected_for(data, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_schema_order_and_tags(version: str) -> None:
    els = to_eas("Calendar", rich_event(), version)
    check_tags(els, version)
    names = [e.tag.partition(":")[2] for e in els]
    assert names == [n for n in SCHEMA_ORDER if n in names]
    expected = {"Timezone", "Body", "BusyStatus", "OrganizerName", "OrganizerEmail", "DtStamp",
                "EndTime", "Location", "Reminder", "Sensitivity", "Subject", "StartTime", "UID",
                "MeetingStatus", "Attendees", "Categories", "Recurrence", "Exceptions",
                "NativeBodyType", "AllDayEvent"}
    if version_tuple(version) >= (14, 0):
        expected |= {"ResponseRequested", "AppointmentReplyTime", "ResponseType",
                     "DisallowNewTimeProposal"}
    if version_tuple(version) >= (14, 1):
        expected |= {"OnlineMeetingConfLink", "OnlineMeetingExternalLink"}
    assert set(names) == expected
    loc = next(e for e in els if e.tag.endswith(":Location"))
    if version == "16.1":
        assert loc == E("AirSyncBase:Location", E("AirSyncBase:DisplayName", "Room 1"))
    else:
        assert loc == E("Calendar:Location", "Room 1")
    exceptions = next(e for e in els if e.tag == "Calendar:Exceptions")
    first = exceptions.children[0]
    start_tag = "AirSyncBase:InstanceId" if version == "16.1" else "Calendar:ExceptionStartTime"
    assert first == E("Calendar:Exception", E("Calendar:Deleted", 1),
                      E(start_tag, "20260317T090000Z"))


@pytest.mark.parametrize("version", VERSIONS)
def test_through_the_wbxml_codec(version: str) -> None:
    root = E("AirSync:Sync", appdata(to_eas("Calendar", rich_event(), version,
                                           [BodyPreference(type=1, preview=20)])))
    decoded = wbxml.decode(wbxml.encode(root))
    ad = decoded.find("AirSync:ApplicationData")
    assert ad is not None
    assert from_eas("Calendar", ad, version) == expected_for(rich_event(), version)


def test_itemoperations_properties_form() -> None:
    props = Element("ItemOperations:Properties", children=to_eas("Calendar", rich_event(),
                                                                   "14.1"))
    assert from_eas("Calendar", props, "14.1") == expected_for(rich_event(), "14.1")


def test_location_details_16() -> None:
    ad = appdata([E("AirSyncBase:Location", E("AirSyncBase:DisplayName", "Colosseo"),
                    E("AirSyncBase:City", "Roma"), E("AirSyncBase:Latitude", "41.89"),
                    E("AirSyncBase:Longitude", "12.49"))])
    data = from_eas("Calendar", ad, "16.1")
    assert data == {"Location": "Colosseo", "LocationDetails": {
        "City": "Roma", "Latitude": "41.89", "Longitude": "12.49"}}
    assert roundtrip(dict(data, StartTime="20260310T090000Z"), "16.1")["LocationDetails"] == \
        data["LocationDetails"]
    els = to_eas("Calendar", data, "14.1")
    assert E("Calendar:Location", "Colosseo") in els
    check_tags(els, "14.1")


def test_uid_and_client_uid() -> None:
    ad = appdata([E("Calendar:UID", "client-uid"), E("Calendar:Subject", "x"),
                  E("Calendar:ClientUid", "0123456789ABCDEF0123456789ABCDEF\x00")])
    assert from_eas("Calendar", ad, "16.1") == {
        "Subject": "x", "ClientUid": "0123456789ABCDEF0123456789ABCDEF"}
    assert from_eas("Calendar", ad, "14.1")["UID"] == "client-uid"
    els = to_eas("Calendar", {"UID": "server-uid", "ClientUid": "abc"}, "16.1")
    assert E("Calendar:UID", "server-uid") in els
    assert all(e.tag != "Calendar:ClientUid" for e in els)


# -- time zones ----------------------------------------------------------------------------------

def test_device_blob_maps_to_zone_and_is_kept() -> None:
    ad = appdata([E("Calendar:Timezone", ROME_BLOB), E("Calendar:StartTime", "20260310T090000Z")])
    assert from_eas("Calendar", ad, "14.1") == {"Timezone": ROME_BLOB, "TimezoneId": ROME,
                                               "StartTime": "20260310T090000Z"}


def test_unknown_blob_is_kept_verbatim() -> None:
    raw = bytearray(172)
    raw[0:4] = (-37).to_bytes(4, "little", signed=True)
    odd = base64.b64encode(bytes(raw)).decode()
    ad = appdata([E("Calendar:Timezone", odd), E("Calendar:StartTime", "20260310T090000Z")])
    data = from_eas("Calendar", ad, "14.1")
    assert data == {"Timezone": odd, "StartTime": "20260310T090000Z"}
    assert to_eas("Calendar", data, "14.1")[0] == E("Calendar:Timezone", odd)
    garbage = appdata([E("Calendar:Timezone", "not-a-blob")])
    assert from_eas("Calendar", garbage, "14.1") == {"Timezone": "not-a-blob"}
    empty = appdata([E("Calendar:Timezone"), E("Calendar:Subject", "s")])
    assert from_eas("Calendar", empty, "14.1") == {"Timezone": "", "Subject": "s"}


def test_timezone_id_only_generates_blob_for_event_year() -> None:
    data = {"TimezoneId": "America/New_York", "StartTime": "20300310T150000Z",
            "Subject": "imported"}
    els = to_eas("Calendar", data, "14.1")
    assert els[0] == E("Calendar:Timezone", zone_to_blob("America/New_York", 2030))
    back = from_eas("Calendar", appdata(els), "14.1")
    assert back["TimezoneId"] == "America/New_York"


def test_no_zone_sends_utc_blob() -> None:
    els = to_eas("Calendar", {"Subject": "x", "StartTime": "20260310T090000Z"}, "16.1")
    assert els[0] == E("Calendar:Timezone", UTC_BLOB)
    els = to_eas("Calendar", {"Subject": "x", "TimezoneId": "No/Such_Zone"}, "16.1")
    assert els[0] == E("Calendar:Timezone", UTC_BLOB)


def test_timezone_id_wins_over_a_stale_blob() -> None:
    stale = {"Timezone": ROME_BLOB, "TimezoneId": "America/New_York",
             "StartTime": "20260310T090000Z"}
    assert to_eas("Calendar", stale, "14.1")[0] == E("Calendar:Timezone", NY_BLOB)
    same_rules = {"Timezone": zone_to_blob("Europe/Berlin", 2026), "TimezoneId": ROME,
                  "StartTime": "20260310T090000Z"}
    assert to_eas("Calendar", same_rules, "14.1")[0] == E(
        "Calendar:Timezone", zone_to_blob("Europe/Berlin", 2026))


# -- all-day -------------------------------------------------------------------------------------

def all_day_in(start: str, end: str | None, blob: str = ROME_BLOB) -> dict[str, Any]:
    children = [E("Calendar:Timezone", blob), E("Calendar:AllDayEvent", 1),
                E("Calendar:StartTime", start)]
    if end:
        children.append(E("Calendar:EndTime", end))
    return from_eas("Calendar", appdata(children), "14.1")


def test_all_day_local_midnights_are_kept() -> None:
    d = all_day_in("20260310T230000Z", "20260311T230000Z")
    assert (d["StartTime"], d["EndTime"]) == ("20260310T230000Z", "20260311T230000Z")
    # across the DST change (29 March): two days, 47 hours
    d = all_day_in("20260327T230000Z", "20260329T220000Z")
    assert (d["StartTime"], d["EndTime"]) == ("20260327T230000Z", "20260329T220000Z")


def test_all_day_snaps_start_back_and_end_forward() -> None:
    d = all_day_in("20260311T090000Z", "20260311T100000Z")     # 10:00-11:00 Rome
    assert (d["StartTime"], d["EndTime"]) == ("20260310T230000Z", "20260311T230000Z")
    d = all_day_in("20260311T090000Z", None)
    assert (d["StartTime"], d["EndTime"]) == ("20260310T230000Z", "20260311T230000Z")
    d = all_day_in("20260311T090000Z", "20260311T090000Z")     # zero length → one day
    assert d["EndTime"] == "20260311T230000Z"


def test_all_day_floating_utc_midnight() -> None:
    d = all_day_in("20260311T000000Z", "20260312T000000Z", NY_BLOB)
    # local midnights in New York (EDT since 8 March)
    assert (d["StartTime"], d["EndTime"]) == ("20260311T040000Z", "20260312T040000Z")
    d = all_day_in("20260311T000000Z", "20260312T000000Z", UTC_BLOB)
    assert (d["StartTime"], d["EndTime"]) == ("20260311T000000Z", "20260312T000000Z")


def test_all_day_output_for_imported_item() -> None:
    data = {"TimezoneId": ROME, "AllDayEvent": 1, "StartTime": "20260311T000000Z",
            "Subject": "holiday"}
    els = to_eas("Calendar", data, "14.1")
    assert E("Calendar:StartTime", "20260310T230000Z") in els
    assert E("Calendar:EndTime", "20260311T230000Z") in els
    assert E("Calendar:AllDayEvent", 1) in els
    assert E("Calendar:Timezone", zone_to_blob(ROME, 2026)) in els
    # 16.x: the date form, 11 March as a date whatever the reader's zone (issue 8, 5)
    els = to_eas("Calendar", data, "16.1")
    assert E("Calendar:StartTime", "20260311T000000Z") in els
    assert E("Calendar:EndTime", "20260312T000000Z") in els
    assert E("Calendar:Timezone", UTC_BLOB) in els


def test_all_day_exception_inherits_and_snaps() -> None:
    children = [E("Calendar:Timezone", ROME_BLOB), E("Calendar:AllDayEvent", 1),
                E("Calendar:StartTime", "20260310T230000Z"),
                E("Calendar:EndTime", "20260311T230000Z"),
                E("Calendar:Recurrence", E("Calendar:Type", 0)),
                E("Calendar:Exceptions", E("Calendar:Exception",
                                           E("Calendar:ExceptionStartTime", "20260312T230000Z"),
                                           E("Calendar:StartTime", "20260314T100000Z")))]
    d = from_eas("Calendar", appdata(children), "14.1")
    assert d["Exceptions"] == [{"ExceptionStartTime": "20260312T230000Z",
                                "StartTime": "20260313T230000Z", "EndTime": "20260314T230000Z"}]


@settings(max_examples=80, deadline=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2037, 12, 31)),
       st.integers(min_value=1, max_value=5),
       st.sampled_from([ROME, "America/New_York", "Asia/Tokyo", "Australia/Sydney", "UTC",
                        "Pacific/Kiritimati", "Etc/GMT+12"]),
       st.sampled_from(VERSIONS))
def test_all_day_round_trip_property(day: date, days: int, zone: str, version: str) -> None:
    z = ZoneInfo(zone)
    start = datetime(day.year, day.month, day.day, tzinfo=z).astimezone(UTC)
    end_day = day + timedelta(days=days)
    end = datetime(end_day.year, end_day.month, end_day.day, tzinfo=z).astimezone(UTC)
    data = {"Timezone": zone_to_blob(zone, day.year), "TimezoneId": zone, "AllDayEvent": 1,
            "StartTime": start.strftime("%Y%m%dT%H%M%SZ"),
            "EndTime": end.strftime("%Y%m%dT%H%M%SZ"), "Subject": "day off"}
    if version_tuple(version) < (16, 0):
        assert roundtrip(data, version) == data
        return
    # 16.x reads and writes the date form (MS-ASCAL 2.2.2.1): the same dates come back
    back = roundtrip(data, version)
    assert back["AllDayEvent"] == 1 and back["Subject"] == "day off"
    assert back["StartTime"] == day.strftime("%Y%m%dT000000Z")
    assert back["EndTime"] == end_day.strftime("%Y%m%dT000000Z")
    # and a 16.x Change that leaves the zone out (ghosted) keeps the event's zone
    stored = merge_change("Calendar", data, {k: v for k, v in back.items()
                                             if k not in ("Timezone", "TimezoneId")},
                          None, DeviceQuirks(protocol_version="16.1"))
    assert (stored["StartTime"], stored["EndTime"]) == (data["StartTime"], data["EndTime"])


# -- recurrence ----------------------------------------------------------------------------------

RECURRENCES = [
    {"Type": 0, "Interval": 2, "Occurrences": 10},
    {"Type": 1, "Interval": 1, "DayOfWeek": 62, "Until": "20261231T090000Z",
     "FirstDayOfWeek": 1},
    {"Type": 1, "Interval": 2, "DayOfWeek": 65, "FirstDayOfWeek": 0},
    {"Type": 2, "Interval": 1, "DayOfMonth": 10},
    {"Type": 3, "Interval": 1, "WeekOfMonth": 2, "DayOfWeek": 4},
    {"Type": 3, "Interval": 3, "WeekOfMonth": 5, "DayOfWeek": 127, "Occurrences": 4},
    {"Type": 5, "DayOfMonth": 10, "MonthOfYear": 3},
    {"Type": 6, "WeekOfMonth": 2, "DayOfWeek": 4, "MonthOfYear": 3, "CalendarType": 1,
     "IsLeapMonth": 0},
    {"Type": 6, "WeekOfMonth": 1, "DayOfWeek": 2, "MonthOfYear": 1, "CalendarType": 15,
     "IsLeapMonth": 1, "Until": "20300101T000000Z"},
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("rec", RECURRENCES, ids=lambda r: f"type{r['Type']}")
def test_recurrence_round_trip(rec: dict[str, Any], version: str) -> None:
    data = {"Timezone": ROME_BLOB, "TimezoneId": ROME, "StartTime": "20260310T090000Z",
            "EndTime": "20260310T100000Z", "Subject": "r", "Recurrence": dict(rec)}
    els = to_eas("Calendar", data, version)
    check_tags(els, version)
    assert from_eas("Calendar", appdata(els), version) == expected_for(data, version)


def test_recurrence_child_order() -> None:
    rec = {"Type": 6, "WeekOfMonth": 2, "DayOfWeek": 4, "MonthOfYear": 3, "Interval": 1,
           "Until": "20300101T000000Z", "CalendarType": 1, "IsLeapMonth": 0,
           "FirstDayOfWeek": 1, "DayOfMonth": 3}
    els = to_eas("Calendar", {"StartTime": "20260310T090000Z", "Recurrence": rec}, "16.1")
    el = next(e for e in els if e.tag == "Calendar:Recurrence")
    assert [c.tag.partition(":")[2] for c in el.children] == [
        "Type", "Interval", "WeekOfMonth", "DayOfWeek", "MonthOfYear", "Until", "DayOfMonth",
        "CalendarType", "IsLeapMonth", "FirstDayOfWeek"]


def test_weekly_gets_first_day_of_week_from_14_1() -> None:
    data = {"StartTime": "20260310T090000Z", "Recurrence": {"Type": 1, "DayOfWeek": 4}}
    el = next(e for e in to_eas("Calendar", data, "14.1") if e.tag == "Calendar:Recurrence")
    assert el.findtext("Calendar:FirstDayOfWeek") == "0"
    el = next(e for e in to_eas("Calendar", data, "12.1") if e.tag == "Calendar:Recurrence")
    assert el.find("Calendar:FirstDayOfWeek") is None


def test_missing_pattern_fields_come_from_the_local_start() -> None:
    # 23:30Z on Tuesday 10 March is Wednesday 00:30 in Rome
    def rec_of(rtype: int) -> dict[str, Any]:
        ad = appdata([E("Calendar:Timezone", ROME_BLOB),
                      E("Calendar:StartTime", "20260310T233000Z"),
                      E("Calendar:Recurrence", E("Calendar:Type", rtype))])
        return from_eas("Calendar", ad, "14.1")["Recurrence"]
    assert rec_of(1) == {"Type": 1, "DayOfWeek": 8}
    assert rec_of(2) == {"Type": 2, "DayOfMonth": 11}
    assert rec_of(3) == {"Type": 3, "WeekOfMonth": 2, "DayOfWeek": 8}
    assert rec_of(5) == {"Type": 5, "DayOfMonth": 11, "MonthOfYear": 3}
    assert rec_of(6) == {"Type": 6, "WeekOfMonth": 2, "DayOfWeek": 8, "MonthOfYear": 3}
    assert rec_of(0) == {"Type": 0}


@pytest.mark.parametrize("bad", [
    [E("Calendar:Type", 4)], [E("Calendar:Type", 7)], [E("Calendar:Type", "x")],
    [E("Calendar:Interval", 2)],
    [E("Calendar:Type", 1), E("Calendar:DayOfWeek", 200)],
    [E("Calendar:Type", 2), E("Calendar:DayOfMonth", 32)],
    [E("Calendar:Type", 0), E("Calendar:Until", "someday")],
    [E("Calendar:Type", 0), E("Calendar:Occurrences", 0)],
])
def test_bad_recurrence_is_left_out(bad: list[Element]) -> None:
    """Issue 8: a recurrence that cannot be read costs the value, never the event."""
    rec = Element("Calendar:Recurrence", children=bad)
    d = from_eas("Calendar", appdata([E("Calendar:StartTime", "20260310T090000Z"),
                                      E("Calendar:Subject", "kept"), rec]), "14.1")
    assert d["Subject"] == "kept" and d["StartTime"] == "20260310T090000Z"
    if "Recurrence" in d:       # a bad pattern field alone is left out (or made anew)
        assert d["Recurrence"]["Type"] in (0, 1, 2)
        for e in bad[1:]:
            assert str(d["Recurrence"].get(e.tag.partition(":")[2])) != e.value
    else:
        assert d[DROPPED] == ["Recurrence"]


# -- exceptions ----------------------------------------------------------------------------------

def test_exceptions_from_16_use_instance_id() -> None:
    ad = appdata([E("Calendar:StartTime", "20260310T090000Z"),
                  E("Calendar:Recurrence", E("Calendar:Type", 0)),
                  E("Calendar:Exceptions",
                    E("Calendar:Exception", E("Calendar:Deleted", 1),
                      E("AirSyncBase:InstanceId", "20260311T090000Z")),
                    E("Calendar:Exception", E("AirSyncBase:InstanceId", "2026-03-12T09:00:00Z"),
                      E("Calendar:Subject", "changed"), E("Calendar:Deleted", 0)))])
    assert from_eas("Calendar", ad, "16.1")["Exceptions"] == [
        {"ExceptionStartTime": "20260311T090000Z", "Deleted": 1},
        {"ExceptionStartTime": "20260312T090000Z", "Subject": "changed"}]


def test_too_many_exceptions() -> None:
    exceptions = [E("Calendar:Exception", E("Calendar:Deleted", 1),
                    E("Calendar:ExceptionStartTime",
                      (datetime(2026, 1, 1, 9, tzinfo=UTC) + timedelta(days=i)).strftime(
                          "%Y%m%dT%H%M%SZ")))
                  for i in range(257)]
    ad = appdata([E("Calendar:StartTime", "20260101T090000Z"),
                  E("Calendar:Recurrence", E("Calendar:Type", 0)),
                  Element("Calendar:Exceptions", children=exceptions)])
    # MS-ASCAL 2.2.2.22 allows 256: the first 256 are kept, the event too (issue 8)
    kept = from_eas("Calendar", ad, "14.1")["Exceptions"]
    assert len(kept) == 256 and kept[-1]["ExceptionStartTime"] == "20260913T090000Z"
    ad.children[2].children.pop()
    assert len(from_eas("Calendar", ad, "14.1")["Exceptions"]) == 256


def test_exception_without_start_is_left_out() -> None:
    ad = appdata([E("Calendar:Recurrence", E("Calendar:Type", 0)),
                  E("Calendar:Exceptions", E("Calendar:Exception", E("Calendar:Deleted", 1)),
                    E("Calendar:Exception", E("Calendar:Deleted", 1),
                      E("Calendar:ExceptionStartTime", "20260312T090000Z")))])
    assert from_eas("Calendar", ad, "14.1")["Exceptions"] == [
        {"ExceptionStartTime": "20260312T090000Z", "Deleted": 1}]


def test_apply_instance_change() -> None:
    master = {"StartTime": "20260310T090000Z", "Subject": "daily",
              "Recurrence": {"Type": 0}, "Exceptions": [
                  {"ExceptionStartTime": "20260312T090000Z", "Deleted": 1}]}
    deleted = apply_instance_change(master, "20260311T090000Z", None)
    assert deleted["Exceptions"] == [
        {"ExceptionStartTime": "20260311T090000Z", "Deleted": 1},
        {"ExceptionStartTime": "20260312T090000Z", "Deleted": 1}]
    assert master["Exceptions"] == [{"ExceptionStartTime": "20260312T090000Z", "Deleted": 1}]
    new = {"Subject": "moved", "StartTime": "20260313T110000Z", "EndTime": "20260313T120000Z",
           "Recurrence": {"Type": 5}, "UID": "x", "Location": ""}
    changed = apply_instance_change(deleted, "2026-03-13T09:00:00.000Z", new)
    assert changed["Exceptions"][-1] == {
        "ExceptionStartTime": "20260313T090000Z", "Subject": "moved",
        "StartTime": "20260313T110000Z", "EndTime": "20260313T120000Z"}
    assert changed["Subject"] == "daily" and changed["Recurrence"] == {"Type": 0}
    # restoring a deleted occurrence by changing it replaces the deletion
    restored = apply_instance_change(changed, "20260311T090000Z", {"Subject": "back"})
    assert {"ExceptionStartTime": "20260311T090000Z", "Subject": "back"} in \
        restored["Exceptions"]
    assert len(restored["Exceptions"]) == 3
    with pytest.raises(ItemError):
        apply_instance_change({"Subject": "single"}, "20260311T090000Z", None)
    with pytest.raises(ItemError):
        apply_instance_change(master, "not-a-date", None)
    full = dict(master, Exceptions=[
        {"ExceptionStartTime": (datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=i)).strftime(
            "%Y%m%dT%H%M%SZ"), "Deleted": 1} for i in range(256)])
    with pytest.raises(ItemError):
        apply_instance_change(full, "20260311T090000Z", None)


def test_instance_change_from_16_client_round_trip() -> None:
    """A 16.x Change with InstanceId: its ApplicationData parsed, applied, sent back."""
    master = from_eas("Calendar", appdata(to_eas("Calendar", rich_event(), "16.1")), "16.1")
    ad = appdata([E("Calendar:Subject", "only this one"),
                  E("Calendar:StartTime", "20260407T100000Z"),
                  E("Calendar:EndTime", "20260407T110000Z")])
    new = from_eas("Calendar", ad, "16.1")
    item = apply_instance_change(master, "20260407T080000Z", new)
    els = to_eas("Calendar", item, "16.1")
    exceptions = next(e for e in els if e.tag == "Calendar:Exceptions")
    last = exceptions.children[-1]
    assert last.findtext("AirSyncBase:InstanceId") == "20260407T080000Z"
    assert last.findtext("Calendar:Subject") == "only this one"


# -- validation ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    E("Calendar:StartTime", "tomorrow"), E("Calendar:EndTime", "20261340T000000Z"),
    E("Calendar:Reminder", "-1"), E("Calendar:BusyStatus", "9"), E("Calendar:Sensitivity", "x"),
    E("Calendar:AllDayEvent", "2"), E("Calendar:MeetingStatus", "16"),
    E("Calendar:Attendees", E("Calendar:Attendee", E("Calendar:Email", "a@b"),
                              E("Calendar:Name", "A"), E("Calendar:AttendeeStatus", 9))),
    E("Calendar:Attendees", E("Calendar:Attendee", E("Calendar:Email", "a@b"),
                              E("Calendar:Name", "A"), E("Calendar:AttendeeType", 0))),
])
def test_invalid_value_is_left_out(bad: Element) -> None:
    """Issue 8: no item is refused for one bad value; that value is left out."""
    d = from_eas("Calendar", appdata([E("Calendar:Subject", "kept"), bad]), "14.1")
    assert d["Subject"] == "kept"
    if bad.tag == "Calendar:Attendees":     # the attendee stays, without the bad field
        assert d["Attendees"] == [{"Email": "a@b", "Name": "A"}]
    else:
        name = bad.tag.partition(":")[2]
        assert name not in d and d[DROPPED] == [name]


def test_compact_and_extended_dates_accepted() -> None:
    ad = appdata([E("Calendar:StartTime", "2026-03-10T09:00:00.000Z"),
                  E("Calendar:EndTime", "20260310T1000Z"),
                  E("Calendar:DtStamp", "20260301")])
    assert from_eas("Calendar", ad, "14.1") == {
        "StartTime": "20260310T090000Z", "EndTime": "20260310T100000Z",
        "DtStamp": "20260301T000000Z"}


def test_attendee_name_defaults_to_email() -> None:
    els = to_eas("Calendar", {"Attendees": [{"Email": "x@example.org"}, {"Name": "no mail"}]},
                 "14.1")
    att = next(e for e in els if e.tag == "Calendar:Attendees")
    assert att == E("Calendar:Attendees", E("Calendar:Attendee",
                                            E("Calendar:Email", "x@example.org"),
                                            E("Calendar:Name", "x@example.org")))


# -- ghosting and merges -------------------------------------------------------------------------

def test_supported_calendar_names() -> None:
    sup = E("AirSync:Supported", E("Calendar:Timezone"), E("Calendar:Subject"),
            E("Calendar:Recurrence"), E("AirSyncBase:Body"))
    assert supported_names(sup) == ["Timezone", "Subject", "Recurrence", "Body"]


def test_merge_rules_for_events() -> None:
    old = rich_event()
    new = {"Subject": "renamed", "StartTime": old["StartTime"], "EndTime": old["EndTime"],
           "Timezone": old["Timezone"], "TimezoneId": ROME, "Recurrence": old["Recurrence"]}
    replaced = merge_change("Calendar", old, new, None)
    assert replaced["UID"] == old["UID"]                    # server-kept
    assert "Exceptions" not in replaced and "Location" not in replaced
    ghosted = merge_change("Calendar", old, new, [])
    assert ghosted == dict(old, Subject="renamed")
    listed = merge_change("Calendar", old, new, ["Subject", "Location", "Exceptions"])
    assert "Location" not in listed and "Exceptions" not in listed
    assert listed["Attendees"] == old["Attendees"]


def test_merge_16_keeps_exceptions_unless_pattern_changes() -> None:
    old = rich_event()
    q16 = DeviceQuirks(device_type="iPhone", protocol_version="16.1")
    new = {"Subject": "renamed", "StartTime": old["StartTime"], "EndTime": old["EndTime"],
           "Recurrence": old["Recurrence"]}
    assert merge_change("Calendar", old, new, None, q16)["Exceptions"] == old["Exceptions"]
    moved = dict(new, StartTime="20260310T100000Z")
    assert "Exceptions" not in merge_change("Calendar", old, moved, None, q16)
    repattern = dict(new, Recurrence={"Type": 0})
    assert "Exceptions" not in merge_change("Calendar", old, repattern, [], q16)


def test_merge_timezone_id_follows_timezone() -> None:
    old = {"Timezone": ROME_BLOB, "TimezoneId": ROME, "Subject": "s",
           "Location": "x", "LocationDetails": {"City": "Roma"}}
    # a new blob that maps nowhere: TimezoneId goes with it
    assert merge_change("Calendar", old, {"Timezone": "AAAA", "Subject": "s"}, None) == {
        "Timezone": "AAAA", "Subject": "s"}
    assert merge_change("Calendar", old, {"Timezone": NY_BLOB,
                                          "TimezoneId": "America/New_York"}, [])[
        "TimezoneId"] == "America/New_York"
    # Timezone not sent: the item's zone stays known
    assert merge_change("Calendar", old, {"Subject": "s"}, None) == {
        "TimezoneId": ROME, "Subject": "s"}
    # ghosted Location keeps its details; a new Location replaces them
    assert merge_change("Calendar", old, {"Subject": "t"}, [])["LocationDetails"] == {
        "City": "Roma"}
    assert "LocationDetails" not in merge_change("Calendar", old, {"Location": "y"}, [])


def test_filter_window_calendar() -> None:
    now = datetime(2026, 5, 31, 12, tzinfo=UTC).timestamp()
    def start(ft: int) -> datetime:
        w = filter_window(ft, "Calendar", now)
        assert w is not None and w[1] is None and w[0] is not None
        return datetime.fromtimestamp(w[0], UTC)
    assert start(4) == datetime(2026, 5, 17, 12, tzinfo=UTC)
    assert start(5) == datetime(2026, 4, 30, 12, tzinfo=UTC)
    assert start(6) == datetime(2026, 2, 28, 12, tzinfo=UTC)
    assert start(7) == datetime(2025, 11, 30, 12, tzinfo=UTC)
    for ft in (0, 1, 2, 3, 8, 9):
        assert filter_window(ft, "Calendar", now) is None
    assert filter_window(5, "Contacts", now) is None


# -- property: rich random events survive every version ---------------------------------------

# C0 controls but tab, LF, CR are removed on input (issue #10, point 8)
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(
    chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))),
                min_size=1, max_size=30)
_email = st.from_regex(r"[a-z]{1,8}@[a-z]{1,8}\.example", fullmatch=True)
_attendee = st.fixed_dictionaries({"Email": _email, "Name": _text}, optional={
    "AttendeeStatus": st.sampled_from([0, 2, 3, 4, 5]), "AttendeeType": st.integers(1, 3)})


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    zone = draw(st.sampled_from([ROME, "America/New_York", "Asia/Tokyo", "Australia/Sydney",
                                 "UTC", "Asia/Kolkata"]))
    start = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 1, 1)))
    start = start.replace(second=0, microsecond=0, tzinfo=UTC)
    end = start + timedelta(minutes=draw(st.integers(0, 5000)))
    data: dict[str, Any] = {
        "Timezone": zone_to_blob(zone, start.year), "TimezoneId": zone, "AllDayEvent": 0,
        "StartTime": start.strftime("%Y%m%dT%H%M%SZ"), "EndTime": end.strftime("%Y%m%dT%H%M%SZ"),
    }
    optional = draw(st.fixed_dictionaries({}, optional={
        "Subject": _text, "Location": _text, "OrganizerName": _text, "OrganizerEmail": _email,
        "BusyStatus": st.integers(0, 4), "Sensitivity": st.integers(0, 3),
        "MeetingStatus": st.sampled_from([0, 1, 3, 5, 7]), "Reminder": st.integers(0, 20160),
        "Categories": st.lists(_text, min_size=1, max_size=3),
        "Attendees": st.lists(_attendee, min_size=1, max_size=3),
        "Body": _text.map(lambda t: {"Type": 1, "Data": t}),
        "ResponseType": st.integers(0, 5), "OnlineMeetingConfLink": _text,
        "Recurrence": st.sampled_from(RECURRENCES),
    }))
    data.update(optional)
    if "Recurrence" in data:
        data["Recurrence"] = dict(data["Recurrence"])
        n = draw(st.integers(0, 3))
        excs = []
        for i in range(n):
            orig = (start + timedelta(days=7 * (i + 1))).strftime("%Y%m%dT%H%M%SZ")
            if draw(st.booleans()):
                excs.append({"ExceptionStartTime": orig, "Deleted": 1})
            else:
                excs.append({"ExceptionStartTime": orig, "Subject": draw(_text),
                             "Reminder": draw(st.integers(0, 60))})
        if excs:
            data["Exceptions"] = excs
    return data


@settings(max_examples=120, deadline=None)
@given(events(), st.sampled_from(VERSIONS))
def test_event_round_trip_property(data: dict[str, Any], version: str) -> None:
    els = to_eas("Calendar", data, version)
    check_tags(els, version)
    assert from_eas("Calendar", appdata(els), version) == expected_for(data, version)


def test_from_eas_records_the_version_for_merge() -> None:
    """An engine passing the same quirks to from_eas and merge_change gets the 16.x rule."""
    old = rich_event()
    quirks = DeviceQuirks(device_type="iPhone")
    rec = next(e for e in to_eas("Calendar", old, "16.1") if e.tag == "Calendar:Recurrence")
    new = from_eas("Calendar", appdata([E("Calendar:Subject", "renamed"),
                                        E("Calendar:StartTime", old["StartTime"]), rec]),
                   "16.1", quirks)
    assert quirks.protocol_version == "16.1"
    assert merge_change("Calendar", old, new, None, quirks)["Exceptions"] == old["Exceptions"]
    # 16.x ghosts a left-out Recurrence (MS-ASCAL 3.1.5.3): series and exceptions stay
    kept = merge_change("Calendar", old, {"Subject": "renamed"}, None, quirks)
    assert kept["Recurrence"] == old["Recurrence"] and kept["Exceptions"] == old["Exceptions"]
    # the series made single (an empty Recurrence): its exceptions go too
    single = from_eas("Calendar", appdata([E("Calendar:Subject", "renamed"),
                                           E("Calendar:Recurrence")]), "16.1", quirks)
    made = merge_change("Calendar", old, single, None, quirks)
    assert "Exceptions" not in made and "Recurrence" not in made
    q14 = DeviceQuirks(device_type="iPhone")
    new = from_eas("Calendar", appdata([E("Calendar:Subject", "renamed")]), "14.1", q14)
    assert "Exceptions" not in merge_change("Calendar", old, new, None, q14)


def test_16_all_day_series_in_date_form_round_trip() -> None:
    """An all-day weekly series written by a 16.1 phone in New York in the date form
    (MS-ASCAL 2.2.2.1; EAS-4-TbSync PR 324): Until and an occurrence deleted by
    InstanceId name days, so the last Monday stays in the series and the right one goes;
    a 14.1 reader gets local midnights in New York, a 16.1 reader the date form again."""
    quirks = DeviceQuirks(device_type="iPhone", protocol_version="16.1")
    ad = appdata([E("Calendar:Timezone", NY_BLOB), E("Calendar:AllDayEvent", 1),
                  E("Calendar:StartTime", "20261207T000000Z"),
                  E("Calendar:EndTime", "20261208T000000Z"), E("Calendar:Subject", "Gym"),
                  E("Calendar:Recurrence", E("Calendar:Type", 1), E("Calendar:Interval", 1),
                    E("Calendar:Until", "20261228T000000Z"), E("Calendar:DayOfWeek", 2))])
    stored = merge_change("Calendar", {}, from_eas("Calendar", ad, "16.1", quirks), None, quirks)
    # local midnight in New York is 05:00Z in December
    assert (stored["StartTime"], stored["EndTime"]) == ("20261207T050000Z", "20261208T050000Z")
    assert stored["Recurrence"]["Until"] == "20261228T050000Z"
    stored = apply_instance_change(stored, "20261214T000000Z", None)
    assert stored["Exceptions"] == [{"ExceptionStartTime": "20261214T050000Z", "Deleted": 1}]
    els14 = {e.tag: e for e in to_eas("Calendar", stored, "14.1")}
    assert els14["Calendar:StartTime"].value == "20261207T050000Z"
    assert els14["Calendar:Recurrence"].findtext("Calendar:Until") == "20261228T050000Z"
    assert els14["Calendar:Exceptions"].children[0].findtext(
        "Calendar:ExceptionStartTime") == "20261214T050000Z"
    els16 = {e.tag: e for e in to_eas("Calendar", stored, "16.1")}
    assert els16["Calendar:StartTime"].value == "20261207T000000Z"
    assert els16["Calendar:Recurrence"].findtext("Calendar:Until") == "20261228T000000Z"
    assert els16["Calendar:Exceptions"].children[0].findtext(
        "AirSyncBase:InstanceId") == "20261214T000000Z"
    assert els16["Calendar:Timezone"].value == UTC_BLOB
