"""Test helpers around libwbxml's command-line tools and XML renderings of element trees.

* :func:`libwbxml_encode` / :func:`libwbxml_decode` run ``xml2wbxml`` / ``wbxml2xml``
  (Debian package ``libwbxml2-utils``) with the flags that suit EAS:

  - ``xml2wbxml -k -a -n -v 1.3``: keep whitespace (``-k``, otherwise leading and
    trailing blanks of values are dropped), anonymous document (``-a``: public id 1,
    no DTD string, i.e. the ``03 01 6A 00`` header), no string table (``-n``),
    WBXML 1.3.  Its output for ``<Tag></Tag>`` is an empty tag, like ours.
  - ``wbxml2xml -k -l ACTIVESYNC -m 0``: keep whitespace, force the ActiveSync
    language (the anonymous public id says nothing), compact output.

  Both tools print "... succeeded" on stdout, so files are used, never stdout.

* libwbxml prints namespaces as default-namespace declarations on the root and on
  every element whose code page differs from its parent's: ``<Sync xmlns="AirSync:">``,
  ``<FirstName xmlns="Contacts:">``.  Its local names differ from ours for some tags
  (``easync.wbxml.codepages.LIBWBXML_NAMES``) and it renders OPAQUE data of a few
  "binary" tags as base64.  :func:`to_libwbxml_xml` and :func:`from_libwbxml_xml`
  convert between that dialect and our trees; :func:`from_xml` reads our own dialect
  (``easync.wbxml.to_xml`` output, and the corpus files).

* :func:`canonical` turns a tree into nested tuples for strict comparisons (tag, text,
  opaque bytes, children; "" and None are the same empty value).
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape

from easync.wbxml import Element
from easync.wbxml.codepages import (
    CODE_PAGES,
    LIBWBXML_BINARY,
    LIBWBXML_MISSING,
    LIBWBXML_NAMES,
    LIBWBXML_NAMESPACES,
    PAGE_NAMES,
    TAG_CODES,
)

XML2WBXML_FLAGS = ["-k", "-a", "-n", "-v", "1.3"]
WBXML2XML_FLAGS = ["-k", "-l", "ACTIVESYNC", "-m", "0"]
DOCTYPE = (
    '<?xml version="1.0"?>'
    '<!DOCTYPE ActiveSync PUBLIC "-//MICROSOFT//DTD ActiveSync//EN" '
    '"http://www.microsoft.com/">'
)

_TIMEOUT = 30


class LibwbxmlError(RuntimeError):
    """A libwbxml tool failed."""


def _run(tool: str, flags: list[str], data: bytes, in_name: str, out_name: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="wbxmltool-") as tmp:
        src = os.path.join(tmp, in_name)
        dst = os.path.join(tmp, out_name)
        with open(src, "wb") as fh:
            fh.write(data)
        proc = subprocess.run(
            [tool, *flags, "-o", dst, src], check=False, capture_output=True, timeout=_TIMEOUT
        )
        if proc.returncode != 0 or not os.path.exists(dst):
            raise LibwbxmlError(
                f"{tool} failed ({proc.returncode}): "
                f"{(proc.stdout + proc.stderr).decode('utf-8', 'replace').strip()}"
            )
        with open(dst, "rb") as fh:
            return fh.read()


def libwbxml_encode(xml: str) -> bytes:
    """WBXML for an XML document in libwbxml's dialect (see :func:`to_libwbxml_xml`)."""
    if not xml.lstrip().startswith("<?xml"):
        xml = DOCTYPE + xml
    return _run("xml2wbxml", XML2WBXML_FLAGS, xml.encode("utf-8"), "in.xml", "out.wbxml")


def libwbxml_decode(data: bytes) -> str:
    """XML text (libwbxml's dialect, compact) for a WBXML document."""
    return _run("wbxml2xml", WBXML2XML_FLAGS, data, "in.wbxml", "out.xml").decode("utf-8")


# --------------------------------------------------------------------------------------
# dialects
# --------------------------------------------------------------------------------------
_FROM_LIB: dict[tuple[int, str], str] = {}
for _page, _tokens in CODE_PAGES.items():
    for _name in _tokens.values():
        _tag = f"{PAGE_NAMES[_page]}:{_name}"
        if _tag not in LIBWBXML_MISSING:
            _FROM_LIB.setdefault((_page, LIBWBXML_NAMES.get(_tag, _name)), _tag)
_NS_TO_PAGE = {ns[:-1]: page for page, ns in enumerate(LIBWBXML_NAMESPACES)}
_OUR_NS_TO_PAGE = {name: page for page, name in enumerate(PAGE_NAMES)}


def libwbxml_name(tag: str) -> str:
    """libwbxml's local name for one of our tags (ValueError if libwbxml lacks it)."""
    if tag not in TAG_CODES:
        raise ValueError(f"unknown tag {tag!r}")
    if tag in LIBWBXML_MISSING:
        raise ValueError(f"libwbxml does not know {tag}")
    return LIBWBXML_NAMES.get(tag, tag.partition(":")[2])


def libwbxml_knows(root: Element) -> bool:
    """Does libwbxml know every tag of the tree?"""
    return not any(el.tag in LIBWBXML_MISSING for el in root.iter())


def to_libwbxml_xml(root: Element) -> str:
    """Compact XML in libwbxml's dialect, ready for :func:`libwbxml_encode`.

    OPAQUE values of libwbxml's binary tags become base64 (libwbxml writes them back as
    OPAQUE), as does their text (base64 of its UTF-8); other OPAQUE values are written
    as their UTF-8 text (libwbxml: STR_I).
    """
    out: list[str] = []
    stack: list[tuple[Element | str, int | None]] = [(root, None)]
    while stack:
        item, parent_page = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        page = TAG_CODES[item.tag][0] if item.tag in TAG_CODES else None
        if page is None:
            raise ValueError(f"unknown tag {item.tag!r}")
        local = libwbxml_name(item.tag)
        ns = "" if page == parent_page else f' xmlns="{LIBWBXML_NAMESPACES[page]}"'
        value = _lib_value(item)
        if item.children:
            out.append(f"<{local}{ns}>{value}")
            stack.append((f"</{local}>", None))
            stack.extend((child, page) for child in reversed(item.children))
        elif value:
            out.append(f"<{local}{ns}>{value}</{local}>")
        else:
            out.append(f"<{local}{ns}/>")
    return "".join(out)


def _lib_value(el: Element) -> str:
    if el.text and el.tag in LIBWBXML_BINARY:
        data = el.text.replace("\x00", "").encode("utf-8")
        return base64.b64encode(data).decode("ascii")
    if el.text:
        return escape(el.text.replace("\x00", ""))
    if el.opaque:
        if el.tag in LIBWBXML_BINARY:
            return base64.b64encode(bytes(el.opaque)).decode("ascii")
        return escape(bytes(el.opaque).decode("utf-8"))
    return ""


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def from_libwbxml_xml(xml: str) -> Element:
    """Our tree for XML printed by ``wbxml2xml -l ACTIVESYNC`` (or built for xml2wbxml).

    Base64 values of libwbxml's binary tags become ``opaque`` bytes; everything else is
    text.  Empty elements get text None.
    """

    def convert(node: ET.Element) -> Element:
        ns, local = _split(node.tag)
        ns = ns.rstrip(":")
        if ns not in _NS_TO_PAGE:
            raise ValueError(f"unknown libwbxml namespace {ns!r}")
        key = (_NS_TO_PAGE[ns], local)
        if key not in _FROM_LIB:
            raise ValueError(f"unknown libwbxml tag {ns}:{local}")
        el = Element(_FROM_LIB[key])
        _fill(el, node, el.tag in LIBWBXML_BINARY)
        el.children = [convert(child) for child in node]
        return el

    return convert(ET.fromstring(_strip_prolog(xml)))


def from_xml(xml: str) -> Element:
    """Our tree for XML in our own dialect (``to_xml`` output, corpus files).

    Whitespace-only text between child elements is ignored; a leaf's text is kept as
    is.  Values of the tags in ``LIBWBXML_BINARY`` are base64 and become ``opaque``.
    """

    def convert(node: ET.Element) -> Element:
        ns, local = _split(node.tag)
        ns = ns.rstrip(":")
        if ns not in _OUR_NS_TO_PAGE:
            raise ValueError(f"unknown namespace {ns!r}")
        tag = f"{ns}:{local}"
        if tag not in TAG_CODES:
            raise ValueError(f"unknown tag {tag!r}")
        el = Element(tag)
        _fill(el, node, tag in LIBWBXML_BINARY)
        el.children = [convert(child) for child in node]
        return el

    return convert(ET.fromstring(_strip_prolog(xml)))


def _fill(el: Element, node: ET.Element, binary: bool) -> None:
    text = node.text or ""
    if len(node) and not text.strip():
        text = ""
    if not text:
        return
    if binary:
        el.opaque = base64.b64decode("".join(text.split()), validate=True)
    else:
        el.text = text


def _strip_prolog(xml: str) -> str:
    # ElementTree accepts the DOCTYPE, but a str with an encoding declaration is not
    # always accepted; drop the XML declaration and DOCTYPE.
    xml = xml.lstrip()
    if xml.startswith("<?xml"):
        xml = xml[xml.index("?>") + 2 :].lstrip()
    if xml.startswith("<!DOCTYPE"):
        xml = xml[xml.index(">") + 1 :].lstrip()
    return xml


# --------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------
def canonical(el: Element, *, libwbxml_view: bool = False) -> tuple[Any, ...]:
    """A hashable, strictly comparable form of a tree.

    Empty text ("") and None are the same (both are "empty").  With ``libwbxml_view``
    values are compared the way libwbxml round-trips them: the value of one of its
    binary tags (``LIBWBXML_BINARY``) is bytes whether it was text or OPAQUE, any other
    value is text (OPAQUE decoded as UTF-8).
    """
    stack: list[tuple[Element, list[Any]]] = []
    top: list[Any] = []
    stack.append((el, top))
    while stack:
        node, sink = stack.pop()
        opaque = bytes(node.opaque) if node.opaque else None
        text = node.text or None
        if libwbxml_view:
            if node.tag in LIBWBXML_BINARY:
                if text is not None:
                    text, opaque = None, text.encode("utf-8") + (opaque or b"")
            elif opaque is not None:
                text, opaque = (text or "") + opaque.decode("utf-8"), None
        kids: list[Any] = []
        sink.append((node.tag, text, opaque, kids))
        for child in reversed(node.children):
            stack.append((child, kids))
    return _freeze(top[0])


def _freeze(item: Any) -> tuple[Any, ...]:
    # iterative: trees may be deep
    memo: dict[int, tuple[Any, ...]] = {}
    stack = [(item, False)]
    while stack:
        node, done = stack.pop()
        if done:
            tag, text, opaque, kids = node
            memo[id(node)] = (tag, text, opaque, tuple(memo.pop(id(k)) for k in kids))
        else:
            stack.append((node, True))
            stack.extend((k, False) for k in node[3])
    return memo[id(item)]
