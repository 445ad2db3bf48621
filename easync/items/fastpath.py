"""Server→client ApplicationData as pre-encoded WBXML fragments.

An initial sync sends every item of a folder once; building an element tree per
contact and then encoding it dominates the cost of a Sync window.  ``app_data``
returns the ``AirSync:ApplicationData`` element already encoded
(``easync.wbxml.codec.Fragment``): contacts are written straight from the
canonical dict (same bytes as ``to_eas`` + ``encode``, checked by the tests),
other classes go through ``to_eas`` once.  ``FragmentCache`` keeps recent
fragments so that the next device syncing the same items reuses them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from easync.items import convert
from easync.items._common import body_to_eas
from easync.items.contact import (
    CONTACTS2_FIELDS,
    CONTACTS_FIELDS,
    DATE_FIELDS,
    LIST_FIELDS,
    WRITTEN,
    date_text,
    file_as,
)
from easync.wbxml.codec import Fragment, fragment
from easync.wbxml.codepages import TAG_CODES
from easync.wbxml.element import E, Element

_C = 1           # Contacts code page
_C2 = 12         # Contacts2
_OPEN_APPDATA = chr(TAG_CODES["AirSync:ApplicationData"][1] | 0x40)
_EMPTY_APPDATA = chr(TAG_CODES["AirSync:ApplicationData"][1])


def _open(tag: str) -> str:
    return chr(TAG_CODES[tag][1] | 0x40)


def _empty(tag: str) -> str:
    return chr(TAG_CODES[tag][1])


# name -> (open-with-STR_I, empty tag) for plain string properties; list fields get
# (container open, item open-with-STR_I)
_TEXT = {n: (_open(f"Contacts:{n}") + "\x03", _empty(f"Contacts:{n}"))
         for n in CONTACTS_FIELDS if n not in LIST_FIELDS}
_TEXT2 = {n: (_open(f"Contacts2:{n}") + "\x03", _empty(f"Contacts2:{n}"))
          for n in CONTACTS2_FIELDS}
_LIST = {n: (_open(f"Contacts:{n}"), _open(f"Contacts:{item}") + "\x03",
             _empty(f"Contacts:{item}"))
         for n, item in LIST_FIELDS.items()}
_SWITCH = {page: "\x00" + chr(page) for page in (0, _C, _C2, 17)}


def _put_text(out: list[str], opening: tuple[str, str], text: str) -> None:
    if "\x00" in text:
        text = text.replace("\x00", "")
        if not text:
            out.append(opening[1])
            return
    out.append(opening[0])
    out.append(text)
    out.append("\x00\x01")


def _elements(out: list[str], els: list[Element], page: int) -> int:
    """Append the body elements; returns the page in force after them."""
    for el in els:
        tpage, token = TAG_CODES[el.tag]
        leaves = el.children
        if all(not c.children and c.opaque is None and TAG_CODES[c.tag][0] == tpage
               for c in leaves) and el.opaque is None and (not leaves or el.text is None):
            # one element of leaves on one page (Body, NativeBodyType): write it directly
            if page != tpage:
                out.append("\x00" + chr(tpage))
                page = tpage
            if leaves:
                out.append(chr(token | 0x40))
                for c in leaves:
                    ctok = TAG_CODES[c.tag][1]
                    if c.text:
                        _put_text(out, (chr(ctok | 0x40) + "\x03", chr(ctok)), c.text)
                    else:
                        out.append(chr(ctok))
                out.append("\x01")
            elif el.text:
                _put_text(out, (chr(token | 0x40) + "\x03", chr(token)), el.text)
            else:
                out.append(chr(token))
            continue
        frag = fragment(E("AirSync:ApplicationData", el))
        # strip the ApplicationData open tag and its END: what remains starts on page 0
        inner = frag.encoded[1:-1]
        if inner.startswith("\x00"):
            inner_page = ord(inner[1])
            if inner_page == page:
                inner = inner[2:]
        elif page != 0:
            out.append(_SWITCH[0])
        out.append(inner)
        page = frag.end_page
    return page


def contact_fragment(data: dict[str, Any], version: str, prefs: list[Any] | None,
                     quirks: Any) -> Fragment:
    """The contact's ApplicationData, encoded directly (same bytes as the generic path)."""
    out = [_OPEN_APPDATA]
    page = 0
    if not data.get("FileAs"):
        made = file_as(data, quirks.fileas_order)
        if made:
            data = dict(data, FileAs=made)
    body, native = body_to_eas(data.get("Body"), prefs, version)
    if body is not None:
        page = _elements(out, [body], page)
    get = data.get
    for name in CONTACTS_FIELDS:
        value = get(name)
        if value is None or value == "" or value == []:
            continue
        if name in _LIST:
            items = [str(v) for v in value if v] if isinstance(value, list) else [str(value)]
            if not items:
                continue
            if page != _C:
                out.append(_SWITCH[_C])
                page = _C
            container, item_open, item_empty = _LIST[name]
            out.append(container)
            for item in items:
                _put_text(out, (item_open, item_empty), item)
            out.append("\x01")
            continue
        if name in DATE_FIELDS:
            text = date_text(data, name, quirks)
            if not text:
                continue
        else:
            text = str(value)
        if page != _C:
            out.append(_SWITCH[_C])
            page = _C
        _put_text(out, _TEXT[name], text)
    for name in CONTACTS2_FIELDS:
        value = get(name)
        if value is None or value == "":
            continue
        if page != _C2:
            out.append(_SWITCH[_C2])
            page = _C2
        _put_text(out, _TEXT2[name], str(value))
    if native is not None:
        page = _elements(out, [native], page)
    if len(out) == 1:                   # nothing to say: an empty element, as encode writes
        return Fragment(_EMPTY_APPDATA, 0)
    out.append("\x01")
    return Fragment("".join(out), page)


def app_data(cls: str, data: dict[str, Any], version: str, prefs: list[Any] | None,
             quirks: Any) -> Fragment:
    """``AirSync:ApplicationData`` for a server→client Add/Change/Fetch, pre-encoded."""
    if cls == "Contacts":
        return contact_fragment(data, version, prefs, quirks)
    return fragment(E("AirSync:ApplicationData", *convert.to_eas(cls, data, version, prefs,
                                                              quirks)))


class FragmentCache:
    """Recently encoded ApplicationData, keyed by item version and rendering options."""

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._d: OrderedDict[tuple[Any, ...], Fragment] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def options_key(version: str, prefs: list[Any] | None, quirks: Any) -> tuple[Any, ...]:
        """What else the encoded form depends on (compute once per response)."""
        return (version, _prefs_key(prefs), _quirks_key(quirks))

    def get(self, cls: str, server_id: str, modseq: int, data: dict[str, Any], version: str,
            prefs: list[Any] | None, quirks: Any,
            options: tuple[Any, ...] | None = None) -> Fragment:
        if options is None:
            options = self.options_key(version, prefs, quirks)
        key: tuple[Any, ...] = (server_id, modseq, options)
        if WRITTEN in data:         # dates go back to their writer as written
            key += (getattr(quirks, "device_id", ""),)
        frag = self._d.get(key)
        if frag is not None:
            self.hits += 1
            self._d.move_to_end(key)
            return frag
        self.misses += 1
        frag = app_data(cls, data, version, prefs, quirks)
        self._d[key] = frag
        if len(self._d) > self.size:
            self._d.popitem(last=False)
        return frag


def _prefs_key(prefs: list[Any] | None) -> tuple[Any, ...]:
    if not prefs:
        return ()
    return tuple((p.type, p.truncation_size, p.all_or_none, p.preview) for p in prefs)


def _quirks_key(quirks: Any) -> tuple[Any, ...]:
    if quirks is None:
        return ()
    return (quirks.birthday_hour, getattr(quirks, "utc_offset_minutes", None),
            getattr(quirks, "fileas_order", ""))
