"""What devices deleted, kept for a while (``IDeletedStore``; schema 10).

A device's Sync Delete (an ``Op`` with ``keep`` set, ``easync.syncengine``) makes the
item store write the item's canonical data here: the SQL store in the transaction
that tombstones it (``SqlItems.apply_txn`` calls ``keep_txn``), the CRM store before
it asks the CRM to delete (``backends.crm.store``), so a crash never loses it.
``easync.deleted`` lists and restores these rows; the retention pass removes those
older than ``--deleted-keep`` (``purge_deleted``), a short batch at a time.

A restore claims its row first (``claim_restore``: one conditional UPDATE, so two
restores of one row make one item), then re-creates the item through the item store
with an add ``Op`` whose ``restores`` names the row: the store marks the row restored
in the transaction that creates the item (``mark_restored_txn``; the CRM store in the
one that records the CRM's record, journalled before the create), so a process that
stops after the item was made never leaves the row restorable again.
``finish_restore`` writes the same mark (for a store that does not); a failed
re-creation gives the claim back (``release_restore``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from backends.sql.base import StorePart, _chunks
from easync.deleted import summary
from easync.interfaces import IDeletedStore, PurgeStep
from easync.model import KeptItem, User
from easync.storerules import dumps as _dumps
from easync.storerules import parse_folder_id

__all__ = ["SqlDeleted"]

_COLS = ("id, user_id, device_id, folder_id, cls, server_id, data, summary, backend,"
         " deleted_at, restored_at, restored_id")
#: a claim (restored_at set, restored_id NULL) older than this was left by a restore
#: that never finished (a process that stopped): the row may be restored again
CLAIM_TIMEOUT = 600.0


def _kept(row: Sequence[Any]) -> KeptItem:
    return KeptItem(id=int(row[0]), user_id=int(row[1]), device_id=str(row[2]),
                    folder_id=str(row[3]), cls=str(row[4]), server_id=str(row[5]),
                    data=json.loads(row[6]), summary=str(row[7]), backend=str(row[8]),
                    deleted_at=float(row[9]),
                    restored_at=None if row[10] is None else float(row[10]),
                    restored_id=None if row[11] is None else str(row[11]))


@implementer(IDeletedStore)
class SqlDeleted(StorePart):
    """The ``deleted_items`` table."""

    # -- written with the delete ----------------------------------------------------
    def keep_txn(self, cur: Any, user_id: int, device_id: str, folder_id: str,
                 backend: str, items: Iterable[tuple[str, str, dict[str, Any]]],
                 now: float) -> int:
        """Inside the caller's write transaction: keep ``items`` ((server id, class,
        canonical data) each) as deleted by ``device_id`` at ``now``; how many."""
        rows = [(user_id, device_id, str(folder_id), cls, sid, _dumps(data),
                 summary(cls, data), backend, now) for sid, cls, data in items]
        if rows:
            cur.executemany(self._sql(
                "INSERT INTO deleted_items (user_id, device_id, folder_id, cls, server_id,"
                " data, summary, backend, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                rows)
        return len(rows)

    def keep_rows_txn(self, cur: Any, user_id: int, device_id: str, folder_id: str,
                      backend: str, row_ids: Sequence[int], now: float) -> int:
        """``keep_txn`` for the live ``items`` rows ``row_ids`` of the folder, read
        here (before the caller tombstones them)."""
        fid = parse_folder_id(folder_id)
        found: list[tuple[str, str, dict[str, Any]]] = []
        for part in _chunks(sorted(set(row_ids))):
            cur.execute(self._sql(
                "SELECT id, cls, data FROM items"
                f" WHERE id IN {self.engine.placeholders(len(part))}"
                " AND folder_id = ? AND user_id = ? AND deleted = 0"), (*part, fid, user_id))
            found.extend((f"{fid}:{iid}", str(cls), json.loads(data))
                         for iid, cls, data in cur.fetchall())
        return self.keep_txn(cur, user_id, device_id, str(fid), backend, found, now)

    def drop_kept_txn(self, cur: Any, user_id: int, device_id: str, server_id: str,
                      since: float) -> None:
        """Forget the row ``keep_txn`` wrote at ``since`` or later for this item (the
        CRM store: the CRM refused the delete it was kept for)."""
        cur.execute(self._sql(
            "DELETE FROM deleted_items WHERE user_id = ? AND device_id = ? AND server_id = ?"
            " AND deleted_at >= ? AND restored_at IS NULL"),
            (user_id, device_id, server_id, since))

    # -- written with a restore's add (Op.restores) -----------------------------------
    def restored_txn(self, cur: Any, user_id: int, kept_ids: Iterable[int],
                     lock: bool = False) -> dict[int, str]:
        """Inside the caller's transaction: ``{kept id: server id}`` of the user's kept
        rows among ``kept_ids`` that are restored already.  ``lock``: the rows are
        locked until the caller commits (PostgreSQL ``FOR UPDATE``; SQLite's write
        transaction holds the whole database), so two writes restoring one row are
        ordered and the second finds it restored."""
        out: dict[int, str] = {}
        suffix = " FOR UPDATE" if lock and self.engine.name == "postgres" else ""
        for part in _chunks(sorted({int(i) for i in kept_ids})):
            cur.execute(self._sql(
                "SELECT id, restored_id FROM deleted_items"
                f" WHERE id IN {self.engine.placeholders(len(part))} AND user_id = ?"
                f" ORDER BY id{suffix}"), (*part, user_id))
            out.update((int(i), str(sid)) for i, sid in cur.fetchall() if sid is not None)
        return out

    def mark_restored_txn(self, cur: Any, user_id: int, done: Sequence[tuple[int, str]],
                          now: float) -> None:
        """Inside the transaction that re-created them: the user's kept rows ``(kept
        id, server id)`` are restored as those items (a row restored already keeps
        what it became)."""
        if done:
            cur.executemany(self._sql(
                "UPDATE deleted_items SET restored_id = ?,"
                " restored_at = COALESCE(restored_at, ?)"
                " WHERE id = ? AND user_id = ? AND restored_id IS NULL"),
                [(sid, now, int(kid), user_id) for kid, sid in done])

    # -- IDeletedStore ----------------------------------------------------------------
    def list_deleted(self, user: User, *, device_id: str | None = None,
                     since: float | None = None, folder_id: str | None = None,
                     restored: bool = False, limit: int = 500) -> Deferred[list[KeptItem]]:
        def q(cur: Any) -> list[KeptItem]:
            where = ["user_id = ?", "deleted_at >= ?"]
            params: list[Any] = [user.id, float(since) if since is not None else 0.0]
            if device_id is not None:
                where.append("device_id = ?")
                params.append(device_id)
            if folder_id is not None:
                where.append("folder_id = ?")
                params.append(str(folder_id))
            if not restored:
                where.append("restored_at IS NULL")
            cur.execute(self._sql(
                f"SELECT {_COLS} FROM deleted_items WHERE {' AND '.join(where)}"
                " ORDER BY deleted_at DESC, id DESC LIMIT ?"), (*params, max(0, int(limit))))
            return [_kept(r) for r in cur.fetchall()]

        return self._run(q)

    def get_deleted(self, user: User, ids: Sequence[int]) -> Deferred[list[KeptItem]]:
        def q(cur: Any) -> list[KeptItem]:
            out: list[KeptItem] = []
            for part in _chunks(sorted({int(i) for i in ids})):
                cur.execute(self._sql(
                    f"SELECT {_COLS} FROM deleted_items"
                    f" WHERE id IN {self.engine.placeholders(len(part))} AND user_id = ?"),
                    (*part, user.id))
                out.extend(_kept(r) for r in cur.fetchall())
            return out

        return self._run(q)

    def claim_restore(self, user: User, kept_ids: Sequence[int], now: float
                      ) -> Deferred[list[KeptItem]]:
        def q(cur: Any) -> list[KeptItem]:
            ids = sorted({int(i) for i in kept_ids})
            out: list[KeptItem] = []
            lock = " FOR UPDATE" if self.engine.name == "postgres" else ""
            for part in _chunks(ids):
                marks = self.engine.placeholders(len(part))
                # the rows free to claim, locked (PostgreSQL: a concurrent claim waits
                # here, then finds them claimed; SQLite: the write lock orders claims)
                cur.execute(self._sql(
                    f"SELECT {_COLS} FROM deleted_items WHERE id IN {marks}"
                    " AND user_id = ? AND restored_id IS NULL"
                    f" AND (restored_at IS NULL OR restored_at < ?) ORDER BY id{lock}"),
                    (*part, user.id, now - CLAIM_TIMEOUT))
                free = [_kept(r) for r in cur.fetchall()]
                if free:
                    cur.executemany(self._sql(
                        "UPDATE deleted_items SET restored_at = ? WHERE id = ?"),
                        [(now, k.id) for k in free])
                out.extend(free)
            return out

        return self._run(q, write=True)

    def finish_restore(self, done: Sequence[tuple[int, str]]) -> Deferred[None]:
        def q(cur: Any) -> None:
            cur.executemany(self._sql(
                "UPDATE deleted_items SET restored_id = ? WHERE id = ?"),
                [(sid, int(kid)) for kid, sid in done])

        return self._run(q, write=True)

    def release_restore(self, kept_ids: Sequence[int]) -> Deferred[None]:
        def q(cur: Any) -> None:
            cur.executemany(self._sql("UPDATE deleted_items SET restored_at = NULL"
                                      " WHERE id = ? AND restored_id IS NULL"),
                            [(int(i),) for i in kept_ids])

        return self._run(q, write=True)

    def count_live(self, user: User, folder_id: str) -> Deferred[int]:
        def q(cur: Any) -> int:
            fid = parse_folder_id(folder_id)
            if fid is None:
                return 0
            # a range of index items_live (schema 10): no item is read
            cur.execute(self._sql("SELECT COUNT(*) FROM items WHERE folder_id = ?"
                                  " AND deleted = 0"), (fid,))
            return int(cur.fetchone()[0])

        return self._run(q)

    def purge_deleted(self, before: float, limit: int) -> Deferred[PurgeStep]:
        def q(cur: Any) -> PurgeStep:
            # the oldest first, a range of index deleted_items_age
            cur.execute(self._sql("SELECT id FROM deleted_items WHERE deleted_at < ?"
                                  " ORDER BY deleted_at LIMIT ?"), (before, max(1, limit)))
            ids = [int(r[0]) for r in cur.fetchall()]
            for part in _chunks(ids):
                cur.execute(self._sql(
                    "DELETE FROM deleted_items"
                    f" WHERE id IN {self.engine.placeholders(len(part))}"), part)
            return PurgeStep(len(ids), len(ids) >= max(1, limit))

        return self._run(q, write=True)
