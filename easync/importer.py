"""``easync-admin import``: vCard and iCalendar files into a user's folders.

vCard (.vcf, 2.1/3.0/4.0, any number of cards) → the user's default Contacts folder;
iCalendar (.ics) VEVENTs → the default Calendar folder, VTODOs → the default Tasks folder.
Every write goes through ``IItemStore.apply``, so the change feed (and push) sees it.

Importing a file again updates what it imported before instead of duplicating it:

* events and tasks are the same when they have the same UID;
* contacts are the same when the card's UID matches one imported before, or, for a card
  (or a stored contact) without UID, when first, middle and last name (or company, for a
  card without a name) and the first e-mail address are all equal.

An item whose new data equals the stored one is left untouched (no change to sync).

vCard (2.1, 3.0 and 4.0) is read with ``vobject``, with the few adaptations described
above ``read_cards``; iCalendar is read with ``icalendar``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import vobject
from vobject.base import ContentLine, VObjectError
from vobject.icalendar import escapableCharList, stringToTextValues

from easync.items import email_address
from easync.items._common import fmt_compact, fmt_extended
from easync.model import Op
from easync.settings import Settings

MAX_PICTURE_BYTES = Settings().max_picture_bytes
BATCH = 200                     # items per store.apply call


class ImportFailed(Exception):
    """The file cannot be imported at all (unreadable, unknown format, bad folder)."""


# ======================================================================================
# vCard
# ======================================================================================

@dataclass
class Prop:
    """One vCard content line."""

    name: str                           # upper case, without group
    value: str                          # raw (still escaped) value, decoded from QP
    params: dict[str, list[str]] = field(default_factory=dict)   # names upper case
    group: str = ""
    data: bytes | None = None           # the decoded bytes of a base64 value

    @property
    def types(self) -> set[str]:
        return {t.lower() for t in self.params.get("TYPE", [])}

    @property
    def pref(self) -> bool:
        return "pref" in self.types or "PREF" in self.params


# Cards are read with vobject's reader (``vobject.readComponents``), with these small
# adaptations for what it does not do the way an import needs:
#
# * ``allowQP=True``: vobject then joins vCard 2.1 quoted-printable soft line breaks
#   (a value ending in "=") itself; by default it fails on the next physical line.
#   That reading splits lines at LF only, so line ends are made LF first (a bare CR,
#   old Mac files; CR CR LF, files converted twice), and blanks after BEGIN:VCARD or
#   END:VCARD are dropped (vobject would not match "END:VCARD " with its BEGIN).
# * The cards are read inside a container component vobject has no behaviour for.  A
#   top-level VCARD gets vobject's vCard 3.0 behaviours before it is handed back, and
#   they lose data: every property without a behaviour of its own (NICKNAME, NOTE,
#   TITLE, X-..., a 4.0 PHOTO data: URI) keeps only the text before its first unescaped
#   comma (2.1 has no comma escaping at all), and a damaged base64 PHOTO raises out of
#   the reader and ends the whole file.  Inside the container a card keeps its lines as
#   read: unfolded, parameters parsed, quoted-printable decoded, still backslash-escaped.
#   Those values are unescaped and split with vobject's ``stringToTextValues``.
# * ``ignoreUnreadable=True`` skips lines that are not properties (as the old reader
#   did); vobject logs them, and ``_skipped_lines`` turns that log into warnings.

_CONTAINER = "X-EASYNC-IMPORT"
_LINE_END = re.compile(r"\r*\n|\r")
_CARD_EDGE = re.compile(r"^((?:BEGIN|END):VCARD)[ \t]+$", re.IGNORECASE | re.MULTILINE)
# vobject's escapable characters, and "\:", which some exporters write in URLs.
_ESCAPABLE = escapableCharList + ":"
# vCard 2.1 bare parameters that are encodings, not types (vobject itself takes
# QUOTED-PRINTABLE away when it decodes the value).
_BARE_ENCODINGS = {"BASE64", "B", "8BIT", "7BIT", "QUOTED-PRINTABLE"}


def _texts(raw: str, sep: str = ",") -> list[str]:
    """A backslash-escaped value split at the unescaped ``sep``s, each part unescaped
    (a trailing empty part is dropped)."""
    if (len(raw) - len(raw.rstrip("\\"))) % 2:
        raw += "\\"            # a lone trailing backslash: vobject would make it "\eof"
    return list(stringToTextValues(raw, listSeparator=sep, charList=_ESCAPABLE))


def unescape(raw: str) -> str:
    r"""A text value without its backslash escapes (\n, \, \; \\ \:): split at a
    character no value holds, so that nothing but the unescaping happens."""
    return "\x00".join(_texts(raw, "\x00"))


@contextmanager
def _skipped_lines(into: list[str]) -> Iterator[None]:
    """While reading: the lines vobject skips become warnings instead of log lines."""

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        m = re.search(r"Failed to parse line: (.*)", message, re.DOTALL)
        into.append(f"a line that is not a vCard property was skipped: "
                    f"{(m.group(1) if m else message)[:80]!r}")
        return False

    log = logging.getLogger("vobject.base")
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _prop(line: ContentLine) -> Prop:
    """A vobject content line (not decoded by a behaviour) → Prop."""
    params: dict[str, list[str]] = {}
    for key, values in line.params.items():
        values = [v.strip() for v in values]
        if key == "TYPE":                            # 4.0: TYPE="work,voice"
            values = [x.strip() for v in values for x in v.split(",")]
        params.setdefault(key.upper(), []).extend(v for v in values if v)
    for bare in line.singletonparams:                # vCard 2.1: TEL;HOME;VOICE:
        key = bare.strip().upper()
        params.setdefault("ENCODING" if key in _BARE_ENCODINGS else "TYPE", []).append(key)
    value = str(line.value).replace("\r\n", "\n")    # from quoted-printable "=0D=0A"
    prop = Prop(name=line.name.upper(), value=value, params=params,
                group=(line.group or "").lower())
    if {e.upper() for e in params.get("ENCODING", [])} & {"B", "BASE64"}:
        try:
            prop.data = base64.b64decode(re.sub(r"\s+", "", value), validate=True)
        except (binascii.Error, ValueError):
            prop.data = None
    return prop


def _read_error(e: Exception) -> str:
    """vobject's complaint in terms of the file, not of the container around it."""
    msg = str(getattr(e, "msg", e)).replace(f"{_CONTAINER} component wasn't closed",
                                            "END without its BEGIN")
    line = getattr(e, "lineNumber", None)
    return f"line {line - 1}: {msg}" if isinstance(line, int) and line > 1 else msg


def read_cards(text: str) -> tuple[list[list[Prop]], list[str]]:
    """The cards of a vCard file, each a list of its properties in file order (nested
    cards, e.g. a 2.1 AGENT, skipped), and warnings about lines that were skipped."""
    source = _CARD_EDGE.sub(r"\1", _LINE_END.sub("\n", text))
    source = f"BEGIN:{_CONTAINER}\n{source}\nEND:{_CONTAINER}\n"
    skipped: list[str] = []
    with _skipped_lines(skipped):
        try:
            containers = list(vobject.readComponents(source, ignoreUnreadable=True,
                                                     allowQP=True))
        except (LookupError, UnicodeDecodeError) as e:
            raise ImportFailed("a quoted-printable value cannot be decoded with its "
                               f"CHARSET ({e})") from None
        except (VObjectError, ValueError) as e:
            raise ImportFailed(f"not a valid vCard file: {_read_error(e)}") from None
    cards = []
    for container in containers:
        for card in container.components():
            if card.name == "VCARD":
                lines = sorted(card.lines(), key=lambda line: line.lineNumber or 0)
                cards.append([_prop(line) for line in lines])
    return cards, list(dict.fromkeys(skipped))


def split_cards(text: str) -> list[list[Prop]]:
    """The cards of a vCard file (see ``read_cards``)."""
    return read_cards(text)[0]


# Where TEL types go, in order of preference.
_PHONE_ANY = ("HomePhoneNumber", "BusinessPhoneNumber", "Home2PhoneNumber",
              "Business2PhoneNumber")


def _phone_slots(types: set[str]) -> tuple[str, ...]:
    if "fax" in types:
        return ("HomeFaxNumber",) if "home" in types else ("BusinessFaxNumber",
                                                            "HomeFaxNumber")
    if "pager" in types:
        return ("PagerNumber",)
    if types & {"cell", "mobile", "iphone"}:
        return ("MobilePhoneNumber",)
    if "car" in types:
        return ("CarPhoneNumber",)
    if types & {"x-assistant", "assistant"}:
        return ("AssistantPhoneNumber",)
    if types & {"x-radio", "radio"}:
        return ("RadioPhoneNumber",)
    if types & {"main", "x-company-main", "company-main", "companymain"}:
        return ("CompanyMainPhone",)
    if "work" in types:
        return ("BusinessPhoneNumber", "Business2PhoneNumber")
    if "home" in types:
        return ("HomePhoneNumber", "Home2PhoneNumber")
    return ()


_ADDRESS_PREFIX = {"home": "Home", "work": "Business", "other": "Other"}
_IM_PROPS = {"IMPP", "X-AIM", "X-ICQ", "X-JABBER", "X-MSN", "X-YAHOO", "X-SKYPE",
             "X-SKYPE-USERNAME", "X-GOOGLE-TALK", "X-GADUGADU", "X-QQ"}
_IM_SCHEMES = re.compile(r"^(xmpp|sip|aim|ymsgr|msnim|skype|icq|gtalk|im|qq|gg):",
                         re.IGNORECASE)
# Extension properties with a direct Contacts field.
_X_FIELDS = {
    "X-SPOUSE": "Spouse", "X-EVOLUTION-SPOUSE": "Spouse", "X-MS-SPOUSE": "Spouse",
    "X-MANAGER": "ManagerName", "X-EVOLUTION-MANAGER": "ManagerName",
    "X-MS-MANAGER": "ManagerName",
    "X-ASSISTANT": "AssistantName", "X-EVOLUTION-ASSISTANT": "AssistantName",
    "X-MS-ASSISTANT": "AssistantName",
    "X-ANNIVERSARY": "Anniversary", "X-EVOLUTION-ANNIVERSARY": "Anniversary",
    "X-MS-ANNIVERSARY": "Anniversary",
    "X-PHONETIC-FIRST-NAME": "YomiFirstName", "X-PHONETIC-LAST-NAME": "YomiLastName",
    "X-PHONETIC-ORG": "YomiCompanyName",
    "X-MS-OFFICE": "OfficeLocation", "X-MS-OFFICE-LOCATION": "OfficeLocation",
    "X-ACCOUNT": "AccountName", "X-CUSTOMER-ID": "CustomerId",
    "X-GOVERNMENT-ID": "GovernmentId",
}
# Apple's labels on grouped properties (item1.X-ABLabel:_$!<Spouse>!$_).
_APPLE_RELATED = {"spouse": "Spouse", "partner": "Spouse", "manager": "ManagerName",
                  "assistant": "AssistantName", "child": "Children"}


def _apple_label(raw: str) -> str:
    m = re.match(r"^_\$!<(.*)>!\$_$", raw.strip())
    return (m.group(1) if m else raw).strip().lower()


def _label_types(label: str) -> set[str]:
    """TYPE values an Apple label stands for (mobile → cell, home fax → home + fax)."""
    if not label:
        return set()
    words = set(label.replace("-", " ").split())
    return words | {label} | ({"cell"} if "mobile" in words else set())


# The year iOS gives a birthday or anniversary that has none (vCard 4 "--MMDD").
NO_YEAR = 1604


def _date_value(raw: str) -> str | None:
    """A vCard date (1980-03-15, 19800315, with or without a time) → "YYYY-MM-DD"; a
    date without a year (--0412, --04-12) → the same day in 1604, as iOS keeps it;
    None for unreadable ones."""
    v = raw.strip()
    m = re.match(r"^(\d{4})-?(\d{2})-?(\d{2})(?:T.*)?$", v) or re.match(
        r"^-()-(\d{2})-?(\d{2})(?:T.*)?$", v)
    if not m:
        return None
    try:
        return date(int(m.group(1) or NO_YEAR), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:
        return None


def _picture(prop: Prop) -> tuple[str | None, str | None]:
    """(base64 picture, warning)."""
    data = prop.data
    value = prop.value.strip()
    if data is None and value.lower().startswith("data:"):
        header, _, payload = value.partition(",")
        if ";base64" not in header.lower():
            return None, "a PHOTO data: URI that is not base64 was skipped"
        try:
            data = base64.b64decode(re.sub(r"\s+", "", payload), validate=True)
        except (binascii.Error, ValueError):
            return None, "an unreadable PHOTO was skipped"
    if data is None:
        if re.match(r"^[a-z][a-z0-9+.-]*://", value, re.IGNORECASE):
            return None, f"a PHOTO given as a link ({value[:60]}) was skipped"
        return None, "an unreadable PHOTO was skipped"
    if len(data) > MAX_PICTURE_BYTES:
        return None, f"a PHOTO of {len(data)} bytes (more than {MAX_PICTURE_BYTES}) was skipped"
    return base64.b64encode(data).decode("ascii"), None


def card_to_contact(props: list[Prop]) -> tuple[dict[str, Any], list[str]]:
    """One vCard → (canonical Contacts dict, warnings)."""
    out: dict[str, Any] = {}
    warnings: list[str] = []
    labels = {p.group: _apple_label(p.value) for p in props
              if p.name == "X-ABLABEL" and p.group}
    # Preferred values first, file order otherwise.
    ordered = sorted(props, key=lambda p: not p.pref)

    def put(key: str, value: Any) -> None:
        if value not in (None, "", []) and key not in out:
            out[key] = value

    def text(p: Prop) -> str:
        return unescape(p.value).strip()

    emails: list[str] = []
    ims: list[str] = []
    phones: list[tuple[str, set[str]]] = []
    fn = role = ""
    kind_org = False
    for p in ordered:
        label = labels.get(p.group, "") if p.group else ""
        types = p.types | _label_types(label)
        if p.name == "N":
            n = (_texts(p.value, ";") + [""] * 5)[:5]
            last, first, middle, prefix, suffix = (" ".join(x.split()) for x in n)
            put("LastName", last)
            put("FirstName", first)
            put("MiddleName", middle.replace(",", " "))
            put("Title", prefix.replace(",", " "))
            put("Suffix", suffix.replace(",", " "))
        elif p.name == "FN":
            fn = text(p)
        elif p.name == "ORG":
            org = _texts(p.value, ";")
            put("CompanyName", org[0].strip())
            if len(org) > 1:
                put("Department", org[1].strip())
        elif p.name == "TITLE":
            put("JobTitle", text(p))
        elif p.name == "ROLE":
            role = role or text(p)
        elif p.name == "EMAIL":
            addr = text(p)
            if addr.lower().startswith("mailto:"):
                addr = addr[7:]
            if addr:
                emails.append(addr)
        elif p.name == "TEL":
            number = text(p)
            if number.lower().startswith("tel:"):
                number = number[4:]
            if number:
                phones.append((number, types))
        elif p.name == "ADR":
            adr = (_texts(p.value, ";") + [""] * 7)[:7]
            pobox, ext, street, city, region, code, country = (x.strip() for x in adr)
            kinds = [k for k in ("home", "work") if k in types] + ["other"]
            prefix = next((_ADDRESS_PREFIX[k] for k in kinds
                           if not any(f"{_ADDRESS_PREFIX[k]}Address{x}" in out
                                      for x in ("Street", "City", "PostalCode", "State",
                                                "Country"))), None)
            if prefix is None:
                warnings.append(f"address {'; '.join(x for x in adr if x.strip())} "
                                "dropped: no free address slot")
                continue
            lines = [x for x in (street, ext, f"PO Box {pobox}" if pobox else "") if x]
            put(f"{prefix}AddressStreet", "\n".join(lines))
            put(f"{prefix}AddressCity", city)
            put(f"{prefix}AddressState", region)
            put(f"{prefix}AddressPostalCode", code)
            put(f"{prefix}AddressCountry", country)
        elif p.name in ("BDAY", "ANNIVERSARY"):
            key = "Birthday" if p.name == "BDAY" else "Anniversary"
            value = _date_value(text(p))
            if value is None:
                warnings.append(f"{p.name} {text(p)!r} skipped: not a date")
            put(key, value)
        elif p.name == "NOTE":
            if "Body" not in out and text(p):
                out["Body"] = {"Type": 1, "Data": text(p)}
        elif p.name == "CATEGORIES":
            cats = out.setdefault("Categories", [])
            cats.extend(c.strip() for c in _texts(p.value)
                        if c.strip() and c.strip() not in cats)
        elif p.name == "PHOTO" and "Picture" not in out:
            picture, warning = _picture(p)
            if warning:
                warnings.append(warning)
            put("Picture", picture)
        elif p.name == "URL":
            put("WebPage", text(p))
        elif p.name == "NICKNAME":
            put("NickName", ", ".join(x.strip() for x in _texts(p.value)
                                      if x.strip()))
        elif p.name == "UID":
            put("UID", text(p))
        elif p.name == "KIND":
            kind_org = text(p).lower() in ("org", "organization")
        elif p.name == "X-ABSHOWAS":
            kind_org = text(p).upper() == "COMPANY"
        elif p.name in _IM_PROPS:
            handle = _IM_SCHEMES.sub("", text(p))
            if handle and handle not in ims:
                ims.append(handle)
        elif p.name == "RELATED" or (p.name == "X-ABRELATEDNAMES" and label):
            target = next((_APPLE_RELATED[t] for t in types if t in _APPLE_RELATED), None)
            if target == "Children":
                out.setdefault("Children", []).append(text(p))
            elif target:
                put(target, text(p))
        elif p.name in ("X-MS-CHILD", "X-CHILDREN"):
            out.setdefault("Children", []).extend(
                c.strip() for c in _texts(p.value) if c.strip())
        elif p.name in _X_FIELDS:
            key = _X_FIELDS[p.name]
            put(key, _date_value(text(p)) if key == "Anniversary" else text(p))

    put("JobTitle", role)                  # ROLE only when there is no TITLE
    for i, addr in enumerate(emails[:3]):
        out[f"Email{i + 1}Address"] = addr
    if len(emails) > 3:
        warnings.append(f"{len(emails) - 3} e-mail address(es) beyond the third dropped: "
                        + ", ".join(emails[3:]))
    for i, handle in enumerate(ims[:3]):
        out["IMAddress" if i == 0 else f"IMAddress{i + 1}"] = handle
    for number, types in phones:
        slot = next((s for s in _phone_slots(types) + _PHONE_ANY if s not in out), None)
        if slot is None:
            warnings.append(f"phone number {number} dropped: no free phone slot")
        else:
            out[slot] = number
    if fn:
        out["FileAs"] = fn
        has_name = any(out.get(k) for k in ("FirstName", "LastName", "MiddleName"))
        if not has_name and not kind_org and fn != out.get("CompanyName"):
            first, _, last = fn.rpartition(" ")
            put("FirstName", first or last)
            if first:
                put("LastName", last)
    if not any(out.get(k) for k in ("FileAs", "FirstName", "LastName", "CompanyName",
                                    "Email1Address", "MobilePhoneNumber")):
        warnings.append("a card with no name, company, e-mail or mobile number")
    return out, warnings


def contact_identity(data: dict[str, Any]) -> tuple[str, ...] | None:
    """What makes two contacts without UID the same one (None: nothing to go by)."""
    names = tuple((data.get(k) or "").strip().lower()
                  for k in ("FirstName", "MiddleName", "LastName"))
    if not any(names):
        names = ("", "", (data.get("CompanyName") or data.get("FileAs") or "").lower())
    email = email_address(data.get("Email1Address")) or ""
    if not any(names) and not email:
        return None
    return (*names, email)


# ======================================================================================
# iCalendar
# ======================================================================================

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
        raise ImportFailed(f"not a valid iCalendar file: {e}") from None
    zone_name = default_tz or _text(cal, "X-WR-TIMEZONE") or "UTC"
    zone = load_zone(zone_name)
    if zone is None and default_tz:
        raise ImportFailed(f"unknown time zone {default_tz!r}")
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


# ======================================================================================
# Writing
# ======================================================================================

@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass
class ImportReport:
    contacts: Counts = field(default_factory=Counts)
    events: Counts = field(default_factory=Counts)
    tasks: Counts = field(default_factory=Counts)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``imported 12 contacts, 3 events, 1 task (2 updated); 1 warning``."""

        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        parts = [n(c.total, w) for c, w in ((self.contacts, "contact"),
                                            (self.events, "event"), (self.tasks, "task"))
                 if c.total]
        text = "imported " + (", ".join(parts) if parts else "nothing")
        updated = sum(c.updated for c in (self.contacts, self.events, self.tasks))
        unchanged = sum(c.unchanged for c in (self.contacts, self.events, self.tasks))
        detail = [f"{updated} updated"] if updated else []
        if unchanged:
            detail.append(f"{unchanged} unchanged")
        if detail:
            text += f" ({', '.join(detail)})"
        if self.warnings:
            text += f"; {n(len(self.warnings), 'warning')}"
        return text


def read_text(path: str) -> str:
    """A file's text: UTF-8 (with or without BOM), else Windows-1252 (old vCard 2.1)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ImportFailed(f"cannot read {path}: {e.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _kind(text: str, path: str) -> str:
    head = text.lstrip()[:2000].upper()
    if head.startswith("BEGIN:VCARD"):
        return "vcard"
    if head.startswith("BEGIN:VCALENDAR"):
        return "icalendar"
    lower = path.lower()
    if lower.endswith((".vcf", ".vcard")):
        return "vcard"
    if lower.endswith((".ics", ".ical", ".ifb")):
        return "icalendar"
    raise ImportFailed(f"{path}: neither a vCard nor an iCalendar file")


async def _existing(store: Any, user: Any, folder_id: str) -> list[Any]:
    """The live items of a folder (one pass over its change feed)."""
    items: list[Any] = []
    cursor = 0
    while True:
        batch = await store.changes_since(user, folder_id, cursor, 1000)
        items.extend(c.item for c in batch.changes if not c.deleted and c.item is not None)
        if not batch.more or batch.high == cursor:
            return items
        cursor = batch.high


async def _write(store: Any, user: Any, folder_id: str, cls: str,
                 items: Iterable[dict[str, Any]], counts: Counts) -> None:
    existing = await _existing(store, user, folder_id)
    by_uid = {it.data["UID"]: it for it in existing if it.data.get("UID")}
    by_identity: dict[tuple[str, ...] | None, list[Any]] = {}
    if cls == "Contacts":
        for it in existing:
            by_identity.setdefault(contact_identity(it.data), []).append(it)
        by_identity.pop(None, None)
    taken: set[str] = set()
    ops: list[Op] = []
    for data in items:
        uid = data.get("UID")
        old = by_uid.get(uid) if uid else None
        if old is None and cls == "Contacts":
            # No UID match: the same name and first e-mail, unless both carry a UID.
            old = next((it for it in by_identity.get(contact_identity(data), [])
                        if it.server_id not in taken and not (uid and it.data.get("UID"))),
                       None)
        if old is None or old.server_id in taken:
            ops.append(Op(kind="add", data=data, cls=cls))
            counts.added += 1
            continue
        taken.add(old.server_id)
        if old.data == data:
            counts.unchanged += 1
            continue
        ops.append(Op(kind="change", server_id=old.server_id, data=data, cls=cls))
        counts.updated += 1
    try:
        for i in range(0, len(ops), BATCH):
            results = await store.apply(user, folder_id, ops[i:i + BATCH])
            failed = [r for r in results if not r.ok]
            if failed:
                raise ImportFailed(f"the store refused {len(failed)} {cls} item(s): "
                                   f"{failed[0].error}")
    finally:
        if ops:
            # wake the devices waiting on this folder, on every running easync node
            from backends.sql.pgnotify import announce

            await announce(store, user.id, [folder_id], source="easync-import")


async def _folder(store: Any, user: Any, cls: str, folder_id: str | None,
                  folders: list[Any]) -> str:
    if folder_id is not None:
        folder = next((f for f in folders if f.server_id == folder_id), None)
        if folder is None:
            raise ImportFailed(f"user {user.name} has no folder {folder_id!r}")
        if folder.cls == cls:
            return folder_id
    default = next((f for f in folders if f.cls == cls and f.is_default), None)
    if default is None:
        raise ImportFailed(f"user {user.name} has no default {cls} folder")
    return str(default.server_id)


async def import_file(store: Any, user: Any, path: str, folder_id: str | None = None,
                      default_tz: str | None = None) -> ImportReport:
    """Import a .vcf or .ics file for ``user``; ``folder_id`` replaces the default folder
    of the class it holds."""
    text = read_text(path)
    kind = _kind(text, path)
    report = ImportReport()
    folders = await store.list_folders(user)
    if folder_id is not None and not any(f.server_id == folder_id for f in folders):
        raise ImportFailed(f"user {user.name} has no folder {folder_id!r}")
    if kind == "vcard":
        contacts = []
        cards, skipped = read_cards(text)
        report.warnings.extend(skipped)
        for props in cards:
            data, warnings = card_to_contact(props)
            name = data.get("FileAs") or data.get("Email1Address") or "(no name)"
            report.warnings.extend(f"contact {name}: {w}" for w in warnings)
            contacts.append(data)
        if not contacts:
            raise ImportFailed(f"{path}: no vCard found")
        target = await _folder(store, user, "Contacts", folder_id, folders)
        await _write(store, user, target, "Contacts", contacts, report.contacts)
        return report
    events, tasks, warnings = parse_icalendar(text, default_tz, user.email)
    report.warnings.extend(warnings)
    if events:
        target = await _folder(store, user, "Calendar", folder_id, folders)
        await _write(store, user, target, "Calendar", events, report.events)
    if tasks:
        target = await _folder(store, user, "Tasks", folder_id, folders)
        await _write(store, user, target, "Tasks", tasks, report.tasks)
    return report
