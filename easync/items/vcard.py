"""vCard files read into canonical contact dicts (``easync.items``).

``read_cards`` splits a vCard file (2.1, 3.0 and 4.0, any number of cards) into cards,
each a list of its properties (``Prop``); ``card_to_contact`` makes the canonical
contact dict of one card, with warnings about what it could not keep;
``contact_identity`` is what makes a contact without UID the same as another (first,
middle and last name, or company, and the first e-mail address).

Cards are read with ``vobject``, with the few adaptations described above
``read_cards``.  Used by ``easync.importer`` (``easync-admin import``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import vobject
from vobject.base import ContentLine, VObjectError
from vobject.icalendar import escapableCharList, stringToTextValues

from easync.items import email_address
from easync.settings import Settings

MAX_PICTURE_BYTES = Settings().max_picture_bytes


class VCardError(ValueError):
    """A text that cannot be read as vCard at all."""


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


def _read_error(e: Exception, first_line: int = 1) -> str:
    """vobject's complaint in terms of the file, not of the container around it
    (``first_line``: the file's line number of the text's first line)."""
    msg = str(getattr(e, "msg", e)).replace(f"{_CONTAINER} component wasn't closed",
                                            "END without its BEGIN")
    line = getattr(e, "lineNumber", None)
    if isinstance(line, int) and line > 1:
        return f"line {line - 2 + first_line}: {msg}"
    return msg


def read_cards(text: str, first_line: int = 1) -> tuple[list[list[Prop]], list[str]]:
    """The cards of a vCard file, each a list of its properties in file order (nested
    cards, e.g. a 2.1 AGENT, skipped), and warnings about lines that were skipped.
    ``first_line``: the line number of the text's first line in its file (for the
    line numbers of errors, when the text is a part of the file: ``card_chunks``)."""
    source = _CARD_EDGE.sub(r"\1", _LINE_END.sub("\n", text))
    source = f"BEGIN:{_CONTAINER}\n{source}\nEND:{_CONTAINER}\n"
    skipped: list[str] = []
    with _skipped_lines(skipped):
        try:
            containers = list(vobject.readComponents(source, ignoreUnreadable=True,
                                                     allowQP=True))
        except (LookupError, UnicodeDecodeError) as e:
            raise VCardError("a quoted-printable value cannot be decoded with its "
                               f"CHARSET ({e})") from None
        except (VObjectError, ValueError) as e:
            raise VCardError(f"not a valid vCard file: {_read_error(e, first_line)}") from None
    cards = []
    for container in containers:
        for card in container.components():
            if card.name == "VCARD":
                lines = sorted(card.lines(), key=lambda line: line.lineNumber or 0)
                cards.append([_prop(line) for line in lines])
    return cards, list(dict.fromkeys(skipped))


_EDGE_LINE = re.compile(r"^(BEGIN|END):VCARD[ \t]*$", re.IGNORECASE)


def card_chunks(lines: Iterable[str], size: int = 500
                ) -> Iterator[tuple[list[list[Prop]], list[str]]]:
    """The cards of a vCard file given line by line (line ends removed), read as
    ``read_cards`` reads the whole text but ``size`` cards at a time: (cards, warnings
    about skipped lines) per part, errors with the file's line numbers.  Only one part
    is in memory at a time (issue 13: 100,000 contacts took 1.3 GB read at once).

    A part ends after the END:VCARD that closes its ``size``-th card (an END nested
    in a card, a 2.1 AGENT, does not end it); what lies between cards stays in its
    part, so vobject skips or refuses it as it would in the whole file."""
    part: list[str] = []
    first = lineno = 1
    depth = cards = 0
    for line in lines:
        part.append(line)
        lineno += 1
        edge = _EDGE_LINE.match(line)
        if edge is None:
            continue
        if edge.group(1).upper() == "BEGIN":
            depth += 1
            continue
        depth -= 1
        if depth < 0:
            depth = 0            # an END without its BEGIN: read_cards says so
        elif depth == 0:
            cards += 1
        if depth == 0 and cards >= size:
            yield read_cards("\n".join(part), first)
            part, first, cards = [], lineno, 0
    if any(line.strip() for line in part):
        yield read_cards("\n".join(part), first)


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
            slot = next((_ADDRESS_PREFIX[k] for k in kinds
                         if not any(f"{_ADDRESS_PREFIX[k]}Address{x}" in out
                                    for x in ("Street", "City", "PostalCode", "State",
                                              "Country"))), None)
            if slot is None:
                warnings.append(f"address {'; '.join(x for x in adr if x.strip())} "
                                "dropped: no free address slot")
                continue
            lines = [x for x in (street, ext, f"PO Box {pobox}" if pobox else "") if x]
            put(f"{slot}AddressStreet", "\n".join(lines))
            put(f"{slot}AddressCity", city)
            put(f"{slot}AddressState", region)
            put(f"{slot}AddressPostalCode", code)
            put(f"{slot}AddressCountry", country)
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
