"""Acceptance: the CRM's company address book through ``twistd easync --backend crm
--crm-shared-contacts all`` against the fake CRM in its own process, with a raw WBXML
phone (issue #14 point 1, CRM side).

* FolderSync lists it beside the user's own Contacts as a user-created contacts folder
  (Type 14, MS-ASCMD 2.2.3.186.3), named by ``--crm-shared-name``;
* its Sync brings the CRM contacts the user is not assigned (not their own);
* a change made in the CRM reaches it and wakes a Ping held on it (MS-ASCMD 2.2.1.13:
  Status 2, the folder listed);
* a record re-assigned in the CRM to the user leaves the book (Sync Delete) and enters
  their own Contacts (Sync Add);
* a phone's change to a book item gets the per-item Status 7 (MS-ASCMD 2.2.3.177.17:
  conflict, the server's object wins) and the server's version back, nothing
  reaches the CRM.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import needs
import pytest
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_e2e_crm import FakeCrmProcess, add_xml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "crm-book-Pa55"
POLL = 0.3
BOOK = "Rubrica aziendale"


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCrmProcess]:
    proc = FakeCrmProcess(tmp_path_factory.mktemp("crm"), flavour="vtiger")
    for name in ("dana", "erin", "bob"):            # bob: a CRM user only
        proc("add_user", name=name, email=f"{name}@example.org")
    for owner in ("dana", "erin", "bob"):
        proc("add_record", module="Contacts", owner=owner,
             fields={"firstname": owner.title(), "lastname": f"{owner.title()}Own",
                     "email": f"{owner}.own@example.org"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, crm: FakeCrmProcess
           ) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("easync-crm-book")
    (work / "crm.key").write_text("adminKEY123\n")
    srv = RunningServer(work, ["--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                               "--crm-access-key-file", str(work / "crm.key"),
                               "--crm-poll-interval", str(POLL), "--crm-timeout", "3",
                               "--crm-shared-contacts", "all", "--crm-shared-name", BOOK])
    srv.start()
    for name in ("dana", "erin"):
        srv.add_user(name, PASSWORD, email=f"{name}@example.org")
    yield srv
    srv.stop()


def phone(server: RunningServer, user: str, dev: str) -> RawDevice:
    d = RawDevice(server.url, user, PASSWORD, dev)
    d.provision()
    return d


def hierarchy(d: RawDevice) -> dict[str, tuple[str, str]]:
    """DisplayName -> (ServerId, Type) of a FolderSync from 0."""
    r = d.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
               '</FolderSync>')
    assert r is not None and r.text_of("FolderHierarchy:Status") == "1"
    return {a.text_of("FolderHierarchy:DisplayName") or "": (
        a.text_of("FolderHierarchy:ServerId") or "", a.text_of("FolderHierarchy:Type") or "")
        for a in r.iter("FolderHierarchy:Add")}


def last_names(items: dict[str, Node]) -> dict[str, str]:
    return {sid: n.text_of("Contacts:LastName") or "" for sid, n in items.items()}


class HeldPing:
    """A raw Ping on one folder, held in a thread."""

    def __init__(self, d: RawDevice, folder: str, cls: str = "Contacts") -> None:
        self.result: Node | None = None
        self.done_at = 0.0
        xml = ('<Ping xmlns="Ping:"><HeartbeatInterval>120</HeartbeatInterval><Folders>'
               f'<Folder><Id>{folder}</Id><Class>{cls}</Class></Folder></Folders></Ping>')
        self._t = threading.Thread(target=self._run, args=(d, xml), daemon=True)
        self._t.start()

    def _run(self, d: RawDevice, xml: str) -> None:
        self.result = d.call("Ping", xml)
        self.done_at = time.monotonic()

    def join(self) -> Node:
        self._t.join(15)
        assert not self._t.is_alive(), "the Ping was not answered"
        assert self.result is not None
        return self.result


def until(fn: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.1)


def test_book_listed_synced_changed_pinged_and_reassigned(server: RunningServer,
                                                          crm: FakeCrmProcess) -> None:
    d = phone(server, "dana", "bookA")
    tree = hierarchy(d)
    assert tree[BOOK][1] == "14" and tree["Contacts"][1] == "9"
    book, own = tree[BOOK][0], tree["Contacts"][0]
    kb, items, _, _ = d.pull(book, d.initial(book))
    assert sorted(last_names(items).values()) == ["BobOwn", "ErinOwn"]
    ko, mine, _, _ = d.pull(own, d.initial(own))
    assert sorted(last_names(mine).values()) == ["DanaOwn"]
    (bob,) = [r["id"] for r in crm("live", module="Contacts", owner="bob")]
    (bob_sid,) = [s for s, n in last_names(items).items() if n == "BobOwn"]

    # a change in the CRM wakes the Pings held on the book by every user's phone
    e = phone(server, "erin", "bookE")
    assert hierarchy(e)[BOOK][0] == book
    ke, _, _, _ = e.pull(book, e.initial(book))
    pings = [HeldPing(d, book), HeldPing(e, book)]
    time.sleep(1.0)                                 # held and listening
    crm("modify_record", id=bob, fields={"lastname": "BobRenamed"})
    changed_at = time.monotonic()
    for ping in pings:
        r = ping.join()
        assert r.text_of("Ping:Status") == "2"
        assert [f.text for f in r.iter("Ping:Folder")] == [book]
        assert ping.done_at - changed_at < POLL + 1.0
    kb, items, deleted, _ = d.pull(book, kb)
    assert last_names(items) == {bob_sid: "BobRenamed"} and deleted == []

    # re-assigned to dana: out of the book, into her Contacts
    ping = HeldPing(d, own)
    time.sleep(1.0)
    crm("modify_record", id=bob, fields={"assigned_user_id": "dana"})
    r = ping.join()
    assert r.text_of("Ping:Status") == "2"
    kb, items, deleted, _ = d.pull(book, kb)
    assert deleted == [bob_sid] and items == {}
    ko, mine, _, _ = d.pull(own, ko)
    assert list(last_names(mine).values()) == ["BobRenamed"]

    # for erin it stays in the book, as a new item (a re-assign is a Delete and an Add
    # for everyone else)
    _, eitems, edeleted, _ = e.pull(book, ke)
    assert list(last_names(eitems).values()) == ["BobRenamed"] and edeleted == [bob_sid]
    _, eitems, _, _ = e.pull(book, e.initial(book))
    assert sorted(last_names(eitems).values()) == ["BobRenamed", "DanaOwn"]


def test_phone_change_to_a_book_item_converges(server: RunningServer,
                                               crm: FakeCrmProcess) -> None:
    d = phone(server, "erin", "bookW")
    book = hierarchy(d)[BOOK][0]
    key, items, _, _ = d.pull(book, d.initial(book))
    (sid,) = [s for s, n in last_names(items).items() if n == "DanaOwn"]
    before = crm("live", module="Contacts")
    r = d.sync(book, key, f"<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>"
               "<K:LastName>EditedOnPhone</K:LastName></ApplicationData></Change>"
               "</Commands>")
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1"
    # MS-ASCMD 2.2.3.177.17 Status 7: the server's object wins; its version is sent
    (resp,) = coll.find("AirSync:Responses").children
    assert (resp.tag, resp.text_of("AirSync:ServerId"), resp.text_of("AirSync:Status")) == \
        ("AirSync:Change", sid, "7")
    (cmd,) = coll.find("AirSync:Commands").children
    assert cmd.text_of("AirSync:ServerId") == sid
    assert cmd.find("AirSync:ApplicationData").text_of("Contacts:LastName") == "DanaOwn"
    assert crm("live", module="Contacts") == before


def test_phone_add_to_the_book_reaches_nothing(server: RunningServer,
                                               crm: FakeCrmProcess) -> None:
    """An Add in the read-only book is refused (not Status 1) and makes no CRM record;
    the collection itself answers (no 500, no broken SyncKey)."""
    d = phone(server, "erin", "bookAdd")
    book = hierarchy(d)[BOOK][0]
    key, _, _, _ = d.pull(book, d.initial(book))
    before = crm("live", module="Contacts")
    r = d.sync(book, key, add_xml("ro1", "<K:LastName>NotInTheCrm</K:LastName>"))
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1"
    add = coll.find("AirSync:Responses/AirSync:Add")
    assert add is not None and add.text_of("AirSync:Status") not in (None, "1")
    assert crm("live", module="Contacts") == before
    new_key = coll.text_of("AirSync:SyncKey")
    assert new_key and new_key != key
    _, items, _, _ = d.pull(book, new_key)
    assert "NotInTheCrm" not in last_names(items).values()
