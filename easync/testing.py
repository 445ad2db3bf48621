"""Public test doubles: an in-memory store that keeps the store contracts.

``MemoryStore`` provides ``IUserStore``, ``IItemStore``, ``IStateStore`` and
``IHoldStore`` in plain Python (no SQL, no threads): every method answers at once
with an already-fired Deferred (``succeed``/``fail``), so tests of the protocol side
(the sync engine, the commands) run synchronously against it.  It passes the same
contract suite as the SQL and CRM stores (``tests/test_store_contract.py``), so what
a test sees from it is what the SQL store would answer: the same ids
(``"<folder id>:<row id>"``), modseqs, tombstones, moves, contact/event links and
lookups.  Data, states and device info are kept as JSON text, as the SQL store
keeps them, so a caller never shares a dict with the store.

Costs are those of a test double, not of a store: reads walk the user's rows.

``MemoryStore()`` uses the wall clock for device times and hold deadlines;
``MemoryStore(clock)`` (any ``IReactorTime``, e.g. ``twisted.internet.task.Clock``)
uses that clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from easync.deviceaccess import Rule, check_rule, rule_matches
from easync.errors import TooManyDevices
from easync.interfaces import (
    IHoldStore,
    IItemStore,
    IRetentionStore,
    IStateStore,
    IUserStore,
    PurgeStep,
)
from easync.items import index_fields
from easync.lookup import (
    contact_index,
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
from easync.requestread import RequestRead, RequestSnapshot, followed_states
from easync.storerules import DEVICE_COLUMNS as _DEVICE_COLS
from easync.storerules import (
    device_values,
    feed_cursor,
    named_rows,
    new_rows,
    plan_ops,
    purged_folder,
    refuse_expired,
    refuse_replaced,
    user_changes,
)
from easync.storerules import dumps as _dumps
from easync.storerules import parse_folder_id as _parse_folder_id
from easync.storerules import parse_item_id as _parse_item_id

__all__ = ["MemoryStore"]

T = TypeVar("T")
Window = tuple[int | None, int | None] | None

_EMAIL_KEYS = ("Email1Address", "Email2Address", "Email3Address")


def _in_window(window: Window, cls: str, start: int | None, end: int | None,
               complete: int | None) -> bool:
    """Whether a live item is inside ``window`` (as ``IItemStore.changes_since``
    defines it; the SQL store's ``_window_filter`` and ``_window_sql``)."""
    if not window:
        return True
    lo, hi = window
    if cls == "Calendar":
        if lo is not None and end is not None and end < lo:
            return False
        return hi is None or start is None or start <= hi
    if cls == "Tasks":
        return not (hi == 1 and complete == 1)
    return True


@dataclass
class _UserRow:
    id: int
    name: str
    email: str | None
    password_hash: str | None
    activesync: int
    extra: str
    modseq: int = 0
    hierarchy_version: int = 1

    def user(self) -> User:
        return User(id=self.id, name=self.name, email=self.email,
                    activesync=bool(self.activesync), password_hash=self.password_hash,
                    extra=json.loads(self.extra) if self.extra else {})


@dataclass
class _FolderRow:
    id: int
    user_id: int
    parent_id: str
    name: str
    type: int
    modseq: int = 0
    deleted: int = 0
    purged: int = 0

    def folder(self) -> Folder:
        return Folder(server_id=str(self.id), parent_id=self.parent_id, name=self.name,
                      type=self.type, modseq=self.modseq, purged=self.purged)


@dataclass
class _ItemRow:
    id: int
    user_id: int
    folder_id: int
    cls: str
    data: str | None
    uid: str | None
    start: int | None
    end: int | None
    complete: int | None
    modseq: int
    created_modseq: int
    deleted: int = 0
    deleted_at: float | None = None

    @property
    def server_id(self) -> str:
        return f"{self.folder_id}:{self.id}"

    def item(self) -> Item:
        assert self.data is not None
        return Item(self.server_id, str(self.folder_id), self.cls, json.loads(self.data),
                    self.modseq)


@implementer(IUserStore, IItemStore, IStateStore, IHoldStore, IRetentionStore)
class MemoryStore(Service):
    """Users, folders, items (with their change feed), devices, sync state and held
    requests in memory; see the module docstring."""

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self.clock = clock
        self._users: dict[int, _UserRow] = {}
        self._folders: dict[int, _FolderRow] = {}
        self._items: dict[int, _ItemRow] = {}
        self._next = {"users": 0, "folders": 0, "items": 0}
        # the index tables, as sets of rows
        self._contact_emails: set[tuple[int, int, str]] = set()    # item, user, email
        # item, user, token, recipient (1/0), folder (see 014_find_contacts.sql)
        self._contact_names: set[tuple[int, int, str, int, int]] = set()
        self._user_names: set[tuple[int, str]] = set()             # user, token
        self._event_contacts: set[tuple[int, int, str]] = set()    # event, contact, email
        self._devices: dict[tuple[int, str], dict[str, Any]] = {}
        self._states: dict[tuple[int, str, str], str] = {}
        self._holds: dict[tuple[int, str], tuple[str, str, float, float]] = {}
        self._rules: dict[int, Rule] = {}
        self._next["rules"] = 0

    # -- lifecycle (nothing to open; as SqlStore for callers that await them) ---------
    async def open(self) -> None:
        """Nothing to do: the store is ready when made."""

    async def close(self) -> None:
        """Nothing to do."""

    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    def _new_id(self, table: str) -> int:
        self._next[table] += 1
        return self._next[table]

    @staticmethod
    def _call(fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """``fn(*args)`` as a fired Deferred (its exception as a failed one).  Every
        write computes all it will change, and may fail, before it changes anything,
        so a failed call leaves the store as it was (as a rolled-back transaction)."""
        try:
            return succeed(fn(*args))
        except Exception as e:  # noqa: BLE001 - handed to the caller as a failure
            return fail(e)

    # ==============================================================================
    # IUserStore
    # ==============================================================================
    def add_user(self, name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        return self._call(self._add_user, name.lower(), password_hash, email,
                          bool(activesync))

    def _add_user(self, name: str, password_hash: str | None, email: str | None,
                  activesync: bool) -> User:
        if self._user_row(name) is not None:
            raise KeyError(name)
        uid = self._new_id("users")
        self._users[uid] = _UserRow(uid, name, email, password_hash, int(activesync), "{}")
        for ftype, fname in DEFAULT_FOLDERS:
            fid = self._new_id("folders")
            self._folders[fid] = _FolderRow(fid, uid, "0", fname, ftype)
        self._write_user_tokens(uid, name, email, {})
        return User(id=uid, name=name, email=email, activesync=activesync,
                    password_hash=password_hash, extra={})

    def _user_row(self, name: str) -> _UserRow | None:
        for row in self._users.values():
            if row.name == name:
                return row
        return None

    def get_user(self, name: str) -> Deferred[User | None]:
        row = self._user_row(name.lower())
        return succeed(row.user() if row else None)

    def list_users(self) -> Deferred[list[User]]:
        return succeed([r.user() for r in sorted(self._users.values(), key=lambda r: r.name)])

    def update_user(self, name: str, **fields: Any) -> Deferred[User]:
        """As ``SqlStore.update_user``: ``password_hash``, ``email``, ``activesync``;
        any other keyword sets that key of ``extra`` (None removes it)."""
        return self._call(self._update_user, name.lower(), fields)

    def _update_user(self, name: str, fields: dict[str, Any]) -> User:
        row = self._user_row(name)
        if row is None:
            raise KeyError(name)
        before = row.user()
        changes = user_changes(before.extra, fields)
        new = replace(row, **changes)
        self._users[row.id] = new
        result = new.user()
        if user_tokens(before.name, before.email, before.extra) != \
                user_tokens(result.name, result.email, result.extra):
            self._write_user_tokens(result.id, result.name, result.email, result.extra)
        return result

    def _write_user_tokens(self, uid: int, name: str, email: str | None,
                           extra: dict[str, Any]) -> None:
        self._user_names = {r for r in self._user_names if r[0] != uid}
        self._user_names.update((uid, tok) for tok in user_tokens(name, email, extra))

    def find_users(self, query: str, limit: int) -> Deferred[list[User]]:
        ids = _prefix_walk(((tok, uid) for uid, tok in self._user_names), query, int(limit))
        return succeed([self._users[i].user() for i in ids if i in self._users])

    def find_users_by_emails(self, emails: list[str], limit: int
                             ) -> Deferred[dict[str, list[User]]]:
        wanted = sorted({a for a in (indexable_email(e) for e in emails) if a})
        out: dict[str, list[User]] = {}
        if limit <= 0:
            return succeed(out)
        for addr in wanted:
            ids = sorted(uid for uid, tok in self._user_names if tok == addr)[:int(limit)]
            users = [self._users[i].user() for i in ids if i in self._users]
            mine = [u for u in users if indexable_email(u.email or u.name) == addr]
            if mine:
                out[addr] = mine
        return succeed(out)

    # ==============================================================================
    # IItemStore: folders
    # ==============================================================================
    def list_folders(self, user: User) -> Deferred[list[Folder]]:
        rows = [f for f in self._folders.values() if f.user_id == user.id and not f.deleted]
        rows.sort(key=lambda f: (0 if f.type < 12 else 1, f.id))
        return succeed([f.folder() for f in rows])

    def hierarchy_version(self, user: User) -> Deferred[int]:
        row = self._users.get(user.id)
        if row is None:
            return fail(KeyError(user.name))
        return succeed(row.hierarchy_version)

    def _live_folders(self, user_id: int) -> dict[int, _FolderRow]:
        return {f.id: f for f in self._folders.values()
                if f.user_id == user_id and not f.deleted}

    def _bump_hierarchy(self, user_id: int) -> None:
        row = self._users.get(user_id)
        if row is None:
            raise KeyError(user_id)
        row.hierarchy_version += 1

    @staticmethod
    def _check_parent(folders: dict[int, _FolderRow], parent_id: str) -> None:
        if parent_id == "0":
            return
        pid = _parse_folder_id(parent_id)
        if pid is None or pid not in folders:
            raise ValueError("parent")

    @staticmethod
    def _check_name(folders: dict[int, _FolderRow], parent_id: str, name: str,
                    exclude: int | None = None) -> None:
        if not name or not name.strip():
            raise ValueError("name")
        low = name.casefold()
        for fid, f in folders.items():
            if fid != exclude and f.parent_id == parent_id and f.name.casefold() == low:
                raise ValueError("exists")

    def create_folder(self, user: User, parent_id: str, name: str,
                      type: int) -> Deferred[Folder]:
        return self._call(self._create_folder, user.id, str(parent_id), name, int(type))

    def _create_folder(self, user_id: int, parent_id: str, name: str, ftype: int) -> Folder:
        if user_id not in self._users:
            raise KeyError(user_id)
        if ftype < 12:
            raise ValueError("type")
        folders = self._live_folders(user_id)
        self._check_parent(folders, parent_id)
        self._check_name(folders, parent_id, name)
        self._bump_hierarchy(user_id)
        fid = self._new_id("folders")
        self._folders[fid] = _FolderRow(fid, user_id, parent_id, name, ftype)
        return Folder(server_id=str(fid), parent_id=parent_id, name=name, type=ftype)

    def _user_folder_to_change(self, user_id: int, server_id: str
                               ) -> tuple[dict[int, _FolderRow], int]:
        if user_id not in self._users:
            raise KeyError(user_id)
        folders = self._live_folders(user_id)
        fid = _parse_folder_id(server_id)
        if fid is None or fid not in folders:
            raise KeyError(server_id)
        if folders[fid].type < 12:
            raise ValueError("special")
        return folders, fid

    def update_folder(self, user: User, server_id: str, parent_id: str,
                      name: str) -> Deferred[Folder]:
        return self._call(self._update_folder, user.id, server_id, str(parent_id), name)

    def _update_folder(self, user_id: int, server_id: str, parent_id: str,
                       name: str) -> Folder:
        folders, fid = self._user_folder_to_change(user_id, server_id)
        self._check_parent(folders, parent_id)
        pid = _parse_folder_id(parent_id)
        while pid is not None:
            if pid == fid:
                raise ValueError("parent")
            pid = _parse_folder_id(folders[pid].parent_id) if pid in folders else None
        self._check_name(folders, parent_id, name, exclude=fid)
        self._bump_hierarchy(user_id)
        row = self._folders[fid]
        row.parent_id, row.name = parent_id, name
        return row.folder()

    def delete_folder(self, user: User, server_id: str) -> Deferred[None]:
        return self._call(self._delete_folder, user.id, server_id)

    def _delete_folder(self, user_id: int, server_id: str) -> None:
        folders, fid = self._user_folder_to_change(user_id, server_id)
        self._bump_hierarchy(user_id)
        doomed = {fid}
        grew = True
        while grew:
            grew = False
            for other, f in folders.items():
                if other not in doomed and _parse_folder_id(f.parent_id) in doomed:
                    doomed.add(other)
                    grew = True
        # the items go with their index rows (the SQL store's ON DELETE CASCADE)
        gone = {i for i, r in self._items.items() if r.folder_id in doomed}
        for iid in gone:
            del self._items[iid]
        self._contact_emails = {r for r in self._contact_emails if r[0] not in gone}
        self._contact_names = {r for r in self._contact_names if r[0] not in gone}
        self._event_contacts = {r for r in self._event_contacts
                                if r[0] not in gone and r[1] not in gone}
        for doomed_id in doomed:
            self._folders[doomed_id].deleted = 1

    def _folder_type(self, user_id: int, folder_id: str, missing: str) -> tuple[int, int]:
        fid = _parse_folder_id(folder_id)
        row = self._folders.get(fid) if fid is not None else None
        if row is None or row.user_id != user_id or row.deleted:
            raise KeyError(missing)
        return row.id, row.type

    # ==============================================================================
    # IItemStore: items and the change feed
    # ==============================================================================
    def _feed(self, user_id: int, fid: int, after: int) -> list[_ItemRow]:
        """The folder's rows (live and tombstones) with modseq > after, oldest first."""
        rows = [r for r in self._items.values()
                if r.folder_id == fid and r.modseq > after and r.user_id == user_id]
        rows.sort(key=lambda r: r.modseq)
        return rows

    def get_items(self, user: User, server_ids: list[str]) -> Deferred[list[Item]]:
        wanted: dict[int, int] = {}
        for sid in server_ids:
            parsed = _parse_item_id(sid)
            if parsed:
                wanted[parsed[1]] = parsed[0]
        found: dict[str, Item] = {}
        for iid, fid in wanted.items():
            row = self._items.get(iid)
            if row is not None and row.user_id == user.id and not row.deleted \
                    and row.folder_id == fid:
                found[row.server_id] = row.item()
        out: list[Item] = []
        seen: set[str] = set()
        for sid in server_ids:
            if sid in found and sid not in seen:
                seen.add(sid)
                out.append(found[sid])
        return succeed(out)

    def changes_since(self, user: User, folder_id: str, cursor: int, limit: int,
                      window: Window = None,
                      held_upto: int | None = None) -> Deferred[ChangeBatch]:
        """See IItemStore; batches as the SQL store's (with a window, one batch looks
        at most at max(limit, 200) entries, so it may hold fewer than ``limit``)."""
        cursor, limit = int(cursor), int(limit)
        fid = _parse_folder_id(folder_id)
        if fid is None:
            return succeed(ChangeBatch([], False, cursor))
        rows = self._feed(user.id, fid, cursor)
        if limit <= 0:
            return succeed(ChangeBatch([], bool(rows), cursor))
        chunk = limit if not window else max(limit, 200)
        out: list[Change] = []
        high = cursor
        for n, r in enumerate(rows):
            if len(out) >= limit or n >= chunk:
                return succeed(ChangeBatch(out, True, high))
            high = r.modseq
            if r.deleted:
                out.append(Change(r.server_id, high, True, r.created_modseq))
            elif _in_window(window, r.cls, r.start, r.end, r.complete):
                out.append(Change(r.server_id, high, False, r.created_modseq, r.item()))
            elif held_upto is not None and r.created_modseq <= held_upto:
                out.append(Change(r.server_id, high, False, r.created_modseq, soft=True))
        return succeed(ChangeBatch(out, False, high))

    def window_changes(self, user: User, folder_id: str, after: int, upto: int,
                       old: Window, new: Window, limit: int) -> Deferred[ChangeBatch]:
        after, upto, limit = int(after), int(upto), int(limit)
        fid = _parse_folder_id(folder_id)
        if fid is None or after >= upto or limit <= 0:
            return succeed(ChangeBatch([], fid is not None and after < upto, after))
        out: list[Change] = []
        for r in self._feed(user.id, fid, after):
            if r.modseq > upto or r.deleted:
                continue
            was = _in_window(old, r.cls, r.start, r.end, r.complete)
            now = _in_window(new, r.cls, r.start, r.end, r.complete)
            if was == now:
                continue
            if len(out) >= limit:
                return succeed(ChangeBatch(out, True, out[-1].modseq))
            out.append(Change(r.server_id, r.modseq, False, r.created_modseq, soft=not now,
                              enters=now))
        return succeed(ChangeBatch(out, False, upto))

    def count_changes_since(self, user: User, folder_id: str, cursor: int) -> Deferred[int]:
        fid = _parse_folder_id(folder_id)
        if fid is None:
            return succeed(0)
        return succeed(len(self._feed(user.id, fid, int(cursor))))

    def find_by_uids(self, user: User, folder_id: str, uids: list[str]
                     ) -> Deferred[dict[str, Item]]:
        fid = _parse_folder_id(folder_id)
        wanted = {u for u in uids if u}
        out: dict[str, Item] = {}
        if fid is None:
            return succeed(out)
        for iid in sorted(self._items):
            r = self._items[iid]
            if r.user_id == user.id and r.folder_id == fid and not r.deleted \
                    and r.uid in wanted and r.uid not in out:
                out[r.uid] = r.item()
        return succeed(out)

    def find_by_uid(self, user: User, uid: str) -> Deferred[list[Item]]:
        """The user's live items (events) whose UID is ``uid``."""
        return succeed([self._items[i].item() for i in sorted(self._items)
                        if self._items[i].user_id == user.id and self._items[i].uid == uid
                        and not self._items[i].deleted])

    def apply(self, user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        """See IItemStore and ``SqlStore.apply`` (KeyError('folder'); 'invalid')."""
        return self._call(self._apply, user.id, folder_id, list(ops), state)

    def _apply(self, user_id: int, folder_id: str, ops: list[Op],
               state: StateWrite | None) -> list[OpResult]:
        urow = self._users.get(user_id)
        if urow is None:
            raise KeyError(user_id)
        fid, folder_type = self._folder_type(user_id, folder_id, "folder")
        folder_cls = FOLDER_CLASS.get(folder_type, "Email")
        n = len(ops)
        base = urow.modseq
        live: dict[int, str] = {}
        for iid in named_rows(ops, fid):
            row = self._items.get(iid)
            if row is not None and row.folder_id == fid and not row.deleted:
                live[row.id] = row.cls
        existing = set(live)
        first = self._next["items"] + 1
        next_item = first - 1 + new_rows(ops)
        final, results = plan_ops(ops, fid, folder_cls, live, base,
                                  iter(range(first, next_item + 1)))
        # everything that may fail (JSON, the state's builder) before any change
        rows = self._rows_of(user_id, fid, final, existing, self._now())
        state_text = None
        if state is not None:
            if state.build is not None:
                state.state = state.build(results)
            self._refuse_expired(state, user_id)
            state_text = _dumps(state.state)
        # commit
        urow.modseq = base + max(n, 0)
        self._next["items"] = next_item
        if final:
            self._write_items(user_id, rows, existing)
            self._folders[fid].modseq = max(v[2] for v in final.values())
        if state is not None and state_text is not None:
            self._states[(user_id, state.device_id, state.name)] = state_text
        return results

    @staticmethod
    def _rows_of(user_id: int, fid: int, final: dict[int, list[Any]],
                 existing: set[int], now: float) -> list[tuple[_ItemRow, list[str]]]:
        """The rows to write, each with its storable e-mail addresses."""
        out: list[tuple[_ItemRow, list[str]]] = []
        for iid, (cls, data, modseq, created) in final.items():
            if data is None:
                fields: dict[str, Any] = {"uid": None, "start": None, "end": None,
                                          "complete": None, "emails": []}
                text = None
            else:
                fields = index_fields(cls, data)
                text = _dumps(data)
            emails = [em for em in fields["emails"] if storable_email(em)]
            row = _ItemRow(iid, user_id, fid, cls, text, fields["uid"], fields["start"],
                           fields["end"], fields["complete"], modseq,
                           created if created is not None else 0, int(data is None),
                           now if data is None else None)
            out.append((row, emails))
        return out

    def _write_items(self, user_id: int, rows: list[tuple[_ItemRow, list[str]]],
                     existing: set[int]) -> None:
        """Store the rows and keep the contact and link indexes true (as
        ``SqlStore._write_items``)."""
        live_events: dict[int, set[str]] = {}
        for row, emails in rows:
            old = self._items.get(row.id)
            if row.id in existing and old is not None:
                row.created_modseq = old.created_modseq     # an update keeps it
            self._items[row.id] = row
            if row.cls == "Contacts":
                if row.id in existing:
                    self._contact_emails = {r for r in self._contact_emails if r[0] != row.id}
                    self._contact_names = {r for r in self._contact_names if r[0] != row.id}
                if row.data is None:
                    if row.id in existing:
                        self._event_contacts = {r for r in self._event_contacts
                                                if r[1] != row.id}
                else:
                    self._contact_emails.update((row.id, user_id, em) for em in emails)
                    self._contact_names.update(
                        (row.id, user_id, tok, flag, row.folder_id)
                        for tok, flag in contact_index(json.loads(row.data)).items())
            elif row.cls == "Calendar":
                if row.data is None:
                    if row.id in existing:
                        self._event_contacts = {r for r in self._event_contacts
                                                if r[0] != row.id}
                else:
                    live_events[row.id] = set(emails)
        if live_events:
            self._link_events(user_id, live_events)

    def _link_events(self, user_id: int, events: dict[int, set[str]]) -> None:
        linked: dict[int, set[str]] = {iid: set() for iid in events}
        for ev, _cid, em in self._event_contacts:
            if ev in linked:
                linked[ev].add(em)
        drops = {(ev, em) for ev, ems in linked.items() for em in ems - events[ev]}
        if drops:
            self._event_contacts = {r for r in self._event_contacts
                                    if (r[0], r[2]) not in drops}
        matches: dict[str, list[int]] = {}
        for cid, uid, em in self._contact_emails:
            if uid == user_id:
                matches.setdefault(em, []).append(cid)
        for ev, ems in events.items():
            for em in ems - linked[ev]:
                self._event_contacts.update((ev, cid, em) for cid in matches.get(em, ()))

    def move_item(self, user: User, server_id: str, dst_folder_id: str) -> Deferred[str]:
        return self._call(self._move_item, user.id, server_id, dst_folder_id)

    def _move_item(self, user_id: int, server_id: str, dst_folder_id: str) -> str:
        urow = self._users.get(user_id)
        if urow is None:
            raise KeyError(user_id)
        parsed = _parse_item_id(server_id)
        row = self._items.get(parsed[1]) if parsed else None
        if parsed is None or row is None or row.folder_id != parsed[0] \
                or row.user_id != user_id or row.deleted:
            raise KeyError("src")
        src, old = parsed
        dst, dst_type = self._folder_type(user_id, dst_folder_id, "dst")
        if FOLDER_CLASS.get(dst_type, "Email") != row.cls:
            raise ValueError("class")
        urow.modseq += 2
        top = urow.modseq
        if dst == src:
            return server_id
        gone, born = top - 1, top
        new = self._new_id("items")
        self._items[new] = replace(row, id=new, folder_id=dst, modseq=born,
                                   created_modseq=born, deleted=0)
        self._items[old] = replace(row, data=None, uid=None, start=None, end=None,
                                   complete=None, deleted=1, modseq=gone,
                                   deleted_at=self._now())

        def follow(i: int) -> int:
            return new if i == old else i

        self._contact_emails = {(follow(i), u, e) for i, u, e in self._contact_emails}
        self._contact_names = {(follow(i), u, t, r, dst if i == old else f)
                               for i, u, t, r, f in self._contact_names}
        self._event_contacts = {(follow(ev), follow(c), e) for ev, c, e in self._event_contacts}
        self._folders[src].modseq = gone
        self._folders[dst].modseq = born
        return f"{dst}:{new}"

    # -- links and lookups -----------------------------------------------------------
    def linked_contacts(self, user: User, event_server_id: str) -> Deferred[list[str]]:
        """Server ids of the live contacts linked to this event."""
        return succeed(self._linked(user.id, event_server_id, 0, 1))

    def linked_events(self, user: User, contact_server_id: str) -> Deferred[list[str]]:
        """Server ids of the live events linked to this contact."""
        return succeed(self._linked(user.id, contact_server_id, 1, 0))

    def _linked(self, user_id: int, server_id: str, this: int, other: int) -> list[str]:
        parsed = _parse_item_id(server_id)
        if parsed is None:
            return []
        s = self._items.get(parsed[1])
        if s is None or s.folder_id != parsed[0] or s.user_id != user_id or s.deleted:
            return []
        found = set()
        for link in self._event_contacts:
            if int(link[this]) == s.id:
                o = self._items.get(int(link[other]))
                if o is not None and not o.deleted:
                    found.add((o.folder_id, o.id))
        return [f"{f}:{i}" for f, i in sorted(found)]

    def _live_contacts(self, user_id: int, ids: Sequence[int]) -> dict[int, Item]:
        out: dict[int, Item] = {}
        for i in ids:
            r = self._items.get(i)
            if r is not None and r.user_id == user_id and not r.deleted:
                out[i] = r.item()
        return out

    def find_contacts_by_emails(self, user: User, emails: list[str], limit: int
                                ) -> Deferred[dict[str, list[Item]]]:
        wanted = sorted({a for a in (indexable_email(e) for e in emails) if a})
        out: dict[str, list[Item]] = {}
        if limit <= 0:
            return succeed(out)
        for addr in wanted:
            ids = sorted(i for i, u, em in self._contact_emails
                         if u == user.id and em == addr)[:int(limit)]
            if ids:
                items = self._live_contacts(user.id, ids)
                out[addr] = [items[i] for i in ids if i in items]
        return succeed(out)

    def find_contacts_by_name(self, user: User, prefix: str, limit: int, *,
                              recipients: bool = True, folder_id: str | None = None
                              ) -> Deferred[list[Item]]:
        if folder_id is not None and recipients:
            raise ValueError("a folder's walk is of all its contacts")
        fid = _parse_folder_id(folder_id) if folder_id is not None else None
        if folder_id is not None and fid is None:
            return succeed([])
        ids = _prefix_walk(((tok, i) for i, u, tok, r, f in self._contact_names
                            if (f == fid if fid is not None else u == user.id)
                            and (r or not recipients)),
                           prefix, int(limit))
        items = self._live_contacts(user.id, ids)
        return succeed([items[i] for i in ids if i in items])

    # ==============================================================================
    # IStateStore
    # ==============================================================================
    def _device(self, user_id: int, device_id: str) -> dict[str, Any] | None:
        row = self._devices.get((user_id, device_id))
        if row is None:
            return None
        dev = dict(row)
        dev["info"] = json.loads(dev["info"]) if dev["info"] else {}
        dev["blocked"] = bool(dev["blocked"])
        if dev["policy_key"] is not None:
            dev["policy_key"] = int(dev["policy_key"])
        return dev

    def get_device(self, user: User, device_id: str) -> Deferred[dict[str, Any] | None]:
        return succeed(self._device(user.id, device_id))

    def save_device(self, user: User, device_id: str, *, max_devices: int = 0,
                    **fields: Any) -> Deferred[dict[str, Any]]:
        """As ``SqlStore.save_device``: ValueError for unknown fields or a bad ``wipe``,
        ``TooManyDevices`` for a new device past ``max_devices``."""
        try:
            values = device_values(fields)
        except ValueError as e:
            return fail(e)
        return self._call(self._save_device, user.id, device_id, values, self._now(),
                          max_devices)

    def _save_device(self, user_id: int, device_id: str, values: dict[str, Any],
                     now: float, max_devices: int) -> dict[str, Any]:
        key = (user_id, device_id)
        if key not in self._devices:
            if user_id not in self._users:
                raise KeyError(user_id)
            if max_devices:
                count = sum(1 for u, _d in self._devices if u == user_id)
                if count >= max_devices:
                    raise TooManyDevices(count, max_devices)
            row: dict[str, Any] = dict.fromkeys(_DEVICE_COLS)
            row.update(device_id=device_id, wipe="none", info="{}", blocked=0,
                       first_seen=now, last_seen=now)
            row.update(values)
            self._devices[key] = row
        else:
            self._devices[key].update(values)
        dev = self._device(user_id, device_id)
        assert dev is not None
        return dev

    def list_devices(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        """Devices (each with a 'user' key: the user's name), by user then device."""
        out = []
        for (uid, did) in self._devices:
            if (user is None or uid == user.id) and uid in self._users:
                dev = self._device(uid, did)
                assert dev is not None
                dev["user"] = self._users[uid].name
                out.append(dev)
        out.sort(key=lambda d: (d["user"], d["device_id"]))
        return succeed(out)

    def set_device_access(self, user: User, device_id: str, access: str | None
                          ) -> Deferred[dict[str, Any] | None]:
        """As ``SqlStore.set_device_access``."""
        try:
            values = device_values({"access": access})
        except ValueError as e:
            return fail(e)
        row = self._devices.get((user.id, device_id))
        if row is None:
            return succeed(None)
        row.update(values)
        return succeed(self._device(user.id, device_id))

    def _rules_of(self, user_id: int | None) -> list[Rule]:
        names = {uid: r.name for uid, r in self._users.items()}
        return [replace(r, user=names.get(r.user_id) if r.user_id is not None else None)
                for _i, r in sorted(self._rules.items())
                if user_id is None or r.user_id is None or r.user_id == user_id]

    def list_device_rules(self, user: User | None) -> Deferred[list[Rule]]:
        """As ``SqlStore.list_device_rules``."""
        return succeed(self._rules_of(None if user is None else user.id))

    def add_device_rule(self, user: User | None, kind: str, pattern: str, action: str,
                        created_by: str | None = None) -> Deferred[Rule]:
        """As ``SqlStore.add_device_rule``."""
        try:
            check_rule(kind, pattern, action)
        except ValueError as e:
            return fail(e)
        rule = Rule(self._new_id("rules"), None if user is None else user.id, kind, pattern,
                    action, self._now(), created_by, None if user is None else user.name)
        self._rules[rule.id] = rule
        return succeed(replace(rule, touched=self._access_touched(rule)))

    def remove_device_rule(self, rule_id: int) -> Deferred[Rule | None]:
        """As ``SqlStore.remove_device_rule``."""
        found = [r for r in self._rules_of(None) if r.id == rule_id]
        self._rules.pop(rule_id, None)
        if not found:
            return succeed(None)
        return succeed(replace(found[0], touched=self._access_touched(found[0])))

    def _access_touched(self, rule: Rule) -> tuple[int, ...]:
        """As ``SqlState._access_touched`` (this store keeps no access version)."""
        if rule.user_id is not None:
            return (rule.user_id,)
        return tuple(sorted({uid for (uid, did), d in self._devices.items()
                             if rule_matches(rule, did, d.get("device_type") or "",
                                             d.get("user_agent") or "")}))

    def delete_device(self, user: User, device_id: str) -> Deferred[None]:
        self._delete_device(user.id, device_id)
        return succeed(None)

    def _delete_device(self, user_id: int, device_id: str) -> None:
        self._states = {k: v for k, v in self._states.items()
                        if (k[0], k[1]) != (user_id, device_id)}
        self._holds.pop((user_id, device_id), None)
        self._devices.pop((user_id, device_id), None)

    def get_state(self, user: User, device_id: str, name: str
                  ) -> Deferred[dict[str, Any] | None]:
        text = self._states.get((user.id, device_id, name))
        return succeed(json.loads(text) if text is not None else None)

    def save_state(self, user: User, write: StateWrite) -> Deferred[None]:
        return self._call(self._save_state, user.id, write)

    def read_request(self, read: RequestRead) -> Deferred[RequestSnapshot]:
        """As ``SqlStore.read_request``; no auth tables here (``familiar`` None)."""
        row = self._user_row(read.user_name.lower())
        snap = RequestSnapshot(row.user() if row else None)
        if row is not None:
            uid = row.user().id
            snap.device = self._device(uid, read.device_id)
            snap.rules = self._rules_of(uid)
            for name in read.states:
                text = self._states.get((uid, read.device_id, name))
                snap.states[name] = json.loads(text) if text is not None else None
            for name in followed_states(read, snap.states):
                text = self._states.get((uid, read.device_id, name))
                snap.states[name] = json.loads(text) if text is not None else None
            if read.folders:
                rows = [f for f in self._folders.values() if f.user_id == uid and not f.deleted]
                rows.sort(key=lambda f: (0 if f.type < 12 else 1, f.id))
                snap.folders = [f.folder() for f in rows]
        return succeed(snap)

    def _save_state(self, user_id: int, write: StateWrite) -> None:
        self._refuse_expired(write, user_id)
        self._states[(user_id, write.device_id, write.name)] = _dumps(write.state)

    def _refuse_expired(self, write: StateWrite, user_id: int | None = None) -> None:
        fid = purged_folder(write)
        if fid is not None:
            row = self._folders.get(fid)
            refuse_expired(write, row.purged if row is not None else 0)
        if user_id is not None and write.replaces is not None:
            text = self._states.get((user_id, write.device_id, write.name))
            refuse_replaced(write, json.loads(text) if text is not None else None)

    def delete_state(self, user: User, device_id: str, name: str) -> Deferred[None]:
        """Forget one state blob (no error if absent)."""
        self._states.pop((user.id, device_id, name), None)
        return succeed(None)

    # ==============================================================================
    # IRetentionStore (as backends/sql/retention.py; never busy: one process)
    # ==============================================================================
    def purge_synced(self, after: int, limit: int) -> Deferred[PurgeStep]:
        done = 0
        for f in sorted(self._folders.values(), key=lambda f: f.id):
            if f.id <= after or f.deleted:
                continue
            floors = [c for (uid, _d, name), text in self._states.items()
                      if uid == f.user_id and name == f"sync:{f.id}"
                      for c in [feed_cursor(name, json.loads(text))]
                      if c is not None and c >= f.purged]
            upto = min(floors) if floors else f.modseq
            room = limit - done

            def passed(r: _ItemRow, fid: int = f.id, upto: int = upto) -> bool:
                return r.folder_id == fid and r.modseq <= upto

            n = self._drop_tombstones(passed, lambda r: r.modseq, room)
            done += n
            if n >= room:
                return succeed(PurgeStep(done, True, f.id - 1))
        return succeed(PurgeStep(done, False, max(self._folders, default=after)))

    def purge_older(self, before: float, limit: int) -> Deferred[PurgeStep]:
        n = self._drop_tombstones(lambda r: (r.deleted_at or 0) < before,
                                  lambda r: r.deleted_at or 0, limit)
        return succeed(PurgeStep(n, n >= limit))

    def _drop_tombstones(self, keep: Callable[[_ItemRow], bool],
                         order: Callable[[_ItemRow], Any], limit: int) -> int:
        rows = sorted((r for r in self._items.values() if r.deleted and keep(r)),
                      key=order)[:limit]
        for r in rows:
            del self._items[r.id]
            folder = self._folders[r.folder_id]
            folder.purged = max(folder.purged, r.modseq)
        return len(rows)

    def forget_devices(self, unseen_before: float, limit: int) -> Deferred[PurgeStep]:
        idle = sorted((row["last_seen"], uid, did) for (uid, did), row in self._devices.items()
                      if row["last_seen"] is not None and row["last_seen"] < unseen_before
                      and not row["blocked"] and row["wipe"] != "pending")[:limit]
        for _seen, uid, did in idle:
            self._delete_device(uid, did)
        return succeed(PurgeStep(len(idle), len(idle) >= limit))

    # -- for tests: what the SQL store's tables would hold -----------------------------
    def user_modseq(self, user: User) -> int:
        """The user's modseq counter (``users.modseq``): the newest modseq given out."""
        return self._users[user.id].modseq

    def index_rows(self, table: str) -> list[tuple[Any, ...]]:
        """The rows of one index table, sorted: ``contact_emails`` and
        ``contact_names`` (item id, user id, value), ``event_contacts`` (event id,
        contact id, e-mail), ``user_names`` (user id, token)."""
        rows: dict[str, Any] = {"contact_emails": self._contact_emails,
                                "contact_names": {r[:3] for r in self._contact_names},
                                "event_contacts": self._event_contacts,
                                "user_names": self._user_names}
        return sorted(rows[table])

    # ==============================================================================
    # IHoldStore
    # ==============================================================================
    def record_holds(self, node: str, starts: Sequence[tuple[int, str, str, float, float]],
                     ends: Sequence[tuple[int, str, float]]) -> Deferred[None]:
        for uid, dev, since in ends:
            row = self._holds.get((uid, dev))
            if row is not None and row[0] == node and row[2] == since:
                del self._holds[(uid, dev)]
        for uid, dev, cmd, since, until in starts:
            self._holds[(uid, dev)] = (node, cmd, since, until)
        return succeed(None)

    def clear_holds(self, node: str) -> Deferred[None]:
        now = self._now()
        self._holds = {k: v for k, v in self._holds.items()
                       if not (v[0] == node or v[3] < now)}
        return succeed(None)

    def list_holds(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        out = []
        for (uid, dev), (node, cmd, since, until) in self._holds.items():
            if (user is None or uid == user.id) and uid in self._users:
                out.append({"user": self._users[uid].name, "device_id": dev, "node": node,
                            "command": cmd, "started": since, "deadline": until})
        out.sort(key=lambda h: (h["user"], h["device_id"]))
        return succeed(out)


def _prefix_walk(rows: Any, prefix: str, limit: int) -> list[int]:
    """The first ``limit`` distinct keys of (token, key) rows with a token starting
    with ``prefix`` once normalised, in (token, key) order (the SQL store's walk of
    its token index)."""
    key = prefix_key(prefix)
    if not key or limit <= 0:
        return []
    end = prefix_end(key)
    found: dict[int, None] = {}
    for token, kid in sorted(r for r in rows if r[0] >= key and (end is None or r[0] < end)):
        found.setdefault(kid, None)
        if len(found) >= limit:
            break
    return list(found)
