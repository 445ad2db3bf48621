"""Fan-out (issue #12 point 1): one change that concerns many held requests.

* the woken holds are answered a slice at a time (``Holds.SLICE`` of answering per
  reactor turn), never all in the publisher's call;
* a change published with a ``ChangeHint`` (a device's Sync) answers a held Ping
  (MS-ASCMD 2.2.1.13, Status 2) without a store read, and the device's own write does
  not wake it at all (CMD 2.2.1.13: changes are those the device has not synced;
  its own are never echoed, CMD 3.1.5.8);
* a change published without a hint is still looked up, and a FilterType window is
  still honoured (a hinted change outside it is no change for the device).

The Pings run through their handler on a real in-memory store that passes the store
contract suite; the store calls a Ping makes are counted on that store."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import pytest_twisted
from sqlserver import memory_server, until
from test_ping import add_contact, folders_of, held, ping_body, prime, req, start_ping, status
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from easync.commands import sync
from easync.handler import EasServer
from easync.interfaces import ChangeHint
from easync.notify import LocalNotifier
from easync.push import Holds
from easync.settings import Settings
from easync.wbxml.element import E

# every test here measures wall-clock time: alone under pytest-xdist (tests/conftest.py)
pytestmark = pytest.mark.solo


class Counted:
    """A store seen through a counter of the calls made on it."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value

        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append(name)
            return value(*args, **kw)

        return call


@pytest_twisted.async_yield_fixture()
async def env(tmp_path):
    settings = Settings(heartbeat_min=30, heartbeat_max=600, max_ping_folders=3)
    async with memory_server(tmp_path, "", ("zoe", "zoe@example.org"), clocked=True,
                             settings=settings) as (server, user, store):
        folders = {f.name: f.server_id for f in await store.list_folders(user)}
        # the Pings use the same store, hub and holds, through a counter
        counted = Counted(store)
        pings = dataclasses.replace(server, items=counted, state=counted)
        assert pings.holds is server.holds
        yield server, pings, counted, user, folders


async def sync_add(server: EasServer, user: Any, cid: str, device: str, key: str,
                   name: str = "Wake", start: str = "") -> str:
    """``device`` adds a contact (or, with ``start``, an event) through its Sync."""
    data = E("AirSync:ApplicationData")
    if start:
        data.add("Calendar:Subject", name)
        data.add("Calendar:StartTime", start)
        data.add("Calendar:EndTime", start)
    else:
        data.add("Contacts:FirstName", name)
    body = E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid),
        E("AirSync:GetChanges", "0"),
        E("AirSync:Commands", E("AirSync:Add", E("AirSync:ClientId", name), data)))))
    resp = await sync.handle(server, req(user, "Sync", body, device))
    coll = resp.body.find("AirSync:Collections").find("AirSync:Collection")
    assert coll.findtext("AirSync:Status") == "1"
    return coll.findtext("AirSync:SyncKey")


async def turns(n: int) -> None:
    for _ in range(n):
        await deferLater(reactor, 0, lambda: None)


# -- slices --------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_many_woken_holds_are_answered_in_slices_not_in_one_reactor_turn() -> None:
    hub = LocalNotifier()
    holds = Holds(hub, reactor)
    holds.SLICE = 0.01
    n, cost = 150, 0.001                # 150 answers of 1 ms each: 150 ms of work
    answered: list[float] = []

    async def handler(device: str) -> None:
        hold = holds.start(7, device, "Ping", ["10"], 300)
        try:
            await hold.wait()
            assert hold.take() == {"10": ChangeHint(5, "writer")}
            end = time.perf_counter() + cost
            while time.perf_counter() < end:
                pass
            answered.append(time.perf_counter())
        finally:
            hold.end()

    done = [Deferred.fromCoroutine(handler(f"d{i}")) for i in range(n)]
    assert hub.waiting == n
    # a probe that runs once every reactor turn: the answers given between two of
    # its runs were given in one turn
    per_turn: list[int] = []
    seen = [0]

    def probe() -> None:
        per_turn.append(len(answered) - seen[0])
        seen[0] = len(answered)
        if len(answered) < n:
            reactor.callLater(0, probe)

    hub.publish(7, "10", ChangeHint(5, "writer"))
    assert answered == []               # the publisher's call only noted the change
    reactor.callLater(0, probe)
    for d in done:
        await d
    assert len(answered) == n and hub.waiting == 0
    # each answer takes 1 ms: at most 10 ms worth (+1) per turn, whatever the load
    assert max(per_turn) <= 11, per_turn
    assert holds.slices >= 14


# -- hinted and unhinted wakes of a Ping -----------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_another_devices_sync_answers_a_held_ping_without_a_store_read(env) -> None:
    server, pings, counted, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid, "devA")
    key_b = await prime(server, user, cid, "devB")
    d = start_ping(pings, user, ping_body(300, [cid]), "devA")
    await held(server)
    counted.calls.clear()
    await sync_add(server, user, cid, "devB", key_b)     # published with its hint
    resp = await d
    assert status(resp) == "2" and folders_of(resp) == [cid]
    assert counted.calls == []          # the change said it all


@pytest_twisted.ensureDeferred
async def test_the_devices_own_sync_does_not_wake_its_ping(env) -> None:
    server, pings, counted, user, folders = env
    cid = folders["Contacts"]
    key_a = await prime(server, user, cid, "devA")
    d = start_ping(pings, user, ping_body(300, [cid]), "devA")
    await held(server)
    counted.calls.clear()
    await sync_add(server, user, cid, "devA", key_a)     # devA's own write
    await turns(3)
    assert not d.called
    (hold,) = server.holds.by_device.values()
    assert hold.changed is None and hold.woken_at is None   # not even woken
    assert counted.calls == []
    server.clock.advance(300)
    assert status(await d) == "1"       # its heartbeat: nothing for it


@pytest_twisted.ensureDeferred
async def test_a_change_without_hint_is_looked_up(env) -> None:
    server, pings, counted, user, folders = env
    cid = folders["Contacts"]
    await prime(server, user, cid, "devA")
    d = start_ping(pings, user, ping_body(300, [cid]), "devA")
    await held(server)
    counted.calls.clear()
    await add_contact(server, user, cid)                 # an import: publish(user, folder)
    resp = await d
    assert status(resp) == "2" and folders_of(resp) == [cid]
    assert "list_folders" in counted.calls and "get_state" in counted.calls


@pytest_twisted.ensureDeferred
async def test_a_never_synced_folder_counts_when_a_hinted_change_wakes_it(env) -> None:
    server, pings, counted, user, folders = env
    cid = folders["Contacts"]
    key_b = await prime(server, user, cid, "devB")
    d = start_ping(pings, user, ping_body(300, [cid]), "devA")      # devA never synced
    await held(server)
    counted.calls.clear()
    await sync_add(server, user, cid, "devB", key_b)
    resp = await d
    assert status(resp) == "2" and folders_of(resp) == [cid]
    assert counted.calls == []


@pytest_twisted.ensureDeferred
async def test_a_hinted_change_outside_the_devices_filter_window_does_not_answer(env) -> None:
    """A device that syncs its calendar two weeks back (FilterType 4, CMD 2.2.3.68) is
    not woken by an event of last year: the hint cannot tell, the store is asked."""
    server, pings, counted, user, folders = env
    server.clock.advance(time.time() - server.clock.seconds())     # today, not 1970
    cid = folders["Calendar"]
    body = E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", "0"), E("AirSync:CollectionId", cid),
        E("AirSync:Options", E("AirSync:FilterType", "4")))))
    await sync.handle(server, req(user, "Sync", body, "devA"))
    key_b = await prime(server, user, cid, "devB")
    d = start_ping(pings, user, ping_body(300, [cid], cls="Calendar"), "devA")
    await held(server)
    counted.calls.clear()
    await sync_add(server, user, cid, "devB", key_b, name="Old", start="20000101T100000Z")
    await until(lambda: "get_state" in counted.calls)
    await turns(3)
    assert not d.called
    server.clock.advance(300)
    assert status(await d) == "1"
