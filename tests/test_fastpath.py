"""The pre-encoded ApplicationData gives the same bytes as to_eas + encode."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from easync.items import convert
from easync.items.contact import CONTACTS2_FIELDS, CONTACTS_FIELDS
from easync.items.fastpath import FragmentCache, app_data, contact_fragment
from easync.wbxml import E, decode, encode

QUIRKS = {
    "iphone": convert.DeviceQuirks(device_type="iPhone", user_agent="Apple-iPhone13C2/2003.68"),
    "android": convert.DeviceQuirks(device_type="Android", user_agent="Android/12-EAS-2.0"),
}
PREFS = [None, [convert.BodyPreference(type=1, truncation_size=20)],
         [convert.BodyPreference(type=2, truncation_size=None, preview=50)]]

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
field_names = [n for n in CONTACTS_FIELDS if n not in ("Birthday", "Anniversary",
                                                      "Categories", "Children")]
contacts = st.fixed_dictionaries({}, optional={
    **{n: text for n in field_names},
    **{n: text for n in CONTACTS2_FIELDS},
    "Birthday": st.dates().map(lambda d: d.isoformat()),
    "Anniversary": st.dates().map(lambda d: d.isoformat()),
    "Categories": st.lists(text, max_size=3),
    "Children": st.lists(text, max_size=3),
    "Body": st.fixed_dictionaries({"Type": st.sampled_from([1, 2]), "Data": text}),
})


def generic(cls, data, version, prefs, quirks) -> bytes:
    return encode(E("AirSync:Sync", E("AirSync:ServerId", "1:1"),
                    E("AirSync:ApplicationData", *convert.to_eas(cls, data, version, prefs,
                                                               quirks))))


def fast(cls, data, version, prefs, quirks) -> bytes:
    return encode(E("AirSync:Sync", E("AirSync:ServerId", "1:1"),
                    app_data(cls, data, version, prefs, quirks)))


@settings(max_examples=300, deadline=None)
@given(contacts, st.sampled_from(["12.1", "14.1", "16.1"]), st.sampled_from(range(3)),
       st.sampled_from(sorted(QUIRKS)))
def test_contact_fast_path_is_byte_identical(data, version, p, q) -> None:
    assert fast("Contacts", data, version, PREFS[p], QUIRKS[q]) == \
        generic("Contacts", data, version, PREFS[p], QUIRKS[q])


def test_rich_contact_and_nul_and_unicode() -> None:
    data = {"FirstName": "Zoë\x00", "LastName": "\x00", "Categories": ["VIP", "Clienti"],
            "Birthday": "1985-03-14", "NickName": "Z", "Body": {"Type": 1, "Data": "ciao ☃"},
            "Email1Address": '"Zoë" <zoe@example.org>'}
    for q in QUIRKS.values():
        a = fast("Contacts", data, "14.1", None, q)
        assert a == generic("Contacts", data, "14.1", None, q)
        app = decode(a).find("AirSync:ApplicationData")
        assert app.findtext("Contacts:FirstName") == "Zoë"
        assert app.findtext("Contacts:LastName") == ""
        assert app.findtext("Contacts2:NickName") == "Z"


def test_fragments_inside_a_document_keep_page_state() -> None:
    q = QUIRKS["iphone"]
    d1 = {"FirstName": "A", "Body": {"Type": 1, "Data": "x"}}
    d2 = {"Subject": "meeting", "StartTime": "20270101T100000Z", "EndTime": "20270101T110000Z"}
    frag_doc = encode(E("AirSync:Commands",
                        E("AirSync:Add", E("AirSync:ServerId", "1"),
                          contact_fragment(d1, "14.1", None, q)),
                        E("AirSync:Add", E("AirSync:ServerId", "2"),
                          app_data("Calendar", d2, "14.1", None, q))))
    tree_doc = encode(E("AirSync:Commands",
                        E("AirSync:Add", E("AirSync:ServerId", "1"), E(
                            "AirSync:ApplicationData", *convert.to_eas("Contacts", d1, "14.1",
                                                                     None, q))),
                        E("AirSync:Add", E("AirSync:ServerId", "2"), E(
                            "AirSync:ApplicationData", *convert.to_eas("Calendar", d2, "14.1",
                                                                     None, q)))))
    assert frag_doc == tree_doc


def test_cache_reuses_by_item_version_and_options() -> None:
    cache = FragmentCache(size=2)
    q = QUIRKS["iphone"]
    f1 = cache.get("Contacts", "1:1", 5, {"FirstName": "A"}, "14.1", None, q)
    assert cache.get("Contacts", "1:1", 5, {"FirstName": "A"}, "14.1", None, q) is f1
    f2 = cache.get("Contacts", "1:1", 6, {"FirstName": "B"}, "14.1", None, q)
    assert f2 is not f1 and "B" in f2.encoded
    android = cache.get("Contacts", "1:1", 6, {"FirstName": "B"}, "14.1", None,
                        QUIRKS["android"])
    assert android is not f2
    assert cache.hits == 1 and cache.misses == 3
