"""``CrmStore``: contacts, events and tasks of each user kept in a vtenext / vtiger CRM.

Design: a mirror plus overlay in easync's own SQL database (see ``mirror.py``).

* Reads (the folder list, the change feed, items) are answered by the SQL store's
  tables: the sync engine keeps every guarantee it has with ``--backend sql``
  (cursor feed, tombstones, O(changes), resend replay, own-change suppression).
* A device's write goes to the CRM first (create / revise / delete); only what the
  CRM accepted is then written to the mirror, in one SQL transaction with the
  device's sync state.  A CRM that cannot answer makes the request fail with
  ``Unavailable`` (HTTP 503 + Retry-After): what the CRM did accept of the request
  is recorded (its Adds by ClientId, so the device's retry does not duplicate them),
  the sync state is not saved, the device repeats the request.
* Every Add is written to a journal (``crm_journal``) before the CRM is asked to
  create it.  A row left behind (a crash, an answer lost to a timeout) is looked up
  in the CRM — the record assigned to that CRM user, created since a minute before
  the row was written, whose key fields (Contacts: last name, first name, e-mail;
  Events and tasks: subject) are the ones sent — and recorded under the device's
  ClientId, so the device's retry of the Add maps to it.  Done at start, before a
  device's next write, and by the poller.
* A change or delete of a record the CRM no longer has (vtiger answers
  ``ACCESS_DENIED`` for a deleted or never-existing id, vtenext ``RECORD_NOT_FOUND``;
  a task that the CRM's UI turned into an event answers ``INVALID_ID_ATTRIBUTE``)
  is told apart from a record the service user may not touch by a ``query`` for
  that id (an administrator's query lists every live record): gone, the item is
  tombstoned (every device gets a Delete) and the device's Change gets Status 8
  (not found); a Delete of it succeeds.
* CRM-side changes are found by ONE poller per CRM (not per device, not per user,
  and with ``--workers`` or several nodes not per process: the poller holds a
  PostgreSQL advisory lock; the others retry it every poll interval).  Each poll,
  per module (Contacts, Events, Calendar):

  1. ``SELECT count(*) FROM M WHERE assigned_user_id IN (…);`` for the loaded
     users (up to ``COUNT_USERS`` per request);
  2. ``SELECT * FROM M WHERE modifiedtime >= cursor ORDER BY modifiedtime`` (paged;
     the newest second is read again until it has settled), for every user;
  3. when the CRM's count differs from the mirror's live count of those users'
     records, the group is halved (a count per half) down to the users whose counts
     differ, and their ids are scanned (``SELECT id … ORDER BY id``, 100 a page):
     ids the mirror has and the CRM lacks are deletions, ids the CRM has and the
     mirror lacks are read and added.  A deletion costs about log2(users) counts and
     one user's id pages.

  An idle poll is therefore two requests per module (six in all) whatever the
  number of records, up to ``COUNT_USERS`` users.  The count is taken before the
  modified-records query: a deletion before the count cannot be hidden by a
  creation, because the creation is in the query's answer and raises the mirror's
  count.  A deletion is found by the first poll that starts after it.  What a
  count cannot see — a record deleted while another reappears with an old
  modifiedtime (a restore from the recycle bin, an import keeping times) between
  two polls — is found by a full id scan every ``full_scan`` seconds (an hour).
  The web service's ``sync`` is not used: on vtiger 8.2 it answers HTTP 500, and
  ``syncType=application`` never reaches its handler (only ``modifiedTime`` and
  ``elementType`` are registered), so it lists only the service user's own
  records — it cannot be the change feed.
* Changes are written to the mirror and published to the change hub, so held Pings
  wake within one poll interval.  A failing CRM is polled less and less often
  (exponential backoff).
* A user's records are loaded once, on first use (``query … WHERE
  assigned_user_id = …`` by pages of 100 walked by id); afterwards the poller keeps
  them current.

An easync user maps to the CRM user of the same user name; their Contacts, Calendar
and Tasks folders hold the CRM's Contacts, Events and Tasks (Calendar module)
assigned to that CRM user.  Other folders cannot be created (FolderCreate Status 10):
the CRM has no folders.

A user's Contacts, Calendar or Tasks may be shared with colleagues (issue #14 point 1)
through the SQL store's ``folder_shares`` (``easync.sharing``: the same admin commands
and account page as with ``--backend sql``).  The shared folder is the owner's mirror
folder: the SQL store's reads resolve it to the owner's rows; a read-only share
refuses every op ("readonly"); a write through a read-write share goes to the CRM as
the owner's record (assigned to the owner's CRM user) and into the owner's mirror
rows; the poller publishes a change of the owner's record to every holder.
"""

from __future__ import annotations

import html
import os
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from backends.crm import mapping, mirror, shared
from backends.crm.client import PAGE, CrmClient, CrmError, CrmUnavailable
from backends.sql.shares import folder_access_txn
from easync.errors import Unavailable
from easync.interfaces import IItemStore
from easync.model import (
    FOLDER_CLASS,
    ChangeBatch,
    Folder,
    Item,
    Op,
    OpResult,
    StateWrite,
    User,
)
from easync.storerules import parse_folder_id

log = Logger()
T = TypeVar("T")

MODULES = ("Contacts", "Events", "Calendar")
FOLDER_TYPE = mapping.FOLDER_TYPE
SETTLE = 30.0               # seconds before the newest CRM second is not re-read
USERS_REFRESH = 60.0        # seconds between reads of the CRM's user list
FULL_SCAN = 3600.0          # seconds between id scans made whatever the counts say
COUNT_USERS = 200           # CRM users per count request (its URL stays under 4 kB)
SHARED_NAME = "Company address book"    # --crm-shared-name
QUERY_PAGE_STEP = 90        # offset step of the modified-records query (10 rows overlap)
JOURNAL_GRACE = 10.0        # another process's journal row is orphaned after timeout + this
# error codes about the CRM's state, not the record: the device retries the request
TRANSIENT_CODES = frozenset({"DATABASE_QUERY_ERROR", "INTERNAL_SERVER_ERROR", "UNKNOWN"})
# answers to retrieve/revise/delete that may mean "no such record" (vtiger 8.2:
# ACCESS_DENIED for a deleted or never-existing id; vtenext, older vtiger:
# RECORD_NOT_FOUND; a task the UI made an event: INVALID_ID_ATTRIBUTE); a query by id
# tells which
MISSING_CODES = frozenset({"ACCESS_DENIED", "RECORD_NOT_FOUND", "INVALID_ID_ATTRIBUTE"})
# what identifies a record a journalled Add made, besides its owner and createdtime
JOURNAL_KEYS = {"Contacts": ("lastname", "firstname", "email"), "Events": ("subject",),
                "Calendar": ("subject",)}
#: classid of the poller's PostgreSQL advisory lock ("easy"); objid: crc32 of the CRM url
POLLER_LOCK_CLASS = 0x65617379


def _keep(sql: Any, cur: Any, user_id: int, device_id: str, folder_id: str, cls: str,
          server_id: str, data: dict[str, Any], now: float) -> None:
    """Keep an item a device deletes (``IDeletedStore``, the SQL store's table)."""
    sql.deleted.keep_txn(cur, user_id, device_id, folder_id, "crm",
                         [(server_id, cls, data)], now)


def _unkeep(sql: Any, cur: Any, user_id: int, device_id: str, server_id: str,
            since: float) -> None:
    """The CRM did not delete it: forget the kept copy ``_keep`` wrote."""
    sql.deleted.drop_kept_txn(cur, user_id, device_id, server_id, since)


def _same_text(a: Any, b: Any) -> bool:
    """The same text once the CRM's HTML entities are decoded (vtiger re-saves kept
    text encoded), case and outer blanks aside."""
    return html.unescape(str(a or "")).strip().casefold() == \
        html.unescape(str(b or "")).strip().casefold()


def _owner_clause(crm_users: list[str]) -> str:
    if len(crm_users) == 1:
        return f"assigned_user_id = '{crm_users[0]}'"
    return "assigned_user_id IN (" + ",".join(f"'{u}'" for u in crm_users) + ")"


def _shared_access(sql: Any, cur: Any, user_id: int, folder_id: str
                   ) -> tuple[User, int, bool] | None:
    """(owner, folder type, read only) of a folder another user shares with
    ``user_id`` (``folder_shares``, the SQL store's); None for the user's own folders
    and for folders it cannot reach."""
    fid = parse_folder_id(str(folder_id))
    if fid is None:
        return None
    got = folder_access_txn(sql.engine, cur, user_id, fid)
    if got is None or got[0] == user_id:
        return None
    cur.execute(sql.db.sql("SELECT name FROM users WHERE id = ?"), (got[0],))
    row = cur.fetchone()
    if row is None:
        return None
    return User(id=got[0], name=str(row[0])), got[1], got[2]


def _share_audience(sql: Any, cur: Any) -> dict[str, list[int]]:
    """folder id -> its owner's id then its grantees' ids (0: every user), of every
    shared folder: who a CRM change of the owner's record must wake."""
    cur.execute("SELECT s.folder_id, f.user_id, s.grantee_id FROM folder_shares s"
                " JOIN folders f ON f.id = s.folder_id WHERE f.deleted = 0"
                " ORDER BY s.folder_id")
    out: dict[str, list[int]] = {}
    for fid, owner, grantee in cur.fetchall():
        out.setdefault(str(fid), [int(owner)]).append(int(grantee))
    return out


def _crm_folder(sql: Any, cur: Any, folder_id: str) -> bool:
    """Is ``folder_id`` a live default Contacts, Calendar or Tasks folder (a CRM
    user's own: what can be shared)?"""
    fid = parse_folder_id(str(folder_id))
    if fid is None:
        return False
    cur.execute(sql.db.sql("SELECT type FROM folders WHERE id = ? AND deleted = 0"), (fid,))
    row = cur.fetchone()
    return row is not None and int(row[0]) in FOLDER_TYPE.values()


@implementer(IItemStore)
class CrmStore(Service):
    """The item store over a CRM; ``sql`` (a ``SqlStore``) holds the mirror, users
    and sync state.  ``client`` is a ``CrmClient``; ``notifier`` the change hub."""

    def __init__(self, reactor: Any, sql: Any, client: CrmClient, *,
                 notifier: Any = None, poll_interval: float = 15.0, zone: str = "auto",
                 full_scan: float = FULL_SCAN, settle: float = SETTLE,
                 count_users: int = COUNT_USERS, shared_contacts: str = "none",
                 shared_name: str = SHARED_NAME) -> None:
        self.reactor = reactor
        self.sql = sql
        close_after = getattr(sql, "close_after", None)
        if close_after is not None:
            # a poll under way at a service stop ends before the database closes
            close_after(self.round_done)
        self.client = client
        self.notifier = notifier
        self.poll_interval = poll_interval
        self.zone_option = zone
        self.full_scan = full_scan
        self.settle = settle
        self.count_users = count_users
        # the company address book (shared.py): "all" = every CRM contact is readable
        # by every CRM user (the CRM's organisation-wide sharing of Contacts is public)
        self.shared_contacts = shared_contacts
        self.shared_name = shared_name
        self._company: tuple[int, str] | None = None     # holder user id, folder id
        self._company_users: set[int] = set()           # users who see it (publish)
        # shared folders (folder_shares): folder id -> the users holding it, its owner
        # included; read each poll and after a share or unshare made here
        self._audience: dict[str, set[int]] = {}
        self.lock = DeferredLock()          # initial loads and polls never interleave
        # (user id, device id, folder id) -> the lock of that device's writes there
        self._device_writes: dict[tuple[int, str, str], DeferredLock] = {}
        self.polls = 0                      # finished polls (tests, benchmarks)
        self.poll_failures = 0
        self.scans = 0                      # id scans made (tests, benchmarks)
        # this process, in the journal's rows; the journal rows it is sending now
        self.node = uuid.uuid4().hex
        self._inflight: set[str] = set()
        # the poller's lock across processes (PostgreSQL), None: not needed (SQLite)
        self.leader = PollerLock(reactor, sql, client.url) \
            if sql.engine.name == "postgres" else None
        self._ctx: mapping.Context | None = None
        self._ctx_session: Any = None
        self._crm_users: dict[str, str] = {}    # lower-case user name -> CRM user id
        self._misses: dict[str, float] = {}     # names the CRM lacked, when last asked
        self._user_map: dict[int, str | None] = {}   # easync user id -> CRM user id (loaded)
        self._loading: dict[int, list[Deferred[None]]] = {}
        self._folders: dict[int, dict[str, str]] = {}   # user id -> module -> folder id
        self._call: Any = None
        self._round_running: Deferred[None] | None = None
        self._opened = False
        # CRM ids created by device writes whose mirror rows are not committed yet: the
        # poller, which may see them first, leaves them to those writes
        self._creating: dict[str, int] = {}
        # the SQL store's purges take the mirror's rows of what they remove with them
        retention = getattr(sql, "retention", None)
        if retention is not None:
            retention.item_hooks.append(lambda cur, ids: mirror.forget_items(sql, cur, ids))
            retention.device_hooks.append(
                lambda cur, user_id, device_id: mirror.forget_device(sql, cur, user_id,
                                                                     device_id))

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        if not self._opened:
            # (the tables come with the SQL store's migrations: schema version 6)
            await self.sql.db.run_interaction(
                "crm check_schema", lambda cur: mirror.check_schema(self.sql, cur))
            if self.shared_contacts != "all":
                # off now: when it is on again, the book is loaded afresh (what was
                # deleted meanwhile is then found by the poll's count)
                await self._run(shared.unload, write=True)
            self._opened = True

    def startService(self) -> Deferred[None]:  # type: ignore[override]
        super().startService()

        def started(_: Any) -> None:
            self._schedule(0)
            # journal rows a crash left behind: looked up now (the CRM may be down:
            # then before the device's next write, or by the poller)
            Deferred.fromCoroutine(self.reconcile()).addErrback(
                lambda f: log.warn("journal check at start failed: {err}",  # noqa: G010
                                   err=str(f.value)))

        def failed(f: Failure) -> None:
            log.failure("cannot prepare the CRM mirror tables", f)

        return Deferred.fromCoroutine(self.open()).addCallbacks(started, failed)

    def stopService(self) -> Deferred[None] | None:  # type: ignore[override]
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self.leader is not None:
            self.leader.release()
        return self.round_done()

    def round_done(self) -> Deferred[None] | None:
        """Fires when the poll under way has ended (None: none is): the SQL store
        below closes only after it (``SqlStore.close_after``)."""
        if self._round_running is None:
            return None
        done: Deferred[None] = Deferred()

        def fire(result: Any) -> Any:
            done.callback(None)
            return result

        self._round_running.addBoth(fire)
        return done

    def _run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> Deferred[T]:
        return self.sql.db.run_interaction(fn.__qualname__,
                                           lambda cur: fn(self.sql, cur, *args), write=write)

    # -- what this CRM is like ----------------------------------------------------------
    async def context(self) -> mapping.Context:
        session = await self.client.ensure_session()
        if self._ctx is not None and self._ctx_session is session:
            self._ctx.now = self._now_dt()
            return self._ctx
        contacts = await self.client.field_names("Contacts")
        events = await self.client.field_names("Events")
        profile = session.profile or {}
        user_tz = str(profile.get("user_timezone") or profile.get("time_zone") or "")
        zone = self.zone_option
        if zone == "auto":
            if session.flavour == "vtiger":
                zone = "UTC"
            else:
                zone = user_tz or "UTC"
                if session.timezone_diff:
                    log.error("the CRM service user's time zone ({tz}) differs from the CRM "
                              "server's by {diff} s: set the service user's time zone to the "
                              "server's, or give --crm-timezone; times may be off",
                              tz=user_tz, diff=session.timezone_diff)
        if profile and str(profile.get("is_admin", "")).lower() not in ("on", "1", "true"):
            log.error("the CRM service user {user} is not an administrator: sync falls back "
                      "to query, easync sees only the records it may read, and the CRM drops "
                      "unreadable rows from query pages (a page can end early)",
                      user=self.client.username)
        email2 = "yahooid" if "yahooid" in contacts else (
            "secondaryemail" if "secondaryemail" in contacts else "")
        self._ctx = mapping.Context(
            flavour=session.flavour, zone_name=zone, diff=session.timezone_diff,
            date_format=str(profile.get("date_format") or "yyyy-mm-dd"),
            email2_field=email2, event_fields=frozenset(events), now=self._now_dt(),
            local_zone_name=user_tz or zone,
            salutations=mapping.salutations(await self.client.describe("Contacts")))
        self._ctx_session = session
        return self._ctx

    def _now_dt(self) -> Any:
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.reactor.seconds(), UTC)

    async def crm_user_id(self, name: str) -> str | None:
        """The CRM user id of this user name; the CRM's user list is read again for a
        name it lacked, at most once a minute per name."""
        now = self.reactor.seconds()
        key = name.lower()
        if key not in self._crm_users and now - self._misses.get(key, -1e18) > USERS_REFRESH:
            users: dict[str, str] = {}
            async for page in self.client.query_pages("Users", columns="user_name"):
                for row in page:
                    users[str(row.get("user_name") or "").lower()] = str(row["id"])
            self._crm_users = users
            if key not in users:
                self._misses[key] = now
        return self._crm_users.get(key)

    async def folders_of(self, user_id: int) -> dict[str, str]:
        """module -> folder id of the user's default Contacts, Calendar and Tasks."""
        if user_id not in self._folders:
            user = User(id=user_id, name="")
            self._folders[user_id] = mapping.default_folders(
                await self.sql.list_folders(user))
        return self._folders[user_id]

    # -- first load of a user ---------------------------------------------------------------
    async def ensure_loaded(self, user: User) -> str | None:
        """Make sure the user's CRM records are in the mirror; their CRM user id (None:
        no CRM user of that name)."""
        if user.id in self._user_map:
            return self._user_map[user.id]
        known = await self._run(mirror.get_crm_user, user.id)
        if known is not None and known[1] and known[0] is not None:
            self._user_map[user.id] = known[0]
            return known[0]
        waiters = self._loading.get(user.id)
        if waiters is not None:
            d: Deferred[None] = Deferred()
            waiters.append(d)
            await d
            return self._user_map.get(user.id)
        self._loading[user.id] = []
        error: BaseException | None = None
        try:
            await self.lock.run(lambda: Deferred.fromCoroutine(self._load(user)))
        except BaseException as e:  # noqa: BLE001 - handed to every waiter
            error = e
        waiting = self._loading.pop(user.id, [])
        for w in waiting:
            if error is None:
                w.callback(None)
            else:
                w.errback(Failure(error))
        if error is not None:
            raise error
        return self._user_map.get(user.id)

    async def _load(self, user: User) -> None:
        crm_user = await self.crm_user_id(user.name)
        if crm_user is None:
            log.warn("easync user {name} has no CRM user of that name: their folders stay "  # noqa: G010
                     "empty", name=user.name)
            return                       # not remembered: checked again next time
        started = time.monotonic()
        ctx = await self.context()
        folders = await self.folders_of(user.id)
        await self._run(mirror.put_crm_user, user.id, crm_user, False, write=True)
        count = 0
        for module in MODULES:
            async for page in self.client.query_pages(
                    module, f"assigned_user_id = '{crm_user}'"):
                count += len(page)
                batch = mirror.Incoming(module, records=page, path="query",
                                        only_owner=crm_user)
                changed = await self._run(mirror.apply_incoming, batch, {crm_user: user.id},
                                          {user.id: folders[module]}, ctx, write=True)
                self._publish(changed)
        await self._run(mirror.put_crm_user, user.id, crm_user, True, write=True)
        self._user_map[user.id] = crm_user
        log.info("loaded {count} CRM records of {name} in {secs:.1f} s", count=count,
                 name=user.name, secs=time.monotonic() - started)

    def _publish(self, changed: Iterable[tuple[int, str]]) -> None:
        if self.notifier is None:
            return
        for user_id, folder_id in sorted(changed):
            if self._company is not None and (user_id, folder_id) == self._company:
                # the company address book: every user who has it in their hierarchy
                for reader in sorted(self._company_users):
                    self.notifier.publish(reader, folder_id)
                continue
            self.notifier.publish(user_id, folder_id)
            for holder in sorted(self._audience.get(str(folder_id), set()) - {user_id}):
                # a colleague's share of the folder (and the owner, for a write
                # through a share)
                self.notifier.publish(holder, folder_id)

    async def load_audience(self) -> None:
        """Read who holds each shared folder (one query over ``folder_shares``)."""
        rows: dict[str, list[int]] = await self._run(_share_audience)
        everyone: set[int] | None = None
        out: dict[str, set[int]] = {}
        for fid, ids in rows.items():
            holders = set(ids) - {0}
            if 0 in ids:
                if everyone is None:
                    everyone = set((await self._run(mirror.mapped_users)).values())
                holders |= everyone
            out[fid] = holders
        self._audience = out

    # -- IItemStore: folders ----------------------------------------------------------------
    def list_folders(self, user: User) -> Deferred[list[Folder]]:
        async def run() -> list[Folder]:
            crm_user = await self.ensure_loaded(user)
            listed = await self.sql.list_folders(user)
            out = [f for f in listed if f.is_default]
            for f in listed:
                if f.owner is not None and f.owner != shared.HOLDER and \
                        f.cls in mapping.MODULE_OF:
                    # a colleague's folder shared with the user (folder_shares): the
                    # owner's mirror folder, their records loaded if they never synced
                    owner = await self.sql.get_user(f.owner)
                    if owner is not None:
                        await self.ensure_loaded(owner)
                        out.append(f)
            if crm_user is not None:
                book = await self.company_folder()
                if book is not None:
                    self._company_users.add(user.id)
                    out.append(book)
            return out

        return Deferred.fromCoroutine(run())

    # -- colleagues' shared folders (issue #14 point 1) ----------------------------------------
    # The SQL store's ``folder_shares`` and rules (easync.sharing): a shared folder is
    # the owner's mirror folder; the SQL store's reads resolve it to the owner's rows,
    # ``_apply`` writes through it to the CRM as the owner's record.
    def get_user(self, name: str) -> Deferred[User | None]:
        result: Deferred[User | None] = self.sql.get_user(name)
        return result

    def share_folder(self, folder_id: str, grantee_id: int, can_write: bool
                     ) -> Deferred[bool]:
        """See ``SqlShares.share``; only a user's own Contacts, Calendar or Tasks (not
        the company address book): KeyError otherwise."""
        async def run() -> bool:
            if await self._is_company(folder_id) or \
                    not await self._run(_crm_folder, folder_id):
                raise KeyError("folder")
            changed = bool(await self.sql.share_folder(folder_id, grantee_id, can_write))
            await self.load_audience()
            return changed

        return Deferred.fromCoroutine(run())

    def unshare_folder(self, folder_id: str, grantee_id: int) -> Deferred[bool]:
        async def run() -> bool:
            changed = bool(await self.sql.unshare_folder(folder_id, grantee_id))
            await self.load_audience()
            return changed

        return Deferred.fromCoroutine(run())

    def list_shares(self, user: User | None = None) -> Deferred[list[dict[str, Any]]]:
        result: Deferred[list[dict[str, Any]]] = self.sql.list_shares(user)
        return result

    def folder_audience(self, folder_id: str) -> Deferred[list[int]]:
        result: Deferred[list[int]] = self.sql.folder_audience(folder_id)
        return result

    # -- the company address book (shared.py) -----------------------------------------------
    async def company(self) -> tuple[int, str] | None:
        """(holder user id, folder id) of the company address book, its records loaded
        from the CRM the first time; None when it is off (``--crm-shared-contacts
        none``)."""
        if self.shared_contacts != "all":
            return None
        if self._company is None:
            await self.lock.run(lambda: Deferred.fromCoroutine(self._load_company()))
        return self._company

    async def _load_company(self) -> None:
        if self._company is not None:
            return                          # loaded while this call waited for the lock
        try:
            book: tuple[int, str] = await self._run(shared.holder, write=True)
        except KeyError:
            # another process made the holder at the same moment: it is there now
            book = await self._run(shared.holder, write=True)
        st = await self._run(mirror.get_state, "company") or {}
        if not st.get("loaded"):
            started = time.monotonic()
            ctx = await self.context()
            count = 0
            async for page in self.client.query_pages("Contacts"):
                count += len(page)
                await self._run(shared.apply, book[0], book[1], page, [], ctx, "query",
                                write=True)
            await self._run(mirror.put_state, "company", {"loaded": True}, write=True)
            log.info("loaded {count} CRM contacts into the company address book in "
                     "{secs:.1f} s", count=count, secs=time.monotonic() - started)
        self._company = book

    async def company_folder(self) -> Folder | None:
        """The company address book as every user's hierarchy shows it: read-only,
        a user-created contacts folder (type 14, MS-ASCMD 2.2.3.186.3)."""
        book = await self.company()
        if book is None:
            return None
        found = [f for f in await self.sql.list_folders(User(id=book[0], name=shared.HOLDER))
                 if f.server_id == book[1]]
        if not found:
            return None
        return Folder(server_id=book[1], parent_id="0", name=self.shared_name, type=14,
                      modseq=found[0].modseq, purged=found[0].purged, read_only=True,
                      owner=None)

    async def _is_company(self, folder_id: str) -> bool:
        """Is this the company address book (loaded first when it is on: a phone's
        first request after a restart may name it before any FolderSync)?"""
        book = await self.company()
        return book is not None and str(folder_id) == book[1]

    def hierarchy_version(self, user: User) -> Deferred[int]:
        result: Deferred[int] = self.sql.hierarchy_version(user)
        return result

    def create_folder(self, user: User, parent_id: str, name: str,
                      type: int) -> Deferred[Folder]:
        # the CRM has no folders: FolderCreate answers Status 10
        return Deferred.fromCoroutine(self._refuse(ValueError("type")))

    async def _refuse(self, exc: BaseException) -> Any:
        raise exc

    def update_folder(self, user: User, server_id: str, parent_id: str,
                      name: str) -> Deferred[Folder]:
        return Deferred.fromCoroutine(self._default_only(user, server_id))

    def delete_folder(self, user: User, server_id: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._default_only(user, server_id))

    async def _default_only(self, user: User, server_id: str) -> Any:
        if await self._is_company(server_id):
            raise ValueError("special")     # the company address book is the CRM's
        folders = {f.server_id for f in await self.sql.list_folders(user) if f.is_default}
        if server_id in folders:
            raise ValueError("special")
        raise KeyError(server_id)

    # -- IItemStore: reading --------------------------------------------------------------
    def get_items(self, user: User, server_ids: list[str]) -> Deferred[list[Item]]:
        if self.shared_contacts != "all":
            result: Deferred[list[Item]] = self.sql.get_items(user, server_ids)
            return result

        async def run() -> list[Item]:
            book = await self.company()
            assert book is not None
            me = await self.ensure_loaded(user)
            prefix = f"{book[1]}:"
            own = await self.sql.get_items(user, [s for s in server_ids
                                                  if not s.startswith(prefix)])
            ids = [int(s[len(prefix):]) for s in server_ids
                   if s.startswith(prefix) and s[len(prefix):].isdigit()]
            found = await self._run(shared.get_items, book[1], me, ids) \
                if me is not None else {}
            by_sid = {i.server_id: i for i in own}
            by_sid.update((i.server_id, i) for i in found.values())
            out: list[Item] = []
            for sid in dict.fromkeys(server_ids):
                if sid in by_sid:
                    out.append(by_sid[sid])
            return out

        return Deferred.fromCoroutine(run())

    def changes_since(self, user: User, folder_id: str, cursor: int, limit: int,
                      window: tuple[int | None, int | None] | None = None,
                      held_upto: int | None = None) -> Deferred[ChangeBatch]:
        async def run() -> ChangeBatch:
            me = await self.ensure_loaded(user)
            if await self._is_company(folder_id):
                # contacts: no window (MS-ASCMD 2.2.3.69 FilterType is for calendar,
                # tasks and mail)
                if me is None:
                    return ChangeBatch([], False, cursor)
                book: ChangeBatch = await self._run(shared.changes, str(folder_id), me,
                                                    int(cursor), int(limit))
                return book
            result: ChangeBatch = await self.sql.changes_since(user, folder_id, cursor, limit,
                                                               window, held_upto)
            return result

        return Deferred.fromCoroutine(run())

    def window_changes(self, user: User, folder_id: str, after: int, upto: int,
                       old: tuple[int | None, int | None] | None,
                       new: tuple[int | None, int | None] | None,
                       limit: int) -> Deferred[ChangeBatch]:
        """The mirror's items (the SQL store's table) moving between two windows."""

        async def run() -> ChangeBatch:
            await self.ensure_loaded(user)
            if await self._is_company(folder_id):
                return ChangeBatch([], False, upto)     # contacts have no window
            result: ChangeBatch = await self.sql.window_changes(user, folder_id, after, upto,
                                                                old, new, limit)
            return result

        return Deferred.fromCoroutine(run())

    def find_by_uids(self, user: User, folder_id: str, uids: list[str]
                     ) -> Deferred[dict[str, Item]]:
        """Mirrored events by UID: a device's own Adds keep the UID (16.x: its ClientUid)
        they were made with, CRM records the UID the mapping gives them."""

        async def run() -> dict[str, Item]:
            await self.ensure_loaded(user)
            if await self._is_company(folder_id):
                return {}
            result: dict[str, Item] = await self.sql.find_by_uids(user, folder_id, uids)
            return result

        return Deferred.fromCoroutine(run())

    def find_contacts_by_emails(self, user: User, emails: list[str], limit: int
                                ) -> Deferred[dict[str, list[Item]]]:
        """The mirror's contacts by address: the SQL store's indexed query (the mirror
        writes go through its ``_apply``, which keeps the index)."""

        async def run() -> dict[str, list[Item]]:
            await self.ensure_loaded(user)
            result: dict[str, list[Item]] = await self.sql.find_contacts_by_emails(
                user, emails, limit)
            return result

        return Deferred.fromCoroutine(run())

    def find_contacts_by_name(self, user: User, prefix: str, limit: int, *,
                              recipients: bool = True, folder_id: str | None = None
                              ) -> Deferred[list[Item]]:
        """The mirror's contacts by name prefix: the SQL store's indexed query (the
        mirror's writes keep its index, every contact with its folder)."""

        async def run() -> list[Item]:
            me = await self.ensure_loaded(user)
            whose = user
            if me is not None and folder_id is not None and \
                    await self._is_company(folder_id):
                # the company book: the holder's rows (every CRM user holds the book,
                # list_folders); anyone else finds nothing there
                book = await self.company()
                assert book is not None
                whose = User(id=book[0], name=shared.HOLDER)
            result: list[Item] = await self.sql.find_contacts_by_name(
                whose, prefix, limit, recipients=recipients, folder_id=folder_id)
            return result

        return Deferred.fromCoroutine(run())

    def count_changes_since(self, user: User, folder_id: str, cursor: int) -> Deferred[int]:
        async def run() -> int:
            me = await self.ensure_loaded(user)
            if await self._is_company(folder_id):
                if me is None:
                    return 0
                book: int = await self._run(shared.count_changes, str(folder_id), me,
                                            int(cursor))
                return book
            result: int = await self.sql.count_changes_since(user, folder_id, cursor)
            return result

        return Deferred.fromCoroutine(run())

    def move_item(self, user: User, server_id: str, dst_folder_id: str) -> Deferred[str]:
        async def run() -> str:
            items = await self.sql.get_items(user, [server_id])
            if not items:
                raise KeyError("src")
            folders = {f.server_id: f for f in await self.sql.list_folders(user)
                       if f.is_default}
            dst = folders.get(dst_folder_id)
            if dst is None:
                raise KeyError("dst")
            if dst.cls != items[0].cls:
                raise ValueError("class")
            if dst_folder_id != items[0].folder_id:
                raise KeyError("dst")   # one folder per class: nowhere else to go
            return server_id

        return Deferred.fromCoroutine(run())

    # -- IItemStore: device writes ---------------------------------------------------------
    def apply(self, user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        if state is None or state.replaces is None:
            return Deferred.fromCoroutine(self._apply(user, folder_id, list(ops), state))
        # One device's writes to one folder, one at a time in this process: a resend
        # arriving with its first request (MS-ASCMD 3.1.5.3) then finds the state
        # replaced (StateConflict, in ``_apply``'s first read) before it sends anything
        # to the CRM, where the state's own check at the commit would come after the
        # CRM had made its records.
        key = (user.id, state.device_id, str(folder_id))
        lock = self._device_writes.setdefault(key, DeferredLock())

        def done(result: Any) -> Any:
            if not lock.locked and not lock.waiting:
                self._device_writes.pop(key, None)
            return result

        return lock.run(lambda: Deferred.fromCoroutine(
            self._apply(user, folder_id, list(ops), state))).addBoth(done)

    async def _apply(self, user: User, folder_id: str, ops: list[Op],
                     state: StateWrite | None) -> list[OpResult]:
        crm_user = await self.ensure_loaded(user)
        if crm_user is not None and await self._is_company(folder_id):
            # read-only (issue #14): every op refused, nothing sent to the CRM; the
            # sync state is saved as for any request
            refused = [mirror.Step(op, "fail", "readonly") for op in ops]
            if ops:
                log.info("refused {n} change(s) of {user} to the company address book",
                         n=len(ops), user=user.name)
            return await self._run(mirror.commit_device_write, user.id, folder_id,
                                   "Contacts", refused, state, True,
                                   self.reactor.seconds(), write=True)
        owner_id = user.id          # whose data the folder holds
        access = await self._run(_shared_access, user.id, str(folder_id))
        if access is not None:
            # a colleague's folder shared with the user (issue #14 point 1)
            owner, ftype, read_only = access
            kind = mapping.MODULE_OF.get(FOLDER_CLASS.get(ftype, ""), "Contacts")
            if read_only:
                # every op refused, nothing sent to the CRM; the engine answers each
                # item and resends the server's version; the sync state is saved
                if ops:
                    log.info("refused {n} change(s) of {user} to a folder {owner} shares "
                             "read-only", n=len(ops), user=user.name, owner=owner.name)
                return await self._run(mirror.commit_device_write, user.id, folder_id,
                                       kind, [mirror.Step(op, "fail", "readonly")
                                                for op in ops], state, True,
                                       self.reactor.seconds(), write=True)
            # read-write: the owner's CRM record, written as the owner's
            crm_user = await self.ensure_loaded(owner)
            owner_id = owner.id
            folders = await self.folders_of(owner.id) if crm_user is not None else {}
            if str(folder_id) not in folders.values():
                # not a CRM folder of the owner (or no CRM user): nothing is stored
                refused = [mirror.Step(op, "fail", "invalid") for op in ops]
                return await self._run(mirror.commit_device_write, user.id, folder_id,
                                       kind, refused, state, True,
                                       self.reactor.seconds(), write=True)
        else:
            folders = await self.folders_of(user.id) if crm_user is not None else {}
        module = next((m for m, f in folders.items() if f == str(folder_id)), None)
        if module is None:
            if crm_user is None and str(folder_id) in {
                    f.server_id for f in await self.sql.list_folders(user)
                    if f.cls in mapping.MODULE_OF}:
                # a user without a CRM account: nothing can be stored
                refused = [mirror.Step(op, "fail", "invalid") for op in ops]
                return await self._run(mirror.commit_device_write, user.id, folder_id,
                                       "Contacts", refused, state, True,
                                       self.reactor.seconds(), write=True)
            result: list[OpResult] = await self.sql.apply(user, folder_id, ops, state)
            return result          # not a CRM folder (mail folders): plain SQL
        ctx = await self.context()
        restoring = {op.restores for op in ops if op.kind == "add" and op.restores is not None}
        if state is not None:
            # an earlier request of this device may have left an Add unresolved (a
            # crash, a lost answer): find what it made before its retry is handled
            young = await self.reconcile(user.id, state.device_id)
            refs = {op.ref for op in ops if op.kind == "add" and op.ref}
            if any(e.folder_id == str(folder_id) and e.client_id in refs for e in young):
                raise Unavailable("an earlier Add of this device is still being sent to "
                                  "the CRM by another process")
        elif restoring:
            # an earlier restore of these kept items may have stopped after the CRM
            # made their records: find them first (the kept rows are then marked)
            young = await self.reconcile(user.id, mirror.RESTORE_JOURNAL)
            if any(e.client_id in {str(i) for i in restoring} for e in young):
                raise Unavailable("an earlier restore of these items is still being sent "
                                  "to the CRM by another process")
        item_ids = [int(op.server_id.split(":")[1]) for op in ops
                    if op.kind in ("change", "delete") and isinstance(op.server_id, str)
                    and op.server_id.startswith(f"{folder_id}:")
                    and op.server_id.split(":")[1].isdigit()]

        def read(sql: Any, cur: Any) -> tuple[Any, Any, Any, Any, dict[int, str]]:
            if state is not None:
                # another request of the device replaced the state this one read:
                # StateConflict before anything is sent to the CRM (the commit below
                # checks again, in its write transaction)
                sql.state.check_replaced_txn(cur, user.id, state)
            data = mirror.item_data(sql, cur, item_ids)
            rows = mirror.rows_by_item(sql, cur, item_ids)
            adds = mirror.client_adds(sql, cur, user.id, state.device_id, folder_id) \
                if state is not None else {}
            links = mapping.Links()
            if module == "Events":
                # only the contacts these events name: attendees and current links
                emails = [str(a.get("Email") or "") for op in ops if isinstance(op.data, dict)
                          for a in op.data.get("Attendees") or [] if isinstance(a, dict)]
                known = mirror.event_links(sql, cur, item_ids)
                linked = [r.snapshot.get("contact_id", "") for r in rows.values()] + [
                    c for found in known.values() for c in found]
                links = mirror.links(sql, cur, owner_id, emails, linked)
                links.events = known
            # kept rows restored already: their add makes no record
            restored = sql.deleted.restored_txn(cur, user.id, restoring) if restoring \
                else {}
            return data, rows, adds, links, restored

        data, rows, adds, links, restored = await self._run(read)
        if adds:
            live = await self._run(mirror.item_data, list(adds.values()))
            adds = {c: i for c, i in adds.items() if i in live}
        steps: list[mirror.Step] = []
        complete = True
        failure: CrmUnavailable | None = None
        journal = (user.id, state.device_id) if state is not None else None
        sent: list[str] = []
        try:
            for op in ops:
                # a restore's add is journalled too, under no device (RESTORE_JOURNAL)
                key = journal if journal is not None or op.restores is None else \
                    (user.id, mirror.RESTORE_JOURNAL)
                try:
                    step = await self._write_one(module, op, folder_id, crm_user, ctx,
                                                 data, rows, adds, links, key, sent,
                                                 owner_id, restored)
                except CrmUnavailable as e:
                    complete, failure = False, e
                    break
                except CrmError as e:           # only TRANSIENT_CODES get here
                    complete, failure = False, CrmUnavailable(str(e))
                    break
                if step.kind == "add":
                    self._creating[step.crm_id] = self._creating.get(step.crm_id, 0) + 1
                steps.append(step)
            results = await self._run(mirror.commit_device_write, user.id, folder_id,
                                      module, steps, state, complete,
                                      self.reactor.seconds(), write=True)
        finally:
            self._inflight.difference_update(sent)
            for step in steps:
                if step.kind == "add":
                    left = self._creating.pop(step.crm_id, 1) - 1
                    if left > 0:
                        self._creating[step.crm_id] = left
        book = self._company
        if module == "Contacts" and book is not None:
            # a contact the phone deleted leaves the company address book now, not
            # after the poll's count finds it (a count mismatch costs a bisection)
            gone = [rows[s.item_id].crm_id for s in steps
                    if s.kind in ("delete", "gone") and s.item_id in rows]
            if gone:
                changed: bool = await self._run(shared.apply, book[0], book[1], [], gone,
                                                ctx, write=True)
                if changed:
                    self._publish([book])
        if failure is not None:
            if any(s.kind in ("add", "change", "delete", "gone") for s in steps):
                self._publish([(user.id, folder_id)])
            raise Unavailable(f"CRM unavailable: {failure}")
        return results

    async def _write_one(self, module: str, op: Op, folder_id: str, crm_user: Any,
                         ctx: mapping.Context, data: dict[int, Any], rows: dict[int, Any],
                         adds: dict[str, int], links: mapping.Links,
                         journal: tuple[int, str] | None, sent: list[str],
                         owner_id: int, restored: dict[int, str] | None = None
                         ) -> mirror.Step:
        """One device op sent to the CRM.  ``crm_user``: the CRM user the records
        are assigned to; ``owner_id``: the easync user whose folder it is (not the
        device's user for a folder shared read-write); ``restored``: kept rows
        restored already (their add makes no second record)."""
        if op.kind == "add":
            if not isinstance(op.data, dict):
                return mirror.Step(op, "fail", "invalid")
            if op.ref and op.ref in adds:
                return mirror.Step(op, "reuse", item_id=adds[op.ref])
            made = (restored or {}).get(op.restores) if op.restores is not None else None
            if made is not None:
                # restored already (found by reconcile): that item, no second record
                head, _, tail = made.partition(":")
                if head == str(folder_id) and tail.isdigit():
                    return mirror.Step(op, "reuse", "restored", item_id=int(tail))
                return mirror.Step(op, "fail", "restored")
            want = mapping.desired_view(module, op.data, None, ctx, links)
            element = mapping.element(module, want, None, ctx)
            element["assigned_user_id"] = crm_user
            if module == "Events" and ctx.flavour == "vtenext" and op.data.get("Attendees"):
                element["invitees"] = mapping.invitees(op.data)
            linked, params = self._contact_links(module, ctx, op.data, None, {}, "", links)
            jid = ""
            client = str(op.restores) if journal is not None and \
                journal[1] == mirror.RESTORE_JOURNAL else op.ref
            if journal is not None and client:
                # written before the CRM is asked: see reconcile()
                jid = uuid.uuid4().hex
                entry = mirror.JournalEntry(
                    jid, journal[0], journal[1], str(folder_id), client, module, str(crm_user),
                    element, op.data, self._crm_time(ctx, self.crm_now() - 60), self.node,
                    self.reactor.seconds())
                self._inflight.add(jid)
                sent.append(jid)
                await self._run(mirror.put_journal, entry, write=True)
            try:
                rec = await self.client.create(module, element, **params)
            except CrmError as e:
                if e.code in TRANSIENT_CODES:
                    raise
                log.info("CRM refused a new {module} record: {err}", module=module, err=str(e))
                if jid:
                    await self._run(mirror.drop_journal, [jid], write=True)
                return mirror.Step(op, "fail", "invalid")
            return mirror.Step(op, "add", data=op.data, crm_id=str(rec["id"]),
                               snapshot=mapping.view(module, rec, "retrieve", ctx),
                               mtime=str(rec.get("modifiedtime") or ""), links=linked,
                               journal=jid)
        if op.kind not in ("change", "delete"):
            return mirror.Step(op, "fail", "invalid")
        sid = op.server_id or ""
        item_id = int(sid.split(":")[1]) if sid.startswith(f"{folder_id}:") and \
            sid.split(":")[1].isdigit() else -1
        row = rows.get(item_id)
        if item_id not in data or row is None or row.deleted or row.user_id != owner_id \
                or row.module != module:
            # (item ids are one sequence for every user: one of another user's items
            # named under this folder's id is not found here)
            return mirror.Step(op, "fail", "notfound")
        if op.kind == "delete":
            kept_at: float | None = None
            if op.keep and journal is not None:
                # a device's delete: the item is kept (easync.deleted) before the CRM
                # is asked, so a crash after the CRM deleted it never loses it
                kept_at = self.reactor.seconds()
                await self._run(_keep, owner_id, op.keep, str(folder_id),
                                FOLDER_CLASS[FOLDER_TYPE[module]], sid, data[item_id][0],
                                kept_at, write=True)
            try:
                # a record the CRM has deleted already counts as deleted (client.delete)
                await self.client.delete(row.crm_id, module)
            except CrmError as e:
                if kept_at is not None and journal is not None and op.keep:
                    await self._run(_unkeep, owner_id, op.keep, sid, kept_at, write=True)
                if e.code in TRANSIENT_CODES:
                    raise
                log.info("CRM refused to delete {id}: {err}", id=row.crm_id, err=str(e))
                return mirror.Step(op, "fail", "invalid")
            except CrmUnavailable:
                if kept_at is not None and journal is not None and op.keep:
                    await self._run(_unkeep, owner_id, op.keep, sid, kept_at, write=True)
                raise
            return mirror.Step(op, "delete", item_id=item_id)
        if not isinstance(op.data, dict):
            return mirror.Step(op, "fail", "invalid")
        prev = data[item_id][0]
        known = self._known_links(module, row, links)

        new_data = op.data

        def plan() -> tuple[dict[str, str], set[str], Any, dict[str, str]]:
            want = mapping.desired_view(module, new_data, row.snapshot, ctx, links, prev,
                                        known)
            linked, params = self._contact_links(module, ctx, new_data, prev, known,
                                                 row.snapshot.get("contact_id", ""), links)
            return want, {k for k in want if want[k] != row.snapshot.get(k)}, linked, params

        want, keys, linked, params = plan()
        send_invitees = (module == "Events" and ctx.flavour == "vtenext" and
                         mapping.attendee_key(data[item_id][0]) != mapping.attendee_key(op.data))
        if not keys and not send_invitees and (linked is None or ctx.flavour != "vtiger" or
                                               set(linked) == set(known)):
            # nothing the CRM holds changed (categories, picture…): the overlay only
            return mirror.Step(op, "change", data=op.data, item_id=item_id)
        if await self._retrieved_link(module, row, ctx, known, links):
            want, keys, linked, params = plan()
        element = mapping.element(module, want, keys, ctx)
        element["id"] = row.crm_id
        if send_invitees:
            element["invitees"] = mapping.invitees(op.data)
        try:
            rec = await self.client.revise(element, **params)
        except CrmError as e:
            if e.code in TRANSIENT_CODES:
                raise
            if e.code in MISSING_CODES and not await self.client.exists(module, row.crm_id):
                # deleted in the CRM (the poller has not seen it yet): every device gets
                # the Delete, this one Status 8 for its Change
                log.info("a device changed {id}, which the CRM has deleted", id=row.crm_id)
                return mirror.Step(op, "gone", "notfound", item_id=item_id)
            log.info("CRM refused a change of {id}: {err}", id=row.crm_id, err=str(e))
            return mirror.Step(op, "fail", "invalid")
        return mirror.Step(op, "change", data=op.data, item_id=item_id,
                           snapshot=mapping.view(module, rec, "retrieve", ctx),
                           mtime=str(rec.get("modifiedtime") or ""), links=linked)

    @staticmethod
    def _known_links(module: str, row: Any, links: mapping.Links) -> dict[str, str]:
        """An event's CRM contact links as the mirror knows them."""
        if module != "Events":
            return {}
        return mapping.current_links(row.snapshot.get("contact_id", ""),
                                     links.events.get(row.item_id), links)

    async def _retrieved_link(self, module: str, row: Any, ctx: mapping.Context,
                              known: dict[str, str], links: mapping.Links) -> bool:
        """Before a revise of a linked event on vtiger, which keeps several contacts per
        event and names one through ``query``, another through ``retrieve``: add the one
        ``retrieve`` names now to ``known`` (and its address to ``links``).  True if it
        was not known."""
        if module != "Events" or ctx.flavour != "vtiger" or not known:
            return False                # no contact_id through query: no link at all
        try:
            rec = await self.client.retrieve(row.crm_id)
        except CrmError:
            return False                # the revise that follows says what is wrong
        cid = str((rec or {}).get("contact_id") or "")
        if not cid or cid in known:
            return False
        if cid not in links.by_id:
            links.add(await self._run(mirror.links, row.user_id, (), [cid]))
        known[cid] = (links.by_id.get(cid) or ("", ""))[0]
        return True

    @staticmethod
    def _contact_links(module: str, ctx: mapping.Context, data: dict[str, Any],
                       prev: dict[str, Any] | None, known: dict[str, str], current: str,
                       links: mapping.Links) -> tuple[dict[str, str] | None, dict[str, str]]:
        """(an event's CRM contact links after the write, the extra form fields that
        keep them).  vtiger links several contacts to an event and a create or revise
        keeps only the ``contact_id`` it is given, unless the request names them all in
        ``contactidlist`` (read by the Calendar module's save, as its own Edit view
        and its Google and Outlook sync send it); vtenext is given ``contact_id``."""
        if module != "Events":
            return None, {}
        wanted = mapping.wanted_links(data, prev, known, links)
        if ctx.flavour != "vtiger":
            primary = mapping.primary_link(wanted, current)
            return ({primary: wanted[primary]} if primary else {}), {}
        return wanted, ({"contactidlist": mapping.contact_list(wanted)} if wanted else {})

    # -- the poller ---------------------------------------------------------------------------
    def _schedule(self, delay: float) -> None:
        if not self.running:
            return
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = self.reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None

        def ok(_: Any) -> None:
            self.poll_failures = 0
            self._schedule(self.poll_interval)

        def failed(f: Failure) -> None:
            self.poll_failures += 1
            cap = max(self.poll_interval, min(300.0, self.poll_interval * 20))
            delay = min(cap, self.poll_interval * 2 ** self.poll_failures)
            if f.check(Unavailable):
                log.warn("CRM poll failed ({err}); next try in {delay:.1f} s",  # noqa: G010
                         err=str(f.value), delay=delay)
            else:
                log.failure("CRM poll failed; next try in {delay:.1f} s", f, delay=delay)
            self._schedule(delay)

        d = Deferred.fromCoroutine(self._round())
        self._round_running = d

        def ended(result: Any) -> Any:
            self._round_running = None
            return result

        d.addBoth(ended).addCallbacks(ok, failed)

    async def _round(self) -> None:
        """One turn of the timer: poll when this process holds the poller's lock
        (always on SQLite, one process); otherwise only resolve this process's own
        journal rows left behind."""
        if self.leader is not None and not await self.leader.acquire():
            # (who holds the shared folders: what a journal row resolved here wakes)
            await self.load_audience()
            await self.reconcile()
            return
        await self.poll_once()

    def crm_now(self) -> int:
        """The CRM's clock, in Unix seconds, as of its last challenge."""
        mark = getattr(self.client, "server_clock", None)
        if mark is None:
            return int(self.reactor.seconds())
        server_time, then = mark
        return int(server_time + (self.reactor.seconds() - then))

    def _crm_time(self, ctx: mapping.Context, seconds: float) -> str:
        """A CRM datetime (createdtime, modifiedtime) as the CRM writes it."""
        return datetime.fromtimestamp(seconds, UTC).astimezone(ctx.zone).strftime(
            "%Y-%m-%d %H:%M:%S")

    async def poll_once(self) -> None:
        """Find the CRM's changes since the last poll and write them to the mirror."""
        await self.lock.run(lambda: Deferred.fromCoroutine(self._poll()))
        self.polls += 1

    async def _poll(self) -> None:
        if self.shared_contacts == "all" and self._company is None:
            # (this poll holds self.lock: company() would wait for it)
            await self._load_company()
        ctx = await self.context()
        await self.reconcile()
        # (shares made by easync-admin or another process: known from this poll on)
        await self.load_audience()
        owners: dict[str, int] = await self._run(mirror.mapped_users)
        loaded: dict[str, int] = await self._run(mirror.loaded_users)
        if self._company is not None:
            # (who sees the company address book: every user mapped to a CRM user, in
            # any process)
            self._company_users.update(owners.values())
        folders = {m: {} for m in MODULES}  # type: dict[str, dict[int, str]]
        for user_id in set(owners.values()):
            for m, f in (await self.folders_of(user_id)).items():
                folders[m][user_id] = f
        groups = sorted(loaded.items())
        chunks = [groups[i:i + self.count_users]
                  for i in range(0, len(groups), max(1, self.count_users))]
        for module in MODULES:
            await self._poll_module(module, ctx, owners, folders[module], chunks)
        if self._company is not None:
            # the tombstones the book's readers still need (shared.guard)
            await self._run(shared.guard, *self._company, write=True)

    async def _poll_module(self, module: str, ctx: mapping.Context, owners: dict[str, int],
                           folders: dict[int, str],
                           chunks: list[list[tuple[str, int]]]) -> None:
        name = f"poll:{module}"
        st = await self._run(mirror.get_state, name)
        now = self.reactor.seconds()
        if st is None:
            start = self.crm_now() - 60
            st = {"mt": self._crm_time(ctx, start), "scan": now, "seen": now, "counts": {}}
        # 1. how many records the CRM holds for the loaded users (before the query of
        # modified records: see the module docstring)
        counts = [await self._crm_count(module, [c for c, _u in chunk]) for chunk in chunks]
        company = self._company if module == "Contacts" else None
        company_count = await self._crm_count(module, None) if company is not None else 0
        # 2. what was modified since the cursor; the newest second is read again until
        # it has settled (a record written later in that same second would be missed)
        newest = st["mt"]
        op = ">=" if now - st.get("seen", 0) < self.settle else ">"
        offset = 0
        while True:
            rows = await self.client.query(
                f"SELECT * FROM {module} WHERE modifiedtime {op} '{st['mt']}'"
                f" ORDER BY modifiedtime LIMIT {offset},100;")
            for r in rows:
                newest = max(newest, str(r.get("modifiedtime") or ""))
            batch = mirror.Incoming(module, records=rows, path="query")
            self._publish(await self._run(mirror.apply_incoming, batch, owners, folders, ctx,
                                          frozenset(self._creating), company, write=True))
            if len(rows) < 100:
                break
            offset += QUERY_PAGE_STEP
        # 3. a count that differs from the mirror's: find what (deletions, records that
        # reappeared); every full_scan seconds whatever the counts say
        full = now - st.get("scan", now) >= self.full_scan
        settled: dict[str, list[int]] = dict(st.get("counts") or {})
        fresh: dict[str, list[int]] = {}
        for chunk, crm_count in zip(chunks, counts, strict=True):
            key = f"{zlib.crc32(','.join(c for c, _u in chunk).encode()):08x}"
            user_ids = [u for _c, u in chunk]
            ours = await self._run(mirror.live_count, module, user_ids)
            pair = [crm_count, ours]
            if full or (crm_count != ours and settled.get(key) != pair):
                if full:
                    found = await self._scan(module, ctx, owners, folders, chunk)
                else:
                    found = await self._narrow(module, ctx, owners, folders, chunk)
                pair = [found, await self._run(mirror.live_count, module, user_ids)]
                if pair[0] != pair[1]:
                    log.info("CRM {module}: {crm} records of {n} users, {ours} in the mirror "
                             "after a scan", module=module, crm=pair[0], n=len(chunk),
                             ours=pair[1])
            fresh[key] = pair
        if company is not None:
            # the company address book holds every contact: one count of them all
            ours = await self._run(shared.live_count)
            pair = [company_count, ours]
            if full or (company_count != ours and settled.get("company") != pair):
                pair = [await self._scan_company(company, ctx, full, company_count),
                        await self._run(shared.live_count)]
            fresh["company"] = pair
        st = {"mt": newest, "scan": now if full else st.get("scan", now),
              "seen": now if newest > st["mt"] else st.get("seen", now), "counts": fresh}
        await self._run(mirror.put_state, name, st, write=True)

    async def _crm_count(self, module: str, crm_users: list[str] | None) -> int:
        """The CRM's count of these users' records (None: of every record)."""
        where = f" WHERE {_owner_clause(crm_users)}" if crm_users is not None else ""
        rows = await self.client.query(f"SELECT count(*) FROM {module}{where};")
        try:
            return int(rows[0]["count"])
        except (IndexError, KeyError, TypeError, ValueError):
            raise CrmUnavailable(f"CRM answered a count with {str(rows)[:80]!r}") from None

    async def _narrow(self, module: str, ctx: mapping.Context, owners: dict[str, int],
                      folders: dict[int, str], chunk: list[tuple[str, int]]) -> int:
        """Find which users' counts differ by halving the group (a count request per
        half) and scan only theirs: a deletion costs about log2(users) counts and
        the id pages of one user's records, not of every user's.  Returns the CRM's
        count of the group's records as found."""
        if len(chunk) == 1:
            return await self._scan(module, ctx, owners, folders, chunk)
        half = len(chunk) // 2
        total = 0
        for part in (chunk[:half], chunk[half:]):
            n = await self._crm_count(module, [c for c, _u in part])
            ours = await self._run(mirror.live_count, module, [u for _c, u in part])
            total += n if n == ours else await self._narrow(module, ctx, owners, folders,
                                                            part)
        return total

    async def _scan(self, module: str, ctx: mapping.Context, owners: dict[str, int],
                    folders: dict[int, str], chunk: list[tuple[str, int]]) -> int:
        """Compare the CRM's ids of these users' records with the mirror's: what the
        mirror has and the CRM lacks was deleted (or is no longer readable); what the
        CRM has and the mirror lacks is read and added.  Returns the CRM's count."""
        self.scans += 1
        seen: set[str] = set()
        async for page in self.client.query_pages(
                module, _owner_clause([c for c, _u in chunk]), columns="id"):
            seen.update(str(r["id"]) for r in page)
        ours = await self._run(mirror.live_crm_ids, module, [u for _c, u in chunk])
        gone = sorted(set(ours) - seen)
        # (the company address book learns these deletions too: its own count then
        # agrees, no scan of every contact follows)
        company = self._company if module == "Contacts" else None
        if gone:
            batch = mirror.Incoming(module, deleted=gone)
            self._publish(await self._run(mirror.apply_incoming, batch, owners, folders, ctx,
                                          frozenset(), company, write=True))
        missing = sorted(seen - set(ours) - set(self._creating),
                         key=lambda i: int(i.split("x")[-1]))
        for i in range(0, len(missing), 100):
            part = missing[i:i + 100]
            rows = await self.client.query(
                f"SELECT * FROM {module} WHERE id IN ("
                + ",".join(f"'{x}'" for x in part) + ");")
            batch = mirror.Incoming(module, records=rows, path="query")
            self._publish(await self._run(mirror.apply_incoming, batch, owners, folders, ctx,
                                          frozenset(self._creating), company, write=True))
        return len(seen)

    async def _scan_company(self, company: tuple[int, str], ctx: mapping.Context,
                            full: bool, crm_count: int) -> int:
        """The company address book's count differs from the CRM's (``crm_count``):
        find where by halving the id range (a count request per half, against the
        book's ids in it) down to ranges of one id page, and compare their ids;
        ``full``: compare every id.  A deletion among N contacts costs about
        log2(N / 100) pairs of counts and one id page.  Returns the CRM's count."""
        ours = await self._run(shared.live_ids)
        prefix = await self.client.id_prefix("Contacts")
        nums = sorted(int(i.rpartition("x")[2]) for i in ours)
        return await self._company_range(company, ctx, prefix, ours, nums, 0, None,
                                          None if full else crm_count, full)

    async def _company_range(self, company: tuple[int, str], ctx: mapping.Context,
                             prefix: str, ours: set[str], nums: list[int], lo: int,
                             hi: int | None, known: int | None, full: bool) -> int:
        """The CRM's count of contacts with ids in (lo, hi] (None: no bound), made
        to agree with the book's (``nums``: its ids in the range)."""
        cond = f"id > '{prefix}x{lo}'" + (f" AND id <= '{prefix}x{hi}'" if hi is not None
                                           else "")
        if not full and len(nums) > PAGE:
            n = known if known is not None else await self._crm_count_where(cond)
            if n == len(nums):
                return n
            half = len(nums) // 2
            mid = nums[half - 1]
            return (await self._company_range(company, ctx, prefix, ours, nums[:half], lo,
                                              mid, None, full)
                    + await self._company_range(company, ctx, prefix, ours, nums[half:],
                                                mid, hi, None, full))
        return await self._scan_company_ids(company, ctx, cond,
                                            {f"{prefix}x{n}" for n in nums} & ours)

    async def _crm_count_where(self, cond: str) -> int:
        rows = await self.client.query(f"SELECT count(*) FROM Contacts WHERE {cond};")
        try:
            return int(rows[0]["count"])
        except (IndexError, KeyError, TypeError, ValueError):
            raise CrmUnavailable(f"CRM answered a count with {str(rows)[:80]!r}") from None

    async def _scan_company_ids(self, company: tuple[int, str], ctx: mapping.Context,
                                cond: str, ours: set[str]) -> int:
        """Compare the CRM's contact ids matching ``cond`` with the book's (``ours``):
        deletions leave it, what it lacks is read and added.  Returns the CRM's
        count."""
        self.scans += 1
        seen: set[str] = set()
        async for page in self.client.query_pages("Contacts", cond, columns="id"):
            seen.update(str(r["id"]) for r in page)
        gone = sorted(ours - seen)
        if gone:
            changed: bool = await self._run(shared.apply, company[0], company[1], [], gone,
                                            ctx, write=True)
            if changed:
                self._publish([company])
        missing = sorted(seen - ours, key=lambda i: int(i.split("x")[-1]))
        for i in range(0, len(missing), 100):
            part = missing[i:i + 100]
            rows = await self.client.query(
                "SELECT * FROM Contacts WHERE id IN (" + ",".join(f"'{x}'" for x in part)
                + ");")
            if await self._run(shared.apply, company[0], company[1], rows, [], ctx,
                               write=True):
                self._publish([company])
        return len(seen)

    # -- the write journal ------------------------------------------------------------------
    async def reconcile(self, user_id: int | None = None, device_id: str | None = None
                        ) -> list[mirror.JournalEntry]:
        """Resolve the journal rows (of one device, when given) that no write is
        waiting for: each is looked up in the CRM and what it made recorded.  A row of
        another process younger than the CRM timeout (plus ``JOURNAL_GRACE``) may
        still be in flight there (PostgreSQL, several processes): it is left, and
        returned."""
        entries = await self._run(mirror.journal, user_id, device_id)
        if not entries:
            return []
        now = self.reactor.seconds()
        shared = self.sql.engine.name == "postgres"
        young: list[mirror.JournalEntry] = []
        used: set[str] = set()
        for e in entries:
            if e.jid in self._inflight:
                continue
            if shared and e.node != self.node and \
                    now - e.created < self.client.timeout + JOURNAL_GRACE:
                young.append(e)
                continue
            await self._resolve(e, used)
        return young

    async def _resolve(self, e: mirror.JournalEntry, used: set[str]) -> None:
        ctx = await self.context()
        keys = JOURNAL_KEYS.get(e.module, ())
        found: dict[str, Any] | None = None
        async for page in self.client.query_pages(
                e.module, f"assigned_user_id = '{e.owner}' AND createdtime >= '{e.since}'"):
            for rec in page:
                if str(rec.get("id")) in used:
                    continue
                if all(_same_text(rec.get(k), e.element.get(k)) for k in keys
                       if k in e.element):
                    found = rec
                    break
            if found is not None:
                break
        snapshot = mapping.view(e.module, found, "query", ctx) if found is not None else None
        item = await self._run(mirror.resolve_journal, e, found, snapshot,
                               self.reactor.seconds(), write=True)
        if found is not None:
            used.add(str(found.get("id")))
            log.info("journal: the Add {client} of device {device} had made CRM record {id} "
                     "(not recorded then); now item {item}", client=e.client_id,
                     device=e.device_id, id=found.get("id"), item=item)
            if item is not None:
                self._publish([(e.user_id, e.folder_id)])
        else:
            log.info("journal: the Add {client} of device {device} made no CRM record",
                     client=e.client_id, device=e.device_id)


class PollerLock:
    """Which process polls the CRM: the one holding a session-level PostgreSQL
    advisory lock (``pg_try_advisory_lock``) on a connection of its own, kept while
    it polls.  The others try again each poll interval; a lost connection (the
    database restarted, the process died) frees the lock for one of them."""

    def __init__(self, reactor: Any, sql: Any, crm_url: str) -> None:
        self.reactor = reactor
        self.dsn = str(getattr(sql.engine, "url", ""))
        self.key = (POLLER_LOCK_CLASS, zlib.crc32(crm_url.encode()) - 2 ** 31)
        self.conn: Any = None
        self.held = False
        self.changes = 0                    # times this process became the poller

    async def acquire(self) -> bool:
        """Is this process the poller (taking the lock if free)?"""
        from backends.sql.pgnotify import PgConnection

        if self.conn is None or self.conn.state != "ready":
            self.held = False
            self.conn = PgConnection(self.reactor, self._conninfo(), lambda *_: None,
                                     self._lost)
            try:
                await self.conn.connect(10.0)
            except Exception as e:  # noqa: BLE001 - the database is down: not the poller
                log.warn("CRM poller lock: cannot connect ({err})", err=str(e))  # noqa: G010
                self.conn = None
                return False
        try:
            if self.held:
                await self.conn.execute(b"SELECT 1", timeout=10.0)
                return self.conn.state == "ready"
            rows = await self.conn.execute(b"SELECT pg_try_advisory_lock($1, $2)",
                                           [str(k).encode() for k in self.key], timeout=10.0)
        except Exception as e:  # noqa: BLE001
            log.warn("CRM poller lock: {err}", err=str(e))  # noqa: G010
            self.release()
            return False
        self.held = bool(rows) and rows[0][0] == "t"
        if self.held:
            self.changes += 1
            log.info("this process polls the CRM now")
        return self.held

    def _conninfo(self) -> str:
        from psycopg.conninfo import make_conninfo

        # the process id names the connection in pg_stat_activity: who polls
        return make_conninfo(self.dsn, application_name=f"easync-crm-poller {os.getpid()}",
                             keepalives=1, keepalives_idle=30, keepalives_interval=10,
                             keepalives_count=3)

    def _lost(self, reason: Failure) -> None:
        if self.held:
            log.warn("CRM poller lock lost ({err})", err=str(reason.value))  # noqa: G010
        self.held = False
        self.conn = None

    def release(self) -> None:
        """Close the connection (and so free the lock)."""
        conn, self.conn = self.conn, None
        self.held = False
        if conn is not None:
            conn.close()
