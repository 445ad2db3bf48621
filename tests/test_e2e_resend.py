"""Issue #10 point 3, end to end: a resend that carries more than the original, through
``twistd easync`` with raw WBXML (libwbxml), on the SQL store and on the CRM store (the
fake CRM in its own process).

MS-ASCMD 2.2.3.166.4 and 3.1.5.3: a device that did not get the answer to a Sync sends
the same SyncKey again.  Phones rebuild that resend from their dirty items: after
``Sync(K1, Add c2)`` whose answer was lost, the resend of K1 carries ``Add c2`` and a
``Change X`` made since.  c2 is stored once (the same ServerId as in the lost answer),
X is applied, a second device sees both once, and a resend of exactly that request
again writes nothing.
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
from test_e2e_device_shapes import collection as coll_of

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "resend-Pa55"


@pytest.fixture(scope="module", params=["sql", "crm"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[RunningServer, Any]]:
    with started(tmp_path_factory, request.param, "resend", ["rosa"], PASSWORD) as s:
        yield s


def add(client_id: str, first: str) -> str:
    return (f"<Add><ClientId>{client_id}</ClientId><ApplicationData>"
            f"<K:FirstName>{first}</K:FirstName></ApplicationData></Add>")


def change(sid: str, first: str) -> str:
    return (f"<Change><ServerId>{sid}</ServerId><ApplicationData>"
            f"<K:FirstName>{first}</K:FirstName></ApplicationData></Change>")


def commands(*cmds: str) -> str:
    return "<GetChanges>0</GetChanges><Commands>" + "".join(cmds) + "</Commands>"


def responses(r: Node | None) -> list[tuple[str, str | None, str | None, str | None]]:
    resp = coll_of(r).find("AirSync:Responses")
    return [(c.tag, c.text_of("AirSync:ClientId"), c.text_of("AirSync:ServerId"),
             c.text_of("AirSync:Status")) for c in (resp.children if resp else [])]


def holdings(dev: RawDevice, coll: str, key: str, held: dict[str, str]) -> str:
    """Pull everything new into ``held`` (ServerId -> FirstName); each Add must be of
    an item the device does not hold yet.  Returns the new key."""
    while True:
        r = dev.sync(coll, key)
        if r is None:
            return key
        c = coll_of(r)
        key = c.text_of("AirSync:SyncKey") or key
        cmds = c.find("AirSync:Commands")
        for cmd in cmds.children if cmds else []:
            sid = cmd.text_of("AirSync:ServerId") or ""
            if cmd.tag == "AirSync:Add":
                assert sid not in held, f"{sid} added twice"
            if cmd.tag in ("AirSync:Add", "AirSync:Change"):
                held[sid] = cmd.text_of("AirSync:ApplicationData/Contacts:FirstName") or ""
            elif cmd.tag in ("AirSync:Delete", "AirSync:SoftDelete"):
                held.pop(sid, None)
        if c.find("AirSync:MoreAvailable") is None:
            return key


def test_resend_with_a_new_change_applies_it_and_replays_the_add(
        site: tuple[RunningServer, Any]) -> None:
    srv, _crm = site
    a = RawDevice(srv.url, "rosa", PASSWORD, "resendA")
    b = RawDevice(srv.url, "rosa", PASSWORD, "resendB")
    for d in (a, b):
        d.provision()
    coll = a.folders()["Contacts"]
    b.folders()
    held_a: dict[str, str] = {}
    held_b: dict[str, str] = {}
    ka = holdings(a, coll, a.initial(coll), held_a)
    kb = holdings(b, coll, b.initial(coll), held_b)
    # A makes X, and both devices hold it
    r = a.sync(coll, ka, commands(add("cx", "Xavier")))
    [(_t, _c, x, status)] = responses(r)
    assert status == "1" and x
    k1 = coll_of(r).text_of("AirSync:SyncKey") or ""
    kb = holdings(b, coll, kb, held_b)
    assert held_b == {x: "Xavier"}
    # Sync(K1, Add c2): answered, but the answer never reaches the phone
    lost = a.sync(coll, k1, commands(add("c2", "Two")))
    [(_t, _c, two, status)] = responses(lost)
    assert status == "1" and two
    # the phone resends K1, rebuilt from its dirty items: Add c2 and Change X
    resend = commands(add("c2", "Two"), change(x, "Xavier2"))
    r = a.sync(coll, k1, resend)
    assert responses(r) == [("AirSync:Add", "c2", two, "1")]     # the Change: applied
    k2 = coll_of(r).text_of("AirSync:SyncKey") or ""
    assert k2 not in (k1, coll_of(lost).text_of("AirSync:SyncKey"))
    # that answer is lost too: the same request again, the same answer
    again = a.sync(coll, k1, resend)
    assert coll_of(again).text_of("AirSync:SyncKey") == k2
    assert responses(again) == responses(r)
    # the other device: c2 once, X changed
    deadline = time.monotonic() + 10
    while True:
        kb = holdings(b, coll, kb, held_b)
        if held_b.get(x) == "Xavier2" and two in held_b or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert held_b == {x: "Xavier2", two: "Two"}
    # nothing more for either device: nothing was written twice, nothing echoed
    time.sleep(1.0)                       # (the CRM is polled every 0.3 s)
    assert holdings(b, coll, kb, held_b) == kb
    assert a.sync(coll, k2) is None
