"""Issue #14 point 3 on the account page (real HTTP in this process, the real account
service on SQLite): a user sees each device's access state and whether it can take an
account-only wipe, blocks their own device, and wipes this account's data first (the
full wipe needs its own button and a box ticked); an administrator sees the devices in
quarantine and allows or blocks them.  Every change is an audit row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_twisted
from account_http import AccountServer

pytestmark = pytest.mark.timeout(60)


@pytest_twisted.async_yield_fixture()
async def srv(tmp_path: Path) -> AsyncIterator[AccountServer]:
    from twisted.internet import reactor

    s = await AccountServer(reactor, tmp_path).start()
    await s.add_user("alice", email="alice@example.org")
    await s.add_user("root", email="root@example.org", admin=True)
    yield s
    await s.stop()


async def audit(srv: AccountServer, action: str) -> list[str]:
    rows = await srv.service.auth.list_audit(None, 100)
    return [r["detail"] for r in rows if r["action"] == action]


@pytest_twisted.ensureDeferred
async def test_user_blocks_own_device_and_wipes_account_first(srv: AccountServer) -> None:
    alice = await srv.store.get_user("alice")
    now = srv.clock.seconds()
    await srv.store.save_device(alice, "NEW161", device_type="iPhone", last_seen=now,
                                protocol_version="16.1")
    await srv.store.save_device(alice, "OLD141", device_type="Android", last_seen=now,
                                protocol_version="14.1")
    c = srv.client()
    home = await c.login("alice")
    assert home.text.count("allowed") >= 2
    assert "possible" in home.text and "not possible (needs EAS 16.1)" in home.text

    # a 14.1 device: no account-only button, the page says why
    old = await c.get("/account/devices/wipe?device=OLD141")
    assert "cannot erase just this account" in old.text
    assert 'value="account"' not in old.text
    # the full wipe is refused without the box ticked: nothing ordered
    r = await c.submit(old, "/account/devices/wipe", {"device": "OLD141", "kind": "full"})
    assert r.status == 400
    assert (await srv.store.get_device(alice, "OLD141"))["wipe"] == "none"
    # the default (account-only) is refused for it, with a clear message
    r = await c.submit(old, "/account/devices/wipe", {"device": "OLD141"})
    assert r.status == 400 and "16.1" in r.text
    assert (await srv.store.get_device(alice, "OLD141"))["wipe"] == "none"
    r = await c.submit(old, "/account/devices/wipe", {"device": "OLD141", "kind": "full",
                                                      "sure": "yes"})
    dev = await srv.store.get_device(alice, "OLD141")
    assert dev["wipe"] == "pending" and dev["info"]["wipe_kind"] == "device"

    # block: nothing erased, access "block", an audit row
    page = await c.get("/account/devices/block?device=NEW161")
    assert "nothing on it is erased" in page.text
    r = await c.submit(page, "/account/devices/block", {"device": "NEW161"})
    dev = await srv.store.get_device(alice, "NEW161")
    assert dev["access"] == "block" and dev["wipe"] == "none"
    assert "blocked" in r.text
    assert any("NEW161: block" in d for d in await audit(srv, "device-access"))
    # a user cannot let their device in again: that is an administrator's
    r = await c.api("POST", "devices/block", {"device_id": "NOPE"})
    assert r.status == 404


@pytest_twisted.ensureDeferred
async def test_admin_allows_a_quarantined_device(srv: AccountServer) -> None:
    alice = await srv.store.get_user("alice")
    now = srv.clock.seconds()
    await srv.store.add_device_rule(None, "device_type", "iPad", "quarantine", "root")
    await srv.store.save_device(alice, "PAD1", device_type="iPad", last_seen=now)
    await srv.store.save_device(alice, "PHONE1", device_type="iPhone", last_seen=now)

    user = srv.client()
    home = await user.login("alice")
    assert "in quarantine" in home.text               # the user sees why it waits
    r = await user.submit(home, "/account/admin/device-access",
                          {"user": "alice", "device": "PAD1", "access": "allow"})
    assert r.status == 403
    assert (await srv.store.get_device(alice, "PAD1"))["access"] is None

    c = srv.client()
    await c.login("root")
    admin = await c.get("/account/admin")
    assert "Devices in quarantine" in admin.text and "PAD1" in admin.text
    assert "PHONE1" not in admin.text
    r = await c.api("GET", "admin/quarantine")
    assert [(d["user"], d["device_id"]) for d in r.json()["devices"]] == [("alice", "PAD1")]
    r = await c.submit(admin, "/account/admin/device-access",
                       {"user": "alice", "device": "PAD1", "access": "allow"})
    assert any("PAD1 of alice allowed" in m for m in r.messages())
    assert (await srv.store.get_device(alice, "PAD1"))["access"] == "allow"
    assert "No device is waiting" in r.text
    assert any("PAD1: allow" in d for d in await audit(srv, "device-access"))
    r = await c.submit(admin, "/account/admin/device-access",
                       {"user": "alice", "device": "PAD1", "access": "explode"})
    assert r.status == 400
