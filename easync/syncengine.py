"""The sync engine: per (device, collection) SyncKey state over a store's change feed.

It takes and gives plain data (``easync.synctypes``): a ``CollectionRequest`` whose
client commands carry canonical item dicts, a ``CollectionResult`` whose entries
carry the items; the WBXML on either side is ``easync.commands.sync``'s.  It keeps
no cache of its own (what Sync caches is ``EasServer.caches``).

State of one collection for one device (a JSON blob saved by the state store)::

    epoch    random prefix of the keys of this state's life (a reset starts a new one)
    key      n: the device holds SyncKey "{epoch}n"
    cursor   every change with modseq <= cursor has been delivered (or was the device's own)
    own      {server id: modseq} of the device's own writes after the cursor: not echoed
    base     the folder's purged mark when this state began (absent: 0): the purges
             before it removed nothing the device held (``expired``)
    filter   FilterType, supported (Supported property names or None), cls
    win      the filter window the device's holdings reflect ([start, end] for
             ``changes_since``, or None): besides its own writes, the device holds
             the live items with modseq <= cursor inside it
    rw       a move of that window still owed (FilterType changed, or a calendar
             window moved by the clock a day or more): Adds for what enters,
             SoftDeletes for what leaves, among modseq in (pos, upto]; sent first
    outside  server ids the device holds though they are outside ``win``: its own
             writes there (an event it made in the past), and re-added events it
             holds again; a wider window does not send them again
    prev     what answered key n-1 (the responses, the delivered ids, MoreAvailable,
             ``fp``: a fingerprint of each client command of that request): a device
             that resends key n-1 gets the same answer again, and what its resend
             carries beyond the original is applied (see ``_resend``)

Costs: a Sync with nothing new reads the folder's modseq and stops (O(1));
otherwise it reads O(window) feed entries.  A window move walks the folder once,
in the database (an indexed query returning O(window) rows per Sync).  Client writes and the new state
are committed in one transaction, so a crash mid-request leaves key n valid.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from easync.errors import StateConflict, StateExpired
from easync.interfaces import ChangeHint, IDeletedStore
from easync.items import convert, index_fields
from easync.model import Change, Folder, Item, Op, OpResult, StateWrite, User
from easync.storerules import feed_cursor
from easync.synctypes import (
    AddCommand,
    ChangeCommand,
    ClientCommand,
    ClientResponse,
    CollectionRequest,
    CollectionResult,
    DeleteCommand,
    FetchCommand,
    ServerChange,
)

if TYPE_CHECKING:
    from easync.handler import EasServer

log = Logger()

ITEM_CLASSES = ("Contacts", "Calendar", "Tasks")


def state_name(collection_id: str) -> str:
    return f"sync:{collection_id}"


def expired(st: dict[str, Any], folder: Folder) -> bool:
    """Was a tombstone this state still needed purged (``IRetentionStore.purge_older``:
    older than --tombstone-max-age)?  Then the device may hold an item deleted
    elsewhere that the feed can no longer tell it about: its SyncKey is invalid
    (MS-ASCMD 2.2.3.166.4 SyncKey, 2.2.3.177.17 Status 3) and it resyncs from 0."""
    floor = feed_cursor(state_name(folder.server_id), st)
    return floor is not None and floor < folder.purged


def make_key(epoch: str, n: int) -> str:
    return f"{{{epoch}}}{n}"


def new_epoch() -> str:
    return os.urandom(4).hex()


def quirks_for(device_type: str, user_agent: str, device: dict[str, Any] | None,
               version: str = "", settings: Any = None) -> convert.DeviceQuirks:
    info = (device or {}).get("info") or {}
    extra: dict[str, Any] = {}
    if settings is not None:
        extra = {"max_picture_bytes": settings.max_picture_bytes,
                 "fileas_order": settings.fileas_order}
    return convert.DeviceQuirks(device_type=device_type, user_agent=user_agent,
                              os=str(info.get("OS", "")), protocol_version=version,
                              device_id=str((device or {}).get("device_id") or ""), **extra)


#: holders of a shared folder published to per reactor turn (about 2 ms of work each
#: 1,000 on the hub's side; the woken Pings answer in ``Holds`` slices anyway)
PUBLISH_SLICE = 1000

#: how many times a Sync of one collection reads its state again when another request
#: of the device replaced it meanwhile (``StateConflict``); then Status 3
CONFLICT_RETRIES = 4


async def publish_write(server: EasServer, user: User, folder: Folder,
                        hint: ChangeHint | None) -> None:
    """Tell the change hub that ``user`` wrote into ``folder``.  A shared folder
    (someone else's, or one of the user's that others hold) wakes every user who
    holds it — the owner included — through the hub's per-user channel; for them the
    hint names no device (a device id is only unique within one user)."""
    if folder.owner or folder.shared_out:
        await publish_to_holders(server, user, folder.server_id, hint)
    else:
        server.notifier.publish(user.id, folder.server_id, hint)


async def publish_to_holders(server: EasServer, user: User, folder_id: str,
                             hint: ChangeHint | None = None) -> None:
    """``publish_write`` for a folder whose sharing the caller does not know (one look
    at who holds it, when the store shares folders: MoveItems, MeetingResponse)."""
    server.notifier.publish(user.id, folder_id, hint)
    audience = getattr(server.items, "folder_audience", None)
    if audience is None:
        return
    other = None if hint is None else ChangeHint(hint.modseq)
    holders = [uid for uid in await audience(folder_id) if uid != user.id]
    for uid in holders[:PUBLISH_SLICE]:
        server.notifier.publish(uid, folder_id, other)
    if len(holders) > PUBLISH_SLICE:
        # a folder shared with everyone: tens of thousands of holders, a slice per
        # reactor turn; the writer's own answer does not wait for them all
        # (bench/bench_shared_fanout.py)
        d = Deferred.fromCoroutine(_publish_rest(server, holders, folder_id, other))
        d.addErrback(lambda f: log.failure("publishing to a shared folder's holders", f))


async def _publish_rest(server: EasServer, holders: list[int], folder_id: str,
                        hint: ChangeHint | None) -> None:
    for start in range(PUBLISH_SLICE, len(holders), PUBLISH_SLICE):
        await deferLater(server.clock, 0, lambda: None)
        for uid in holders[start:start + PUBLISH_SLICE]:
            server.notifier.publish(uid, folder_id, hint)


class Refusals:
    """The client commands of one Sync collection the server refused, logged in one
    line once they are all seen (a line each: 10,000 refused writes were 10,000 log
    events in one reactor turn, over a second).  The line counts them and shows the
    first ``SHOWN``."""

    SHOWN = 3

    def __init__(self, collection_id: str) -> None:
        self.collection_id = collection_id
        self.count = 0
        self.first: list[str] = []

    def add(self, kind: str, ref: str, why: str) -> None:
        self.count += 1
        if len(self.first) < self.SHOWN:
            self.first.append(f"{kind} {ref} refused: {why}")

    def log(self) -> None:
        if not self.count:
            return
        more = f"; and {self.count - len(self.first)} more" \
            if self.count > len(self.first) else ""
        log.info("Sync of folder {cid}: {n} command(s) refused: {first}{more}",
                 cid=self.collection_id, n=self.count, first="; ".join(self.first),
                 more=more)


class SyncEngine:
    """Sync, GetItemEstimate and Ping over one server's stores: typed requests in
    (``easync.synctypes``), typed results out."""

    def __init__(self, server: EasServer,
                 preloaded: dict[str, dict[str, Any] | None] | None = None) -> None:
        self.server = server
        self.items = server.items
        self.state = server.state
        #: states already read (by name, for this request's device): ``get_state``
        #: answers from here; emptied by the caller when they may be stale
        self.preloaded: dict[str, dict[str, Any] | None] = preloaded or {}

    async def get_state(self, user: User, device_id: str, name: str, keep: bool = False
                        ) -> dict[str, Any] | None:
        """A state of the device: from ``preloaded`` when it is there (taken out of it,
        as the caller may change it, unless ``keep``), else read."""
        if name in self.preloaded:
            return self.preloaded[name] if keep else self.preloaded.pop(name)
        return await self.state.get_state(user, device_id, name)

    # -- the filter window ---------------------------------------------------------
    @staticmethod
    def rewindow(st: dict[str, Any], cls: str, filter_type: int | None, now: float) -> None:
        """Apply a FilterType asked for (None: keep the one in effect) and the clock to
        the state: when the window the device's holdings reflect (``win``) is no longer
        the one due, start moving it (``rw``, drained by ``gather``).

        Invariant: besides the device's own writes, the device holds the live items
        with modseq <= cursor that are inside ``win``.  A move from window A to B sends
        Add for the items with modseq <= cursor inside B only and SoftDelete for those
        inside A only (MS-ASCMD 2.2.3.68.2, 2.2.3.172); the feed after the cursor is
        read with B.  The clock moves a calendar window in steps of a day, so an empty
        Sync stays O(1) in between.  One move at a time: a FilterType changed during a
        move is applied when it is done."""
        if filter_type is not None and filter_type != st.get("filter"):
            st["filter"] = filter_type
        if "win" not in st:            # a state from before windows were kept
            st["win"] = _jw(convert.filter_window(int(st["filter"]), cls, now)
                            if st.get("filter") is not None else None)
        if st.get("rw"):
            return
        held = _tw(st["win"])
        target = (convert.filter_window(st["filter"], cls, now)
                  if st.get("filter") is not None else None)
        if target == held or _drift(held, target):
            return
        if st["cursor"] > 0:
            st["rw"] = {"from": _jw(held), "to": _jw(target), "upto": st["cursor"],
                        "pos": 0}
        st["win"] = _jw(target)

    async def gather(self, user: User, folder: Folder, st: dict[str, Any], limit: int,
                     now: float) -> tuple[list[Change], bool, int]:
        """What to send, at most ``limit``: first what a window move still owes (its
        position advances in ``st``), then the feed.  Returns (changes, more, new
        cursor if all of them are delivered)."""
        out: list[Change] = []
        if st.get("owed"):
            out = await self._owed(user, folder, st, limit)
        while st.get("rw") and len(out) < limit:
            rw = st["rw"]
            batch = await self.items.window_changes(user, folder.server_id, rw["pos"],
                                                    rw["upto"], _tw(rw["from"]),
                                                    _tw(rw["to"]), limit - len(out))
            outside = set(st.get("outside") or ())
            for ch in batch.changes:
                if ch.server_id in outside:
                    # the device has held it all along: now the window covers it
                    outside.discard(ch.server_id)
                    st["outside"] = [s for s in st["outside"] if s != ch.server_id]
                    if ch.enters:
                        continue
                out.append(ch)
            if batch.more:
                st["rw"] = dict(rw, pos=batch.high)
                return out, True, st["cursor"]
            del st["rw"]
            self.rewindow(st, folder.cls, None, now)
        if len(out) >= limit:
            return out, bool(st.get("rw") or st.get("owed")) or \
                folder.modseq > st["cursor"], st["cursor"]
        feed, more, cursor = await self.collect(user, folder, st, limit - len(out), now)
        if out and feed:
            # an owed item the feed brings anyway goes out once, as the feed has it
            fed = {ch.server_id for ch in feed}
            out = [ch for ch in out if ch.server_id not in fed]
        return out + feed, more, cursor

    async def _owed(self, user: User, folder: Folder, st: dict[str, Any],
                    limit: int) -> list[Change]:
        """The server versions owed to the device for writes a read-only folder refused
        while it asked for no changes (``_refuse``): a Change for an item it changed,
        an Add for one it deleted (gone since: its tombstone is in the feed).  At most
        ``limit`` (the WindowSize, MS-ASCMD 2.2.3.199.2) taken out of the state; the
        rest stay owed (the new state keeps what is not delivered)."""
        every = st.pop("owed")
        owed, rest = every[:max(limit, 0)], every[max(limit, 0):]
        if rest:
            st["owed"] = rest
        kinds = {sid: kind for kind, sid in owed}
        out: list[Change] = []
        for it in await self.items.get_items(user, list(kinds)):
            if it.folder_id == folder.server_id:
                out.append(Change(it.server_id, it.modseq, False, 0, it,
                                  enters=kinds[it.server_id] == "A"))
        return out

    # -- reading the feed ----------------------------------------------------------
    async def collect(self, user: User, folder: Folder, st: dict[str, Any], limit: int,
                      now: float) -> tuple[list[Change], bool, int]:
        """Changes due to the device, after its cursor, at most ``limit``.

        Returns (changes, more, new cursor if all of them are delivered).
        """
        cursor = st["cursor"]
        own = st.get("own") or {}
        if "win" in st:
            window = _tw(st["win"])
        elif st.get("filter") is not None:
            window = convert.filter_window(int(st["filter"]), folder.cls, now)
        else:
            window = None
        out: list[Change] = []
        c = cursor
        more = False
        if folder.modseq <= cursor:
            return out, False, cursor
        while True:
            want = limit + 1 - len(out)
            # with a window, what the device may hold but is outside it comes back as
            # soft entries (SoftDelete): an event moved to the past, a task completed
            batch = await self.items.changes_since(user, folder.server_id, c,
                                                   max(want, 16), window,
                                                   cursor if window else None)
            outside = set(st.get("outside") or ())
            for ch in batch.changes:
                if ch.server_id in outside:
                    if ch.soft:         # held outside the window: it stays, updated
                        ch = Change(ch.server_id, ch.modseq, False, ch.created_modseq)
                    elif ch.deleted:
                        outside.discard(ch.server_id)
                        st["outside"] = [s for s in st["outside"] if s != ch.server_id]
                mine = own.get(ch.server_id)
                if mine == ch.modseq or (ch.deleted and mine is not None and mine < 0):
                    continue            # the device's own write: never echoed
                if ch.deleted and ch.created_modseq > cursor and ch.server_id not in own:
                    continue            # came and went while the device was away
                out.append(ch)
            c = batch.high
            if len(out) > limit:
                more = True
                break
            if not batch.more:
                break
        if more:
            out = out[:limit]
            return out, True, out[-1].modseq
        return out, False, max(c, cursor)

    # -- one collection ------------------------------------------------------------
    async def sync_collection(self, user: User, device_id: str, version: str,
                              quirks: convert.DeviceQuirks, folder: Folder | None,
                              creq: CollectionRequest,
                              remaining: int) -> CollectionResult:
        cid = creq.collection_id
        if folder is None:
            return self._status(creq, "12")
        name = state_name(cid)
        now = self.server.clock.seconds()
        if creq.sync_key == "0":
            epoch = new_epoch()
            fresh: dict[str, Any] = {
                "epoch": epoch, "key": 1, "cursor": 0, "own": {},
                "cls": folder.cls, "filter": creq.filter_type, "supported": creq.supported,
            }
            if folder.purged:
                # what was purged before this start the device never held (feed_cursor)
                fresh["base"] = folder.purged
            self.rewindow(fresh, folder.cls, creq.filter_type, now)
            await self.state.save_state(user, StateWrite(device_id, name, fresh))
            return CollectionResult(cid, make_key(epoch, 1))
        for _attempt in range(CONFLICT_RETRIES):
            try:
                return await self._existing(user, device_id, version, quirks, folder, creq,
                                            remaining)
            except StateConflict:
                # another request of the device (a resend arriving with this one)
                # replaced the state this one read: read it again — this request is
                # then the resend of a key answered, nothing applied twice
                log.info("Sync {cid}: state replaced meanwhile by another request of"
                         " the device; read again", cid=cid)
        return self._status(creq, "3", key="0")

    async def _existing(self, user: User, device_id: str, version: str,
                        quirks: convert.DeviceQuirks, folder: Folder,
                        creq: CollectionRequest, remaining: int) -> CollectionResult:
        """``sync_collection`` with a SyncKey other than 0 (``StateConflict`` when
        another request of the device replaced the state meanwhile)."""
        cid = creq.collection_id
        name = state_name(cid)
        now = self.server.clock.seconds()
        st = await self.get_state(user, device_id, name)
        if st is None:
            return self._status(creq, "3", key="0")
        if expired(st, folder):
            log.info("Sync {cid}: the state's tombstones were purged (cursor {c} below"
                     " {p}): Status 3, a full resync", cid=cid, c=st.get("cursor"),
                     p=folder.purged)
            return self._status(creq, "3", key="0")
        current = make_key(st["epoch"], st["key"])
        prev = st.get("prev")
        if creq.sync_key != current:
            if prev and creq.sync_key == make_key(st["epoch"], prev["key"]):
                try:
                    return await self._resend(user, device_id, version, quirks, folder, st,
                                              creq)
                except StateExpired as e:
                    log.info("Sync {cid}: {why}: Status 3, a full resync", cid=cid,
                             why=str(e))
                    return self._status(creq, "3", key="0")
            return self._status(creq, "3", key="0")
        saved = copy.deepcopy(st)
        # Options may change between requests (FilterType, BodyPreference); the clock
        # moves a filter window too.
        self.rewindow(st, folder.cls, creq.filter_type, now)
        try:
            return await self._sync(user, device_id, version, quirks, folder, st, creq,
                                    remaining, saved)
        except StateExpired as e:
            # a tombstone it needed was purged while this request read the feed
            log.info("Sync {cid}: {why}: Status 3, a full resync", cid=cid, why=str(e))
            return self._status(creq, "3", key="0")

    def _status(self, creq: CollectionRequest, status: str, key: str | None = None
                ) -> CollectionResult:
        return CollectionResult(creq.collection_id, key or creq.sync_key, status)

    async def _sync(self, user: User, device_id: str, version: str, quirks: convert.DeviceQuirks,
                    folder: Folder, st: dict[str, Any], creq: CollectionRequest,
                    remaining: int, saved: dict[str, Any]) -> CollectionResult:
        cid = folder.server_id
        cls = folder.cls
        cursor = st["cursor"]
        own: dict[str, int] = dict(st.get("own") or {})
        now = self.server.clock.seconds()
        window = min(creq.window, remaining)

        delivered: list[Change] = []
        more = False
        new_cursor = cursor
        if creq.get_changes:
            if window <= 0:
                # the request's overall WindowSize is used up by earlier collections
                more = folder.modseq > cursor or bool(st.get("rw") or st.get("owed"))
            else:
                delivered, more, new_cursor = await self.gather(user, folder, st, window,
                                                                now)

        responses: list[ClientResponse] = []
        ops: list[Op] = []
        fills: list[tuple[int, int]] = []   # (response, op) whose ServerId the op makes
        adopted: list[Item] = []            # existing events the device re-added
        if creq.commands:
            await self._commands(user, folder, st, creq, version, quirks, own, delivered,
                                 responses, ops, fills, adopted)
        if adopted:
            st["outside"] = self._outside(st, cls, [], [], adopted)

        if not ops and not responses and not delivered and not more:
            # Nothing new, nothing asked: the same key again.
            if creq.get_changes and (folder.modseq > cursor or saved.get("rw")) and \
                    await self._gone(user, folder):
                # the folder said it had changes and none were found: it was deleted
                # (with what it held) since the request looked it up
                return self._status(creq, "12")
            st2 = dict(st)
            st2["cursor"] = new_cursor
            st2["own"] = {k: v for k, v in own.items() if abs(v) > new_cursor}
            if st2 != saved:
                # Only skipped entries (own echoes, filtered items) were passed, or the
                # window moved with nothing to send: save that without a new key so the
                # next empty check stays O(1).
                await self.state.save_state(user, StateWrite(
                    device_id, state_name(cid), st2,
                    feed_from=feed_cursor(state_name(cid), saved),
                    replaces=(saved["epoch"], saved["key"])))
            return CollectionResult(cid, make_key(st["epoch"], st["key"]),
                                    changed=bool(creq.commands))

        new_n = st["key"] + 1
        delivered_ids = [[_kind(ch, cursor, own), ch.server_id] for ch in delivered]

        built: dict[str, list[ClientResponse]] = {}
        # what a resend of this key will be compared with (computed before the write
        # transaction, not inside it)
        fps = fingerprints(creq.commands)

        def build(results: list[OpResult]) -> dict[str, Any]:
            own2 = {k: v for k, v in own.items() if abs(v) > new_cursor}
            for r in results:
                if r.ok and r.server_id:
                    own2[r.server_id] = r.modseq
            rec = _settle(responses, fills, ops, results)
            built["rec"] = rec
            state = {
                "epoch": st["epoch"], "key": new_n, "cursor": new_cursor, "own": own2,
                "cls": cls, "filter": st.get("filter"), "win": st.get("win"),
                "supported": st.get("supported"),
                "prev": {"key": st["key"], "responses": [r.to_json() for r in rec],
                         "delivered": delivered_ids, "more": more, "fp": fps},
            }
            if st.get("rw"):
                state["rw"] = st["rw"]
            owed = list(st.get("owed") or ())
            # the store refused a write as read-only (shared read-only since the
            # request looked the folder up): its version is owed the same way
            owed += [["A" if op.kind == "delete" else "C", op.server_id]
                     for op, r in zip(ops, results, strict=False)
                     if r.error == "readonly" and op.kind != "add" and op.server_id]
            if owed:
                # server versions still to send (a refused write in a read-only folder)
                state["owed"] = owed
            if st.get("base"):
                state["base"] = st["base"]
            outside = self._outside(st, cls, ops, results, [])
            if outside:
                state["outside"] = outside
            return state

        if not await self._commit(user, device_id, folder, ops, build, responses,
                                  feed_cursor(state_name(cid), saved),
                                  (saved["epoch"], saved["key"])):
            return self._status(creq, "12")
        return await self._result(user, folder, st["epoch"], new_n, built["rec"],
                                  delivered_ids, delivered, more)

    async def _commit(self, user: User, device_id: str, folder: Folder, ops: list[Op],
                      build: Callable[[list[OpResult]], dict[str, Any]],
                      responses: list[ClientResponse], feed_from: int | None,
                      replaces: tuple[str, int] | None = None) -> bool:
        """Write the device's ``ops`` and the state ``build`` makes in one transaction
        (without ops: the state alone).  False when the folder was deleted since the
        request looked it up (issue #10 point 11): the store's write transaction
        refuses it (KeyError "folder"), nothing is written and the device's key stays
        as it was.  ``feed_from``: the replaced state's feed cursor; ``StateExpired``
        (nothing written) when a tombstone it needed was purged meanwhile.
        ``replaces``: the (epoch, key) of the state replaced; ``StateConflict``
        (nothing written) when another request of the device replaced it meanwhile."""
        cid = folder.server_id
        if not ops:
            # Nothing for the store to check.  Commands that failed (an item not
            # found, as in a deleted folder) or Fetches: is the folder still there?
            if any(r.status != "1" or r.kind == "Fetch" for r in responses) and \
                    await self._gone(user, folder):
                return False
            await self.state.save_state(user, StateWrite(device_id, state_name(cid),
                                                         build([]), feed_from=feed_from,
                                                         replaces=replaces))
            return True
        for op in ops:
            if op.kind == "delete":
                # a device's Sync Delete (MS-ASCMD 2.2.3.42.2): the store keeps the
                # item for --deleted-keep (easync.deleted), in the delete's transaction
                op.keep = device_id
        try:
            done = await self.items.apply(user, cid, ops,
                                          StateWrite(device_id, state_name(cid), {},
                                                     build=build, feed_from=feed_from,
                                                     replaces=replaces))
        except KeyError as e:
            if e.args != ("folder",):
                raise
            log.info("Sync of folder {cid}: deleted meanwhile", cid=cid)
            return False
        await publish_write(self.server, user, folder, ChangeHint.of(done, device_id))
        deleted = sum(1 for op, r in zip(ops, done, strict=False)
                      if op.kind == "delete" and r.ok)
        await self._mass_delete_check(user, device_id, cid, deleted, folder.owner)
        return True

    async def _mass_delete_check(self, user: User, device_id: str, cid: str,
                                 deleted: int, owner: str | None = None) -> None:
        """The mass-delete alarm (``easync.deleted.MassDeletes``): the folder's live
        items are counted (an index count) only when the Sync deleted at least
        --mass-delete-min of them."""
        alarm = self.server.mass_deletes
        if alarm is None or not alarm.needs_count(deleted) or \
                not IDeletedStore.providedBy(self.state):
            return
        try:
            left = await self.state.count_live(user, cid)
            await alarm.check(user, device_id, cid, deleted, left, owner)
        except Exception as e:  # noqa: BLE001 - the Sync is committed: never fail it now
            log.warn("mass delete check of folder {cid} failed: {err}",  # noqa: G010
                     cid=cid, err=str(e))

    async def _gone(self, user: User, folder: Folder) -> bool:
        """Was ``folder`` deleted since the request looked it up?  Asked only when the
        store answered as it does for a deleted folder (its changes or items not
        found): one look at the user's folder list."""
        return all(f.server_id != folder.server_id
                   for f in await self.items.list_folders(user))

    @staticmethod
    def _known(ch: Change, cursor: int, own: dict[str, int]) -> bool:
        """Does the device already hold this item (→ Change rather than Add)?"""
        return ch.created_modseq <= cursor or ch.server_id in own

    async def _parse_adds(self, user: User, folder: Folder, creq: CollectionRequest,
                          version: str, quirks: convert.DeviceQuirks
                          ) -> tuple[dict[int, dict[str, Any] | convert.ItemError],
                                     dict[str, Item]]:
        """The Adds' items read ahead (by command index), and the folder's live
        events that carry one of their UIDs (one query for the whole request)."""
        parsed: dict[int, dict[str, Any] | convert.ItemError] = {}
        if folder.cls != "Calendar":
            return parsed, {}
        v16 = _vt(version) >= (16, 0)
        uids: list[str] = []
        for n, cmd in enumerate(creq.commands):
            if not isinstance(cmd, AddCommand) or not cmd.client_id or \
                    (cmd.data is None and cmd.error is None):
                continue
            try:
                data = _add_data("Calendar", cmd, quirks)
            except convert.ItemError as e:
                parsed[n] = e
                continue
            parsed[n] = data
            uid = _device_uid(data, v16)
            if uid:
                uids.append(uid)
        found = await self.items.find_by_uids(user, folder.server_id, uids) if uids else {}
        return parsed, found

    async def _commands(self, user: User, folder: Folder, st: dict[str, Any],
                        creq: CollectionRequest, version: str, quirks: convert.DeviceQuirks,
                        own: dict[str, int], delivered: list[Change],
                        responses: list[ClientResponse], ops: list[Op],
                        fills: list[tuple[int, int]], adopted: list[Item]) -> None:
        cls = folder.cls
        cursor = st["cursor"]
        v16 = _vt(version) >= (16, 0)
        wanted = []
        for cmd in creq.commands:
            if isinstance(cmd, ChangeCommand | DeleteCommand | FetchCommand) and cmd.server_id:
                wanted.append(cmd.server_id)
        existing: dict[str, Item] = {}
        if wanted:
            for it in await self.items.get_items(user, wanted):
                if it.folder_id == folder.server_id:
                    existing[it.server_id] = it
        parsed, by_uid = await self._parse_adds(user, folder, creq, version, quirks)
        added_uids: dict[str, int] = {}            # UID -> op index of this request's Add
        pending = {ch.server_id: ch for ch in delivered}
        current: dict[str, dict[str, Any]] = {}    # data after this request's commands
        deleted_now: set[str] = set()
        refused = Refusals(folder.server_id)
        for n, cmd in enumerate(creq.commands):
            if folder.read_only and isinstance(cmd, AddCommand | ChangeCommand | DeleteCommand):
                self._refuse(cmd, existing, deleted_now, pending, delivered, responses,
                             None if creq.get_changes else st.setdefault("owed", []),
                             refused)
                continue
            if isinstance(cmd, AddCommand):
                client_id = cmd.client_id
                if not client_id:
                    responses.append(ClientResponse("Add", "", status="4"))
                    continue
                if cls not in ITEM_CLASSES or (cmd.data is None and cmd.error is None):
                    responses.append(ClientResponse("Add", client_id, status="6"))
                    continue
                try:
                    pre = parsed.get(n)
                    if isinstance(pre, convert.ItemError):
                        raise pre
                    data = pre if pre is not None else _add_data(cls, cmd, quirks)
                except convert.ItemError as e:
                    refused.add("Add", client_id, str(e))
                    responses.append(ClientResponse("Add", client_id, status="6"))
                    continue
                uid = None
                if cls == "Calendar":
                    # MS-ASCAL 2.2.2.13: the ClientUid (16.x; the UID before) tells that
                    # the event already exists: a phone re-adding its events after a
                    # resync gets the existing ServerId, and nothing is written.
                    key = _device_uid(data, v16)
                    hit = by_uid.get(key) if key else None
                    if hit is not None and hit.server_id not in deleted_now:
                        self._adopt(hit, cursor, own, pending, delivered)
                        adopted.append(hit)
                        responses.append(ClientResponse(
                            "Add", client_id, hit.server_id, "1",
                            (hit.data.get("UID") or key) if v16 else None))
                        continue
                    client_uid = data.pop("ClientUid", None)
                    if v16 or not data.get("UID"):
                        data["UID"] = data.get("UID") if not v16 and data.get("UID") else (
                            client_uid or uuid.uuid4().hex.upper())
                    uid = data["UID"] if v16 else None
                    if key and key in added_uids:
                        # the same event twice in one request: one item
                        fills.append((len(responses), added_uids[key]))
                        responses.append(ClientResponse("Add", client_id, None, "1", uid))
                        continue
                    if key:
                        added_uids[key] = len(ops)
                fills.append((len(responses), len(ops)))
                ops.append(Op(kind="add", data=data, ref=client_id, cls=cls))
                responses.append(ClientResponse("Add", client_id, None, "1", uid))
            elif isinstance(cmd, ChangeCommand | DeleteCommand):
                sid = cmd.server_id
                kind: Literal["Change", "Delete"] = (
                    "Change" if isinstance(cmd, ChangeCommand) else "Delete")
                instance = cmd.instance_id
                old = existing.get(sid)
                if old is None or sid in deleted_now:
                    responses.append(ClientResponse(kind, sid, status="8"))
                    continue
                server_changed = old.modseq > cursor and own.get(sid) != old.modseq
                if sid in current:
                    # an earlier command of this request changed it: build on that
                    old = Item(old.server_id, old.folder_id, old.cls, current[sid], old.modseq)
                    server_changed = False
                if server_changed and creq.conflict != 0:
                    responses.append(ClientResponse(kind, sid, status="7"))
                    continue            # server wins: its version goes out below
                try:
                    if isinstance(cmd, ChangeCommand):
                        if cmd.error is not None:
                            raise convert.ItemError(cmd.error)
                        new = dict(cmd.data or {})
                        if instance and cls == "Calendar":
                            data = convert.apply_instance_change(old.data, instance, new)
                        else:
                            data = convert.merge_change(cls, old.data, new, st.get("supported"),
                                                        quirks)
                        if cls == "Calendar":
                            data.pop("ClientUid", None)
                            if old.data.get("UID"):
                                data["UID"] = old.data["UID"]
                        ops.append(Op(kind="change", server_id=sid, data=data, ref=sid))
                        current[sid] = data
                    elif instance and cls == "Calendar":
                        data = convert.apply_instance_change(old.data, instance, None)
                        ops.append(Op(kind="change", server_id=sid, data=data, ref=sid))
                        current[sid] = data
                    else:
                        ops.append(Op(kind="delete", server_id=sid, ref=sid))
                        deleted_now.add(sid)
                except convert.ItemError as e:
                    refused.add(kind, sid, str(e))
                    responses.append(ClientResponse(kind, sid, status="6"))
                    continue
                if sid in pending:
                    # client wins: its version replaces what we were about to send
                    delivered.remove(pending.pop(sid))
            elif isinstance(cmd, FetchCommand):
                responses.append(ClientResponse("Fetch", cmd.server_id))
        refused.log()

    @staticmethod
    def _refuse(cmd: ClientCommand, existing: dict[str, Item], deleted_now: set[str],
                pending: dict[str, Change], delivered: list[Change],
                responses: list[ClientResponse], owed: list[list[str]] | None,
                refused: Refusals) -> None:
        """A device's write into a read-only folder (a folder shared with it read-only,
        issue #14 point 1): nothing is written, and the device is brought back to the
        server's data.  EAS has no read-only folder, so the answer is the conflict the
        server won (MS-ASCMD 2.2.3.177.17 Status 7; 2.2.3.34: "the object that the
        client sent to the server was discarded") and the server's version goes out in
        this response's Commands: a Change for a changed item, an Add (same ServerId)
        for one the device deleted — or, when the request asked for no changes
        (GetChanges 0, MS-ASCMD 2.2.3.84), in the next Sync that does (``owed``, kept in
        the state).  An Add has no server version: Status 6 (the server cannot store
        the item; not transient, so the device does not retry it)."""
        if isinstance(cmd, AddCommand):
            refused.add("Add", cmd.client_id or "", "the folder is read-only (Status 6)")
            responses.append(ClientResponse("Add", cmd.client_id or "",
                                            status="6" if cmd.client_id else "4"))
            return
        assert isinstance(cmd, ChangeCommand | DeleteCommand)
        kind: Literal["Change", "Delete"] = (
            "Change" if isinstance(cmd, ChangeCommand) else "Delete")
        sid = cmd.server_id
        old = existing.get(sid)
        if old is None or sid in deleted_now:
            responses.append(ClientResponse(kind, sid, status="8"))
            return
        refused.add(kind, sid, "the folder is read-only (Status 7, the server's version"
                    " sent back)")
        responses.append(ClientResponse(kind, sid, status="7"))
        if sid in pending:
            entry = pending.pop(sid)
            if kind == "Delete" and not entry.deleted:
                # what we were about to send: sent as an Add, as the device dropped it
                delivered[delivered.index(entry)] = Change(
                    sid, entry.modseq, False, entry.created_modseq, entry.item,
                    enters=True)
            return
        # the device holds it (modseq <= cursor, or its own write): resend it as it is
        if owed is not None:
            owed.append(["A" if kind == "Delete" else "C", sid])
        else:
            delivered.append(Change(sid, old.modseq, False, 0, old,
                                    enters=(kind == "Delete")))

    @staticmethod
    def _adopt(hit: Item, cursor: int, own: dict[str, int], pending: dict[str, Change],
               delivered: list[Change]) -> None:
        """The device re-added an event the folder holds: from now on it holds that
        item under its ServerId.  So the feed must not offer it again as an Add (after
        a reset its cursor is 0 and it would): its current version counts as the
        device's own write, and it leaves this response's Commands if it was in them.
        A later change of it reaches the device as a Change."""
        if hit.modseq > cursor:
            own[hit.server_id] = hit.modseq
        if hit.server_id in pending:
            delivered.remove(pending.pop(hit.server_id))

    @staticmethod
    def _outside(st: dict[str, Any], cls: str, ops: list[Op], results: list[OpResult],
                 adopted: list[Item]) -> list[str]:
        """``outside`` after the device's writes (and re-adds): what it holds outside
        its window is remembered, what it deleted or brought inside is not."""
        ids = dict.fromkeys(st.get("outside") or [])
        win = _tw(st.get("win"))
        for op, r in zip(ops, results, strict=False):
            sid = r.server_id or op.server_id
            if not r.ok or not sid:
                continue
            if op.kind != "delete" and win is not None and isinstance(op.data, dict) and \
                    not _inside(win, cls, op.data):
                ids[sid] = None
            else:
                ids.pop(sid, None)
        for it in adopted:
            if win is not None and not _inside(win, cls, it.data):
                ids[it.server_id] = None
        return list(ids)[-OUTSIDE_MAX:]

    async def _result(self, user: User, folder: Folder, epoch: str, n: int,
                      responses: list[ClientResponse],
                      delivered_ids: list[list[str]], delivered: list[Change] | None,
                      more: bool) -> CollectionResult:
        """The answer under key ``n``: the responses (a Fetch with its item), and the
        entries delivered with the current version of each item (one read for those
        the feed did not bring: a Fetch, a resend)."""
        need = [sid for kind, sid in delivered_ids if kind not in ("D", "S")]
        if delivered is not None:
            by_id = {ch.server_id: ch.item for ch in delivered if ch.item is not None}
        else:
            by_id = {}
        fetch_ids = [r.ref for r in responses if r.kind == "Fetch"]
        missing = [sid for sid in need + fetch_ids if sid not in by_id]
        if missing:
            for it in await self.items.get_items(user, missing):
                by_id[it.server_id] = it
        answers: list[ClientResponse] = []
        for r in responses:
            if r.kind == "Fetch":
                item = by_id.get(r.ref)
                if item is None or item.folder_id != folder.server_id:
                    r = dataclasses.replace(r, status="8", item=None)
                else:
                    r = dataclasses.replace(r, status="1", item=item)
            answers.append(r)
        changes: list[ServerChange] = []
        for kind, sid in delivered_ids:
            if kind == "D":
                changes.append(ServerChange("Delete", sid))
            elif kind == "S":
                # out of the filter window: the device drops it, the store keeps it
                changes.append(ServerChange("SoftDelete", sid))
            else:
                got = by_id.get(sid)
                if got is None:         # gone since: tell the device so
                    changes.append(ServerChange("Delete", sid))
                else:
                    changes.append(ServerChange("Add" if kind == "A" else "Change", sid, got))
        return CollectionResult(folder.server_id, make_key(epoch, n), "1", True, more,
                                answers, changes, len(delivered_ids))

    async def _resend(self, user: User, device_id: str, version: str,
                      quirks: convert.DeviceQuirks, folder: Folder, st: dict[str, Any],
                      creq: CollectionRequest) -> CollectionResult:
        """The device resent key n-1: it did not get our answer (MS-ASCMD 2.2.3.166.4,
        3.1.5.3).  That answer is given again, applying nothing twice: the same
        Responses (the same ServerId for a ClientId) and the same Commands.  Phones
        rebuild a resend from their dirty items, so it may carry more (issue #10
        point 3): a client command whose fingerprint (``fingerprint``) the original
        request did not have is applied and answered too, under key n+1, and the
        state then answers a further resend of n-1 with all of it (``prev`` keeps
        key n-1, the Responses and fingerprints of both).  The Commands stay those of
        the lost answer (what changed since reaches the device with its next Sync).
        A Fetch changes nothing: the ones the original did not carry are answered
        from the current data, whatever the rest.

        A Change or Delete of an item whose new server version the lost answer
        carried is a conflict, as it would have been had the device got that answer:
        server wins (Status 7, that version is in the Commands) unless the device
        asks for client wins (its version is applied and left out of the Commands)."""
        prev = st["prev"]
        responses = [ClientResponse.from_json(r) for r in prev["responses"]]
        delivered_ids = [list(d) for d in prev["delivered"]]
        more = bool(prev.get("more", False))
        known = prev.get("fp")
        seen = {tuple(f) for f in known or ()}
        fetched = {r.ref for r in responses if r.kind == "Fetch"}
        fetches: list[ClientResponse] = []
        new_cmds: list[ClientCommand] = []
        for cmd in creq.commands:
            if isinstance(cmd, FetchCommand):
                if cmd.server_id not in fetched:
                    fetched.add(cmd.server_id)
                    fetches.append(ClientResponse("Fetch", cmd.server_id))
                continue
            fp = fingerprint(cmd)
            # a state saved before fingerprints were kept (known is None): replay only
            if fp is not None and known is not None and tuple(fp) not in seen:
                seen.add(tuple(fp))
                new_cmds.append(cmd)
        epoch, n = st["epoch"], st["key"]
        if not new_cmds:
            return await self._result(user, folder, epoch, n, responses + fetches,
                                      delivered_ids, None, more)

        cls = folder.cls
        resent = {sid for kind, sid in delivered_ids if kind in ("A", "C")}
        fresh: list[ClientResponse] = []    # Responses to the new commands
        todo: list[ClientCommand] = []
        for cmd in new_cmds:
            if isinstance(cmd, ChangeCommand | DeleteCommand) and cmd.server_id in resent \
                    and creq.conflict != 0:
                kind: Literal["Change", "Delete"] = (
                    "Change" if isinstance(cmd, ChangeCommand) else "Delete")
                fresh.append(ClientResponse(kind, cmd.server_id, status="7"))
                continue
            todo.append(cmd)
        own: dict[str, int] = dict(st.get("own") or {})
        ops: list[Op] = []
        fills: list[tuple[int, int]] = []
        adopted: list[Item] = []
        owed_before = list(st.get("owed") or ())
        if todo:
            sub = dataclasses.replace(creq, commands=todo)
            back: list[Change] = []     # server versions a read-only folder sends back
            await self._commands(user, folder, st, sub, version, quirks, own, back, fresh,
                                 ops, fills, adopted)
            if back:
                # the Commands stay those of the lost answer: they go with the next Sync
                st["owed"] = [*(st.get("owed") or ()),
                              *(["A" if ch.enters else "C", ch.server_id] for ch in back)]
        written = {op.server_id for op in ops if op.kind != "add"}
        if written & resent:
            # client wins: its version replaces the one the lost answer carried
            delivered_ids = [d for d in delivered_ids if d[1] not in written]
        if not ops and not adopted:
            # nothing written: the same key, nothing saved (a further resend is
            # answered the same way again) — but server versions now owed
            if fresh and await self._gone(user, folder):
                return self._status(creq, "12")
            if list(st.get("owed") or ()) != owed_before:
                await self.state.save_state(user, StateWrite(
                    device_id, state_name(folder.server_id), st,
                    feed_from=feed_cursor(state_name(folder.server_id), st),
                    replaces=(epoch, n)))
            return await self._result(user, folder, epoch, n, responses + fresh + fetches,
                                      delivered_ids, None, more)

        new_n = n + 1
        built: dict[str, list[ClientResponse]] = {}
        fps = [*known, *fingerprints(new_cmds)]

        def build(results: list[OpResult]) -> dict[str, Any]:
            own2 = dict(own)
            for r in results:
                if r.ok and r.server_id:
                    own2[r.server_id] = r.modseq
            rec = _settle(fresh, fills, ops, results)
            state = {k: v for k, v in st.items() if k not in ("outside", "prev")}
            state.update(key=new_n, own=own2, prev={
                "key": prev["key"], "responses": [r.to_json() for r in responses + rec],
                "delivered": delivered_ids, "more": more,
                "fp": fps})
            outside = self._outside(st, cls, ops, results, adopted)
            if outside:
                state["outside"] = outside
            built["rec"] = rec
            return state

        if not await self._commit(user, device_id, folder, ops, build, fresh,
                                  feed_cursor(state_name(folder.server_id), st), (epoch, n)):
            return self._status(creq, "12")
        return await self._result(user, folder, epoch, new_n,
                                  responses + built["rec"] + fetches, delivered_ids, None,
                                  more)

    # -- Ping ----------------------------------------------------------------------
    async def unsynced(self, user: User, device_id: str, folder: Folder) -> bool | None:
        """Does ``folder`` hold a change due to the device that it has not synced (its
        own writes and what its filter leaves out do not count)?  None when the device
        never synced it."""
        st = await self.state.get_state(user, device_id, state_name(folder.server_id))
        if st is None:
            return None
        if expired(st, folder):
            return True             # its next Sync gets Status 3: let it come
        if st.get("owed"):
            return True             # a server version owed (a read-only folder's refusal)
        if folder.modseq <= st["cursor"]:
            return False
        changes, _more, _c = await self.collect(user, folder, st, 1,
                                                self.server.clock.seconds())
        return bool(changes)

    # -- GetItemEstimate -----------------------------------------------------------
    async def estimate(self, user: User, device_id: str, folder: Folder, sync_key: str,
                       filter_type: int | None) -> tuple[str, int]:
        """(status, estimate) per MS-ASCMD GetItemEstimate: what the next Sync (with
        this FilterType) would send, window moves included; nothing is saved."""
        st = await self.state.get_state(user, device_id, state_name(folder.server_id))
        if sync_key == "0" or st is None:
            return "3", 0
        if expired(st, folder):
            return "4", 0           # MS-ASCMD 2.2.3.177.6: invalid SyncKey, as Sync says
        current = make_key(st["epoch"], st["key"])
        prev = st.get("prev")
        if sync_key != current and not (prev and sync_key == make_key(st["epoch"], prev["key"])):
            return "4", 0
        st = copy.deepcopy(st)
        now = self.server.clock.seconds()
        self.rewindow(st, folder.cls, filter_type, now)
        changes, _more, _c = await self.gather(user, folder, st, 10**9, now)
        if not changes and folder.modseq > st["cursor"] and await self._gone(user, folder):
            return "2", 0           # deleted since it was looked up (issue #10 point 11)
        return "1", len(changes)


#: how often a move's mark is tried on a sync state other requests keep replacing
MARK_ATTEMPTS = 5


async def record_own_move(server: Any, user: User, device_id: str, src_folder: str,
                          old_id: str, dst_folder: str, new_id: str) -> None:
    """After a MoveItems by this device: its own Delete (in the source) and Add (in the
    destination) are not echoed back to it.  A negative ``own`` entry means "the
    tombstone of this id is the device's own" (ids are never reused)."""
    items = await server.items.get_items(user, [new_id])
    if not items:
        return
    modseq = items[0].modseq
    for folder_id, sid, mark in ((src_folder, old_id, -modseq), (dst_folder, new_id, modseq)):
        name = state_name(folder_id)
        # The mark replaces only the state it was added to: a Sync of the device (on
        # another connection) that saved a newer one meanwhile keeps it — a plain save
        # put the older SyncKey back, and the device's next Sync got Status 3 — and
        # the mark is added to that one instead.
        for _attempt in range(MARK_ATTEMPTS):
            st = await server.state.get_state(user, device_id, name)
            if st is None:
                break
            st.setdefault("own", {})[sid] = mark
            replaces = (st["epoch"], st["key"]) if "epoch" in st and "key" in st else None
            try:
                await server.state.save_state(user, StateWrite(device_id, name, st,
                                                               replaces=replaces))
            except StateConflict:
                continue
            break


def fingerprint(cmd: ClientCommand) -> list[str] | None:
    """What tells a client command of a resend from those the original request
    carried (issue #10 point 3): an Add by its ClientId, a Delete by its ServerId
    (and InstanceId), a Change by its ServerId (and InstanceId) and the digest of its
    ApplicationData (``ChangeCommand.digest``), so that an item edited again before
    the resend is new.  None for a command that changes nothing (Fetch) or is
    unknown."""
    if isinstance(cmd, AddCommand):
        return ["A", cmd.client_id]
    if isinstance(cmd, DeleteCommand):
        return ["D", cmd.server_id, cmd.instance_id or ""]
    if isinstance(cmd, ChangeCommand):
        return ["C", cmd.server_id, cmd.instance_id or "", cmd.digest]
    return None


def fingerprints(cmds: list[ClientCommand]) -> list[list[str]]:
    """The fingerprints of a request's commands, each once, in order."""
    out: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for cmd in cmds:
        fp = fingerprint(cmd)
        if fp is not None and tuple(fp) not in seen:
            seen.add(tuple(fp))
            out.append(fp)
    return out


def _add_data(cls: str, cmd: AddCommand, quirks: convert.DeviceQuirks) -> dict[str, Any]:
    """The item a client Add makes (ItemError when its data could not be read)."""
    if cmd.error is not None:
        raise convert.ItemError(cmd.error)
    # merge onto nothing: drops the "sent empty" markers of from_eas
    return convert.merge_change(cls, {}, dict(cmd.data or {}), None, quirks)


def _settle(responses: list[ClientResponse], fills: list[tuple[int, int]], ops: list[Op],
            results: list[OpResult]) -> list[ClientResponse]:
    """The Responses once the store has applied ``ops``: the ServerIds it assigned
    filled into the Adds, and a Change or Delete it could not make answered per item
    (MS-ASCMD 2.2.3.177.17: 8 object not found, 6 conversion error, 5 server
    error)."""
    rec = [dataclasses.replace(r) for r in responses]
    for ri, oi in fills:
        r = results[oi]
        rec[ri].server_id = r.server_id if r.ok else None
        if not r.ok:
            rec[ri].status = "6" if r.error == "readonly" else "5"
    for op, r in zip(ops, results, strict=True):
        if op.kind in ("change", "delete") and not r.ok:
            status = {"notfound": "8", "invalid": "6", "readonly": "7"}.get(r.error or "", "5")
            kind: Literal["Change", "Delete"] = "Change" if op.kind == "change" else "Delete"
            rec.append(ClientResponse(kind, op.server_id or "", None, status, None))
    return rec


def _vt(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)


DAY = 86400
# At most this many ids in ``outside`` (the oldest are forgotten: a wider window may
# then send such an item again).
OUTSIDE_MAX = 2000


def _jw(window: tuple[int | None, int | None] | None) -> list[int | None] | None:
    """A filter window in its JSON form (the state blob)."""
    return None if window is None else [window[0], window[1]]


def _tw(value: Any) -> tuple[int | None, int | None] | None:
    return None if not value else (value[0], value[1])


def _drift(held: tuple[int | None, int | None] | None,
           target: tuple[int | None, int | None] | None) -> bool:
    """Is ``target`` only ``held`` moved by the clock by less than a day?"""
    return (held is not None and target is not None and held[1] == target[1]
            and held[0] is not None and target[0] is not None
            and abs(target[0] - held[0]) < DAY)


def _kind(ch: Change, cursor: int, own: dict[str, int]) -> str:
    """D(elete), S(oftDelete), A(dd) or C(hange) for one entry sent to the device."""
    if ch.deleted:
        return "D"
    if ch.soft:
        return "S"
    if ch.enters:
        return "A"
    return "C" if SyncEngine._known(ch, cursor, own) else "A"


def _device_uid(data: dict[str, Any], v16: bool) -> str | None:
    """The identity a device gives an event it adds (MS-ASCAL 2.2.2.13 ClientUid at
    16.x, where the server owns UID; the UID it sent before 16.0)."""
    value = data.get("ClientUid") if v16 else (data.get("UID") or data.get("ClientUid"))
    value = str(value).strip() if value else ""
    return value or None


def _inside(window: tuple[int | None, int | None], cls: str, data: dict[str, Any]) -> bool:
    """Is an item inside a filter window?  The stores' test (``changes_since``), on
    the item's index fields."""
    f = index_fields(cls, data)
    lo, hi = window
    if cls == "Calendar":
        if lo is not None and f["end"] is not None and f["end"] < lo:
            return False
        return hi is None or f["start"] is None or f["start"] <= hi
    if cls == "Tasks":
        return not (hi == 1 and f["complete"] == 1)
    return True
