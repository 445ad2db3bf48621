"""Acceptance: a colleague's shared calendar with ``twistd easync --backend crm``
against the fake CRM in its own process, raw WBXML phones (issue #14 point 1, CRM
side).  mario shares his Calendar (his CRM Events) with anna through ``easync-admin
share``, first read-only, then read-write, then not at all.

Protocol facts relied on:
* MS-ASCMD 2.2.3.186.3: a user-created calendar is FolderSync Type 13;
* MS-ASCMD 2.2.1.13: a held Ping answers Status 2 naming the changed folder;
* MS-ASCMD 2.2.3.177.17: a Change Status 7 tells the client the server's object won
  (a read-only folder); the server's version comes in the same response's Commands.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import needs
import pytest
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_crm_shared_e2e import HeldPing, hierarchy
from test_e2e_crm import FakeCrmProcess

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "crm-share-Pa55"
POLL = 0.3
SHARED = "Calendar \u2014 mario"


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCrmProcess]:
    proc = FakeCrmProcess(tmp_path_factory.mktemp("crm"), flavour="vtiger")
    for name in ("mario", "anna"):
        proc("add_user", name=name, email=f"{name}@example.org")
    for owner, subject in (("mario", "Standup"), ("anna", "AnnaOwn")):
        proc("add_record", module="Events", owner=owner, fields={
            "subject": subject, "date_start": "2030-01-07", "time_start": "09:00",
            "due_date": "2030-01-07", "time_end": "10:00", "duration_hours": "1",
            "eventstatus": "Planned", "activitytype": "Meeting"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, crm: FakeCrmProcess
           ) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("easync-crm-shares")
    (work / "crm.key").write_text("adminKEY123\n")
    srv = RunningServer(work, ["--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                               "--crm-access-key-file", str(work / "crm.key"),
                               "--crm-poll-interval", str(POLL), "--crm-timeout", "3"])
    srv.start()
    for name in ("mario", "anna"):
        srv.add_user(name, PASSWORD, email=f"{name}@example.org")
    yield srv
    srv.stop()


def phone(server: RunningServer, user: str, dev: str) -> RawDevice:
    d = RawDevice(server.url, user, PASSWORD, dev)
    d.provision()
    return d


def second_connection(server: RunningServer, d: RawDevice) -> RawDevice:
    """The same phone on another connection (its held Ping)."""
    other = RawDevice(server.url, d.user, PASSWORD, d.device_id)
    other.policy_key = d.policy_key
    return other


def subjects(items: dict[str, Node]) -> dict[str, str]:
    return {sid: n.text_of("Calendar:Subject") or "" for sid, n in items.items()}


def change_xml(sid: str, subject: str) -> str:
    return (f"<Commands><Change><ServerId>{sid}</ServerId><ApplicationData>"
            f"<C:Subject>{subject}</C:Subject><C:StartTime>20300107T090000Z</C:StartTime>"
            "<C:EndTime>20300107T100000Z</C:EndTime></ApplicationData></Change></Commands>")


def collection(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1", r
    return coll


def marios_events(crm: FakeCrmProcess) -> list[tuple[str, str]]:
    return sorted((r["subject"], r["owner"]) for r in crm("live", module="Events",
                                                          owner="mario"))


def test_marios_calendar_on_annas_phone(server: RunningServer, crm: FakeCrmProcess
                                        ) -> None:
    m = phone(server, "mario", "marioPhone")
    cal = hierarchy(m)["Calendar"][0]
    a = phone(server, "anna", "annaPhone")
    assert SHARED not in hierarchy(a)

    # shared read-only by the administrator: the Ping anna's phone holds answers
    # "folder hierarchy changed" (MS-ASCMD 2.2.1.13, Ping Status 7) and a FolderSync
    # lists it, a user-created calendar at the top level (MS-ASCMD 2.2.3.186.3)
    own = hierarchy(a)["Calendar"][0]
    a.pull(own, a.initial(own))
    ping = HeldPing(second_connection(server, a), own, "Calendar")
    time.sleep(1.0)
    server.admin("share", "add", "mario", cal, "--to", "anna")
    assert ping.join().text_of("Ping:Status") == "7"
    tree = hierarchy(a)
    assert tree[SHARED] == (cal, "13")
    assert tree["Calendar"][0] != cal
    ka, items, _, _ = a.pull(cal, a.initial(cal))
    assert list(subjects(items).values()) == ["Standup"]
    (sid,) = items
    (ev,) = [r for r in crm("live", module="Events", owner="mario")]

    # a CRM-side change of mario's event wakes anna's held Ping (MS-ASCMD 2.2.1.13)
    ping = HeldPing(second_connection(server, a), cal, "Calendar")
    time.sleep(1.0)                                 # held and listening
    crm("modify_record", id=ev["id"], fields={"subject": "Standup (CRM)"})
    changed_at = time.monotonic()
    r = ping.join()
    assert r.text_of("Ping:Status") == "2"
    assert [f.text for f in r.iter("Ping:Folder")] == [cal]
    assert ping.done_at - changed_at < POLL + 2.0
    ka, items, deleted, _ = a.pull(cal, ka)
    assert subjects(items) == {sid: "Standup (CRM)"} and deleted == []

    # read-only: anna's edit gets Status 7 and the server's version (MS-ASCMD
    # 2.2.3.177.17); nothing reaches the CRM
    before = crm("live", module="Events")
    coll = collection(a.sync(cal, ka, change_xml(sid, "Edited by anna")))
    ka = coll.text_of("AirSync:SyncKey") or ka
    (resp,) = coll.find("AirSync:Responses").children
    assert (resp.tag, resp.text_of("AirSync:ServerId"), resp.text_of("AirSync:Status")) == \
        ("AirSync:Change", sid, "7")
    (cmd,) = coll.find("AirSync:Commands").children
    assert cmd.text_of("AirSync:ServerId") == sid
    assert cmd.find("AirSync:ApplicationData").text_of("Calendar:Subject") == \
        "Standup (CRM)"
    assert crm("live", module="Events") == before

    # read-write: anna's edit changes mario's CRM record (still his) and wakes the
    # Ping mario's phone holds on his calendar
    km, _, _, _ = m.pull(cal, m.initial(cal))
    server.admin("share", "add", "mario", cal, "--to", "anna", "--write")
    ping = HeldPing(second_connection(server, m), cal, "Calendar")
    time.sleep(1.0)
    coll = collection(a.sync(cal, ka, change_xml(sid, "Edited by anna")))
    ka = coll.text_of("AirSync:SyncKey") or ka
    (resp,) = coll.find("AirSync:Responses").children if coll.find("AirSync:Responses") \
        else [None]
    # (a successful Change gets no Response, MS-ASCMD 2.2.3.177.17; a Status 1 is
    # as good)
    assert resp is None or resp.text_of("AirSync:Status") == "1"
    assert marios_events(crm) == [("Edited by anna", "mario")]
    r = ping.join()
    assert r.text_of("Ping:Status") == "2"
    assert [f.text for f in r.iter("Ping:Folder")] == [cal]
    km, mitems, _, _ = m.pull(cal, km)
    assert subjects(mitems) == {sid: "Edited by anna"}

    # unshared: the folder leaves anna's hierarchy
    server.admin("share", "remove", "mario", cal, "--to", "anna")
    tree = hierarchy(a)
    assert SHARED not in tree and cal not in {v[0] for v in tree.values()}
    assert marios_events(crm) == [("Edited by anna", "mario")]
