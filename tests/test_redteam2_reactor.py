"""Red team 2 (issue-14 features through ``twistd easync``): a hostile authenticated
device whose requests would hold the reactor, or cost the server far more than the
protocol lets a request ask for.

The rule: no request may hold the reactor more than ~50 ms (the brief's rule;
README "Limits").  Measured from outside the server: a client asks a cheap GET
every 10 ms on a kept-alive connection while the attack runs; its longest wait is
how long the reactor was held (plus the machine's noise; the tests allow 300 ms on a
loaded CI machine, against the seconds the attack held it before).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any, Self

import needs
import pytest
import requests
from easync_server import RunningServer
from rawclient import RawDevice

from easync.wbxml import decode, encode
from easync.wbxml.element import Element

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "red team two 5"
#: the longest the reactor may seem held, with margin for a loaded machine
STALL_LIMIT = 0.3


class Ticker:
    """A GET of the ActiveSync URL every 10 ms (answered at once by the reactor, no
    login) on one kept-alive connection, while the ``with`` block runs: ``worst``,
    the longest answer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.waits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.session.get(self.url, verify=False, timeout=60)
            self.waits.append(time.monotonic() - t0)
            self._stop.wait(0.01)

    def __enter__(self) -> Self:
        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        self.session.get(self.url, verify=False, timeout=60)     # (the TLS handshake)
        self._thread.start()
        deadline = time.monotonic() + 10
        while len(self.waits) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        n = len(self.waits)
        deadline = time.monotonic() + 10
        while len(self.waits) < n + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(60)

    @property
    def worst(self) -> float:
        return max(self.waits)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("redteam2")).start()
    try:
        srv.add_user("mallory", PASSWORD, email="mallory@example.org")
        yield srv
    finally:
        srv.stop()


def _device(srv: RunningServer, name: str, version: str = "14.1") -> RawDevice:
    d = RawDevice(srv.url, "mallory", PASSWORD, name, version=version)
    d.provision()
    return d


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_a_big_wbxml_body_does_not_hold_the_reactor(server: RunningServer) -> None:
    """Several MB of WBXML, hundreds of thousands of elements (well under
    --max-request-size, 16M): the decoding takes about a second of CPU.  The device
    gets its answer (HTTP 400: the root is not the command's, MS-ASHTTP 2.2.2.1.1),
    and meanwhile the reactor keeps answering others — before, it decoded the body
    in one go and nobody else was answered for that second."""
    # as many elements as take several times the limit to decode on this machine (a
    # fast one needs more for the test to show anything), within --max-request-size
    n = 250_000
    while True:
        root = Element("Settings:Settings")
        for _ in range(n):
            root.add("Settings:Oof").add("Settings:Get").add("Settings:BodyType", "Text")
        body = encode(root)
        t0 = time.perf_counter()
        decode(body)
        cost = time.perf_counter() - t0
        if cost > 3 * STALL_LIMIT or n >= 1_000_000:
            break
        n *= 2
    assert cost > 2 * STALL_LIMIT, cost        # (the attack is worth measuring here)
    d = _device(server, "BigBody")
    with Ticker(server.url) as ticker:
        r = d.post("Ping", body)
    assert r.status_code == 400 and b"Traceback" not in r.content
    assert "root Settings:Settings does not match Cmd" in server.log_text()
    assert ticker.worst < STALL_LIMIT, (ticker.worst, cost, len(body))


def _estimate_request(folder: str, key: str, n: int) -> str:
    colls = "".join(f"<Collection><AirSync:SyncKey>{key}</AirSync:SyncKey><CollectionId>"
                    f"{folder}</CollectionId></Collection>" for _ in range(n))
    return ('<GetItemEstimate xmlns="GetItemEstimate:" xmlns:AirSync="AirSync:"><Collections>'
            f"{colls}</Collections></GetItemEstimate>")


def test_get_item_estimate_of_more_than_300_collections_is_refused(
        server: RunningServer) -> None:
    """MS-ASCMD 2.2.3.29.1/2.2.3.31.1: a GetItemEstimate carries one to 300
    Collection elements.  301 (or 5,000: each costs the store a read of the sync
    state and a count, and one request kept the database busy for over 30 s) are
    over the limit: the top-level Status 103 (MS-ASCMD 3.1.5.10), no Response,
    nothing estimated; 300 are each answered."""
    d = _device(server, "Estimator")
    contacts = d.folders()["Contacts"]
    key = d.initial(contacts)
    r = d.call("GetItemEstimate", _estimate_request(contacts, key, 301))
    # (libwbxml names code page 6 "GetItemEstimate:")
    assert r is not None and r.text_of("GetItemEstimate:Status") == "103", r
    assert r.findall("GetItemEstimate:Response") == []
    r = d.call("GetItemEstimate", _estimate_request(contacts, key, 300))
    assert r is not None
    answers = r.findall("GetItemEstimate:Response")
    assert len(answers) == 300 and {a.text_of("GetItemEstimate:Status") for a in answers} == {
        "1"}, r


def _device_info(srv: RunningServer, device_id: str) -> dict[str, Any]:
    db = sqlite3.connect(srv.workdir / "easync.sqlite")
    try:
        [(info,)] = db.execute("SELECT info FROM devices WHERE device_id = ?",
                               (device_id,)).fetchall()
    finally:
        db.close()
    return dict(json.loads(info))


def _settings_info(*sets: dict[str, str]) -> bytes:
    root = Element("Settings:Settings")
    for fields in sets:
        s = root.add("Settings:DeviceInformation").add("Settings:Set")
        for name, value in fields.items():
            s.add(f"Settings:{name}", value)
    return encode(root)


def test_settings_takes_one_device_information_of_bounded_size(
        server: RunningServer) -> None:
    """A Settings request has at most one DeviceInformation (MS-ASCMD 2.2.3.45:
    0...1); each was one write of the device record (150,000 of them took 20 s).
    Of a few, the first is taken and each further one is answered Status 2
    (protocol error, MS-ASCMD 2.2.3.177.15), not saved; 20,000 fail to validate as a
    whole (top-level Status 2, nothing saved).  And a Model, OS, … is at most 1024
    characters (MS-ASCMD 2.2.3.115, 2.2.3.127, …): the megabytes a hostile device
    sends are not kept in its record (read with its every request, shown to the
    administrator) — the first 1024 characters are."""
    d = _device(server, "InfoFlood")
    r = d.post("Settings", _settings_info(*({"Model": f"Few {i}"} for i in range(10))))
    assert r.status_code == 200
    answer = decode(r.content)
    assert answer.findtext("Settings:Status") == "1"
    statuses = [c.findtext("Settings:Status") for c in answer.children
                if c.tag == "Settings:DeviceInformation"]
    assert statuses == ["1"] + ["2"] * 9
    assert _device_info(server, "InfoFlood")["Model"] == "Few 0"
    r = d.post("Settings", _settings_info(*({"Model": f"Flood {i}"} for i in range(20_000))))
    assert r.status_code == 200
    answer = decode(r.content)
    assert answer.findtext("Settings:Status") == "2" and len(answer.children) == 1
    assert _device_info(server, "InfoFlood")["Model"] == "Few 0"
    r = d.post("Settings", _settings_info({"Model": "M" * 3_000_000, "OS": "é" * 5000,
                                           "FriendlyName": "Mallory's phone"}))
    assert r.status_code == 200
    answer = decode(r.content)
    part = answer.find("Settings:DeviceInformation")
    assert part is not None and part.findtext("Settings:Status") == "1", answer
    info = _device_info(server, "InfoFlood")
    assert info["Model"] == "M" * 1024 and info["OS"] == "é" * 1024
    assert info["FriendlyName"] == "Mallory's phone"


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_settings_with_200000_parts_is_refused_without_holding_the_reactor(
        server: RunningServer) -> None:
    """A Settings request has five kinds of part, each at most once (MS-ASCMD
    2.2.3.168.2); easync answers a few repeated ones in request order, but 200,000
    Oof/Get fail to validate: the top-level Status 2 (protocol error, MS-ASCMD
    2.2.3.177.15) alone — before, each got its answer, built and encoded in the
    reactor thread (600,000 elements: 1.5 s during which nobody else was answered)."""
    root = Element("Settings:Settings")
    for _ in range(200_000):
        root.add("Settings:Oof").add("Settings:Get").add("Settings:BodyType", "Text")
    d = _device(server, "OofFlood")
    with Ticker(server.url) as ticker:
        r = d.post("Settings", encode(root))
    assert r.status_code == 200
    answer = decode(r.content)
    assert answer.findtext("Settings:Status") == "2" and len(answer.children) == 1, answer
    assert ticker.worst < STALL_LIMIT, ticker.worst


def _deletes(folder: str, key: str, n: int) -> bytes:
    root = Element("AirSync:Sync")
    coll = root.add("AirSync:Collections").add("AirSync:Collection")
    coll.add("AirSync:SyncKey", key)
    coll.add("AirSync:CollectionId", folder)
    coll.add("AirSync:GetChanges", "0")
    commands = coll.add("AirSync:Commands")
    for i in range(n):
        commands.add("AirSync:Delete").add("AirSync:ServerId", f"{folder}:{900_000 + i}")
    return encode(root)


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_a_sync_of_more_commands_than_the_limit_is_refused(server: RunningServer) -> None:
    """MS-ASCMD 3.1.5.10: a server limits the Add, Change, Delete and Fetch elements of
    one Sync request (Exchange: 200; easync: --max-sync-commands, 1000) and answers
    more with Status 4.  1,000 are answered one by one (Status 8: no such item); 1,001
    get the top-level Status 4, and the sync key stays as it was; 200,000 likewise,
    the reactor answering others meanwhile — before, each was parsed and answered in
    the reactor thread, held for about a second."""
    d = _device(server, "CmdFlood")
    contacts = d.folders()["Contacts"]
    key = d.initial(contacts)
    r = d.post("Sync", _deletes(contacts, key, 1000))
    answer = decode(r.content)
    coll = answer.find("AirSync:Collections").find("AirSync:Collection")  # type: ignore[union-attr]
    assert coll is not None and coll.findtext("AirSync:Status") == "1"
    statuses = {x.findtext("AirSync:Status")
                for x in coll.find("AirSync:Responses").children}  # type: ignore[union-attr]
    assert statuses == {"8"}
    key = coll.findtext("AirSync:SyncKey") or key
    for n in (1001, 200_000):
        body = _deletes(contacts, key, n)
        with Ticker(server.url) as ticker:
            r = d.post("Sync", body)
        assert r.status_code == 200
        answer = decode(r.content)
        assert answer.findtext("AirSync:Status") == "4", (n, answer)
        assert answer.find("AirSync:Collections") is None
        assert ticker.worst < STALL_LIMIT, (n, ticker.worst)
    # the key still works
    r = d.post("Sync", _deletes(contacts, key, 1))
    coll = decode(r.content).find("AirSync:Collections").find(  # type: ignore[union-attr]
        "AirSync:Collection")
    assert coll is not None and coll.findtext("AirSync:Status") == "1"


def test_move_items_and_meeting_response_over_the_limits_are_refused(
        server: RunningServer) -> None:
    """MS-ASCMD 3.1.5.10: a MoveItems of more than 1000 Move, a MeetingResponse of
    more than 100 Request get Status 103 (each one was a store transaction of its
    own: 500,000 in a 16 MB request kept the database busy until the request timed
    out).  At the limits each is answered."""
    d = _device(server, "Mover")
    folders = d.folders()
    contacts, calendar = folders["Contacts"], folders["Calendar"]

    def moves(n: int) -> str:
        return '<MoveItems xmlns="Move:">' + "".join(
            f"<Move><SrcMsgId>{contacts}:{800_000 + i}</SrcMsgId><SrcFldId>{contacts}"
            f"</SrcFldId><DstFldId>{calendar}</DstFldId></Move>" for i in range(n)) + \
            "</MoveItems>"

    r = d.call("MoveItems", moves(1001))
    assert r is not None and r.text_of("Move:Status") == "103" and not r.findall(
        "Move:Response"), r
    r = d.call("MoveItems", moves(1000))
    assert r is not None and [x.text_of("Move:Status") for x in r.findall(
        "Move:Response")] == ["1"] * 1000

    def answers(n: int) -> str:
        return '<MeetingResponse xmlns="MeetingResponse:">' + "".join(
            f"<Request><UserResponse>1</UserResponse><CollectionId>{calendar}"
            f"</CollectionId><RequestId>{calendar}:{700_000 + i}</RequestId></Request>"
            for i in range(n)) + "</MeetingResponse>"

    r = d.call("MeetingResponse", answers(101))
    assert r is not None
    assert [x.text_of("MeetingResponse:Status") for x in r.findall(
        "MeetingResponse:Result")] == ["103"], r
    r = d.call("MeetingResponse", answers(100))
    assert r is not None and [x.text_of("MeetingResponse:Status") for x in r.findall(
        "MeetingResponse:Result")] == ["2"] * 100


def test_item_operations_over_the_limit_is_refused(server: RunningServer) -> None:
    """MS-ASCMD 3.1.5.10: an ItemOperations of more than 100 Fetch, EmptyFolderContents
    and Move together gets top-level Status 11, nothing fetched (each Fetch is a store
    read: 40,000 in one request kept the database busy); at the limit each is
    answered (here Status 6: no such item, MS-ASCMD 2.2.3.177.8)."""
    d = _device(server, "Fetcher")
    contacts = d.folders()["Contacts"]

    def fetches(n: int) -> str:
        return '<ItemOperations xmlns="ItemOperations:" xmlns:A="AirSync:">' + "".join(
            f"<Fetch><Store>Mailbox</Store><A:CollectionId>{contacts}</A:CollectionId>"
            f"<A:ServerId>{contacts}:{900_000 + i}</A:ServerId></Fetch>"
            for i in range(n)) + "</ItemOperations>"

    r = d.call("ItemOperations", fetches(101))
    assert r is not None and r.text_of("ItemOperations:Status") == "11", r
    assert r.find("ItemOperations:Response") is None, r
    r = d.call("ItemOperations", fetches(100))
    assert r is not None and r.text_of("ItemOperations:Status") == "1", r
    response = r.find("ItemOperations:Response")
    assert response is not None, r
    assert [x.text_of("ItemOperations:Status") for x in response.findall(
        "ItemOperations:Fetch")] == ["6"] * 100, r
