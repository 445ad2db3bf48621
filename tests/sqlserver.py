"""Shared set-up for the in-process command tests: an ``EasServer`` with one user
(ActiveSync on) on a fresh store — ``memory_server`` on ``easync.testing.MemoryStore``
for tests of the protocol that need no SQL, ``sqlite_server`` on SQLite for those that
depend on the SQL store (its threads, its costs) — and waiting for the store's threads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from easync.handler import EasServer
from easync.model import User
from easync.notify import LocalNotifier
from easync.settings import Settings


@asynccontextmanager
async def sqlite_server(tmp_path: Path, filename: str = "easync.sqlite",
                        user: tuple[str, str] = ("alice", "alice@example.com"), *,
                        clocked: bool = False, settings: Settings | None = None
                        ) -> AsyncIterator[tuple[EasServer, User, Any]]:
    """``(server, user, store)``; the server's clock (and its notifier's) is the real
    reactor, or with ``clocked`` a ``Clock`` set to the reactor's time, made once the
    user exists.  The store is closed on leaving."""
    from twisted.internet import reactor

    from backends.sql.store import SqlStore

    store = SqlStore(reactor, f"sqlite:///{tmp_path / filename}")
    async with _served(store, user, clocked, settings) as made:
        yield made


@asynccontextmanager
async def memory_server(tmp_path: Path | None = None, filename: str = "",
                        user: tuple[str, str] = ("alice", "alice@example.com"), *,
                        clocked: bool = False, settings: Settings | None = None
                        ) -> AsyncIterator[tuple[EasServer, User, Any]]:
    """As ``sqlite_server``, on an in-memory store that passes the same store contract
    suite (``tmp_path`` and ``filename`` are ignored)."""
    from easync.testing import MemoryStore

    async with _served(MemoryStore(), user, clocked, settings) as made:
        yield made


@asynccontextmanager
async def _served(store: Any, user: tuple[str, str], clocked: bool,
                  settings: Settings | None) -> AsyncIterator[tuple[EasServer, User, Any]]:
    from twisted.internet import reactor
    from twisted.internet.task import Clock

    await store.open()
    name, email = user
    account = await store.add_user(name, None, email, True)
    clock: Any = reactor
    if clocked:
        clock = Clock()
        clock.advance(reactor.seconds())
    server = EasServer(users=store, items=store, state=store, notifier=LocalNotifier(clock),
                       clock=clock, settings=settings if settings is not None else Settings())
    yield server, account, store
    await store.close()


async def until(cond: Callable[[], Any], timeout: float = 5.0) -> None:
    """Let the real reactor run (database threads) until cond() holds."""
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached")



async def listening_site(store: Any, users: dict[str, tuple[str, bool]],
                         settings: Settings | None = None) -> tuple[str, Any, Any]:
    """The ActiveSync site of an ``EasServer`` on ``store`` (users, items and state,
    opened here, with ``users``: name -> (password, ActiveSync on), e-mail
    name@example.org), local accounts, no provisioning unless ``settings`` say so, on a
    loopback port: ``(base URL, front door, port)``; the caller stops the port and
    closes the store."""
    import bcrypt
    from twisted.internet import reactor

    from easync.auth import build_door
    from easync.http.resource import make_site

    await store.open()
    for name, (password, activesync) in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()
        await store.add_user(name, hashed, f"{name}@example.org", activesync)
    server = EasServer(users=store, items=store, state=store,
                       notifier=LocalNotifier(reactor), clock=reactor,
                       settings=settings if settings is not None else
                       Settings(provisioning=False))
    door = build_door({"auth": "local"}, server, reactor)
    port = reactor.listenTCP(0, make_site(server, door),  # type: ignore[attr-defined]
                             interface="127.0.0.1")
    return f"http://127.0.0.1:{port.getHost().port}", door, port
