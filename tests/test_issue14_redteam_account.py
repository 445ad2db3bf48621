"""Red-team of issue 14 on the account page (real HTTP in this process, the real
account service on SQLite): the company book's system user is nobody's login."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from account_http import PASSWORD, AccountServer

from easync.auth.local import hash_secret

pytestmark = pytest.mark.timeout(60)


@pytest_twisted.async_yield_fixture()
async def srv(tmp_path: Path) -> AsyncIterator[AccountServer]:
    from twisted.internet import reactor

    s = await AccountServer(reactor, tmp_path).start()
    await s.add_user("root", email="root@example.org", admin=True)
    yield s
    await s.stop()


@pytest_twisted.ensureDeferred
async def test_system_user_cannot_sign_in_even_with_a_password(srv: AccountServer) -> None:
    """``~company`` (the company address book's owner, made by the store) with a login
    password in the database (an older release let the admin set one): the login form
    answers as for a wrong password, no session is opened."""
    book_owner = await srv.store.company_user()
    await srv.store.update_user(book_owner.name, password_hash=hash_secret(PASSWORD))
    c = srv.client()
    page = await c.get("/account/login")
    r = await c.submit(page, "/account/login", {"username": "~company", "password": PASSWORD})
    assert "Signed in" not in r.text
    assert r.url.endswith("/account/login")
    assert any("wrong user name or password" in m.lower() for m in r.messages()), r.messages()
    # a real user with the same password signs in
    c2 = srv.client()
    page = await c2.get("/account/login")
    r = await c2.submit(page, "/account/login", {"username": "root", "password": PASSWORD})
    assert "Signed in as <strong>root</strong>" in r.text


@pytest_twisted.ensureDeferred
async def test_admin_cannot_turn_on_login_switches_of_a_system_user(srv: AccountServer
                                                                    ) -> None:
    """The admin JSON API on ``~company``: ActiveSync on, two-factor on: each refused
    (403, ``forbidden``), nothing changed; the admin's own switches still work."""
    await srv.store.company_user()
    c = srv.client()
    await c.login("root")
    for path, body in (("admin/activesync", {"user": "~company", "on": True}),
                       ("admin/2fa", {"user": "~company", "method": "email"})):
        r = await c.api("POST", path, body)
        assert r.status == 403 and r.json()["error"]["code"] == "forbidden", (path, r.status, r.text)
    user = await srv.store.get_user("~company")
    assert user is not None and not user.activesync and not user.extra.get("two_factor")
    r = await c.api("POST", "admin/activesync", {"user": "root", "on": False})
    assert r.status == 200, r.text


@pytest_twisted.ensureDeferred
async def test_restore_of_ids_beyond_64_bits_is_not_found(srv: AccountServer) -> None:
    """"Recently deleted": a restore naming an id no row can have (beyond a 64-bit
    integer, through the JSON API or the HTML form) is "not found" (404 / the form's
    message) like any other unknown id, never a 500; the user's kept item stays."""
    from test_deleted_account import deleted_by_phone

    from easync.deleted import DeletedItems

    srv.service.deleted = DeletedItems(srv.store, srv.store, srv.clock)  # type: ignore[attr-defined]
    await srv.add_user("alice", email="alice@example.org")
    alice, _folder = await deleted_by_phone(srv, "alice", "Anna")
    c = srv.client()
    await c.login("alice")
    for ids in ([2 ** 63], [2 ** 70], [0]):
        r = await c.api("POST", "deleted/restore", {"ids": ids})
        assert r.status == 404 and r.json()["error"]["code"] == "not-found", (ids, r.text)
    page = await c.get("/account/deleted")
    r = await c.submit(page, "/account/deleted/restore", {"id": str(2 ** 80)})
    assert r.status == 200 and any("Nothing was restored" in m for m in r.messages()), r.text
    kept = await srv.store.list_deleted(alice)
    assert [k.summary for k in kept] == ["Anna"] and kept[0].restored_id is None
