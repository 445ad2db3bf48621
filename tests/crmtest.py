"""Shared set-up for the CRM store tests: a fake CRM on a loopback port, a SQLite
store, a ``CrmStore`` between them (real HTTP through treq, the real reactor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakecrm import FakeCrm, serve
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.web.client import Agent, HTTPConnectionPool

from backends.crm.client import CrmClient
from backends.crm.store import CrmStore
from backends.sql.store import SqlStore
from easync.model import User


def reactor() -> Any:
    from twisted.internet import reactor as r

    return r


class Hub:
    """A change hub that records what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str]] = []
        self.waiters: list[tuple[int, str, Deferred[None]]] = []

    def publish(self, user_id: int, folder_id: str) -> None:
        self.published.append((user_id, folder_id))
        for w in list(self.waiters):
            if (w[0], w[1]) == (user_id, folder_id):
                self.waiters.remove(w)
                w[2].callback(None)

    def next(self, user_id: int, folder_id: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self.waiters.append((user_id, folder_id, d))
        return d


@dataclass
class Env:
    crm: FakeCrm
    sql: SqlStore
    store: CrmStore
    client: CrmClient
    hub: Hub
    port: Any
    pool: Any
    users: dict[str, User] = field(default_factory=dict)

    async def folders(self, name: str) -> dict[str, str]:
        return {f.name: f.server_id for f in await self.store.list_folders(self.users[name])}

    async def close(self) -> None:
        if self.store.running:
            await maybeDeferred(self.store.stopService)     # a poll under way ends first
        await self.pool.closeCachedConnections()
        await self.port.stopListening()
        await self.sql.close()


async def make_env(tmp_path: Path, *, flavour: str = "vtenext", users: tuple[str, ...] = (
        "dana",), poll_interval: float = 0.2, timeout: float = 5.0, start: bool = False,
        crm: FakeCrm | None = None, **store_kw: Any) -> Env:
    r = reactor()
    crm = crm or FakeCrm(flavour)
    port = serve(crm, r)
    from backends.crm.store import CrmStore as _  # noqa: F401 - import check

    pool = HTTPConnectionPool(r, persistent=True)
    http = HTTPClient(Agent(r, pool=pool))
    url = f"http://127.0.0.1:{port.getHost().port}/webservice.php"
    client = CrmClient(r, http, url, "admin", "adminKEY123", timeout=timeout, login_retry=30)
    sql = SqlStore(r, f"sqlite:///{tmp_path / 'mirror.sqlite'}")
    await sql.open()
    hub = Hub()
    store = CrmStore(r, sql, client, notifier=hub, poll_interval=poll_interval, **store_kw)
    await store.open()
    env = Env(crm, sql, store, client, hub, port, pool)
    for name in users:
        if name not in [u["user_name"] for u in crm.users.values()]:
            crm.add_user(name, email=f"{name}@example.org")
        env.users[name] = await sql.add_user(name, None, f"{name}@example.org", True)
    if start:
        store.startService()
    return env


class CrmUnderTest:
    """The CRM store under the SQL store's contract tests (tests/test_store_contract.py):
    the ``IItemStore`` methods go to a ``CrmStore`` over a fake CRM, everything else
    (users, device state, the SQL extras such as ``linked_contacts``) to the
    ``SqlStore`` that holds the mirror.  ``add_user`` also makes the CRM user."""

    def __init__(self, crm_store: CrmStore, sql: SqlStore, fake: FakeCrm, port: Any,
                 pool: Any) -> None:
        from easync.interfaces import IItemStore

        self.crm = crm_store
        self.sql = sql
        self.fake = fake
        self._port = port
        self._pool = pool
        self._items = set(IItemStore.names())

    def __getattr__(self, name: str) -> Any:
        if name in self._items:
            return getattr(self.crm, name)
        return getattr(self.sql, name)

    async def add_user(self, name: str, password_hash: str | None, email: str | None,
                       activesync: bool) -> User:
        try:
            self.fake.user_id(name)
        except KeyError:
            self.fake.add_user(name, email=email)
        return await self.sql.add_user(name, password_hash, email, activesync)

    async def close(self) -> None:
        await self._pool.closeCachedConnections()
        await self._port.stopListening()


async def crm_under_test(sql: SqlStore) -> CrmUnderTest:
    r = reactor()
    fake = FakeCrm("vtenext")
    port = serve(fake, r)
    pool = HTTPConnectionPool(r, persistent=True)
    client = CrmClient(r, HTTPClient(Agent(r, pool=pool)),
                       f"http://127.0.0.1:{port.getHost().port}/webservice.php", "admin",
                       "adminKEY123", timeout=10)
    store = CrmStore(r, sql, client)
    await store.open()
    return CrmUnderTest(store, sql, fake, port, pool)
