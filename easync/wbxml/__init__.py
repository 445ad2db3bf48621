"""WBXML for Exchange ActiveSync: the element tree, the code pages, the codec."""

from easync.wbxml.codec import WBXMLError, decode, encode, to_xml
from easync.wbxml.element import E, Element

__all__ = ["E", "Element", "WBXMLError", "decode", "encode", "to_xml"]
