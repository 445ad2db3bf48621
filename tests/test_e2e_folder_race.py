"""Issue #10 point 11, end to end: a folder deleted while another device syncs it,
through ``twistd easync`` with raw WBXML (libwbxml), on SQLite and on PostgreSQL.

MS-ASCMD 2.2.3.177.17: a Sync of a folder that is gone gets Collection Status 12 (the
folder hierarchy has changed: the device runs FolderSync).  An empty 200 means "no
changes" (MS-ASCMD 2.2.1.21), which is never true here: the folder holds items the
syncing device has not got, and it sends a key it never acknowledges, so every
answer before the delete carries Commands and every one after it is Status 12.  The
red team saw an empty 200 in 5 of 30 such trials.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import needs
import pytest
from easync_server import RunningServer
from pgtest import fresh_database, pg_server, unreachable
from rawclient import Node, RawDevice, parse_xml, wbxml_to_xml, xml_to_wbxml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "race-Pa55-word"
ARGS = ["--heartbeat-min", "5"]
TRIALS = 10
SYNCERS = 6


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp(f"folder-race-{request.param}")
    if request.param == "sqlite":
        srv = RunningServer(work, ARGS).start()
        try:
            srv.add_user("fred", PASSWORD, email="fred@example.org")
            yield srv
        finally:
            srv.stop()
        return
    needs.require(unreachable())
    with fresh_database("folderrace") as url:
        srv = pg_server(work, url, ARGS).start()
        try:
            srv.add_user("fred", PASSWORD, email="fred@example.org")
            yield srv
        finally:
            srv.stop()


class Hierarchy:
    """Device A's folder commands, with the folder SyncKey they carry along."""

    def __init__(self, dev: RawDevice) -> None:
        self.dev = dev
        r = dev.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0'
                                   '</SyncKey></FolderSync>')
        assert r is not None
        self.key = r.text_of("FolderHierarchy:SyncKey") or ""

    def _call(self, cmd: str, inner: str) -> Node:
        r = self.dev.call(cmd, f'<{cmd} xmlns="FolderHierarchy:"><SyncKey>{self.key}'
                               f'</SyncKey>{inner}</{cmd}>')
        assert r is not None and r.text_of("FolderHierarchy:Status") == "1", r
        self.key = r.text_of("FolderHierarchy:SyncKey") or ""
        return r

    def create(self, name: str) -> str:
        r = self._call("FolderCreate", f"<ParentId>0</ParentId><DisplayName>{name}"
                                       "</DisplayName><Type>14</Type>")
        return r.text_of("FolderHierarchy:ServerId") or ""

    def delete(self, folder: str) -> None:
        self._call("FolderDelete", f"<ServerId>{folder}</ServerId>")


def sync_xml(folder: str, key: str, inner: str = "", top: str = "") -> str:
    return (f'<Sync xmlns="AirSync:" xmlns:K="Contacts:"><Collections><Collection>'
            f'<SyncKey>{key}</SyncKey><CollectionId>{folder}</CollectionId>{inner}'
            f'</Collection></Collections>{top}</Sync>')


def collection(r: Node | None) -> Node:
    assert r is not None, "an empty 200 ('no changes') for a deleted folder"
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None, r
    return coll


def folder_with_items(a: RawDevice, tree: Hierarchy, name: str) -> str:
    folder = tree.create(name)
    key = collection(a.sync(folder, "0")).text_of("AirSync:SyncKey") or ""
    adds = "".join(f"<Add><ClientId>{name}{i}</ClientId><ApplicationData><K:FirstName>"
                   f"{name}{i}</K:FirstName></ApplicationData></Add>" for i in range(3))
    r = a.call("Sync", sync_xml(folder, key, f"<GetChanges>0</GetChanges><Commands>{adds}"
                                             "</Commands>"))
    assert collection(r).text_of("AirSync:Status") == "1"
    return folder


def test_sync_racing_a_folder_delete_never_gets_an_empty_answer(server: RunningServer
                                                                ) -> None:
    """Devices B1..Bn each sync a folder holding items they have not got while device A
    deletes it, at staggered moments: each answer carries Commands (the Sync ran
    before the delete) or Status 12 (after it), never an empty 200; a Sync sent
    after the delete is answered Status 12."""
    a = RawDevice(server.url, "fred", PASSWORD, "raceA")
    a.provision()
    bs = [RawDevice(server.url, "fred", PASSWORD, f"raceB{i}") for i in range(SYNCERS)]
    for b in bs:
        b.provision()
    tree = Hierarchy(a)
    seen: list[str] = []
    for trial in range(TRIALS):
        folder = folder_with_items(a, tree, f"Race{trial}")
        requests = [xml_to_wbxml(sync_xml(folder, collection(b.sync(folder, "0")).text_of(
            "AirSync:SyncKey") or "")) for b in bs]
        answers: list[tuple[int, bytes]] = []
        go = threading.Barrier(len(bs) + 1)

        def one(b: RawDevice, request: bytes, delay: float, go: threading.Barrier = go,
                answers: list[tuple[int, bytes]] = answers) -> None:
            go.wait()
            time.sleep(delay)
            r = b.post("Sync", request)
            answers.append((r.status_code, r.content))

        threads = [threading.Thread(target=one, args=(b, rq, 0.003 * i))
                   for i, (b, rq) in enumerate(zip(bs, requests, strict=True))]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(0.002 * (trial % 4))
        tree.delete(folder)
        for t in threads:
            t.join(30)
        after = bs[0].post("Sync", requests[0])
        for status, content in [*answers, (after.status_code, after.content)]:
            assert status == 200
            coll = collection(parse_xml(wbxml_to_xml(content)) if content else None)
            st = coll.text_of("AirSync:Status")
            assert st in ("1", "12"), coll
            if st == "1":
                assert coll.find("AirSync:Commands") is not None, coll
            seen.append(st)
        assert seen[-1] == "12"


def test_waiting_sync_of_a_deleted_folder_gets_status_12(server: RunningServer) -> None:
    """A Sync held with HeartbeatInterval on a folder is answered Status 12 as soon as
    another device deletes the folder (before: an empty 200 at the heartbeat)."""
    a = RawDevice(server.url, "fred", PASSWORD, "waitA")
    b = RawDevice(server.url, "fred", PASSWORD, "waitB")
    a.provision()
    b.provision()
    tree = Hierarchy(a)
    folder = tree.create("Waiting")
    kb = collection(b.sync(folder, "0")).text_of("AirSync:SyncKey") or ""
    assert b.sync(folder, kb) is None                    # nothing in it
    got: list[tuple[float, int, bytes]] = []

    def wait() -> None:
        t0 = time.monotonic()
        r = b.post("Sync", xml_to_wbxml(sync_xml(
            folder, kb, top="<HeartbeatInterval>20</HeartbeatInterval>")))
        got.append((time.monotonic() - t0, r.status_code, r.content))

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(1.0)                                      # (held by now)
    tree.delete(folder)
    t.join(30)
    [(took, status, content)] = got
    assert status == 200
    coll = collection(parse_xml(wbxml_to_xml(content)) if content else None)
    assert coll.text_of("AirSync:Status") == "12"
    assert took < 15, f"answered after {took:.1f} s: at the heartbeat, not at the delete"
