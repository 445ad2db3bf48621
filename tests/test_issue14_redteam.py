"""Red-team of the issue-14 features through ``twistd easync`` (shared folders, kept
deletions, device access, policy, Find): the hostile and the careless user.

The tests share one server and may run in any order.

Protocol facts relied on:
* MS-ASHTTP 3.1.5.2.1 / RFC 7617: a request whose credentials are not accepted gets
  HTTP 401 (a Basic user name never holds a ":").
* MS-ASCMD 2.2.1.2 (Find, 16.1): a MailBoxSearchCriterion's Query names the folder
  to search in airsync:CollectionId; a folder the user holds is searched, one it
  does not gets Status 3 (2.2.3.177.2, FolderSync required).
* MS-ASCMD 2.2.3.42.2: a Sync Delete removes the item; a successful one has no
  Responses entry (2.2.3.24.1: a Delete response only on failure).
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import needs
import pytest

needs_libwbxml = needs.mark(needs.libwbxml())

from easync_server import RunningServer, wait_for
from findwire import decode as wire_decode
from findwire import encode as wire_encode
from findwire import mailbox_find
from rawclient import Node, RawDevice

pytestmark = needs_libwbxml

PASSWORD = "red team secret 7"


class World:
    server: RunningServer
    book: str


def _sql(srv: RunningServer, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    """One statement on the server's database (SQLite or PostgreSQL), committed; its
    rows (``?`` placeholders)."""
    if srv.db.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(srv.db, autocommit=True) as conn:
            cur = conn.execute(query.replace("%", "%%").replace("?", "%s"), params)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    db = sqlite3.connect(srv.workdir / "easync.sqlite")
    try:
        rows = db.execute(query, params).fetchall()
        db.commit()
        return rows
    finally:
        db.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``twistd easync`` on SQLite (test_issue14_redteam_postgresql: on PostgreSQL)."""
    srv = RunningServer(tmp_path_factory.mktemp("redteam")).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def world(server: RunningServer) -> World:
    w = World()
    srv = server
    w.server = srv
    for name in ("anna", "bob", "eve"):
        srv.add_user(name, PASSWORD, email=f"{name}@example.org")
    out = srv.admin("folder", "create-shared", "Company address book").stdout
    m = re.search(r"folder (\d+) ", out)
    assert m, out
    w.book = m.group(1)
    return w


def _eas_status(srv: RunningServer, user: str, password: str, device: str) -> int:
    dev = RawDevice(srv.url, user, password, device)
    body = dev.post("FolderSync", None, headers={"Content-Type": "application/vnd.ms-sync.wbxml"})
    return body.status_code


def test_system_user_gets_no_login_switch(world: World) -> None:
    """``~company`` owns the company address book, shared read-only with everyone: a
    password and ActiveSync on it would let whoever holds that password write the book
    everyone reads.  easync-admin refuses both (and a new user named ``~...``); the
    database is unchanged (it has no password, ActiveSync stays off)."""
    srv = world.server
    res = srv.admin("user", "passwd", "~company", "--password-stdin", stdin=PASSWORD + "\n",
                    check=False)
    assert res.returncode != 0 and "system user" in res.stderr, res
    res = srv.admin("user", "activesync", "~company", "on", check=False)
    assert res.returncode != 0 and "system user" in res.stderr, res
    res = srv.admin("user", "as-password", "~company", "--generate", check=False)
    assert res.returncode != 0 and "system user" in res.stderr, res
    res = srv.admin("user", "add", "~boss", "--password-stdin", "--activesync",
                    stdin=PASSWORD + "\n", check=False)
    assert res.returncode != 0, res
    rows = _sql(srv, "SELECT name, password_hash, activesync FROM users"
                     " WHERE name LIKE '~%'")
    assert [(n, h, bool(a)) for n, h, a in rows] == [("~company", None, False)]
    listed = srv.admin("user", "list").stdout
    assert "~boss" not in listed


def test_system_user_with_a_password_in_the_database_cannot_sync(world: World) -> None:
    """A database where ``~company`` got a password and ActiveSync anyway (an older
    release let the admin set them): EAS answers 401 (MS-ASHTTP 3.1.5.2.1), the
    phone gets nothing of the book; a real user with the same password hash syncs."""
    srv = world.server
    [(hashed,)] = _sql(srv, "SELECT password_hash FROM users WHERE name = 'eve'")
    _sql(srv, "UPDATE users SET password_hash = ?, activesync = ? WHERE name = '~company'",
         (hashed, 1))
    try:
        assert _eas_status(srv, "eve", PASSWORD, "EveCheck") != 401
        assert _eas_status(srv, "~company", PASSWORD, "CompanyPhone") == 401
    finally:
        _sql(srv, "UPDATE users SET password_hash = NULL, activesync = ?"
             " WHERE name = '~company'", (0,))
    assert "~company CompanyPhone" not in srv.log_text() or \
        re.search(r"~company CompanyPhone \w+ http=401", srv.log_text())


def _find(d: RawDevice, request: Node) -> Node:
    r = d.post("Find", wire_encode(request))
    assert r.status_code == 200, r.status_code
    assert b"Traceback" not in r.content
    return wire_decode(r.content)


def _found(answer: Node) -> list[tuple[str | None, str | None]]:
    assert answer.text_of("Find:Status") == "1", answer
    resp = answer.find("Find:Response")
    assert resp is not None and resp.text_of("Find:Status") == "1", answer
    return [(r.text_of("Find:Properties/GAL:DisplayName"), r.text_of("AirSync:CollectionId"))
            for r in resp.findall("Find:Result")]


def test_find_in_a_shared_contacts_folder(world: World) -> None:
    """Find with the CollectionId of a Contacts folder shared with the user (a
    colleague's, the company address book) searches that folder: its contacts are
    the owner's rows.  A user the folder is not shared with gets Status 3."""
    srv = world.server
    anna = RawDevice(srv.url, "anna", PASSWORD, "AnnaFind", version="16.1")
    anna.provision()
    contacts = anna.folders()["Contacts"]
    key = anna.initial(contacts)
    r = anna.sync(contacts, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>f1"
                  "</ClientId><ApplicationData><K:FirstName>Zelda</K:FirstName>"
                  "<K:LastName>Quartz</K:LastName></ApplicationData></Add></Commands>")
    assert r is not None and r.find("AirSync:Collections/AirSync:Collection/AirSync:Responses"
                                    "/AirSync:Add/AirSync:ServerId") is not None, r
    srv.admin("share", "add", "anna", contacts, "--to", "bob")
    vcf = srv.workdir / "book.vcf"
    vcf.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nN:Quasar;Reception;;;\r\n"
                   "FN:Reception Quasar\r\nTEL;TYPE=WORK:+39 02 100\r\nEND:VCARD\r\n", "utf-8")
    srv.admin("import", "~company", str(vcf), "--folder", world.book)
    bob = RawDevice(srv.url, "bob", PASSWORD, "BobFind", version="16.1")
    bob.provision()
    held = bob.folders()
    assert contacts in held.values() and world.book in held.values()
    # anna finds her own; bob finds it in the folder she shares with him
    assert _found(_find(anna, mailbox_find("quar", cls=None, collection=contacts))) == [
        ("Zelda Quartz", contacts)]
    assert _found(_find(bob, mailbox_find("quar", cls=None, collection=contacts))) == [
        ("Zelda Quartz", contacts)]
    assert _found(_find(bob, mailbox_find("quas", cls=None, collection=world.book))) == [
        ("Reception Quasar", world.book)]
    # eve holds the company book, not anna's contacts
    eve = RawDevice(srv.url, "eve", PASSWORD, "EveFind", version="16.1")
    eve.provision()
    assert _found(_find(eve, mailbox_find("quas", cls=None, collection=world.book))) == [
        ("Reception Quasar", world.book)]
    answer = _find(eve, mailbox_find("quar", cls=None, collection=contacts))
    assert answer.text_of("Find:Status") == "3" and answer.find("Find:Response") is None


def _coll(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None, r
    return coll


def test_mass_delete_in_a_colleagues_folder_points_at_the_owner(world: World) -> None:
    """bob's phone deletes 10 of the 12 contacts of eve's Contacts, shared with him
    read-write: the items are kept as eve's (her "Recently deleted"), so the alarm's
    log line tells the admin to look there (``deleted list eve``, not bob, who has
    nothing kept) and its audit row is in eve's audit log too."""
    srv = world.server
    eve = RawDevice(srv.url, "eve", PASSWORD, "EveMass")
    eve.provision()
    contacts = eve.folders()["Contacts"]
    adds = "".join(f"<Add><ClientId>m{i}</ClientId><ApplicationData><K:FirstName>Mass{i}"
                   "</K:FirstName></ApplicationData></Add>" for i in range(12))
    key = eve.initial(contacts)
    _coll(eve.sync(contacts, key, f"<GetChanges>0</GetChanges><Commands>{adds}</Commands>"))
    srv.admin("share", "add", "eve", contacts, "--to", "bob", "--write")
    bob = RawDevice(srv.url, "bob", PASSWORD, "BobMass")
    bob.provision()
    assert contacts in bob.folders().values()
    key, items, _deleted, _last = bob.pull(contacts, bob.initial(contacts))
    mine = [sid for sid, data in items.items() if (data.text_of("Contacts:FirstName") or ""
                                                   ).startswith("Mass")]
    assert len(mine) == 12
    dels = "".join(f"<Delete><ServerId>{sid}</ServerId></Delete>" for sid in mine[:10])
    coll = _coll(bob.sync(contacts, key, f"<GetChanges>0</GetChanges><Commands>{dels}"
                          "</Commands>"))
    assert coll.text_of("AirSync:Status") == "1" and coll.find("AirSync:Responses") is None
    kept = srv.admin("deleted", "list", "eve").stdout
    assert kept.count("BobMass") == 10, kept
    assert "BobMass" not in srv.admin("deleted", "list", "bob").stdout
    line = next(ln for ln in srv.log_text().splitlines() if "mass delete: device BobMass" in ln)
    assert "deleted list eve" in line and "deleted list bob" not in line, line
    assert "mass-delete" in srv.admin("audit", "eve").stdout


def test_share_with_oneself_nobody_or_a_system_user_is_refused(world: World) -> None:
    """``share add`` to the owner, to a user that does not exist, to ``~company`` or
    ``crm:company``: refused with a message, no share row written, no audit row."""
    srv = world.server
    anna = RawDevice(srv.url, "anna", PASSWORD, "AnnaShare")
    anna.provision()
    tasks = anna.folders()["Tasks"]
    for to in ("anna", "nobody", "~company", "crm:company", "~COMPANY"):
        res = srv.admin("share", "add", "anna", tasks, "--to", to, check=False)
        assert res.returncode != 0 and res.stderr.strip(), (to, res)
    assert _sql(srv, "SELECT u.name FROM folder_shares s JOIN users u ON u.id = s.grantee_id"
                     " WHERE s.folder_id = ? AND u.name IN ('anna', '~company', 'crm:company')",
                (int(tasks),)) == []
    audit = srv.admin("audit", "anna").stdout
    for to in ("anna", "nobody", "~company", "crm:company"):
        assert f"(Tasks) to {to}," not in audit, audit


def test_device_list_escapes_what_a_device_sends(world: World) -> None:
    """A device whose User-Agent carries terminal escapes (ESC, BEL): ``device list``
    (what the admin reads to decide on a quarantined device) shows them escaped,
    never raw, so the device cannot drive the admin's terminal; the device still
    provisions (MS-ASPROV 3.2.5.1)."""
    srv = world.server
    evil = RawDevice(srv.url, "eve", PASSWORD, "EvilUA",
                     user_agent="Evil\x1b]0;owned\x07\x1b[2J/1.0")
    evil.provision()
    for args in (("device", "list", "eve"), ("device", "list"),
                 ("device", "list", "--quarantined")):
        out = srv.admin(*args).stdout
        assert "\x1b" not in out and "\x07" not in out, (args, out)
    listed = srv.admin("device", "list", "eve").stdout
    assert "Evil\\x1b]0;owned\\x07\\x1b[2J/1.0" in listed, listed


def _account_api(srv: RunningServer, user: str) -> tuple[Any, str, str]:
    """A logged-in JSON API session of the running server's account page: (session,
    base URL, CSRF token)."""
    import requests

    web = requests.Session()
    base = srv.url.replace("/Microsoft-Server-ActiveSync", "/account/api")
    csrf = web.get(f"{base}/session", timeout=30, verify=False).json()["csrf_token"]
    r = web.post(f"{base}/login", json={"username": user, "password": PASSWORD},
                 headers={"X-CSRF-Token": csrf}, timeout=30, verify=False)
    assert r.status_code == 200 and r.json()["logged_in"], r.text
    csrf = web.get(f"{base}/session", timeout=30, verify=False).json()["csrf_token"]
    return web, base, csrf


def test_restore_on_the_account_page_wakes_the_colleague(world: World) -> None:
    """bob's phone deletes a contact of the folder anna shares with him read-write;
    anna restores it on her account page ("Recently deleted") while bob's phone holds
    a Ping on that folder: the Ping answers Status 2 naming the folder (MS-ASCMD
    2.2.1.13, 2.2.3.162.2) at once, and bob's next Sync brings the contact back as an
    Add (MS-ASCMD 2.2.3.7.2) — as anna's own devices get it."""
    srv = world.server
    anna = RawDevice(srv.url, "anna", PASSWORD, "AnnaRestore")
    anna.provision()
    folders = anna.folders()
    cal = folders["Calendar"]
    key = anna.initial(cal)
    coll = _coll(anna.sync(cal, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>r1"
                           "</ClientId><ApplicationData><C:Subject>Restore me</C:Subject>"
                           "<C:StartTime>20300105T120000Z</C:StartTime><C:EndTime>"
                           "20300105T130000Z</C:EndTime></ApplicationData></Add></Commands>"))
    sid = coll.text_of("AirSync:Responses/AirSync:Add/AirSync:ServerId")
    assert sid
    srv.admin("share", "add", "anna", cal, "--to", "bob", "--write")
    bob = RawDevice(srv.url, "bob", PASSWORD, "BobRestore")
    bob.provision()
    assert cal in bob.folders().values()
    key, items, _deleted, _last = bob.pull(cal, bob.initial(cal))
    assert sid in items
    coll = _coll(bob.sync(cal, key, f"<GetChanges>0</GetChanges><Commands><Delete><ServerId>"
                               f"{sid}</ServerId></Delete></Commands>"))
    key = coll.text_of("AirSync:SyncKey") or key
    web, base, csrf = _account_api(srv, "anna")
    listed = web.get(f"{base}/deleted", timeout=30, verify=False).json()["deleted"]
    [kept] = [k for k in listed if k["summary"] == "Restore me"]
    assert kept["device_id"] == "BobRestore"

    out: dict[str, Any] = {}

    def hold() -> None:
        out["ping"] = bob.call("Ping", '<Ping xmlns="Ping:"><HeartbeatInterval>300'
                               f"</HeartbeatInterval><Folders><Folder><Id>{cal}</Id>"
                               "<Class>Calendar</Class></Folder></Folders></Ping>")

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    wait_for(lambda: "Ping on" in srv.admin("device", "list", "bob").stdout, timeout=15)
    t0 = time.monotonic()
    r = web.post(f"{base}/deleted/restore", json={"ids": [kept["id"]]},
                 headers={"X-CSRF-Token": csrf}, timeout=30, verify=False)
    assert r.status_code == 200 and len(r.json()["restored"]) == 1, r.text
    th.join(20)
    assert not th.is_alive(), "bob's Ping was not answered"
    took = time.monotonic() - t0
    ping = out["ping"]
    assert ping is not None and ping.text_of("Ping:Status") == "2", ping
    assert [f.text for f in ping.iter("Ping:Folder")] == [cal]
    assert took < 3, took
    coll = _coll(bob.sync(cal, key))
    adds = [c for c in (coll.find("AirSync:Commands").children
                        if coll.find("AirSync:Commands") else []) if c.tag == "AirSync:Add"]
    assert [a.text_of("AirSync:ApplicationData/Calendar:Subject") for a in adds] == [
        "Restore me"]


def test_rule_for_everyone_keeps_data_from_a_held_sync(world: World) -> None:
    """bob's device holds a Sync (HeartbeatInterval, MS-ASCMD 2.2.3.83.2) on eve's
    Calendar shared with him; the admin adds a rule for EVERYONE blocking its device
    type (such a rule wakes no held request, README "Device access"); eve then
    writes an event: the held Sync, woken by it, answers Status 129 (MS-ASCMD 2.2.2,
    the device is blocked) without the event — before, the blocked device got it."""
    srv = world.server
    eve = RawDevice(srv.url, "eve", PASSWORD, "EveRule")
    eve.provision()
    cal = eve.folders()["Calendar"]
    ekey = eve.initial(cal)
    srv.admin("share", "add", "eve", cal, "--to", "bob")
    bob = RawDevice(srv.url, "bob", PASSWORD, "BobRulePad", device_type="RulePad")
    bob.provision()
    assert cal in bob.folders().values()
    key, _items, _deleted, _last = bob.pull(cal, bob.initial(cal))
    out: dict[str, Any] = {}

    def hold() -> None:
        out["sync"] = bob.call(
            "Sync", f'<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>{key}'
            f"</SyncKey><CollectionId>{cal}</CollectionId></Collection></Collections>"
            "<HeartbeatInterval>600</HeartbeatInterval></Sync>")

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    wait_for(lambda: "BobRulePad" in "\n".join(
        ln for ln in srv.admin("device", "list", "bob").stdout.splitlines() if " on " in ln),
        timeout=15)
    srv.admin("rule", "add", "--everyone", "--device-type", "RulePad", "block")
    try:
        t0 = time.monotonic()
        _coll(eve.sync(cal, ekey, "<GetChanges>0</GetChanges><Commands><Add><ClientId>x1"
                       "</ClientId><ApplicationData><C:Subject>After the block</C:Subject>"
                       "<C:StartTime>20300105T120000Z</C:StartTime><C:EndTime>"
                       "20300105T130000Z</C:EndTime></ApplicationData></Add></Commands>"))
        th.join(20)
        assert not th.is_alive() and time.monotonic() - t0 < 20
        sync = out["sync"]
        assert sync is not None and sync.text_of("AirSync:Status") == "129", sync
        assert "After the block" not in str(sync)
    finally:
        rules = srv.admin("rule", "list").stdout
        m = re.search(r"^(\d+)\s+everyone\s+device-type\s+RulePad", rules, re.MULTILINE)
        assert m, rules
        srv.admin("rule", "remove", m.group(1))


def test_a_folder_name_cannot_split_the_audit_log_line(world: World) -> None:
    """anna's phone creates a Contacts folder (FolderCreate, MS-ASCMD 2.2.1.3) whose
    name holds a line break and a forged log line, and shares it on the account page:
    the server's audit log line keeps the name on one line, the break escaped."""
    srv = world.server
    anna = RawDevice(srv.url, "anna", PASSWORD, "AnnaAudit")
    anna.provision()
    r = anna.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
                  "</FolderSync>")
    assert r is not None
    key = r.text_of("FolderHierarchy:SyncKey")
    r = anna.call("FolderCreate", f'<FolderCreate xmlns="FolderHierarchy:"><SyncKey>{key}'
                  "</SyncKey><ParentId>0</ParentId><DisplayName>Evil&#10;FORGEDLINE"
                  " [easync.request#info] x</DisplayName><Type>14</Type></FolderCreate>")
    assert r is not None and r.text_of("FolderHierarchy:Status") == "1", r
    fid = r.text_of("FolderHierarchy:ServerId")
    web, base, csrf = _account_api(srv, "anna")
    r = web.post(f"{base}/shares/add", json={"folder_id": fid, "to": "bob"},
                 headers={"X-CSRF-Token": csrf}, timeout=30, verify=False)
    assert r.status_code == 200, r.text
    lines = [ln for ln in srv.log_text().splitlines() if "FORGEDLINE" in ln]
    assert len(lines) == 1 and "audit:" in lines[0] and "Evil\\nFORGEDLINE" in lines[0], lines


def test_restore_with_easync_admin_wakes_the_colleague(world: World) -> None:
    """As the account page's restore: ``easync-admin deleted restore`` (another
    process) of what bob's phone deleted in anna's read-write Contacts wakes bob's
    Ping held on that folder (MS-ASCMD 2.2.1.13: Status 2 naming it) within seconds —
    on PostgreSQL through a NOTIFY to every holder of the folder, not to anna's
    devices only."""
    srv = world.server
    anna = RawDevice(srv.url, "anna", PASSWORD, "AnnaCli")
    anna.provision()
    tasks = anna.folders()["Tasks"]
    key = anna.initial(tasks)
    coll = _coll(anna.sync(tasks, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>t1"
                           "</ClientId><ApplicationData><T:Subject>Bring it back</T:Subject>"
                           "</ApplicationData></Add></Commands>"))
    sid = coll.text_of("AirSync:Responses/AirSync:Add/AirSync:ServerId")
    assert sid
    srv.admin("share", "add", "anna", tasks, "--to", "bob", "--write")
    bob = RawDevice(srv.url, "bob", PASSWORD, "BobCli")
    bob.provision()
    assert tasks in bob.folders().values()
    key, items, _deleted, _last = bob.pull(tasks, bob.initial(tasks))
    assert sid in items
    _coll(bob.sync(tasks, key, f"<GetChanges>0</GetChanges><Commands><Delete><ServerId>{sid}"
                               "</ServerId></Delete></Commands>"))
    listed = srv.admin("deleted", "list", "anna", "--device", "BobCli").stdout
    m = re.search(r"^(\d+)\s.*Bring it back", listed, re.MULTILINE)
    assert m, listed
    out: dict[str, Any] = {}

    def hold() -> None:
        out["ping"] = bob.call("Ping", '<Ping xmlns="Ping:"><HeartbeatInterval>300'
                               f"</HeartbeatInterval><Folders><Folder><Id>{tasks}</Id>"
                               "<Class>Tasks</Class></Folder></Folders></Ping>")

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    wait_for(lambda: "BobCli" in "\n".join(
        ln for ln in srv.admin("device", "list", "bob").stdout.splitlines() if " on " in ln),
        timeout=15)
    t0 = time.monotonic()
    srv.admin("deleted", "restore", "anna", m.group(1))
    th.join(20)
    assert not th.is_alive(), "bob's Ping was not answered"
    assert time.monotonic() - t0 < 10
    ping = out["ping"]
    assert ping is not None and ping.text_of("Ping:Status") == "2", ping
    assert [f.text for f in ping.iter("Ping:Folder")] == [tasks]


def test_wipe_ordered_while_the_device_holds_a_ping(world: World) -> None:
    """A lost 16.1 phone holding a Ping on a colleague's shared calendar: the admin
    orders a wipe (account-only, MS-ASPROV 2.2.2.1) — the held Ping is answered at
    once with Status 140 (MS-ASCMD 2.2.2 RemoteWipeRequested: go to Provision), not
    after its heartbeat, and the Provision that follows carries the
    AccountOnlyRemoteWipe (MS-ASPROV 3.2.5.1.2)."""
    srv = world.server
    eve = RawDevice(srv.url, "eve", PASSWORD, "EveLost")
    eve.provision()
    cal = eve.folders()["Calendar"]
    srv.admin("share", "add", "eve", cal, "--to", "anna")
    lost = RawDevice(srv.url, "anna", PASSWORD, "AnnaLost", version="16.1")
    lost.provision()
    assert cal in lost.folders().values()
    lost.pull(cal, lost.initial(cal))       # (eve's calendar may hold events already)
    out: dict[str, Any] = {}

    def hold() -> None:
        out["ping"] = lost.call("Ping", '<Ping xmlns="Ping:"><HeartbeatInterval>600'
                                f"</HeartbeatInterval><Folders><Folder><Id>{cal}</Id>"
                                "<Class>Calendar</Class></Folder></Folders></Ping>")

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    wait_for(lambda: "AnnaLost" in "\n".join(
        ln for ln in srv.admin("device", "list", "anna").stdout.splitlines() if " on " in ln),
        timeout=15)
    t0 = time.monotonic()
    srv.admin("device", "wipe", "anna", "AnnaLost", "--account-only")
    th.join(20)
    assert not th.is_alive(), "the held Ping was not answered"
    assert time.monotonic() - t0 < 10
    ping = out["ping"]
    assert ping is not None and ping.text_of("Ping:Status") == "140", ping
    # (libwbxml has no token for the 16.1 element: easync's codec reads the answer)
    from rawclient import xml_to_wbxml

    from easync.wbxml import decode

    r = lost.post("Provision", xml_to_wbxml(
        '<Provision xmlns="Provision:"><Policies><Policy><PolicyType>'
        "MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>"))
    assert r.status_code == 200
    body = decode(r.content)
    assert body.find("Provision:AccountOnlyRemoteWipe") is not None
    assert body.find("Provision:RemoteWipe") is None
