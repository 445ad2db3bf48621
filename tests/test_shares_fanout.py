"""A write to a folder shared with very many users wakes them all without holding the
reactor for all of them in one turn (issue #14 point 1 at scale; the "no request may
hold the reactor more than ~50 ms" rule; ``bench/bench_shared_fanout.py`` measures it).

``publish_to_holders`` publishes to every holder of the folder (MS-ASCMD 2.2.1.13
Ping: each holder's held Ping on it answers Status 2); here it must do so a slice of
holders per reactor turn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import needs
import pytest_twisted
from twisted.internet.task import deferLater

from backends.sql.shares import EVERYONE
from backends.sql.store import SqlStore
from easync import syncengine
from easync.handler import EasServer
from easync.interfaces import ChangeHint
from easync.notify import LocalNotifier


class TurnRecorder(LocalNotifier):
    """A real in-process hub that also notes how many publishes each reactor turn
    made (a turn ends when a call scheduled for "now" runs)."""

    def __init__(self, reactor: Any) -> None:
        super().__init__(reactor)
        self.reactor = reactor
        self.turns: list[list[tuple[int, str, ChangeHint | None]]] = []
        self._open = False

    def publish(self, user_id: int, folder_id: str, hint: ChangeHint | None = None) -> None:
        if not self._open:
            self._open = True
            self.turns.append([])
            self.reactor.callLater(0, self._close)
        self.turns[-1].append((user_id, folder_id, hint))
        super().publish(user_id, folder_id, hint)

    def _close(self) -> None:
        self._open = False


@pytest_twisted.ensureDeferred
async def test_holders_published_a_slice_per_turn(tmp_path: Path, monkeypatch: Any) -> None:
    from twisted.internet import reactor

    monkeypatch.setattr(syncengine, "PUBLISH_SLICE", 40, raising=False)
    store = SqlStore(reactor, f"sqlite:///{tmp_path / 'store.sqlite'}")
    await store.open()
    try:
        users = [await store.add_user(f"u{i}", None, None, True) for i in range(130)]
        owner = users[0]
        folder = next(f for f in await store.list_folders(owner) if f.name == "Contacts")
        await store.share_folder(folder.server_id, EVERYONE, True)
        hub = TurnRecorder(reactor)
        server = EasServer(users=store, items=store, state=store, notifier=hub,
                           clock=reactor)
        await syncengine.publish_to_holders(server, users[5], folder.server_id,
                                            ChangeHint(7, "dev5"))
        # the writer's call returns after the first slice (its Sync answer does not
        # wait for every holder); the rest follow, a slice per turn
        assert sum(len(t) for t in hub.turns) <= 1 + 40
        for _ in range(50):
            if sum(len(t) for t in hub.turns) >= len(users):
                break
            await deferLater(reactor, 0, lambda: None)
    finally:
        await store.close()
    published = [p for turn in hub.turns for p in turn]
    # every holder once: the writer with its device's hint, the others without a device
    assert sorted(u for u, _f, _h in published) == sorted(u.id for u in users)
    assert {(f, h) for u, f, h in published if u == users[5].id} == \
        {(folder.server_id, ChangeHint(7, "dev5"))}
    assert {h for u, _f, h in published if u != users[5].id} == {ChangeHint(7)}
    # …a slice per reactor turn, not 130 in one
    assert max(len(t) for t in hub.turns) <= 40
    assert len(hub.turns) >= 4


@pytest_twisted.ensureDeferred
async def test_admin_announce_to_holders_packs_notifies() -> None:
    """``easync-admin import`` into a folder shared with everyone tells every holder's
    node (their held Pings answer: MS-ASCMD 2.2.1.13, Status 2) in as few NOTIFYs as
    the payloads allow, not one NOTIFY per holder; each holder's line carries the
    folder's modseq hint."""
    import psycopg
    from pgtest import fresh_database, unreachable
    from twisted.internet import reactor

    from backends.sql.pgnotify import CHANNEL, decode_hinted
    from easync.admin import _announce_all

    needs.require(unreachable())
    with fresh_database("sharefan") as url:
        store = SqlStore(reactor, url)
        await store.open()
        listener = psycopg.connect(url, autocommit=True)
        try:
            users = [await store.add_user(f"u{i}", None, None, True) for i in range(60)]
            owner = users[0]
            folder = next(f for f in await store.list_folders(owner) if f.name == "Contacts")
            await store.share_folder(folder.server_id, EVERYONE, True)
            listener.execute(f"LISTEN {CHANNEL}")
            await _announce_all(store, owner, [folder.server_id],
                                modseqs={folder.server_id: 9})
            got = []
            for _ in range(40):
                got += list(listener.notifies(timeout=0.05, stop_after=100))
                if sum(len(decode_hinted(n.payload)[1]) for n in got) >= len(users):
                    break
        finally:
            listener.close()
            await store.close()
    changes = [c for n in got for c in decode_hinted(n.payload)[1]]
    assert sorted(u for u, _f, _h in changes) == sorted(u.id for u in users)
    assert {(f, h) for _u, f, h in changes} == {(folder.server_id, ChangeHint(9))}
    # the importer's user in one NOTIFY, the 59 other holders in one more
    assert len(got) <= 2
