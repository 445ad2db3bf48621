"""WBXML 1.3 encoder/decoder for Exchange ActiveSync ([MS-ASWBXML]).

Encoding
    The header is always ``03 01 6A 00`` (WBXML 1.3, public id 1 "unknown", UTF-8, no
    string table).  SWITCH_PAGE is written only when the code page changes.  Text is
    written as STR_I (NUL characters are stripped, the encoding cannot carry them),
    ``Element.opaque`` as OPAQUE.  An element gets the content bit (0x40) only when it
    has children, non-empty text or non-empty opaque data: an element whose text is ""
    (or opaque b"") is written as an empty tag ``<Tag/>``, exactly as libwbxml's
    xml2wbxml writes ``<Tag></Tag>`` and as EAS servers and devices send empty values.
    Should an element carry both text (or opaque data) and children, the text (or the
    OPAQUE token) comes first; the decoder keeps both, so they round-trip.

Decoding
    Any WBXML 1.x version byte, public id, charset and string table are accepted (the
    string table is skipped; strings are always decoded as UTF-8, which is what EAS
    uses).  Supported tokens: SWITCH_PAGE, END, STR_I, OPAQUE and tags without
    attributes.  ENTITY, LITERAL*, EXT*, PI, STR_T and attributes are not used by EAS
    and are rejected.  Several STR_I/OPAQUE chunks in one element are concatenated (the
    element gets ``opaque`` bytes when any chunk was OPAQUE, else ``text``); a
    content-flagged element closed immediately by END gets the text "".

    Every malformed input raises :class:`WBXMLError` (a ``ValueError``).  The work done
    is linear in the input size and bounded by the limits given to :func:`decode`:
    ``max_depth`` counts every element level (root = 1, a leaf is a level too),
    ``max_string`` the UTF-8/OPAQUE bytes of one element's value (all chunks together),
    ``max_elements`` every element.  The cyclic garbage collector is paused while a
    document is decoded (the tree has no cycles; rescanning it made big documents cost
    more than linear time).
"""

from __future__ import annotations

import base64
import gc
import re
from typing import cast
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


FRAGMENT_TAG = "@fragment"


class Fragment(Element):
    """An element already encoded (see ``fragment``), spliced into documents as is.

    ``encoded`` is the encoder's text form of one complete element that starts on
    code page 0 (every control byte is below 0x80, so the str maps 1:1 to the bytes
    after UTF-8 encoding); ``end_page`` is the code page in force after it.
    """

    __slots__ = ("encoded", "end_page")

    def __init__(self, encoded: str, end_page: int) -> None:
        super().__init__(FRAGMENT_TAG)
        self.encoded = encoded
        self.end_page = end_page


def fragment(el: Element) -> Fragment:
    """Encode one element (whose tag is on page 0) for splicing into many documents."""
    if TAG_CODES.get(el.tag, (None,))[0] != 0:
        raise ValueError(f"a fragment must start on page 0: {el.tag!r}")
    body, end_page = _encode(el)
    return Fragment(body.decode("utf-8"), end_page)


def encode(root: Element) -> bytes:
    """Encode an element tree as an EAS WBXML document.

    Raises ``ValueError`` for a tag that is not in the code pages (or text that cannot
    be encoded as UTF-8, i.e. lone surrogates).
    """
    return HEADER + _encode(root)[0]


def _encode(root: Element) -> tuple[bytes, int]:
    """The encoded elements (no header) and the code page in force at the end."""
    # The output is encoded to bytes in pieces of a few thousand strings (keeps the
    # working set small on big documents) and wherever OPAQUE data must be spliced in.
    chunks: list[bytes] = []
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
            if len(out) > 4096:
                chunks.append(_encode_str(out))
                out.clear()
            continue
        try:
            tpage, empty, content, content_str = enc[el.tag]
        except (KeyError, TypeError):
            if el.tag == FRAGMENT_TAG:
                if page != 0:
                    app(switch[0])
                frag = cast(Fragment, el)  # only a Fragment has this tag
                app(frag.encoded)
                page = frag.end_page
                continue
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
        elif el.opaque:
            # OPAQUE first, then any children (as the decoder keeps both).
            app(content)
            chunks.append(_encode_str(out))
            out.clear()
            data = bytes(el.opaque)
            if children:
                chunks.append(b"\xc3" + _mb_u_int32(len(data)) + data)
                push(None)
                stack.extend(reversed(children))
            else:
                chunks.append(b"\xc3" + _mb_u_int32(len(data)) + data + b"\x01")
        elif children:
            app(content)
            push(None)
            stack.extend(reversed(children))
        else:
            app(empty)
    chunks.append(_encode_str(out))
    return b"".join(chunks), page


def _encode_str(out: list[str]) -> bytes:
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text cannot be encoded as UTF-8: {exc}") from None


# --------------------------------------------------------------------------------------
# decoder
# --------------------------------------------------------------------------------------
# The body is parsed as a str so that no loop decodes bytes piece by piece:
#
# * The common case: the body decodes as UTF-8 (STR_I strings are UTF-8 and every token
#   byte is ASCII) and holds no OPAQUE.  _parse_fast splits it on "00 01" (see there),
#   so that most leaves are built without Python looking at their characters.  Each
#   string slice is already the final value.
# * Otherwise (OPAQUE data, or bytes that are not UTF-8, which is then an error unless
#   they are inside OPAQUE): _parse_general reads the latin-1 view of the body token by
#   token (one char per byte; OPAQUE payloads are re-encoded to bytes), runs of leaves
#   matched by a regular expression.  Text values are converted from latin-1 to UTF-8 in
#   one pass over the finished tree (_latin1_to_text).
#
# The tests check that both parsers accept and reject the same documents.

_LEAF_RUN = re.compile(r"(?:[\x45-\x7f]\x03[^\x00]*\x00\x01|[\x05-\x3f])+").match
_LEAF_ITEMS = re.compile(r"([\x45-\x7f])\x03([^\x00]*)\x00\x01|([\x05-\x3f])").findall

# per code page: content tag char -> tag, empty tag char -> tag
_CONTENT_TAGS: tuple[dict[str, str], ...] = tuple(
    {chr(token | 0x40): tag for token, tag in enumerate(row) if tag is not None}
    for row in TOKENS
)
_EMPTY_TAGS: tuple[dict[str, str], ...] = tuple(
    {chr(token): tag for token, tag in enumerate(row) if tag is not None} for row in TOKENS
)


class _NeedLatin1(Exception):
    """The UTF-8 view of the body met an OPAQUE token: restart in latin-1 mode."""


def _read_mb(data: bytes | str, i: int) -> tuple[int, int]:
    """Read an mb_u_int32 at ``i`` (bytes, or a latin-1 str); return (value, next index)."""
    value = 0
    for _ in range(5):
        if i >= len(data):
            raise WBXMLError("truncated multi-byte integer")
        b = data[i]
        if isinstance(b, str):
            b = ord(b)
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

    ``max_depth`` bounds element nesting (the root is depth 1, its children depth 2,
    leaves included), ``max_size`` the document length in bytes, ``max_string`` the
    length in bytes of any one element's value, ``max_elements`` the number of elements.
    Raises :class:`WBXMLError` for anything malformed or over a limit.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WBXMLError(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise WBXMLError(f"document of {len(data)} bytes exceeds the {max_size} byte limit")
    data = bytes(data)
    # The tree holds no reference cycles; the cyclic collector would only rescan the
    # growing tree again and again (super-linear on large documents), so pause it.
    gc_was_enabled = gc.isenabled()
    if gc_was_enabled:
        gc.disable()
    try:
        start = _header(data)
        body = data[start:]
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            try:
                return _parse_fast(text, max_depth, max_string, max_elements)
            except _NeedLatin1:
                pass
        root = _parse_general(body.decode("latin-1"), True, max_depth, max_string, max_elements)
        _latin1_to_text(root)
        return root
    except WBXMLError:
        raise
    except IndexError:
        raise WBXMLError("truncated WBXML document") from None
    except UnicodeDecodeError as exc:
        raise WBXMLError(f"string is not valid UTF-8: {exc.reason}") from None
    except (ValueError, TypeError, KeyError, MemoryError, OverflowError) as exc:
        # defensive: nothing below is expected to raise these
        raise WBXMLError(f"malformed WBXML: {exc}") from None
    finally:
        if gc_was_enabled:
            gc.enable()


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
        return WBXMLError(f"unsupported WBXML token {name} ({b:#04x}) at body offset {i}")
    if b > 0xFF:
        return WBXMLError(f"invalid token {b:#x} at body offset {i}")
    if b & 0x80:
        return WBXMLError(f"tag with attributes ({b:#04x}) at body offset {i} is not supported")
    if b in (SWITCH_PAGE, END, STR_I):
        return WBXMLError(f"unexpected token {b:#04x} at body offset {i}")
    return WBXMLError(f"unknown token {b & 0x3F:#04x} on code page {page} at body offset {i}")


def _too_long(value: str, latin1: bool, max_string: int) -> bool:
    """Is a value longer than max_string bytes?  (A UTF-8 char takes 1 to 4 bytes.)"""
    n = len(value)
    if n > max_string:
        return True
    if latin1 or n * 4 <= max_string:
        return False
    return len(value.encode("utf-8")) > max_string


def _root(s: str, latin1: bool, max_depth: int, max_elements: int) -> tuple[Element, int, int]:
    """Parse the page switches and the root tag.

    Returns (root, index after the root tag, current page); for an empty root (no
    content) the page is -1 and the index is the end of the body.
    """
    npages = len(TOKENS)
    page = 0
    i = 0
    while s[i] == "\x00":
        page = ord(s[i + 1])
        if page >= npages:
            raise WBXMLError(f"unknown code page {page}")
        i += 2
    c = s[i]
    tag = _EMPTY_TAGS[page].get(c)
    if tag is not None:
        if i + 1 != len(s):
            raise WBXMLError(f"{len(s) - i - 1} trailing bytes after the root element")
        return Element(tag), i + 1, -1
    tag = _CONTENT_TAGS[page].get(c)
    if tag is None:
        if not latin1 and c >= "\x80":
            raise _NeedLatin1
        raise WBXMLError(f"expected the root element, found {_bad_token(ord(c), page, i)}")
    if max_depth < 1 or max_elements < 1:
        raise WBXMLError("document exceeds the depth or element limit")
    return Element(tag), i + 1, page


# window of the body handled by one str.split (bounded temporary memory)
_WINDOW = 1 << 16

# what the "\x00\x01" after a part means, from the parser's state at the end of the part
_NORMAL = 0  # SWITCH_PAGE 1
_IN_STRING = 1  # end of STR_I, then END
_SWITCHING = 2  # page 0, then END
_LEAF_DONE = 3  # end of STR_I, then END of a leaf already built


def _limit_error(depth: int, max_depth: int, max_elements: int) -> WBXMLError:
    if depth >= max_depth:
        return WBXMLError(f"elements nested deeper than {max_depth}")
    return WBXMLError(f"more than {max_elements} elements")


def _parse_fast(s: str, max_depth: int, max_string: int, max_elements: int) -> Element:
    """Parser for a UTF-8 body without OPAQUE data (raises _NeedLatin1 otherwise).

    Every leaf ``<Tag>text</Tag>`` ends with the bytes ``00 01`` (end of STR_I, END).
    The only other ways for these two bytes to meet are SWITCH_PAGE 1, and page 0
    followed by END; string values never contain 0x00.  So ``str.split("\x00\x01")``
    cuts the body into parts in C, and a part of the form ``tag 03 text`` without 0x00
    is one leaf, built without looking at its characters.  Other parts go through a
    token-by-token loop, whose state at the end of the part tells what the ``00 01``
    after it meant.  The body is split one window at a time (bounded memory).
    """
    root, pos, page = _root(s, False, max_depth, max_elements)
    if page < 0:
        return root
    n = len(s)
    npages = len(TOKENS)
    content_tags = _CONTENT_TAGS
    empty_tags = _EMPTY_TAGS
    ctab = content_tags[page]
    etab = empty_tags[page]
    stack: list[Element] = [root]
    push = stack.append
    pop = stack.pop
    pending: dict[int, list] = {}
    count = 1
    closed = False
    small = max_string // 4  # a string of at most this many chars fits in max_string bytes
    no_tags: dict[str, str] = {}
    sink: list[Element] = []  # never filled: with no_tags no part is taken as a leaf
    no_append = sink.append

    while pos < n:
        if n - pos <= _WINDOW:
            wend = n
        else:
            k = s.find("\x00\x01", pos + _WINDOW)
            wend = n if k < 0 else k + 2
        parts = s[pos:wend].split("\x00\x01")
        last = parts.pop()
        if wend == n:
            groups: tuple[tuple[list[str], bool], ...] = ((parts, True), ([last], False))
        elif last:
            raise WBXMLError("internal error: window does not end at a boundary")
        else:
            groups = ((parts, True),)
        # Leaves are built directly only while that is safe: the open element may take
        # children (depth) and no string of the window can exceed max_string.
        fast_ok = wend - pos <= small
        if fast_ok and stack and len(stack) < max_depth:
            ftab, app = ctab, stack[-1].children.append
        else:
            ftab, app = no_tags, no_append
        nparts = len(parts) + len(groups) - 1
        careful = 0
        for group, boundary in groups:
            if not boundary:
                # the end of the document: no "00 01" after this part, so even a part
                # that looks like a leaf is not one
                ftab, app = no_tags, no_append
            for p in group:
                if p[1:2] == "\x03" and "\x00" not in p:
                    tag = ftab.get(p[0])
                    if tag is not None:
                        app(Element(tag, p[2:]))
                        continue
                careful += 1
                if closed:
                    if p or boundary:
                        raise WBXMLError("trailing bytes after the root element")
                    continue

                # -- token by token --------------------------------------------------
                m = len(p)
                j = 0
                state = _NORMAL
                while j < m:
                    c = p[j]
                    if c == "\x01":
                        el = pop()
                        if pending:
                            entry = pending.pop(id(el), None)
                            if entry is not None:
                                _finish(el, entry)
                        if not el.children and el.text is None and el.opaque is None:
                            el.text = ""
                        j += 1
                        if not stack:
                            if j != m or boundary:
                                raise WBXMLError("trailing bytes after the root element")
                            closed = True
                            break
                        continue
                    tag = ctab.get(c)
                    if tag is not None:
                        if len(stack) >= max_depth or count >= max_elements:
                            raise _limit_error(len(stack), max_depth, max_elements)
                        count += 1
                        el = Element(tag)
                        stack[-1].children.append(el)
                        if p[j + 1 : j + 2] == "\x03":
                            k = p.find("\x00", j + 2)
                            if k < 0:
                                # <Tag>text</Tag>, closed by the boundary
                                text = p[j + 2 :]
                                if len(text) > small and _too_long(text, False, max_string):
                                    raise WBXMLError(f"string longer than {max_string} bytes")
                                el.text = text
                                state = _LEAF_DONE
                                break
                            push(el)
                            _add_chunk(pending, el, p[j + 2 : k], False, max_string)
                            j = k + 1
                        else:
                            push(el)
                            j += 1
                        continue
                    if c == "\x00":
                        if j + 1 == m:
                            state = _SWITCHING
                            break
                        page = ord(p[j + 1])
                        if page >= npages:
                            raise WBXMLError(f"unknown code page {page}")
                        ctab = content_tags[page]
                        etab = empty_tags[page]
                        j += 2
                        continue
                    if c == "\x03":
                        k = p.find("\x00", j + 1)
                        if k < 0:
                            _add_chunk(pending, stack[-1], p[j + 1 :], False, max_string)
                            state = _IN_STRING
                            break
                        _add_chunk(pending, stack[-1], p[j + 1 : k], False, max_string)
                        j = k + 1
                        continue
                    tag = etab.get(c)
                    if tag is not None:
                        if len(stack) >= max_depth or count >= max_elements:
                            raise _limit_error(len(stack), max_depth, max_elements)
                        count += 1
                        stack[-1].children.append(Element(tag))
                        j += 1
                        continue
                    if c >= "\x80":
                        raise _NeedLatin1
                    raise _bad_token(ord(c), page, j)

                # -- what the boundary after this part means ---------------------------
                if closed:
                    continue
                if not boundary:
                    # end of the document: the root is still open
                    raise WBXMLError("truncated WBXML document")
                if state == _NORMAL:
                    page = 1
                    ctab = content_tags[1]
                    etab = empty_tags[1]
                elif state != _LEAF_DONE:
                    if state == _SWITCHING:
                        page = 0
                        ctab = content_tags[0]
                        etab = empty_tags[0]
                    el = pop()
                    if pending:
                        entry = pending.pop(id(el), None)
                        if entry is not None:
                            _finish(el, entry)
                    if not el.children and el.text is None and el.opaque is None:
                        el.text = ""
                    if not stack:
                        closed = True
                if fast_ok and stack and len(stack) < max_depth:
                    ftab, app = ctab, stack[-1].children.append
                else:
                    ftab, app = no_tags, no_append
        count += nparts - careful
        if count > max_elements:
            raise WBXMLError(f"more than {max_elements} elements")
        pos = wend
    if not closed:
        raise WBXMLError("truncated WBXML document")
    return root


def _latin1_to_text(root: Element) -> None:
    """Turn the latin-1 view of UTF-8 bytes back into text, everywhere in the tree."""
    for el in root.iter():
        if el.text:
            el.text = el.text.encode("latin-1").decode("utf-8")


def _parse_general(
    s: str, latin1: bool, max_depth: int, max_string: int, max_elements: int
) -> Element:
    """Token-by-token parser for any body (latin-1 view with OPAQUE, or UTF-8)."""
    n = len(s)
    npages = len(TOKENS)
    content_tags = _CONTENT_TAGS
    empty_tags = _EMPTY_TAGS
    root, i, page = _root(s, latin1, max_depth, max_elements)
    if page < 0:
        return root
    ctab = content_tags[page]
    etab = empty_tags[page]

    stack: list[Element] = [root]
    push = stack.append
    pop = stack.pop
    children = root.children
    count = 1
    # id(element) -> [size, chunks of its value (str, or bytes for OPAQUE)...]
    pending: dict[int, list] = {}
    run_match = _LEAF_RUN
    leaf_items = _LEAF_ITEMS
    find = s.find

    while True:
        m = run_match(s, i)
        if m is not None:
            if len(stack) >= max_depth:
                raise WBXMLError(f"elements nested deeper than {max_depth}")
            end = m.end()
            items = leaf_items(s, i, end)
            try:
                children.extend(
                    [Element(ctab[c], t) if c else Element(etab[e]) for c, t, e in items]
                )
            except KeyError:
                raise _unknown_in_run(items, ctab, etab, page) from None
            count += len(items)
            if count > max_elements:
                raise WBXMLError(f"more than {max_elements} elements")
            if end - i > max_string:
                for _c, t, _e in items:
                    if _too_long(t, latin1, max_string):
                        raise WBXMLError(f"string longer than {max_string} bytes")
            i = end
        c = s[i]
        tag = ctab.get(c)
        if tag is not None:
            # a tag with content that is not a simple leaf
            if len(stack) >= max_depth:
                raise WBXMLError(f"elements nested deeper than {max_depth}")
            count += 1
            if count > max_elements:
                raise WBXMLError(f"more than {max_elements} elements")
            el = Element(tag)
            children.append(el)
            push(el)
            children = el.children
            i += 1
        elif c == "\x01":
            i += 1
            el = pop()
            if pending:
                entry = pending.pop(id(el), None)
                if entry is not None:
                    _finish(el, entry)
            if not el.children and el.text is None and el.opaque is None:
                el.text = ""
            if not stack:
                break
            children = stack[-1].children
        elif c == "\x00":
            page = ord(s[i + 1])
            if page >= npages:
                raise WBXMLError(f"unknown code page {page}")
            ctab = content_tags[page]
            etab = empty_tags[page]
            i += 2
        elif c == "\x03":
            j = find("\x00", i + 1)
            if j < 0:
                raise WBXMLError("unterminated inline string")
            _add_chunk(pending, stack[-1], s[i + 1 : j], latin1, max_string)
            i = j + 1
        elif c == "\xc3" and latin1:
            length, i = _read_mb(s, i + 1)
            if length > n - i:
                raise WBXMLError("OPAQUE data runs past the end of the document")
            _add_chunk(pending, stack[-1], s[i : i + length].encode("latin-1"), True,
                       max_string)
            i += length
        elif c >= "\x80" and not latin1:
            raise _NeedLatin1
        else:
            raise _bad_token(ord(c), page, i)

    if i != n:
        raise WBXMLError(f"{n - i} trailing bytes after the root element")
    return root


def _unknown_in_run(
    items: list[tuple[str, str, str]], ctab: dict[str, str], etab: dict[str, str], page: int
) -> WBXMLError:
    for c, _t, e in items:
        ch = c or e
        if ch not in (ctab if c else etab):
            return WBXMLError(f"unknown token {ord(ch) & 0x3F:#04x} on code page {page}")
    return WBXMLError("unknown token")  # pragma: no cover - a KeyError came from somewhere


def _add_chunk(
    pending: dict[int, list],
    el: Element,
    chunk: str | bytes,
    latin1: bool,
    max_string: int,
) -> None:
    """Remember one STR_I/OPAQUE chunk of ``el``'s value, enforcing ``max_string``."""
    entry = pending.get(id(el))
    if entry is None:
        entry = pending[id(el)] = [0]  # [total size in bytes, chunk, chunk, ...]
    if isinstance(chunk, bytes) or latin1 or chunk.isascii():
        size = len(chunk)
    else:
        size = len(chunk.encode("utf-8"))
    entry[0] += size
    if entry[0] > max_string:
        raise WBXMLError(f"string longer than {max_string} bytes")
    entry.append(chunk)


def _finish(el: Element, entry: list) -> None:
    chunks = entry[1:]
    if any(isinstance(c, bytes) for c in chunks):
        # OPAQUE somewhere: the value is bytes (text chunks are latin-1 strs here,
        # i.e. the original bytes)
        el.opaque = b"".join(c if isinstance(c, bytes) else c.encode("latin-1") for c in chunks)
    else:
        el.text = chunks[0] if len(chunks) == 1 else "".join(chunks)


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
