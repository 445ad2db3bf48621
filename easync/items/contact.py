"""Contacts (MS-ASCNTC, code pages 1 and 12) ↔ canonical dict."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from easync.items import email_address
from easync.items._common import (
    VALUE_ERRORS,
    BodyPreference,
    DeviceQuirks,
    ItemError,
    body_to_eas,
    check_picture,
    drop_value,
    list_element,
    list_of,
    parse_body,
    parse_datetime,
    text_of,
)
from easync.wbxml.element import Element

# Page 1 properties in token order (2.5-only tags, Alias and WeightedRank left out).
CONTACTS_FIELDS: tuple[str, ...] = (
    "Anniversary", "AssistantName", "AssistantPhoneNumber", "Birthday",
    "Business2PhoneNumber", "BusinessAddressCity", "BusinessAddressCountry",
    "BusinessAddressPostalCode", "BusinessAddressState", "BusinessAddressStreet",
    "BusinessFaxNumber", "BusinessPhoneNumber", "CarPhoneNumber", "Categories", "Children",
    "CompanyName", "Department", "Email1Address", "Email2Address", "Email3Address", "FileAs",
    "FirstName", "Home2PhoneNumber", "HomeAddressCity", "HomeAddressCountry",
    "HomeAddressPostalCode", "HomeAddressState", "HomeAddressStreet", "HomeFaxNumber",
    "HomePhoneNumber", "JobTitle", "LastName", "MiddleName", "MobilePhoneNumber",
    "OfficeLocation", "OtherAddressCity", "OtherAddressCountry", "OtherAddressPostalCode",
    "OtherAddressState", "OtherAddressStreet", "PagerNumber", "RadioPhoneNumber", "Spouse",
    "Suffix", "Title", "WebPage", "YomiCompanyName", "YomiFirstName", "YomiLastName",
    "Picture",
)
CONTACTS2_FIELDS: tuple[str, ...] = (
    "CustomerId", "GovernmentId", "IMAddress", "IMAddress2", "IMAddress3", "ManagerName",
    "CompanyMainPhone", "AccountName", "NickName", "MMS",
)
DATE_FIELDS = frozenset({"Birthday", "Anniversary"})
LIST_FIELDS = {"Categories": "Category", "Children": "Child"}
# Every property a client may ghost (Supported) or a Change may clear.
PROPERTIES: frozenset[str] = frozenset(CONTACTS_FIELDS + CONTACTS2_FIELDS + ("Body",))
_IGNORED = frozenset({"Alias", "WeightedRank", "BodySize", "BodyTruncated", "CompressedRTF"})


def parse_birthday(value: str, quirks: DeviceQuirks) -> str:
    """A Birthday/Anniversary instant → the calendar date it means ("YYYY-MM-DD").

    A device known to send a fixed hour (00:00, 08:00, 11:00 UTC) gets that date;
    with a known device UTC offset, a value that is local midnight there gets the
    local date; otherwise ``(value + 12h).date()`` (22:00Z → next day, 00:00-11:59Z →
    the same day).
    """
    v = value.strip()
    if len(v) == 10 and v[4] == "-" and v[7] == "-":       # already a plain date
        try:
            return date.fromisoformat(v).isoformat()
        except ValueError as exc:
            raise ItemError(f"not a date: {value!r}") from exc
    dt = parse_datetime(v)
    hour = quirks.birthday_hour
    if hour and dt.hour == hour and dt.minute == 0:
        return dt.date().isoformat()
    try:
        if quirks.utc_offset_minutes is not None:
            local = dt + timedelta(minutes=quirks.utc_offset_minutes)
            if (local.hour, local.minute) == (0, 0):
                return local.date().isoformat()
        return (dt + timedelta(hours=12)).date().isoformat()
    except OverflowError:                   # the last hours of 9999-12-31
        return dt.date().isoformat()


def format_birthday(value: str, quirks: DeviceQuirks) -> str | None:
    try:
        d = date.fromisoformat(value[:10])
    except (ValueError, TypeError):
        try:
            d = date.fromisoformat(parse_birthday(value, DeviceQuirks()))
        except VALUE_ERRORS:
            return None
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{quirks.birthday_hour:02d}:00:00.000Z"


# Canonical key: {"Birthday": [device id, value as that device wrote it], ...}.  A
# birthday or anniversary goes back to the device that wrote it exactly as written
# (a phone at UTC-4 writes local midnight, 04:00Z, and reads it back so), to every
# other device as the same date in its own form.
WRITTEN = "_written"


def written_form(data: dict[str, Any], name: str, quirks: DeviceQuirks) -> str | None:
    """The value of date property ``name`` as this device wrote it, if it did and the
    stored date is still that one."""
    entry = (data.get(WRITTEN) or {}).get(name)
    if not (quirks.device_id and isinstance(entry, list) and len(entry) == 2
            and entry[0] == quirks.device_id):
        return None
    try:
        same = parse_birthday(str(entry[1]), quirks) == str(data.get(name))[:10]
    except VALUE_ERRORS:
        return None
    return str(entry[1]) if same else None


def date_text(data: dict[str, Any], name: str, quirks: DeviceQuirks) -> str | None:
    """Birthday/Anniversary as this device is sent it."""
    return written_form(data, name, quirks) or format_birthday(str(data[name]), quirks)


def file_as(data: dict[str, Any], order: str = "last-first") -> str:
    """The FileAs a contact without one is shown under: from its names in ``order``
    ("last-first": "Last, First"; "first-last": "First Last"; "last-first-nocomma":
    "Last First"; "company-first": the company, else "Last, First"), else the company,
    else the first e-mail address; "" when the contact has none of them."""
    def part(key: str) -> str:
        return str(data.get(key) or "").strip()

    first, last, company = part("FirstName"), part("LastName"), part("CompanyName")
    if order == "company-first" and company:
        return company
    if first or last:
        if order == "first-last":
            return " ".join(p for p in (first, last) if p)
        if order == "last-first-nocomma":
            return " ".join(p for p in (last, first) if p)
        return ", ".join(p for p in (last, first) if p)
    if company:
        return company
    for key in ("Email1Address", "Email2Address", "Email3Address"):
        addr = email_address(part(key))
        if addr:
            return addr
    return ""


def from_eas(appdata: Element, version: str, quirks: DeviceQuirks) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for child in appdata.children:
        page, _, name = child.tag.partition(":")
        try:
            if page == "AirSyncBase" and name == "Body":
                out["Body"] = parse_body(child)
                continue
            if page == "Contacts" and name == "Body":          # 2.5-style text body
                out["Body"] = {"Type": 1, "Data": text_of(child)}
                continue
            if page == "Contacts2" and name in CONTACTS2_FIELDS:
                out[name] = text_of(child)
                continue
            if page != "Contacts" or name in _IGNORED or name not in CONTACTS_FIELDS:
                continue
            if name in LIST_FIELDS:
                out[name] = list_of(child, f"Contacts:{LIST_FIELDS[name]}")
            elif name in DATE_FIELDS:
                text = text_of(child).strip()
                out[name] = parse_birthday(text, quirks) if text else ""
                if text and quirks.device_id and text != format_birthday(out[name], quirks):
                    out.setdefault(WRITTEN, {})[name] = [quirks.device_id, text]
            elif name == "Picture":
                out[name] = check_picture(text_of(child), quirks.max_picture_bytes)
            else:
                out[name] = text_of(child)
        except VALUE_ERRORS as exc:
            drop_value(out, name, "Contacts", exc)
    return out


def to_eas(data: dict[str, Any], version: str, prefs: list[BodyPreference] | None,
           quirks: DeviceQuirks) -> list[Element]:
    out: list[Element] = []
    if not data.get("FileAs"):
        made = file_as(data, quirks.fileas_order)
        if made:
            data = dict(data, FileAs=made)
    body, native = body_to_eas(data.get("Body"), prefs, version)
    if body is not None:
        out.append(body)
    for name in CONTACTS_FIELDS:
        value = data.get(name)
        if value is None or value == "" or value == []:
            continue
        if name in LIST_FIELDS:
            container = list_element(f"Contacts:{name}", f"Contacts:{LIST_FIELDS[name]}", value)
            if container is not None:
                out.append(container)
        elif name in DATE_FIELDS:
            text = date_text(data, name, quirks)
            if text:
                out.append(Element(f"Contacts:{name}", text))
        else:
            out.append(Element(f"Contacts:{name}", str(value)))
    for name in CONTACTS2_FIELDS:
        value = data.get(name)
        if value is not None and value != "":
            out.append(Element(f"Contacts2:{name}", str(value)))
    if native is not None:
        out.append(native)
    return out
