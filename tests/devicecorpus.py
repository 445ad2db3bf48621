"""The device corpus (tests/corpus/devices/): requests shaped as real devices send them.

Each file is one XML request starting with a comment whose ``Key: value`` lines say
where it comes from and how to replay it (DeviceType, User-Agent, Protocol, Also-at,
Folder, Setup, ...).  This module reads them, fills the placeholders, and encodes them
with libwbxml (see rawclient.py); ``{NUL}`` at the end of a value means "this value ends
with a NUL byte", which XML cannot carry: the value is sent as WBXML OPAQUE data.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path

from rawclient import Node, RawDevice, parse_xml, wbxml_to_xml, xml_to_wbxml

CORPUS = Path(__file__).resolve().parent / "corpus" / "devices"
REQUIRED = ("Source", "Device", "DeviceType", "User-Agent", "Protocol", "Folder", "Command",
            "Shows", "Changed")
_KEY = re.compile(r"^([A-Z][A-Za-z-]*):\s?(.*)$")
_PLACEHOLDER = re.compile(r"\{[A-Z]+\}")


@dataclass
class Capture:
    name: str
    meta: dict[str, str]
    body: str                       # the request, comment removed
    versions: list[str] = field(default_factory=list)

    @property
    def device_type(self) -> str:
        return self.meta["DeviceType"]

    @property
    def user_agent(self) -> str:
        return self.meta["User-Agent"]


def names(command: str = "Sync") -> list[str]:
    """The corpus files whose ``Command`` is ``command`` (the first word of the key):
    Sync captures are replayed by test_device_corpus.py, Provision and Find captures
    by test_device_corpus_commands.py."""
    return sorted(p.name for p in CORPUS.glob("*.xml")
                  if load(p.name).meta.get("Command", "").split(",")[0].split()[0] == command)


def load(name: str) -> Capture:
    text = (CORPUS / name).read_text("utf-8")
    m = re.match(r"\s*<!--(.*?)-->", text, re.DOTALL)
    assert m, f"{name}: no leading comment"
    meta: dict[str, str] = {}
    key = None
    for line in m.group(1).splitlines():
        km = _KEY.match(line)
        if km:
            key = km.group(1)
            meta[key] = km.group(2).strip()
        elif key and line.strip():
            meta[key] += " " + line.strip()
    body = text[m.end():].strip()
    versions = [meta.get("Protocol", "")] + meta.get("Also-at", "").split()
    return Capture(name, meta, body, [v for v in versions if v])


def fill(body: str, **values: str) -> str:
    """The request with ``{NAME}`` placeholders replaced and whitespace between tags gone."""
    for k, v in values.items():
        body = body.replace("{" + k + "}", v)
    left = set(_PLACEHOLDER.findall(body)) - {"{NUL}"}
    assert not left, f"placeholders left: {left}"
    return re.sub(r">\s+<", "><", body)


def encode(xml: str) -> bytes:
    """libwbxml encoding; values written ``...{NUL}`` become OPAQUE with the NUL byte."""
    opaque = re.findall(r">([^<>]*)\{NUL\}<", xml)
    xml = xml.replace("{NUL}", "")
    data = xml_to_wbxml(xml)
    for value in opaque:
        raw = value.encode("utf-8")
        inline = b"\x03" + raw + b"\x00"               # STR_I
        assert inline in data, value
        blob = raw + b"\x00"
        assert len(blob) < 128
        data = data.replace(inline, b"\xc3" + bytes([len(blob)]) + blob, 1)   # OPAQUE
    return data


def send(dev: RawDevice, xml: str) -> Node | None:
    """POST a Sync; its answer decoded, or None for an empty answer (MS-ASCMD 2.2.1.21:
    nothing to report, the SyncKey stays)."""
    r = dev.post("Sync", encode(xml))
    assert r.status_code == 200, f"Sync: HTTP {r.status_code}"
    return parse_xml(wbxml_to_xml(r.content)) if r.content else None


def to_141(body: str) -> str:
    """The 16.1 calendar shape in the 14.1 form: ClientUid → UID (no NUL; 14.1 clients
    make the UID, MS-ASCAL 2.2.2.46), AirSyncBase:Location → Calendar:Location
    (MS-ASCAL 2.2.2.27: its DisplayName; the other parts of a 16.x place, street or
    coordinates, have no 14.1 element).  Everything else (the empty Recurrence too) stays."""
    body = re.sub(r"<C:ClientUid>([^<{]*)(\{NUL\})?</C:ClientUid>", r"<C:UID>\1</C:UID>", body)
    return re.sub(r"<B:Location>(?:(?!</B:Location>).)*?<B:DisplayName>([^<]*)</B:DisplayName>"
                  r"(?:(?!</B:Location>).)*</B:Location>",
                  r"<C:Location>\1</C:Location>", body, flags=re.DOTALL)


def tz_rules(blob: str) -> tuple[bytes, ...]:
    """A Timezone blob's bias and transition rules (names left out), MS-ASDTYPE 2.7.6."""
    raw = base64.b64decode(blob)
    assert len(raw) == 172, len(raw)
    return raw[0:4], raw[68:84], raw[84:88], raw[152:168], raw[168:172]
