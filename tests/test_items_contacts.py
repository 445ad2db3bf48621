"""Contacts <-> EAS, birthdays, pictures, bodies, Supported/ghosting."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from easync.handler import EasRequest
from easync.items._common import DROPPED
from easync.items.contact import file_as
from easync.items.convert import (
    BodyPreference,
    DeviceQuirks,
    ItemError,
    body_preferences,
    from_eas,
    merge_change,
    supported_names,
    to_eas,
)
from easync.model import User
from easync.settings import Settings
from easync.wbxml import codepages
from easync.wbxml.element import E, Element

VERSIONS = ("12.1", "14.1", "16.1")
IPHONE = DeviceQuirks(device_type="iPhone", user_agent="Apple-iPhone11C8/2007.75")
STOCK_ANDROID = DeviceQuirks(device_type="Android", user_agent="Android/4.4.2-EAS-1.3")
GMAIL = DeviceQuirks(device_type="Android", user_agent="Android-Mail/2021.05")
SAMSUNG = DeviceQuirks(device_type="SAMSUNGSMG991B", user_agent="SAMSUNG-SM-G991B/101.11")
SAMSUNG_AS_ANDROID = DeviceQuirks(device_type="Android", user_agent="SAMSUNG-SM-G991B/101")
BLACKBERRY = DeviceQuirks(device_type="BlackBerry", user_agent="RIM-Q10/10.3")
OUTLOOK = DeviceQuirks(device_type="WindowsOutlook15", user_agent="Outlook/16.0")

PICTURE = base64.b64encode(bytes(range(256)) * 4).decode()

PAGE1 = (
    "AssistantName", "AssistantPhoneNumber", "Business2PhoneNumber", "BusinessAddressCity",
    "BusinessAddressCountry", "BusinessAddressPostalCode", "BusinessAddressState",
    "BusinessAddressStreet", "BusinessFaxNumber", "BusinessPhoneNumber", "CarPhoneNumber",
    "CompanyName", "Department", "Email1Address", "Email2Address", "Email3Address", "FileAs",
    "FirstName", "Home2PhoneNumber", "HomeAddressCity", "HomeAddressCountry",
    "HomeAddressPostalCode", "HomeAddressState", "HomeAddressStreet", "HomeFaxNumber",
    "HomePhoneNumber", "JobTitle", "LastName", "MiddleName", "MobilePhoneNumber",
    "OfficeLocation", "OtherAddressCity", "OtherAddressCountry", "OtherAddressPostalCode",
    "OtherAddressState", "OtherAddressStreet", "PagerNumber", "RadioPhoneNumber", "Spouse",
    "Suffix", "Title", "WebPage", "YomiCompanyName", "YomiFirstName", "YomiLastName",
)
PAGE12 = ("CustomerId", "GovernmentId", "IMAddress", "IMAddress2", "IMAddress3", "ManagerName",
          "CompanyMainPhone", "AccountName", "NickName", "MMS")


def rich_contact() -> dict[str, Any]:
    data: dict[str, Any] = {name: f"{name} välue ✓" for name in PAGE1 + PAGE12}
    data.update({
        "Email1Address": '"Jane Doe" <jane@example.org>',
        "Email2Address": "jane.doe@work.example",
        "Email3Address": "j@example.net",
        "Birthday": "1980-02-29",
        "Anniversary": "2005-06-18",
        "Categories": ["Family", "VIP"],
        "Children": ["Ann", "Bob"],
        "Picture": PICTURE,
        "Body": {"Type": 1, "Data": "Met at the conference.\nLikes tea."},
    })
    return data


def appdata(children: list[Element]) -> Element:
    return Element("AirSync:ApplicationData", children=children)


def roundtrip(data: dict[str, Any], version: str,
              quirks: DeviceQuirks | None = None) -> dict[str, Any]:
    return from_eas("Contacts", appdata(to_eas("Contacts", data, version, quirks=quirks)),
                    version, quirks)


# -- round trips / coverage ------------------------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_rich_contact_round_trip(version: str) -> None:
    data = rich_contact()
    assert roundtrip(data, version) == data


@pytest.mark.parametrize("version", VERSIONS)
def test_every_field_is_emitted_with_a_known_tag(version: str) -> None:
    els = to_eas("Contacts", rich_contact(), version)
    tags = [e.tag for e in els]
    for name in PAGE1 + ("Birthday", "Anniversary", "Categories", "Children", "Picture"):
        assert f"Contacts:{name}" in tags
    for name in PAGE12:
        assert f"Contacts2:{name}" in tags
    assert "AirSyncBase:Body" in tags and "AirSyncBase:NativeBodyType" in tags
    for el in els:
        for node in el.iter():
            assert node.tag in codepages.TAG_CODES, node.tag
    assert not {"Contacts:Alias", "Contacts:WeightedRank", "Contacts:Body"} & set(tags)
    cats = next(e for e in els if e.tag == "Contacts:Categories")
    assert [c.tag for c in cats.children] == ["Contacts:Category", "Contacts:Category"]
    kids = next(e for e in els if e.tag == "Contacts:Children")
    assert [(c.tag, c.text) for c in kids.children] == [("Contacts:Child", "Ann"),
                                                         ("Contacts:Child", "Bob")]


def test_absent_properties_stay_absent() -> None:
    assert from_eas("Contacts", appdata([E("Contacts:FirstName", "Al")]), "14.1") == {
        "FirstName": "Al"}
    # FileAs is the one property made when missing (issue 8, point 7)
    assert to_eas("Contacts", {"FirstName": "Al"}, "14.1") == [
        E("Contacts:FileAs", "Al"), E("Contacts:FirstName", "Al")]


def test_alias_and_weighted_rank_are_not_stored() -> None:
    ad = appdata([E("Contacts:FirstName", "Al"), E("Contacts:Alias", "al"),
                  E("Contacts:WeightedRank", "3")])
    assert from_eas("Contacts", ad, "14.1") == {"FirstName": "Al"}


def test_empty_elements_are_marked_empty() -> None:
    ad = appdata([E("Contacts:FirstName"), E("Contacts:Categories"), E("Contacts:Picture")])
    assert from_eas("Contacts", ad, "14.1") == {"FirstName": "", "Categories": [],
                                                 "Picture": ""}


def test_nul_is_stripped() -> None:
    ad = appdata([E("Contacts:FirstName", "Al\x00")])
    assert from_eas("Contacts", ad, "14.1") == {"FirstName": "Al"}


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(
    st.sampled_from(PAGE1 + PAGE12),
    # C0 controls but tab, LF, CR are removed on input (issue #10, point 8)
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(
        chr(c) for c in range(0x20) if c not in (0x09, 0x0A, 0x0D))),
            min_size=1, max_size=40),
    max_size=20),
    st.sampled_from(VERSIONS))
def test_string_fields_round_trip_property(data: dict[str, str], version: str) -> None:
    back = roundtrip(data, version)
    if "FileAs" not in data:        # made from the names when missing (issue 8, point 7)
        assert back.pop("FileAs", "") == file_as(data)
    assert back == data


# -- birthdays ---------------------------------------------------------------------------------

def birthday_in(value: str, quirks: DeviceQuirks | None = None) -> str:
    ad = appdata([E("Contacts:Birthday", value)])
    data = from_eas("Contacts", ad, "14.1", quirks)
    if "Birthday" not in data:
        raise ItemError(f"left out: {value!r}")
    return data["Birthday"]


def birthday_out(day: str, quirks: DeviceQuirks | None = None) -> str:
    els = to_eas("Contacts", {"Birthday": day}, "14.1", quirks=quirks)
    return next(e.text for e in els if e.tag == "Contacts:Birthday") or ""


@pytest.mark.parametrize(("sent", "day"), [
    ("1990-05-10T00:00:00.000Z", "1990-05-10"),   # iOS, Samsung, Gmail
    ("1990-05-10T08:00:00.000Z", "1990-05-10"),   # stock Android
    ("1990-05-10T11:00:00.000Z", "1990-05-10"),   # BlackBerry
    ("1990-05-10T11:59:00.000Z", "1990-05-10"),   # the spec's example time
    ("1990-05-09T22:00:00.000Z", "1990-05-10"),   # Outlook in UTC+2: local midnight
    ("1990-05-09T12:00:00.000Z", "1990-05-10"),   # Outlook in UTC+12
    ("1990-05-10T05:00:00.000Z", "1990-05-10"),   # Outlook in UTC-5
    ("19900510T000000Z", "1990-05-10"),           # compact form
    ("1990-05-10T00:00:00Z", "1990-05-10"),       # no fraction
    ("1990-05-10", "1990-05-10"),                 # a bare date
    ("1990-05-10T02:00:00+02:00", "1990-05-10"),  # explicit offset
])
def test_birthday_input(sent: str, day: str) -> None:
    assert birthday_in(sent) == day


def test_birthday_device_in_utc_plus_14_and_minus_12() -> None:
    # iOS-style clients send 00:00Z whatever their own zone
    for offset in (14 * 60, -12 * 60):
        quirks = DeviceQuirks(device_type="iPhone", utc_offset_minutes=offset)
        assert birthday_in("1990-05-10T00:00:00.000Z", quirks) == "1990-05-10"
        assert birthday_out("1990-05-10", quirks) == "1990-05-10T00:00:00.000Z"
    # clients sending local midnight as an instant, when the device's offset is known
    kiribati = DeviceQuirks(device_type="WindowsOutlook15", utc_offset_minutes=14 * 60)
    assert birthday_in("1990-05-09T10:00:00.000Z", kiribati) == "1990-05-10"
    baker = DeviceQuirks(device_type="WindowsOutlook15", utc_offset_minutes=-12 * 60)
    assert birthday_in("1990-05-10T12:00:00.000Z", baker) == "1990-05-10"


@pytest.mark.parametrize(("quirks", "hour"), [
    (None, "00"), (IPHONE, "00"), (STOCK_ANDROID, "08"), (GMAIL, "00"), (SAMSUNG, "00"),
    (SAMSUNG_AS_ANDROID, "00"), (BLACKBERRY, "11"), (OUTLOOK, "00"),
])
def test_birthday_output_per_device(quirks: DeviceQuirks | None, hour: str) -> None:
    assert birthday_out("1990-05-10", quirks) == f"1990-05-10T{hour}:00:00.000Z"
    els = to_eas("Contacts", {"Anniversary": "2001-12-31"}, "16.1", quirks=quirks)
    assert els == [E("Contacts:Anniversary", f"2001-12-31T{hour}:00:00.000Z")]


def test_stock_android_device_originated_birthday() -> None:
    assert birthday_in("1990-05-10T08:00:00.000Z", STOCK_ANDROID) == "1990-05-10"
    assert birthday_in("1990-05-10T11:00:00.000Z", BLACKBERRY) == "1990-05-10"


@settings(max_examples=150, deadline=None)
@given(st.dates(min_value=date(1901, 1, 1), max_value=date(2100, 12, 31)),
       st.sampled_from([None, IPHONE, STOCK_ANDROID, GMAIL, SAMSUNG, BLACKBERRY, OUTLOOK]))
def test_birthday_never_shifts_round_trip(day: date, quirks: DeviceQuirks | None) -> None:
    assert roundtrip({"Birthday": day.isoformat()}, "14.1", quirks) == {
        "Birthday": day.isoformat()}


@settings(max_examples=150, deadline=None)
@given(st.dates(min_value=date(1901, 1, 1), max_value=date(2100, 12, 31)),
       st.integers(min_value=-12 * 4, max_value=14 * 4).map(lambda q: q * 15))
def test_birthday_local_midnight_from_any_zone(day: date, offset: int) -> None:
    """A device sending local midnight converted to UTC keeps its day (offset known)."""
    local_midnight = datetime(day.year, day.month, day.day, tzinfo=UTC) - timedelta(
        minutes=offset)
    sent = local_midnight.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    quirks = DeviceQuirks(device_type="WindowsOutlook15", utc_offset_minutes=offset)
    assert birthday_in(sent, quirks) == day.isoformat()
    if -11 * 60 <= offset <= 12 * 60:       # and without knowing the offset
        assert birthday_in(sent) == day.isoformat()


@pytest.mark.parametrize("bad", ["yesterday", "1990-13-01T00:00:00.000Z", "19900231T000000Z",
                                 "1990-05"])
def test_bad_birthday_is_item_error(bad: str) -> None:
    with pytest.raises(ItemError):
        birthday_in(bad)
    # in an item: the birthday is left out, the contact kept (issue 8)
    d = from_eas("Contacts", appdata([E("Contacts:FirstName", "A"),
                                      E("Contacts:Birthday", bad)]), "14.1")
    assert d == {"FirstName": "A", DROPPED: ["Birthday"]}


# -- picture -------------------------------------------------------------------------------------

def test_picture_kept_and_limits() -> None:
    wrapped = "\n".join(PICTURE[i:i + 76] for i in range(0, len(PICTURE), 76))
    ad = appdata([E("Contacts:Picture", wrapped)])
    assert from_eas("Contacts", ad, "14.1") == {"Picture": PICTURE}
    small = DeviceQuirks(max_picture_bytes=1000)
    # too large or not base64: the picture is left out, the contact kept (issue 8)
    assert from_eas("Contacts", ad, "14.1", small) == {DROPPED: ["Picture"]}
    assert from_eas("Contacts", appdata([E("Contacts:Picture", "@@not*base64@@")]),
                    "14.1") == {DROPPED: ["Picture"]}


def test_default_picture_limit_is_settings() -> None:
    assert DeviceQuirks().max_picture_bytes == Settings().max_picture_bytes
    big = base64.b64encode(bytes(Settings().max_picture_bytes + 1)).decode()
    assert from_eas("Contacts", appdata([E("Contacts:Picture", big)]), "14.1") == {
        DROPPED: ["Picture"]}


def test_from_request_reads_device_facts() -> None:
    req = EasRequest(cmd="Sync", user=User(id=1, name="u"), device_id="androidc1",
                     device_type="Android", version="16.1", user_agent="Android/10-EAS-2.0",
                     device={"info": {"OS": "Android 10"}})
    q = DeviceQuirks.from_request(req, Settings(max_picture_bytes=10))
    assert q.is_stock_android and q.birthday_hour == 8 and q.max_picture_bytes == 10
    assert q.is_16 and not q.sends_empty_picture


# -- bodies --------------------------------------------------------------------------------------

def body_el(data: dict[str, Any], prefs: list[BodyPreference] | None,
            version: str = "14.1") -> tuple[Element | None, Element | None]:
    els = to_eas("Contacts", data, version, prefs)
    body = next((e for e in els if e.tag == "AirSyncBase:Body"), None)
    native = next((e for e in els if e.tag == "AirSyncBase:NativeBodyType"), None)
    return body, native


def test_no_prefs_full_plain_text() -> None:
    body, native = body_el({"Body": {"Type": 1, "Data": "héllo"}}, None)
    assert body == E("AirSyncBase:Body", E("AirSyncBase:Type", 1),
                     E("AirSyncBase:EstimatedDataSize", 6), E("AirSyncBase:Truncated", 0),
                     E("AirSyncBase:Data", "héllo"))
    assert native == E("AirSyncBase:NativeBodyType", 1)


def test_no_prefs_html_is_converted_to_text() -> None:
    html = "<html><head><style>p {}</style></head><body>Hi&amp;bye<br>x<p>y</p></body>"
    body, native = body_el({"Body": {"Type": 2, "Data": html}}, None)
    assert body is not None and body.findtext("AirSyncBase:Type") == "1"
    assert body.findtext("AirSyncBase:Data") == "Hi&bye\nx\ny"
    assert native == E("AirSyncBase:NativeBodyType", 2)


def test_truncation_in_utf8_bytes_never_splits_a_character() -> None:
    data = "aé€😀" * 10          # 1+2+3+4 bytes per group
    prefs = [BodyPreference(type=1, truncation_size=8)]
    body, _ = body_el({"Body": {"Type": 1, "Data": data}}, prefs)
    assert body is not None
    assert body.findtext("AirSyncBase:Truncated") == "1"
    assert body.findtext("AirSyncBase:EstimatedDataSize") == str(len(data.encode()))
    sent = body.findtext("AirSyncBase:Data") or ""
    assert sent == "aé€" and len(sent.encode()) <= 8
    prefs = [BodyPreference(type=1, truncation_size=7)]
    body, _ = body_el({"Body": {"Type": 1, "Data": data}}, prefs)
    assert body is not None and body.findtext("AirSyncBase:Data") == "aé€"
    prefs = [BodyPreference(type=1, truncation_size=5)]
    body, _ = body_el({"Body": {"Type": 1, "Data": data}}, prefs)
    assert body is not None and body.findtext("AirSyncBase:Data") == "aé"


def test_all_or_none() -> None:
    prefs = [BodyPreference(type=1, truncation_size=3, all_or_none=True)]
    body, _ = body_el({"Body": {"Type": 1, "Data": "too long"}}, prefs)
    assert body == E("AirSyncBase:Body", E("AirSyncBase:Type", 1),
                     E("AirSyncBase:EstimatedDataSize", 8), E("AirSyncBase:Truncated", 1))
    prefs = [BodyPreference(type=1, truncation_size=100, all_or_none=True)]
    body, _ = body_el({"Body": {"Type": 1, "Data": "fits"}}, prefs)
    assert body is not None and body.findtext("AirSyncBase:Data") == "fits"


def test_html_requested_text_stored_sends_text() -> None:
    prefs = [BodyPreference(type=2, truncation_size=200000)]
    body, native = body_el({"Body": {"Type": 1, "Data": "plain"}}, prefs)
    assert body is not None and body.findtext("AirSyncBase:Type") == "1"
    assert body.findtext("AirSyncBase:Data") == "plain"
    assert native == E("AirSyncBase:NativeBodyType", 1)


def test_matching_preference_is_chosen() -> None:
    prefs = [BodyPreference(type=1, truncation_size=2), BodyPreference(type=2)]
    body, _ = body_el({"Body": {"Type": 2, "Data": "<b>bold</b>"}}, prefs)
    assert body is not None and body.findtext("AirSyncBase:Type") == "2"
    assert body.findtext("AirSyncBase:Data") == "<b>bold</b>"
    body, _ = body_el({"Body": {"Type": 2, "Data": "<b>bold</b>"}}, prefs[:1])
    assert body is not None and body.findtext("AirSyncBase:Type") == "1"
    assert body.findtext("AirSyncBase:Data") == "bo"


def test_preview_only_from_14() -> None:
    prefs = [BodyPreference(type=1, truncation_size=4, preview=5)]
    body, _ = body_el({"Body": {"Type": 1, "Data": "0123456789"}}, prefs, "14.1")
    assert body is not None and body.findtext("AirSyncBase:Preview") == "01234"
    body, _ = body_el({"Body": {"Type": 1, "Data": "0123456789"}}, prefs, "12.1")
    assert body is not None and body.find("AirSyncBase:Preview") is None
    prefs = [BodyPreference(type=1, preview=1000)]
    body, _ = body_el({"Body": {"Type": 1, "Data": "x" * 400}}, prefs, "16.1")
    assert body is not None and body.findtext("AirSyncBase:Preview") == "x" * 255


def test_no_body_no_elements() -> None:
    assert body_el({"FirstName": "A"}, [BodyPreference(type=1)]) == (None, None)
    assert body_el({"Body": {"Type": 1, "Data": ""}}, None) == (None, None)


def test_body_from_client() -> None:
    ad = appdata([E("AirSyncBase:Body", E("AirSyncBase:Type", 2),
                    E("AirSyncBase:Data", "<i>x</i>"))])
    assert from_eas("Contacts", ad, "16.1") == {"Body": {"Type": 2, "Data": "<i>x</i>"}}
    assert from_eas("Contacts", appdata([E("AirSyncBase:Body", E("AirSyncBase:Type", "9"))]),
                    "16.1") == {DROPPED: ["Body"]}


def test_body_preferences_parsing() -> None:
    options = E("AirSync:Options", E("AirSync:FilterType", 0),
                E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", 1),
                  E("AirSyncBase:TruncationSize", 32768), E("AirSyncBase:AllOrNone", 1),
                  E("AirSyncBase:Preview", 100)),
                E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", 2)))
    assert body_preferences(options) == [
        BodyPreference(type=1, truncation_size=32768, all_or_none=True, preview=100),
        BodyPreference(type=2)]
    assert body_preferences(None) == []
    assert body_preferences(E("AirSync:Options")) == []


# -- ghosting ------------------------------------------------------------------------------------

OLD = {"FirstName": "Jane", "LastName": "Doe", "MobilePhoneNumber": "+39 1", "Picture": PICTURE,
       "Body": {"Type": 1, "Data": "notes"}, "Categories": ["VIP"]}


def test_no_supported_replaces_everything() -> None:
    new = {"FirstName": "Janet"}
    assert merge_change("Contacts", OLD, new, None) == {"FirstName": "Janet"}


def test_empty_supported_ghosts_everything() -> None:
    new = {"FirstName": "Janet"}
    assert merge_change("Contacts", OLD, new, []) == dict(OLD, FirstName="Janet")


def test_supported_list_clears_only_listed() -> None:
    new = {"FirstName": "Janet"}
    merged = merge_change("Contacts", OLD, new, ["FirstName", "LastName", "Picture"])
    assert merged == {"FirstName": "Janet", "MobilePhoneNumber": "+39 1",
                      "Body": {"Type": 1, "Data": "notes"}, "Categories": ["VIP"]}


def test_explicit_empty_clears_even_when_ghosted() -> None:
    new = {"FirstName": "Janet", "LastName": "", "Categories": []}
    merged = merge_change("Contacts", OLD, new, [])
    assert "LastName" not in merged and "Categories" not in merged
    assert merged["MobilePhoneNumber"] == "+39 1"


def test_ios_empty_picture_keeps_picture() -> None:
    new = {"FirstName": "Janet", "Picture": ""}
    assert merge_change("Contacts", OLD, new, None, IPHONE)["Picture"] == PICTURE
    assert "Picture" not in merge_change("Contacts", OLD, new, None, STOCK_ANDROID)
    assert "Picture" not in merge_change("Contacts", OLD, new, None)
    # a real new picture from iOS replaces it, an absent one (no ghosting) clears it
    assert merge_change("Contacts", OLD, {"Picture": "AAAA"}, None, IPHONE)["Picture"] == "AAAA"
    assert "Picture" not in merge_change("Contacts", OLD, {"FirstName": "J"}, None, IPHONE)


def test_add_is_cleaned_by_merge_with_nothing() -> None:
    ad = appdata([E("Contacts:FirstName", "Al"), E("Contacts:LastName"),
                  E("Contacts:Picture")])
    new = from_eas("Contacts", ad, "14.1", IPHONE)
    assert merge_change("Contacts", {}, new, None, IPHONE) == {"FirstName": "Al"}


def test_supported_names() -> None:
    sup = E("AirSync:Supported", E("Contacts:FirstName"), E("Contacts:Picture"),
            E("Contacts2:NickName"), E("Contacts:Birthday"), E("Contacts:FirstName"))
    assert supported_names(sup) == ["FirstName", "Picture", "NickName", "Birthday"]
    assert supported_names(E("AirSync:Supported")) == []


def test_wrong_class_is_value_error() -> None:
    with pytest.raises(ValueError):
        to_eas("Email", {}, "14.1")


# -- FileAs (issue 8, point 7) ------------------------------------------------------------

@pytest.mark.parametrize("order, expected", [
    ("last-first", "Rossi, Anna"), ("first-last", "Anna Rossi"),
    ("last-first-nocomma", "Rossi Anna"), ("company-first", "ACME"),
])
def test_file_as_orders(order: str, expected: str) -> None:
    """MS-ASCNTC 2.2.2.32: FileAs is how a contact is filed; made when a device sent none."""
    data = {"FirstName": "Anna", "LastName": "Rossi", "CompanyName": "ACME"}
    assert file_as(data, order) == expected
    els = to_eas("Contacts", data, "14.1", quirks=DeviceQuirks(fileas_order=order))
    assert E("Contacts:FileAs", expected) in els


def test_file_as_falls_back_and_never_overrides() -> None:
    assert file_as({"LastName": "Solo"}) == "Solo"
    assert file_as({"CompanyName": "ACME"}, "first-last") == "ACME"
    assert file_as({"Email2Address": '"Info" <Info@Example.org>'}) == "info@example.org"
    assert file_as({"JobTitle": "nobody"}) == ""
    assert E("Contacts:FileAs", "Mine") in to_eas(
        "Contacts", {"FileAs": "Mine", "FirstName": "A", "LastName": "B"}, "16.1")
    # nothing to file under: no FileAs element at all
    assert all(e.tag != "Contacts:FileAs" for e in to_eas("Contacts", {"JobTitle": "x"},
                                                            "14.1"))
