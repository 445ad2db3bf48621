"""The account page's "Recently deleted" (issue #14 point 2): the HTML page and its
forms (CSRF), over the real account service and SQL store (tests/account_http.py).
The JSON API is exercised end to end in tests/test_deleted_e2e.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from account_http import AccountServer

from easync.deleted import DeletedItems
from easync.model import Op

pytestmark = pytest.mark.timeout(60)


@pytest_twisted.async_yield_fixture()
async def srv(tmp_path: Path) -> AsyncIterator[AccountServer]:
    from twisted.internet import reactor

    s = await AccountServer(reactor, tmp_path).start()
    await s.add_user("alice", email="alice@example.org")
    await s.add_user("bob", email="bob@example.org")
    await s.add_user("root", email="root@example.org", admin=True)
    s.published = []  # type: ignore[attr-defined]

    async def audit(actor: str | None, user: str, action: str, detail: str) -> None:
        await s.service.audit_raw(actor, user, action, detail, "")

    s.service.deleted = DeletedItems(
        s.store, s.store, s.clock, audit=audit,
        publish=lambda uid, fid, results: s.published.append((uid, fid)))  # type: ignore[attr-defined]
    yield s
    await s.stop()


async def deleted_by_phone(srv: AccountServer, name: str, *names: str) -> tuple[Any, str]:
    """Contacts of ``name`` added, then deleted as a phone's Sync Delete does."""
    user = await srv.store.get_user(name)
    folder = next(f.server_id for f in await srv.store.list_folders(user) if f.type == 9)
    made = await srv.store.apply(user, folder, [Op("add", data={"FirstName": n}, ref=n)
                                                for n in names])
    await srv.store.apply(user, folder, [Op("delete", server_id=r.server_id, keep="IPHONE7")
                                         for r in made])
    return user, folder


async def live_names(srv: AccountServer, user: Any, folder: str) -> list[str]:
    batch = await srv.store.changes_since(user, folder, 0, 100)
    return sorted(c.item.data["FirstName"] for c in batch.changes if c.item is not None)


@pytest_twisted.ensureDeferred
async def test_recently_deleted_page_lists_and_restores(srv: AccountServer) -> None:
    alice, folder = await deleted_by_phone(srv, "alice", "Anna", "Bea", "Carlo")
    c = srv.client()
    await c.login("alice")
    home = await c.get("/account/")
    assert 'href="/account/deleted"' in home.text
    page = await c.get("/account/deleted")
    assert page.status == 200
    for name in ("Anna", "Bea", "Carlo"):
        assert name in page.text
    assert "IPHONE7" in page.text
    ids = re.findall(r'name="id" value="(\d+)"', page.text)
    assert len(ids) == 3
    # one item by its button
    anna = (await srv.store.list_deleted(alice))[-1]
    assert anna.summary == "Anna"
    done = await c.submit(page, "/account/deleted/restore", {"id": str(anna.id)})
    assert done.status == 200 and done.url.endswith("/account/deleted")
    assert any("1 item restored" in m for m in done.messages())
    assert await live_names(srv, alice, folder) == ["Anna"]
    assert srv.published == [(alice.id, folder)]  # type: ignore[attr-defined]
    # the same button again: nothing more
    again = await c.submit(page, "/account/deleted/restore", {"id": str(anna.id)})
    assert any("Already restored" in m for m in again.messages())
    assert await live_names(srv, alice, folder) == ["Anna"]
    # everything the device deleted since a time; a bad time first
    bad = await c.submit(page, "/account/deleted/restore",
                         {"device": "IPHONE7", "since": "last tuesday"})
    assert any("not a time" in m for m in bad.messages())
    assert await live_names(srv, alice, folder) == ["Anna"]
    rest = await c.submit(page, "/account/deleted/restore", {"device": "IPHONE7",
                                                              "since": "1h"})
    assert any("2 items restored" in m for m in rest.messages())
    assert await live_names(srv, alice, folder) == ["Anna", "Bea", "Carlo"]
    assert "Nothing deleted recently" in (await c.get("/account/deleted")).text
    # without the CSRF token: refused, nothing done
    no_csrf = await c.post("/account/deleted/restore", {"id": ids[0]})
    assert no_csrf.status == 403


@pytest_twisted.ensureDeferred
async def test_only_an_admin_sees_and_restores_another_users(srv: AccountServer) -> None:
    alice, folder = await deleted_by_phone(srv, "alice", "Dora")
    (kept,) = await srv.store.list_deleted(alice)
    bob = srv.client()
    await bob.login("bob")
    page = await bob.get("/account/deleted?user=alice")
    assert page.status == 403 and "Dora" not in page.text
    mine = await bob.get("/account/deleted")
    # bob's own form, posting alice's id: not his, nothing restored
    r = await bob.submit(mine, "/account/deleted/restore", {"id": str(kept.id)})
    assert any("no deleted item" in m for m in r.messages())
    r = await bob.submit(mine, "/account/deleted/restore", {"id": str(kept.id),
                                                             "user": "alice"})
    assert r.status == 403
    assert await live_names(srv, alice, folder) == []
    root = srv.client()
    await root.login("root")
    admin = await root.get("/account/admin")
    assert 'href="/account/deleted?user=alice"' in admin.text
    page = await root.get("/account/deleted?user=alice")
    assert page.status == 200 and "Dora" in page.text
    done = await root.submit(page, "/account/deleted/restore", {"id": str(kept.id),
                                                                 "user": "alice"})
    assert any("1 item restored" in m for m in done.messages())
    assert done.url.endswith("/account/deleted?user=alice")
    assert await live_names(srv, alice, folder) == ["Dora"]
    audit = await srv.service.audit_log("alice", 10)
    assert [(a.actor, a.action) for a in audit if a.action == "deleted-restore"] == [
        ("root", "deleted-restore")]


@pytest_twisted.ensureDeferred
async def test_an_admin_restoring_another_users_items_confirms_it_is_them(
        srv: AccountServer) -> None:
    """Issue #14 point 2 follow-up: restoring another user's items is an admin action
    like the others on the page (2FA for everyone, a user's ActiveSync password): it
    needs a recent verification (``verified_until``), on the HTML page and in the JSON
    API.  Seeing the list does not; restoring one's own items does not either."""
    alice, folder = await deleted_by_phone(srv, "alice", "Elio", "Fede")
    elio, fede = sorted(await srv.store.list_deleted(alice), key=lambda k: k.summary)
    root = srv.client()
    await root.login("root")
    srv.clock.advance(6 * 60)          # the login's verification is no longer recent
    page = await root.get("/account/deleted?user=alice")
    assert page.status == 200 and "Elio" in page.text
    r = await root.submit(page, "/account/deleted/restore", {"id": str(elio.id),
                                                              "user": "alice"})
    assert "/account/verify" in r.url
    assert any("Confirm it" in m for m in r.messages())
    assert await live_names(srv, alice, folder) == []
    # the JSON API: refused with code "verify", nothing restored
    api = await root.api("POST", "deleted/restore", {"user": "alice", "ids": [fede.id]})
    assert api.status == 403 and api.json()["error"]["code"] == "verify"
    assert await live_names(srv, alice, folder) == []
    # confirmed: restored
    ok = await root.api("POST", "verify", {"password": "login password 1"})
    assert ok.status == 200
    api = await root.api("POST", "deleted/restore", {"user": "alice", "ids": [fede.id]})
    assert api.status == 200 and [r["id"] for r in api.json()["restored"]] == [fede.id]
    page = await root.get("/account/deleted?user=alice")
    r = await root.submit(page, "/account/deleted/restore", {"id": str(elio.id),
                                                              "user": "alice"})
    assert any("1 item restored" in m for m in r.messages())
    assert await live_names(srv, alice, folder) == ["Elio", "Fede"]
    # a user restoring their own items: no re-confirmation
    bob, bob_folder = await deleted_by_phone(srv, "bob", "Gino")
    (gino,) = await srv.store.list_deleted(bob)
    me = srv.client()
    await me.login("bob")
    srv.clock.advance(6 * 60)
    mine = await me.get("/account/deleted")
    r = await me.submit(mine, "/account/deleted/restore", {"id": str(gino.id)})
    assert any("1 item restored" in m for m in r.messages())
    assert await live_names(srv, bob, bob_folder) == ["Gino"]
