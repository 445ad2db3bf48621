"""Find documents in WBXML without easync's codec and without libwbxml.

libwbxml 0.11.8 (the independent codec the other raw tests use) does not know
code page 25 (Find): ``xml2wbxml`` refuses a ``<Find xmlns="Find:">`` document.  So
the Find tests write and read the bytes here, from the token tables of
[MS-ASWBXML] 2.1.2.1 transcribed by hand below (only the tags Find uses), never from
``easync.wbxml``: what easync sends is checked against the specification's tokens.

WBXML 1.3 (the subset ActiveSync uses, [MS-ASWBXML] 2.1.1): header ``03 01 6A 00``
(version 1.3, public id 1, UTF-8, empty string table); SWITCH_PAGE ``00 pp``, END
``01``, STR_I ``03 … 00``, OPAQUE ``C3 len …``; a tag token with bit 0x40 has content.
"""

from __future__ import annotations

from rawclient import Node

HEADER = b"\x03\x01\x6a\x00"
SWITCH_PAGE, END, STR_I, OPAQUE = 0x00, 0x01, 0x03, 0xC3

#: [MS-ASWBXML] tokens, by code page: (page number, {name: token})
PAGES: dict[str, tuple[int, dict[str, int]]] = {
    # 2.1.2.1.1 Code Page 0: AirSync (the tags Find's Query and Result use)
    "AirSync": (0, {"ServerId": 0x0D, "Status": 0x0E, "Class": 0x10,
                    "CollectionId": 0x12}),
    # 2.1.2.1.17 Code Page 16: GAL
    "GAL": (16, {"DisplayName": 0x05, "Phone": 0x06, "Office": 0x07, "Title": 0x08,
                 "Company": 0x09, "Alias": 0x0A, "FirstName": 0x0B, "LastName": 0x0C,
                 "HomePhone": 0x0D, "MobilePhone": 0x0E, "EmailAddress": 0x0F,
                 "Picture": 0x10, "Status": 0x11, "Data": 0x12}),
    # 2.1.2.1.21 Code Page 20: ItemOperations (Find's Response/Store)
    "ItemOperations": (20, {"Store": 0x07}),
    # 2.1.2.1.26 Code Page 25: Find (16.1)
    "Find": (25, {"Find": 0x05, "SearchId": 0x06, "ExecuteSearch": 0x07,
                  "MailBoxSearchCriterion": 0x08, "Query": 0x09, "Status": 0x0A,
                  "FreeText": 0x0B, "Options": 0x0C, "Range": 0x0D,
                  "DeepTraversal": 0x0E, "Response": 0x11, "Result": 0x12,
                  "Properties": 0x13, "Preview": 0x14, "HasAttachments": 0x15,
                  "Total": 0x16, "DisplayCc": 0x17, "DisplayBcc": 0x18,
                  "GalSearchCriterion": 0x19, "MaxPictures": 0x20, "MaxSize": 0x21,
                  "Picture": 0x22}),
}
_BY_CODE = {(page, tok): f"{name}:{tag}" for name, (page, toks) in PAGES.items()
            for tag, tok in toks.items()}


def encode(node: Node) -> bytes:
    """``node`` (tags "Page:Name", text or children) as WBXML bytes."""
    out = bytearray(HEADER)
    page = [0]

    def walk(n: Node) -> None:
        ns, name = n.tag.split(":")
        number, tokens = PAGES[ns]
        if number != page[0]:
            out.extend((SWITCH_PAGE, number))
            page[0] = number
        token = tokens[name]
        if n.text is None and not n.children:
            out.append(token)
            return
        out.append(token | 0x40)
        if n.text is not None:
            out.append(STR_I)
            out.extend(n.text.encode("utf-8") + b"\x00")
        for c in n.children:
            walk(c)
        out.append(END)

    walk(node)
    return bytes(out)


def _mb_u_int32(data: bytes, i: int) -> tuple[int, int]:
    value = 0
    while True:
        b = data[i]
        i += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, i


def decode(data: bytes) -> Node:
    """WBXML bytes (tags of the pages above only) as a ``Node`` tree."""
    assert data[0] == 0x03, "WBXML 1.3"
    i = 1
    _public, i = _mb_u_int32(data, i)
    _charset, i = _mb_u_int32(data, i)
    strtbl, i = _mb_u_int32(data, i)
    i += strtbl
    page = 0
    stack: list[Node] = []
    root: Node | None = None
    while i < len(data):
        b = data[i]
        i += 1
        if b == SWITCH_PAGE:
            page = data[i]
            i += 1
        elif b == END:
            stack.pop()
        elif b == STR_I:
            end = data.index(0, i)
            stack[-1].text = (stack[-1].text or "") + data[i:end].decode("utf-8")
            i = end + 1
        elif b == OPAQUE:
            n, i = _mb_u_int32(data, i)
            stack[-1].text = (stack[-1].text or "") + data[i:i + n].decode("utf-8")
            i += n
        else:
            assert not b & 0x80, f"attributes are never sent (byte {b:#x})"
            node = Node(_BY_CODE[(page, b & 0x3F)])
            if stack:
                stack[-1].children.append(node)
            else:
                root = node
            if b & 0x40:
                stack.append(node)
    assert root is not None and not stack
    return root


def N(tag: str, *children: Node | str) -> Node:
    """Terse builder: ``N("Find:Query", "ada")``, ``N("Find:Find", N(...), ...)``."""
    node = Node(tag)
    for c in children:
        if isinstance(c, Node):
            node.children.append(c)
        else:
            node.text = c
    return node


def gal_find(query: str, rng: str | None = "0-9",
             search_id: str = "9e5b1ff0-42c1-4b7e-9b7b-3b1d0c6a2f11") -> Node:
    options = [N("Find:Options", N("Find:Range", rng))] if rng is not None else []
    return N("Find:Find", N("Find:SearchId", search_id), N(
        "Find:ExecuteSearch", N("Find:GalSearchCriterion", N("Find:Query", query),
                                *options)))


def mailbox_find(text: str | None, cls: str | None = "Contacts",
                 collection: str | None = None, rng: str | None = "0-9",
                 search_id: str = "0b2d7c55-8d4e-4f0a-a1f6-5f2b7f0e9c33") -> Node:
    query = N("Find:Query")
    if text is not None:
        query.children.append(N("Find:FreeText", text))
    if cls is not None:
        query.children.append(N("AirSync:Class", cls))
    if collection is not None:
        query.children.append(N("AirSync:CollectionId", collection))
    options = [N("Find:Options", N("Find:Range", rng))] if rng is not None else []
    return N("Find:Find", N("Find:SearchId", search_id), N(
        "Find:ExecuteSearch", N("Find:MailBoxSearchCriterion", query, *options)))
