"""EAS ``Calendar:Timezone`` blobs and IANA zones (MS-ASDTYPE 2.7.6).

A blob is the base64 text of a 172-byte little-endian TIME_ZONE_INFORMATION::

    offset size field
    0      4    Bias (int32 minutes; UTC = local + Bias)
    4      64   StandardName (32 UTF-16LE code units, NUL padded)
    68     16   StandardDate (SYSTEMTIME: 8 x uint16 Year, Month, DayOfWeek, Day,
                Hour, Minute, Second, Milliseconds)
    84     4    StandardBias (int32)
    88     64   DaylightName
    152    16   DaylightDate (SYSTEMTIME)
    168    4    DaylightBias (int32)

A SYSTEMTIME with Year 0 is a yearly rule: in Month, the Day-th (1..5, 5 = last)
DayOfWeek (0 = Sunday) at Hour:Minute local time.  Month 0 means "no DST".
StandardDate's time is the wall-clock time in daylight time at which daylight time
ends; DaylightDate's time is the wall-clock standard time at which it begins.

``zone_to_blob`` writes the zone's rules for one year and puts the IANA name in
StandardName (devices only use the rules; the name lets ``blob_to_zone`` recover
the exact zone from a blob we generated).  ``blob_to_zone`` compares the blob's
offsets and transition instants for a year with those of IANA zones (a name hint,
then a list of common zones, then every zone) and never raises.
"""

from __future__ import annotations

import base64
import binascii
import calendar as _cal
import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

__all__ = [
    "BLOB_SIZE",
    "UTC_BLOB",
    "BlobZone",
    "TzRule",
    "blob_matches_zone",
    "blob_to_zone",
    "blob_tzinfo",
    "decode_blob",
    "encode_blob",
    "zone_rule",
    "zone_to_blob",
]

BLOB_SIZE = 172
_FMT = "<i64s8Hi64s8Hi"
assert struct.calcsize(_FMT) == BLOB_SIZE
_NO_DATE = (0, 0, 0, 0, 0, 0, 0, 0)
UTC_BLOB = base64.b64encode(bytes(BLOB_SIZE)).decode("ascii")
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/GMT", "GMT", "Etc/Zulu",
                        "Zulu", "Etc/Universal", "Universal", "Etc/GMT0", "Etc/GMT+0",
                        "Etc/GMT-0", "GMT0", "GMT+0", "GMT-0", "Etc/Greenwich", "Greenwich"})


@dataclass(frozen=True)
class TzRule:
    """The decoded fields of a TIME_ZONE_INFORMATION."""

    bias: int
    standard_name: str = ""
    standard_date: tuple[int, ...] = _NO_DATE
    standard_bias: int = 0
    daylight_name: str = ""
    daylight_date: tuple[int, ...] = _NO_DATE
    daylight_bias: int = 0

    @property
    def has_dst(self) -> bool:
        return (self.standard_date[1] != 0 and self.daylight_date[1] != 0
                and self.standard_bias != self.daylight_bias)

    @property
    def std_offset(self) -> int:
        """Standard time's offset from UTC in minutes (east positive)."""
        return -(self.bias + (self.standard_bias if self.has_dst else 0))

    @property
    def dst_offset(self) -> int:
        return -(self.bias + self.daylight_bias)


def _name_bytes(name: str) -> bytes:
    raw = name[:31].encode("utf-16-le")
    return raw + bytes(64 - len(raw))


def _name_text(raw: bytes) -> str:
    text = raw.decode("utf-16-le", "replace")
    return text.split("\x00", 1)[0]


def encode_blob(rule: TzRule) -> str:
    """Base64 text of a rule's 172-byte structure."""
    packed = struct.pack(
        _FMT, rule.bias, _name_bytes(rule.standard_name), *rule.standard_date,
        rule.standard_bias, _name_bytes(rule.daylight_name), *rule.daylight_date,
        rule.daylight_bias)
    return base64.b64encode(packed).decode("ascii")


def decode_blob(blob_b64: str | None) -> TzRule | None:
    """Parse a blob; None when it is empty, not base64, too short or nonsensical."""
    if not blob_b64:
        return None
    text = "".join(blob_b64.split()).rstrip("\x00")
    if not text:
        return None
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < BLOB_SIZE:
        return None
    fields = struct.unpack(_FMT, raw[:BLOB_SIZE])
    rule = TzRule(
        bias=fields[0], standard_name=_name_text(fields[1]), standard_date=tuple(fields[2:10]),
        standard_bias=fields[10], daylight_name=_name_text(fields[11]),
        daylight_date=tuple(fields[12:20]), daylight_bias=fields[20])
    for value in (rule.bias, rule.standard_bias, rule.daylight_bias):
        if not -24 * 60 <= value <= 24 * 60:
            return None
    for st in (rule.standard_date, rule.daylight_date):
        if st[1] > 12 or st[2] > 6 or st[4] > 24 or st[5] > 59:
            return None
        if st[1] and st[0] == 0 and not 1 <= st[3] <= 5:
            return None
    return rule


# -- rule evaluation ----------------------------------------------------------------

def _nth_weekday(year: int, month: int, dow_sun0: int, nth: int) -> int:
    """Day of month of the nth (1..5, 5 = last) weekday (0 = Sunday)."""
    first_wd = date(year, month, 1).weekday()          # Monday = 0
    want = (dow_sun0 - 1) % 7                           # to Monday = 0
    day = 1 + (want - first_wd) % 7 + 7 * (max(nth, 1) - 1)
    last = _cal.monthrange(year, month)[1]
    while day > last:
        day -= 7
    return day


def _resolve(st: tuple[int, ...], year: int) -> datetime | None:
    """The naive local wall-clock datetime a SYSTEMTIME rule names in ``year``."""
    y, month, dow, day, hour, minute, second, ms = st
    if not month:
        return None
    try:
        if y:   # absolute date (only meaningful for that year; apply it to this one)
            base = datetime(year, month, min(day, _cal.monthrange(year, month)[1]))
        else:
            base = datetime(year, month, _nth_weekday(year, month, dow, day))
    except ValueError:
        return None
    return base + timedelta(hours=hour, minutes=minute, seconds=second, milliseconds=ms)


def _rule_instants(rule: TzRule, year: int) -> tuple[datetime, datetime] | None:
    """(UTC instant daylight time starts, UTC instant it ends) in ``year``, naive UTC."""
    if not rule.has_dst:
        return None
    dst_local = _resolve(rule.daylight_date, year)
    std_local = _resolve(rule.standard_date, year)
    if dst_local is None or std_local is None:
        return None
    dst_start = dst_local - timedelta(minutes=rule.std_offset)
    dst_end = std_local - timedelta(minutes=rule.dst_offset)
    return dst_start, dst_end


class BlobZone(tzinfo):
    """A tzinfo following a blob's rules (used when no IANA zone matches)."""

    def __init__(self, rule: TzRule) -> None:
        self.rule = rule

    def _is_dst_utc(self, utc_naive: datetime) -> bool:
        inst = _rule_instants(self.rule, utc_naive.year)
        if inst is None:
            return False
        start, end = inst
        if start <= end:
            return start <= utc_naive < end
        return utc_naive >= start or utc_naive < end

    def utcoffset(self, dt: datetime | None) -> timedelta:
        std = timedelta(minutes=self.rule.std_offset)
        if dt is None or not self.rule.has_dst:
            return std
        dst = timedelta(minutes=self.rule.dst_offset)
        naive = dt.replace(tzinfo=None)
        as_dst = self._is_dst_utc(naive - dst)          # valid reading as daylight time
        as_std = not self._is_dst_utc(naive - std)      # valid reading as standard time
        if as_dst and as_std:                           # repeated hour: PEP 495 fold
            return std if dt.fold else dst
        if as_dst:
            return dst
        if as_std:
            return std
        return dst if dt.fold else std                  # skipped hour

    def dst(self, dt: datetime | None) -> timedelta:
        return self.utcoffset(dt) - timedelta(minutes=self.rule.std_offset)

    def tzname(self, dt: datetime | None) -> str:
        return self.rule.standard_name or "blob"

    def fromutc(self, dt: datetime) -> datetime:
        naive = dt.replace(tzinfo=None)
        in_dst = self._is_dst_utc(naive)
        off = self.rule.dst_offset if in_dst else self.rule.std_offset
        local = naive + timedelta(minutes=off)
        fold = 0
        if not in_dst and self.rule.has_dst and \
                self._is_dst_utc(local - timedelta(minutes=self.rule.dst_offset)):
            fold = 1                                    # second pass of a repeated hour
        return local.replace(tzinfo=self, fold=fold)

    def __repr__(self) -> str:
        return f"BlobZone(bias={self.rule.bias})"


def blob_tzinfo(blob_b64: str | None) -> tzinfo | None:
    """A tzinfo for any parseable blob (matching IANA zone or the blob's own rules)."""
    rule = decode_blob(blob_b64)
    if rule is None:
        return None
    name = blob_to_zone(blob_b64)
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return BlobZone(rule)


# -- IANA zones -----------------------------------------------------------------------

def _load(zone: str) -> ZoneInfo | None:
    if not zone or "\x00" in zone or zone.startswith("/") or ".." in zone:
        return None
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _offset_min(z: tzinfo, utc_naive: datetime) -> int:
    aware = utc_naive.replace(tzinfo=UTC).astimezone(z)
    off = aware.utcoffset() or timedelta(0)
    return int(off.total_seconds() // 60)


@lru_cache(maxsize=4096)
def _transitions(zone: str, year: int) -> tuple[tuple[datetime, int, int], ...]:
    """(naive UTC instant, offset before, offset after) of every change in ``year``."""
    z = _load(zone)
    if z is None:
        return ()
    out: list[tuple[datetime, int, int]] = []
    t = datetime(year, 1, 1)
    end = datetime(year + 1, 1, 1)
    prev = _offset_min(z, t)
    step = timedelta(hours=12)
    while t < end:
        nxt = min(t + step, end)
        off = _offset_min(z, nxt)
        if off != prev:
            lo, hi = t, nxt                # offset(lo) == prev, offset(hi) == off
            while hi - lo > timedelta(minutes=1):
                mid = lo + (hi - lo) / 2
                mid = mid.replace(second=0, microsecond=0)
                if mid <= lo:
                    mid = lo + timedelta(minutes=1)
                if _offset_min(z, mid) == prev:
                    lo = mid
                else:
                    hi = mid
            if hi < end:
                out.append((hi, prev, off))
            prev = off
        t = nxt
    return tuple(out)


def _systemtime(local: datetime) -> tuple[int, ...]:
    last = _cal.monthrange(local.year, local.month)[1]
    week = 5 if local.day + 7 > last else (local.day - 1) // 7 + 1
    dow = (local.weekday() + 1) % 7
    return (0, local.month, dow, week, local.hour, local.minute, local.second, 0)


@lru_cache(maxsize=4096)
def zone_rule(zone: str, year: int) -> TzRule | None:
    """The TIME_ZONE_INFORMATION describing ``zone`` during ``year`` (None if unknown)."""
    z = _load(zone)
    if z is None:
        return None
    name = "" if zone in _UTC_NAMES else zone
    trans = _transitions(zone, year)
    offsets = {prev for _, prev, _ in trans} | {after for _, _, after in trans}
    if len(trans) >= 2 and len(offsets) == 2:
        std_off, dst_off = min(offsets), max(offsets)
        into_dst = next(t for t in trans if t[2] == dst_off)
        into_std = [t for t in trans if t[2] == std_off][-1]
        dst_local = into_dst[0] + timedelta(minutes=std_off)
        std_local = into_std[0] + timedelta(minutes=dst_off)
        return TzRule(bias=-std_off, standard_name=name, standard_date=_systemtime(std_local),
                      standard_bias=0, daylight_name=name,
                      daylight_date=_systemtime(dst_local),
                      daylight_bias=-(dst_off - std_off))
    # no (regular) daylight saving: the offset in force at the end of the year
    off = _offset_min(z, datetime(year, 12, 31, 12))
    return TzRule(bias=-off, standard_name=name)


def zone_to_blob(zone: str, year: int) -> str:
    """Base64 TIME_ZONE_INFORMATION for an IANA zone's rules in ``year``.

    Raises ValueError for an unknown zone name.
    """
    rule = zone_rule(zone, year)
    if rule is None:
        raise ValueError(f"unknown time zone {zone!r}")
    if zone in _UTC_NAMES:
        return UTC_BLOB
    return encode_blob(rule)


def _round_min(dt: datetime) -> datetime:
    return (dt + timedelta(seconds=30)).replace(second=0, microsecond=0)


def _blob_key(rule: TzRule, year: int) -> tuple[object, ...] | None:
    if not rule.has_dst:
        return (rule.std_offset,)
    inst = _rule_instants(rule, year)
    if inst is None:
        return None
    return (rule.std_offset, rule.dst_offset, _round_min(inst[0]), _round_min(inst[1]))


@lru_cache(maxsize=8192)
def _zone_key(zone: str, year: int) -> tuple[object, ...] | None:
    rule = zone_rule(zone, year)
    return None if rule is None else _blob_key(rule, year)


# Common zones, most likely first: the answer for a blob several zones share.
_PREFERRED = (
    "UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "Europe/Rome", "Europe/Madrid",
    "Europe/Amsterdam", "Europe/Brussels", "Europe/Vienna", "Europe/Zurich", "Europe/Stockholm",
    "Europe/Oslo", "Europe/Copenhagen", "Europe/Warsaw", "Europe/Prague", "Europe/Budapest",
    "Europe/Athens", "Europe/Helsinki", "Europe/Bucharest", "Europe/Kyiv", "Europe/Istanbul",
    "Europe/Moscow", "Europe/Lisbon", "Europe/Dublin", "Atlantic/Azores", "Atlantic/Reykjavik",
    "Africa/Casablanca", "Africa/Lagos", "Africa/Cairo", "Africa/Johannesburg",
    "Africa/Nairobi", "Asia/Jerusalem", "Asia/Beirut", "Asia/Riyadh", "Asia/Tehran",
    "Asia/Dubai", "Asia/Kabul", "Asia/Karachi", "Asia/Tashkent", "Asia/Kolkata",
    "Asia/Kathmandu", "Asia/Dhaka", "Asia/Yangon", "Asia/Bangkok", "Asia/Jakarta",
    "Asia/Shanghai", "Asia/Hong_Kong", "Asia/Singapore", "Asia/Taipei", "Asia/Manila",
    "Australia/Perth", "Asia/Tokyo", "Asia/Seoul", "Australia/Darwin", "Australia/Adelaide",
    "Australia/Brisbane", "Australia/Sydney", "Australia/Hobart", "Pacific/Noumea",
    "Pacific/Auckland", "Pacific/Fiji", "Pacific/Tongatapu", "Pacific/Kiritimati",
    "Pacific/Honolulu", "America/Anchorage", "America/Los_Angeles", "America/Phoenix",
    "America/Denver", "America/Chicago", "America/Mexico_City", "America/Regina",
    "America/New_York", "America/Toronto", "America/Bogota", "America/Lima",
    "America/Caracas", "America/Halifax", "America/Santiago", "America/St_Johns",
    "America/Sao_Paulo", "America/Argentina/Buenos_Aires", "America/Montevideo",
    "Atlantic/South_Georgia", "Atlantic/Cape_Verde", "Pacific/Pago_Pago", "Etc/GMT+12",
)

# Windows time zone names (what Exchange/Outlook write into StandardName) → IANA,
# after the CLDR windowsZones mapping for the "001" territory.
_WINDOWS = {
    "Dateline Standard Time": "Etc/GMT+12",
    "UTC-11": "Etc/GMT+11",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Alaskan Standard Time": "America/Anchorage",
    "Pacific Standard Time": "America/Los_Angeles",
    "US Mountain Standard Time": "America/Phoenix",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Central Standard Time (Mexico)": "America/Mexico_City",
    "Canada Central Standard Time": "America/Regina",
    "Eastern Standard Time": "America/New_York",
    "SA Pacific Standard Time": "America/Bogota",
    "Venezuela Standard Time": "America/Caracas",
    "Atlantic Standard Time": "America/Halifax",
    "Pacific SA Standard Time": "America/Santiago",
    "Newfoundland Standard Time": "America/St_Johns",
    "E. South America Standard Time": "America/Sao_Paulo",
    "Argentina Standard Time": "America/Argentina/Buenos_Aires",
    "Montevideo Standard Time": "America/Montevideo",
    "Azores Standard Time": "Atlantic/Azores",
    "Cape Verde Standard Time": "Atlantic/Cape_Verde",
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "Morocco Standard Time": "Africa/Casablanca",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Romance Standard Time": "Europe/Paris",
    "Central European Standard Time": "Europe/Warsaw",
    "W. Central Africa Standard Time": "Africa/Lagos",
    "GTB Standard Time": "Europe/Bucharest",
    "E. Europe Standard Time": "Europe/Chisinau",
    "Egypt Standard Time": "Africa/Cairo",
    "FLE Standard Time": "Europe/Kyiv",
    "Israel Standard Time": "Asia/Jerusalem",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Turkey Standard Time": "Europe/Istanbul",
    "Arab Standard Time": "Asia/Riyadh",
    "Russian Standard Time": "Europe/Moscow",
    "E. Africa Standard Time": "Africa/Nairobi",
    "Iran Standard Time": "Asia/Tehran",
    "Arabian Standard Time": "Asia/Dubai",
    "Afghanistan Standard Time": "Asia/Kabul",
    "Pakistan Standard Time": "Asia/Karachi",
    "West Asia Standard Time": "Asia/Tashkent",
    "India Standard Time": "Asia/Kolkata",
    "Nepal Standard Time": "Asia/Kathmandu",
    "Bangladesh Standard Time": "Asia/Dhaka",
    "Myanmar Standard Time": "Asia/Yangon",
    "SE Asia Standard Time": "Asia/Bangkok",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Taipei Standard Time": "Asia/Taipei",
    "W. Australia Standard Time": "Australia/Perth",
    "Tokyo Standard Time": "Asia/Tokyo",
    "Korea Standard Time": "Asia/Seoul",
    "AUS Central Standard Time": "Australia/Darwin",
    "Cen. Australia Standard Time": "Australia/Adelaide",
    "E. Australia Standard Time": "Australia/Brisbane",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "Tasmania Standard Time": "Australia/Hobart",
    "New Zealand Standard Time": "Pacific/Auckland",
    "Fiji Standard Time": "Pacific/Fiji",
    "Tonga Standard Time": "Pacific/Tongatapu",
    "Line Islands Standard Time": "Pacific/Kiritimati",
}


@lru_cache(maxsize=1)
def _all_zones() -> tuple[str, ...]:
    names = sorted(available_timezones())
    # canonical-looking "Area/City" names before legacy aliases ("US/Eastern", "EST5EDT")
    return tuple(sorted(names, key=lambda n: ("/" not in n or n.startswith(
        ("Etc/", "US/", "Canada/", "Mexico/", "Brazil/", "Chile/", "SystemV/")), n)))


@lru_cache(maxsize=64)
def _index(year: int) -> dict[tuple[object, ...], str]:
    index: dict[tuple[object, ...], str] = {}
    for zone in _PREFERRED + _all_zones():
        key = _zone_key(zone, year)
        if key is not None and key not in index:
            index[key] = zone
    return index


def _current_year() -> int:
    return datetime.now(UTC).year


def _hints(rule: TzRule) -> list[str]:
    out = []
    for name in (rule.standard_name, rule.daylight_name):
        name = name.strip()
        if not name:
            continue
        if name in _WINDOWS:
            out.append(_WINDOWS[name])
        elif "/" in name or name in _UTC_NAMES:
            out.append(name)
    return out


def blob_to_zone(blob_b64: str | None, year: int | None = None) -> str | None:
    """The IANA zone whose rules in ``year`` (default: this year) match the blob.

    None for an empty, invalid or unmatched blob; never raises.
    """
    try:
        rule = decode_blob(blob_b64)
        if rule is None:
            return None
        year = year if year and 1900 < year < 2200 else _current_year()
        if not rule.has_dst and rule.std_offset == 0:
            hinted = [h for h in _hints(rule) if _zone_key(h, year) == (0,)]
            return hinted[0] if hinted else "UTC"
        key = _blob_key(rule, year)
        if key is None:
            return None
        for zone in _hints(rule):
            if _zone_key(zone, year) == key:
                return zone
        for zone in _PREFERRED:
            if _zone_key(zone, year) == key:
                return zone
        found = _index(year).get(key)
        if found:
            return found
        if not rule.has_dst and rule.std_offset % 60 == 0 and abs(rule.std_offset) <= 14 * 60:
            hours = -rule.std_offset // 60
            return f"Etc/GMT{hours:+d}"
        return None
    except Exception:  # noqa: BLE001 - documented never to raise
        return None


def blob_matches_zone(blob_b64: str | None, zone: str, year: int) -> bool:
    """Whether the blob describes the same offsets and transitions as ``zone`` in ``year``."""
    rule = decode_blob(blob_b64)
    if rule is None:
        return False
    key = _blob_key(rule, year)
    return key is not None and key == _zone_key(zone, year)
