"""WBXML 1.3 encoder/decoder for Exchange ActiveSync ([MS-ASWBXML]).

Encoding
    The header is always ``03 01 6A 00`` (WBXML 1.3, public id 1 "unknown", UTF-8, no
    string table).  SWITCH_PAGE is written only when the code page changes.  Text is
    written as STR_I (NUL characters are stripped, the encoding cannot carry them),
    ``Element.opaque`` as OPAQUE.  An element gets the content bit (0x40) only when it
    has children, non-empty text or non-empty opaque data: an element whose text is ""
    (or opaque b"") is written as an empty tag ``<Tag/>``, exactly as libwbxml's
    xml2wbxml writes ``<Tag></Tag>`` and as EAS servers and devices send empty values.
    Should an element carry both text and children, the text comes first.

Decoding
    Any WBXML 1.x version byte, public id, charset and string table are accepted (the
    string table is skipped; strings are always decoded as UTF-8, which is what EAS
    uses).  Supported tokens: SWITCH_PAGE, END, STR_I, OPAQUE and tags without
    attributes.  ENTITY, LITERAL*, EXT*, PI, STR_T and attributes are not used by EAS
    and are rejected.  Several STR_I/OPAQUE chunks in one element are concatenated (the
    element gets ``opaque`` bytes when any chunk was OPAQUE, else ``text``); a
    content-flagged element closed immediately by END gets the text "".

    Every malformed input raises :class:`WBXMLError` (a ``ValueError``).  The work done
    is linear in the input size and bounded by the limits given to :func:`decode`.
"""

from __future__ import annotations

import base64
from xml.sax.saxutils import escape

from easync.wbxml.codepages import PAGE_NAMES, TAG_CODES, TOKENS
from easync.wbxml.element import Element

__all__ = ["WBXMLError", "decode", "encode", "to_xml"]

HEADER = b"\x03\x01\x6a\x00"

SWITCH_PAGE = 0x00
END = 0x01
STR_I = 0x03
OPAQUE = 0xC3

_MIB = 1024 * 1024


class WBXMLError(ValueError):
    """The data is not a WBXML document easync accepts."""


# --------------------------------------------------------------------------------------
# encoder
# --------------------------------------------------------------------------------------
# The document is assembled as a str and UTF-8 encoded once at the end: every control
# byte the encoder writes (tags 0x05-0x7F, SWITCH_PAGE + page, END, STR_I) is below 0x80
# and so encodes to itself.  OPAQUE data is spliced in as bytes.

# tag -> (page, empty tag char, content tag char, content tag + STR_I chars)
_ENC: dict[str, tuple[int, str, str, str]] = {
    tag: (page, chr(token), chr(token | 0x40), chr(token | 0x40) + "\x03")
    for tag, (page, token) in TAG_CODES.items()
}
_SWITCH: tuple[str, ...] = tuple("\x00" + chr(page) for page in range(len(PAGE_NAMES)))


def _mb_u_int32(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def encode(root: Element) -> bytes:
    """Encode an element tree as an EAS WBXML document.

    Raises ``ValueError`` for a tag that is not in the code pages (or text that cannot
    be encoded as UTF-8, i.e. lone surrogates).
    """
    chunks: list[bytes] = []  # only used when there is OPAQUE data
    out: list[str] = []
    app = out.append
    enc = _ENC
    switch = _SWITCH
    page = 0
    stack: list[Element | None] = [root]
    pop = stack.pop
    push = stack.append
    while stack:
        el = pop()
        if el is None:
            app("\x01")
            continue
        try:
            tpage, empty, content, content_str = enc[el.tag]
        except (KeyError, TypeError):
            raise ValueError(f"unknown WBXML tag {el.tag!r}") from None
        if tpage != page:
            app(switch[tpage])
            page = tpage
        text = el.text
        children = el.children
        if text:
            if "\x00" in text:
                text = text.replace("\x00", "")
                if not text:
                    if children:
                        app(content)
                        push(None)
                        stack.extend(reversed(children))
                    else:
                        app(empty)
                    continue
            app(content_str)
            app(text)
            if children:
                app("\x00")
                push(None)
                stack.extend(reversed(children))
            else:
                app("\x00\x01")
        elif children:
            app(content)
            push(None)
            stack.extend(reversed(children))
        elif el.opaque:
            app(content)
            chunks.append(_encode_str(out))
            out.clear()
            data = bytes(el.opaque)
            chunks.append(b"\xc3" + _mb_u_int32(len(data)) + data + b"\x01")
        else:
            app(empty)
    if chunks:
        chunks.append(_encode_str(out))
        return HEADER + b"".join(chunks)
    return HEADER + _encode_str(out)


def _encode_str(out: list[str]) -> bytes:
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text cannot be encoded as UTF-8: {exc}") from None


# --------------------------------------------------------------------------------------
# decoder
# --------------------------------------------------------------------------------------
def _read_mb(data: bytes, i: int) -> tuple[int, int]:
    """Read an mb_u_int32 at ``i``; return (value, next index)."""
    value = 0
    for n in range(5):
        if i >= len(data):
            raise WBXMLError("truncated multi-byte integer")
        b = data[i]
        i += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            if value > 0xFFFFFFFF:
                raise WBXMLError("multi-byte integer exceeds 32 bits")
            return value, i
    raise WBXMLError("multi-byte integer longer than 5 bytes")


def _header(data: bytes) -> int:
    """Check the header and return the index of the first body byte."""
    if len(data) < 4:
        raise WBXMLError("truncated WBXML header")
    if data[0] > 0x03:
        raise WBXMLError(f"unsupported WBXML version byte {data[0]:#04x}")
    i = 1
    publicid, i = _read_mb(data, i)
    if publicid == 0:
        _index, i = _read_mb(data, i)  # public id given as a string table index
    _charset, i = _read_mb(data, i)
    strtbl, i = _read_mb(data, i)
    if strtbl > len(data) - i:
        raise WBXMLError("string table longer than the document")
    return i + strtbl


def decode(
    data: bytes,
    *,
    max_depth: int = 64,
    max_size: int = 16 * _MIB,
    max_string: int = 8 * _MIB,
    max_elements: int = 2_000_000,
) -> Element:
    """Decode an EAS WBXML document into an element tree.

    ``max_depth`` bounds element nesting (the root is depth 1), ``max_size`` the
    document length in bytes, ``max_string`` the length in bytes of any one element's
    value, ``max_elements`` the number of elements.  Raises :class:`WBXMLError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WBXMLError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise WBXMLError(f"document of {len(data)} bytes exceeds the {max_size} byte limit")
    data = bytes(data)
    try:
        return _decode(data, max_depth, max_string, max_elements)
    except WBXMLError:
        raise
    except IndexError:
        raise WBXMLError("truncated WBXML document") from None
    except UnicodeDecodeError as exc:
        raise WBXMLError(f"string is not valid UTF-8: {exc.reason}") from None
    except (ValueError, TypeError, KeyError, MemoryError, OverflowError) as exc:
        # defensive: nothing below is expected to raise these
        raise WBXMLError(f"malformed WBXML: {exc}") from None


_BAD_TOKEN_NAMES = {
    0x02: "ENTITY",
    0x04: "LITERAL",
    0x40: "EXT_I_0",
    0x41: "EXT_I_1",
    0x42: "EXT_I_2",
    0x43: "PI",
    0x44: "LITERAL_C",
    0x80: "EXT_T_0",
    0x81: "EXT_T_1",
    0x82: "EXT_T_2",
    0x83: "STR_T",
    0x84: "LITERAL_A",
    0xC0: "EXT_0",
    0xC1: "EXT_1",
    0xC2: "EXT_2",
    0xC4: "LITERAL_AC",
}


def _bad_token(b: int, page: int, i: int) -> WBXMLError:
    name = _BAD_TOKEN_NAMES.get(b)
    if name is not None:
        return WBXMLError(f"unsupported WBXML token {name} ({b:#04x}) at offset {i}")
    if b & 0x80:
        return WBXMLError(f"tag with attributes ({b:#04x}) at offset {i} is not supported")
    return WBXMLError(f"unknown token {b & 0x3F:#04x} on code page {page} at offset {i}")


def _decode(data: bytes, max_depth: int, max_string: int, max_elements: int) -> Element:
    i = _header(data)
    n = len(data)
    tokens = TOKENS
    npages = len(tokens)
    page = 0
    ptab = tokens[0]

    # -- the root: optional page switches, then one tag -------------------------------
    while True:
        b = data[i]
        i += 1
        if b == SWITCH_PAGE:
            page = data[i]
            i += 1
            if page >= npages:
                raise WBXMLError(f"unknown code page {page}")
            ptab = tokens[page]
            continue
        break
    if not (0x05 <= b & 0x3F) or b & 0x80 or (0x40 <= b <= 0x44):
        raise WBXMLError(f"expected the root element, found token {b:#04x}")
    tag = ptab[b & 0x3F]
    if tag is None:
        raise _bad_token(b, page, i - 1)
    root = Element(tag)
    if not b & 0x40:
        if i != n:
            raise WBXMLError(f"{n - i} trailing bytes after the root element")
        return root
    if max_depth < 1 or max_elements < 1:
        raise WBXMLError("document exceeds the depth or element limit")

    stack: list[Element] = [root]
    push = stack.append
    pop = stack.pop
    children = root.children
    app = children.append
    find = data.find
    count = 1
    # id(element) -> [list of raw chunks, total length, any OPAQUE chunk]
    pending: dict[int, list] = {}

    while True:
        b = data[i]
        if 0x45 <= b < 0x80:
            # tag with content
            tag = ptab[b & 0x3F]
            if tag is None:
                raise _bad_token(b, page, i)
            count += 1
            if count > max_elements:
                raise WBXMLError(f"more than {max_elements} elements")
            if data[i + 1] == STR_I:
                j = find(b"\x00", i + 2)
                if j < 0:
                    raise WBXMLError("unterminated inline string")
                if data[j + 1] == END:
                    # fast path: <Tag>text</Tag>
                    if j - i - 2 > max_string:
                        raise WBXMLError(f"string longer than {max_string} bytes")
                    app(Element(tag, data[i + 2 : j].decode("utf-8")))
                    i = j + 2
                    continue
            el = Element(tag)
            app(el)
            push(el)
            if len(stack) > max_depth:
                raise WBXMLError(f"elements nested deeper than {max_depth}")
            children = el.children
            app = children.append
            i += 1
        elif b == END:
            i += 1
            el = pop()
            if pending:
                _finish(el, pending)
            if not el.children and el.text is None and el.opaque is None:
                el.text = ""
            if not stack:
                break
            children = stack[-1].children
            app = children.append
        elif 0x05 <= b < 0x40:
            # empty tag
            tag = ptab[b]
            if tag is None:
                raise _bad_token(b, page, i)
            count += 1
            if count > max_elements:
                raise WBXMLError(f"more than {max_elements} elements")
            app(Element(tag))
            i += 1
        elif b == SWITCH_PAGE:
            page = data[i + 1]
            if page >= npages:
                raise WBXMLError(f"unknown code page {page}")
            ptab = tokens[page]
            i += 2
        elif b == STR_I:
            j = find(b"\x00", i + 1)
            if j < 0:
                raise WBXMLError("unterminated inline string")
            _add_chunk(pending, stack[-1], data[i + 1 : j], False, max_string)
            i = j + 1
        elif b == OPAQUE:
            length, i = _read_mb(data, i + 1)
            if length > n - i:
                raise WBXMLError("OPAQUE data runs past the end of the document")
            _add_chunk(pending, stack[-1], data[i : i + length], True, max_string)
            i += length
        else:
            raise _bad_token(b, page, i)

    if i != n:
        raise WBXMLError(f"{n - i} trailing bytes after the root element")
    return root


def _add_chunk(
    pending: dict[int, list], el: Element, chunk: bytes, opaque: bool, max_string: int
) -> None:
    entry = pending.get(id(el))
    if entry is None:
        entry = pending[id(el)] = [[], 0, False]
    entry[0].append(chunk)
    entry[1] += len(chunk)
    if entry[1] > max_string:
        raise WBXMLError(f"string longer than {max_string} bytes")
    if opaque:
        entry[2] = True


def _finish(el: Element, pending: dict[int, list]) -> None:
    entry = pending.pop(id(el), None)
    if entry is None:
        return
    chunks, _size, opaque = entry
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if opaque:
        el.opaque = raw
    else:
        el.text = raw.decode("utf-8")


# --------------------------------------------------------------------------------------
# XML rendering (logs, debugging, tests)
# --------------------------------------------------------------------------------------
_ATTR_ESCAPES = {'"': "&quot;"}


def to_xml(root: Element, indent: str | None = "  ") -> str:
    """Render a tree as XML, with namespaces as libwbxml prints them.

    The root declares ``xmlns="Page:"``; a child on another code page than its parent
    redeclares the default namespace.  Local names are easync's (the spec's).  OPAQUE
    values are rendered as base64 text.  ``indent=None`` gives compact output.
    """
    out: list[str] = []
    app = out.append
    nl = "" if indent is None else "\n"
    # stack entries: (element, depth, parent page) or (closing string, depth, None)
    stack: list[tuple[Element | str, int, str | None]] = [(root, 0, None)]
    while stack:
        item, depth, parent_page = stack.pop()
        pad = "" if indent is None else indent * depth
        if isinstance(item, str):
            app(f"{pad}{item}{nl}")
            continue
        page, _, local = item.tag.partition(":")
        ns = "" if page == parent_page else f' xmlns="{escape(page, _ATTR_ESCAPES)}:"'
        if item.children:
            app(f"{pad}<{local}{ns}>{nl}")
            if item.text:
                app(f"{pad}{indent or ''}{escape(item.text)}{nl}")
            stack.append((f"</{local}>", depth, None))
            for child in reversed(item.children):
                stack.append((child, depth + 1, page))
        elif item.text:
            app(f"{pad}<{local}{ns}>{escape(item.text)}</{local}>{nl}")
        elif item.opaque:
            value = base64.b64encode(bytes(item.opaque)).decode("ascii")
            app(f"{pad}<{local}{ns}>{value}</{local}>{nl}")
        else:
            app(f"{pad}<{local}{ns}/>{nl}")
    return "".join(out)
