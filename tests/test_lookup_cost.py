"""Issue #10 point 2: ResolveRecipients and the GAL Search cost what they return, not
what the account owns.

Before, every ResolveRecipients read all the user's contacts and compared each To with
each of them in Python on the reactor: 100 recipients on a 50,000-contact account took
120 s and stalled every other user for 13.5 s.  Now the stores answer from indexes in
their thread (MS-ASCMD 2.2.1.15 ResolveRecipients, 2.2.3.183 To: at most 100; 2.2.1.16
Search, GAL).  The general rule of the issue: no request holds the reactor for more
than about 50 ms; the tests allow 200 ms for a loaded CI machine.

The reactor's pauses are measured by a ``LoopingCall`` every 5 ms: the longest gap
between two of its calls while the request runs, minus the 5 ms, is the longest time
the reactor could not serve anybody else.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Self

import pytest
import pytest_twisted
from sqlserver import sqlite_server
from twisted.internet.task import LoopingCall

from easync.commands import resolverecipients, search
from easync.handler import EasRequest
from easync.model import Op
from easync.wbxml import encode
from easync.wbxml.element import E, Element

# every test here measures wall-clock time: alone under pytest-xdist (tests/conftest.py)
pytestmark = pytest.mark.solo

CONTACTS = 50_000
USERS = 2_000
HOSTILE = "x" * 32_000          # 32 kB, as the red team's addresses and names
PAUSE_LIMIT = 0.2               # the budget is 50 ms; margin for a loaded machine
STEP = 0.005


def contact(i: int) -> dict[str, Any]:
    if i % 1000 == 999:         # one in a thousand carries 32 kB of text
        return {"FirstName": "Zed" + HOSTILE, "LastName": f"Hostile{i}",
                "Email1Address": HOSTILE + f"{i}@example.org",
                "Email2Address": f"hostile{i}@example.org"}
    return {"FirstName": f"First{i}", "LastName": f"Last{i % 500}",
            "CompanyName": f"Company {i % 97}", "Email1Address": f"c{i}@example.org",
            "MobilePhoneNumber": f"+39 333 {i:07d}"}


@pytest_twisted.async_yield_fixture(scope="module")
async def big(tmp_path_factory: Any) -> AsyncIterator[tuple[Any, Any, Any]]:
    """An account owning 50,000 contacts, and 2,000 other users (through the store's
    own write paths: ``apply`` in batches, ``add_user`` in one transaction)."""
    async with sqlite_server(tmp_path_factory.mktemp("lookup")) as (server, user, store):
        t0 = time.monotonic()
        folder = {f.name: f.server_id for f in await store.list_folders(user)}["Contacts"]
        for start in range(0, CONTACTS, 5000):
            await store.apply(user, folder, [Op("add", data=contact(i), cls="Contacts")
                                             for i in range(start, start + 5000)])

        def users(cur: Any) -> None:
            for n in range(USERS):
                store.users.add_user_txn(cur, f"u{n:04d}", None, f"user{n}@corp.example", True)

        await store.db.run_interaction("users", users, write=True)
        print(f"fixture: {time.monotonic() - t0:.1f} s")
        yield server, user, store


class Pauses:
    """The longest time the reactor went without running a 5 ms LoopingCall."""

    def __init__(self) -> None:
        from twisted.internet import reactor

        self.worst = 0.0
        self.last = 0.0
        self.loop = LoopingCall(self.tick)
        self.loop.clock = reactor

    def tick(self) -> None:
        now = time.monotonic()
        if self.last:
            self.worst = max(self.worst, now - self.last - STEP)
        self.last = now

    def __enter__(self) -> Self:
        self.loop.start(STEP, now=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.tick()
        self.loop.stop()


async def run(server: Any, user: Any, module: Any, cmd: str, body: Element
              ) -> tuple[Element, float, float]:
    """The command's answer (encoded to WBXML as the HTTP layer does, on the reactor),
    the longest reactor pause and the wall time."""
    req = EasRequest(cmd=cmd, user=user, device_id="dev1", device_type="iPhone",
                     version="16.1", body=body, raw_body=b"", device={},
                     user_agent="Apple-iPhone15C2/2104.1")
    t0 = time.monotonic()
    with Pauses() as p:
        resp = await module.handle(server, req)
        encode(resp.body)
    return resp.body, p.worst, time.monotonic() - t0


def hostile_tos() -> list[str]:
    """100 To: names and addresses, some 32 kB long, some matching thousands."""
    tos: list[str] = []
    for n in range(25):
        tos += [f"c{n * 1997}@example.org", f"First{n * 7}", f"Last{n}",
                HOSTILE + f"{n}@example.org" if n % 2 else "Zed" + HOSTILE]
    tos[-4:] = ["l", "f", "c", "company 1"]   # each begins thousands of names
    return tos


@pytest_twisted.ensureDeferred
async def test_resolve_recipients_on_50000_contacts_holds_the_reactor_briefly(
        big: Any) -> None:
    """A 100-To ResolveRecipients on a 50,000-contact account: every To resolved as
    before (Status 1 for an exact address, 3 for a name matching thousands, 4 for a
    32 kB "address"), in a few seconds, and the reactor never paused for long."""
    server, user, _ = big
    tos = hostile_tos()
    body = E("ResolveRecipients:ResolveRecipients",
             *[E("ResolveRecipients:To", t) for t in tos])
    answer, pause, wall = await run(server, user, resolverecipients, "ResolveRecipients",
                                    body)
    print(f"ResolveRecipients: {wall:.2f} s, longest reactor pause {pause * 1000:.1f} ms")
    assert wall < 10, wall
    assert pause < PAUSE_LIMIT, f"the reactor paused {pause * 1000:.0f} ms"
    responses = answer.findall("ResolveRecipients:Response")
    status = {r.findtext("ResolveRecipients:To"): r.findtext("ResolveRecipients:Status")
              for r in responses}
    assert len(responses) == 100
    assert status["c0@example.org"] == "1" and status["c1997@example.org"] == "1"
    assert status["First0"] == "1"
    assert status["First7"] == "3"                  # First7, First70..., First7000...
    assert status["Last3"] == "3"                   # Last3, Last30..., Last300...
    assert status[HOSTILE + "1@example.org"] == "4"
    assert status["Zed" + HOSTILE] == "3"           # 50 hostile contacts, cut to 19
    assert status["l"] == status["c"] == status["company 1"] == "3"
    hit = responses[0].find("ResolveRecipients:Recipient")
    assert hit.findtext("ResolveRecipients:DisplayName") == "First0 Last0"
    for r in responses:
        assert len(r.findall("ResolveRecipients:Recipient")) <= 19
        for rec in r.findall("ResolveRecipients:Recipient"):
            assert len(rec.findtext("ResolveRecipients:DisplayName")) <= 256


@pytest_twisted.ensureDeferred
async def test_gal_search_on_many_users_holds_the_reactor_briefly(big: Any) -> None:
    """GAL searches (MS-ASCMD 2.2.1.16) among 2,000 users: Total is the number of
    matches up to 1,000, Range honoured (2.2.3.139), the reactor never paused long."""
    server, user, _ = big
    for query, total, first in (("u", "1000", "u0000"), ("user12", "111", "u0012"),
                                ("U1999", "1", "u1999"), ("nobody", "0", None)):
        body = E("Search:Search", E("Search:Store", E("Search:Name", "GAL"),
                                    E("Search:Query", query),
                                    E("Search:Options", E("Search:Range", "0-99"))))
        answer, pause, wall = await run(server, user, search, "Search", body)
        store = answer.find("Search:Response").find("Search:Store")
        assert store.findtext("Search:Total") == total, query
        results = store.findall("Search:Result")
        assert len(results) == min(100, int(total))
        if first:
            assert results[0].find("Search:Properties").findtext("GAL:Alias") == first
        print(f"GAL {query}: {wall:.3f} s, longest reactor pause {pause * 1000:.1f} ms")
        assert wall < 5, (query, wall)
        assert pause < PAUSE_LIMIT, f"{query}: the reactor paused {pause * 1000:.0f} ms"


@pytest_twisted.ensureDeferred
async def test_hostile_contact_add_is_indexed_briefly(big: Any) -> None:
    """A contact whose Email1Address and FirstName are 32 kB (the bench's hostile Sync
    Add) is written and indexed in the store's thread without a long reactor pause;
    it is found by its usable address and name, never by its 32 kB "address"."""
    _, user, store = big
    folder = {f.name: f.server_id for f in await store.list_folders(user)}["Contacts"]
    with Pauses() as p:
        [res] = await store.apply(user, folder, [Op("add", cls="Contacts", data={
            "FirstName": "Quux" + HOSTILE, "Email1Address": HOSTILE + "@q.example",
            "Email2Address": "quux@q.example"})])
    assert res.ok
    assert p.worst < PAUSE_LIMIT
    assert [i.server_id for i in await store.find_contacts_by_name(user, "quux", 5)] == [
        res.server_id]
    assert await store.find_contacts_by_emails(user, [HOSTILE + "@q.example"], 5) == {}
