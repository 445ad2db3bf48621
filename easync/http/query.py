"""The POST request line: the plain and the base64-encoded query forms (MS-ASHTTP 2.2.1.1.1)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

COMMAND_CODES = {
    0: "Sync", 1: "SendMail", 2: "SmartForward", 3: "SmartReply", 4: "GetAttachment",
    9: "FolderSync", 10: "FolderCreate", 11: "FolderDelete", 12: "FolderUpdate",
    13: "MoveItems", 14: "GetItemEstimate", 15: "MeetingResponse", 16: "Search",
    17: "Settings", 18: "Ping", 19: "ItemOperations", 20: "Provision",
    21: "ResolveRecipients", 22: "ValidateCert",
}
PARAM_TAGS = {
    0: "AttachmentName", 1: "CollectionId", 2: "CollectionName", 3: "ItemId", 4: "LongId",
    5: "ParentId", 6: "Occurrence", 7: "Options", 8: "User",
}


_B64 = re.compile(r"^[A-Za-z0-9+/]+=*$")


class QueryError(ValueError):
    """The request line cannot be understood (→ HTTP 400)."""


@dataclass
class Query:
    cmd: str = ""
    user: str = ""
    device_id: str = ""
    device_type: str = ""
    version: str | None = None       # only from the base64 form
    policy_key: str | None = None    # only from the base64 form
    locale: int | None = None
    params: dict[str, str] = field(default_factory=dict)
    encoded: bool = False


def _printable(raw: bytes) -> str:
    if raw and all(0x21 <= b < 0x7F for b in raw):
        return raw.decode("ascii")
    return raw.hex().upper()


def parse_query(qs: str) -> Query:
    """Parse the raw query string of an EAS POST."""
    if not qs:
        raise QueryError("empty query")
    if _B64.match(unquote(qs).strip()):
        return _parse_base64(qs)
    q = Query()
    for key, value in parse_qsl(qs, keep_blank_values=True):
        lk = key.lower()
        if lk == "cmd":
            q.cmd = value
        elif lk == "user":
            q.user = value
        elif lk == "deviceid":
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                # never a device's id (the base64 form shows such bytes in hex); stored,
                # it would reach logs and the database (PostgreSQL: no NUL in text)
                raise QueryError(f"DeviceId with control characters: {value[:64]!r}")
            q.device_id = value
        elif lk == "devicetype":
            q.device_type = value
        else:
            q.params[key] = value
    return q


def _parse_base64(qs: str) -> Query:
    text = unquote(qs).strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise QueryError("query is neither plain nor base64") from e
    q = Query(encoded=True)
    try:
        pos = 0
        version, code = raw[0], raw[1]
        q.locale = struct.unpack_from("<H", raw, 2)[0]
        pos = 4
        n = raw[pos]
        pos += 1
        if pos + n > len(raw):
            raise QueryError("truncated device id")
        q.device_id = _printable(raw[pos:pos + n])
        pos += n
        p = raw[pos]
        pos += 1
        if p == 4:
            q.policy_key = str(struct.unpack_from("<I", raw, pos)[0])
        elif p != 0:
            raise QueryError("bad policy key length")
        pos += p
        t = raw[pos]
        pos += 1
        if pos + t > len(raw):
            raise QueryError("truncated device type")
        q.device_type = raw[pos:pos + t].decode("ascii", "replace")
        pos += t
        while pos < len(raw):
            tag, length = raw[pos], raw[pos + 1]
            pos += 2
            if pos + length > len(raw):
                raise QueryError("truncated parameter")
            value = raw[pos:pos + length]
            pos += length
            name = PARAM_TAGS.get(tag)
            if name is None:
                continue
            if name == "Options":
                opts = value[0] if value else 0
                if opts & 0x01:
                    q.params["SaveInSent"] = "T"
                if opts & 0x02:
                    q.params["AcceptMultiPart"] = "T"
            elif name == "User":
                q.user = value.decode("utf-8", "replace")
            else:
                q.params[name] = value.decode("utf-8", "replace")
    except (IndexError, struct.error) as e:
        raise QueryError("truncated base64 query") from e
    if code not in COMMAND_CODES:
        raise QueryError(f"unknown command code {code}")
    q.cmd = COMMAND_CODES[code]
    q.version = f"{version // 10}.{version % 10}"
    return q
