"""Shared set-up for the CRM store tests: a fake CRM on a loopback port, a SQLite
store, a ``CrmStore`` between them (real HTTP through treq, the real reactor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakecrm import FakeCrm, serve
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
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
            self.store.stopService()
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
