"""The CRM mirror in easync's own SQL database.

The items themselves live in the SQL store's ``items`` table (so the change feed,
tombstones, links and sync states work exactly as with ``--backend sql``); these
tables (made by the SQL store's migrations, ``backends/sql/schema/006_crm_mirror.sql``)
add, per mirrored CRM record, what ties it to the CRM:

``crm_items``        item row id ↔ CRM id, the CRM modifiedtime and the *snapshot*
                     (``mapping.view`` of the version last seen), deleted flag
``crm_users``        easync user ↔ CRM user id, and whether the first load is done
``crm_state``        the poller's cursors and mode (JSON values)
``crm_client_adds``  Adds a device made whose sync state is not saved yet (the
                     CRM answered some of a request's writes, then failed): the
                     device's retry of the same ClientId maps to the record made
``crm_event_links``  an event's CRM contact links as easync knows them (vtiger keeps
                     several per event; ``query`` and ``retrieve`` each name one, and
                     a ``revise`` keeps only those it is given): contact id and the
                     attendee address the link stands for
``crm_shared``       the company address book's items (one per CRM contact, in one
                     folder of a system user, whoever reads it: ``shared.py``)
``crm_journal``      a device's Add written down *before* the CRM is asked to create
                     it (user, device, folder, ClientId, module, the element, the
                     EAS data, the CRM time it was sent, the process): a row left
                     behind means the CRM may have made a record the mirror never
                     recorded (a crash, a lost answer); ``CrmStore.reconcile`` looks
                     it up in the CRM and records it, so the retry of that Add maps
                     to it instead of making a second one

On PostgreSQL several easync processes share these tables (``--workers``, several
nodes): every transaction that writes the mirror first takes one transaction-scoped
advisory lock (``serialize``), so two of them never add the same CRM record twice.

Every function here runs inside one SQL transaction (``Database.run_interaction``), in a
pool thread, so a batch of CRM records and its feed entries commit together; they reach
the SQL store through its public parts (``sql.db``, ``sql.items.apply_txn``,
``sql.state.save_state_txn``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from backends.crm import mapping, shared
from backends.sql.shares import list_folders_txn
from easync.items import email_address
from easync.model import Op, OpResult, StateWrite

#: the mirror's layout version, kept in crm_state by its tables' migration
#: (backends/sql/schema/006_crm_mirror.sql)
SCHEMA_VERSION = 2                  # 2: crm_shared (schema/013_crm_shared.sql)
#: (classid, objid) of the advisory lock every mirror-writing transaction takes on
#: PostgreSQL ("easy", "crmm")
MIRROR_LOCK = (0x65617379, 0x63726D6D)
_CHUNK = 400
#: the device id of a restore's journal rows (``easync.deleted``; ``Op.restores``):
#: no device has it (a DeviceId is never empty); their ClientId is the kept row's id
RESTORE_JOURNAL = ""


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def check_schema(sql: Any, cur: Any) -> None:
    """Fail unless the mirror's tables are there (the SQL store's schema version 6
    creates them) in the layout this code writes."""
    version = get_state(sql, cur, "schema_version")
    if version != SCHEMA_VERSION:
        raise RuntimeError(f"CRM mirror layout {version!r} in the database, this easync "
                           f"writes {SCHEMA_VERSION}")


def serialize(sql: Any, cur: Any) -> None:
    """Order this transaction against every other one writing the mirror, in any
    process on this database (PostgreSQL; SQLite has one writer at a time anyway)."""
    if sql.engine.name == "postgres":
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIRROR_LOCK)


# -- small state -------------------------------------------------------------------------

def get_state(sql: Any, cur: Any, name: str) -> Any:
    cur.execute(sql.db.sql("SELECT value FROM crm_state WHERE name = ?"), (name,))
    row = cur.fetchone()
    return json.loads(row[0]) if row else None


def put_state(sql: Any, cur: Any, name: str, value: Any) -> None:
    cur.execute(sql.engine.upsert("crm_state", ("name",), ("value",)), (name, _dumps(value)))


def get_crm_user(sql: Any, cur: Any, user_id: int) -> tuple[str | None, bool] | None:
    cur.execute(sql.db.sql("SELECT crm_user_id, loaded FROM crm_users WHERE user_id = ?"),
                (user_id,))
    row = cur.fetchone()
    return (row[0], bool(row[1])) if row else None


def put_crm_user(sql: Any, cur: Any, user_id: int, crm_user_id: str | None,
                 loaded: bool) -> None:
    cur.execute(sql.engine.upsert("crm_users", ("user_id",), ("crm_user_id", "loaded")),
                (user_id, crm_user_id, int(loaded)))


def mapped_users(sql: Any, cur: Any) -> dict[str, int]:
    """CRM user id -> easync user id, for users whose first load has started."""
    cur.execute("SELECT crm_user_id, user_id FROM crm_users WHERE crm_user_id IS NOT NULL")
    return {str(c): int(u) for c, u in cur.fetchall()}


def loaded_users(sql: Any, cur: Any) -> dict[str, int]:
    """CRM user id -> easync user id, for users whose first load is done (the mirror
    holds all their records)."""
    cur.execute("SELECT crm_user_id, user_id FROM crm_users WHERE crm_user_id IS NOT NULL"
                " AND loaded = 1")
    return {str(c): int(u) for c, u in cur.fetchall()}


# -- reading ---------------------------------------------------------------------------------

@dataclass
class Row:
    item_id: int
    user_id: int
    module: str
    crm_id: str
    mtime: str
    snapshot: dict[str, str]
    deleted: bool


def _rows(sql: Any, cur: Any, where: str, params: list[Any]) -> list[Row]:
    cur.execute(sql.db.sql(
        "SELECT item_id, user_id, module, crm_id, mtime, snapshot, deleted FROM crm_items"
        f" WHERE {where}"), params)
    return [Row(int(i), int(u), m, c, t or "", json.loads(s), bool(d))
            for i, u, m, c, t, s, d in cur.fetchall()]


def rows_by_crm_id(sql: Any, cur: Any, crm_ids: list[str]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    ids = sorted(set(crm_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        for row in _rows(sql, cur, f"crm_id IN {sql.engine.placeholders(len(part))}", part):
            out.setdefault(row.crm_id, []).append(row)
    return out


def rows_by_item(sql: Any, cur: Any, item_ids: list[int]) -> dict[int, Row]:
    out: dict[int, Row] = {}
    ids = sorted(set(item_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        for row in _rows(sql, cur, f"item_id IN {sql.engine.placeholders(len(part))}", part):
            out[row.item_id] = row
    return out


def item_data(sql: Any, cur: Any, item_ids: list[int]) -> dict[int, tuple[dict[str, Any], int]]:
    """item id -> (data, modseq) of live items."""
    out: dict[int, tuple[dict[str, Any], int]] = {}
    ids = sorted(set(item_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        cur.execute(sql.db.sql(
            f"SELECT id, data, modseq FROM items WHERE id IN {sql.engine.placeholders(len(part))}"
            " AND deleted = 0"), part)
        for iid, data, modseq in cur.fetchall():
            out[int(iid)] = (json.loads(data), int(modseq))
    return out


def live_crm_ids(sql: Any, cur: Any, module: str,
                 user_ids: Iterable[int] | None = None) -> dict[str, tuple[int, int]]:
    """CRM id -> (item id, user id) of every live mirrored record of a module (of
    these easync users only, when given)."""
    where, params = _users_clause(sql, user_ids)
    cur.execute(sql.db.sql("SELECT crm_id, item_id, user_id FROM crm_items WHERE module = ?"
                         f" AND deleted = 0{where}"), (module, *params))
    return {c: (int(i), int(u)) for c, i, u in cur.fetchall()}


def live_count(sql: Any, cur: Any, module: str, user_ids: Iterable[int]) -> int:
    """How many CRM records of a module the mirror holds live for these users: what
    the CRM's ``count(*)`` of their records must equal when nothing was missed."""
    where, params = _users_clause(sql, user_ids)
    cur.execute(sql.db.sql("SELECT count(DISTINCT crm_id) FROM crm_items WHERE module = ?"
                         f" AND deleted = 0{where}"), (module, *params))
    return int(cur.fetchone()[0])


def _users_clause(sql: Any, user_ids: Iterable[int] | None) -> tuple[str, list[int]]:
    if user_ids is None:
        return "", []
    ids = sorted(set(user_ids))
    if not ids:
        return " AND 1 = 0", []
    return f" AND user_id IN {sql.engine.placeholders(len(ids))}", ids


def links(sql: Any, cur: Any, user_id: int, emails: Iterable[str] = (),
          crm_ids: Iterable[str] = ()) -> mapping.Links:
    """The user's mirrored contacts with one of these addresses or CRM ids (by address
    and by CRM id): what an event's link needs, read through indexes (O(asked))."""
    out = mapping.Links()
    e = sql.engine
    found: dict[int, tuple[str, str]] = {}
    wanted = sorted({a for a in (email_address(x) for x in emails) if a})
    for i in range(0, len(wanted), _CHUNK):
        part = wanted[i:i + _CHUNK]
        cur.execute(sql.db.sql(
            "SELECT c.item_id, c.crm_id, i.data FROM contact_emails m"
            " JOIN crm_items c ON c.item_id = m.item_id JOIN items i ON i.id = c.item_id"
            f" WHERE m.user_id = ? AND m.email IN {e.placeholders(len(part))}"
            " AND c.deleted = 0 AND i.deleted = 0"), (user_id, *part))
        found.update((int(r[0]), (r[1], r[2])) for r in cur.fetchall())
    ids = sorted({c for c in crm_ids if c})
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        cur.execute(sql.db.sql(
            "SELECT c.item_id, c.crm_id, i.data FROM crm_items c JOIN items i"
            f" ON i.id = c.item_id WHERE c.crm_id IN {e.placeholders(len(part))}"
            " AND c.user_id = ? AND c.module = 'Contacts' AND c.deleted = 0"
            " AND i.deleted = 0"), (*part, user_id))
        found.update((int(r[0]), (r[1], r[2])) for r in cur.fetchall())
    for _item, (crm_id, data_text) in sorted(found.items()):
        data = json.loads(data_text)
        addrs = [a for a in (email_address(data.get(k)) for k in
                             ("Email1Address", "Email2Address", "Email3Address")) if a]
        for a in addrs:
            out.by_email.setdefault(a, crm_id)
        out.by_id[crm_id] = (addrs[0] if addrs else "", mapping.contact_name(data))
    return out


def event_links(sql: Any, cur: Any, item_ids: list[int]) -> dict[int, dict[str, str]]:
    """item id -> {CRM contact id: the attendee address the link stands for}."""
    out: dict[int, dict[str, str]] = {}
    ids = sorted(set(item_ids))
    for i in range(0, len(ids), _CHUNK):
        part = ids[i:i + _CHUNK]
        cur.execute(sql.db.sql(
            "SELECT item_id, contact_id, email FROM crm_event_links WHERE item_id IN"
            f" {sql.engine.placeholders(len(part))} ORDER BY item_id, contact_id"), part)
        for item_id, contact_id, email in cur.fetchall():
            out.setdefault(int(item_id), {})[str(contact_id)] = str(email or "")
    return out


def put_event_links(sql: Any, cur: Any, item_id: int, found: dict[str, str],
                    reset: bool) -> None:
    """Record an event's CRM contact links: ``reset`` replaces what was known (a new
    version of the record, or what a device write just set), otherwise ``found`` is
    added to it (the other read path of the same version names another contact)."""
    if reset:
        cur.execute(sql.db.sql("DELETE FROM crm_event_links WHERE item_id = ?"), (item_id,))
    elif found:
        have = event_links(sql, cur, [item_id]).get(item_id, {})
        found = {c: e for c, e in found.items() if c not in have}
    rows = [(item_id, c, e) for c, e in found.items() if c]
    if rows:
        cur.executemany(sql.db.sql("INSERT INTO crm_event_links (item_id, contact_id, email)"
                                 " VALUES (?, ?, ?)"), rows)


def _seen_link(new_view: dict[str, str], links: mapping.Links) -> dict[str, str]:
    """The contact a CRM read of an event names, with the address it stands for."""
    cid = new_view.get("contact_id", "")
    return {cid: (links.by_id.get(cid) or ("", ""))[0]} if cid else {}


# -- CRM-side changes into the mirror ----------------------------------------------------------

@dataclass
class Incoming:
    """One page of CRM records of one module, as read through ``path``."""

    module: str
    records: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    path: str = "query"
    only_owner: str | None = None        # an initial load: only this CRM user's records


def apply_incoming(sql: Any, cur: Any, batch: Incoming, owners: dict[str, int],
                   folders: dict[int, str], ctx: mapping.Context,
                   creating: frozenset[str] = frozenset(),
                   company: tuple[int, str] | None = None) -> set[tuple[int, str]]:
    """Write a page of CRM records into the mirror: new ones are added to their
    owner's folder, changed ones merged over the item (only the units whose view
    changed), deleted or reassigned ones tombstoned.  ``owners``: CRM user id → easync
    user id; ``folders``: easync user id → the module's folder id.  ``creating``: CRM
    ids a device write made and has not recorded yet: not added here (that write adds
    them, a second item would be a duplicate).  ``company``: (user id, folder id) of
    the company address book (``shared.holder``), for Contacts when it is on: the same
    records are written there too, in this transaction (a re-assign leaves one
    folder and enters the other at once).  Returns the (user id, folder id) pairs
    that changed."""
    serialize(sql, cur)
    owners, folders = _owners_now(sql, cur, batch.module, owners, folders)
    changed: set[tuple[int, str]] = set()
    if company is not None and batch.module == "Contacts" and batch.only_owner is None and \
            shared.apply(sql, cur, company[0], company[1], batch.records, batch.deleted, ctx,
                         batch.path):
        changed.add(company)
    module = batch.module
    cls = mapping.CLASS_OF[module]
    ids = [str(r.get("id")) for r in batch.records] + list(batch.deleted)
    existing = rows_by_crm_id(sql, cur, ids)
    live_items = item_data(sql, cur, [r.item_id for rows in existing.values()
                                      for r in rows if not r.deleted])
    link_cache: dict[int, mapping.Links] = {}
    linked = [str(r.get("contact_id")) for r in batch.records if r.get("contact_id")]

    def links_of(user_id: int) -> mapping.Links:
        if user_id not in link_cache:
            link_cache[user_id] = links(sql, cur, user_id, crm_ids=linked) \
                if module == "Events" and linked else mapping.Links()
        return link_cache[user_id]

    # per (user, folder): ops, and what each op does to crm_items
    plans: dict[tuple[int, str], list[tuple[Op, str, Any]]] = {}

    def plan(user_id: int, op: Op, what: str, extra: Any) -> None:
        plans.setdefault((user_id, folders[user_id]), []).append((op, what, extra))

    for rec in batch.records:
        crm_id = str(rec.get("id"))
        mtime = str(rec.get("modifiedtime") or "")
        owner = str(rec.get("assigned_user_id") or "")
        if batch.only_owner is not None and owner != batch.only_owner:
            continue
        target = owners.get(owner)
        if target is not None and target not in folders:
            target = None
        rows = existing.get(crm_id, [])
        if not rows and crm_id in creating:
            continue
        live = next((r for r in rows if not r.deleted and r.item_id in live_items), None)
        newest = max((r.mtime for r in rows), default="")
        if mtime and newest and mtime < newest:
            continue                        # an older version than the mirror's
        new_view = mapping.view(module, rec, batch.path, ctx)
        if live is not None and live.user_id == target:
            if module == "Events":
                # a newer version: the links are what it names; the same version read
                # through the other path may name another of its contacts
                put_event_links(sql, cur, live.item_id,
                                _seen_link(new_view, links_of(live.user_id)),
                                reset=bool(mtime) and mtime > live.mtime)
            if new_view == live.snapshot:
                if mtime > live.mtime:
                    cur.execute(sql.db.sql("UPDATE crm_items SET mtime = ? WHERE item_id = ?"),
                                (mtime, live.item_id))
                continue
            data = mapping.merge(module, live_items[live.item_id][0], live.snapshot, new_view,
                                 ctx, links_of(live.user_id), crm_id)
            plan(live.user_id, Op("change", server_id=f"{folders[live.user_id]}:"
                                  f"{live.item_id}", data=data, cls=cls),
                 "change", (live.item_id, new_view, mtime))
            continue
        if live is not None:
            # reassigned in the CRM to someone else (or to no easync user)
            if live.user_id in folders:
                plan(live.user_id, Op("delete", server_id=f"{folders[live.user_id]}:"
                                      f"{live.item_id}"), "delete", live.item_id)
            else:
                _tombstone(sql, cur, live.item_id)
        if target is None:
            continue
        data = mapping.merge(module, None, None, new_view, ctx, links_of(target), crm_id)
        plan(target, Op("add", data=data, cls=cls), "add",
             (crm_id, new_view, mtime, _seen_link(new_view, links_of(target))))

    for crm_id in batch.deleted:
        for row in existing.get(crm_id, []):
            if row.deleted:
                continue
            if row.item_id in live_items and row.user_id in folders:
                plan(row.user_id, Op("delete", server_id=f"{folders[row.user_id]}:"
                                     f"{row.item_id}"), "delete", row.item_id)
            else:
                _tombstone(sql, cur, row.item_id)

    for (user_id, folder_id), steps in plans.items():
        results = sql.items.apply_txn(cur, user_id, folder_id, [s[0] for s in steps], None)
        for (op, what, extra), res in zip(steps, results, strict=True):
            _record(sql, cur, user_id, module, what, extra, res)
        changed.add((user_id, folder_id))
    return changed


def _owners_now(sql: Any, cur: Any, module: str, owners: dict[str, int],
                folders: dict[int, str]) -> tuple[dict[str, int], dict[int, str]]:
    """``owners`` and ``folders`` with the users mapped since they were read.  A poll
    reads them before its query; with ``--workers`` another process may begin a
    user's first load in between, and that user's records then read as reassigned to
    nobody: the row tombstoned, the item left, the record added again by the next
    poll (a duplicate on the phone).  Read again here, under ``serialize``."""
    cur.execute("SELECT COUNT(*) FROM crm_users WHERE crm_user_id IS NOT NULL")
    row = cur.fetchone()
    if row is not None and int(row[0]) == len(owners):
        return owners, folders          # (the usual case: one count, not every row)
    fresh = mapped_users(sql, cur)
    news = {c: u for c, u in fresh.items() if owners.get(c) != u}
    if not news:
        return owners, folders
    folders = dict(folders)
    for user_id in set(news.values()) - set(folders):
        # (as CrmStore.folders_of finds them; the default folders are the user's own)
        found = mapping.default_folders(list_folders_txn(sql.engine, cur, user_id, False))
        if module in found:
            folders[user_id] = found[module]
    return {**owners, **news}, folders


def _tombstone(sql: Any, cur: Any, item_id: int) -> None:
    cur.execute(sql.db.sql("UPDATE crm_items SET deleted = 1 WHERE item_id = ?"), (item_id,))


def _record(sql: Any, cur: Any, user_id: int, module: str, what: str, extra: Any,
            res: OpResult) -> None:
    if what == "add":
        crm_id, snap, mtime, seen = extra
        if res.ok and res.server_id:
            item_id = int(res.server_id.split(":")[1])
            cur.execute(sql.db.sql(
                "INSERT INTO crm_items (item_id, user_id, module, crm_id, mtime, snapshot,"
                " deleted) VALUES (?, ?, ?, ?, ?, ?, 0)"),
                (item_id, user_id, module, crm_id, mtime, _dumps(snap)))
            if module == "Events":
                put_event_links(sql, cur, item_id, seen, reset=True)
    elif what == "change":
        item_id, snap, mtime = extra
        if res.ok:
            cur.execute(sql.db.sql("UPDATE crm_items SET snapshot = ?, mtime = ? WHERE"
                                 " item_id = ?"), (_dumps(snap), mtime, item_id))
        else:
            _tombstone(sql, cur, item_id)
    elif what == "delete":
        _tombstone(sql, cur, int(extra))


# -- device writes ---------------------------------------------------------------------------

@dataclass
class Step:
    """What one device op became after the CRM call (or that it never got one)."""

    op: Op
    kind: str                       # add | change | delete | gone | fail | reuse | skip
    error: str | None = None        # for fail
    data: dict[str, Any] | None = None
    crm_id: str = ""
    snapshot: dict[str, str] | None = None
    mtime: str = ""
    item_id: int = 0                # change, delete, gone, reuse
    journal: str = ""               # add: the crm_journal row written before the create
    links: dict[str, str] | None = None     # an event's CRM contact links after the write


def commit_device_write(sql: Any, cur: Any, user_id: int, folder_id: str, module: str,
                        steps: list[Step], state: StateWrite | None, complete: bool,
                        now: float) -> list[OpResult]:
    """Record in the mirror what the CRM accepted, in one transaction with the sync
    state (``complete``: every op got its answer; otherwise the state is not saved,
    the device will repeat the request, and its Adds are remembered by ClientId).

    An Add whose CRM record the poller has mirrored meanwhile (it saw the record
    before this write was recorded, maybe in another process) becomes that item,
    with the device's data.  A ``gone`` step (the device changed a record the CRM has
    deleted) tombstones the item, so every device gets a Delete, and answers the
    device "not found".  The journal rows of the Adds are dropped here, in the same
    transaction as what they became.

    ``user_id`` is the device's user (its sync state, its ClientIds); the records are
    the folder owner's (a folder shared read-write: a colleague's)."""
    serialize(sql, cur)
    cls = mapping.CLASS_OF[module]
    owner = user_id
    if folder_id.isdigit():
        cur.execute(sql.db.sql("SELECT user_id FROM folders WHERE id = ?"), (int(folder_id),))
        found = cur.fetchone()
        if found is not None:
            owner = int(found[0])
    made = rows_by_crm_id(sql, cur, [st.crm_id for st in steps if st.kind == "add"])
    adopted: dict[int, int] = {}            # step -> item id the poller made
    for n, st in enumerate(steps):
        if st.kind != "add":
            continue
        live = [r for r in made.get(st.crm_id, []) if not r.deleted and r.user_id == owner]
        if live:
            alive = item_data(sql, cur, [live[0].item_id])
            if live[0].item_id in alive:
                adopted[n] = live[0].item_id
    sql_ops: list[Op] = []
    index: list[int] = []
    for n, st in enumerate(steps):
        if n in adopted:
            sql_ops.append(Op("change", server_id=f"{folder_id}:{adopted[n]}", data=st.data,
                              ref=st.op.ref))
        elif st.kind == "add":
            sql_ops.append(Op("add", data=st.data, ref=st.op.ref, cls=cls,
                              restores=st.op.restores))
        elif st.kind in ("change", "delete"):
            sql_ops.append(Op(st.kind, server_id=st.op.server_id, data=st.data, ref=st.op.ref))
        elif st.kind == "gone":
            sql_ops.append(Op("delete", server_id=st.op.server_id, ref=st.op.ref))
        else:
            continue
        index.append(n)
    applied = sql.items.apply_txn(cur, user_id, folder_id, sql_ops, None) if sql_ops else []
    results: list[OpResult | None] = [None] * len(steps)
    for n, res in zip(index, applied, strict=True):
        st = steps[n]
        results[n] = res
        if st.kind == "add" and res.ok and res.server_id:
            item_id = int(res.server_id.split(":")[1])
            if n in adopted:
                cur.execute(sql.db.sql("UPDATE crm_items SET snapshot = ?, mtime = ? WHERE"
                                     " item_id = ?"), (_dumps(st.snapshot), st.mtime, item_id))
                if st.op.restores is not None:
                    # a restore's record the poller mirrored first: the kept row is
                    # restored as that item, in this transaction
                    sql.deleted.mark_restored_txn(cur, user_id, [(st.op.restores,
                                                                   res.server_id)], now)
            else:
                cur.execute(sql.db.sql(
                    "INSERT INTO crm_items (item_id, user_id, module, crm_id, mtime, snapshot,"
                    " deleted) VALUES (?, ?, ?, ?, ?, ?, 0)"),
                    (item_id, owner, module, st.crm_id, st.mtime, _dumps(st.snapshot)))
            if st.links is not None:
                put_event_links(sql, cur, item_id, st.links, reset=True)
            if state is not None and st.op.ref:
                cur.execute(sql.engine.upsert(
                    "crm_client_adds", ("user_id", "device_id", "folder_id", "client_id"),
                    ("item_id", "created")),
                    (user_id, state.device_id, folder_id, st.op.ref, item_id, now))
        elif st.kind == "change" and res.ok and st.snapshot is not None:
            cur.execute(sql.db.sql("UPDATE crm_items SET snapshot = ?, mtime = ? WHERE"
                                 " item_id = ?"), (_dumps(st.snapshot), st.mtime, st.item_id))
            if st.links is not None:
                put_event_links(sql, cur, st.item_id, st.links, reset=True)
        elif st.kind in ("delete", "gone") and res.ok:
            _tombstone(sql, cur, st.item_id)
        if st.kind == "gone":
            # tombstoned for every device; this one is told its change found nothing
            results[n] = OpResult(st.op.ref, st.op.server_id, False, 0, "notfound")
    drop_journal(sql, cur, [st.journal for st in steps if st.journal])
    reuse = [st.item_id for st in steps if st.kind == "reuse"]
    modseqs = item_data(sql, cur, reuse) if reuse else {}
    final: list[OpResult] = []
    for n, st in enumerate(steps):
        res = results[n]
        if res is not None:
            final.append(res)
        elif st.kind == "reuse" and st.item_id in modseqs:
            final.append(OpResult(st.op.ref, f"{folder_id}:{st.item_id}", True,
                                  modseqs[st.item_id][1]))
        elif st.kind == "skip":
            final.append(OpResult(st.op.ref, st.op.server_id, True, st.item_id))
        else:
            final.append(OpResult(st.op.ref, st.op.server_id, False, 0,
                                  st.error or "invalid"))
    if complete and state is not None:
        if state.build is not None:
            state.state = state.build(final)
        sql.state.save_state_txn(cur, user_id, state)
        cur.execute(sql.db.sql("DELETE FROM crm_client_adds WHERE user_id = ? AND device_id = ?"
                             " AND folder_id = ?"), (user_id, state.device_id, folder_id))
    return final


# -- retention (the SQL store's purges, backends/sql/retention.py) ----------------------------

def forget_items(sql: Any, cur: Any, item_ids: list[int]) -> None:
    """The item rows ``item_ids`` were purged (tombstones nobody needs): their CRM ties
    go too (a record the CRM shows again later is mirrored as a new item)."""
    for i in range(0, len(item_ids), _CHUNK):
        part = item_ids[i:i + _CHUNK]
        marks = sql.engine.placeholders(len(part))
        for table in ("crm_items", "crm_event_links", "crm_client_adds", "crm_shared"):
            cur.execute(sql.db.sql(f"DELETE FROM {table} WHERE item_id IN {marks}"), part)


def forget_device(sql: Any, cur: Any, user_id: int, device_id: str) -> None:
    """A device was forgotten: the Adds remembered for its retry go (its journal rows
    stay: ``CrmStore.reconcile`` still resolves them against the CRM)."""
    cur.execute(sql.db.sql("DELETE FROM crm_client_adds WHERE user_id = ? AND device_id = ?"),
                (user_id, device_id))


# -- the write journal -------------------------------------------------------------------------

@dataclass
class JournalEntry:
    """A device's Add about to be sent to the CRM (see ``crm_journal``)."""

    jid: str
    user_id: int
    device_id: str
    folder_id: str
    client_id: str
    module: str
    owner: str                      # the CRM user the record is assigned to
    element: dict[str, Any]         # what is sent to ``create``
    data: dict[str, Any]            # the device's EAS item
    since: str                      # the CRM's clock a minute before, in its own form
    node: str                       # the easync process that sends it
    created: float                  # easync's clock when written


def put_journal(sql: Any, cur: Any, e: JournalEntry) -> None:
    cur.execute(sql.db.sql(
        "INSERT INTO crm_journal (jid, user_id, device_id, folder_id, client_id, module,"
        " owner, element, data, since, node, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " ?)"), (e.jid, e.user_id, e.device_id, e.folder_id, e.client_id, e.module, e.owner,
                 _dumps(e.element), _dumps(e.data), e.since, e.node, e.created))


def drop_journal(sql: Any, cur: Any, jids: list[str]) -> None:
    for i in range(0, len(jids), _CHUNK):
        part = jids[i:i + _CHUNK]
        cur.execute(sql.db.sql(f"DELETE FROM crm_journal WHERE jid IN"
                             f" {sql.engine.placeholders(len(part))}"), part)


def journal(sql: Any, cur: Any, user_id: int | None = None, device_id: str | None = None
            ) -> list[JournalEntry]:
    """The journal rows (of one device of one user, when given), oldest first."""
    where, params = "", []  # type: str, list[Any]
    if user_id is not None:
        where, params = " WHERE user_id = ? AND device_id = ?", [user_id, device_id or ""]
    cur.execute(sql.db.sql("SELECT jid, user_id, device_id, folder_id, client_id, module, owner,"
                         f" element, data, since, node, created FROM crm_journal{where}"
                         " ORDER BY created, jid"), params)
    return [JournalEntry(j, int(u), d, f, c, m, o, json.loads(el), json.loads(da), s, n,
                         float(t))
            for j, u, d, f, c, m, o, el, da, s, n, t in cur.fetchall()]


def resolve_journal(sql: Any, cur: Any, e: JournalEntry, rec: dict[str, Any] | None,
                    snapshot: dict[str, str] | None, now: float) -> int | None:
    """What a journal row became: ``rec`` is the CRM record it made (None: it made
    none).  The record is put in the mirror with the device's data (or, when the
    poller mirrored it already, that item takes the device's data) and remembered
    under the device's ClientId, so the device's retry of the Add maps to it; the row
    is dropped.  Returns the item id (None when nothing was made)."""
    serialize(sql, cur)
    cur.execute(sql.db.sql("SELECT 1 FROM crm_journal WHERE jid = ?"), (e.jid,))
    if cur.fetchone() is None:
        return None                         # resolved meanwhile (by another process)
    drop_journal(sql, cur, [e.jid])
    if rec is None:
        return None
    crm_id = str(rec.get("id"))
    mtime = str(rec.get("modifiedtime") or "")
    # a restore's row (easync.deleted): the kept row is marked restored with the
    # item, and no device's ClientId is remembered
    restore = e.device_id == RESTORE_JOURNAL and e.client_id.isdigit()
    steps = [Step(Op("add", data=e.data, ref=e.client_id,
                     restores=int(e.client_id) if restore else None), "add", data=e.data,
                  crm_id=crm_id, snapshot=snapshot, mtime=mtime)]
    try:
        (res,) = commit_device_write(sql, cur, e.user_id, e.folder_id, e.module, steps,
                                     None if restore else StateWrite(e.device_id, "", {}),
                                     False, now)
    except KeyError:
        return None                         # the folder is gone
    if not res.ok or not res.server_id:
        return None
    return int(res.server_id.split(":")[1])


def client_adds(sql: Any, cur: Any, user_id: int, device_id: str, folder_id: str
                ) -> dict[str, int]:
    """ClientId -> item id of a device's Adds made by a request not yet answered."""
    cur.execute(sql.db.sql("SELECT client_id, item_id FROM crm_client_adds WHERE user_id = ?"
                         " AND device_id = ? AND folder_id = ?"),
                (user_id, device_id, folder_id))
    return {c: int(i) for c, i in cur.fetchall()}
