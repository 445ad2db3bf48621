"""Acceptance (issue 8, point 6): a phone that resyncs and re-adds its events gets the
existing ones back, through ``twistd easync`` with raw WBXML (libwbxml), on the SQL
store and on the CRM store (the fake CRM in its own process).

MS-ASCAL 2.2.2.13: the server uses ClientUid (16.x) to find that an event a client
adds already exists; before 16.0 the client's UID plays that part.  The answer is
Status 1 with the existing ServerId (at 16.x with the UID in ApplicationData), and
nothing is written; the phone must end with exactly one copy of each event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import needs
import pytest
from backendsites import started
from easync_server import RunningServer
from rawclient import Node, RawDevice
from test_e2e_calendar_raw import responses

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "re-add-Pa55"
VERSIONS = ("12.1", "14.1", "16.1")
USERS = {v: "ru" + v.replace(".", "") for v in VERSIONS}


@pytest.fixture(scope="module", params=["sql", "crm"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[RunningServer, Any]]:
    with started(tmp_path_factory, request.param, "readd", USERS.values(), PASSWORD) as site:
        yield site


def device(srv: RunningServer, user: str, dev: str, version: str) -> RawDevice:
    d = RawDevice(srv.url, user, PASSWORD, dev, version=version)
    d.provision()
    return d


def event_xml(subject: str, uid: str, version: str, day: int) -> str:
    ident = (f"<C:ClientUid>{uid}</C:ClientUid>" if version.startswith("16")
             else f"<C:UID>{uid}</C:UID>")
    return (f"<C:Subject>{subject}</C:Subject><C:AllDayEvent>0</C:AllDayEvent>"
            f"<C:StartTime>202711{day:02d}T090000Z</C:StartTime>"
            f"<C:EndTime>202711{day:02d}T100000Z</C:EndTime><C:BusyStatus>2</C:BusyStatus>"
            f"{ident}")


def adds(*pairs: tuple[str, str], get_changes: bool | None = None) -> str:
    gc = "" if get_changes is None else f"<GetChanges>{int(get_changes)}</GetChanges>"
    return gc + "<Commands>" + "".join(
        f"<Add><ClientId>{c}</ClientId><ApplicationData>{a}</ApplicationData></Add>"
        for c, a in pairs) + "</Commands>"


def coll_of(r: Node) -> Node:
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1", r
    return coll


class Phone:
    """ServerId -> subject of what the phone holds after applying each answer."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}

    def apply(self, r: Node | None, sent: dict[str, str] | None = None) -> None:
        if r is None:
            return
        coll = coll_of(r)
        for cid, (status, sid, _node) in responses(r).items():
            if status == "1" and sid:
                self.held[sid] = (sent or {}).get(cid, "?")
        cmds = coll.find("AirSync:Commands")
        for c in cmds.children if cmds else []:
            sid = c.text_of("AirSync:ServerId") or ""
            if c.tag == "AirSync:Add":
                assert sid not in self.held, f"Add of {sid}, which the phone holds"
                self.held[sid] = c.text_of("AirSync:ApplicationData/Calendar:Subject") or ""
            elif c.tag == "AirSync:Change":
                self.held[sid] = c.text_of("AirSync:ApplicationData/Calendar:Subject") or ""
            elif c.tag in ("AirSync:Delete", "AirSync:SoftDelete"):
                self.held.pop(sid, None)

    def sync_to_end(self, d: RawDevice, cal: str, key: str) -> str:
        while True:
            r = d.sync(cal, key)
            if r is None:
                return key
            self.apply(r)
            key = coll_of(r).text_of("AirSync:SyncKey") or key
            if coll_of(r).find("AirSync:MoreAvailable") is None:
                return key


def server_events(srv: RunningServer, crm: Any, user: str, version: str) -> list[str]:
    """The events the store holds, as a fresh phone of another make reads them."""
    reader = device(srv, user, f"reader{time.monotonic_ns()}", "14.1")
    cal = reader.folders()["Calendar"]
    _k, items, _d, _r = reader.pull(cal, reader.initial(cal))
    subjects = sorted(n.text_of("Calendar:Subject") or "" for n in items.values())
    if crm is not None:
        crm_subjects = sorted(r["subject"] for r in crm("live", module="Events", owner=user))
        assert crm_subjects == subjects
    return subjects


@pytest.mark.parametrize("version", VERSIONS)
def test_readded_events_map_to_the_existing_ones(server: tuple[RunningServer, Any],
                                                  version: str) -> None:
    """MS-ASCAL 2.2.2.13 (ClientUid at 16.x, UID at 12.1/14.1): after a resync the
    phone's re-added events answer Status 1 with their existing ServerIds, the store
    is unchanged, and the phone holds each event once."""
    srv, crm = server
    user = USERS[version]
    tag = version.replace(".", "")
    phone_dev = device(srv, user, f"phone{tag}", version)
    cal = phone_dev.folders()["Calendar"]
    key, _i, _d, _r = phone_dev.pull(cal, phone_dev.initial(cal))
    uid_a, uid_b = f"{tag}AAAA1F0E9A8B4C2DA1B2C3D4E5F607", f"{tag}BBBB1F0E9A8B4C2DA1B2C3D4E5F607"
    r = phone_dev.sync(cal, key, adds(("a", event_xml("Dentist", uid_a, version, 3)),
                                      ("b", event_xml("Lunch", uid_b, version, 4)),
                                      get_changes=False))
    first = responses(r)
    assert first["a"][0] == first["b"][0] == "1"
    sid_a, sid_b = first["a"][1], first["b"][1]
    if version.startswith("16"):
        assert first["a"][2].text_of("AirSync:ApplicationData/Calendar:UID") == uid_a
    # an event made elsewhere, which the phone gets on its resync
    other = device(srv, user, f"other{tag}", "14.1")
    ko, _i, _d, _r = other.pull(cal, other.initial(cal))
    r = other.sync(cal, ko, adds(("o", event_xml("Board", f"{tag}OTHER", "14.1", 5)),
                                 get_changes=False))
    sid_o = responses(r)["o"][1]
    before = server_events(srv, crm, user, version)
    assert before == ["Board", "Dentist", "Lunch"]

    # the phone resyncs (SyncKey 0) and adds its two events again, with a new one
    phone = Phone()
    key = phone_dev.initial(cal)
    sent = {"a2": "Dentist", "b2": "Lunch", "n2": "Gym"}
    r = phone_dev.sync(cal, key, adds(("a2", event_xml("Dentist", uid_a, version, 3)),
                                      ("b2", event_xml("Lunch", uid_b, version, 4)),
                                      ("n2", event_xml("Gym", f"{tag}NEW", version, 6))))
    got = responses(r)
    assert (got["a2"][0], got["a2"][1]) == ("1", sid_a)
    assert (got["b2"][0], got["b2"][1]) == ("1", sid_b)
    assert got["n2"][0] == "1" and got["n2"][1] not in (sid_a, sid_b, sid_o)
    if version.startswith("16"):
        assert got["a2"][2].text_of("AirSync:ApplicationData/Calendar:UID") == uid_a
        assert got["b2"][2].text_of("AirSync:ApplicationData/Calendar:UID") == uid_b
    phone.apply(r, sent)
    key = coll_of(r).text_of("AirSync:SyncKey")
    phone.sync_to_end(phone_dev, cal, key)
    assert sorted(phone.held.values()) == ["Board", "Dentist", "Gym", "Lunch"]
    assert set(phone.held) == {sid_a, sid_b, sid_o, got["n2"][1]}
    assert server_events(srv, crm, user, version) == ["Board", "Dentist", "Gym", "Lunch"]


@pytest.mark.parametrize("version", ["14.1", "16.1"])
def test_one_event_added_twice_in_one_request(server: tuple[RunningServer, Any],
                                              version: str) -> None:
    """MS-ASCAL 2.2.2.13: two Adds of one ClientUid (UID at 14.1) in one Sync are
    one event; the resent request answers the same."""
    srv, crm = server
    user = USERS[version]
    tag = version.replace(".", "")
    d = device(srv, user, f"twice{tag}", version)
    cal = d.folders()["Calendar"]
    key, _i, _d, _r = d.pull(cal, d.initial(cal))
    uid = f"{tag}DUPE1F0E9A8B4C2DA1B2C3D4E5F6071"
    inner = adds(("x", event_xml("Twice", uid, version, 9)),
                 ("y", event_xml("Twice", uid, version, 9)), get_changes=False)
    r = d.sync(cal, key, inner)
    got = responses(r)
    assert got["x"][0] == got["y"][0] == "1" and got["x"][1] == got["y"][1]
    again = responses(d.sync(cal, key, inner))
    assert again["x"][1] == again["y"][1] == got["x"][1]
    assert server_events(srv, crm, user, version).count("Twice") == 1
