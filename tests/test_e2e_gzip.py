"""Compressed requests and responses, against a running ``twistd easync`` (real TLS, real
HTTP), plus unit tests of the decoding helpers in ``easync.http.resource``.

What the specs say:

* MS-ASHTTP §2.2.2.1.2 (response headers): ``Content-Encoding: gzip`` is "required when
  the content is compressed; otherwise, this header is not included".  MS-ASHTTP says
  nothing of coded *request* bodies, so those are plain HTTP:
* RFC 9110 §8.4: a request's Content-Encoding names the codings applied to its content;
  an origin server MAY answer 415 when that coding is not acceptable.  §15.5.16: a 415
  caused by a content coding ought to carry Accept-Encoding (§12.5.3) naming the codings
  accepted.  §8.4.1.2/§8.4.1.3: "deflate" is zlib-wrapped deflate (some senders send it
  raw), "x-gzip" is "gzip".  §12.5.3: Accept-Encoding with weights; "*" is any coding.
* RFC 9110 §15.5.14: 413 when the content is larger than the server will process; easync
  applies its size limit to the decoded body, and stops decoding at the limit.
* RFC 1952 §2.2: a gzip file is a series of members.

Each bad request gets its HTTP code, a log line, and leaves stored data and sync state
as they were; nothing secret is logged; never a 5xx or a traceback.
"""

from __future__ import annotations

import base64
import gzip
import http.client
import itertools
import re
import ssl
import struct
import threading
import time
import tracemalloc
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import needs
import pytest
import pytest_twisted
import requests
from easync_server import RunningServer
from rawclient import Node, RawDevice, parse_xml, wbxml_to_xml, xml_to_wbxml

from easync.http.resource import (
    CODING_STEP,
    CorruptBody,
    DecodedTooLarge,
    Inflater,
    UnsupportedCoding,
    accepts_gzip,
    gzip_body,
    gzip_steps,
    inflate,
    request_coding,
)

needs_libwbxml = needs.mark(needs.libwbxml())

PASSWORD = "gzip-Test-pw1"
MIB = 1024 * 1024
LIMIT = 16 * MIB          # the server's default --max-request-size


def deflate_zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


CODERS = {"gzip": gzip.compress, "x-gzip": gzip.compress, "deflate": deflate_zlib,
          "identity": lambda data: data}


def zeros_gzip(size: int) -> bytes:
    """A gzip "bomb": ``size`` zero bytes, about a thousandth of that on the wire."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(MIB)
    return b"".join(c.compress(block) for _ in range(size // MIB)) + c.flush()


@dataclass
class Answer:
    status_code: int
    headers: Mapping[str, str]
    wire: bytes       # the body as it came over the wire
    content: bytes    # the body with its Content-Encoding undone (Python's gzip module)


class GzipDevice(RawDevice):
    """A RawDevice whose request bodies are coded (``coding``; None, or a Content-Encoding
    among the headers given: sent as they are) and which sends ``accept`` as
    Accept-Encoding (None: identity only).  Answers keep the bytes that came over the
    wire."""

    def __init__(self, *args: Any, coding: str | None = "gzip", accept: str | None = "gzip",
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.coding = coding
        self.accept = accept
        self.session.stream = True        # so that the wire bytes can be read (post)
        self.answers: list[Answer] = []

    def post(self, cmd: str, body: bytes | None, *, headers: dict[str, str] | None = None,
             query: str | None = None, auth: tuple[str, str] | None | bool = True
             ) -> Answer:  # type: ignore[override]
        h: dict[str, Any] = {"Accept-Encoding": self.accept}   # None drops the header
        if body and self.coding and "Content-Encoding" not in (headers or {}):
            body = CODERS[self.coding](body)
            h["Content-Encoding"] = self.coding
        h.update(headers or {})
        r = super().post(cmd, body, headers=h, query=query, auth=auth)
        wire = r.raw.read(decode_content=False)
        r.close()
        coded = r.headers.get("Content-Encoding")
        content = gzip.decompress(wire) if coded == "gzip" else wire
        answer = Answer(r.status_code, r.headers, wire, content)
        self.answers.append(answer)
        return answer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    needs.require(needs.libwbxml())
    srv = RunningServer(tmp_path_factory.mktemp("gzip"), args=["--heartbeat-min", "2"]).start()
    srv.add_user("gina", PASSWORD, email="gina@example.org")
    srv.add_user("frank", PASSWORD, email="frank@example.org")
    yield srv
    srv.stop()
    log = srv.log_text()
    assert PASSWORD not in log
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


@pytest.fixture(scope="module")
def primed(server: RunningServer):
    """frank's provisioned (gzip) device with one contact, and its Contacts sync key."""
    d = GzipDevice(server.url, "frank", PASSWORD, "gzbad1")
    d.provision()
    contacts = d.folders()["Contacts"]
    key = d.initial(contacts)
    r = d.sync(contacts, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>c1</ClientId>"
               "<ApplicationData><K:FirstName>Keep</K:FirstName></ApplicationData></Add>"
               "</Commands>")
    key = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    return d, contacts, key


def names_seen_by_a_new_device(server: RunningServer, user: str, folder: str) -> list[str]:
    """The contacts' first names as a fresh plain (uncompressed) device reads them."""
    other = RawDevice(server.url, user, PASSWORD, f"read{len(server.log_text())}")
    other.provision()
    key = other.initial(folder)
    _, items, _, _ = other.pull(folder, key)
    return sorted(n.text_of("Contacts:FirstName") for n in items.values())


def unchanged(d: GzipDevice, contacts: str, key: str, server: RunningServer) -> None:
    """The device's key is still valid with nothing new, and the data is as it was."""
    r = d.sync(contacts, key)
    if r is not None:
        coll = r.find("AirSync:Collections/AirSync:Collection")
        assert coll.text_of("AirSync:Status") == "1"
        assert coll.find("AirSync:Commands") is None
    assert names_seen_by_a_new_device(server, "frank", contacts) == ["Keep"]


def assert_clean(r: Answer, code: int) -> None:
    assert r.status_code == code
    assert b"Traceback" not in r.content and b'File "' not in r.content


def request_lines(server: RunningServer, device: str) -> list[str]:
    return [ln for ln in server.log_text().splitlines() if f" {device} " in ln and "http=" in ln]


def add_contact(xml_name: str) -> str:
    return ("<GetChanges>0</GetChanges><Commands><Add><ClientId>n1</ClientId><ApplicationData>"
            f"<K:FirstName>{xml_name}</K:FirstName><K:LastName>Zip</K:LastName>"
            "</ApplicationData></Add></Commands>")


# -- a device that compresses everything ---------------------------------------------------

@needs_libwbxml
@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_gzip_provision_foldersync_sync_add(server: RunningServer, version: str) -> None:
    dev = f"gz{version.replace('.', '')}"
    d = GzipDevice(server.url, "gina", PASSWORD, dev, version=version)
    d.provision()                                   # Provision, both phases, gzip both ways
    contacts = d.folders()["Contacts"]              # FolderSync
    key = d.initial(contacts)                       # Sync 0
    name = f"Gzipped{version.replace('.', '')}"
    r = d.sync(contacts, key, add_contact(name))    # Sync with an Add
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll.text_of("AirSync:Status") == "1"
    assert coll.text_of("AirSync:Responses/AirSync:Add/AirSync:Status") == "1"
    # every answer with a body came gzip-coded (MS-ASHTTP §2.2.2.1.2), and libwbxml
    # decodes what it decompresses to (d.call did, via wbxml2xml)
    bodies = [a for a in d.answers if a.wire]
    assert len(bodies) == 5
    for a in bodies:
        assert a.headers["Content-Encoding"] == "gzip"
        assert a.headers["Content-Type"] == "application/vnd.ms-sync.wbxml"
        assert a.wire[:2] == b"\x1f\x8b"
        assert int(a.headers["Content-Length"]) == len(a.wire)
        assert a.content[:2] == b"\x03\x01"            # WBXML 1.3, public id 1
    # stored: another device, uncompressed, reads the contact back
    assert name in names_seen_by_a_new_device(server, "gina", contacts)
    # each request's log line gives both sizes of both bodies, as sent and as decoded
    lines = request_lines(server, dev)
    assert len(lines) == 5
    for line, a in zip(lines, bodies, strict=True):
        m = re.search(r" in=gzip:(\d+)B>(\d+)B out=gzip:(\d+)B>(\d+)B ", line)
        assert m, line
        assert int(m.group(1)) < int(m.group(2)) + 30      # (gzip's header and trailer)
        assert (int(m.group(3)), int(m.group(4))) == (len(a.content), len(a.wire))


@needs_libwbxml
def test_no_gzip_answer_without_accept_encoding(server: RunningServer) -> None:
    d = GzipDevice(server.url, "gina", PASSWORD, "gzplain", accept=None)   # identity only
    d.provision()
    d.folders()
    assert d.answers and all(a.wire for a in d.answers)
    for a in d.answers:
        assert "Content-Encoding" not in a.headers
        assert a.wire[:2] == b"\x03\x01"
    # no Accept-Encoding at all (http.client would add "identity" by itself)
    body = gzip.compress(xml_to_wbxml(
        '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=10,
                                       context=ssl._create_unverified_context())
    conn.putrequest("POST", "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=gina"
                    "&DeviceId=gzplain&DeviceType=iPhone", skip_accept_encoding=True)
    auth = base64.b64encode(f"gina:{PASSWORD}".encode()).decode()
    for k, v in {"Authorization": f"Basic {auth}", "MS-ASProtocolVersion": "14.1",
                 "X-MS-PolicyKey": d.policy_key, "Content-Encoding": "gzip",
                 "Content-Type": "application/vnd.ms-sync.wbxml",
                 "Content-Length": str(len(body))}.items():
        conn.putheader(k, v)
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200
    assert resp.getheader("Content-Encoding") is None
    tree = parse_xml(wbxml_to_xml(data))
    assert tree.text_of("FolderHierarchy:Status") == "1"


@needs_libwbxml
@pytest.mark.parametrize("accept,gzipped", [
    ("gzip", True), ("deflate, gzip;q=0.5", True), ("*", True), ("GZIP", True),
    ("x-gzip", True), ("gzip;q=0", False), ("deflate", False), ("identity", False),
    ("*;q=0", False), ("gzip;q=0, *", False), ("br, *;q=0.1", True),
])
def test_accept_encoding_weights(server: RunningServer, accept: str, gzipped: bool) -> None:
    """RFC 9110 §12.5.3: a coding with q=0 is not acceptable; "*" stands for any coding
    not named; easync only ever answers gzip or nothing."""
    d = GzipDevice(server.url, "gina", PASSWORD, "gzaccept", accept=accept, coding=None)
    d.provision()
    a = d.answers[-1]
    assert a.wire
    assert (a.headers.get("Content-Encoding") == "gzip") is gzipped
    assert (a.wire[:2] == b"\x1f\x8b") is gzipped


@needs_libwbxml
def test_an_empty_200_stays_empty(server: RunningServer) -> None:
    d = GzipDevice(server.url, "gina", PASSWORD, "gzempty")
    d.provision()
    contacts = d.folders()["Contacts"]
    key, _, _, _ = d.pull(contacts, d.initial(contacts))
    assert d.sync(contacts, key) is None                # nothing new: an empty 200
    a = d.answers[-1]
    assert a.status_code == 200 and a.wire == b""
    assert "Content-Encoding" not in a.headers
    assert a.headers["Content-Length"] == "0"
    # an empty body with a Content-Encoding (nothing was coded): the cached Sync request
    r = d.post("Sync", None, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.wire == b""


@needs_libwbxml
@pytest.mark.parametrize("coding", ["identity", "gzip", "x-gzip", "deflate", "deflate-raw",
                                    "GZip", "gzip, identity"])
def test_request_codings_accepted(server: RunningServer, coding: str) -> None:
    d = GzipDevice(server.url, "gina", PASSWORD, "gzcodings", coding=None)
    d.provision()
    body = xml_to_wbxml('<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
                        '</FolderSync>')
    coder = {"deflate-raw": deflate_raw, "GZip": gzip.compress,
             "gzip, identity": gzip.compress}.get(coding) or CODERS[coding]
    header = "deflate" if coding == "deflate-raw" else coding
    r = d.post("FolderSync", coder(body), headers={"Content-Encoding": header})
    assert r.status_code == 200
    tree = parse_xml(wbxml_to_xml(r.content))
    assert "Contacts" in [a.text_of("FolderHierarchy:DisplayName")
                          for a in tree.iter("FolderHierarchy:Add")]


@needs_libwbxml
def test_two_gzip_members_are_one_body(server: RunningServer) -> None:
    """RFC 1952 §2.2: a gzip stream may be several members, decoded one after another."""
    d = GzipDevice(server.url, "gina", PASSWORD, "gzmembers", coding=None)
    d.provision()
    body = xml_to_wbxml('<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
                        '</FolderSync>')
    r = d.post("FolderSync", gzip.compress(body[:7]) + gzip.compress(body[7:]),
               headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert parse_xml(wbxml_to_xml(r.content)).text_of("FolderHierarchy:Status") == "1"


# -- long polls --------------------------------------------------------------------------

class Poll(threading.Thread):
    def __init__(self, d: GzipDevice, cmd: str, xml: str) -> None:
        super().__init__(daemon=True)
        self.d, self.cmd, self.xml = d, cmd, xml
        self.result: Node | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.d.call(self.cmd, self.xml)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


def held(server: RunningServer, device: str, cmd: str) -> bool:
    return any(f" {device} " in ln and f"{cmd} on " in ln
               for ln in server.admin("device", "list", "gina").stdout.splitlines())


@needs_libwbxml
@pytest.mark.parametrize("cmd", ["Ping", "Sync"])
def test_long_poll_woken_answers_gzip(server: RunningServer, cmd: str) -> None:
    waiter = GzipDevice(server.url, "gina", PASSWORD, f"gzwait{cmd}")
    writer = GzipDevice(server.url, "gina", PASSWORD, f"gzwrite{cmd}")
    waiter.provision()
    writer.provision()
    contacts = waiter.folders()["Contacts"]
    writer.folders()
    key, _, _, _ = waiter.pull(contacts, waiter.initial(contacts))
    wkey, _, _, _ = writer.pull(contacts, writer.initial(contacts))
    if cmd == "Ping":
        xml = ('<Ping xmlns="Ping:"><HeartbeatInterval>120</HeartbeatInterval><Folders><Folder>'
               f'<Id>{contacts}</Id><Class>Contacts</Class></Folder></Folders></Ping>')
    else:
        xml = ('<Sync xmlns="AirSync:"><Collections><Collection>'
               f'<SyncKey>{key}</SyncKey><CollectionId>{contacts}</CollectionId>'
               '</Collection></Collections><HeartbeatInterval>120</HeartbeatInterval></Sync>')
    poll = Poll(waiter, cmd, xml)
    poll.start()
    deadline = time.monotonic() + 10
    while not held(server, waiter.device_id, cmd):
        assert time.monotonic() < deadline, "the long poll was not held"
        time.sleep(0.1)
    name = f"Woke{cmd}"
    r = writer.sync(contacts, wkey, add_contact(name))
    assert r.text_of("AirSync:Collections/AirSync:Collection/AirSync:Status") == "1"
    poll.join(10)
    assert not poll.is_alive() and poll.error is None
    answer = waiter.answers[-1]
    assert answer.headers["Content-Encoding"] == "gzip" and answer.wire[:2] == b"\x1f\x8b"
    if cmd == "Ping":
        assert poll.result.text_of("Ping:Status") == "2"
    else:
        added = poll.result.iter("AirSync:Add")
        assert [a.text_of("AirSync:ApplicationData/Contacts:FirstName") for a in added] == \
            [name]


@needs_libwbxml
def test_sync_wait_heartbeat_is_an_empty_200_without_coding(server: RunningServer) -> None:
    d = GzipDevice(server.url, "gina", PASSWORD, "gzheartbeat")
    d.provision()
    contacts = d.folders()["Contacts"]
    key, _, _, _ = d.pull(contacts, d.initial(contacts))
    r = d.call("Sync", '<Sync xmlns="AirSync:"><Collections><Collection>'
               f'<SyncKey>{key}</SyncKey><CollectionId>{contacts}</CollectionId></Collection>'
               '</Collections><HeartbeatInterval>2</HeartbeatInterval></Sync>')
    assert r is None
    a = d.answers[-1]
    assert a.status_code == 200 and a.wire == b"" and "Content-Encoding" not in a.headers


# -- the other request forms ----------------------------------------------------------------

@needs_libwbxml
def test_base64_query_form_with_gzip(server: RunningServer) -> None:
    d = GzipDevice(server.url, "gina", PASSWORD, "gzbase64")
    d.provision()
    device_id = d.device_id.encode()
    blob = (bytes([161, 9]) + struct.pack("<H", 0x0409) + bytes([len(device_id)]) + device_id
            + bytes([4]) + struct.pack("<I", int(d.policy_key)) + bytes([6]) + b"iPhone")
    body = xml_to_wbxml('<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>')
    r = d.post("FolderSync", body, query=base64.b64encode(blob).decode(),
               headers={"MS-ASProtocolVersion": "", "X-MS-PolicyKey": ""})
    assert r.status_code == 200
    assert r.headers["Content-Encoding"] == "gzip"
    tree = parse_xml(wbxml_to_xml(r.content))
    assert "Contacts" in [a.text_of("FolderHierarchy:DisplayName")
                          for a in tree.iter("FolderHierarchy:Add")]


@needs_libwbxml
def test_options_unchanged(server: RunningServer) -> None:
    r = requests.options(server.url, auth=("gina", PASSWORD), verify=False, timeout=10,
                         headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200
    assert "16.1" in r.headers["MS-ASProtocolVersions"].split(",")
    assert "Content-Encoding" not in r.headers and r.content == b""


# -- bad input ------------------------------------------------------------------------------

@needs_libwbxml
def test_unknown_coding_is_415(server: RunningServer, primed) -> None:
    """RFC 9110 §8.4 (415 allowed) and §15.5.16 (Accept-Encoding names what is accepted)."""
    d, contacts, key = primed
    body = xml_to_wbxml(f'<Sync xmlns="AirSync:" xmlns:K="Contacts:"><Collections><Collection>'
                        f'<SyncKey>{key}</SyncKey><CollectionId>{contacts}</CollectionId>'
                        f'{add_contact("Never")}</Collection></Collections></Sync>')
    for coding in ("br", "compress", "gzip, gzip", "zstd\x7f"):
        r = d.post("Sync", body, headers={"Content-Encoding": coding})
        assert_clean(r, 415)
        accepted = {c.strip() for c in r.headers["Accept-Encoding"].split(",")}
        assert {"gzip", "deflate"} <= accepted
    assert "unsupported Content-Encoding br" in server.log_text()
    assert "\x7f" not in server.log_text()
    unchanged(d, contacts, key, server)


def _sync_add_body(contacts: str, key: str) -> bytes:
    return xml_to_wbxml(f'<Sync xmlns="AirSync:" xmlns:K="Contacts:"><Collections><Collection>'
                        f'<SyncKey>{key}</SyncKey><CollectionId>{contacts}</CollectionId>'
                        f'{add_contact("Never")}</Collection></Collections></Sync>')


@needs_libwbxml
@pytest.mark.parametrize("how", ["truncated", "crc", "not gzip", "trailing garbage",
                                 "deflate garbage"])
def test_corrupt_body_is_400(server: RunningServer, primed, how: str) -> None:
    d, contacts, key = primed
    good = gzip.compress(_sync_add_body(contacts, key))
    coding = "gzip"
    if how == "truncated":
        bad = good[:-12]
    elif how == "crc":
        bad = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    elif how == "not gzip":                   # plain WBXML said to be gzip
        bad = _sync_add_body(contacts, key)
    elif how == "trailing garbage":
        bad = good + b"\x00garbage"
    else:
        bad, coding = b"\xff" * 40, "deflate"
    mark = len(server.log_text())
    r = d.post("Sync", bad, headers={"Content-Encoding": coding})
    assert_clean(r, 400)
    new_log = server.log_text()[mark:]
    assert re.search(r" Sync http=400 .*\(bad body: ", new_log), new_log
    unchanged(d, contacts, key, server)


def vm_hwm(pid: int) -> int | None:
    """The process's peak resident memory in bytes (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else None


@needs_libwbxml
def test_gzip_bomb_is_413_fast_and_small(server: RunningServer, primed) -> None:
    d, contacts, key = primed
    bomb = zeros_gzip(128 * MIB)
    assert len(bomb) < 200_000                # well under the wire limit: only decoding stops it
    before = vm_hwm(server.proc.pid)
    mark = len(server.log_text())
    t0 = time.monotonic()
    r = d.post("Sync", bomb, headers={"Content-Encoding": "gzip"})
    took = time.monotonic() - t0
    assert_clean(r, 413)
    assert took < 3.0
    line = next(ln for ln in server.log_text()[mark:].splitlines() if "http=413" in ln)
    assert "frank gzbad1 Sync http=413" in line
    assert f" in=gzip:{len(bomb)}B>{LIMIT}B+ " in line
    assert "(body over the size limit once decoded)" in line
    after = vm_hwm(server.proc.pid)
    if before is not None and after is not None:
        # decoding stops one byte past the 16 MiB limit: not the 128 MiB the bomb holds
        assert after - before < 48 * MIB, (before, after)
    # still answering, data and sync state as they were
    ok = requests.options(server.url, auth=("frank", PASSWORD), verify=False, timeout=5)
    assert ok.status_code == 200
    unchanged(d, contacts, key, server)


@needs_libwbxml
def test_decoded_size_limit_exactly(server: RunningServer, primed) -> None:
    """A body of exactly the limit once decoded passes the size check (and, being no
    WBXML, gets 400); one byte more is 413."""
    d, contacts, key = primed
    r = d.post("Sync", zeros_gzip(LIMIT), headers={"Content-Encoding": "gzip"})
    assert_clean(r, 400)
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    over = c.compress(bytes(LIMIT + 1)) + c.flush()
    r = d.post("Sync", over, headers={"Content-Encoding": "gzip"})
    assert_clean(r, 413)
    unchanged(d, contacts, key, server)


# -- the helpers, without a server ------------------------------------------------------------

@pytest.mark.parametrize("values,coding", [
    (None, ""), ([b""], ""), ([b"identity"], ""), ([b"gzip"], "gzip"), ([b" GZIP "], "gzip"),
    ([b"x-gzip"], "gzip"), ([b"deflate"], "deflate"), ([b"identity, gzip"], "gzip"),
    ([b"gzip", b"identity"], "gzip"),
])
def test_request_coding(values: list[bytes] | None, coding: str) -> None:
    assert request_coding(values) == coding


@pytest.mark.parametrize("values", [[b"br"], [b"gzip, br"], [b"gzip", b"gzip"], [b"compress"]])
def test_request_coding_refused(values: list[bytes]) -> None:
    with pytest.raises(UnsupportedCoding):
        request_coding(values)


@pytest.mark.parametrize("values,ok", [
    (None, False), ([b"gzip"], True), ([b"gzip;q=0"], False), ([b"gzip; q=0.001"], True),
    ([b"*"], True), ([b"*;q=0"], False), ([b"gzip;q=0", b"*"], False), ([b"br;q=1, *"], True),
    ([b"gzip;q=bogus"], False), ([b"identity"], False), ([b"gzip;q=2"], False),
])
def test_accepts_gzip(values: list[bytes] | None, ok: bool) -> None:
    assert accepts_gzip(values) is ok


def run(inflater: Inflater) -> bytes:
    for _ in inflater.steps():
        pass
    return inflater.body


@pytest.mark.parametrize("coding,coder", [("gzip", gzip.compress), ("deflate", deflate_zlib),
                                          ("deflate", deflate_raw)])
def test_inflater_round_trip(coding: str, coder: Any) -> None:
    data = bytes(range(256)) * 5000 + b"end"
    assert run(Inflater(coding, coder(data), len(data))) == data
    with pytest.raises(DecodedTooLarge):
        run(Inflater(coding, coder(data), len(data) - 1))


def test_inflater_works_in_bounded_steps() -> None:
    """Each step inflates at most ``step`` bytes: a 1 MiB body takes 256 steps of 4 KiB."""
    inflater = Inflater("gzip", gzip.compress(bytes(MIB)), MIB, step=4096)
    steps = sum(1 for _ in inflater.steps())
    assert steps >= MIB // 4096
    assert inflater.body == bytes(MIB)


# mtime=0: the same bytes, so the same test ids, in every process (pytest-xdist
# compares the collections of its workers)
@pytest.mark.parametrize("data", [
    b"", b"\x1f\x8b", gzip.compress(b"x" * 1000, mtime=0)[:-1], b"not gzip at all",
    gzip.compress(b"abc", mtime=0) + b"\x00\x00",
    gzip.compress(b"abc", mtime=0) + b"\x1f\x8bjunk",
])
def test_inflater_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptBody):
        run(Inflater("gzip", data, MIB))


def test_inflater_deflate_trailing_data_is_corrupt() -> None:
    with pytest.raises(CorruptBody):
        run(Inflater("deflate", deflate_zlib(b"abc") + deflate_zlib(b"def"), MIB))


def test_inflater_bomb_memory_stays_near_the_limit() -> None:
    bomb = zeros_gzip(128 * MIB)
    tracemalloc.start()
    try:
        with pytest.raises(DecodedTooLarge):
            run(Inflater("gzip", bomb, MIB))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MIB + 4 * CODING_STEP + 256 * 1024, peak


def test_gzip_steps_round_trip() -> None:
    data = b"".join(b"<Contact %d>" % i for i in range(200_000))
    parts: list[bytes] = []
    steps = sum(1 for _ in gzip_steps(data, parts, step=64 * 1024))
    assert steps == -(-len(data) // (64 * 1024))
    assert gzip.decompress(b"".join(parts)) == data


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
@pytest_twisted.ensureDeferred
async def test_decoding_a_bomb_leaves_the_reactor_its_turns() -> None:
    """Inflating 64 MiB (about a quarter of a second of work) never holds the reactor
    for 50 ms: a 1 ms LoopingCall keeps ticking meanwhile.  So does gzip_body."""
    from twisted.internet import task

    bomb = zeros_gzip(128 * MIB)
    ticks: list[float] = []
    loop = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    loop.start(0.001)
    try:
        start = time.monotonic()
        with pytest.raises(DecodedTooLarge):
            await inflate("gzip", bomb, 64 * MIB)
        inflated = time.monotonic()
        big = bytes(range(256)) * (32 * MIB // 256)
        zipped = await gzip_body(big)
        end = time.monotonic()
    finally:
        loop.stop()
    points = [start, *ticks, end]
    gaps = [b - a for a, b in itertools.pairwise(points)]
    assert max(gaps) < 0.05, (max(gaps), inflated - start, end - inflated)
    assert gzip.decompress(zipped) == big
