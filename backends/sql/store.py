"""The SQL store: users, folders, items (with a change feed), devices and sync state.

One ``SqlStore`` is one database (SQLite or PostgreSQL, see ``engines.py``) reached
through a ``twisted.enterprise.adbapi.ConnectionPool``.  Every public method runs
one transaction in a pool thread and converts rows to model objects there, so the
reactor thread only sees finished results.

Item identity: an item row lives in one folder; its server id is
``"<folder id>:<row id>"``.  Deleting tombstones the row (``deleted=1``, ``data``
NULL, a new modseq).  Moving tombstones the row in the source folder (devices
syncing it see a Delete) and continues the item in a fresh row of the destination
(new server id, new modseq, ``created_modseq`` = the move); its contact addresses
and event links follow it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from backends.sql.engines import Engine, create_engine
from backends.sql.migrations import migrate
from easync.errors import TooManyDevices, Unavailable
from easync.interfaces import IHoldStore, IItemStore, IStateStore, IUserStore
from easync.items import index_fields
from easync.lookup import (
    contact_tokens,
    indexable_email,
    prefix_end,
    prefix_key,
    storable_email,
    user_tokens,
)
from easync.model import (
    DEFAULT_FOLDERS,
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

__all__ = ["FEED_SQL", "SqlStore"]

T = TypeVar("T")
log = Logger()

#: the change-feed query (``?`` style): one walk of index items_feed from the cursor
FEED_SQL = (
    "SELECT id, cls, data, modseq, created_modseq, deleted, start_ts, end_ts, complete"
    " FROM items WHERE folder_id = ? AND modseq > ? AND user_id = ?"
    " ORDER BY modseq LIMIT ?")

_USER_COLS = "id, name, email, activesync, password_hash, extra"
_USER_FIELDS = ("password_hash", "email", "activesync")
_DEVICE_COLS = ("device_id", "device_type", "user_agent", "policy_key", "wipe", "info",
                "blocked", "first_seen", "last_seen", "last_sync")
_DEVICE_FIELDS = frozenset(_DEVICE_COLS) - {"device_id"}
_WIPE_VALUES = ("none", "pending", "done")
_CHUNK = 500          # ids per IN (…) list
BACKFILL_SPAN = 100   # row ids per batch of the lookup-token backfill (schema 5)
_MAX_RETRIES = 3


def _dumps(value: Any) -> str:
    # ASCII-escaped: a lone surrogate that slipped into a string is stored as
    # "\\udXXX" instead of failing the UTF-8 encoding of the whole transaction.
    return json.dumps(value, separators=(",", ":"))


def _chunks(seq: Sequence[T], n: int = _CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _parse_item_id(server_id: str | None) -> tuple[int, int] | None:
    """(folder id, row id) of an item server id, or None if malformed."""
    if not server_id or not isinstance(server_id, str):
        return None
    folder, sep, row = server_id.partition(":")
    if not sep or not folder.isdigit() or not row.isdigit():
        return None
    return int(folder), int(row)


def _parse_folder_id(server_id: str | None) -> int | None:
    if not server_id or not isinstance(server_id, str) or not server_id.isdigit():
        return None
    return int(server_id)


def _user_from_row(row: Sequence[Any]) -> User:
    return User(id=int(row[0]), name=row[1], email=row[2], activesync=bool(row[3]),
                password_hash=row[4], extra=json.loads(row[5]) if row[5] else {})


def _folder_from_row(row: Sequence[Any]) -> Folder:
    # row: id, parent_id, name, type, modseq
    return Folder(server_id=str(row[0]), parent_id=row[1], name=row[2], type=int(row[3]),
                  modseq=int(row[4]))


def _device_from_row(row: Sequence[Any]) -> dict[str, Any]:
    dev = dict(zip(_DEVICE_COLS, row))
    dev["info"] = json.loads(dev["info"]) if dev["info"] else {}
    dev["blocked"] = bool(dev["blocked"])
    if dev["policy_key"] is not None:
        dev["policy_key"] = int(dev["policy_key"])
    return dev


def _safe_url(url: str) -> str:
    """The URL without a password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


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


@implementer(IUserStore, IItemStore, IStateStore, IHoldStore)
class SqlStore(Service):
    """Users, items and device state in one SQL database.

    ``SqlStore(reactor, "sqlite:///easync.sqlite")`` or
    ``SqlStore(reactor, "postgresql://user@host:5432/db")``.  Call ``await open()``
    (or start it as a service) before use and ``await close()`` after.
    """

    def __init__(self, reactor: Any, url: str, *, schema_dir: str | Path | None = None,
                 cp_min: int | None = None, cp_max: int | None = None) -> None:
        self._reactor = reactor
        self.url = url
        self.engine: Engine = create_engine(url, cp_min=cp_min, cp_max=cp_max)
        self._schema_dir = schema_dir
        self._pool: adbapi.ConnectionPool | None = None     # set once migrated
        self._opening: list[Deferred[None]] | None = None   # waiters while migrating
        self.schema_version = 0
        #: fires when the lookup tokens of rows older than schema 5 are written (None:
        #: nothing to do); see _backfill
        self.backfilling: Deferred[None] | None = None

    # -- lifecycle ---------------------------------------------------------------
    async def open(self, target_version: int | None = None) -> None:
        """Open the pool and bring the schema up to date (``target_version``: stop
        at that version — for tests of upgrades).  Calls made while this runs wait
        for it; if it fails they fail with its error."""
        if self._pool is not None or self._opening is not None:
            return
        args, kwargs = self.engine.pool_args()
        engine = self.engine

        def openfun(conn: Any) -> None:
            engine.on_connect(conn)
            if engine.in_memory:
                # every connection to :memory: is a new database (there is only one)
                migrate(engine, conn, self._reactor.seconds(), self._schema_dir,
                        target_version)
                conn.commit()

        pool = adbapi.ConnectionPool(engine.dbapi_name, *args, cp_openfun=openfun,
                                     cp_reactor=self._reactor, cp_noisy=False, **kwargs)
        pool.start()
        self._opening = waiters = []
        try:
            self.schema_version = await pool.runWithConnection(
                lambda conn: migrate(engine, conn, self._reactor.seconds(),
                                     self._schema_dir, target_version))
        except BaseException as e:
            self._opening = None
            pool.close()
            for d in waiters:
                d.errback(e)
            raise
        self._pool, self._opening = pool, None
        for d in waiters:
            d.callback(None)
        pending = await self.raw_query(
            "SELECT COUNT(*) FROM lookup_backfill WHERE next_id < last_id") \
            if self.schema_version >= 5 else [(0,)]
        if pending[0][0]:
            self.backfilling = Deferred.fromCoroutine(self._backfill())

    async def close(self) -> None:
        """Close every pooled connection and stop the pool's threads."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def startService(self) -> Deferred[None]:  # type: ignore[override]
        """Open the store; the Deferred (which twistd ignores) fires when migrated.
        A failure is logged, and every call then fails with it."""
        super().startService()
        def failed(f: Failure) -> None:
            log.failure("cannot open the database {url}", f, url=_safe_url(self.url))

        return Deferred.fromCoroutine(self.open()).addErrback(failed)

    def stopService(self) -> Deferred[None]:  # type: ignore[override]
        super().stopService()
        return Deferred.fromCoroutine(self.close())

    # -- plumbing ------------------------------------------------------------------
    def _run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> Deferred[T]:
        """Run ``fn(cur, *args)`` in one transaction in a pool thread; retried on a
        deadlock or serialization failure."""
        engine = self.engine

        def txn(conn: Any) -> T:
            attempt = 0
            while True:
                cur = conn.cursor()
                try:
                    if write:
                        engine.begin_write(conn, cur)
                    return fn(cur, *args)
                except Exception as e:
                    if not engine.is_retryable(e) or attempt >= _MAX_RETRIES:
                        raise
                    conn.rollback()
                    attempt += 1
                finally:
                    cur.close()

        if self._pool is not None:
            return self._pool.runWithConnection(txn).addErrback(self._unavailable)
        if self._opening is None:
            return fail(RuntimeError("SqlStore is not open"))
        ready: Deferred[None] = Deferred()
        self._opening.append(ready)
        return ready.addCallback(lambda _: self._run(fn, *args, write=write))

    def _unavailable(self, f: Failure) -> Failure:
        """A database that cannot answer becomes ``Unavailable`` (HTTP 503 with
        Retry-After for the protocol side); other errors pass unchanged."""
        if self.engine.is_unavailable(f.value):
            raise Unavailable(f"database unavailable: {f.value}") from f.value
        return f

    def _sql(self, text: str) -> str:
        return self.engine.sql(text)

    async def raw_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement written with ``?`` placeholders and return its rows
        (tests, EXPLAIN, the admin CLI)."""

        def q(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(self._sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

        return await self._run(q)

    # ==============================================================================
    # IUserStore
    # ==============================================================================
    def add_user(self, name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        return self._run(self._add_user, name.lower(), password_hash, email,
                         bool(activesync), write=True)

    def _add_user(self, cur: Any, name: str, password_hash: str | None, email: str | None,
                  activesync: bool) -> User:
        cur.execute(self._sql("SELECT 1 FROM users WHERE name = ?"), (name,))
        if cur.fetchone():
            raise KeyError(name)
        try:
            uid = self.engine.insert_id(
                cur, "INSERT INTO users (name, email, password_hash, activesync, extra)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, email, password_hash, int(activesync), "{}"))
        except Exception as e:
            if self.engine.is_unique_violation(e):
                raise KeyError(name) from None
            raise
        cur.executemany(
            self._sql("INSERT INTO folders (user_id, parent_id, name, type) VALUES (?, ?, ?, ?)"),
            [(uid, "0", fname, ftype) for ftype, fname in DEFAULT_FOLDERS])
        self._write_user_tokens(cur, [(uid, name, email, {})])
        return User(id=uid, name=name, email=email, activesync=activesync,
                    password_hash=password_hash, extra={})

    def get_user(self, name: str) -> Deferred[User | None]:
        return self._run(self._get_user, name.lower())

    def _get_user(self, cur: Any, name: str) -> User | None:
        cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE name = ?"), (name,))
        row = cur.fetchone()
        return _user_from_row(row) if row else None

    def list_users(self) -> Deferred[list[User]]:
        def q(cur: Any) -> list[User]:
            cur.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name")
            return [_user_from_row(r) for r in cur.fetchall()]

        return self._run(q)

    def update_user(self, name: str, **fields: Any) -> Deferred[User]:
        """Set ``password_hash``, ``email``, ``activesync``; any other keyword sets that
        key of ``extra`` (None removes it); ``extra={…}`` merges a dict likewise."""
        return self._run(self._update_user, name.lower(), fields, write=True)

    def _update_user(self, cur: Any, name: str, fields: dict[str, Any]) -> User:
        user = self._get_user(cur, name)
        if user is None:
            raise KeyError(name)
        extra = dict(user.extra)
        changes: dict[str, Any] = {}
        for key, value in fields.items():
            if key in _USER_FIELDS:
                changes[key] = int(bool(value)) if key == "activesync" else value
            elif key == "extra":
                for k, v in (value or {}).items():
                    if v is None:
                        extra.pop(k, None)
                    else:
                        extra[k] = v
            elif key in ("id", "name"):
                raise ValueError(f"cannot change {key}")
            elif value is None:
                extra.pop(key, None)
            else:
                extra[key] = value
        changes["extra"] = _dumps(extra)
        sets = ", ".join(f"{k} = ?" for k in changes)
        cur.execute(self._sql(f"UPDATE users SET {sets} WHERE id = ?"),
                    (*changes.values(), user.id))
        result = self._get_user(cur, name)
        assert result is not None
        if user_tokens(user.name, user.email, user.extra) != \
                user_tokens(result.name, result.email, result.extra):
            # (not on every login's as_last_used: only when a directory word changed)
            self._write_user_tokens(cur, [(result.id, result.name, result.email,
                                           result.extra)])
        return result

    # ==============================================================================
    # IItemStore: folders
    # ==============================================================================
    def list_folders(self, user: User) -> Deferred[list[Folder]]:
        def q(cur: Any) -> list[Folder]:
            cur.execute(self._sql(
                "SELECT id, parent_id, name, type, modseq FROM folders"
                " WHERE user_id = ? AND deleted = 0"
                " ORDER BY CASE WHEN type < 12 THEN 0 ELSE 1 END, id"), (user.id,))
            return [_folder_from_row(r) for r in cur.fetchall()]

        return self._run(q)

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
        cur.execute(self._sql("SELECT id, parent_id, name, type, modseq FROM folders"
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
        ids = list(wanted)
        for part in _chunks(ids):
            cur.execute(self._sql(
                "SELECT id, folder_id, cls, data, modseq FROM items"
                f" WHERE id IN {self.engine.placeholders(len(part))}"
                " AND user_id = ? AND deleted = 0"), (*part, user_id))
            for iid, fid, cls, data, modseq in cur.fetchall():
                if wanted.get(iid) == fid:
                    sid = f"{fid}:{iid}"
                    found[sid] = Item(server_id=sid, folder_id=str(fid), cls=cls,
                                      data=json.loads(data), modseq=int(modseq))
        out: list[Item] = []
        seen: set[str] = set()
        for sid in server_ids:
            if sid in found and sid not in seen:
                seen.add(sid)
                out.append(found[sid])
        return out

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
                        (fid, int(cursor), user.id))
            return int(cur.fetchone()[0])

        return self._run(q)

    def apply(self, user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        """See IItemStore.  Raises KeyError('folder') for a folder the user does not
        have.  An add without a dict ``data`` (or a change without one, or an unknown
        kind) gives ``OpResult(ok=False, error="invalid")``."""
        return self._run(self._apply, user.id, folder_id, list(ops), state, write=True)

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

    def _apply(self, cur: Any, user_id: int, folder_id: str, ops: list[Op],
               state: StateWrite | None) -> list[OpResult]:
        e = self.engine
        n = len(ops)
        # Lock the user's counter first: it orders this transaction against every
        # other writer of this user's data (folder changes included).
        top = e.bump(cur, "users", "modseq", user_id, max(n, 0))
        base = top - n
        fid, folder_type = self._folder_type(cur, user_id, folder_id, "folder")
        folder_cls = FOLDER_CLASS.get(folder_type, "Email")

        # the existing rows the ops name
        named: list[int] = []
        for op in ops:
            if op.kind in ("change", "delete"):
                parsed = _parse_item_id(op.server_id)
                if parsed and parsed[0] == fid:
                    named.append(parsed[1])
        live: dict[int, str] = {}            # row id -> cls, live after the ops so far
        for part in _chunks(sorted(set(named))):
            cur.execute(self._sql(
                f"SELECT id, cls FROM items WHERE id IN {e.placeholders(len(part))}"
                " AND folder_id = ? AND deleted = 0"), (*part, fid))
            live.update((int(i), c) for i, c in cur.fetchall())
        existing = set(live)

        n_adds = sum(1 for op in ops if op.kind == "add" and isinstance(op.data, dict))
        new_ids = iter(e.allocate_ids(cur, "items", n_adds) if n_adds else [])

        # final state per touched row: [cls, data | None, modseq, created_modseq]
        final: dict[int, list[Any]] = {}
        results: list[OpResult] = []
        for i, op in enumerate(ops):
            m = base + i + 1
            if op.kind == "add":
                if not isinstance(op.data, dict):
                    results.append(OpResult(op.ref, None, False, 0, "invalid"))
                    continue
                iid = next(new_ids)
                cls = op.cls or folder_cls
                final[iid] = [cls, op.data, m, m]
                live[iid] = cls
                results.append(OpResult(op.ref, f"{fid}:{iid}", True, m))
            elif op.kind in ("change", "delete"):
                parsed = _parse_item_id(op.server_id)
                iid = parsed[1] if parsed and parsed[0] == fid else None
                if iid is None or iid not in live:
                    results.append(OpResult(op.ref, op.server_id, False, 0, "notfound"))
                    continue
                if op.kind == "change":
                    if not isinstance(op.data, dict):
                        results.append(OpResult(op.ref, op.server_id, False, 0, "invalid"))
                        continue
                    prev = final.get(iid)
                    final[iid] = [live[iid], op.data, m, prev[3] if prev else None]
                else:
                    prev = final.get(iid)
                    final[iid] = [live[iid], None, m, prev[3] if prev else None]
                    del live[iid]
                results.append(OpResult(op.ref, op.server_id, True, m))
            else:
                results.append(OpResult(op.ref, op.server_id, False, 0, "invalid"))

        if final:
            self._write_items(cur, user_id, fid, final, existing)
            cur.execute(self._sql("UPDATE folders SET modseq = ? WHERE id = ?"),
                        (max(v[2] for v in final.values()), fid))
        if state is not None:
            if state.build is not None:
                # the engine's state depends on the modseqs just assigned (see StateWrite)
                state.state = state.build(results)
            self._save_state(cur, user_id, state)
        return results

    def _write_items(self, cur: Any, user_id: int, fid: int, final: dict[int, list[Any]],
                     existing: set[int]) -> None:
        """Write the rows' final states and keep contact_emails, contact_names and
        event_contacts true.  Addresses that cannot be recipients (longer than RFC
        5321's 254 characters, or with characters a database refuses) are not
        indexed (easync.lookup.storable_email)."""
        inserts: list[tuple[Any, ...]] = []
        updates: list[tuple[Any, ...]] = []
        contact_emails: list[tuple[int, int, str]] = []
        contact_names: list[tuple[int, int, str]] = []
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
                      fields["complete"], modseq, int(data is None))
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
                    if fields["emails"]:
                        contact_names.extend((iid, user_id, tok)
                                             for tok in sorted(contact_tokens(data)))
            elif cls == "Calendar":
                if data is None:
                    if iid in existing:
                        dead_events.append(iid)
                else:
                    live_events[iid] = set(fields["emails"])
        if inserts:
            cur.executemany(self._sql(
                "INSERT INTO items (id, user_id, folder_id, cls, created_modseq, data, uid,"
                " start_ts, end_ts, complete, modseq, deleted)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"), inserts)
        if updates:
            cur.executemany(self._sql(
                "UPDATE items SET data = ?, uid = ?, start_ts = ?, end_ts = ?, complete = ?,"
                " modseq = ?, deleted = ? WHERE id = ?"), updates)
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
                "INSERT INTO contact_names (item_id, user_id, token) VALUES (?, ?, ?)"),
                contact_names)
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
        for part in _chunks(wanted):
            cur.execute(self._sql(
                "SELECT email, item_id FROM contact_emails WHERE user_id = ?"
                f" AND email IN {e.placeholders(len(part))}"), (user_id, *part))
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
            " complete = NULL, deleted = 1, modseq = ? WHERE id = ?"), (gone, old))
        for stmt in ("UPDATE contact_emails SET item_id = ? WHERE item_id = ?",
                     "UPDATE contact_names SET item_id = ? WHERE item_id = ?",
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
            for part in _chunks(wanted):
                cur.execute(self._sql(
                    "SELECT id, uid, cls, data, modseq FROM items WHERE user_id = ?"
                    f" AND uid IN {self.engine.placeholders(len(part))} AND folder_id = ?"
                    " AND deleted = 0 ORDER BY id"), (user.id, *part, fid))
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

    # ==============================================================================
    # Recipient and directory lookups (issue #10 point 2; easync.lookup)
    # ==============================================================================
    def _write_user_tokens(self, cur: Any,
                           users: Sequence[tuple[int, str, str | None, dict[str, Any]]]
                           ) -> None:
        """Replace the directory tokens of these (id, name, email, extra) users."""
        ids = [(u[0],) for u in users]
        if not ids:
            return
        cur.executemany(self._sql("DELETE FROM user_names WHERE user_id = ?"), ids)
        rows = [(uid, tok) for uid, name, email, extra in users
                for tok in sorted(user_tokens(name, email, extra))]
        if rows:
            cur.executemany(self._sql("INSERT INTO user_names (user_id, token) VALUES (?, ?)"),
                            rows)

    def _prefix_walk(self, cur: Any, table: str, key_col: str, where: str,
                     params: tuple[Any, ...], prefix: str, limit: int,
                     explain: list[str] | None = None) -> list[int]:
        """The first ``limit`` distinct ``key_col`` values of ``table`` rows with a
        token starting with ``prefix`` (normalised), in (token, key) order: pages of
        one index range walked by keyset, so the cost is O(log n + rows read), and
        rows read are at most ``limit`` times the tokens one key can have.  With
        ``explain`` (a list), the first page's plan lines are added to it instead."""
        key = prefix_key(prefix)
        if not key or limit <= 0:
            return []
        end = prefix_end(key)
        bound = " AND token < ?" if end is not None else ""
        page = max(64, 4 * limit)
        # an ordered walk of the index that stops after LIMIT rows, as the change feed
        # (PostgreSQL with stale statistics preferred a bitmap scan of every token
        # with the prefix plus a sort: 45 ms for "l" among 50,000 contacts)
        self.engine.before_feed(cur)
        found: dict[int, None] = {}
        last: tuple[str, int] | None = None
        while True:
            after = "" if last is None else f" AND (token, {key_col}) > (?, ?)"
            sql = self._sql(
                f"SELECT token, {key_col} FROM {table} WHERE {where} AND token >= ?{bound}"
                f"{after} ORDER BY token, {key_col} LIMIT ?")
            args = (*params, key, *([end] if end is not None else []),
                    *(last if last is not None else ()), page)
            if explain is not None:
                cur.execute(self.engine.explain_prefix + sql, args)
                explain.extend(str(row[-1]) for row in cur.fetchall())
                return []
            cur.execute(sql, args)
            rows = cur.fetchall()
            for token, kid in rows:
                found.setdefault(int(kid), None)
                if len(found) >= limit:
                    return list(found)
            if len(rows) < page:
                return list(found)
            last = (rows[-1][0], int(rows[-1][1]))

    def _union_probe(self, cur: Any, table: str, value_col: str, key_col: str,
                     where: str, params: tuple[Any, ...], values: list[str], limit: int
                     ) -> dict[str, list[int]]:
        """For each value, up to ``limit`` ``key_col`` of the ``table`` rows where
        ``where`` holds and ``value_col`` is that value: one statement per 100 values,
        a UNION ALL of one index probe with a LIMIT per value."""
        out: dict[str, list[int]] = {}
        if limit <= 0:
            return out
        for part in _chunks(values, 100):
            sql = " UNION ALL ".join(
                f"SELECT v, k FROM (SELECT {value_col} AS v, {key_col} AS k FROM {table}"
                f" WHERE {where} AND {value_col} = ? LIMIT ?) AS q{n}"
                for n in range(len(part)))
            args: list[Any] = []
            for value in part:
                args.extend((*params, value, limit))
            cur.execute(self._sql(sql), args)
            for value, kid in cur.fetchall():
                out.setdefault(str(value), []).append(int(kid))
        return out

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

    def find_contacts_by_name(self, user: User, prefix: str, limit: int
                              ) -> Deferred[list[Item]]:
        """See IItemStore (index contact_names_lookup)."""

        def q(cur: Any) -> list[Item]:
            ids = self._prefix_walk(cur, "contact_names", "item_id", "user_id = ?",
                                    (user.id,), prefix, int(limit))
            items = self._contacts_by_id(cur, user.id, ids)
            return [items[i] for i in ids if i in items]

        return self._run(q)

    def explain_lookups(self, user: User, prefix: str, limit: int) -> Deferred[list[str]]:
        """The database's plans for the first page of ``find_contacts_by_name`` and of
        ``find_users``, one line per entry (to check that they walk indexes
        contact_names_lookup and user_names_lookup in order: no scan, no sort)."""

        def q(cur: Any) -> list[str]:
            out: list[str] = []
            self._prefix_walk(cur, "contact_names", "item_id", "user_id = ?", (user.id,),
                              prefix, int(limit), explain=out)
            self._prefix_walk(cur, "user_names", "user_id", "1 = 1", (), prefix,
                              int(limit), explain=out)
            return out

        return self._run(q)

    def _users_by_id(self, cur: Any, ids: Sequence[int]) -> dict[int, User]:
        out: dict[int, User] = {}
        for part in _chunks(list(ids)):
            cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE id IN"
                                  f" {self.engine.placeholders(len(part))}"), part)
            for row in cur.fetchall():
                u = _user_from_row(row)
                out[u.id] = u
        return out

    def find_users(self, query: str, limit: int) -> Deferred[list[User]]:
        """See IUserStore (index user_names_lookup)."""

        def q(cur: Any) -> list[User]:
            ids = self._prefix_walk(cur, "user_names", "user_id", "1 = 1", (), query,
                                    int(limit))
            users = self._users_by_id(cur, ids)
            return [users[i] for i in ids if i in users]

        return self._run(q)

    def find_users_by_emails(self, emails: list[str], limit: int
                             ) -> Deferred[dict[str, list[User]]]:
        """See IUserStore: tokens equal to the address (index user_names_lookup),
        kept when the address is the user's own (not a display-name word)."""

        def q(cur: Any) -> dict[str, list[User]]:
            wanted = sorted({a for a in (indexable_email(e) for e in emails) if a})
            hits = self._union_probe(cur, "user_names", "token", "user_id", "1 = 1", (),
                                     wanted, int(limit))
            users = self._users_by_id(cur, sorted({i for ids in hits.values() for i in ids}))
            out: dict[str, list[User]] = {}
            for addr, ids in hits.items():
                mine = [users[i] for i in sorted(ids) if i in users
                        and indexable_email(users[i].email or users[i].name) == addr]
                if mine:
                    out[addr] = mine
            return out

        return self._run(q)

    # -- the tokens of rows older than schema version 5 ------------------------------
    async def _backfill(self) -> None:
        """Give the contacts and users written before schema version 5 their lookup
        tokens, a batch (``BACKFILL_SPAN`` row ids) per transaction, until done or the
        store is closed.  Several processes may run it at once: a batch is idempotent."""
        while self._pool is not None:
            try:
                more = await self._run(self._backfill_batch, write=True)
            except Exception:  # noqa: BLE001 - closed under us, or the database failed
                if self._pool is not None:
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
        upto = min(int(row[2]), start + BACKFILL_SPAN)
        if what == "contacts":
            cur.execute(self._sql("SELECT id FROM items WHERE id > ? AND id <= ?"
                                  " AND cls = 'Contacts' AND deleted = 0"), (start, upto))
            ids = [int(r[0]) for r in cur.fetchall()]
            for part in _chunks(ids):
                marks = self.engine.placeholders(len(part))
                # lock the rows (PostgreSQL: a writer of one of them waits, or we read
                # what it committed), then read their data as it is now
                cur.execute(self._sql(
                    f"UPDATE items SET modseq = modseq WHERE id IN {marks}"), part)
                cur.execute(self._sql(
                    f"SELECT id, user_id, data FROM items WHERE id IN {marks}"
                    " AND deleted = 0"), part)
                rows: list[tuple[int, int, str]] = []
                for iid, uid, data in cur.fetchall():
                    values = json.loads(data)
                    if any(indexable_email(values.get(k)) for k in
                           ("Email1Address", "Email2Address", "Email3Address")):
                        rows.extend((int(iid), int(uid), tok)
                                    for tok in sorted(contact_tokens(values)))
                cur.executemany(self._sql("DELETE FROM contact_names WHERE item_id = ?"),
                                [(i,) for i in part])
                if rows:
                    cur.executemany(self._sql(
                        "INSERT INTO contact_names (item_id, user_id, token) VALUES (?, ?, ?)"),
                        rows)
        else:
            cur.execute(self._sql("SELECT id FROM users WHERE id > ? AND id <= ?"),
                        (start, upto))
            ids = [int(r[0]) for r in cur.fetchall()]
            for part in _chunks(ids):
                marks = self.engine.placeholders(len(part))
                cur.execute(self._sql(
                    f"UPDATE users SET modseq = modseq WHERE id IN {marks}"), part)
                cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE id IN {marks}"),
                            part)
                users = [_user_from_row(r) for r in cur.fetchall()]
                self._write_user_tokens(cur, [(u.id, u.name, u.email, u.extra)
                                              for u in users])
        cur.execute(self._sql("UPDATE lookup_backfill SET next_id = ?"
                              " WHERE what = ? AND next_id < ?"), (upto, what, upto))
        return True

    # ==============================================================================
    # IStateStore
    # ==============================================================================
    def get_device(self, user: User, device_id: str) -> Deferred[dict[str, Any] | None]:
        return self._run(self._get_device, user.id, device_id)

    def _get_device(self, cur: Any, user_id: int, device_id: str) -> dict[str, Any] | None:
        cur.execute(self._sql(f"SELECT {', '.join(_DEVICE_COLS)} FROM devices"
                              " WHERE user_id = ? AND device_id = ?"), (user_id, device_id))
        row = cur.fetchone()
        return _device_from_row(row) if row else None

    def save_device(self, user: User, device_id: str, *, max_devices: int = 0,
                    **fields: Any) -> Deferred[dict[str, Any]]:
        """Create or update; ``first_seen``/``last_seen`` default to now on creation.
        Unknown field names raise ValueError; ``wipe`` must be none|pending|done.
        ``max_devices`` (0: none): a new device when the user has that many already
        raises ``TooManyDevices`` and stores nothing (issue #10 point 7)."""
        unknown = set(fields) - _DEVICE_FIELDS
        if unknown:
            return fail(ValueError(f"unknown device fields: {sorted(unknown)}"))
        if "wipe" in fields and fields["wipe"] not in _WIPE_VALUES:
            return fail(ValueError(f"wipe must be one of {_WIPE_VALUES}"))
        values: dict[str, Any] = {}
        for k, v in fields.items():
            if k == "info":
                v = _dumps(v or {})
            elif k == "blocked":
                v = int(bool(v))
            elif k == "policy_key" and v is not None:
                v = int(v)
            values[k] = v
        return self._run(self._save_device, user.id, device_id, values,
                         self._reactor.seconds(), max_devices, write=True)

    def _save_device(self, cur: Any, user_id: int, device_id: str, values: dict[str, Any],
                     now: float, max_devices: int = 0) -> dict[str, Any]:
        exists = self._sql("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?")
        cur.execute(exists, (user_id, device_id))
        new = cur.fetchone() is None
        if new:
            # A new device: lock the user's row (as item writes do) so that the count
            # below and the insert are not raced by another new device of this user
            # (PostgreSQL's READ COMMITTED; SQLite's write lock is already held), then
            # look again: the same device may have been inserted while we waited.
            self.engine.bump(cur, "users", "modseq", user_id, 0)
            cur.execute(exists, (user_id, device_id))
            new = cur.fetchone() is None
        if new and max_devices:
            cur.execute(self._sql("SELECT COUNT(*) FROM devices WHERE user_id = ?"),
                        (user_id,))
            (count,) = cur.fetchone()
            if count >= max_devices:
                raise TooManyDevices(int(count), max_devices)
        if new:
            row = {"first_seen": now, "last_seen": now, **values}
            cols = ("user_id", "device_id", *row)
            cur.execute(self._sql(f"INSERT INTO devices ({', '.join(cols)}) VALUES "
                                  f"{self.engine.placeholders(len(cols))}"),
                        (user_id, device_id, *row.values()))
        elif values:
            sets = ", ".join(f"{k} = ?" for k in values)
            cur.execute(self._sql(f"UPDATE devices SET {sets} WHERE user_id = ?"
                                  " AND device_id = ?"), (*values.values(), user_id, device_id))
        dev = self._get_device(cur, user_id, device_id)
        assert dev is not None
        return dev

    def list_devices(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        """Devices (each with a 'user' key: the user's name), by user then device."""

        def q(cur: Any) -> list[dict[str, Any]]:
            cols = ", ".join(f"d.{c}" for c in _DEVICE_COLS)
            sql = f"SELECT u.name, {cols} FROM devices d JOIN users u ON u.id = d.user_id"
            if user is None:
                cur.execute(sql + " ORDER BY u.name, d.device_id")
            else:
                cur.execute(self._sql(sql + " WHERE d.user_id = ? ORDER BY d.device_id"),
                            (user.id,))
            out = []
            for row in cur.fetchall():
                dev = _device_from_row(row[1:])
                dev["user"] = row[0]
                out.append(dev)
            return out

        return self._run(q)

    def delete_device(self, user: User, device_id: str) -> Deferred[None]:
        def q(cur: Any) -> None:
            for table in ("sync_states", "held_requests", "devices"):
                cur.execute(self._sql(f"DELETE FROM {table} WHERE user_id = ?"
                                      " AND device_id = ?"), (user.id, device_id))

        return self._run(q, write=True)

    def get_state(self, user: User, device_id: str, name: str
                  ) -> Deferred[dict[str, Any] | None]:
        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(self._sql("SELECT state FROM sync_states WHERE user_id = ?"
                                  " AND device_id = ? AND name = ?"), (user.id, device_id, name))
            row = cur.fetchone()
            return json.loads(row[0]) if row else None

        return self._run(q)

    def save_state(self, user: User, write: StateWrite) -> Deferred[None]:
        return self._run(self._save_state, user.id, write, write=True)  # (2nd: the flag)

    def _save_state(self, cur: Any, user_id: int, write: StateWrite) -> None:
        cur.execute(self.engine.upsert("sync_states", ("user_id", "device_id", "name"),
                                       ("state",)),
                    (user_id, write.device_id, write.name, _dumps(write.state)))

    def delete_state(self, user: User, device_id: str, name: str) -> Deferred[None]:
        """Forget one state blob (no error if absent)."""

        def q(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM sync_states WHERE user_id = ? AND device_id = ?"
                                  " AND name = ?"), (user.id, device_id, name))

        return self._run(q, write=True)

    # -- held long polls (easync.push.HoldRecorder; easync-admin device list) ------
    def record_holds(self, node: str, starts: Sequence[tuple[int, str, str, float, float]],
                     ends: Sequence[tuple[int, str, float]]) -> Deferred[None]:
        """One transaction: remove the rows of ``ends`` (user id, device id, started)
        that ``node`` wrote, then write ``starts`` (user id, device id, command,
        started, deadline) as held on ``node`` (replacing the device's row)."""

        def q(cur: Any) -> None:
            if ends:
                cur.executemany(self._sql(
                    "DELETE FROM held_requests WHERE user_id = ? AND device_id = ?"
                    " AND node = ? AND started = ?"),
                    [(u, dev, node, since) for u, dev, since in ends])
            if starts:
                cur.executemany(self.engine.upsert(
                    "held_requests", ("user_id", "device_id"),
                    ("node", "command", "started", "deadline")),
                    [(u, dev, node, cmd, since, until) for u, dev, cmd, since, until in starts])

        return self._run(q, write=True)

    def clear_holds(self, node: str) -> Deferred[None]:
        """Forget every row of ``node``, and rows of any node whose deadline passed."""

        def q(cur: Any, now: float) -> None:
            cur.execute(self._sql("DELETE FROM held_requests WHERE node = ? OR deadline < ?"),
                        (node, now))

        return self._run(q, self._reactor.seconds(), write=True)

    def list_holds(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        """The held-request rows (keys user, device_id, node, command, started,
        deadline) of one user or of all, by user then device."""

        def q(cur: Any) -> list[dict[str, Any]]:
            sql = ("SELECT u.name, h.device_id, h.node, h.command, h.started, h.deadline"
                   " FROM held_requests h JOIN users u ON u.id = h.user_id")
            if user is None:
                cur.execute(sql + " ORDER BY u.name, h.device_id")
            else:
                cur.execute(self._sql(sql + " WHERE h.user_id = ? ORDER BY h.device_id"),
                            (user.id,))
            keys = ("user", "device_id", "node", "command", "started", "deadline")
            return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

        return self._run(q)
