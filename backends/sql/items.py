"""The SQL store's folders and items, with their change feed (``IItemStore``).

Item identity: an item row lives in one folder; its server id is
``"<folder id>:<row id>"``.  Deleting tombstones the row (``deleted=1``, ``data``
NULL, a new modseq).  Moving tombstones the row in the source folder (devices
syncing it see a Delete) and continues the item in a fresh row of the destination
(new server id, new modseq, ``created_modseq`` = the move); its contact addresses
and event links follow it.  Contacts keep ``contact_emails`` and ``contact_names``
(the recipient lookups), events ``event_contacts`` (links to contacts by address).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred

from backends.sql.base import StorePart, _chunks, _folder_from_row
from backends.sql.database import Database
from backends.sql.deleted import SqlDeleted
from backends.sql.shares import folder_access_txn, list_folders_txn
from backends.sql.state import SqlState
from easync.items import index_fields
from easync.lookup import contact_index, indexable_email, storable_email
from easync.model import (
    FOLDER_CLASS,
    Change,
    ChangeBatch,
    Folder,
    Item,
    Op,
    OpResult,
    StateWrite,
    User,
)
from easync.storerules import dumps as _dumps
from easync.storerules import named_rows, new_rows, plan_ops
from easync.storerules import parse_folder_id as _parse_folder_id
from easync.storerules import parse_item_id as _parse_item_id

__all__ = ["FEED_SQL", "SqlItems"]

#: the change-feed query (``?`` style): one walk of index items_feed from the cursor
FEED_SQL = (
    "SELECT id, cls, data, modseq, created_modseq, deleted, start_ts, end_ts, complete"
    " FROM items WHERE folder_id = ? AND modseq > ? AND user_id = ?"
    " ORDER BY modseq LIMIT ?")


def _window_filter(window: tuple[int | None, int | None] | None
                   ) -> Callable[[str, Any, Any, Any], bool] | None:
    """A predicate (cls, start_ts, end_ts, complete) -> keep, for live items."""
    if not window:
        return None
    lo, hi = window

    def keep(cls: str, start: Any, end: Any, complete: Any) -> bool:
        if cls == "Calendar":
            if lo is not None and end is not None and end < lo:
                return False       # ended before the window (recurring: end is NULL)
            # (and not starting after its end)
            return hi is None or start is None or start <= hi
        if cls == "Tasks":
            return not (hi == 1 and complete == 1)
        return True

    return keep


def _window_sql(window: tuple[int | None, int | None] | None) -> tuple[str, list[Any]]:
    """``_window_filter`` as an SQL condition on a live row (never NULL) and its
    parameters: the two must keep the same items."""
    if not window:
        return "1 = 1", []
    lo, hi = window
    cal: list[str] = []
    params: list[Any] = []
    if lo is not None:
        cal.append("(end_ts IS NULL OR end_ts >= ?)")
        params.append(int(lo))
    if hi is not None:
        cal.append("(start_ts IS NULL OR start_ts <= ?)")
        params.append(int(hi))
    parts = []
    if cal:
        parts.append(f"(cls <> 'Calendar' OR ({' AND '.join(cal)}))")
    if hi == 1:
        parts.append("(cls <> 'Tasks' OR complete IS NULL OR complete <> 1)")
    if not parts:
        return "1 = 1", []
    return "(" + " AND ".join(parts) + ")", params



class SqlItems(StorePart):
    """Folders, items, the change feed, moves, links and contact lookups.  ``state``
    saves the sync-state blob an ``apply`` carries, in the same transaction."""

    def __init__(self, db: Database, state: SqlState, deleted: SqlDeleted | None = None
                 ) -> None:
        super().__init__(db)
        self.state = state
        #: where a device's deletes are kept (``Op.keep``), in the delete's transaction
        self.deleted = deleted
        #: the item store these rows are, in the kept rows ("crm": the CRM mirror's
        #: writes through ``apply_txn``)
        self.backend_name = "sql"

    # ==============================================================================
    # IItemStore: folders
    # ==============================================================================
    def list_folders(self, user: User) -> Deferred[list[Folder]]:
        def q(cur: Any) -> list[Folder]:
            return list_folders_txn(self.engine, cur, user.id, self._shares)

        return self._run(q)

    @property
    def _shares(self) -> bool:
        """Has the database the share table (schema 9)?"""
        return self.db.schema_version >= 9

    def _owner_of(self, cur: Any, user_id: int, fid: int | None) -> int:
        """Whose rows folder ``fid`` holds, as ``user_id`` reaches it: ``user_id`` for
        its own folders (and for a folder it cannot reach: nothing then matches), the
        owner's id for a folder shared with it."""
        if fid is None or not self._shares:
            return user_id
        access = folder_access_txn(self.engine, cur, user_id, fid)
        return user_id if access is None else access[0]

    def hierarchy_version(self, user: User) -> Deferred[int]:
        def q(cur: Any) -> int:
            cur.execute(self._sql("SELECT hierarchy_version FROM users WHERE id = ?"),
                        (user.id,))
            row = cur.fetchone()
            if row is None:
                raise KeyError(user.name)
            return int(row[0])

        return self._run(q)

    def _live_folders(self, cur: Any, user_id: int) -> dict[int, tuple[str, str, int]]:
        """id -> (parent_id, name, type) of the user's live folders."""
        cur.execute(self._sql("SELECT id, parent_id, name, type FROM folders"
                              " WHERE user_id = ? AND deleted = 0"), (user_id,))
        return {int(r[0]): (r[1], r[2], int(r[3])) for r in cur.fetchall()}

    @staticmethod
    def _check_parent(folders: dict[int, tuple[str, str, int]], parent_id: str) -> None:
        if parent_id == "0":
            return
        pid = _parse_folder_id(parent_id)
        if pid is None or pid not in folders:
            raise ValueError("parent")

    @staticmethod
    def _check_name(folders: dict[int, tuple[str, str, int]], parent_id: str, name: str,
                    exclude: int | None = None) -> None:
        if not name or not name.strip():
            raise ValueError("name")
        low = name.casefold()
        for fid, (parent, other, _type) in folders.items():
            if fid != exclude and parent == parent_id and other.casefold() == low:
                raise ValueError("exists")

    def create_folder(self, user: User, parent_id: str, name: str,
                      type: int) -> Deferred[Folder]:
        return self._run(self._create_folder, user.id, str(parent_id), name, int(type),
                         write=True)

    def _create_folder(self, cur: Any, user_id: int, parent_id: str, name: str,
                       ftype: int) -> Folder:
        self.engine.bump(cur, "users", "hierarchy_version", user_id, 1)
        if ftype < 12:
            raise ValueError("type")       # the default folders exist once, from add_user
        folders = self._live_folders(cur, user_id)
        self._check_parent(folders, parent_id)
        self._check_name(folders, parent_id, name)
        fid = self.engine.insert_id(
            cur, "INSERT INTO folders (user_id, parent_id, name, type) VALUES (?, ?, ?, ?)",
            (user_id, parent_id, name, ftype))
        return Folder(server_id=str(fid), parent_id=parent_id, name=name, type=ftype)

    def update_folder(self, user: User, server_id: str, parent_id: str,
                      name: str) -> Deferred[Folder]:
        return self._run(self._update_folder, user.id, server_id, str(parent_id), name,
                         write=True)

    def _user_folder_to_change(self, cur: Any, user_id: int, server_id: str
                               ) -> tuple[dict[int, tuple[str, str, int]], int]:
        """Before a folder is changed or deleted: the hierarchy version bumped, then the
        user's live folders and the row id of ``server_id`` among them; KeyError when
        it is none, ValueError("special") for a default folder."""
        self.engine.bump(cur, "users", "hierarchy_version", user_id, 1)
        folders = self._live_folders(cur, user_id)
        fid = _parse_folder_id(server_id)
        if fid is None or fid not in folders:
            if fid is not None and self._shares and \
                    folder_access_txn(self.engine, cur, user_id, fid) is not None:
                raise ValueError("special")     # someone else's folder, shared
            raise KeyError(server_id)
        if folders[fid][2] < 12:
            raise ValueError("special")
        return folders, fid

    def _update_folder(self, cur: Any, user_id: int, server_id: str, parent_id: str,
                       name: str) -> Folder:
        folders, fid = self._user_folder_to_change(cur, user_id, server_id)
        self._check_parent(folders, parent_id)
        # not into itself nor one of its descendants
        pid = _parse_folder_id(parent_id)
        while pid is not None:
            if pid == fid:
                raise ValueError("parent")
            pid = _parse_folder_id(folders[pid][0]) if pid in folders else None
        self._check_name(folders, parent_id, name, exclude=fid)
        cur.execute(self._sql("UPDATE folders SET parent_id = ?, name = ? WHERE id = ?"),
                    (parent_id, name, fid))
        cur.execute(self._sql("SELECT id, parent_id, name, type, modseq, purged FROM folders"
                              " WHERE id = ?"), (fid,))
        return _folder_from_row(cur.fetchone())

    def delete_folder(self, user: User, server_id: str) -> Deferred[None]:
        """Delete a user folder, its sub-folders and all their items."""
        return self._run(self._delete_folder, user.id, server_id, write=True)

    def _delete_folder(self, cur: Any, user_id: int, server_id: str) -> None:
        folders, fid = self._user_folder_to_change(cur, user_id, server_id)
        doomed = {fid}
        grew = True
        while grew:
            grew = False
            for other, (parent, _name, _type) in folders.items():
                if other not in doomed and _parse_folder_id(parent) in doomed:
                    doomed.add(other)
                    grew = True
        ids = sorted(doomed)
        marks = self.engine.placeholders(len(ids))
        # contact_emails and event_contacts rows go by ON DELETE CASCADE
        cur.execute(self._sql(f"DELETE FROM items WHERE folder_id IN {marks}"), ids)
        cur.execute(self._sql(f"UPDATE folders SET deleted = 1 WHERE id IN {marks}"), ids)

    # ==============================================================================
    # IItemStore: items
    # ==============================================================================
    def get_items(self, user: User, server_ids: list[str]) -> Deferred[list[Item]]:
        return self._run(self._get_items, user.id, list(server_ids))

    def _get_items(self, cur: Any, user_id: int, server_ids: list[str]) -> list[Item]:
        wanted: dict[int, int] = {}
        for sid in server_ids:
            parsed = _parse_item_id(sid)
            if parsed:
                wanted[parsed[1]] = parsed[0]
        found: dict[str, Item] = {}
        # whose rows each folder named holds (the folders shared with the user)
        owners = {fid: self._owner_of(cur, user_id, fid) for fid in set(wanted.values())}
        for owner in sorted(set(owners.values())):
            ids = sorted(i for i, f in wanted.items() if owners[f] == owner)
            for part in _chunks(ids):
                cur.execute(self._sql(
                    "SELECT id, folder_id, cls, data, modseq FROM items"
                    f" WHERE id IN {self.engine.placeholders(len(part))}"
                    " AND user_id = ? AND deleted = 0"), (*part, owner))
                self._found(cur.fetchall(), wanted, found)
        out: list[Item] = []
        seen: set[str] = set()
        for sid in server_ids:
            if sid in found and sid not in seen:
                seen.add(sid)
                out.append(found[sid])
        return out

    @staticmethod
    def _found(rows: list[Any], wanted: dict[int, int], found: dict[str, Item]) -> None:
        for iid, fid, cls, data, modseq in rows:
            if wanted.get(iid) == fid:
                sid = f"{fid}:{iid}"
                found[sid] = Item(server_id=sid, folder_id=str(fid), cls=cls,
                                  data=json.loads(data), modseq=int(modseq))

    def changes_since(self, user: User, folder_id: str, cursor: int, limit: int,
                      window: tuple[int | None, int | None] | None = None,
                      held_upto: int | None = None) -> Deferred[ChangeBatch]:
        """See IItemStore.  With a ``window``, a batch may hold fewer than ``limit``
        changes (even none) with ``more`` set when the rows left are filtered out;
        ``high`` always moves past the rows looked at."""
        return self._run(self._changes_since, user.id, folder_id, int(cursor), int(limit),
                         window, held_upto)

    def _changes_since(self, cur: Any, user_id: int, folder_id: str, cursor: int,
                       limit: int, window: tuple[int | None, int | None] | None,
                       held_upto: int | None = None) -> ChangeBatch:
        fid = _parse_folder_id(folder_id)
        if fid is None:
            return ChangeBatch([], False, cursor)
        user_id = self._owner_of(cur, user_id, fid)   # a shared folder: the owner's feed
        sql = self._sql(FEED_SQL)
        keep = _window_filter(window)
        self.engine.before_feed(cur)
        if limit <= 0:
            cur.execute(sql, (fid, cursor, user_id, 1))
            return ChangeBatch([], cur.fetchone() is not None, cursor)
        fid_s = str(fid)
        out: list[Change] = []
        high = cursor
        # Without a window one query of limit+1 rows answers; with one, filtered-out
        # rows make us read on, a chunk at a time, until the batch is full.
        chunk = limit if keep is None else max(limit, 200)
        while True:
            cur.execute(sql, (fid, high, user_id, chunk + 1))
            rows = cur.fetchall()
            for n, (iid, cls, data, modseq, created, deleted, start, end,
                    complete) in enumerate(rows):
                if len(out) >= limit or n >= chunk:
                    return ChangeBatch(out, True, high)
                high = int(modseq)
                sid = f"{fid_s}:{iid}"
                if deleted:
                    out.append(Change(sid, high, True, int(created)))
                elif keep is None or keep(cls, start, end, complete):
                    out.append(Change(sid, high, False, int(created), Item(
                        sid, fid_s, cls, json.loads(data), high)))
                elif held_upto is not None and int(created) <= held_upto:
                    out.append(Change(sid, high, False, int(created), soft=True))
            if len(rows) <= chunk:
                return ChangeBatch(out, False, high)

    def window_changes(self, user: User, folder_id: str, after: int, upto: int,
                       old: tuple[int | None, int | None] | None,
                       new: tuple[int | None, int | None] | None,
                       limit: int) -> Deferred[ChangeBatch]:
        """See IItemStore: one walk of index items_feed between the two modseqs, the
        windows tested by the database (only the rows that qualify come back)."""
        return self._run(self._window_changes, user.id, folder_id, int(after), int(upto),
                         old, new, int(limit))

    def _window_changes(self, cur: Any, user_id: int, folder_id: str, after: int,
                        upto: int, old: tuple[int | None, int | None] | None,
                        new: tuple[int | None, int | None] | None,
                        limit: int) -> ChangeBatch:
        fid = _parse_folder_id(folder_id)
        if fid is None or after >= upto or limit <= 0:
            return ChangeBatch([], fid is not None and after < upto, after)
        user_id = self._owner_of(cur, user_id, fid)
        in_old, p_old = _window_sql(old)
        in_new, p_new = _window_sql(new)
        self.engine.before_feed(cur)
        cur.execute(self._sql(
            f"SELECT id, modseq, created_modseq, CASE WHEN {in_new} THEN 1 ELSE 0 END"
            " FROM items WHERE folder_id = ? AND modseq > ? AND modseq <= ? AND user_id = ?"
            f" AND deleted = 0 AND (({in_old} AND NOT {in_new}) OR ({in_new} AND NOT"
            f" {in_old})) ORDER BY modseq LIMIT ?"),
            (*p_new, fid, after, upto, user_id, *p_old, *p_new, *p_new, *p_old, limit + 1))
        rows = cur.fetchall()
        out = [Change(f"{fid}:{iid}", int(m), False, int(c), soft=not int(enters),
                      enters=bool(int(enters))) for iid, m, c, enters in rows[:limit]]
        if len(rows) > limit:
            return ChangeBatch(out, True, out[-1].modseq)
        return ChangeBatch(out, False, upto)

    def explain_feed(self, user: User, folder_id: str, cursor: int,
                     limit: int) -> Deferred[list[str]]:
        """The database's plan for the change-feed query, one line per entry (to check
        that it walks index items_feed: no scan, no sort)."""

        def q(cur: Any) -> list[str]:
            self.engine.before_feed(cur)
            cur.execute(self.engine.explain_prefix + self._sql(FEED_SQL),
                        (int(folder_id), int(cursor), user.id, int(limit) + 1))
            return [str(row[-1]) for row in cur.fetchall()]

        return self._run(q)

    def count_changes_since(self, user: User, folder_id: str, cursor: int) -> Deferred[int]:
        def q(cur: Any) -> int:
            fid = _parse_folder_id(folder_id)
            if fid is None:
                return 0
            cur.execute(self._sql("SELECT COUNT(*) FROM items WHERE folder_id = ?"
                                  " AND modseq > ? AND user_id = ?"),
                        (fid, int(cursor), self._owner_of(cur, user.id, fid)))
            return int(cur.fetchone()[0])

        return self._run(q)

    def apply(self, user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        """See IItemStore.  Raises KeyError('folder') for a folder the user does not
        have.  An add without a dict ``data`` (or a change without one, or an unknown
        kind) gives ``OpResult(ok=False, error="invalid")``."""
        return self._run(self.apply_txn, user.id, folder_id, list(ops), state, write=True)

    def _folder_type(self, cur: Any, user_id: int, folder_id: str,
                     missing: str) -> tuple[int, int]:
        """The row id and type of the user's live folder ``folder_id``; KeyError(missing)
        when there is none."""
        fid = _parse_folder_id(folder_id)
        row = None
        if fid is not None:
            cur.execute(self._sql("SELECT type FROM folders WHERE id = ? AND user_id = ?"
                                  " AND deleted = 0"), (fid, user_id))
            row = cur.fetchone()
        if row is None or fid is None:
            raise KeyError(missing)
        return fid, int(row[0])

    def apply_txn(self, cur: Any, user_id: int, folder_id: str, ops: list[Op],
                  state: StateWrite | None) -> list[OpResult]:
        """``apply`` inside the caller's write transaction (``Database.run_interaction``
        with ``write=True``): the user's modseq counter is locked first.  A folder
        shared with the user: a read-write share writes the owner's rows under the
        owner's counter; a read-only one refuses every op (``error="readonly"``) and
        stores nothing but the state."""
        e = self.engine
        n = len(ops)
        fid = _parse_folder_id(folder_id)
        access = folder_access_txn(e, cur, user_id, fid) \
            if fid is not None and self._shares else None
        owner = user_id if access is None else access[0]
        if access is not None and access[2]:
            results = [OpResult(op.ref, op.server_id, False, error="readonly") for op in ops]
            if state is not None:
                if state.build is not None:
                    state.state = state.build(results)
                self.state.save_state_txn(cur, user_id, state)
            return results
        restoring = [op.restores for op in ops if op.kind == "add" and op.restores is not None]
        if restoring and self.deleted is not None:
            # adds restoring kept rows (easync.deleted): a row restored already (by a
            # restore that stopped before it said so) makes no second item
            before = self.deleted.restored_txn(cur, user_id, restoring, lock=True)
            if before:
                rest = iter(self.apply_txn(cur, user_id, folder_id, [
                    op for op in ops if op.kind != "add" or op.restores not in before],
                    state))
                return [OpResult(op.ref, before[op.restores], False, 0, "restored")
                        if op.kind == "add" and op.restores in before else next(rest)
                        for op in ops]
        # Lock the owner's counter first: it orders this transaction against every
        # other writer of the owner's data (folder changes included).
        top = e.bump(cur, "users", "modseq", owner, max(n, 0))
        base = top - n
        fid, folder_type = self._folder_type(cur, owner, folder_id, "folder")
        folder_cls = FOLDER_CLASS.get(folder_type, "Email")

        # the existing rows the ops name
        live: dict[int, str] = {}            # row id -> cls, live after the ops so far
        for part in _chunks(sorted(set(named_rows(ops, fid)))):
            cur.execute(self._sql(
                f"SELECT id, cls FROM items WHERE id IN {e.placeholders(len(part))}"
                " AND folder_id = ? AND deleted = 0"), (*part, fid))
            live.update((int(i), c) for i, c in cur.fetchall())
        existing = set(live)

        n_adds = new_rows(ops)
        new_ids = iter(e.allocate_ids(cur, "items", n_adds) if n_adds else [])
        final, results = plan_ops(ops, fid, folder_cls, live, base, new_ids)

        # a device's deletes (Op.keep): the items' data kept before the rows are
        # tombstoned, in this transaction (IDeletedStore; schema 10)
        kept: dict[str, list[int]] = {}
        for op, r in zip(ops, results, strict=True):
            if op.kind == "delete" and op.keep and r.ok:
                parsed = _parse_item_id(op.server_id)
                if parsed and parsed[1] in existing:
                    kept.setdefault(op.keep, []).append(parsed[1])
        if kept and self.deleted is not None:
            now = self.db.reactor.seconds()
            # kept for the data's owner (a read-write share: the colleague's device
            # deleted the owner's item; the owner lists and restores it)
            for device_id, row_ids in kept.items():
                self.deleted.keep_rows_txn(cur, owner, device_id, str(fid),
                                           self.backend_name, row_ids, now)

        if final:
            self._write_items(cur, owner, fid, final, existing, self.db.reactor.seconds())
            cur.execute(self._sql("UPDATE folders SET modseq = ? WHERE id = ?"),
                        (max(v[2] for v in final.values()), fid))
        made = [(op.restores, str(r.server_id)) for op, r in zip(ops, results, strict=True)
                if op.kind == "add" and op.restores is not None and r.ok and r.server_id]
        if made and self.deleted is not None:
            # the kept rows these adds restore: marked in this transaction
            self.deleted.mark_restored_txn(cur, user_id, made, self.db.reactor.seconds())
        if state is not None:
            if state.build is not None:
                # the engine's state depends on the modseqs just assigned (see StateWrite)
                state.state = state.build(results)
            self.state.save_state_txn(cur, user_id, state)
        return results

    def _write_items(self, cur: Any, user_id: int, fid: int, final: dict[int, list[Any]],
                     existing: set[int], now: float) -> None:
        """Write the rows' final states (a tombstone dated ``now``) and keep
        contact_emails, contact_names and event_contacts true.  Addresses that cannot be recipients (longer than RFC
        5321's 254 characters, or with characters a database refuses) are not
        indexed (easync.lookup.storable_email)."""
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        contact_emails: list[tuple[int, int, str]] = []
        contact_names: list[tuple[int, int, str, int, int]] = []
        touched_contacts: list[int] = []
        dead_contacts: list[int] = []
        dead_events: list[int] = []
        live_events: dict[int, set[str]] = {}
        for iid, (cls, data, modseq, created) in final.items():
            if data is None:
                fields: dict[str, Any] = {"uid": None, "start": None, "end": None,
                                          "complete": None, "emails": []}
                text = None
            else:
                fields = index_fields(cls, data)
                fields["emails"] = [em for em in fields["emails"] if storable_email(em)]
                text = _dumps(data)
            values = (text, fields["uid"], fields["start"], fields["end"],
                      fields["complete"], modseq, int(data is None),
                      now if data is None else None)
            if iid in existing:
                updates.append((*values, iid))
            else:
                inserts.append((iid, user_id, fid, cls, created, *values))
            if cls == "Contacts":
                if iid in existing:
                    touched_contacts.append(iid)
                if data is None:
                    if iid in existing:
                        dead_contacts.append(iid)
                else:
                    contact_emails.extend((iid, user_id, em) for em in fields["emails"])
                    contact_names.extend((iid, user_id, tok, flag, fid)
                                         for tok, flag in sorted(contact_index(data).items()))
            elif cls == "Calendar":
                if data is None:
                    if iid in existing:
                        dead_events.append(iid)
                else:
                    live_events[iid] = set(fields["emails"])
        if inserts:
            cur.executemany(self._sql(
                "INSERT INTO items (id, user_id, folder_id, cls, created_modseq, data, uid,"
                " start_ts, end_ts, complete, modseq, deleted, deleted_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), inserts)
        if updates:
            cur.executemany(self._sql(
                "UPDATE items SET data = ?, uid = ?, start_ts = ?, end_ts = ?, complete = ?,"
                " modseq = ?, deleted = ?, deleted_at = ? WHERE id = ?"), updates)
        if touched_contacts:
            for table in ("contact_emails", "contact_names"):
                cur.executemany(self._sql(f"DELETE FROM {table} WHERE item_id = ?"),
                                [(i,) for i in touched_contacts])
        if contact_emails:
            cur.executemany(self._sql(
                "INSERT INTO contact_emails (item_id, user_id, email) VALUES (?, ?, ?)"),
                contact_emails)
        if contact_names:
            cur.executemany(self._sql(
                "INSERT INTO contact_names (item_id, user_id, token, recipient, folder_id)"
                " VALUES (?, ?, ?, ?, ?)"), contact_names)
        if dead_contacts:
            cur.executemany(self._sql("DELETE FROM event_contacts WHERE contact_item_id = ?"),
                            [(i,) for i in dead_contacts])
        if dead_events:
            cur.executemany(self._sql("DELETE FROM event_contacts WHERE event_item_id = ?"),
                            [(i,) for i in dead_events])
        if live_events:
            self._link_events(cur, user_id, live_events, existing)

    def _link_events(self, cur: Any, user_id: int, events: dict[int, set[str]],
                     existing: set[int]) -> None:
        """Make event_contacts match the events' attendee addresses: a linked address
        keeps its links, a removed one loses them, an unlinked one is matched against
        the user's live contacts."""
        e = self.engine
        linked: dict[int, set[str]] = {iid: set() for iid in events}
        old = sorted(i for i in events if i in existing)
        for part in _chunks(old):
            cur.execute(self._sql(
                "SELECT event_item_id, email FROM event_contacts"
                f" WHERE event_item_id IN {e.placeholders(len(part))}"), part)
            for ev, em in cur.fetchall():
                linked[int(ev)].add(em)
        drops = [(ev, em) for ev, ems in linked.items() for em in ems - events[ev]]
        if drops:
            cur.executemany(self._sql(
                "DELETE FROM event_contacts WHERE event_item_id = ? AND email = ?"), drops)
        wanted = sorted({em for ev, ems in events.items() for em in ems - linked[ev]})
        matches: dict[str, list[int]] = {}
        for emails in _chunks(wanted):
            cur.execute(self._sql(
                "SELECT email, item_id FROM contact_emails WHERE user_id = ?"
                f" AND email IN {e.placeholders(len(emails))}"), (user_id, *emails))
            for em, cid in cur.fetchall():
                matches.setdefault(em, []).append(int(cid))
        links = [(ev, cid, em) for ev, ems in events.items() for em in sorted(ems - linked[ev])
                 for cid in matches.get(em, ())]
        if links:
            cur.executemany(self._sql(
                "INSERT INTO event_contacts (event_item_id, contact_item_id, email)"
                " VALUES (?, ?, ?)"), links)

    def move_item(self, user: User, server_id: str, dst_folder_id: str) -> Deferred[str]:
        return self._run(self._move_item, user.id, server_id, dst_folder_id, write=True)

    def _move_item(self, cur: Any, user_id: int, server_id: str, dst_folder_id: str) -> str:
        e = self.engine
        top = e.bump(cur, "users", "modseq", user_id, 2)
        parsed = _parse_item_id(server_id)
        row = None
        if parsed:
            cur.execute(self._sql(
                "SELECT cls, data, uid, start_ts, end_ts, complete FROM items"
                " WHERE id = ? AND folder_id = ? AND user_id = ? AND deleted = 0"),
                (parsed[1], parsed[0], user_id))
            row = cur.fetchone()
        if row is None or parsed is None:
            raise KeyError("src")
        src, old = parsed
        dst, dst_type = self._folder_type(cur, user_id, dst_folder_id, "dst")
        cls = row[0]
        if FOLDER_CLASS.get(dst_type, "Email") != cls:
            raise ValueError("class")
        if dst == src:
            return server_id
        gone, born = top - 1, top
        (new,) = e.allocate_ids(cur, "items", 1)
        cur.execute(self._sql(
            "INSERT INTO items (id, user_id, folder_id, cls, data, uid, start_ts, end_ts,"
            " complete, modseq, created_modseq, deleted)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"),
            (new, user_id, dst, *row, born, born))
        cur.execute(self._sql(
            "UPDATE items SET data = NULL, uid = NULL, start_ts = NULL, end_ts = NULL,"
            " complete = NULL, deleted = 1, modseq = ?, deleted_at = ? WHERE id = ?"),
            (gone, self.db.reactor.seconds(), old))
        cur.execute(self._sql("UPDATE contact_names SET item_id = ?, folder_id = ?"
                              " WHERE item_id = ?"), (new, dst, old))
        for stmt in ("UPDATE contact_emails SET item_id = ? WHERE item_id = ?",
                     "UPDATE event_contacts SET event_item_id = ? WHERE event_item_id = ?",
                     "UPDATE event_contacts SET contact_item_id = ? WHERE contact_item_id = ?"):
            cur.execute(self._sql(stmt), (new, old))
        cur.executemany(self._sql("UPDATE folders SET modseq = ? WHERE id = ?"),
                        [(gone, src), (born, dst)])
        return f"{dst}:{new}"

    # -- links and lookups (SQL store extras) --------------------------------------
    def linked_contacts(self, user: User, event_server_id: str) -> Deferred[list[str]]:
        """Server ids of the live contacts linked to this event."""
        return self._run(self._linked, user.id, event_server_id, "event_item_id",
                         "contact_item_id")

    def linked_events(self, user: User, contact_server_id: str) -> Deferred[list[str]]:
        """Server ids of the live events linked to this contact."""
        return self._run(self._linked, user.id, contact_server_id, "contact_item_id",
                         "event_item_id")

    def _linked(self, cur: Any, user_id: int, server_id: str, this: str,
                other: str) -> list[str]:
        parsed = _parse_item_id(server_id)
        if parsed is None:
            return []
        cur.execute(self._sql(
            f"SELECT DISTINCT o.folder_id, o.id FROM items s"
            f" JOIN event_contacts l ON l.{this} = s.id"
            f" JOIN items o ON o.id = l.{other}"
            " WHERE s.id = ? AND s.folder_id = ? AND s.user_id = ? AND s.deleted = 0"
            " AND o.deleted = 0 ORDER BY o.folder_id, o.id"), (parsed[1], parsed[0], user_id))
        return [f"{f}:{i}" for f, i in cur.fetchall()]

    def find_by_uids(self, user: User, folder_id: str, uids: list[str]
                     ) -> Deferred[dict[str, Item]]:
        """See IItemStore (through index items_uid)."""

        def q(cur: Any) -> dict[str, Item]:
            fid = _parse_folder_id(folder_id)
            wanted = sorted({u for u in uids if u})
            out: dict[str, Item] = {}
            if fid is None:
                return out
            owner = self._owner_of(cur, user.id, fid)
            for part in _chunks(wanted):
                cur.execute(self._sql(
                    "SELECT id, uid, cls, data, modseq FROM items WHERE user_id = ?"
                    f" AND uid IN {self.engine.placeholders(len(part))} AND folder_id = ?"
                    " AND deleted = 0 ORDER BY id"), (owner, *part, fid))
                for iid, uid, cls, data, modseq in cur.fetchall():
                    if uid not in out:
                        out[uid] = Item(f"{fid}:{iid}", str(fid), cls, json.loads(data),
                                        int(modseq))
            return out

        return self._run(q)

    def find_by_uid(self, user: User, uid: str) -> Deferred[list[Item]]:
        """The user's live items (events) whose UID is ``uid``."""

        def q(cur: Any) -> list[Item]:
            cur.execute(self._sql(
                "SELECT id, folder_id, cls, data, modseq FROM items"
                " WHERE user_id = ? AND uid = ? AND deleted = 0 ORDER BY id"), (user.id, uid))
            return [Item(f"{f}:{i}", str(f), c, json.loads(d), int(m))
                    for i, f, c, d, m in cur.fetchall()]

        return self._run(q)


    def _contacts_by_id(self, cur: Any, user_id: int, ids: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for part in _chunks(list(ids)):
            cur.execute(self._sql(
                "SELECT id, folder_id, cls, data, modseq FROM items"
                f" WHERE id IN {self.engine.placeholders(len(part))}"
                " AND user_id = ? AND deleted = 0"), (*part, user_id))
            for iid, fid, cls, data, modseq in cur.fetchall():
                out[int(iid)] = Item(f"{fid}:{iid}", str(fid), cls, json.loads(data),
                                     int(modseq))
        return out

    def find_contacts_by_emails(self, user: User, emails: list[str], limit: int
                                ) -> Deferred[dict[str, list[Item]]]:
        """See IItemStore (index contact_emails_lookup; contacts by row id)."""

        def q(cur: Any) -> dict[str, list[Item]]:
            wanted = sorted({a for a in (indexable_email(e) for e in emails) if a})
            hits = self._union_probe(cur, "contact_emails", "email", "item_id",
                                     "user_id = ?", (user.id,), wanted, int(limit))
            items = self._contacts_by_id(cur, user.id,
                                         sorted({i for ids in hits.values() for i in ids}))
            return {addr: [items[i] for i in sorted(ids) if i in items]
                    for addr, ids in hits.items()}

        return self._run(q)

    def find_contacts_by_name(self, user: User, prefix: str, limit: int, *,
                              recipients: bool = True, folder_id: str | None = None
                              ) -> Deferred[list[Item]]:
        """See IItemStore: recipients walk index contact_names_recipients, all the
        user's contacts contact_names_lookup, one folder's contact_names_folder."""

        def q(cur: Any) -> list[Item]:
            where, params = self._name_range(user, recipients, folder_id)
            if where is None:
                return []
            ids = self._prefix_walk(cur, "contact_names", "item_id", where, params, prefix,
                                    int(limit))
            # one folder's: its owner's rows (a folder shared with the user, the
            # company book); the user's own id for a folder it cannot reach, where
            # nothing then matches
            owner = user.id if folder_id is None else \
                self._owner_of(cur, user.id, _parse_folder_id(folder_id))
            items = self._contacts_by_id(cur, owner, ids)
            return [items[i] for i in ids if i in items]

        return self._run(q)

    @staticmethod
    def _name_range(user: User, recipients: bool, folder_id: str | None
                    ) -> tuple[str | None, tuple[Any, ...]]:
        """The condition of a contact_names walk (None: a folder id that is none)."""
        if folder_id is not None:
            if recipients:
                raise ValueError("a folder's walk is of all its contacts")
            fid = _parse_folder_id(folder_id)
            if fid is None:
                return None, ()
            # the folder's rows only (folder ids are global; _contacts_by_id checks
            # the user), so that the walk is one range of contact_names_folder
            return "folder_id = ?", (fid,)
        if recipients:
            return "user_id = ? AND recipient = 1", (user.id,)
        return "user_id = ?", (user.id,)

    def explain_lookups(self, user: User, prefix: str, limit: int,
                        folder_id: str | None = None) -> Deferred[list[str]]:
        """The database's plans for the first page of ``find_contacts_by_name`` (the
        recipients, then all contacts, then with ``folder_id`` that folder's) and of
        ``find_users``, one line per entry (to check that they walk indexes
        contact_names_recipients, contact_names_lookup, contact_names_folder and
        user_names_lookup in order: no scan, no sort)."""

        def q(cur: Any) -> list[str]:
            out: list[str] = []
            walks: list[tuple[bool, str | None]] = [(True, None), (False, None)]
            if folder_id is not None:
                walks.append((False, folder_id))
            for recipients, folder in walks:
                where, params = self._name_range(user, recipients, folder)
                if where is not None:
                    self._prefix_walk(cur, "contact_names", "item_id", where, params,
                                      prefix, int(limit), explain=out)
            self._prefix_walk(cur, "user_names", "user_id", "1 = 1", (), prefix,
                              int(limit), explain=out)
            return out

        return self._run(q)
