"""Shared folders on the account page (issue #14 point 1): the JSON API and the page,
over real HTTP on the real account service (SQLite).  A user sees what they share and
what is shared with them, shares their calendar with a colleague (read or write) and
stops sharing it; CSRF as every POST; an audit row for each share and unshare; a
colleague's held Ping is told the folder list changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from account_http import AccountServer

pytestmark = pytest.mark.timeout(60)


class Hub:
    """The change hub as the page sees it: what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str]] = []

    def publish(self, uid: int, folder: str) -> None:
        self.published.append((uid, folder))


@pytest_twisted.async_yield_fixture()
async def srv(tmp_path: Path) -> AsyncIterator[Any]:
    from twisted.internet import reactor

    s = await AccountServer(reactor, tmp_path).start()
    await s.add_user("anna", email="anna@example.org")
    await s.add_user("bob", email="bob@example.org")
    s.hub = Hub()
    s.resource.ops.enable_sharing(s.store, lambda uid, folders: [
        s.hub.publish(uid, f) for f in folders])
    yield s
    await s.stop()


async def _calendar(srv: Any, name: str) -> str:
    user = await srv.store.get_user(name)
    return next(f.server_id for f in await srv.store.list_folders(user)
                if f.name == "Calendar")


@pytest_twisted.ensureDeferred
async def test_json_api_share_and_unshare(srv: Any) -> None:
    cal = await _calendar(srv, "anna")
    bob = await srv.store.get_user("bob")
    c = srv.client()
    assert (await c.api("GET", "shares")).status == 401
    assert (await c.api("POST", "login", {"username": "anna",
                                          "password": "login password 1"})).status == 200
    body = (await c.api("GET", "shares")).json()
    assert body["available"] is True and body["mine"] == [] and body["with_me"] == []
    assert {f["name"] for f in body["folders"]} == {"Calendar", "Contacts", "Tasks"}
    # a POST without the CSRF token changes nothing
    r = await c.api("POST", "shares/add", {"folder_id": cal, "to": "bob"}, csrf=None)
    assert r.status == 403 and r.json()["error"]["code"] == "csrf"
    assert await srv.store.list_shares(None) == []
    # bad input: unknown colleague, someone else's folder, a non-boolean
    r = await c.api("POST", "shares/add", {"folder_id": cal, "to": "nobody"})
    assert r.status == 400 and "nobody" in r.json()["error"]["message"]
    bobs_cal = await _calendar(srv, "bob")
    r = await c.api("POST", "shares/add", {"folder_id": bobs_cal, "to": "bob"})
    assert r.status == 400
    r = await c.api("POST", "shares/add", {"folder_id": cal, "to": "bob", "write": "yes"})
    assert r.status == 400
    assert await srv.store.list_shares(None) == []
    r = await c.api("POST", "shares/add", {"folder_id": cal, "to": "bob", "write": True})
    assert r.status == 200, r.text
    assert r.json()["mine"] == [{"folder_id": cal, "name": "Calendar", "cls": "Calendar",
                                 "to": "bob", "write": True}]
    # bob's devices are told their folder list changed
    assert (bob.id, "hierarchy") in srv.hub.published
    # bob sees it shared with him, read-write
    b = srv.client()
    await b.api("POST", "login", {"username": "bob", "password": "login password 1"})
    theirs = (await b.api("GET", "shares")).json()["with_me"]
    assert theirs == [{"folder_id": cal, "name": "Calendar \u2014 anna", "cls": "Calendar",
                       "owner": "anna", "write": True}]
    r = await c.api("POST", "shares/remove", {"folder_id": cal, "to": "bob"})
    assert r.status == 200 and r.json()["mine"] == []
    assert (await b.api("GET", "shares")).json()["with_me"] == []
    actions = [(e.action, e.user) for e in await srv.service.audit_log("anna", 10)]
    assert ("share", "anna") in actions and ("unshare", "anna") in actions


@pytest_twisted.ensureDeferred
async def test_page_shows_and_changes_shares(srv: Any) -> None:
    cal = await _calendar(srv, "anna")
    c = srv.client()
    page = await c.login("anna")
    assert 'id="sharing"' in page.text and "You share no folder." in page.text
    page = await c.submit(page, "/account/shares/add",
                          {"folder_id": cal, "to": "Bob", "access": "read"})
    assert "Shared with bob" in page.text
    assert "Calendar → bob" in page.text
    shares = await srv.store.list_shares(None)
    assert [(s["folder_id"], s["grantee"], s["write"]) for s in shares] == [
        (cal, "bob", False)]
    b = srv.client()
    bpage = await b.login("bob")
    assert "Calendar \u2014 anna" in bpage.text and "from anna" in bpage.text
    page = await c.submit(page, "/account/shares/remove", {"folder_id": cal, "to": "bob"})
    assert "No longer shared with bob" in page.text
    assert await srv.store.list_shares(None) == []
