"""The in-memory tree every WBXML document decodes to and encodes from.

Tags are written ``"Page:Name"`` with the MS-ASWBXML code page name, e.g.
``"AirSync:Sync"``, ``"Calendar:StartTime"``, ``"AirSyncBase:Body"``.
An element holds either children or a value: ``text`` (a ``str``, sent as
STR_I) or ``opaque`` (``bytes``, sent as OPAQUE).  An element with neither is
an empty element (``<Tag/>``).
"""

from __future__ import annotations

from collections.abc import Iterator


class Element:
    """One WBXML element."""

    __slots__ = ("children", "opaque", "tag", "text")

    def __init__(
        self,
        tag: str,
        text: str | None = None,
        children: list[Element] | None = None,
        opaque: bytes | None = None,
    ) -> None:
        self.tag = tag
        self.text = text
        self.children: list[Element] = children if children is not None else []
        self.opaque = opaque

    # -- building --------------------------------------------------------------
    def add(self, tag: str, text: str | int | None = None) -> Element:
        """Append a child and return it (``text`` ints are written in decimal)."""
        child = Element(tag, None if text is None else str(text))
        self.children.append(child)
        return child

    def append(self, child: Element) -> Element:
        self.children.append(child)
        return child

    # -- reading ---------------------------------------------------------------
    @property
    def value(self) -> str | None:
        """The text of the element; OPAQUE data is decoded as UTF-8."""
        if self.text is not None:
            return self.text
        if self.opaque is not None:
            return self.opaque.decode("utf-8", "replace")
        return None

    def find(self, tag: str) -> Element | None:
        """First direct child with ``tag``."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Element]:
        """All direct children with ``tag``."""
        return [child for child in self.children if child.tag == tag]

    def findtext(self, tag: str, default: str | None = None) -> str | None:
        """Value of the first direct child with ``tag`` ('' for an empty one)."""
        child = self.find(tag)
        if child is None:
            return default
        value = child.value
        return "" if value is None else value

    def iter(self) -> Iterator[Element]:
        """This element and all descendants, depth first, document order."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Element):
            return NotImplemented
        return (
            self.tag == other.tag
            and (self.value or None) == (other.value or None)
            and self.children == other.children
        )

    def __repr__(self) -> str:
        if self.children:
            return f"Element({self.tag!r}, children={self.children!r})"
        if self.opaque is not None:
            return f"Element({self.tag!r}, opaque={self.opaque!r})"
        return f"Element({self.tag!r}, {self.text!r})"


def E(tag: str, *children: Element | str | int | None) -> Element:
    """Terse builder: ``E("AirSync:SyncKey", "1")`` or ``E("AirSync:Sync", E(...), ...)``.

    A single str/int argument becomes the text; Element arguments become children;
    ``None`` arguments are skipped (handy for optional children).
    """
    el = Element(tag)
    for child in children:
        if child is None:
            continue
        if isinstance(child, Element):
            el.children.append(child)
        else:
            el.text = str(child)
    return el
