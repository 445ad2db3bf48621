"""Push for writes made to a SQLite database by other processes.

With SQLite there is one easync server process, whose change hub lives in its memory.
``easync-admin import`` writes through its own connection and cannot reach that hub, so
the server polls, cheaply:

* every ``interval`` seconds (1 s) it reads ``PRAGMA data_version`` on its own
  connection: that number changes only when *another* connection committed, so the
  server's own writes (already published by the protocol side) cost nothing more;
* when it changed, one query reads ``users.modseq``, ``users.hierarchy_version`` and
  ``users.access_version`` of every user that has a waiter now (a grown access version:
  ``"access"`` is published, ``easync.deviceaccess.ACCESS``); for each user whose modseq grew, one query finds
  the folders whose modseq grew, and those are published (``"hierarchy"`` when the
  hierarchy version grew).  Only waiters of those folders of that user are woken.

A user is compared with the values read at the previous poll.  One who got a waiter
since then has no such values; if another process committed meanwhile (the data
version moved since before that waiter came) the folders it watches are published,
to be safe: the Ping looks at its folders, and waits on if nothing changed for its
device.  Cost with no outside writes: one ``PRAGMA`` a second (plus one indexed query
for users that got their first waiter since the previous poll).  Shared folders (schema
9): after another process's commit their modseqs are read too (one query), and a grown
one is published to the waiting users who watch it, whoever owns it.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from easync.deviceaccess import ACCESS

__all__ = ["SqlitePoller"]

log = Logger()

_CHUNK = 500
HIERARCHY = "hierarchy"


class SqlitePoller(Service):
    """``SqlitePoller(reactor, store, notifier)``: ``store`` an open SQLite
    ``SqlStore``, ``notifier`` the ``LocalNotifier`` the server's Pings wait on."""

    def __init__(self, reactor: Any, store: Any, notifier: Any,
                 interval: float = 1.0) -> None:
        self._reactor = reactor
        self.store = store
        self.notifier = notifier
        self.interval = interval
        # user -> (modseq, hierarchy, device access version)
        self._known: dict[int, tuple[int, int, int]] = {}
        self._checked_dv: int | None = None   # data version the _known values include
        self._prev_dv: int | None = None      # data version read at the previous poll
        self._shared: dict[int, int] | None = None  # shared folder -> modseq last read
        self._loop: LoopingCall | None = None
        self.polls = 0               # polls done
        self.published = 0

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._loop.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:  # type: ignore[override]
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        return None

    def _tick(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self.poll_once())
        # never let an error stop the loop: log it, try again next time
        d.addErrback(lambda f: log.failure("SQLite change poll failed", f))
        return d.addCallback(lambda _: None)

    async def _data_version(self) -> int:
        rows = await self.store.raw_query("PRAGMA data_version")
        return int(rows[0][0])

    async def poll_once(self) -> int:
        """One poll; returns how many (user, folder) changes it published."""
        try:
            return await self._poll()
        finally:
            self.polls += 1

    async def _poll(self) -> int:
        dv = await self._data_version()
        # The users are taken after the data version was read: a waiter that is not
        # among them came after it.
        users = set(self.notifier.users())
        prev_dv, self._prev_dv = self._prev_dv, dv
        self._known = {u: v for u, v in self._known.items() if u in users}
        if not users:
            self._checked_dv = dv
            return 0
        new = users.difference(self._known)
        outside_write = dv != self._checked_dv
        if not outside_write and not new:
            return 0
        to_read = sorted(users if outside_write else new)
        rows: list[tuple[Any, ...]] = []
        for i in range(0, len(to_read), _CHUNK):
            part = to_read[i:i + _CHUNK]
            rows += await self.store.raw_query(
                "SELECT id, modseq, hierarchy_version, access_version FROM users WHERE id IN "
                f"({','.join('?' * len(part))})", part)
        # (the rows include every commit before the data version read above)
        self._checked_dv = dv
        after = await self._data_version()
        # No commit by another process between the previous poll's data version
        # (read before any of the new users' waiters came) and after reading rows:
        # the new users' values are a safe starting point.
        new_is_safe = prev_dv is not None and after == prev_dv
        count = 0
        for uid, modseq, hierarchy, access in rows:
            uid, modseq, hierarchy, access = int(uid), int(modseq), int(hierarchy), int(access)
            old = self._known.get(uid)
            self._known[uid] = (modseq, hierarchy, access)
            if old is None:
                if not new_is_safe:
                    for fid in self.notifier.watched(uid):
                        if fid not in (HIERARCHY, ACCESS):
                            self.notifier.publish(uid, fid)
                            count += 1
                continue
            if modseq > old[0]:
                moved = await self.store.raw_query(
                    "SELECT id FROM folders WHERE user_id = ? AND modseq > ?", (uid, old[0]))
                for (fid,) in moved:
                    self.notifier.publish(uid, str(fid))
                    count += 1
            if hierarchy > old[1]:
                self.notifier.publish(uid, HIERARCHY)
                count += 1
            if access > old[2]:
                self.notifier.publish(uid, ACCESS)
                count += 1
        if (outside_write or self._shared is None) and \
                getattr(self.store, "schema_version", 0) >= 9:
            count += await self._shared_folders(users)
        self.published += count
        return count

    async def _shared_folders(self, users: set[int]) -> int:
        """Shared folders (issue #14 point 1) written by another process: their
        owner may have no waiter (the company book's owner never has one), so their
        modseqs are read here — one query over the shared folders, few — and a grown
        one is published to every waiting user who watches it."""
        rows = await self.store.raw_query(
            "SELECT id, modseq FROM folders WHERE deleted = 0 AND id IN"
            " (SELECT folder_id FROM folder_shares)")
        count = 0
        seen: dict[int, int] = {}
        for fid, modseq in rows:
            fid, modseq = int(fid), int(modseq)
            seen[fid] = modseq
            old = None if self._shared is None else self._shared.get(fid, 0)
            if old is None or modseq <= old:
                continue
            for uid in users:
                if str(fid) in self.notifier.watched(uid):
                    self.notifier.publish(uid, str(fid))
                    count += 1
        self._shared = seen
        return count
