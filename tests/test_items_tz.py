"""Timezone blobs (MS-ASDTYPE 2.7.6) <-> IANA zones."""

from __future__ import annotations

import base64
import struct
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easync.items.tz import (
    BlobZone,
    blob_matches_zone,
    blob_to_zone,
    blob_tzinfo,
    decode_blob,
    zone_to_blob,
)

# -- expected blobs, assembled field by field from the spec layout ------------------------


def _name(text: str) -> bytes:
    """WCHAR[32]: UTF-16LE, NUL padded to 64 bytes."""
    raw = text.encode("utf-16-le")
    assert len(raw) <= 62
    return raw + b"\x00" * (64 - len(raw))


def _systemtime(month: int = 0, dow: int = 0, week: int = 0, hour: int = 0) -> bytes:
    """SYSTEMTIME: wYear, wMonth, wDayOfWeek, wDay, wHour, wMinute, wSecond, wMs."""
    return b"".join(v.to_bytes(2, "little") for v in (0, month, dow, week, hour, 0, 0, 0))


def _int32(v: int) -> bytes:
    return v.to_bytes(4, "little", signed=True)


def _blob(bias: int, std_name: str = "", std: bytes = b"", dst_name: str = "",
          dst: bytes = b"", dst_bias: int = 0) -> str:
    raw = (_int32(bias) + _name(std_name) + (std or _systemtime()) + _int32(0)
           + _name(dst_name) + (dst or _systemtime()) + _int32(dst_bias))
    assert len(raw) == 172
    return base64.b64encode(raw).decode()


ROME_2026 = _blob(-60, "Europe/Rome", _systemtime(10, 0, 5, 3),
                  "Europe/Rome", _systemtime(3, 0, 5, 2), -60)
NEW_YORK_2026 = _blob(300, "America/New_York", _systemtime(11, 0, 1, 2),
                      "America/New_York", _systemtime(3, 0, 2, 2), -60)
TOKYO = _blob(-540, "Asia/Tokyo")
SYDNEY_2026 = _blob(-600, "Australia/Sydney", _systemtime(4, 0, 1, 3),
                    "Australia/Sydney", _systemtime(10, 0, 1, 2), -60)
UTC_ZEROS = base64.b64encode(bytes(172)).decode()

# The two examples of the protocol notes (no names; from a different source than ours).
NOTES_BERLIN = (
    "xP///wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAoAAAAFAAMAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAMAAAAFAAIAAAAAAAAAxP///w==")
NOTES_NEW_YORK = (
    "LAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAsAAAABAAIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAMAAAACAAIAAAAAAAAAxP///w==")


@pytest.mark.parametrize(("zone", "expected"), [
    ("Europe/Rome", ROME_2026),
    ("America/New_York", NEW_YORK_2026),
    ("Asia/Tokyo", TOKYO),
    ("Australia/Sydney", SYDNEY_2026),
    ("UTC", UTC_ZEROS),
])
def test_zone_to_blob_bytes(zone: str, expected: str) -> None:
    assert zone_to_blob(zone, 2026) == expected


@pytest.mark.parametrize(("blob", "zone"), [
    (ROME_2026, "Europe/Rome"),
    (NEW_YORK_2026, "America/New_York"),
    (TOKYO, "Asia/Tokyo"),
    (SYDNEY_2026, "Australia/Sydney"),
    (UTC_ZEROS, "UTC"),
])
def test_blob_to_zone_hand_built(blob: str, zone: str) -> None:
    assert blob_to_zone(blob, 2026) == zone


def test_utc_blob_is_232_chars_of_zeros() -> None:
    blob = zone_to_blob("UTC", 2026)
    assert len(blob) == 232 and base64.b64decode(blob) == bytes(172)
    assert zone_to_blob("Etc/UTC", 2026) == blob


def test_notes_examples_match_rules_and_map_back() -> None:
    # the same rules as ours apart from the names
    for notes, zone in ((NOTES_BERLIN, "Europe/Berlin"), (NOTES_NEW_YORK, "America/New_York")):
        ours, theirs = decode_blob(zone_to_blob(zone, 2026)), decode_blob(notes)
        assert ours is not None and theirs is not None
        assert (ours.bias, ours.standard_date, ours.daylight_date, ours.daylight_bias) == (
            theirs.bias, theirs.standard_date, theirs.daylight_date, theirs.daylight_bias)
        assert blob_to_zone(notes, 2026) == zone
        assert blob_matches_zone(notes, zone, 2026)
    # a nameless blob with Rome's rules maps to the most common zone of that rule set
    assert blob_to_zone(NOTES_BERLIN, 2026) == "Europe/Berlin"
    assert blob_matches_zone(NOTES_BERLIN, "Europe/Rome", 2026)
    assert not blob_matches_zone(NOTES_BERLIN, "America/New_York", 2026)


def test_nameless_blobs_of_common_zones() -> None:
    assert blob_to_zone(_blob(-540), 2026) == "Asia/Tokyo"
    assert blob_to_zone(_blob(-330), 2026) == "Asia/Kolkata"
    assert blob_to_zone(_blob(0), 2026) == "UTC"
    sydney = _blob(-600, "", _systemtime(4, 0, 1, 3), "", _systemtime(10, 0, 1, 2), -60)
    assert blob_to_zone(sydney, 2026) == "Australia/Sydney"


def test_windows_names_are_hints() -> None:
    assert blob_to_zone(_blob(-540, "Korea Standard Time"), 2026) == "Asia/Seoul"
    assert blob_to_zone(_blob(-540, "Tokyo Standard Time"), 2026) == "Asia/Tokyo"
    # a hint whose rules do not match is ignored
    assert blob_to_zone(_blob(-540, "Eastern Standard Time"), 2026) == "Asia/Tokyo"


def test_week_encoding_does_not_matter() -> None:
    """Devices may say "4th Sunday" where we say "last": same instant, same zone."""
    # 2026: the last Sunday of October is the 25th, i.e. also the 4th
    rome = _blob(-60, "", _systemtime(10, 0, 4, 3), "", _systemtime(3, 0, 5, 2), -60)
    assert blob_to_zone(rome, 2026) == "Europe/Berlin"


@pytest.mark.parametrize("year", [2000, 2010, 2026, 2035])
@pytest.mark.parametrize("zone", ["Europe/Rome", "America/New_York", "Asia/Tokyo",
                                  "Australia/Sydney", "UTC", "Asia/Kolkata", "Europe/London",
                                  "America/Sao_Paulo", "Pacific/Auckland", "Asia/Kathmandu"])
def test_round_trip_zone_blob_zone(zone: str, year: int) -> None:
    assert blob_to_zone(zone_to_blob(zone, year), year) == zone


def test_unknown_blobs_give_none() -> None:
    odd_dst = _blob(-37, "", _systemtime(3, 0, 2, 1), "", _systemtime(9, 0, 2, 1), -60)
    assert blob_to_zone(odd_dst, 2026) is None
    assert blob_to_zone(_blob(-37), 2026) is None              # 37 minutes: no zone
    assert blob_to_zone("", 2026) is None
    assert blob_to_zone(None) is None
    assert blob_to_zone("not base64 at all!!") is None
    assert blob_to_zone(base64.b64encode(b"short").decode()) is None
    bad_month = _blob(-60, "", _systemtime(13, 0, 1, 2), "", _systemtime(3, 0, 1, 2), -60)
    assert blob_to_zone(bad_month, 2026) is None


def test_fixed_offset_fallback() -> None:
    # +1 without DST exists (Africa/Lagos); a whole-hour offset no preferred zone has:
    assert blob_to_zone(_blob(-60), 2026) == "Africa/Lagos"
    zone = blob_to_zone(_blob(-13 * 60), 2026)
    assert zone is not None
    assert ZoneInfo(zone).utcoffset(datetime(2026, 1, 1)) == timedelta(hours=13)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary(min_size=0, max_size=400).map(
    lambda b: base64.b64encode(b).decode())), st.integers(min_value=-5, max_value=3000))
def test_blob_to_zone_never_raises(blob: str, year: int) -> None:
    result = blob_to_zone(blob, year)
    assert result is None or isinstance(result, str)


def test_zone_to_blob_unknown_zone() -> None:
    with pytest.raises(ValueError):
        zone_to_blob("Mars/Olympus_Mons", 2026)


@pytest.mark.parametrize("zone", ["Europe/Rome", "America/New_York", "Australia/Sydney",
                                  "Asia/Tokyo"])
def test_blob_zone_follows_the_rules(zone: str) -> None:
    """A BlobZone built from our blob gives the same offsets as the IANA zone all year."""
    rule = decode_blob(zone_to_blob(zone, 2026))
    assert rule is not None
    bz, iana = BlobZone(rule), ZoneInfo(zone)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    while t.year == 2026:
        assert t.astimezone(bz).utcoffset() == t.astimezone(iana).utcoffset(), t
        local = t.astimezone(iana).replace(tzinfo=None)
        if t.astimezone(iana).fold == 0 and (t + timedelta(hours=2)).astimezone(iana).dst() \
                == t.astimezone(iana).dst() == (t - timedelta(hours=2)).astimezone(iana).dst():
            assert local.replace(tzinfo=bz).utcoffset() == t.astimezone(iana).utcoffset()
        t += timedelta(hours=7)


def test_southern_hemisphere_offsets() -> None:
    rule = decode_blob(SYDNEY_2026)
    assert rule is not None
    bz = BlobZone(rule)
    assert datetime(2026, 1, 15, tzinfo=UTC).astimezone(bz).utcoffset() == timedelta(hours=11)
    assert datetime(2026, 7, 15, tzinfo=UTC).astimezone(bz).utcoffset() == timedelta(hours=10)


def test_blob_tzinfo() -> None:
    assert blob_tzinfo(ROME_2026) == ZoneInfo("Europe/Rome")
    odd = _blob(-37)
    tz = blob_tzinfo(odd)
    assert isinstance(tz, BlobZone)
    assert datetime(2026, 1, 1, tzinfo=UTC).astimezone(tz).utcoffset() == timedelta(minutes=37)
    assert blob_tzinfo("") is None


def test_struct_layout_sanity() -> None:
    """Our hand builder agrees with a struct description of TIME_ZONE_INFORMATION."""
    fields = struct.unpack("<i64s8Hi64s8Hi", base64.b64decode(NEW_YORK_2026))
    assert fields[0] == 300
    assert fields[2:10] == (0, 11, 0, 1, 2, 0, 0, 0)
    assert fields[12:20] == (0, 3, 0, 2, 2, 0, 0, 0)
    assert fields[20] == -60
