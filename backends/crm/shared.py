"""The company address book: CRM contacts a user may read but is not assigned.

Stored once, whoever reads it (README "The company address book"): every CRM contact
is one item in ONE folder of a system user (``HOLDER``, the SQL store's user of that
name: its default Contacts folder), with a ``crm_shared`` row (schema version 13)
tying the item to its CRM record and to the CRM user the record is assigned to.

Each easync user sees that folder, read-only, as a Contacts folder of their own
hierarchy (type 14, MS-ASCMD 2.2.3.186.3) under the same ServerId, *minus the
records assigned to them* (those are in their own Contacts folder).  Their view is
the folder's change feed (index ``items_feed``) with the rows of their own records
left out:

* a live row assigned to someone else: an Add or a Change (the engine tells them
  apart by ``created_modseq``, as for any folder);
* a live row assigned to the user: not there for them (never was, under that id);
* a tombstone of a row assigned to someone else: a Delete (the engine drops it when
  the item came and went while the device was away);
* a tombstone of a row assigned to the user: nothing (the user never had it).

A re-assign in the CRM is therefore a tombstone of the record's row and a new row
(a new item id) for the new owner: the old owner's view gains the record (Add), the
new owner's loses it (Delete) and it appears in their own Contacts (the per-user
mirror, in the same transaction); everyone else sees it deleted and added again.

Every function runs inside one SQL transaction (``Database.run_interaction``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backends.crm import mapping
from easync.model import Change, ChangeBatch, Item, Op

#: the SQL store's user that holds the company address book's items: a name no Basic
#: credentials can carry (RFC 7617: the user-id ends at the first colon), never
#: enabled for ActiveSync, without a password
HOLDER = "crm:company"
#: the device id of the guard state (``guard``)
GUARD_DEVICE = "crm:readers"
#: rows read per query of the feed (each user's view skips their own records' rows)
FEED_CHUNK = 200
_CHUNK = 400


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass
class SharedRow:
    item_id: int
    crm_id: str
    owner: str
    mtime: str
    snapshot: dict[str, str]
    deleted: bool


def holder(sql: Any, cur: Any) -> tuple[int, str]:
    """(user id, Contacts folder id) of ``HOLDER``, made the first time (without
    ActiveSync, without a password)."""
    user = sql.users.get_user_txn(cur, HOLDER)
    if user is None:
        user = sql.users.add_user_txn(cur, HOLDER, None, None, False)
    cur.execute(sql.db.sql("SELECT id FROM folders WHERE user_id = ? AND type = 9"
                           " AND deleted = 0 ORDER BY id"), (user.id,))
    row = cur.fetchone()
    if row is None:
        raise RuntimeError(f"the {HOLDER} user has no Contacts folder")
    cur.execute(sql.db.sql("SELECT 1 FROM sync_states WHERE user_id = ? AND device_id = ?"),
                (user.id, GUARD_DEVICE))
    if cur.fetchone() is None:
        _put_guard(sql, cur, user.id, str(row[0]), 0)     # keeps every tombstone
    return user.id, str(row[0])


def _put_guard(sql: Any, cur: Any, user_id: int, folder_id: str, floor: int | None) -> None:
    cur.execute(sql.engine.upsert("sync_states", ("user_id", "device_id", "name"),
                                  ("state", "feed_cursor")),
                (user_id, GUARD_DEVICE, f"sync:{folder_id}", _dumps({"guard": True}), floor))


def guard(sql: Any, cur: Any, user_id: int, folder_id: str) -> int | None:
    """Keep the tombstones the readers' devices still need.  The SQL store's retention
    (backends/sql/retention.py ``purge_synced``) keeps a folder's tombstones above the
    lowest ``feed_cursor`` of the *folder owner's* sync states; the book's readers keep
    theirs under their own user ids.  A guard state under the holder carries the
    lowest ``feed_cursor`` of the readers' states (index sync_states_name); None when
    none needs any.  Written at the holder's creation (0: keep all) and by each poll.
    A reader's state saved meanwhile below a purge is refused as for any folder
    (``StateExpired``: Status 3)."""
    name = f"sync:{folder_id}"
    cur.execute(sql.db.sql("SELECT purged FROM folders WHERE id = ?"), (int(folder_id),))
    row = cur.fetchone()
    purged = int(row[0]) if row else 0
    cur.execute(sql.db.sql("SELECT MIN(feed_cursor) FROM sync_states WHERE name = ?"
                           " AND feed_cursor >= ? AND NOT (user_id = ? AND device_id = ?)"),
                (name, purged, user_id, GUARD_DEVICE))
    low = cur.fetchone()[0]
    floor = None if low is None else int(low)
    _put_guard(sql, cur, user_id, folder_id, floor)
    return floor


def unload(sql: Any, cur: Any) -> None:
    """The book is off: the next time it is on, its records are loaded again."""
    cur.execute(sql.db.sql("SELECT value FROM crm_state WHERE name = 'company'"))
    row = cur.fetchone()
    if row is not None and json.loads(row[0]).get("loaded"):
        cur.execute(sql.db.sql("UPDATE crm_state SET value = ? WHERE name = 'company'"),
                    (_dumps({"loaded": False}),))


def rows_by_crm_id(sql: Any, cur: Any, crm_ids: list[str]) -> dict[str, list[SharedRow]]:
    out: dict[str, list[SharedRow]] = {}
    ids = sorted(set(crm_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        cur.execute(sql.db.sql(
            "SELECT item_id, crm_id, owner, mtime, snapshot, deleted FROM crm_shared"
            f" WHERE crm_id IN {sql.engine.placeholders(len(part))}"), part)
        for iid, c, o, t, s, d in cur.fetchall():
            out.setdefault(c, []).append(SharedRow(int(iid), c, o, t or "", json.loads(s),
                                                   bool(d)))
    return out


def live_count(sql: Any, cur: Any) -> int:
    """How many CRM contacts the company address book holds."""
    cur.execute("SELECT count(*) FROM crm_shared WHERE deleted = 0")
    return int(cur.fetchone()[0])


def live_ids(sql: Any, cur: Any) -> set[str]:
    cur.execute("SELECT crm_id FROM crm_shared WHERE deleted = 0")
    return {str(r[0]) for r in cur.fetchall()}


def apply(sql: Any, cur: Any, user_id: int, folder_id: str, records: list[dict[str, Any]],
          deleted: list[str], ctx: mapping.Context, path: str = "query") -> bool:
    """Write CRM contacts (as read through ``path``) and deletions into the company
    address book (``user_id``/``folder_id``: ``holder``'s).  True when it changed."""
    from backends.crm.mirror import item_data, serialize

    serialize(sql, cur)
    existing = rows_by_crm_id(sql, cur, [str(r.get("id")) for r in records] + deleted)
    live = {c: next((r for r in rows if not r.deleted), None) for c, rows in existing.items()}
    data = item_data(sql, cur, [r.item_id for r in live.values() if r is not None])
    ops: list[Op] = []
    plan: list[tuple[str, Any]] = []
    seen: set[str] = set()

    def drop(row: SharedRow) -> None:
        ops.append(Op("delete", server_id=f"{folder_id}:{row.item_id}"))
        plan.append(("delete", row.item_id))

    for rec in records:
        crm_id = str(rec.get("id"))
        if crm_id in seen:
            continue                        # listed twice in one batch: once is enough
        seen.add(crm_id)
        mtime = str(rec.get("modifiedtime") or "")
        owner = str(rec.get("assigned_user_id") or "")
        row = live.get(crm_id)
        newest = max((r.mtime for r in existing.get(crm_id, [])), default="")
        if mtime and newest and mtime < newest:
            continue                        # older than what the mirror has
        view = mapping.view("Contacts", rec, path, ctx)
        if row is not None and row.item_id in data and row.owner == owner:
            if view == row.snapshot:
                if mtime > row.mtime:
                    cur.execute(sql.db.sql("UPDATE crm_shared SET mtime = ? WHERE item_id = ?"),
                                (mtime, row.item_id))
                continue
            new = mapping.merge("Contacts", data[row.item_id][0], row.snapshot, view, ctx,
                                mapping.Links(), crm_id)
            ops.append(Op("change", server_id=f"{folder_id}:{row.item_id}", data=new,
                          cls="Contacts"))
            plan.append(("change", (row.item_id, view, mtime)))
            continue
        if row is not None:
            drop(row)                       # re-assigned: a new row for the new owner
        new = mapping.merge("Contacts", None, None, view, ctx, mapping.Links(), crm_id)
        ops.append(Op("add", data=new, cls="Contacts"))
        plan.append(("add", (crm_id, owner, view, mtime)))
    for crm_id in deleted:
        row = live.get(crm_id)
        if row is not None and crm_id not in seen:
            drop(row)
    if not ops:
        return False
    results = sql.items.apply_txn(cur, user_id, folder_id, ops, None)
    for (what, extra), res in zip(plan, results, strict=True):
        if what == "add" and res.ok and res.server_id:
            crm_id, owner, view, mtime = extra
            cur.execute(sql.db.sql(
                "INSERT INTO crm_shared (item_id, crm_id, owner, mtime, snapshot, deleted)"
                " VALUES (?, ?, ?, ?, ?, 0)"),
                (int(res.server_id.split(":")[1]), crm_id, owner, mtime, _dumps(view)))
        elif what == "change" and res.ok:
            item_id, view, mtime = extra
            cur.execute(sql.db.sql("UPDATE crm_shared SET snapshot = ?, mtime = ? WHERE"
                                   " item_id = ?"), (_dumps(view), mtime, item_id))
        elif what == "delete":
            cur.execute(sql.db.sql("UPDATE crm_shared SET deleted = 1 WHERE item_id = ?"),
                        (int(extra),))
    return True


# -- one user's view ---------------------------------------------------------------------------

_FEED = ("SELECT i.id, i.data, i.modseq, i.created_modseq, i.deleted, s.owner FROM items i"
         " JOIN crm_shared s ON s.item_id = i.id WHERE i.folder_id = ? AND i.modseq > ?"
         " ORDER BY i.modseq LIMIT ?")


def changes(sql: Any, cur: Any, folder_id: str, me: str, cursor: int, limit: int
            ) -> ChangeBatch:
    """The changes of the company address book after ``cursor`` as the CRM user ``me``
    sees it (without the records assigned to ``me``), at most ``limit``; the rows of
    ``me``'s records are skipped (``high`` moves past them; ``more`` may be set with
    fewer than ``limit`` changes, as a windowed feed does)."""
    fid = int(folder_id)
    sql.engine.before_feed(cur)
    out: list[Change] = []
    high = cursor
    chunk = max(limit, FEED_CHUNK)
    cur.execute(sql.db.sql(_FEED), (fid, cursor, chunk + 1))
    rows = cur.fetchall()
    for n, (iid, data, modseq, created, deleted, owner) in enumerate(rows):
        if n >= chunk:
            return ChangeBatch(out, True, high)
        if owner == me:
            high = int(modseq)              # not in this user's view: passed over
            continue
        if len(out) >= max(limit, 0):
            return ChangeBatch(out, True, high)
        high = int(modseq)
        sid = f"{folder_id}:{iid}"
        if deleted:
            out.append(Change(sid, high, True, int(created)))
        else:
            out.append(Change(sid, high, False, int(created),
                              Item(sid, folder_id, "Contacts", json.loads(data), high)))
    return ChangeBatch(out, False, high)


def count_changes(sql: Any, cur: Any, folder_id: str, me: str, cursor: int) -> int:
    cur.execute(sql.db.sql("SELECT count(*) FROM items i JOIN crm_shared s ON s.item_id = i.id"
                           " WHERE i.folder_id = ? AND i.modseq > ? AND s.owner <> ?"),
                (int(folder_id), int(cursor), me))
    return int(cur.fetchone()[0])


def get_items(sql: Any, cur: Any, folder_id: str, me: str, item_ids: list[int]
              ) -> dict[int, Item]:
    """The live items of the company address book among ``item_ids`` that ``me``
    sees."""
    out: dict[int, Item] = {}
    ids = sorted(set(item_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        cur.execute(sql.db.sql(
            "SELECT i.id, i.data, i.modseq FROM items i JOIN crm_shared s ON s.item_id = i.id"
            f" WHERE i.id IN {sql.engine.placeholders(len(part))} AND i.folder_id = ?"
            " AND i.deleted = 0 AND s.owner <> ?"), (*part, int(folder_id), me))
        for iid, data, modseq in cur.fetchall():
            sid = f"{folder_id}:{iid}"
            out[int(iid)] = Item(sid, folder_id, "Contacts", json.loads(data), int(modseq))
    return out
