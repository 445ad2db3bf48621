"""A raw EAS device for tests: requests encoded and responses decoded by libwbxml.

Nothing here uses easync's own codec, so the server is checked against an
independent WBXML implementation (Debian's libwbxml2-utils).
"""

from __future__ import annotations

import base64
import re
import ssl
import subprocess
import tempfile
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

# One TLS client context for every device of the process.  Without one, urllib3 built a
# context per connection and loaded the system's CA store into it (unused: the test
# server's certificate is self-signed and not checked) — a tenth of the CPU of a replay.
_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
_TLS.check_hostname = False
_TLS.verify_mode = ssl.CERT_NONE


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: object, **kwargs: object) -> None:
        kwargs["ssl_context"] = _TLS
        super().init_poolmanager(*args, **kwargs)  # type: ignore[arg-type]


HEADER = ('<?xml version="1.0" encoding="utf-8"?>\n<!DOCTYPE ActiveSync PUBLIC '
          '"-//MICROSOFT//DTD ActiveSync//EN" "http://www.microsoft.com/">\n')


# libwbxml 0.11 spells some tags its own way (checked against `wbxml2xml -l ACTIVESYNC`).
# Tests write MS-AS names; these are swapped in before encoding and back after decoding.
LIBWBXML_SPELLING: dict[str, dict[str, str]] = {
    "Calendar": {
        "Timezone": "TimeZone", "Email": "Attendee_Email", "Name": "Attendee_Name",
        "DtStamp": "DTStamp", "Deleted": "Exception_Deleted",
        "ExceptionStartTime": "Exception_StartTime", "OrganizerEmail": "Organizer_Email",
        "OrganizerName": "Organizer_Name", "AttendeeStatus": "Attendee_Status",
        "AttendeeType": "Attendee_Type", "Type": "Recurrence_Type",
        "Until": "Recurrence_Until", "Occurrences": "Recurrence_Occurrences",
        "Interval": "Recurrence_Interval", "DayOfWeek": "Recurrence_DayOfWeek",
        "DayOfMonth": "Recurrence_DayOfMonth", "WeekOfMonth": "Recurrence_WeekOfMonth",
        "MonthOfYear": "Recurrence_MonthOfYear",
    },
    "Contacts": {
        "AssistantPhoneNumber": "AssistantTelephoneNumber",
        **{f"{kind}Address{part}": f"{kind}{part}"
           for kind in ("Business", "Home", "Other")
           for part in ("City", "Country", "PostalCode", "State", "Street")},
    },
    "Tasks": {"UtcDueDate": "UTCDueDate", "UtcStartDate": "UTCStartDate",
              "Type": "Recurrence_Type", "Start": "Recurrence_Start",
              "Until": "Recurrence_Until", "Occurrences": "Recurrence_Occurrences",
              "Interval": "Recurrence_Interval", "DayOfMonth": "Recurrence_DayOfMonth",
              "DayOfWeek": "Recurrence_DayOfWeek", "WeekOfMonth": "Recurrence_WeekOfMonth",
              "MonthOfYear": "Recurrence_MonthOfYear", "Regenerate": "Recurrence_Regenerate",
              "DeadOccur": "Recurrence_DeadOccur"},
}
PREFIXES = {"C": "Calendar", "K": "Contacts", "T": "Tasks"}
_UNSPELL = {ns: {v: k for k, v in m.items()} for ns, m in LIBWBXML_SPELLING.items()}
_TAG = re.compile(r"<(/?)([CKT]):(\w+)")


def to_libwbxml_names(xml: str) -> str:
    def swap(m: re.Match[str]) -> str:
        ns = PREFIXES[m.group(2)]
        return f"<{m.group(1)}{m.group(2)}:{LIBWBXML_SPELLING[ns].get(m.group(3), m.group(3))}"

    return _TAG.sub(swap, xml)


def xml_to_wbxml(xml: str) -> bytes:
    xml = to_libwbxml_names(xml)
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.xml", Path(d) / "out.wbxml"
        src.write_text(HEADER + xml, "utf-8")
        subprocess.run(["xml2wbxml", "-a", "-n", "-v", "1.3", "-o", str(dst), str(src)],
                       check=True, capture_output=True, timeout=30)
        return dst.read_bytes()


def wbxml_to_xml(data: bytes) -> str:
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.wbxml", Path(d) / "out.xml"
        src.write_bytes(data)
        subprocess.run(["wbxml2xml", "-l", "ACTIVESYNC", "-o", str(dst), str(src)],
                       check=True, capture_output=True, timeout=30)
        return dst.read_text("utf-8")


@dataclass
class Node:
    """A decoded element: tag "Page:Name", text, children."""

    tag: str
    text: str | None = None
    children: list[Node] = field(default_factory=list)

    def find(self, path: str) -> Node | None:
        """Descend by "/"-separated tags (each "Page:Name")."""
        node: Node | None = self
        for part in path.split("/"):
            if node is None:
                return None
            node = next((c for c in node.children if c.tag == part), None)
        return node

    def findall(self, tag: str) -> list[Node]:
        return [c for c in self.children if c.tag == tag]

    def text_of(self, path: str) -> str | None:
        n = self.find(path)
        return None if n is None else (n.text or "")

    def iter(self, tag: str) -> list[Node]:
        out = []
        stack = [self]
        while stack:
            n = stack.pop()
            if n.tag == tag:
                out.append(n)
            stack.extend(reversed(n.children))
        return out


def _convert(el: ET.Element) -> Node:
    tag = el.tag
    if tag.startswith("{"):
        ns, name = tag[1:].split("}", 1)
        ns = ns.rstrip(":")
        tag = ns + ":" + _UNSPELL.get(ns, {}).get(name, name)
    text = el.text.strip() if el.text and el.text.strip() else (el.text or None)
    if text is not None and not text.strip():
        text = None
    return Node(tag, text, [_convert(c) for c in el])


def parse_xml(xml: str) -> Node:
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    lines = [ln for ln in body.splitlines() if not ln.startswith("<!DOCTYPE")]
    return _convert(ET.fromstring("\n".join(lines)))


class RawDevice:
    def __init__(self, base_url: str, user: str, password: str, device_id: str,
                 version: str = "14.1", device_type: str = "iPhone",
                 user_agent: str = "Apple-iPhone13C2/2003.68") -> None:
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        self.url = base_url
        self.user = user
        self.auth = (user, password)
        self.device_id = device_id
        self.version = version
        self.device_type = device_type
        self.user_agent = user_agent
        self.policy_key: str | None = None
        self.session = requests.Session()
        self.session.mount("https://", _Adapter())

    def post(self, cmd: str, body: bytes | None, *, headers: dict[str, str] | None = None,
             query: str | None = None, auth: tuple[str, str] | None | bool = True
             ) -> requests.Response:
        h = {"MS-ASProtocolVersion": self.version, "User-Agent": self.user_agent,
             "Content-Type": "application/vnd.ms-sync.wbxml"}
        if self.policy_key:
            h["X-MS-PolicyKey"] = self.policy_key
        h.update(headers or {})
        if query is None:
            query = (f"Cmd={cmd}&User={self.user}&DeviceId={self.device_id}"
                     f"&DeviceType={self.device_type}")
        a = self.auth if auth is True else (auth or None)
        return self.session.post(f"{self.url}?{query}", data=body or b"", headers=h, auth=a,
                                 verify=False, timeout=30)

    def call(self, cmd: str, xml: str | None) -> Node | None:
        """POST a libwbxml-encoded request; the response decoded by libwbxml (None if empty)."""
        r = self.post(cmd, xml_to_wbxml(xml) if xml else None)
        if r.status_code != 200:
            raise AssertionError(f"{cmd}: HTTP {r.status_code}")
        if not r.content:
            return None
        return parse_xml(wbxml_to_xml(r.content))

    def provision(self) -> str:
        info = ""
        if self.version >= "14.1":
            info = ('<S:DeviceInformation><S:Set><S:Model>iPhone13C2</S:Model>'
                    '<S:OS>iOS 17.1</S:OS><S:FriendlyName>Test phone</S:FriendlyName>'
                    '</S:Set></S:DeviceInformation>')
        req = ('<Provision xmlns="Provision:" xmlns:S="Settings:">' + info +
               '<Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>'
               '</Policy></Policies></Provision>')
        r1 = self.call("Provision", req)
        assert r1 is not None and r1.text_of("Provision:Status") == "1"
        temp = r1.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
        ack = ('<Provision xmlns="Provision:"><Policies><Policy>'
               '<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>'
               f'<PolicyKey>{temp}</PolicyKey><Status>1</Status></Policy></Policies>'
               '</Provision>')
        self.policy_key = temp
        r2 = self.call("Provision", ack)
        assert r2 is not None
        self.policy_key = r2.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
        assert self.policy_key and self.policy_key != "0"
        return self.policy_key

    def folders(self) -> dict[str, str]:
        r = self.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
                      '</FolderSync>')
        assert r is not None
        out = {}
        for add in r.iter("FolderHierarchy:Add"):
            out[add.text_of("FolderHierarchy:DisplayName")] = add.text_of(
                "FolderHierarchy:ServerId")
        return out

    def sync(self, collection: str, key: str, inner: str = "", extra_ns: str = "",
             window: int | None = None, options: str = "") -> Node | None:
        ws = f"<WindowSize>{window}</WindowSize>" if window else ""
        xml = (f'<Sync xmlns="AirSync:" xmlns:C="Calendar:" xmlns:B="AirSyncBase:" '
               f'xmlns:K="Contacts:" xmlns:T="Tasks:" {extra_ns}><Collections><Collection>'
               f'<SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>{ws}'
               f'{options}{inner}</Collection></Collections></Sync>')
        return self.call("Sync", xml)

    def initial(self, collection: str) -> str:
        r = self.sync(collection, "0")
        assert r is not None
        key = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
        assert key and key != "0"
        return key

    def pull(self, collection: str, key: str) -> tuple[str, dict[str, Node], list[str], Node]:
        """Sync until MoreAvailable stops: (key, {sid: ApplicationData}, deleted ids, last)."""
        items: dict[str, Node] = {}
        deleted: list[str] = []
        last: Node | None = None
        while True:
            r = self.sync(collection, key)
            if r is None:
                return key, items, deleted, last or Node("AirSync:Sync")
            last = r
            coll = r.find("AirSync:Collections/AirSync:Collection")
            assert coll is not None and coll.text_of("AirSync:Status") == "1", r
            key = coll.text_of("AirSync:SyncKey") or key
            cmds = coll.find("AirSync:Commands")
            for c in cmds.children if cmds else []:
                sid = c.text_of("AirSync:ServerId") or ""
                if c.tag in ("AirSync:Add", "AirSync:Change"):
                    items[sid] = c.find("AirSync:ApplicationData") or Node("x")
                elif c.tag in ("AirSync:Delete", "AirSync:SoftDelete"):
                    deleted.append(sid)
            if coll.find("AirSync:MoreAvailable") is None:
                return key, items, deleted, r


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
