"""Red team 2: one device's requests racing each other through ``twistd easync``
(SQLite here; test_redteam2_state_postgresql: the same on PostgreSQL).

* MS-ASCMD 2.2.3.166.4 / 3.1.5.3: a client that did not get the answer to a Sync
  sends the same SyncKey again; the server answers it as before and applies nothing
  twice (the same ServerId for a ClientId).  A phone on a bad network resends while
  its first request is still being answered — the two arrive together.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import needs
import pytest
from easync_server import RunningServer
from rawclient import Node, RawDevice

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "red team two 6"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("redteam2-state")).start()
    try:
        yield srv
    finally:
        srv.stop()


def _coll(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None, r
    return coll


def test_the_same_sync_sent_eight_times_at_once_adds_one_contact(
        server: RunningServer) -> None:
    """One device sends the same Sync (its current SyncKey, one Add with ClientId
    "same1") on eight connections at once: one contact is made, and every answer
    gives the same ServerId for the ClientId under the same new SyncKey (MS-ASCMD
    3.1.5.3).  Before, each request read the same state and applied the Add: up to
    eight copies of the contact, each answer another ServerId."""
    server.add_user("rita", PASSWORD, email="rita@example.org")
    phone = RawDevice(server.url, "rita", PASSWORD, "RitaRace")
    phone.provision()
    contacts = phone.folders()["Contacts"]
    key = phone.initial(contacts)
    answers: list[Node | BaseException] = []
    start = threading.Barrier(8)

    def send() -> None:
        d = RawDevice(server.url, "rita", PASSWORD, "RitaRace")
        d.policy_key = phone.policy_key
        start.wait(30)
        try:
            answers.append(_coll(d.sync(
                contacts, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>same1"
                "</ClientId><ApplicationData><K:FirstName>Racer</K:FirstName>"
                "</ApplicationData></Add></Commands>")))
        except BaseException as e:  # noqa: BLE001 - reported below
            answers.append(e)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert len(answers) == 8 and all(isinstance(a, Node) for a in answers), answers
    got = {(a.text_of("AirSync:Status"), a.text_of("AirSync:SyncKey"),  # type: ignore[union-attr]
            a.text_of("AirSync:Responses/AirSync:Add/AirSync:ServerId"))  # type: ignore[union-attr]
           for a in answers}
    assert len(got) == 1, got
    [(status, _new_key, sid)] = got
    assert status == "1" and sid
    other = RawDevice(server.url, "rita", PASSWORD, "RitaCheck")
    other.provision()
    _key, items, _deleted, _last = other.pull(contacts, other.initial(contacts))
    assert [(s, v.text_of("Contacts:FirstName")) for s, v in items.items()] == [
        (sid, "Racer")]
