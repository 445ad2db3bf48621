"""The SQL store's retention (``IRetentionStore``): tombstones and devices nobody needs.

A delete leaves a tombstone row in ``items`` (``items.py``) so that every device
syncing the folder learns of it.  Once every sync state of the folder has passed it
(its ``sync_states.feed_cursor``, ``easync.storerules.feed_cursor``, is at or above
the tombstone's modseq) no device will read it again: ``purge_synced`` removes it.
``purge_older`` removes tombstones older than an age whoever still needs them and
raises the folder's ``purged`` mark, so a state left behind gets Sync Status 3 and
resyncs from scratch instead of keeping an item deleted elsewhere.
``forget_devices`` removes devices unseen for a long time, with their states (as
``easync-admin device`` deletion does): the device's next request is a new device's.

Each call is one short write transaction of at most ``limit`` rows (schema 8's
partial indexes make each batch a range walk).  On PostgreSQL every batch first takes
a transaction-scoped advisory lock without waiting (``pg_try_advisory_xact_lock``):
with ``--workers`` or several nodes one batch runs at a time and the others answer
``busy``; SQLite's write lock orders them anyway.  Other backends keeping rows tied to
items or devices in this database (the CRM mirror) add hooks run inside the same
transaction: ``item_hooks(cur, item ids)`` and ``device_hooks(cur, user id, device id)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from backends.sql.base import StorePart, _chunks
from backends.sql.database import Database
from backends.sql.state import SqlState
from easync.interfaces import IRetentionStore, PurgeStep

__all__ = ["RETENTION_LOCK", "SqlRetention"]

#: (classid, objid) of the PostgreSQL advisory lock each batch takes ("easy", "purg")
RETENTION_LOCK = (0x65617379, 0x70757267)
#: folders looked at by one ``purge_synced`` batch
FOLDERS_PER_BATCH = 50


@implementer(IRetentionStore)
class SqlRetention(StorePart):
    """Tombstone purges and device expiry over the store's tables."""

    def __init__(self, db: Database, state: SqlState) -> None:
        super().__init__(db)
        self.state = state
        #: called in the purge's transaction with the ids of the item rows it removed
        self.item_hooks: list[Callable[[Any, list[int]], None]] = []
        #: called in the expiry's transaction for each device it forgot
        self.device_hooks: list[Callable[[Any, int, str], None]] = []

    def _locked(self, cur: Any) -> bool:
        """This transaction holds the retention lock (PostgreSQL; SQLite: always)."""
        if self.engine.name != "postgres":
            return True
        cur.execute(self._sql("SELECT pg_try_advisory_xact_lock(?, ?)"), RETENTION_LOCK)
        return bool(cur.fetchone()[0])

    # -- tombstones ----------------------------------------------------------------
    def purge_synced(self, after: int, limit: int) -> Deferred[PurgeStep]:
        return self._run(self._purge_synced, int(after), max(1, int(limit)), write=True)

    def _purge_synced(self, cur: Any, after: int, limit: int) -> PurgeStep:
        if not self._locked(cur):
            return PurgeStep(0, True, after, busy=True)
        cur.execute(self._sql("SELECT id, user_id, purged, modseq FROM folders"
                              " WHERE id > ? AND deleted = 0 ORDER BY id LIMIT ?"),
                    (after, FOLDERS_PER_BATCH))
        folders = cur.fetchall()
        done = 0
        for fid, user_id, purged, modseq in folders:
            # the lowest cursor among the folder's states still valid (one below the
            # purged mark gets Status 3 at its next Sync whatever is kept)
            if self._shared(cur, fid):
                # held by others too (a shared folder, schema 9): all of its states,
                # whoever's (index sync_states_name)
                cur.execute(self._sql("SELECT MIN(feed_cursor) FROM sync_states WHERE"
                                      " name = ? AND feed_cursor >= ?"),
                            (f"sync:{fid}", purged))
            else:
                cur.execute(self._sql("SELECT MIN(feed_cursor) FROM sync_states WHERE"
                                      " user_id = ? AND name = ? AND feed_cursor >= ?"),
                            (user_id, f"sync:{fid}", purged))
            floor = cur.fetchone()[0]
            upto = int(modseq) if floor is None else int(floor)
            room = limit - done
            n = self._delete_tombstones(cur, "folder_id = ? AND modseq <= ?", (fid, upto),
                                        "modseq", room)
            done += n
            if n >= room:
                return PurgeStep(done, True, int(fid) - 1)   # this folder may hold more
        last = int(folders[-1][0]) if folders else after
        return PurgeStep(done, len(folders) == FOLDERS_PER_BATCH, last)

    def _shared(self, cur: Any, fid: int) -> bool:
        """Is folder ``fid`` shared with anyone (``folder_shares``, schema 9)?"""
        if self.db.schema_version < 9:
            return False
        cur.execute(self._sql("SELECT 1 FROM folder_shares WHERE folder_id = ?"), (fid,))
        return cur.fetchone() is not None

    def purge_older(self, before: float, limit: int) -> Deferred[PurgeStep]:
        return self._run(self._purge_older, float(before), max(1, int(limit)), write=True)

    def _purge_older(self, cur: Any, before: float, limit: int) -> PurgeStep:
        if not self._locked(cur):
            return PurgeStep(0, True, busy=True)
        n = self._delete_tombstones(cur, "deleted_at < ?", (before,), "deleted_at", limit)
        return PurgeStep(n, n >= limit)

    def _delete_tombstones(self, cur: Any, where: str, params: tuple[Any, ...],
                           order: str, limit: int) -> int:
        """Remove up to ``limit`` tombstones matching ``where`` (in ``order``), raise
        their folders' purged marks and run the item hooks; how many went."""
        cur.execute(self._sql(f"SELECT id, folder_id, modseq FROM items WHERE deleted = 1"
                              f" AND {where} ORDER BY {order} LIMIT ?"), (*params, limit))
        rows = cur.fetchall()
        if not rows:
            return 0
        ids = [int(r[0]) for r in rows]
        for part in _chunks(ids):
            cur.execute(self._sql(f"DELETE FROM items WHERE id IN"
                                  f" {self.engine.placeholders(len(part))} AND deleted = 1"),
                        part)
        marks: dict[int, int] = {}
        for _iid, fid, modseq in rows:
            marks[int(fid)] = max(marks.get(int(fid), 0), int(modseq))
        cur.executemany(self._sql("UPDATE folders SET purged = ? WHERE id = ? AND purged < ?"),
                        [(m, f, m) for f, m in sorted(marks.items())])
        for hook in self.item_hooks:
            hook(cur, ids)
        return len(ids)

    # -- devices -------------------------------------------------------------------
    def forget_devices(self, unseen_before: float, limit: int) -> Deferred[PurgeStep]:
        return self._run(self._forget_devices, float(unseen_before), max(1, int(limit)),
                         write=True)

    def _forget_devices(self, cur: Any, before: float, limit: int) -> PurgeStep:
        if not self._locked(cur):
            return PurgeStep(0, True, busy=True)
        cur.execute(self._sql("SELECT user_id, device_id FROM devices WHERE last_seen < ?"
                              " AND blocked = 0 AND wipe <> 'pending'"
                              " ORDER BY last_seen LIMIT ?"), (before, limit))
        rows = [(int(u), str(d)) for u, d in cur.fetchall()]
        done = 0
        for user_id, device_id in rows:
            # the row first, still unseen (a request may have touched it meanwhile)
            cur.execute(self._sql("DELETE FROM devices WHERE user_id = ? AND device_id = ?"
                                  " AND last_seen < ?"), (user_id, device_id, before))
            if cur.rowcount != 1:
                continue
            self.state.delete_device_txn(cur, user_id, device_id)
            for hook in self.device_hooks:
                hook(cur, user_id, device_id)
            done += 1
        return PurgeStep(done, len(rows) >= limit)
