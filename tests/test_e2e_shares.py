"""Acceptance: shared folders through ``twistd easync`` (issue #14 point 1).
The tests share one server and may run in any order (test_e2e_shares_postgresql
collects them alphabetically).

Two users, three devices: anna's phone (raw WBXML, EAS 14.1), and bob's two — one
speaking raw WBXML (14.1), one pyactivesync (16.1).  anna shares her Calendar with bob
read-write and her Contacts read-only; the administrator makes a company address book
(read-only, everyone) and fills it with ``easync-admin import``.

Protocol facts relied on:
* MS-ASCMD 2.2.3.186.3: a user-created calendar is Type 13, contacts Type 14.
* MS-ASCMD 2.2.3.177.17 / 2.2.3.34: Status 7 tells the client its object was discarded
  (the server's won) — what a write into a read-only folder gets; the server's version
  comes in the Commands of the same response (Change; Add for an item the phone
  deleted).  An Add has no server version: Status 6.
* MS-ASCMD 2.2.3.84: with GetChanges 0 the server sends no Commands — that version then
  comes with the next Sync.
* MS-ASCMD 2.2.3.177.6 / 2.2.3.177.4: FolderUpdate Status 2 and FolderDelete Status 3
  for a folder the client may not change.
* MS-ASCMD 2.2.1.13: a held Ping answers Status 2 naming the changed folder.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import needs
import pytest

pyactivesync = needs.importable("pyactivesync")
needs_libwbxml = needs.mark(needs.libwbxml())

from easync_server import RunningServer
from pyactivesync import Client
from pyactivesync.models import Contact, ContactChange
from rawclient import Node, RawDevice

pytestmark = needs_libwbxml

PASSWORD = "shared secret 42"


class World:
    server: RunningServer
    anna: RawDevice
    bob: RawDevice
    bob_pas: Client
    cal: str
    contacts: str
    book: str
    keys: dict[tuple[str, str], str]
    ids: dict[str, str]


def _coll(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None, r
    return coll


def _sync(dev: RawDevice, world: World, folder: str, inner: str = "") -> Node:
    """One Sync of ``folder`` with the device's key for it; the key moves on.  An
    empty response (nothing new) is an empty Collection."""
    who = dev.device_id
    r = dev.sync(folder, world.keys[(who, folder)], inner)
    if r is None and not inner:
        return Node("AirSync:Collection")   # empty answer: nothing new (MS-ASCMD 2.2.1.21)
    coll = _coll(r)
    assert coll.text_of("AirSync:Status") == "1", r
    world.keys[(who, folder)] = coll.text_of("AirSync:SyncKey") or world.keys[(who, folder)]
    return coll


def _start(dev: RawDevice, world: World, folder: str) -> dict[str, Node]:
    key, items, _deleted, _last = dev.pull(folder, dev.initial(folder))
    world.keys[(dev.device_id, folder)] = key
    return items


def _commands(coll: Node) -> list[tuple[str, str, Node | None]]:
    cmds = coll.find("AirSync:Commands")
    return [(c.tag.split(":")[1], c.text_of("AirSync:ServerId") or "",
             c.find("AirSync:ApplicationData")) for c in (cmds.children if cmds else [])]


def _responses(coll: Node) -> list[tuple[str, str, str]]:
    resp = coll.find("AirSync:Responses")
    return [(c.tag.split(":")[1],
             c.text_of("AirSync:ServerId") or c.text_of("AirSync:ClientId") or "",
             c.text_of("AirSync:Status") or "")
            for c in (resp.children if resp else [])]


def _add_contact(dev: RawDevice, world: World, folder: str, cid: str, first: str,
                 phone: str = "") -> str:
    tel = f"<K:MobilePhoneNumber>{phone}</K:MobilePhoneNumber>" if phone else ""
    coll = _sync(dev, world, folder,
                 f"<GetChanges>0</GetChanges><Commands><Add><ClientId>{cid}</ClientId>"
                 f"<ApplicationData><K:FirstName>{first}</K:FirstName>{tel}"
                 "</ApplicationData></Add></Commands>")
    add = coll.find("AirSync:Responses/AirSync:Add")
    assert add is not None and add.text_of("AirSync:Status") == "1"
    return add.text_of("AirSync:ServerId") or ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``twistd easync`` on SQLite (test_e2e_shares_postgresql: on PostgreSQL)."""
    srv = RunningServer(tmp_path_factory.mktemp("shares")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def world(server: RunningServer) -> Iterator[World]:
    w = World()
    srv = server
    w.server = srv
    srv.add_user("anna", PASSWORD, email="anna@example.org")
    srv.add_user("bob", PASSWORD, email="bob@example.org")
    w.keys, w.ids = {}, {}
    w.anna = RawDevice(srv.url, "anna", PASSWORD, "AnnaPhone")
    w.bob = RawDevice(srv.url, "bob", PASSWORD, "BobRaw")
    for dev in (w.anna, w.bob):
        dev.provision()
    annas = w.anna.folders()
    w.cal, w.contacts = annas["Calendar"], annas["Contacts"]
    _start(w.anna, w, w.cal)
    _start(w.anna, w, w.contacts)
    coll = _sync(w.anna, w, w.cal,
                 "<GetChanges>0</GetChanges><Commands><Add><ClientId>e1</ClientId>"
                 "<ApplicationData><C:Subject>Team lunch</C:Subject>"
                 "<C:StartTime>20300105T120000Z</C:StartTime>"
                 "<C:EndTime>20300105T130000Z</C:EndTime></ApplicationData></Add>"
                 "</Commands>")
    w.ids["lunch"] = coll.text_of("AirSync:Responses/AirSync:Add/AirSync:ServerId") or ""
    w.ids["mario"] = _add_contact(w.anna, w, w.contacts, "c1", "Mario", "+39 333 1")
    w.ids["luigi"] = _add_contact(w.anna, w, w.contacts, "c2", "Luigi", "+39 333 2")
    w.ids["peach"] = _add_contact(w.anna, w, w.contacts, "c3", "Peach", "+39 333 3")
    srv.admin("share", "add", "anna", w.cal, "--to", "bob", "--write")
    srv.admin("share", "add", "anna", w.contacts, "--to", "bob")
    out = srv.admin("folder", "create-shared", "Company address book").stdout
    m = re.search(r"folder (\d+) ", out)
    assert m, out
    w.book = m.group(1)
    vcf = srv.workdir / "company.vcf"
    vcf.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nN:;Reception;;;\r\nFN:Reception\r\n"
                   "TEL;TYPE=WORK:+39 02 100\r\nEND:VCARD\r\n", "utf-8")
    srv.admin("import", "~company", str(vcf), "--folder", w.book)
    # anna's phone learns the hierarchy as it now is (the company book appeared since
    # its first FolderSync): else her first Ping answers 7, whichever test holds it
    w.anna.folders()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
        w.bob_pas = Client(srv.host, "bob", PASSWORD, device_id="BobPas", timeout=30)
        yield w


def _folder_adds(dev: RawDevice) -> dict[str, tuple[str, str, str]]:
    r = dev.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
                 "</FolderSync>")
    assert r is not None
    return {a.text_of("FolderHierarchy:ServerId") or "": (
        a.text_of("FolderHierarchy:DisplayName") or "", a.text_of("FolderHierarchy:Type") or "",
        a.text_of("FolderHierarchy:ParentId") or "") for a in r.iter("FolderHierarchy:Add")}


def test_colleague_sees_the_shared_folders(world: World) -> None:
    """FolderSync lists the shares as user-created folders (MS-ASCMD 2.2.3.186.3) with
    whose they are in the name, at the top level, ServerIds unique in the hierarchy."""
    adds = _folder_adds(world.bob)
    assert adds[world.cal] == ("Calendar \u2014 anna", "13", "0")
    assert adds[world.contacts] == ("Contacts \u2014 anna", "14", "0")
    assert adds[world.book] == ("Company address book", "14", "0")
    names = [n for n, _t, _p in adds.values()]
    assert names.count("Calendar") == 1 and names.count("Contacts") == 1   # bob's own
    # anna sees her own folders as before, and the company book
    annas = _folder_adds(world.anna)
    assert annas[world.cal][0] == "Calendar" and annas[world.book][0] == "Company address book"
    # the pyactivesync device (EAS 16.1) lists them too
    pas = {f.id: f.name for f in world.bob_pas.list_folders()}
    assert pas[world.cal] == "Calendar \u2014 anna"
    assert pas[world.book] == "Company address book"


def _ping(dev: RawDevice, folder: str, cls: str, out: list[Any]) -> threading.Thread:
    def run() -> None:
        out.append(dev.call("Ping", '<Ping xmlns="Ping:"><HeartbeatInterval>120'
                            f"</HeartbeatInterval><Folders><Folder><Id>{folder}</Id>"
                            f"<Class>{cls}</Class></Folder></Folders></Ping>"))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_read_write_share_reaches_the_owner_and_wakes_her_ping(world: World) -> None:
    items = _start(world.bob, world, world.cal)
    lunch = world.ids["lunch"]
    # (the tests also run in another order: test_e2e_shares_postgresql)
    assert (items[lunch].text_of("Calendar:Subject") or "").startswith("Team lunch")
    # anna's phone holds a Ping on her calendar (a second connection of the same phone)
    ping_dev = RawDevice(world.server.url, "anna", PASSWORD, "AnnaPhone")
    ping_dev.policy_key = world.anna.policy_key
    answer: list[Any] = []
    thread = _ping(ping_dev, world.cal, "Calendar", answer)
    time.sleep(1.0)
    assert not answer, "the Ping answered before any change"
    coll = _sync(world.bob, world, world.cal,
                 f"<Commands><Change><ServerId>{lunch}</ServerId><ApplicationData>"
                 "<C:Subject>Team lunch (moved)</C:Subject>"
                 "<C:StartTime>20300105T130000Z</C:StartTime>"
                 "<C:EndTime>20300105T140000Z</C:EndTime></ApplicationData></Change>"
                 "</Commands>")
    assert all(status == "1" for _k, _s, status in _responses(coll))
    started = time.monotonic()
    thread.join(10)
    assert answer and answer[0] is not None, "anna's Ping was not woken"
    assert time.monotonic() - started < 5
    assert answer[0].text_of("Ping:Status") == "2"
    assert [f.text for f in answer[0].iter("Ping:Folder")] == [world.cal]
    # the change is anna's data: her phone gets it
    got = _commands(_sync(world.anna, world, world.cal))
    assert [(k, s) for k, s, _d in got] == [("Change", lunch)]
    assert got[0][2] is not None
    assert got[0][2].text_of("Calendar:Subject") == "Team lunch (moved)"
    # and bob's own phone is not sent its own change back
    assert _commands(_sync(world.bob, world, world.cal)) == []


def test_owners_change_wakes_the_colleagues_ping(world: World) -> None:
    """The other way round: anna changes her shared calendar; bob's held Ping on it
    answers (MS-ASCMD 2.2.1.13 Status 2) and his phone gets the Change."""
    if (world.bob.device_id, world.cal) not in world.keys:
        _start(world.bob, world, world.cal)
    lunch = world.ids["lunch"]
    ping_dev = RawDevice(world.server.url, "bob", PASSWORD, "BobRaw")
    ping_dev.policy_key = world.bob.policy_key
    answer: list[Any] = []
    thread = _ping(ping_dev, world.cal, "Calendar", answer)
    time.sleep(1.0)
    assert not answer
    _sync(world.anna, world, world.cal,
          f"<GetChanges>0</GetChanges><Commands><Change><ServerId>{lunch}</ServerId>"
          "<ApplicationData><C:Subject>Team lunch (final)</C:Subject>"
          "<C:StartTime>20300105T130000Z</C:StartTime>"
          "<C:EndTime>20300105T140000Z</C:EndTime></ApplicationData></Change></Commands>")
    thread.join(10)
    assert answer and answer[0] is not None, "bob's Ping was not woken"
    assert answer[0].text_of("Ping:Status") == "2"
    got = _commands(_sync(world.bob, world, world.cal))
    assert [(k, s) for k, s, _d in got] == [("Change", lunch)]
    assert got[0][2] is not None
    assert got[0][2].text_of("Calendar:Subject") == "Team lunch (final)"


def test_offline_edit_of_read_only_items_converges(world: World) -> None:
    """bob's phone edits two of anna's contacts while offline; meanwhile anna changes
    one of them.  At its next Sync each edit gets Status 7 and the server's version,
    once, in the same response; nothing of bob's is stored."""
    items = _start(world.bob, world, world.contacts)
    mario, luigi = world.ids["mario"], world.ids["luigi"]
    assert items[mario].text_of("Contacts:FirstName") == "Mario"
    # (bob's phone is offline) anna changes Mario on the server side
    _sync(world.anna, world, world.contacts,
          f"<GetChanges>0</GetChanges><Commands><Change><ServerId>{mario}</ServerId>"
          "<ApplicationData><K:FirstName>Mario</K:FirstName>"
          "<K:MobilePhoneNumber>+39 333 99</K:MobilePhoneNumber></ApplicationData>"
          "</Change></Commands>")
    # back online, bob's phone sends what it did offline
    coll = _sync(world.bob, world, world.contacts,
                 f"<Commands><Change><ServerId>{mario}</ServerId><ApplicationData>"
                 "<K:FirstName>Marietto</K:FirstName></ApplicationData></Change>"
                 f"<Change><ServerId>{luigi}</ServerId><ApplicationData>"
                 "<K:FirstName>Luigino</K:FirstName></ApplicationData></Change>"
                 "</Commands>")
    assert sorted(_responses(coll)) == sorted([("Change", luigi, "7"), ("Change", mario, "7")])
    sent = _commands(coll)
    assert sorted((k, s) for k, s, _d in sent) == sorted([("Change", luigi), ("Change", mario)])
    data = {s: d for _k, s, d in sent}
    assert data[mario] is not None and data[luigi] is not None
    assert data[mario].text_of("Contacts:FirstName") == "Mario"
    assert data[mario].text_of("Contacts:MobilePhoneNumber") == "+39 333 99"
    assert data[luigi].text_of("Contacts:FirstName") == "Luigi"
    assert data[luigi].text_of("Contacts:MobilePhoneNumber") == "+39 333 2"
    # nothing more is owed, and the server kept anna's data
    assert _commands(_sync(world.bob, world, world.contacts)) == []
    assert _commands(_sync(world.anna, world, world.contacts)) == []
    fresh = RawDevice(world.server.url, "anna", PASSWORD, "AnnaCheck")
    fresh.provision()
    _k, now, _d, _l = fresh.pull(world.contacts, fresh.initial(world.contacts))
    assert now[luigi].text_of("Contacts:FirstName") == "Luigi"
    assert now[mario].text_of("Contacts:FirstName") == "Mario"


def test_a_version_owed_answers_the_next_ping_at_once(world: World) -> None:
    """A phone that sends its edit of a read-only item with GetChanges 0 gets Status 7
    and no Commands (MS-ASCMD 2.2.3.84): the server's version is owed to it.  If it
    then holds a Ping on the folder, the Ping answers at once with Status 2 naming it
    (MS-ASCMD 2.2.1.13), so the phone comes for that version now, not at the next
    change or heartbeat; its Sync then brings it."""
    items = _start(world.bob, world, world.contacts)
    peach = world.ids["peach"]
    assert items[peach].text_of("Contacts:FirstName") == "Peach"
    coll = _sync(world.bob, world, world.contacts,
                 f"<GetChanges>0</GetChanges><Commands><Change><ServerId>{peach}</ServerId>"
                 "<ApplicationData><K:FirstName>Daisy</K:FirstName></ApplicationData>"
                 "</Change></Commands>")
    assert _responses(coll) == [("Change", peach, "7")] and _commands(coll) == []
    answer: list[Any] = []
    started = time.monotonic()
    _ping(world.bob, world.contacts, "Contacts", answer).join(timeout=30)
    assert answer and answer[0] is not None, "the Ping was not answered"
    assert time.monotonic() - started < 10, "answered at the heartbeat, not at once"
    assert answer[0].text_of("Ping:Status") == "2"
    assert [f.text for f in answer[0].iter("Ping:Folder")] == [world.contacts]
    sent = _commands(_sync(world.bob, world, world.contacts))
    assert [(k, s) for k, s, _d in sent] == [("Change", peach)]
    assert sent[0][2] is not None and sent[0][2].text_of("Contacts:FirstName") == "Peach"


def test_delete_of_a_read_only_item_comes_back(world: World) -> None:
    peach = world.ids["peach"]
    if (world.bob.device_id, world.contacts) not in world.keys:
        _start(world.bob, world, world.contacts)
    coll = _sync(world.bob, world, world.contacts,
                 f"<Commands><Delete><ServerId>{peach}</ServerId></Delete></Commands>")
    assert _responses(coll) == [("Delete", peach, "7")]
    sent = _commands(coll)
    assert [(k, s) for k, s, _d in sent] == [("Add", peach)]
    assert sent[0][2] is not None
    assert sent[0][2].text_of("Contacts:FirstName") == "Peach"


def test_add_into_a_read_only_folder_is_refused(world: World) -> None:
    if (world.bob.device_id, world.contacts) not in world.keys:
        _start(world.bob, world, world.contacts)
    coll = _sync(world.bob, world, world.contacts,
                 "<Commands><Add><ClientId>x1</ClientId><ApplicationData>"
                 "<K:FirstName>Intruder</K:FirstName></ApplicationData></Add></Commands>")
    add = coll.find("AirSync:Responses/AirSync:Add")
    assert add is not None
    assert add.text_of("AirSync:Status") == "6"
    assert add.find("AirSync:ServerId") is None
    # not created: anna's phone gets nothing new
    assert _commands(_sync(world.anna, world, world.contacts)) == []


def test_pyactivesync_edit_of_the_company_book_converges(world: World) -> None:
    """pyactivesync sends its writes with GetChanges 0: Status 7 now, and the server's
    version at its next Sync (MS-ASCMD 2.2.3.84)."""
    c = world.bob_pas
    key = c.sync_folder(world.book, "0").sync_key
    res = c.sync_folder(world.book, key)
    key = res.sync_key
    [item] = res.added
    assert item.fields.get("Contacts.FirstName") == "Reception"
    changed = c.apply_contact_changes(world.book, key, [ContactChange(
        server_id=item.server_id, contact=Contact(first_name="Hacked"))])
    assert changed.statuses[item.server_id] == "7"
    added = c.create_contact(world.book, changed.sync_key, Contact(first_name="New"))
    assert added.status == "6" and added.server_id is None
    res = c.sync_folder(world.book, added.sync_key)
    assert [(i.server_id, i.fields.get("Contacts.FirstName")) for i in res.changed] == [
        (item.server_id, "Reception")]
    assert res.added == [] and res.deleted == []
    again = c.sync_folder(world.book, res.sync_key)
    assert again.added == again.changed == [] and again.deleted == []


def test_resent_key_with_an_edit_of_a_read_only_item(world: World) -> None:
    """The phone never got an answer (MS-ASCMD 2.2.3.166.4: it resends the previous
    SyncKey) and its resend carries an edit of a company-book contact: the lost answer
    is replayed, the edit gets Status 7, and the server's version follows at the next
    Sync."""
    items = _start(world.bob, world, world.book)
    [(reception, _data)] = list(items.items())
    k1 = world.keys[(world.bob.device_id, world.book)]
    vcf = world.server.workdir / "more.vcf"
    vcf.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nN:;Helpdesk;;;\r\nFN:Helpdesk\r\n"
                   "END:VCARD\r\n", "utf-8")
    world.server.admin("import", "~company", str(vcf), "--folder", world.book)
    lost = _sync(world.bob, world, world.book)            # this answer is "lost"
    [(kind, helpdesk, _d)] = _commands(lost)
    assert kind == "Add"
    k2 = world.keys[(world.bob.device_id, world.book)]
    world.keys[(world.bob.device_id, world.book)] = k1       # the phone resends k1
    again = _sync(world.bob, world, world.book,
                  f"<Commands><Change><ServerId>{reception}</ServerId><ApplicationData>"
                  "<K:FirstName>Front desk</K:FirstName></ApplicationData></Change>"
                  "</Commands>")
    assert [(k, sid) for k, sid, _d in _commands(again)] == [("Add", helpdesk)]
    assert _responses(again) == [("Change", reception, "7")]
    assert world.keys[(world.bob.device_id, world.book)] == k2
    nxt = _commands(_sync(world.bob, world, world.book))
    assert [(k, sid) for k, sid, _d in nxt] == [("Change", reception)]
    assert nxt[0][2] is not None
    assert nxt[0][2].text_of("Contacts:FirstName") == "Reception"


def test_shared_folder_cannot_be_renamed_or_deleted(world: World) -> None:
    r = world.bob.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0'
                       "</SyncKey></FolderSync>")
    assert r is not None
    key = r.text_of("FolderHierarchy:SyncKey")
    up = world.bob.call("FolderUpdate", '<FolderUpdate xmlns="FolderHierarchy:">'
                        f"<SyncKey>{key}</SyncKey><ServerId>{world.cal}</ServerId>"
                        "<ParentId>0</ParentId><DisplayName>Mine</DisplayName>"
                        "</FolderUpdate>")
    assert up is not None and up.text_of("FolderHierarchy:Status") == "2"
    de = world.bob.call("FolderDelete", '<FolderDelete xmlns="FolderHierarchy:">'
                        f"<SyncKey>{key}</SyncKey><ServerId>{world.book}</ServerId>"
                        "</FolderDelete>")
    assert de is not None and de.text_of("FolderHierarchy:Status") == "3"
    assert world.book in _folder_adds(world.bob)


def _hierarchy_key(dev: RawDevice) -> str:
    r = dev.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0'
                 "</SyncKey></FolderSync>")
    assert r is not None
    return r.text_of("FolderHierarchy:SyncKey") or ""


def test_owner_renames_a_shared_folder(world: World) -> None:
    """anna renames a calendar she shares: bob's held Ping is told (Status 7) and his
    next FolderSync updates its name (MS-ASCMD 2.2.3.186.3 Update)."""
    key = _hierarchy_key(world.anna)
    made = world.anna.call("FolderCreate", '<FolderCreate xmlns="FolderHierarchy:">'
                           f"<SyncKey>{key}</SyncKey><ParentId>0</ParentId>"
                           "<DisplayName>Team</DisplayName><Type>13</Type></FolderCreate>")
    assert made is not None and made.text_of("FolderHierarchy:Status") == "1"
    team = made.text_of("FolderHierarchy:ServerId") or ""
    world.server.admin("share", "add", "anna", team, "--to", "bob")
    bkey = _hierarchy_key(world.bob)
    # bob's phone is up to date on the calendar its Ping watches: a change another test
    # made there (pytest-xdist runs them in any order) would rightly answer it Status 2
    _start(world.bob, world, world.cal)
    ping_dev = RawDevice(world.server.url, "bob", PASSWORD, "BobRaw")
    ping_dev.policy_key = world.bob.policy_key
    answer: list[Any] = []
    thread = _ping(ping_dev, world.cal, "Calendar", answer)
    time.sleep(1.0)
    assert not answer
    up = world.anna.call("FolderUpdate", '<FolderUpdate xmlns="FolderHierarchy:">'
                         f"<SyncKey>{made.text_of('FolderHierarchy:SyncKey')}</SyncKey>"
                         f"<ServerId>{team}</ServerId><ParentId>0</ParentId>"
                         "<DisplayName>Team events</DisplayName></FolderUpdate>")
    assert up is not None and up.text_of("FolderHierarchy:Status") == "1"
    thread.join(10)
    assert answer and answer[0] is not None, "bob's Ping was not told"
    assert answer[0].text_of("Ping:Status") == "7"
    r = world.bob.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:">'
                       f"<SyncKey>{bkey}</SyncKey></FolderSync>")
    assert r is not None
    assert [(u.text_of("FolderHierarchy:ServerId"), u.text_of("FolderHierarchy:DisplayName"))
            for u in r.iter("FolderHierarchy:Update")] == [(team, "Team events \u2014 anna")]


def test_unshare_removes_the_folder_from_the_phone(world: World) -> None:
    r = world.bob.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0'
                       "</SyncKey></FolderSync>")
    assert r is not None
    key = r.text_of("FolderHierarchy:SyncKey")
    # bob's phone holds a Ping (on the calendar anna still shares): the unshare, made by
    # another process, answers it with Status 7, folder sync needed (MS-ASCMD 2.2.1.13);
    # the phone is up to date on that calendar (a change of another test: Status 2)
    _start(world.bob, world, world.cal)
    ping_dev = RawDevice(world.server.url, "bob", PASSWORD, "BobRaw")
    ping_dev.policy_key = world.bob.policy_key
    answer: list[Any] = []
    thread = _ping(ping_dev, world.cal, "Calendar", answer)
    time.sleep(1.0)
    assert not answer
    out = world.server.admin("share", "remove", "anna", world.contacts, "--to", "bob").stdout
    assert "no longer shared" in out
    thread.join(10)
    assert answer and answer[0] is not None, "bob's Ping was not told"
    assert answer[0].text_of("Ping:Status") == "7"
    r = world.bob.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:">'
                       f"<SyncKey>{key}</SyncKey></FolderSync>")
    assert r is not None and r.text_of("FolderHierarchy:Status") == "1"
    assert [d.text_of("FolderHierarchy:ServerId") for d in r.iter("FolderHierarchy:Delete")
            ] == [world.contacts]
    assert r.iter("FolderHierarchy:Add") == []
    # its items went with it: a Sync of it is refused (MS-ASCMD 2.2.3.177.17 Status 12)
    if (world.bob.device_id, world.contacts) in world.keys:
        coll = _coll(world.bob.sync(world.contacts,
                                    world.keys[(world.bob.device_id, world.contacts)]))
        assert coll.text_of("AirSync:Status") == "12"
    # anna keeps it all
    assert world.contacts in _folder_adds(world.anna)
    audit = world.server.admin("audit", "anna").stdout
    assert "unshare" in audit and "share" in audit
