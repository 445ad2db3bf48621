"""The SQL store: one database, its parts composed into the store the server uses.

``SqlStore(reactor, url)`` is one database (SQLite or PostgreSQL, see ``engines.py``)
reached through a ``Database`` (``database.py``: pool, engine, transactions).  The
work is done by one part per concern, each in its own module, all sharing that
``Database``:

``users``  (``users.py``, ``SqlUsers``)   accounts, directory tokens — ``IUserStore``
``items``  (``items.py``, ``SqlItems``)   folders, items, the change feed, links and
                                          contact lookups — ``IItemStore``
``state``  (``state.py``, ``SqlState``)   devices and sync state — ``IStateStore``
``holds``  (``holds.py``, ``SqlHolds``)   held long polls — ``IHoldStore``
``retention`` (``retention.py``, ``SqlRetention``)  tombstone purges, device expiry
                                          — ``IRetentionStore``
``deleted`` (``deleted.py``, ``SqlDeleted``)  what devices deleted, kept for a while
                                          — ``IDeletedStore``

``SqlStore`` provides all five interfaces by handing each call to its part, opens
and closes the database (and runs the lookup-token backfill of schemas 5 and 14), and
is the twistd service.  Every public method runs one transaction in a pool thread and
converts rows to model objects there, so the reactor thread only sees finished
results.  Other backends that keep their own tables in this database (the CRM
mirror) run their transactions with ``store.db.run_interaction`` and call the parts'
``*_txn`` functions inside them (``items.apply_txn``, ``state.save_state_txn``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from backends.sql.base import _USER_COLS, _chunks, _user_from_row
from backends.sql.database import Database, safe_url
from backends.sql.deleted import SqlDeleted
from backends.sql.engines import Engine
from backends.sql.holds import SqlHolds
from backends.sql.items import FEED_SQL, SqlItems
from backends.sql.request import SqlRequestReads
from backends.sql.retention import SqlRetention
from backends.sql.shares import SqlShares
from backends.sql.state import SqlState
from backends.sql.users import SqlUsers
from easync.deviceaccess import Rule
from easync.errors import Unavailable
from easync.interfaces import (
    IDeletedStore,
    IHoldStore,
    IItemStore,
    IRetentionStore,
    IStateStore,
    IUserStore,
    PurgeStep,
)
from easync.lookup import contact_index
from easync.model import (
    ChangeBatch,
    Folder,
    Item,
    KeptItem,
    Op,
    OpResult,
    StateWrite,
    User,
)
from easync.requestread import RequestRead, RequestSnapshot

__all__ = ["FEED_SQL", "SqlStore"]

log = Logger()
Window = tuple[int | None, int | None] | None

BACKFILL_SPAN = 100   # row ids per batch of the lookup-token backfill (schema 5)
#: row ids per batch of contacts: each contact writes a dozen rows into contact_names
#: and its four indexes (schema 14); on SQLite's one connection every other call
#: waits for the batch under way (bench/bench_find.py --backfill: a Find's p99 134 ms
#: with 100, 75 ms with 25)
CONTACTS_SPAN = 25
#: the schema version whose contact_names has every contact (recipient, folder_id)
FIND_ALL_SCHEMA = 14


@implementer(IUserStore, IItemStore, IStateStore, IHoldStore, IRetentionStore, IDeletedStore)
class SqlStore(Service):
    """Users, items, device state and held requests in one SQL database.

    ``SqlStore(reactor, "sqlite:///easync.sqlite")`` or
    ``SqlStore(reactor, "postgresql://user@host:5432/db")``.  Call ``await open()``
    (or start it as a service) before use and ``await close()`` after.
    """

    def __init__(self, reactor: Any, url: str, *, schema_dir: str | Path | None = None,
                 cp_min: int | None = None, cp_max: int | None = None) -> None:
        self.url = url
        self.db = Database(reactor, url, schema_dir=schema_dir, cp_min=cp_min,
                           cp_max=cp_max)
        self.engine: Engine = self.db.engine
        self.users = SqlUsers(self.db)
        self.state = SqlState(self.db)
        self.deleted = SqlDeleted(self.db)
        self.items = SqlItems(self.db, self.state, self.deleted)
        self.holds = SqlHolds(self.db)
        self.retention = SqlRetention(self.db, self.state)
        self.requests = SqlRequestReads(self.db, self.users, self.state)
        self.shares = SqlShares(self.db)
        #: fires when the lookup tokens of rows older than schema 5 are written (None:
        #: nothing to do); see _backfill
        self.backfilling: Deferred[None] | None = None
        #: what must end before the database closes at a service stop (close_after)
        self._before_close: list[Callable[[], Deferred[None] | None]] = []

    @property
    def schema_version(self) -> int:
        """The schema version the database was brought to by ``open``."""
        return self.db.schema_version

    # -- lifecycle ---------------------------------------------------------------
    async def open(self, target_version: int | None = None) -> None:
        """Open the database and bring the schema up to date (``target_version``:
        stop at that version — for tests of upgrades).  Calls made while this runs
        wait for it; if it fails they fail with its error."""
        if self.db.is_open or self.db.is_opening:
            return
        await self.db.open(target_version)
        try:
            pending = await self.raw_query(
                "SELECT COUNT(*) FROM lookup_backfill WHERE next_id < last_id") \
                if self.schema_version >= 5 else [(0,)]
        except Unavailable as e:
            # open, and migrated: only this look was lost to an outage just after
            log.warn("lookup tokens: could not look for rows to backfill ({err}); "  # noqa: G010
                     "looked "
                     "for again at the next start", err=str(e))
            return
        if pending[0][0]:
            self.backfilling = Deferred.fromCoroutine(self._backfill())

    def open_blocking(self) -> None:
        """Open the database and bring its schema up to date in this thread, before
        the reactor runs (``Database.open_blocking``); ``open`` still follows."""
        self.db.open_blocking()

    async def close(self) -> None:
        """Close every pooled connection and stop the pool's threads."""
        await self.db.close()

    def startService(self) -> Deferred[None]:  # type: ignore[override]  # twistd ignores it
        """Open the store; the Deferred (which twistd ignores) fires when migrated.
        A failure is logged, and every call then fails with it."""
        super().startService()
        def failed(f: Failure) -> None:
            if f.check(Unavailable):              # (a line, not a traceback: it says it)
                log.critical("cannot open the database {url}: {err}",
                             url=safe_url(self.url), err=str(f.value))
                return
            log.failure("cannot open the database {url}", f, url=safe_url(self.url))

        return Deferred.fromCoroutine(self.open()).addErrback(failed)

    def close_after(self, pending: Callable[[], Deferred[None] | None]) -> None:
        """At a service stop, close only after ``pending()`` (None: nothing under way)
        has fired: twistd stops every service at once, and a service that writes
        through this store (the CRM poller) may be in the middle of a write."""
        self._before_close.append(pending)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]  # a Deferred, as allowed
        super().stopService()

        async def stop() -> None:
            for pending in self._before_close:
                d = pending()
                if d is not None:
                    await d
            await self.close()

        return Deferred.fromCoroutine(stop())

    async def raw_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement written with ``?`` placeholders and return its rows
        (tests, EXPLAIN, the admin CLI)."""
        return await self.db.raw_query(sql, params)

    # -- IUserStore (SqlUsers) ----------------------------------------------------------
    def add_user(self, name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        return self.users.add_user(name, password_hash, email, activesync)

    def get_user(self, name: str) -> Deferred[User | None]:
        return self.users.get_user(name)

    def list_users(self) -> Deferred[list[User]]:
        return self.users.list_users()

    def update_user(self, name: str, **fields: Any) -> Deferred[User]:
        """See ``SqlUsers.update_user``."""
        return self.users.update_user(name, **fields)

    def find_users(self, query: str, limit: int) -> Deferred[list[User]]:
        return self.users.find_users(query, limit)

    def find_users_by_emails(self, emails: list[str], limit: int
                             ) -> Deferred[dict[str, list[User]]]:
        return self.users.find_users_by_emails(emails, limit)

    # -- IItemStore (SqlItems) ----------------------------------------------------------
    def list_folders(self, user: User) -> Deferred[list[Folder]]:
        return self.items.list_folders(user)

    def hierarchy_version(self, user: User) -> Deferred[int]:
        return self.items.hierarchy_version(user)

    def create_folder(self, user: User, parent_id: str, name: str,
                      type: int) -> Deferred[Folder]:
        return self.items.create_folder(user, parent_id, name, type)

    def update_folder(self, user: User, server_id: str, parent_id: str,
                      name: str) -> Deferred[Folder]:
        return self.items.update_folder(user, server_id, parent_id, name)

    def delete_folder(self, user: User, server_id: str) -> Deferred[None]:
        return self.items.delete_folder(user, server_id)

    def get_items(self, user: User, server_ids: list[str]) -> Deferred[list[Item]]:
        return self.items.get_items(user, server_ids)

    def changes_since(self, user: User, folder_id: str, cursor: int, limit: int,
                      window: Window = None,
                      held_upto: int | None = None) -> Deferred[ChangeBatch]:
        """See ``SqlItems.changes_since``."""
        return self.items.changes_since(user, folder_id, cursor, limit, window, held_upto)

    def window_changes(self, user: User, folder_id: str, after: int, upto: int,
                       old: Window, new: Window, limit: int) -> Deferred[ChangeBatch]:
        return self.items.window_changes(user, folder_id, after, upto, old, new, limit)

    def count_changes_since(self, user: User, folder_id: str, cursor: int) -> Deferred[int]:
        return self.items.count_changes_since(user, folder_id, cursor)

    def apply(self, user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        """See ``SqlItems.apply``."""
        return self.items.apply(user, folder_id, ops, state)

    def move_item(self, user: User, server_id: str, dst_folder_id: str) -> Deferred[str]:
        return self.items.move_item(user, server_id, dst_folder_id)

    def find_by_uids(self, user: User, folder_id: str, uids: list[str]
                     ) -> Deferred[dict[str, Item]]:
        return self.items.find_by_uids(user, folder_id, uids)

    def find_contacts_by_emails(self, user: User, emails: list[str], limit: int
                                ) -> Deferred[dict[str, list[Item]]]:
        return self.items.find_contacts_by_emails(user, emails, limit)

    def find_contacts_by_name(self, user: User, prefix: str, limit: int, *,
                              recipients: bool = True, folder_id: str | None = None
                              ) -> Deferred[list[Item]]:
        return self.items.find_contacts_by_name(user, prefix, limit,
                                                recipients=recipients, folder_id=folder_id)

    # SQL store extras
    def find_by_uid(self, user: User, uid: str) -> Deferred[list[Item]]:
        """The user's live items (events) whose UID is ``uid``."""
        return self.items.find_by_uid(user, uid)

    def linked_contacts(self, user: User, event_server_id: str) -> Deferred[list[str]]:
        """Server ids of the live contacts linked to this event."""
        return self.items.linked_contacts(user, event_server_id)

    def linked_events(self, user: User, contact_server_id: str) -> Deferred[list[str]]:
        """Server ids of the live events linked to this contact."""
        return self.items.linked_events(user, contact_server_id)

    def explain_feed(self, user: User, folder_id: str, cursor: int,
                     limit: int) -> Deferred[list[str]]:
        """See ``SqlItems.explain_feed``."""
        return self.items.explain_feed(user, folder_id, cursor, limit)

    def explain_lookups(self, user: User, prefix: str, limit: int,
                        folder_id: str | None = None) -> Deferred[list[str]]:
        """See ``SqlItems.explain_lookups``."""
        return self.items.explain_lookups(user, prefix, limit, folder_id)

    # -- shared folders (SqlShares, issue #14 point 1) ------------------------------
    def share_folder(self, folder_id: str, grantee_id: int, can_write: bool
                     ) -> Deferred[bool]:
        """See ``SqlShares.share`` (grantee 0: every user)."""
        return self.shares.share(folder_id, grantee_id, can_write)

    def unshare_folder(self, folder_id: str, grantee_id: int) -> Deferred[bool]:
        """See ``SqlShares.unshare``."""
        return self.shares.unshare(folder_id, grantee_id)

    def list_shares(self, user: User | None = None) -> Deferred[list[dict[str, Any]]]:
        """See ``SqlShares.list_shares``."""
        return self.shares.list_shares(None if user is None else user.id)

    def folder_audience(self, folder_id: str) -> Deferred[list[int]]:
        """See ``SqlShares.folder_audience``: the users a write to the folder wakes."""
        return self.shares.folder_audience(folder_id)

    def company_user(self) -> Deferred[User]:
        """See ``SqlShares.company_user``."""
        return self.shares.company_user()

    def create_folder_of(self, owner: User, name: str, type: int) -> Deferred[Folder]:
        """See ``SqlShares.create_folder_of``."""
        return self.shares.create_folder_of(owner.id, name, type)

    # -- IStateStore (SqlState) ---------------------------------------------------------
    def get_device(self, user: User, device_id: str) -> Deferred[dict[str, Any] | None]:
        return self.state.get_device(user, device_id)

    def save_device(self, user: User, device_id: str, *, max_devices: int = 0,
                    **fields: Any) -> Deferred[dict[str, Any]]:
        """See ``SqlState.save_device``."""
        return self.state.save_device(user, device_id, max_devices=max_devices, **fields)

    def list_devices(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        return self.state.list_devices(user)

    def delete_device(self, user: User, device_id: str) -> Deferred[None]:
        return self.state.delete_device(user, device_id)

    def set_device_access(self, user: User, device_id: str, access: str | None
                          ) -> Deferred[dict[str, Any] | None]:
        """See ``SqlState.set_device_access``."""
        return self.state.set_device_access(user, device_id, access)

    def list_device_rules(self, user: User | None) -> Deferred[list[Rule]]:
        return self.state.list_device_rules(user)

    def add_device_rule(self, user: User | None, kind: str, pattern: str, action: str,
                        created_by: str | None = None) -> Deferred[Rule]:
        return self.state.add_device_rule(user, kind, pattern, action, created_by)

    def remove_device_rule(self, rule_id: int) -> Deferred[Rule | None]:
        return self.state.remove_device_rule(rule_id)

    def get_state(self, user: User, device_id: str, name: str
                  ) -> Deferred[dict[str, Any] | None]:
        return self.state.get_state(user, device_id, name)

    def save_state(self, user: User, write: StateWrite) -> Deferred[None]:
        return self.state.save_state(user, write)

    def read_request(self, read: RequestRead) -> Deferred[RequestSnapshot]:
        """See ``SqlRequestReads`` (the auth rows: ``SqlAuthStore``'s tables)."""
        return self.requests.read_request(read)

    def delete_state(self, user: User, device_id: str, name: str) -> Deferred[None]:
        """Forget one state blob (no error if absent)."""
        return self.state.delete_state(user, device_id, name)

    # -- IHoldStore (SqlHolds) ----------------------------------------------------------
    def record_holds(self, node: str, starts: Sequence[tuple[int, str, str, float, float]],
                     ends: Sequence[tuple[int, str, float]]) -> Deferred[None]:
        return self.holds.record_holds(node, starts, ends)

    def clear_holds(self, node: str) -> Deferred[None]:
        return self.holds.clear_holds(node)

    def list_holds(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        return self.holds.list_holds(user)

    # -- IRetentionStore (SqlRetention) ------------------------------------------------
    def purge_synced(self, after: int, limit: int) -> Deferred[PurgeStep]:
        return self.retention.purge_synced(after, limit)

    def purge_older(self, before: float, limit: int) -> Deferred[PurgeStep]:
        return self.retention.purge_older(before, limit)

    def forget_devices(self, unseen_before: float, limit: int) -> Deferred[PurgeStep]:
        return self.retention.forget_devices(unseen_before, limit)

    # -- IDeletedStore (SqlDeleted) --------------------------------------------------
    def list_deleted(self, user: User, *, device_id: str | None = None,
                     since: float | None = None, folder_id: str | None = None,
                     restored: bool = False, limit: int = 500) -> Deferred[list[KeptItem]]:
        return self.deleted.list_deleted(user, device_id=device_id, since=since,
                                         folder_id=folder_id, restored=restored,
                                         limit=limit)

    def get_deleted(self, user: User, ids: Sequence[int]) -> Deferred[list[KeptItem]]:
        return self.deleted.get_deleted(user, ids)

    def claim_restore(self, user: User, kept_ids: Sequence[int], now: float
                      ) -> Deferred[list[KeptItem]]:
        return self.deleted.claim_restore(user, kept_ids, now)

    def finish_restore(self, done: Sequence[tuple[int, str]]) -> Deferred[None]:
        return self.deleted.finish_restore(done)

    def release_restore(self, kept_ids: Sequence[int]) -> Deferred[None]:
        return self.deleted.release_restore(kept_ids)

    def count_live(self, user: User, folder_id: str) -> Deferred[int]:
        return self.deleted.count_live(user, folder_id)

    def purge_deleted(self, before: float, limit: int) -> Deferred[PurgeStep]:
        return self.deleted.purge_deleted(before, limit)

    # -- the tokens of rows older than schema version 5 (contacts: 14) ---------------
    async def _backfill(self) -> None:
        """Give the contacts and users written before schema version 5 their lookup
        tokens (contacts: again from version 14 on, which indexes every contact and
        its folder, ``easync.lookup.contact_index``), a batch (``CONTACTS_SPAN`` or
        ``BACKFILL_SPAN`` row ids) per transaction, until done or the store is closed.  Several processes
        may run it at once: a batch is idempotent."""
        while self.db.is_open:
            try:
                more = await self.db.run_interaction("backfill", self._backfill_batch,
                                                   write=True)
            except Unavailable as e:
                log.warn("lookup tokens: backfill batch failed ({err}); "  # noqa: G010
                         "retried at the next "
                         "start", err=str(e))
                return
            except Exception:  # noqa: BLE001 - closed under us, or the database failed
                if self.db.is_open:
                    log.failure("lookup tokens: backfill batch failed; retried at next start")
                return
            if not more:
                log.info("lookup tokens: backfill of older contacts and users done")
                return

    def _backfill_batch(self, cur: Any) -> bool:
        cur.execute("SELECT what, next_id, last_id FROM lookup_backfill"
                    " WHERE next_id < last_id ORDER BY what")
        row = cur.fetchone()
        if row is None:
            return False
        what, start = str(row[0]), int(row[1])
        upto = min(int(row[2]), start + (CONTACTS_SPAN if what == "contacts"
                                         else BACKFILL_SPAN))
        if what == "contacts":
            cur.execute(self.db.sql("SELECT id FROM items WHERE id > ? AND id <= ?"
                                  " AND cls = 'Contacts' AND deleted = 0"), (start, upto))
            ids = [int(r[0]) for r in cur.fetchall()]
            for part in _chunks(ids):
                marks = self.db.engine.placeholders(len(part))
                # lock the rows (PostgreSQL: a writer of one of them waits, or we read
                # what it committed), then read their data as it is now
                cur.execute(self.db.sql(
                    f"UPDATE items SET modseq = modseq WHERE id IN {marks}"), part)
                cur.execute(self.db.sql(
                    f"SELECT id, user_id, folder_id, data FROM items WHERE id IN {marks}"
                    " AND deleted = 0"), part)
                rows: list[tuple[int, int, str, int, int]] = []
                for iid, uid, fid, data in cur.fetchall():
                    rows.extend((int(iid), int(uid), tok, flag, int(fid)) for tok, flag
                                in sorted(contact_index(json.loads(data)).items()))
                cur.executemany(self.db.sql("DELETE FROM contact_names WHERE item_id = ?"),
                                [(i,) for i in part])
                if self.schema_version < FIND_ALL_SCHEMA:
                    # a database held at an older version (tests of upgrades): the
                    # recipients' name tokens only, in the columns it has
                    self._write_names_v5(cur, rows)
                elif rows:
                    cur.executemany(self.db.sql(
                        "INSERT INTO contact_names (item_id, user_id, token, recipient,"
                        " folder_id) VALUES (?, ?, ?, ?, ?)"), rows)
        else:
            cur.execute(self.db.sql("SELECT id FROM users WHERE id > ? AND id <= ?"),
                        (start, upto))
            ids = [int(r[0]) for r in cur.fetchall()]
            for part in _chunks(ids):
                marks = self.db.engine.placeholders(len(part))
                cur.execute(self.db.sql(
                    f"UPDATE users SET modseq = modseq WHERE id IN {marks}"), part)
                cur.execute(self.db.sql(f"SELECT {_USER_COLS} FROM users WHERE id IN {marks}"),
                            part)
                users = [_user_from_row(r) for r in cur.fetchall()]
                self.users.write_user_tokens_txn(cur, [(u.id, u.name, u.email, u.extra)
                                              for u in users])
        cur.execute(self.db.sql("UPDATE lookup_backfill SET next_id = ?"
                              " WHERE what = ? AND next_id < ?"), (upto, what, upto))
        return True

    def _write_names_v5(self, cur: Any, rows: list[tuple[int, int, str, int, int]]) -> None:
        """contact_names as versions 5-13 have it: the recipients' name tokens."""
        old = [(iid, uid, tok) for iid, uid, tok, flag, _ in rows if flag]
        if old:
            cur.executemany(self.db.sql(
                "INSERT INTO contact_names (item_id, user_id, token) VALUES (?, ?, ?)"), old)
