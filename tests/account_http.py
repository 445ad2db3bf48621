"""Test helpers for the account page: the page served in this process on a real TCP
listener over the real account service (SQLite, bcrypt, the SMTP mailer talking to a
real SMTP listener), a clock the tests can move forward, and a small HTTP client that
keeps the session cookie and follows redirects the way a browser does."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin

import treq
from smtp_sink import SmtpSink
from twisted.internet.defer import Deferred
from twisted.web import server
from twisted.web.resource import Resource

from backends.sql.authstore import SqlAuthStore
from backends.sql.store import SqlStore
from easync.account.adapter import ServiceOps
from easync.account.request import COOKIE
from easync.account.web import AccountResource
from easync.auth.accounts import Accounts
from easync.auth.keys import SecretBox
from easync.auth.local import LocalChecker, hash_secret
from easync.auth.mail import SmtpMailer
from easync.auth.throttle import ThrottleRules

PASSWORD = "login password 1"


class ShiftedClock:
    """The real reactor, whose ``seconds()`` the test can move forward."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.offset = 0.0

    def seconds(self) -> float:
        return float(self._reactor.seconds()) + self.offset

    def advance(self, dt: float) -> None:
        self.offset += dt

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    text: str
    url: str
    history: list[int] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.text)

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.text)
        assert m, f"no CSRF field in {self.url}"
        return m.group(1)

    def messages(self) -> list[str]:
        return [re.sub(r"\s+", " ", m) for m in
                re.findall(r'<div class="flash [a-z]+" role="\w+">(.*?)</div>', self.text,
                           re.DOTALL)]


class Client:
    """Keeps the ``easync_account`` cookie (whatever its Secure flag: the tests talk
    plain HTTP on loopback) and follows 303 redirects."""

    def __init__(self, base: str, accept_language: str | None = None) -> None:
        self.base = base
        self.cookie: str | None = None
        self.set_cookies: list[str] = []
        # sent with every request, redirects included, as a browser's language setting
        self.accept_language = accept_language

    async def request(self, method: str, path: str, *, form: dict[str, str] | None = None,
                      body: Any = None, headers: dict[str, str] | None = None,
                      follow: bool = True, raw: bytes | None = None) -> Reply:
        url = urljoin(self.base, path)
        history: list[int] = []
        while True:
            h = {"User-Agent": "account-test"}
            if self.accept_language is not None:
                h["Accept-Language"] = self.accept_language
            if self.cookie:
                h["Cookie"] = f"{COOKIE.decode()}={self.cookie}"
            data: bytes | None = raw
            if form is not None:
                h["Content-Type"] = "application/x-www-form-urlencoded"
                data = urlencode(form).encode()
            elif body is not None:
                h["Content-Type"] = "application/json"
                data = json.dumps(body).encode()
            h.update(headers or {})
            resp = await treq.request(method, url, data=data, headers=h,
                                      allow_redirects=False)
            text = (await resp.content()).decode("utf-8", "replace")
            hdrs = {k.decode().lower(): [v.decode() for v in vs]
                    for k, vs in resp.headers.getAllRawHeaders()}
            self._cookies(hdrs.get("set-cookie", []))
            if follow and resp.code in (301, 302, 303) and "location" in hdrs:
                history.append(resp.code)
                url = urljoin(url, hdrs["location"][0])
                method, form, body, raw, headers = "GET", None, None, None, None
                continue
            return Reply(resp.code, hdrs, text, url, history)

    def _cookies(self, values: list[str]) -> None:
        for raw in values:
            self.set_cookies.append(raw)
            c: SimpleCookie = SimpleCookie()
            c.load(raw)
            morsel = c.get(COOKIE.decode())
            if morsel is None:
                continue
            if morsel["max-age"] == "0" or not morsel.value:
                self.cookie = None
            else:
                self.cookie = morsel.value

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, form: dict[str, str] | None = None, **kw: Any) -> Reply:
        return await self.request("POST", path, form=form, **kw)

    async def submit(self, page: Reply, action: str, fields: dict[str, str]) -> Reply:
        """POST a form of ``page`` with its CSRF token."""
        return await self.post(action, {"csrf": page.csrf(), **fields})

    async def login(self, user: str, password: str = PASSWORD) -> Reply:
        page = await self.get("/account/login")
        return await self.submit(page, "/account/login",
                                 {"username": user, "password": password})

    async def api(self, method: str, path: str, body: Any = None,
                  csrf: str | None = "auto") -> Reply:
        headers = {}
        if csrf == "auto":
            csrf = (await self.get("/account/api/session")).json()["csrf_token"]
        if csrf:
            headers["X-CSRF-Token"] = csrf
        return await self.request(method, f"/account/api/{path}", body=body,
                                  headers=headers)


class AccountServer:
    """The account page over the real service, on 127.0.0.1, with an SMTP listener."""

    def __init__(self, reactor: Any, tmp: Path) -> None:
        self.reactor = reactor
        self.tmp = tmp
        self.clock = ShiftedClock(reactor)
        self.store = SqlStore(reactor, f"sqlite:///{tmp / 'account.sqlite'}")
        self.sink = SmtpSink(reactor)
        self.port: Any = None

    async def start(self) -> AccountServer:
        await self.store.open()
        self.sink.listen()
        mailer = SmtpMailer(self.reactor, "127.0.0.1", self.sink.port_number,
                            sender="easync@test.example", timeout=10)
        self.checker = LocalChecker(self.store, self.clock)
        self.service = Accounts(self.store, self.store, SqlAuthStore(self.store), self.clock,
                                primary=self.checker, mailer=mailer,
                                box=SecretBox.ephemeral(),
                                rules=ThrottleRules(delay=0.0))
        self.resource = AccountResource(ServiceOps(self.service), self.clock)
        root = Resource()
        root.putChild(b"account", self.resource)
        site = server.Site(root)
        site.noisy = False
        self.port = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def client(self, accept_language: str | None = None) -> Client:
        return Client(self.base, accept_language)

    async def add_user(self, name: str, *, email: str | None = None, activesync: bool = True,
                       admin: bool = False, twofa: str | None = None) -> None:
        await self.store.add_user(name, hash_secret(PASSWORD), email, activesync)
        if admin:
            await self.service.set_admin(name, True)
        if twofa:
            await self.service.set_two_factor(name, twofa)

    async def code_for(self, to: str, after: int) -> str:
        """The code in the first message to ``to`` since message number ``after``."""
        d: Deferred[Any] = self.sink.wait_for(to, after)
        d.addTimeout(15, self.reactor)
        return (await d).code()

    async def stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
        await self.sink.stop()
        await self.store.close()
