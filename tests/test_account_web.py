"""The account page over real HTTP in this process, on the real account service (SQLite,
bcrypt, e-mail codes through a real SMTP listener): every page and form, CSRF refusals,
session expiry, bad input with clear messages and nothing changed."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
import pytest_twisted
from account_http import PASSWORD, AccountServer, Client, Reply
from twisted.logger import globalLogPublisher

pytestmark = pytest.mark.timeout(60)


@pytest_twisted.async_yield_fixture()
async def srv(tmp_path: Path) -> AsyncIterator[AccountServer]:
    from twisted.internet import reactor

    s = await AccountServer(reactor, tmp_path).start()
    await s.add_user("alice", email="alice@example.org")
    await s.add_user("bob", email="bob@example.org", twofa="email")
    await s.add_user("root", email="root@example.org", admin=True)
    yield s
    await s.stop()


async def as_status(srv: AccountServer, name: str) -> Any:
    return await srv.service.status(name)


async def login_2fa(srv: AccountServer, c: Client, user: str, email: str) -> Reply:
    n = len(srv.sink.messages)
    page = await c.login(user)
    assert page.url.endswith("/account/login/code"), page.text
    code = await srv.code_for(email, n)
    return await c.submit(page, "/account/login/code", {"code": code})


# ---------------------------------------------------------------------- headers, cookies

@pytest_twisted.ensureDeferred
async def test_login_page_headers_and_cookie(srv: AccountServer) -> None:
    c = srv.client()
    r = await c.get("/account")
    assert r.history == [303, 303] and r.url.endswith("/account/login")
    assert r.status == 200
    assert "default-src 'none'" in r.header("content-security-policy")
    assert "frame-ancestors 'none'" in r.header("content-security-policy")
    assert r.header("x-frame-options") == "DENY"
    assert r.header("referrer-policy") == "no-referrer"
    assert r.header("x-content-type-options") == "nosniff"
    assert r.header("cache-control") == "no-store"
    cookie = c.set_cookies[-1]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/account"):
        assert flag in cookie
    assert 'name="viewport"' in r.text and 'autocomplete="current-password"' in r.text
    css = await c.get("/account/static/style.css")
    assert css.status == 200 and css.header("content-type").startswith("text/css")
    assert (await c.get("/account/nowhere")).status == 404


@pytest_twisted.ensureDeferred
async def test_login_without_2fa_rotates_session_and_logout(srv: AccountServer) -> None:
    c = srv.client()
    page = await c.get("/account/login")
    anonymous = c.cookie
    r = await c.submit(page, "/account/login", {"username": "Alice", "password": PASSWORD})
    assert r.url.endswith("/account/") and r.status == 200
    assert c.cookie and c.cookie != anonymous          # a new id at login
    assert "Signed in as <strong>alice</strong>" in r.text
    assert "enabled" in r.text and "not set" in r.text
    logged_in = c.cookie
    out = await c.submit(r, "/account/logout", {})
    assert out.url.endswith("/account/login") and out.history == [303]
    assert any("Max-Age=0" in v for v in c.set_cookies)
    assert c.cookie != logged_in            # the login form made a new anonymous session
    # the old cookie is dead
    c.cookie = logged_in
    again = await c.get("/account/")
    assert again.url.endswith("/account/login")


# ---------------------------------------------------------------------- CSRF

@pytest_twisted.ensureDeferred
async def test_posts_without_or_with_wrong_csrf_change_nothing(srv: AccountServer) -> None:
    c = srv.client()
    page = await c.get("/account/login")
    r = await c.post("/account/login", {"username": "alice", "password": PASSWORD})
    assert r.status == 403 and "CSRF" in r.text and "Nothing was changed" in r.text
    assert "Signed in" not in r.text
    r = await c.post("/account/login", {"csrf": "x" * 43, "username": "alice",
                                        "password": PASSWORD})
    assert r.status == 403
    # no session at all
    stranger = srv.client()
    r = await stranger.post("/account/login", {"csrf": page.csrf(), "username": "alice",
                                               "password": PASSWORD})
    assert r.status == 403 and "no session" in r.text
    # logged in: a CSRF-less change of the ActiveSync password is refused
    home = await c.login("alice")
    for form in ({"action": "set", "new": "new secret 1", "confirm": "new secret 1"},
                 {"csrf": "", "action": "generate"}):
        r = await c.post("/account/as-password", form)
        assert r.status == 403 and "Nothing was changed" in r.text
    # another site's form (the browser says so)
    r = await c.post("/account/as-password", {"csrf": home.csrf(), "action": "generate"},
                     headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403
    assert not (await as_status(srv, "alice")).as_password.is_set
    # a token of another session does not work either
    other = srv.client()
    other_page = await other.get("/account/login")
    r = await c.post("/account/as-password", {"csrf": other_page.csrf(), "action": "generate"})
    assert r.status == 403
    assert not (await as_status(srv, "alice")).as_password.is_set


# ---------------------------------------------------------------------- login errors

@pytest_twisted.ensureDeferred
async def test_login_bad_input(srv: AccountServer) -> None:
    c = srv.client()
    r = await c.login("alice", "wrong password")
    assert r.status == 403 and "Wrong user name or password." in r.messages()
    assert 'value="alice"' in r.text                    # the name is kept, not the password
    assert "wrong password" not in r.text
    r = await c.login("", "x")
    assert r.status == 400 and "Enter your user name." in r.messages()
    r = await c.login("alice", "")
    assert r.status == 400 and "Enter your password." in r.messages()
    r = await c.login("nobody", PASSWORD)
    assert r.status == 403 and "Wrong user name or password." in r.messages()
    r = await c.login("alice", "p" * 5000)
    assert r.status == 400 and "too long" in r.text
    r = await c.login("alice", "p" * 2000)
    assert r.status == 400 and "The password is too long (at most 1024 characters)." in r.messages()
    r = await c.login("a" * 200, PASSWORD)
    assert r.status == 400 and any("user name is too long" in m for m in r.messages())
    r = await c.login("al*ce)(uid=*", PASSWORD)
    assert r.status in (400, 403) and "Signed in" not in r.text


@pytest_twisted.ensureDeferred
async def test_login_with_email_code(srv: AccountServer) -> None:
    c = srv.client()
    n = len(srv.sink.messages)
    page = await c.login("bob")
    assert page.url.endswith("/account/login/code")
    assert "b***@example.org" in page.text
    assert "Signed in" not in page.text
    # the overview is not reachable yet
    assert (await c.get("/account/")).url.endswith("/account/login/code")
    code = await srv.code_for("bob@example.org", n)
    wrong = f"{(int(code) + 1) % 1000000:06d}"
    r = await c.submit(page, "/account/login/code", {"code": wrong})
    assert r.status == 403 and any(m.startswith("Wrong code (4 tries left") for m in r.messages())
    r = await c.submit(page, "/account/login/code", {"code": "12ab"})
    assert r.status == 400 and "6 digits" in r.text
    r = await c.submit(page, "/account/login/code", {"code": ""})
    assert r.status == 400 and "Enter the security code." in r.messages()
    r = await c.submit(page, "/account/login/code", {"code": code[:3] + " " + code[3:]})
    assert r.url.endswith("/account/") and "Signed in as <strong>bob</strong>" in r.text
    assert "phones are refused until you set one" in r.text


@pytest_twisted.ensureDeferred
async def test_expired_and_replayed_email_codes(srv: AccountServer) -> None:
    c = srv.client()
    n = len(srv.sink.messages)
    page = await c.login("bob")
    code = await srv.code_for("bob@example.org", n)
    # too soon for another one
    r = await c.submit(page, "/account/login/send", {})
    assert r.status == 429 and r.header("retry-after")
    assert "less than 30 seconds ago" in r.text
    srv.clock.advance(601)
    r = await c.submit(page, "/account/login/code", {"code": code})
    assert r.status == 403 and "Signed in" not in r.text
    assert any(m.startswith("The code has expired") for m in r.messages()), r.messages()
    assert "Send a new code" in r.text
    # a new login, a new code; once used it cannot be used again
    home = await login_2fa(srv, c, "bob", "bob@example.org")
    assert "Signed in as <strong>bob</strong>" in home.text
    used = srv.sink.messages[-1].code()
    other = srv.client()
    page = await other.login("bob")
    n = len(srv.sink.messages)
    r = await other.submit(page, "/account/login/code", {"code": used})
    assert "Signed in" not in r.text and r.status == 403
    assert len(srv.sink.messages) >= n


# ---------------------------------------------------------------------- session expiry

@pytest_twisted.ensureDeferred
async def test_idle_and_absolute_expiry(srv: AccountServer) -> None:
    c = srv.client()
    home = await c.login("alice")
    srv.clock.advance(15 * 60 + 1)
    r = await c.get("/account/")
    assert r.url.endswith("/account/login")
    assert any("15 minutes without activity" in m for m in r.messages())
    # a form posted from the expired page is refused, nothing changed
    r = await c.post("/account/as-password", {"csrf": home.csrf(), "action": "generate"})
    assert r.status == 403
    assert not (await as_status(srv, "alice")).as_password.is_set
    # absolute: used every 10 minutes, the session still ends after 8 hours
    await c.login("alice")
    for _ in range(8 * 6):
        srv.clock.advance(600)
        r = await c.get("/account/")
    assert r.url.endswith("/account/login")
    assert any("8 hours" in m for m in r.messages())


# ---------------------------------------------------------------------- ActiveSync password

@pytest_twisted.ensureDeferred
async def test_set_activesync_password_bad_input_then_good(srv: AccountServer) -> None:
    c = srv.client()
    await c.login("alice")
    page = await c.get("/account/as-password")
    assert page.status == 200 and 'name="confirm"' in page.text
    cases = [
        ({"new": "", "confirm": ""}, "empty"),
        ({"new": "abcdefgh1", "confirm": "abcdefgh2"}, "differ"),
        ({"new": "short", "confirm": "short"}, "at least 8"),
        ({"new": "é" * 40, "confirm": "é" * 40}, "too long"),
        ({"new": "x" * 73, "confirm": "x" * 73}, "too long"),
        ({"new": "tab\tinside", "confirm": "tab\tinside"}, "control characters"),
    ]
    for fields, expected in cases:
        r = await c.submit(page, "/account/as-password", {"action": "set", **fields})
        assert r.status == 400, (fields, r.status)
        assert any(expected in m for m in r.messages()), (expected, r.messages())
        assert fields["new"] not in r.text or not fields["new"]
        assert not (await as_status(srv, "alice")).as_password.is_set
    r = await c.submit(page, "/account/as-password", {"action": "set", "new": "phone pass 1",
                                                      "confirm": "phone pass 1"})
    assert r.status == 200 and r.url.endswith("/account/as-password")
    assert any("ActiveSync password is set" in m for m in r.messages())
    st = await as_status(srv, "alice")
    assert st.as_password.is_set and st.as_password.set_at
    assert "phone pass 1" not in r.text
    # the overview says so, never the password
    home = await c.get("/account/")
    assert "since" in home.text and "phone pass 1" not in home.text


@pytest_twisted.ensureDeferred
async def test_generate_is_shown_once_and_clear(srv: AccountServer) -> None:
    c = srv.client()
    await c.login("alice")
    page = await c.get("/account/as-password")
    r = await c.submit(page, "/account/as-password", {"action": "generate"})
    m = re.search(r'id="generated-password">([^<]+)<', r.text)
    assert m, r.text
    generated = m.group(1)
    assert re.fullmatch(r"[a-z2-9]{4}(-[a-z2-9]{4}){3}", generated)
    assert "shown only this once" in r.text
    again = await c.get("/account/as-password")
    assert generated not in again.text
    assert (await as_status(srv, "alice")).as_password.is_set
    r = await c.submit(again, "/account/as-password", {"action": "clear"})
    assert any("removed" in m for m in r.messages())
    assert not (await as_status(srv, "alice")).as_password.is_set
    r = await c.submit(again, "/account/as-password", {"action": "bogus"})
    assert r.status == 400


@pytest_twisted.ensureDeferred
async def test_changes_need_a_recent_verification(srv: AccountServer) -> None:
    c = srv.client()
    home = await login_2fa(srv, c, "bob", "bob@example.org")
    srv.clock.advance(6 * 60)
    r = await c.get("/account/as-password")
    assert "/account/verify?next=%2Faccount%2Fas-password" in r.url
    assert "You need to authenticate to proceed" in r.text and "Send me a code" in r.text
    r = await c.submit(home, "/account/as-password", {"action": "generate"})
    assert "/account/verify" in r.url
    assert not (await as_status(srv, "bob")).as_password.is_set
    verify = r
    # wrong password; then right password without code; then with a wrong code
    r = await c.submit(verify, "/account/verify", {"password": "nope", "code": "123456",
                                                    "next": "/account/as-password"})
    assert r.status == 403 and "Wrong user name or password." in r.messages()
    n = len(srv.sink.messages)
    r = await c.submit(verify, "/account/verify/send", {"next": "/account/as-password"})
    assert any("A code was sent to b***@example.org" in m for m in r.messages())
    code = await srv.code_for("bob@example.org", n)
    r = await c.submit(r, "/account/verify", {"password": PASSWORD, "code": "",
                                               "next": "/account/as-password"})
    assert r.status == 400 and "Enter the security code." in r.messages()
    r = await c.submit(r, "/account/verify", {"password": PASSWORD, "code": code,
                                               "next": "https://evil.example/"})
    assert r.url.endswith("/account/")                  # never off the page
    r = await c.get("/account/as-password")
    assert r.url.endswith("/account/as-password") and "Save" in r.text


# ---------------------------------------------------------------------- devices

@pytest_twisted.ensureDeferred
async def test_devices_wipe_and_remove(srv: AccountServer) -> None:
    alice = await srv.store.get_user("alice")
    now = srv.clock.seconds()
    await srv.store.save_device(alice, "PHONE1", device_type="iPhone", user_agent="iOS/17",
                                last_seen=now, last_sync=now - 120, protocol_version="16.1")
    await srv.store.save_device(alice, "TAB<2>", device_type="Android", last_seen=now)
    c = srv.client()
    home = await c.login("alice")
    assert "PHONE1" in home.text and "iPhone" in home.text and "2 minutes ago" in home.text
    assert "TAB&lt;2&gt;" in home.text and "TAB<2>" not in home.text
    confirm = await c.get("/account/devices/wipe?device=PHONE1")
    assert confirm.status == 200 and "Wipe this account from the device" in confirm.text
    # the account-only wipe is offered first (issue #14 point 3)
    assert confirm.text.index("Wipe this account") < confirm.text.index("Wipe the whole")
    r = await c.submit(confirm, "/account/devices/wipe", {"device": "PHONE1"})
    assert any("data requested for PHONE1" in m for m in r.messages())
    assert (await srv.store.get_device(alice, "PHONE1"))["info"]["wipe_kind"] == "account"
    assert (await srv.store.get_device(alice, "PHONE1"))["wipe"] == "pending"
    assert "requested" in r.text
    r = await c.submit(confirm, "/account/devices/remove", {"device": "TAB<2>"})
    assert await srv.store.get_device(alice, "TAB<2>") is None
    r = await c.submit(confirm, "/account/devices/wipe", {"device": "NOPE"})
    assert r.status == 404 and "no such device" in r.text
    assert (await c.get("/account/devices/wipe?device=NOPE")).status == 404
    # another user's device is not reachable
    bob_c = srv.client()
    await login_2fa(srv, bob_c, "bob", "bob@example.org")
    r = await bob_c.get("/account/devices/wipe?device=PHONE1")
    assert r.status == 404


# ---------------------------------------------------------------------- 2FA and TOTP

@pytest_twisted.ensureDeferred
async def test_totp_enrolment_then_login_with_totp(srv: AccountServer) -> None:
    c = srv.client()
    await c.login("alice")
    page = await c.get("/account/2fa")
    assert "Use an authenticator app" in page.text and "Off" in page.text
    r = await c.submit(page, "/account/2fa/totp", {})
    assert r.url.endswith("/account/2fa/totp")
    img = re.search(r'src="data:image/svg\+xml;base64,([^"]+)"', r.text)
    assert img
    svg = base64.b64decode(img.group(1)).decode()
    assert svg.startswith("<svg") and 'xmlns="http://www.w3.org/2000/svg"' in svg
    assert "viewBox=" in svg                  # an image of its own, scaled by the page
    m = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', r.text)
    assert m
    secret = m.group(1).replace(" ", "")
    bad = await c.submit(r, "/account/2fa/totp/confirm", {"code": "000000"
                         if pyotp.TOTP(secret).now() != "000000" else "111111"})
    assert bad.status == 403 and "Wrong code" in bad.text
    assert (await as_status(srv, "alice")).two_factor == "none"
    code = pyotp.TOTP(secret).at(srv.clock.seconds())
    ok = await c.submit(r, "/account/2fa/totp/confirm", {"code": code})
    assert any("authenticator app" in m for m in ok.messages())
    assert (await as_status(srv, "alice")).two_factor == "totp"
    # log in again: password, then the app's code; the same code twice is a replay
    c2 = srv.client()
    page = await c2.login("alice")
    assert "authenticator app" in page.text
    r = await c2.submit(page, "/account/login/code", {"code": code})
    assert r.status == 403 and "already used" in r.text
    srv.clock.advance(30)
    r = await c2.submit(page, "/account/login/code",
                        {"code": pyotp.TOTP(secret).at(srv.clock.seconds())})
    assert "Signed in as <strong>alice</strong>" in r.text
    # switching back to e-mail codes
    tf = await c2.get("/account/2fa")
    r = await c2.submit(tf, "/account/2fa", {"method": "email"})
    assert (await as_status(srv, "alice")).two_factor == "email"
    assert "Only an administrator" in r.text


# ---------------------------------------------------------------------- admin

@pytest_twisted.ensureDeferred
async def test_admin_pages(srv: AccountServer) -> None:
    user = srv.client()
    await user.login("alice")
    r = await user.get("/account/admin")
    assert r.status == 403 and "administrators" in r.text
    page = await user.get("/account/")
    r = await user.submit(page, "/account/admin/activesync", {"user": "bob", "state": "off"})
    assert r.status == 403
    assert (await as_status(srv, "bob")).activesync

    c = srv.client()
    home = await c.login("root")
    assert 'href="/account/admin"' in home.text
    admin = await c.get("/account/admin")
    assert admin.status == 200 and "alice" in admin.text and "bob" in admin.text
    r = await c.submit(admin, "/account/admin/activesync", {"user": "alice", "state": "off"})
    assert any("ActiveSync is off for alice" in m for m in r.messages())
    assert not (await as_status(srv, "alice")).activesync
    await c.submit(admin, "/account/admin/activesync", {"user": "alice", "state": "on"})
    # 2FA on for alice, who has ActiveSync and no ActiveSync password: the page asks
    confirm = await c.get("/account/admin/2fa?user=alice&method=email")
    assert "requires a dedicated" in confirm.text and 'name="confirm"' in confirm.text
    r = await c.submit(confirm, "/account/admin/2fa", {"user": "alice", "method": "email",
                                                       "new": "first pass 1",
                                                       "confirm": "first pass 2"})
    assert r.status == 400 and any("differ" in m for m in r.messages())
    st = await as_status(srv, "alice")
    assert st.two_factor == "none" and not st.as_password.is_set
    r = await c.submit(confirm, "/account/admin/2fa", {"user": "alice", "method": "email",
                                                       "new": "first pass 1",
                                                       "confirm": "first pass 1"})
    assert r.url.endswith("/account/admin")
    st = await as_status(srv, "alice")
    assert st.two_factor == "email" and st.as_password.is_set
    # without a password: on, and the message says EAS refuses until one is set
    await srv.add_user("carol", email="carol@example.org")
    r = await c.submit(confirm, "/account/admin/2fa", {"user": "carol", "method": "email"})
    assert any("refuses this user until" in m for m in r.messages())
    r = await c.submit(confirm, "/account/admin/2fa", {"user": "carol", "method": "off"})
    assert (await as_status(srv, "carol")).two_factor == "none"
    # an authenticator app is the user's own business (its secret is shown to them only)
    r = await c.get("/account/admin/2fa?user=carol&method=totp")
    assert r.url.endswith("/account/admin")
    assert any("set up an authenticator app themselves" in m for m in r.messages())
    r = await c.submit(confirm, "/account/admin/2fa", {"user": "carol", "method": "totp"})
    assert r.status == 400 and (await as_status(srv, "carol")).two_factor == "none"
    r = await c.submit(confirm, "/account/admin/2fa", {"user": "nobody", "method": "email"})
    assert r.status in (400, 404) and "nobody" in r.text
    # 2FA for everyone
    r = await c.submit(admin, "/account/admin/2fa-everyone", {"state": "on"})
    assert any("for everyone is on" in m for m in r.messages())
    assert any("carol" in m for m in r.messages())
    assert await srv.service.two_factor_all()
    r = await c.submit(admin, "/account/admin/2fa-everyone", {"state": "maybe"})
    assert r.status == 400
    assert await srv.service.two_factor_all()


# ---------------------------------------------------------------------- JSON API

@pytest_twisted.ensureDeferred
async def test_json_api(srv: AccountServer) -> None:
    c = srv.client()
    s = (await c.get("/account/api/session")).json()
    assert s["logged_in"] is False and s["csrf_token"]
    r = await c.api("POST", "login", {"username": "bob", "password": PASSWORD}, csrf=None)
    assert r.status == 403 and r.json()["error"]["code"] == "csrf"
    n = len(srv.sink.messages)
    r = await c.api("POST", "login", {"username": "bob", "password": PASSWORD})
    assert r.status == 200, r.text
    body = r.json()
    assert body["logged_in"] is False
    assert body["code_required"] == {"method": "email", "sent_to": "b***@example.org"}
    code = await srv.code_for("bob@example.org", n)
    r = await c.api("GET", "status")
    assert r.status == 401
    r = await c.api("POST", "login/code", {"code": "000000" if code != "000000" else "111111"})
    assert r.status == 403 and r.json()["error"]["code"] == "wrong-code"
    r = await c.api("POST", "login/code", {"code": code})
    assert r.status == 200 and r.json()["logged_in"] and r.json()["verified_until"]
    st = (await c.api("GET", "status")).json()
    assert st["user"] == "bob" and st["two_factor"] == "email" and st["eas_refused"]
    r = await c.api("POST", "as-password", {"new": "abcdefgh1", "confirm": "abcdefgh2"})
    assert r.status == 400 and r.json()["error"]["code"] == "mismatch"
    r = await c.request("POST", "/account/api/as-password", raw=b"new=x",
                        headers={"X-CSRF-Token": s["csrf_token"],
                                 "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status in (400, 403)
    r = await c.api("POST", "as-password", {"new": "api pass 12", "confirm": "api pass 12"})
    assert r.status == 200 and r.json()["activesync_password"]["set"]
    assert "api pass" not in r.text
    r = await c.api("POST", "as-password/generate")
    assert r.status == 200 and len(r.json()["password"]) == 19
    r = await c.api("GET", "devices")
    assert r.json() == {"devices": []}
    r = await c.api("POST", "devices/wipe", {"device_id": "NOPE"})
    assert r.status == 404
    r = await c.api("GET", "admin/users")
    assert r.status == 403
    srv.clock.advance(6 * 60)
    r = await c.api("POST", "as-password/clear")
    assert r.status == 403 and r.json()["error"]["code"] == "verify"
    r = await c.api("POST", "verify", {"password": PASSWORD})
    assert r.status == 400 and r.json()["error"]["code"] == "code_missing"
    n = len(srv.sink.messages)
    assert (await c.api("POST", "verify/send")).json()["sent_to"] == "b***@example.org"
    code = await srv.code_for("bob@example.org", n)
    r = await c.api("POST", "verify", {"password": PASSWORD, "code": code})
    assert r.status == 200 and r.json()["verified_until"]
    r = await c.api("POST", "as-password/clear")
    assert r.status == 200 and r.json()["eas_refused"]
    r = await c.api("POST", "logout")
    assert r.json() == {"logged_in": False}
    assert (await c.api("GET", "status")).status == 401


@pytest_twisted.ensureDeferred
async def test_json_api_admin(srv: AccountServer) -> None:
    c = srv.client()
    r = await c.api("POST", "login", {"username": "root", "password": PASSWORD})
    assert r.json()["logged_in"] and r.json()["admin"]
    r = await c.api("GET", "admin/users")
    names = [u["name"] for u in r.json()["users"]]
    assert names == ["alice", "bob", "root"]
    r = await c.api("POST", "admin/activesync", {"user": "alice", "on": False})
    assert r.status == 200
    assert not (await as_status(srv, "alice")).activesync
    r = await c.api("POST", "admin/activesync", {"user": "alice", "on": "no"})
    assert r.status == 400
    r = await c.api("POST", "admin/2fa", {"user": "alice", "method": "email"})
    assert r.status == 200 and "on for alice" in r.json()["message"]
    # "off" turns it off; "none" is an alias (issue #13 point 5)
    r = await c.api("POST", "admin/2fa", {"user": "alice", "method": "none"})
    assert r.status == 200, r.json()
    assert (await as_status(srv, "alice")).two_factor == "none"
    users = (await c.api("GET", "admin/users")).json()["users"]
    assert [u["two_factor"] for u in users if u["name"] == "alice"] == ["off"]
    r = await c.api("POST", "admin/2fa", {"user": "alice", "method": "email"})
    assert r.status == 200
    r = await c.api("POST", "admin/2fa-everyone", {"on": True})
    assert r.json()["two_factor_everyone"] is True
    r = await c.api("POST", "admin/2fa-everyone", {"on": False})
    assert r.json()["two_factor_everyone"] is False
    r = await c.request("POST", "/account/api/admin/activesync", raw=b"{not json",
                        headers={"X-CSRF-Token": (await c.api("GET", "session")).json()[
                            "csrf_token"], "Content-Type": "application/json"})
    assert r.status == 400 and r.json()["error"]["code"] == "bad_request"


# ---------------------------------------------------------------------- logs

@pytest_twisted.ensureDeferred
async def test_no_secret_in_any_log_line(srv: AccountServer) -> None:
    from twisted.logger import formatEvent

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event) + " " + repr(event))

    globalLogPublisher.addObserver(observe)
    try:
        c = srv.client()
        n = len(srv.sink.messages)
        page = await c.login("bob")
        code = await srv.code_for("bob@example.org", n)
        await c.submit(page, "/account/login/code", {"code": code})
        page = await c.get("/account/as-password")
        await c.submit(page, "/account/as-password", {"action": "set", "new": "Sekrit-Phone-9",
                                                      "confirm": "Sekrit-Phone-9"})
        r = await c.submit(page, "/account/as-password", {"action": "generate"})
        generated = re.search(r'id="generated-password">([^<]+)<', r.text).group(1)
        await c.login("alice", "Wrong-Pass-77")
    finally:
        globalLogPublisher.removeObserver(observe)
    text = "\n".join(lines)
    assert "account POST /account/login" in text
    for secret in (PASSWORD, code, "Sekrit-Phone-9", generated, "Wrong-Pass-77",
                   page.csrf(), c.cookie or "no cookie"):
        assert secret not in text, secret


@pytest_twisted.ensureDeferred
async def test_json_api_devices_and_totp(srv: AccountServer) -> None:
    alice = await srv.store.get_user("alice")
    await srv.store.save_device(alice, "PHONE1", device_type="iPhone")
    await srv.store.save_device(alice, "PHONE2", device_type="Android")
    c = srv.client()
    assert (await c.api("POST", "login", {"username": "alice", "password": PASSWORD})
            ).json()["logged_in"]
    r = await c.api("GET", "devices")
    assert [d["device_id"] for d in r.json()["devices"]] == ["PHONE1", "PHONE2"]
    r = await c.api("POST", "devices/wipe", {"device_id": "PHONE1"})
    assert r.status == 400 and "16.1" in r.json()["error"]["message"]   # never seen at 16.1
    r = await c.api("POST", "devices/wipe", {"device_id": "PHONE1", "full": True})
    assert {d["device_id"]: d["wipe"] for d in r.json()["devices"]}["PHONE1"] == "pending"
    r = await c.api("POST", "devices/remove", {"device_id": "PHONE2"})
    assert [d["device_id"] for d in r.json()["devices"]] == ["PHONE1"]
    r = await c.api("POST", "devices/remove", {})
    assert r.status == 400 and "device_id" in r.json()["error"]["message"]
    r = await c.api("POST", "2fa", {"method": "sms"})
    assert r.status == 400
    r = await c.api("POST", "2fa/totp/confirm", {"code": "123456"})
    assert r.status == 400 and r.json()["error"]["code"] == "not-enrolled"
    e = (await c.api("POST", "2fa/totp")).json()
    assert e["uri"].startswith("otpauth://totp/") and e["qr_svg"].startswith("<svg")
    code = pyotp.TOTP(e["secret"]).at(srv.clock.seconds())
    r = await c.api("POST", "2fa/totp/confirm", {"code": code})
    assert r.status == 200 and r.json()["two_factor"] == "totp"
    r = await c.api("POST", "2fa", {"method": "email"})
    assert r.status == 200 and r.json()["two_factor"] == "email"
    # the e-mail code step of an API login, with a new code on request
    other = srv.client()
    r = await other.api("POST", "login", {"username": "alice", "password": PASSWORD})
    assert r.json()["code_required"]["method"] == "email"
    srv.clock.advance(31)
    n = len(srv.sink.messages)
    r = await other.api("POST", "login/send")
    assert r.status == 200 and r.json() == {"sent_to": "a***@example.org"}
    code = await srv.code_for("alice@example.org", n)
    r = await other.api("POST", "login/code", {"code": code})
    assert r.json()["logged_in"] and r.json()["user"] == "alice"


@pytest_twisted.ensureDeferred
async def test_malformed_requests(srv: AccountServer) -> None:
    c = srv.client()
    page = await c.get("/account/login")
    r = await c.submit(page, "/account/login", {"username": "alice", "password": PASSWORD,
                                                "junk": "x" * 5000})
    assert r.status == 400 and "too long" in r.text
    r = await c.request("POST", "/account/login", raw=b"csrf=" + b"a" * 70000,
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 400 and "too large" in r.text
    assert (await c.request("PUT", "/account/login")).status == 405
    assert (await c.request("DELETE", "/account/api/status")).status in (404, 405)
    r = await c.api("POST", "login", ["a", "list"])
    assert r.status == 400 and r.json()["error"]["code"] == "bad_request"
    r = await c.api("POST", "login", {"username": 5, "password": PASSWORD})
    assert r.status == 400
    assert "Signed in" not in (await c.get("/account/")).text


@pytest_twisted.ensureDeferred
async def test_database_down_is_503_not_a_refusal(srv: AccountServer,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from easync.errors import Unavailable

    c = srv.client()
    await c.login("alice")

    async def down(*args: Any, **kw: Any) -> Any:
        raise Unavailable("database is locked")

    monkeypatch.setattr(srv.service, "status", down)
    monkeypatch.setattr(srv.service, "verify_login", down)
    r = await c.get("/account/")
    assert r.status == 503 and r.header("retry-after") == "30"
    assert "cannot answer right now. Nothing was changed" in r.text
    r = await c.api("GET", "status")
    assert r.status == 503 and r.json()["error"]["code"] == "unavailable"
    r = await srv.client().login("alice")
    assert r.status == 503 and "Wrong" not in r.text


@pytest_twisted.ensureDeferred
async def test_login_lockout_is_429_with_a_clear_message(srv: AccountServer) -> None:
    c = srv.client()
    for _ in range(10):
        r = await c.login("alice", "not it")
        assert r.status in (403, 429)
    r = await c.login("alice")                          # even the right password now
    assert r.status == 429 and r.header("retry-after")
    assert any("locked out" in m for m in r.messages()), r.messages()
    assert "Signed in" not in r.text
    entries = await srv.service.audit_log("alice")
    assert any(e.action == "lockout" or "lock" in e.action for e in entries)


@pytest_twisted.ensureDeferred
async def test_admin_flag_taken_away_mid_session(srv: AccountServer) -> None:
    c = srv.client()
    home = await c.login("root")
    admin = await c.get("/account/admin")
    assert admin.status == 200
    await srv.service.set_admin("root", False)
    r = await c.submit(home, "/account/admin/activesync", {"user": "alice", "state": "off"})
    assert r.status == 403 and "administrator" in r.text
    assert (await as_status(srv, "alice")).activesync
    r = await c.get("/account/admin")
    assert r.status == 403 and "administrator" in r.text
