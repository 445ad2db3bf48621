"""Pieces shared by the contact, event and task converters."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

from twisted.logger import Logger

from easync.settings import Settings
from easync.versions import version_tuple
from easync.wbxml.element import Element

log = Logger()
# Key of a ``from_eas`` result: the properties the client sent that could not be read
# and were left out (logged), so that a Change keeps what is stored for them.
DROPPED = "_dropped"
# Errors that mean "this value cannot be read" while parsing client data.
VALUE_ERRORS = (ValueError, TypeError, OverflowError)

_DEFAULT_MAX_PICTURE = Settings().max_picture_bytes
_DEFAULT_FILEAS = Settings().fileas_order


class ItemError(ValueError):
    """The client sent item data we cannot accept (per-item Sync Status 6)."""


@dataclass
class BodyPreference:
    """One ``AirSyncBase:BodyPreference`` of a Sync or ItemOperations Options."""

    type: int
    truncation_size: int | None = None
    all_or_none: bool = False
    preview: int | None = None


@dataclass
class DeviceQuirks:
    """What we know about the device that shapes conversions.

    ``utc_offset_minutes``: the device's UTC offset when the caller knows it (makes
    birthdays sent as local midnight from UTC+13/+14 or UTC-12 land on the right day).
    ``protocol_version``: the device's EAS version; with 16.x a master Change never
    carries Exceptions, so ``merge_change`` keeps them unless the pattern changed.
    ``device_id``: the device, so that a birthday it wrote comes back to it as written.
    ``fileas_order``: how a contact's missing FileAs is made (``Settings.fileas_order``).
    """

    device_type: str = ""
    user_agent: str = ""
    os: str = ""
    utc_offset_minutes: int | None = None
    max_picture_bytes: int = _DEFAULT_MAX_PICTURE
    protocol_version: str = ""
    device_id: str = ""
    fileas_order: str = _DEFAULT_FILEAS

    @property
    def is_ios(self) -> bool:
        dt = self.device_type.lower()
        return dt.startswith(("iphone", "ipad", "ipod")) or self.user_agent.startswith("Apple-")

    @property
    def is_samsung(self) -> bool:
        return "samsung" in f"{self.device_type} {self.user_agent} {self.os}".lower()

    @property
    def is_blackberry(self) -> bool:
        text = f"{self.device_type} {self.user_agent} {self.os}".lower()
        return "blackberry" in text or self.device_type.lower().startswith("bb10")

    @property
    def is_stock_android(self) -> bool:
        """AOSP Exchange client: DeviceType "Android", not Samsung, not the Gmail app."""
        return (self.device_type.lower() == "android" and not self.is_samsung
                and not self.user_agent.lower().startswith("android-mail"))

    @property
    def birthday_hour(self) -> int:
        """UTC hour at which this device expects Birthday/Anniversary (notes 7.4)."""
        if self.is_blackberry:
            return 11
        if self.is_stock_android:
            return 8
        return 0

    @property
    def sends_empty_picture(self) -> bool:
        """iOS sends an empty Contacts:Picture on edits it means as "unchanged"."""
        return self.is_ios

    @property
    def is_16(self) -> bool:
        try:
            return version_tuple(self.protocol_version)[0] >= 16
        except ValueError:
            return False

    @classmethod
    def from_request(cls, req: Any, settings: Settings | None = None) -> DeviceQuirks:
        """Build from an ``EasRequest`` (device type, user agent, device record's OS)."""
        info = ((getattr(req, "device", None) or {}).get("info") or {})
        os_name = str(info.get("OS") or info.get("os") or "")
        kwargs: dict[str, Any] = {}
        if settings is not None:
            kwargs["max_picture_bytes"] = settings.max_picture_bytes
            kwargs["fileas_order"] = settings.fileas_order
        return cls(device_type=getattr(req, "device_type", "") or "",
                   user_agent=getattr(req, "user_agent", "") or "", os=os_name,
                   protocol_version=getattr(req, "version", "") or "",
                   device_id=getattr(req, "device_id", "") or "", **kwargs)


def vt(version: str) -> tuple[int, int]:
    try:
        return version_tuple(version)
    except ValueError as exc:
        raise ValueError(f"bad protocol version {version!r}") from exc


# -- dates -----------------------------------------------------------------------------

MIN_YEAR, MAX_YEAR = 1601, 9999
_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2})?(?:\.\d+)?)?(Z)?$")
_EXTENDED = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$")


def parse_datetime(value: str | None) -> datetime:
    """Parse a compact or extended EAS date-time (any of the forms clients send) as UTC."""
    if value is None:
        raise ItemError("missing date")
    v = value.strip().rstrip("\x00").strip()
    m = _COMPACT.match(v) or _EXTENDED.match(v)
    if not m:
        raise ItemError(f"not a date: {value!r}")
    y, mo, d, h, mi, s, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0),
                      tzinfo=UTC)
    except ValueError as exc:
        raise ItemError(f"not a date: {value!r}") from exc
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        off = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        try:
            dt = dt - sign * off
        except OverflowError as exc:
            raise ItemError(f"date out of range: {value!r}") from exc
    # MS-ASDTYPE 2.3 sets no bound; Windows FILETIME (what Exchange keeps) starts in
    # 1601.  iOS writes a birthday without a year as 1604-MM-DD.
    if not MIN_YEAR <= dt.year <= MAX_YEAR:
        raise ItemError(f"date out of range: {value!r}")
    return dt


def fmt_compact(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def fmt_extended(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def to_compact(value: str) -> str:
    return fmt_compact(parse_datetime(value))


def to_extended(value: str) -> str:
    return fmt_extended(parse_datetime(value))


# -- scalar parsing ----------------------------------------------------------------------

def drop_value(out: dict[str, Any], name: str, cls: str, exc: Exception) -> None:
    """Leave property ``name`` out of ``out`` because its value cannot be read: a log
    line and a note in ``out[DROPPED]``; the item itself is kept (never refused for
    one bad value)."""
    out.pop(name, None)
    dropped = out.setdefault(DROPPED, [])
    if name not in dropped:
        dropped.append(name)
    why = str(exc)
    log.info("{cls} property {name} left out: {why}", cls=cls, name=name,
             why=why if len(why) <= 120 else why[:117] + "...")


def parse_int(value: str | None, name: str, lo: int | None = None, hi: int | None = None) -> int:
    try:
        n = int((value or "").strip())
    except ValueError as exc:
        raise ItemError(f"{name}: not an integer: {value!r}") from exc
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise ItemError(f"{name}: {n} out of range")
    return n


# U+0000-U+001F except tab, LF and CR: not allowed in XML 1.0 (section 2.2, "Char"),
# so another device's parser would reject the whole Sync response carrying one
# (issue #10). Removed wherever client text enters the canonical item dict.
_CONTROLS = {c: None for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)}


def clean_text(text: str) -> str:
    """``text`` without NUL and the other C0 controls but tab, LF and CR (linear)."""
    return text.translate(_CONTROLS)


def text_of(el: Element) -> str:
    """An element's text with C0 controls (but tab, LF, CR) removed ('' if empty)."""
    return clean_text(el.value or "")


def list_of(el: Element, child_tag: str) -> list[str]:
    return [text_of(c) for c in el.findall(child_tag) if text_of(c)]


def list_element(tag: str, child_tag: str, value: Any) -> Element | None:
    """The reverse of ``list_of``: ``value`` (a list, or one value) as a ``tag`` element
    with a ``child_tag`` for each entry that is not empty; None if there is none."""
    items = [str(v) for v in value if v] if isinstance(value, list) else [str(value)]
    if not items:
        return None
    el = Element(tag)
    for item in items:
        el.add(child_tag, item)
    return el


def is_empty(value: Any) -> bool:
    """Values that mean "the client sent this property empty" (i.e. delete it)."""
    if value is None or value == "" or value == [] or value == {}:
        return True
    return isinstance(value, dict) and "Data" in value and not value.get("Data")


def strip_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if not is_empty(v)}


# -- pictures ----------------------------------------------------------------------------

def check_picture(value: str, limit: int) -> str:
    """Normalise a base64 picture; ItemError if invalid or larger than ``limit`` bytes."""
    compact = "".join(value.split())
    if not compact:
        return ""
    try:
        raw = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ItemError("Picture is not base64") from exc
    if len(raw) > limit:
        raise ItemError(f"Picture too large ({len(raw)} > {limit} bytes)")
    return compact


# -- bodies ------------------------------------------------------------------------------

def body_preferences(options: Element | None) -> list[BodyPreference]:
    """The BodyPreference entries of a Sync/ItemOperations ``Options`` element."""
    out: list[BodyPreference] = []
    if options is None:
        return out
    for bp in options.findall("AirSyncBase:BodyPreference"):
        pref = body_preference(bp.findtext("AirSyncBase:Type"),
                               bp.findtext("AirSyncBase:TruncationSize"),
                               bp.findtext("AirSyncBase:AllOrNone"),
                               bp.findtext("AirSyncBase:Preview"))
        if pref is not None:
            out.append(pref)
    return out


def body_preference(btype: str | None, truncation_size: str | None, all_or_none: str | None,
                    preview: str | None) -> BodyPreference | None:
    """One BodyPreference from the values of its children (None for each one absent);
    None without a numeric Type."""
    try:
        pref = BodyPreference(type=int((btype or "").strip()))
    except ValueError:
        return None
    if truncation_size and truncation_size.strip().isdigit():
        pref.truncation_size = int(truncation_size.strip())
    pref.all_or_none = all_or_none is not None and all_or_none.strip() == "1"
    if preview and preview.strip().isdigit():
        pref.preview = int(preview.strip())
    return pref


def parse_body(el: Element) -> dict[str, Any]:
    """``AirSyncBase:Body{Type, Data}`` (or a 2.5-style text body) → canonical body."""
    if not el.children:
        return {"Type": 1, "Data": text_of(el)}
    btype_text = el.findtext("AirSyncBase:Type")
    btype = 1
    if btype_text:
        btype = parse_int(btype_text, "Body/Type", 1, 4)
    data = clean_text(el.findtext("AirSyncBase:Data") or "")
    if btype == 4:      # MIME makes no sense for PIM items: keep the text
        btype = 1
    return {"Type": btype, "Data": data}


class _TextExtractor(HTMLParser):
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "blockquote", "pre", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _truncate_utf8(data: str, size: int) -> str:
    return data.encode("utf-8")[:max(size, 0)].decode("utf-8", "ignore")


def body_to_eas(body: dict[str, Any] | None, prefs: list[BodyPreference] | None,
                version: str) -> tuple[Element | None, Element | None]:
    """(``AirSyncBase:Body``, ``AirSyncBase:NativeBodyType``) for a canonical body.

    Honours the preference whose Type matches what is stored (HTML is converted to
    text when only text is wanted; text is sent as Type 1 when HTML is wanted).
    """
    if not body or not isinstance(body, dict) or not body.get("Data"):
        return None, None
    native = body.get("Type", 1)
    if native not in (1, 2, 3):
        native = 1
    data = str(body["Data"]).encode("utf-8", "replace").decode("utf-8")  # no lone surrogates
    prefs = prefs or []
    by_type = {p.type: p for p in prefs}
    out_type = native
    pref: BodyPreference | None
    if not prefs:
        pref = None
        if native == 2:
            out_type, data = 1, html_to_text(data)
    elif native in by_type:
        pref = by_type[native]
    elif native == 2 and 1 in by_type:
        pref, out_type, data = by_type[1], 1, html_to_text(data)
    elif native == 1 and 2 in by_type:
        pref = by_type[2]
    else:
        pref = prefs[0]
        if native == 2 and pref.type != 2:
            out_type, data = 1, html_to_text(data)
    size = len(data.encode("utf-8"))
    el = Element("AirSyncBase:Body")
    el.add("AirSyncBase:Type", out_type)
    el.add("AirSyncBase:EstimatedDataSize", size)
    limit = pref.truncation_size if pref is not None else None
    if pref is not None and limit is not None and size > limit:
        el.add("AirSyncBase:Truncated", 1)
        if not pref.all_or_none:
            el.add("AirSyncBase:Data", _truncate_utf8(data, limit))
    else:
        el.add("AirSyncBase:Truncated", 0)
        el.add("AirSyncBase:Data", data)
    if pref is not None and pref.preview and vt(version) >= (14, 0):
        plain = html_to_text(data) if out_type == 2 else data
        el.add("AirSyncBase:Preview", plain[:min(pref.preview, 255)])
    return el, Element("AirSyncBase:NativeBodyType", str(native))


# -- recurrence --------------------------------------------------------------------------

RECURRENCE_TYPES = frozenset({0, 1, 2, 3, 5, 6})
# key -> (low, high, minimum protocol version for emitting)
RECURRENCE_INTS: dict[str, tuple[int, int, tuple[int, int]]] = {
    "Type": (0, 6, (0, 0)),
    "Occurrences": (1, 999999, (0, 0)),
    "Interval": (1, 999, (0, 0)),
    "WeekOfMonth": (1, 5, (0, 0)),
    "DayOfWeek": (1, 127, (0, 0)),
    "MonthOfYear": (1, 12, (0, 0)),
    "DayOfMonth": (1, 31, (0, 0)),
    "CalendarType": (0, 23, (14, 0)),
    "IsLeapMonth": (0, 1, (14, 0)),
    "FirstDayOfWeek": (0, 6, (14, 1)),
    "Regenerate": (0, 1, (0, 0)),
    "DeadOccur": (0, 1, (0, 0)),
}


def parse_recurrence(el: Element, page: str, date_keys: tuple[str, ...],
                     date_fmt: Callable[[str], str], require_type: bool = True
                     ) -> dict[str, Any]:
    """Children of a Calendar/Tasks Recurrence element → canonical dict (validated).

    A child whose value cannot be read is left out (logged); a Type that is missing
    (``require_type``) or unknown makes the whole Recurrence unreadable (ItemError).
    An empty element gives ``{}``.
    """
    rec: dict[str, Any] = {}
    prefix = page + ":"
    for child in el.children:
        if not child.tag.startswith(prefix):
            continue
        name = child.tag[len(prefix):]
        value = text_of(child).strip()
        if value == "":
            continue
        try:
            if name in date_keys:
                rec[name] = date_fmt(value)
            elif name in RECURRENCE_INTS:
                lo, hi, _ = RECURRENCE_INTS[name]
                rec[name] = parse_int(value, f"Recurrence/{name}", lo, hi)
        except ItemError as exc:
            if name == "Type":
                raise
            drop_value(rec, name, f"{page} Recurrence", exc)
    rec.pop(DROPPED, None)
    if "Type" not in rec:
        if require_type and rec:
            raise ItemError("Recurrence without Type")
        return rec
    if rec["Type"] not in RECURRENCE_TYPES:
        raise ItemError(f"unknown recurrence type {rec['Type']}")
    return rec


def infer_recurrence_type(rec: dict[str, Any]) -> int | None:
    """The Type a recurrence without one (allowed from 16.0, MS-ASCAL 2.2.2.45) has,
    from the pattern fields it carries; None when they do not tell."""
    has = {k for k in ("DayOfWeek", "DayOfMonth", "WeekOfMonth", "MonthOfYear") if k in rec}
    if {"WeekOfMonth", "DayOfWeek", "MonthOfYear"} <= has:
        return 6
    if {"DayOfMonth", "MonthOfYear"} <= has:
        return 5
    if {"WeekOfMonth", "DayOfWeek"} <= has:
        return 3
    if "DayOfMonth" in has:
        return 2
    if "DayOfWeek" in has:
        return 1
    return None


def fill_recurrence(rec: dict[str, Any], local_start: datetime | None) -> None:
    """Supply the pattern fields a type needs but the client left out, from the start."""
    if local_start is None:
        needs = {1: ("DayOfWeek",), 2: ("DayOfMonth",), 3: ("WeekOfMonth", "DayOfWeek"),
                 5: ("DayOfMonth", "MonthOfYear"), 6: ("WeekOfMonth", "DayOfWeek", "MonthOfYear")}
        missing = [k for k in needs.get(rec["Type"], ()) if k not in rec]
        if missing:
            raise ItemError(f"Recurrence type {rec['Type']} lacks {', '.join(missing)}")
        return
    t = rec["Type"]
    dow_bit = 1 << ((local_start.weekday() + 1) % 7)
    week = (local_start.day - 1) // 7 + 1
    if t == 1:
        rec.setdefault("DayOfWeek", dow_bit)
    elif t == 2:
        rec.setdefault("DayOfMonth", local_start.day)
    elif t == 3:
        rec.setdefault("WeekOfMonth", week)
        rec.setdefault("DayOfWeek", dow_bit)
    elif t == 5:
        rec.setdefault("DayOfMonth", local_start.day)
        rec.setdefault("MonthOfYear", local_start.month)
    elif t == 6:
        rec.setdefault("WeekOfMonth", week)
        rec.setdefault("DayOfWeek", dow_bit)
        rec.setdefault("MonthOfYear", local_start.month)


def recurrence_to_eas(rec: dict[str, Any], page: str, order: tuple[str, ...], version: str,
                      date_fmt: Callable[[str], str], date_keys: tuple[str, ...]) -> Element:
    """A canonical recurrence dict → ``<page>:Recurrence`` with children in ``order``."""
    v = vt(version)
    el = Element(f"{page}:Recurrence")
    values = dict(rec)
    if values.get("Type") == 1 and v >= (14, 1):
        values.setdefault("FirstDayOfWeek", 0)   # required for weekly in 14.1+ responses
    for key in order:
        if key not in values or values[key] is None or values[key] == "":
            continue
        if key in date_keys:
            try:
                el.add(f"{page}:{key}", date_fmt(str(values[key])))
            except ItemError:
                continue
            continue
        spec = RECURRENCE_INTS.get(key)
        if spec is None or v < spec[2]:
            continue
        try:
            el.add(f"{page}:{key}", int(values[key]))
        except (TypeError, ValueError):
            continue
    return el
