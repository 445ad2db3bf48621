"""Sync (MS-ASCMD 2.2.1.21): parse the request, run each collection, hold when asked.

All the WBXML of Sync is here: the request is parsed into a ``SyncRequest`` (its
collections, their options and client commands, the ApplicationData of an Add or
Change read into the canonical item dict once the folder's class is known), the
engine (``easync.syncengine``) answers each collection with a typed
``CollectionResult`` and ``render_collection`` writes that as WBXML (item data through
the server's fragment cache, ``SyncCaches``).  Rendering is a function of the result,
the request's options and the items' versions, so the answer to a resent SyncKey
(the engine keeps its result, not the bytes) is the answer the device lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from easync.commands.ping import HIERARCHY
from easync.commands.provisioning import access_refused
from easync.deviceaccess import ACCESS
from easync.handler import EasRequest, EasResponse, EasServer
from easync.items import convert
from easync.items.fastpath import FragmentCache
from easync.model import Folder, StateWrite, User
from easync.settings import Settings
from easync.syncengine import ITEM_CLASSES, SyncEngine, make_key, quirks_for, state_name
from easync.synctypes import (
    AddCommand,
    ChangeCommand,
    ClientCommand,
    CollectionRequest,
    CollectionResult,
    DeleteCommand,
    FetchCommand,
    OtherCommand,
)
from easync.wbxml.element import E, Element

CACHE = "synccache"
# MS-ASCMD 2.2.3.199: "The server interprets the value 0 (zero) and values above 512 as 512."
WINDOW_MAX = 512


@dataclass
class SyncCaches:
    """What Sync keeps in memory for the whole server (``EasServer.caches``).

    ``fragments``: encoded ApplicationData of recently sent item versions, shared by
    every device of every user (keyed by server id, modseq and rendering options).
    ``requests``: the request cache this process last saw saved per (user id, device
    id): a device that repeats the same request costs no read of it."""

    fragments: FragmentCache = field(default_factory=FragmentCache)
    requests: dict[tuple[int, str], dict[str, Any]] = field(default_factory=dict)
    requests_max: int = 100_000


class BadRequest(Exception):
    def __init__(self, status: str, limit: int | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.limit = limit


def _int(text: str | None, default: int | None = None) -> int | None:
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError as e:
        raise BadRequest("4") from e


# -- the request ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BodyPreferenceText:
    """One AirSyncBase:BodyPreference as sent (MS-ASAIRS 2.2.2.7): the values of
    Type, TruncationSize, AllOrNone and Preview (None for one absent).  Kept as sent
    because the request cache keeps it so."""

    type: str | None
    truncation_size: str | None = None
    all_or_none: str | None = None
    preview: str | None = None


@dataclass(slots=True)
class RequestCommand:
    """A child of a collection's Commands as sent (MS-ASCMD 2.2.3.32): read into the
    engine's ``ClientCommand`` once the folder's class is known (``to_engine``)."""

    name: str                          # "Add", "Change", "Delete", "Fetch", ...
    client_id: str = ""
    server_id: str = ""
    instance_id: str | None = None
    application_data: Element | None = None


@dataclass
class SyncCollection:
    """One Collection of a Sync request (MS-ASCMD 2.2.3.30.2).  ``sync_key`` None:
    the collection comes from the request cache (the device's current key is used)."""

    collection_id: str
    sync_key: str | None = None
    get_changes: bool | None = None     # None: not sent (2.2.3.79: yes but for key 0)
    window: int | None = None           # as sent (see window_size)
    deletes_as_moves: bool = True
    filter_type: int | None = None      # Options (2.2.3.68.2)
    conflict: int | None = None         # Options (2.2.3.34)
    body_preferences: list[BodyPreferenceText] | None = None   # Options (non-empty)
    supported: list[str] | None = None
    commands: list[RequestCommand] = field(default_factory=list)

    def preferences(self) -> list[convert.BodyPreference]:
        """The BodyPreferences in effect ([] when one cannot be read)."""
        out: list[convert.BodyPreference] = []
        try:
            for p in self.body_preferences or ():
                pref = convert.body_preference(p.type, p.truncation_size, p.all_or_none, p.preview)
                if pref is not None:
                    out.append(pref)
        except ValueError:
            return []
        return out

    def to_cache(self) -> dict[str, Any]:
        """The form the request cache keeps (not the key, commands or Supported)."""
        out: dict[str, Any] = {"id": self.collection_id, "getchanges": self.get_changes,
                               "window": self.window,
                               "deletes_as_moves": self.deletes_as_moves}
        if self.filter_type is not None:
            out["filter"] = self.filter_type
        if self.conflict is not None:
            out["conflict"] = self.conflict
        if self.body_preferences:
            out["prefs"] = [[p.type, p.truncation_size, p.all_or_none, p.preview]
                            for p in self.body_preferences]
        return out

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> SyncCollection:
        prefs = value.get("prefs")
        return cls(collection_id=value["id"], get_changes=value.get("getchanges"),
                   window=value.get("window"),
                   deletes_as_moves=value.get("deletes_as_moves", True),
                   filter_type=value.get("filter"), conflict=value.get("conflict"),
                   body_preferences=[BodyPreferenceText(*p) for p in prefs] if prefs else None)


@dataclass
class SyncRequest:
    """A Sync request (MS-ASCMD 2.2.1.21.1): ``hold`` in seconds (Wait or
    HeartbeatInterval), the request-wide WindowSize, Partial, the collections."""

    hold: int | None = None
    window: int | None = None
    collections: list[SyncCollection] = field(default_factory=list)
    partial: bool = False

    def to_cache(self) -> dict[str, Any]:
        """What the request cache keeps (MS-ASCMD 2.2.3.124 Partial, empty Sync)."""
        return {"hold": self.hold, "window": self.window,
                "collections": [c.to_cache() for c in self.collections]}

    @classmethod
    def from_cache(cls, value: dict[str, Any]) -> SyncRequest:
        return cls(hold=value.get("hold"), window=value.get("window"),
                   collections=[SyncCollection.from_cache(c) for c in value["collections"]])


def _options(coll: Element, out: SyncCollection) -> None:
    """Options of a collection: FilterType, BodyPreference, Conflict (one Options per
    Class: those of another Class than the collection's are skipped)."""
    cls_hint = coll.findtext("AirSync:Class")
    for opt in coll.findall("AirSync:Options"):
        ocls = opt.findtext("AirSync:Class")
        if ocls and cls_hint and ocls != cls_hint:
            continue
        ft = _int(opt.findtext("AirSync:FilterType"))
        if ft is not None:
            if not 0 <= ft <= 8:
                raise BadRequest("4")
            out.filter_type = ft
        conflict = _int(opt.findtext("AirSync:Conflict"))
        if conflict is not None:
            out.conflict = conflict
        prefs = opt.findall("AirSyncBase:BodyPreference")
        if prefs:
            out.body_preferences = [
                BodyPreferenceText(p.findtext("AirSyncBase:Type"),
                                   p.findtext("AirSyncBase:TruncationSize"),
                                   p.findtext("AirSyncBase:AllOrNone"),
                                   p.findtext("AirSyncBase:Preview")) for p in prefs]


def _commands(commands: Element | None) -> list[RequestCommand]:
    out = []
    for cmd in commands.children if commands is not None else []:
        out.append(RequestCommand(
            name=cmd.tag.partition(":")[2] if cmd.tag.startswith("AirSync:") else cmd.tag,
            client_id=cmd.findtext("AirSync:ClientId") or "",
            server_id=cmd.findtext("AirSync:ServerId") or "",
            instance_id=cmd.findtext("AirSyncBase:InstanceId"),
            application_data=cmd.find("AirSync:ApplicationData")))
    return out


def parse(body: Element, settings: Settings) -> SyncRequest:
    """The request, typed (BadRequest for one the protocol refuses as a whole)."""
    wait = body.findtext("AirSync:Wait")
    hb = body.findtext("AirSync:HeartbeatInterval")
    if wait is not None and hb is not None:
        raise BadRequest("4")
    hold = None
    if wait is not None:
        # Wait is in minutes (1-59), and within the server's heartbeat bounds too.
        lo = max(1, -(-settings.heartbeat_min // 60))
        hi = max(lo, min(59, settings.heartbeat_max // 60))
        w = _int(wait)
        if w is None or not lo <= w <= hi:
            raise BadRequest("14", lo if (w or 0) < lo else hi)
        hold = w * 60
    elif hb is not None:
        h = _int(hb)
        if h is None or not settings.heartbeat_min <= h <= settings.heartbeat_max:
            raise BadRequest("14", settings.heartbeat_min if (h or 0) < settings.heartbeat_min
                             else settings.heartbeat_max)
        hold = h
    window = _int(body.findtext("AirSync:WindowSize"))
    if window is not None and window < 0:
        raise BadRequest("4")
    collections = []
    colls = body.find("AirSync:Collections")
    asked = colls.findall("AirSync:Collection") if colls is not None else []
    if len(asked) > settings.max_sync_collections:
        raise BadRequest("15", settings.max_sync_collections)
    # MS-ASCMD 3.1.5.10: the Add, Change, Delete and Fetch elements of one request are
    # limited, more are Status 4 (counted before any is parsed: 200,000 held the
    # reactor for a second)
    commands = (coll.find("AirSync:Commands") for coll in asked)
    if sum(len(c.children) for c in commands if c is not None) > settings.max_sync_commands:
        raise BadRequest("4")
    for coll in asked:
        cid = coll.findtext("AirSync:CollectionId")
        key = coll.findtext("AirSync:SyncKey")
        if not cid or key is None:
            raise BadRequest("4")
        gc_text = coll.findtext("AirSync:GetChanges")
        supported = coll.find("AirSync:Supported")
        wsize = _int(coll.findtext("AirSync:WindowSize"))
        if wsize is not None and wsize < 0:
            raise BadRequest("4")
        entry = SyncCollection(
            collection_id=cid, sync_key=key,
            get_changes=None if gc_text is None else gc_text in ("", "1"), window=wsize,
            supported=None if supported is None else convert.supported_names(supported),
            commands=_commands(coll.find("AirSync:Commands")),
            deletes_as_moves=coll.findtext("AirSync:DeletesAsMoves", "1") in ("", "1"))
        _options(coll, entry)
        collections.append(entry)
    partial = body.find("AirSync:Partial") is not None
    return SyncRequest(hold=hold, window=window, collections=collections, partial=partial)


def to_engine(cmd: RequestCommand, cls: str, version: str,
              quirks: convert.DeviceQuirks) -> ClientCommand:
    """A client command as the engine takes it: ApplicationData read into the
    canonical item dict of the folder's class (its error kept for Status 6)."""
    appdata = cmd.application_data
    if cmd.name == "Add":
        if not cmd.client_id or appdata is None or cls not in ITEM_CLASSES:
            return AddCommand(cmd.client_id)
        try:
            return AddCommand(cmd.client_id, convert.from_eas(cls, appdata, version, quirks))
        except convert.ItemError as e:
            return AddCommand(cmd.client_id, error=str(e))
    if cmd.name == "Change":
        change = ChangeCommand(cmd.server_id, cmd.instance_id, digest=_digest(appdata))
        try:
            change.data = convert.from_eas(
                cls, appdata if appdata is not None else Element("AirSync:ApplicationData"),
                version, quirks)
        except convert.ItemError as e:
            change.error = str(e)
        return change
    if cmd.name == "Delete":
        return DeleteCommand(cmd.server_id, cmd.instance_id)
    if cmd.name == "Fetch":
        return FetchCommand(cmd.server_id)
    return OtherCommand(cmd.name)


def _digest(el: Element | None) -> str:
    """A short digest of an element tree: every node's tag, number of children and
    value, in document order (so that two different trees never feed the same
    bytes).  What tells a Change of a resend from the original's (the engine's
    ``fingerprint``); the sync state keeps it, so it must not change."""
    h = hashlib.sha256()
    for node in el.iter() if el is not None else ():
        h.update(f"{node.tag}\x00{len(node.children)}\x00".encode())
        if node.text is not None:
            data = node.text.encode("utf-8", "surrogatepass")
            h.update(b"t%d:" % len(data) + data)
        if node.opaque is not None:
            h.update(b"o%d:" % len(node.opaque) + node.opaque)
        h.update(b"\x01")
    return h.hexdigest()[:24]


def window_size(asked: int | None, default: int | None, cap: int) -> int:
    """The WindowSize in effect (MS-ASCMD 2.2.3.199): ``default`` when the device gave
    none (100 for a collection; the request-wide one has no default, ``None``: only
    ``cap``), 512 for 0 and for anything above 512, never more than ``cap`` (the
    server's --max-window)."""
    if asked is None:
        value = default if default is not None else cap
    elif asked == 0 or asked > WINDOW_MAX:
        value = WINDOW_MAX
    else:
        value = asked
    return max(1, min(value, cap))


# -- the command -----------------------------------------------------------------------

def request_reads(server: EasServer, user: User, device_id: str, body: Element | None
                  ) -> tuple[list[str], bool]:
    """What a Sync reads first, for the HTTP layer to read with the device in one
    transaction (``easync.requestread``): the states of the collections the request
    names (an empty or Partial request: the request cache and the collections this
    process last saw cached), and the folders when the item store is the state
    store."""
    names: list[str] = []
    colls = body.find("AirSync:Collections") if body is not None else None
    if colls is not None:
        for coll in colls.findall("AirSync:Collection"):
            cid = coll.findtext("AirSync:CollectionId")
            if cid:
                names.append(state_name(cid))
    if body is None or colls is None or body.find("AirSync:Partial") is not None:
        names.append(CACHE)
        cached = server.caches.requests.get((user.id, device_id))
        for c in (cached or {}).get("collections", ()):
            names.append(state_name(str(c.get("id"))))
    return list(dict.fromkeys(names))[:1 + server.settings.max_sync_collections], \
        server.items is server.state


async def _state(server: EasServer, req: EasRequest, name: str) -> dict[str, Any] | None:
    """A state of the device: as read with the request when it was, else read now."""
    pre = req.preloaded
    if pre is not None and name in pre.states:
        return pre.states[name]
    return await server.state.get_state(req.user, req.device_id, name)


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    settings = server.settings
    user = req.user
    try:
        if req.body is None:
            cached = await _state(server, req, CACHE)
            if not cached:
                return _top_status("13")
            spec = SyncRequest.from_cache(cached)
        else:
            spec = parse(req.body, settings)
            if spec.partial or not spec.collections:
                cached = await _state(server, req, CACHE)
                if not cached:
                    return _top_status("13")
                # Partial: the collections not named are the cached ones; without
                # collections (only Wait/HeartbeatInterval/WindowSize): all of them.
                was = SyncRequest.from_cache(cached)
                given = {c.collection_id for c in spec.collections}
                spec.collections = [c for c in was.collections
                                    if c.collection_id not in given] + spec.collections
                if spec.hold is None and spec.partial:
                    spec.hold = was.hold
                if spec.window is None:
                    spec.window = was.window
            new_cache = spec.to_cache()
            mem = (user.id, req.device_id)
            saved = server.caches.requests
            if saved.get(mem) != new_cache:
                old = await _state(server, req, CACHE)
                if old != new_cache:
                    await server.state.save_state(user, StateWrite(req.device_id, CACHE,
                                                                   new_cache))
                if len(saved) > server.caches.requests_max:
                    saved.clear()
                saved[mem] = new_cache
    except BadRequest as e:
        return _top_status(e.status, e.limit)

    engine = SyncEngine(server, req.preloaded.states if req.preloaded is not None else None)
    quirks = quirks_for(req.device_type, req.user_agent, req.device, req.version,
                        settings)
    hold = None
    if spec.hold:
        # A long poll: it ends the device's previous one, and subscribes before the
        # first look so that a change committed meanwhile still wakes it.
        # The hierarchy too: a folder deleted meanwhile ends it with Status 12.
        hold = server.holds.start(user.id, req.device_id, "Sync",
                                  [*(c.collection_id for c in spec.collections), HIERARCHY,
                                   ACCESS], spec.hold, owner=req)
        if req.preloaded is not None:
            # the folders read with the request are from before the subscription: the
            # lookout made before that read tells the hold what changed since; without
            # one, look at them again (the device's states change only by its own
            # requests)
            lookout, req.preloaded.lookout = req.preloaded.lookout, None
            if lookout is not None:
                lookout.hand_over(hold, hold.folders)
            else:
                req.preloaded.folders = None
    elif req.preloaded is not None and req.preloaded.lookout is not None:
        req.preloaded.lookout.close()
        req.preloaded.lookout = None
    try:
        resp = await _run(server, engine, req, spec, quirks)
        # what was read with the request is for this first look only
        req.preloaded = None
        engine.preloaded = {}
        await _note_sync(server, req)
        if resp is not None or hold is None:
            return resp if resp is not None else EasResponse(None, status="1")
        # Nothing to tell: hold the request until a change or the heartbeat.
        req.body = None
        while True:
            await hold.wait()
            if hold.changed:
                woken_at = hold.woken_at
                news = hold.take()          # (subscribed again before looking)
                # the device's access is looked at again before any data goes out:
                # woken by an access change of its user, and also by a data change
                # (a rule for everyone wakes nobody: a device it blocked while holding
                # would otherwise get the change it was woken for)
                refused = await access_refused(server, req)
                if refused is not None:
                    return refused
                if set(news) == {ACCESS}:
                    continue
                resp = await _run(server, engine, req, spec, quirks)
                if resp is not None:
                    resp.woken = woken_at
                    return resp
                # only the device's own writes: keep waiting
            elif hold.reason is not None:
                # heartbeat: nothing new, unless a folder went where no change
                # reached this process (MS-ASCMD 2.2.3.177.17: Status 12 for it)
                if hold.reason == "heartbeat" and await _folder_gone(server, req, spec):
                    resp = await _run(server, engine, req, spec, quirks)
                    if resp is not None:
                        return resp
                return EasResponse(None, status="1")
    finally:
        if hold is not None:
            hold.end()


async def _folder_gone(server: EasServer, req: EasRequest, spec: SyncRequest) -> bool:
    """Is a folder of this Sync no longer the user's?  (Issue #10 point 11.)"""
    live = {f.server_id for f in await server.items.list_folders(req.user)}
    return any(c.collection_id not in live for c in spec.collections)


# The device record's last_sync (shown by the account page and easync-admin device list)
# is written at most this often per device.
LAST_SYNC_EVERY = 60.0


async def _note_sync(server: EasServer, req: EasRequest) -> None:
    now = server.clock.seconds()
    if now - float((req.device or {}).get("last_sync") or 0) >= LAST_SYNC_EVERY:
        await server.state.save_device(req.user, req.device_id, last_sync=now)


async def _run(server: EasServer, engine: SyncEngine, req: EasRequest, spec: SyncRequest,
               quirks: convert.DeviceQuirks) -> EasResponse | None:
    """Run every collection once; None when there is nothing at all to send."""
    settings = server.settings
    user = req.user
    pre = req.preloaded
    listed = pre.folders if pre is not None and pre.folders is not None else \
        await server.items.list_folders(user)
    folders = {f.server_id: f for f in listed}
    remaining = window_size(spec.window, None, settings.max_window)
    colls_el = Element("AirSync:Collections")
    anything = False
    for c in spec.collections:
        folder = folders.get(c.collection_id)
        key = c.sync_key
        if key is None:  # from the cache: the device's current key
            st = await engine.get_state(user, req.device_id, state_name(c.collection_id),
                                        keep=True)
            if st is None:
                # MS-ASCMD 2.2.3.177.17: no state of an existing folder is a SyncKey
                # to start over (3); a folder that does not exist is a hierarchy to
                # read again (12), as when the request named it
                colls_el.append(render_collection(
                    CollectionResult(c.collection_id, "0", "12" if folder is None else "3"),
                    folder, req.version, [], quirks, server.caches.fragments))
                anything = True
                continue
            key = make_key(st["epoch"], st["key"])
        getchanges = c.get_changes
        if getchanges is None:
            getchanges = key != "0"
        creq = CollectionRequest(
            collection_id=c.collection_id, sync_key=key,
            window=window_size(c.window, settings.default_window, settings.max_window),
            get_changes=getchanges and key != "0",
            filter_type=c.filter_type, conflict=1 if c.conflict is None else c.conflict,
            supported=c.supported,
            commands=[to_engine(cmd, folder.cls, req.version, quirks)
                      for cmd in c.commands] if folder is not None else [],
        )
        result = await engine.sync_collection(user, req.device_id, req.version, quirks,
                                              folder, creq, remaining)
        remaining -= result.delivered
        colls_el.append(render_collection(result, folder, req.version, c.preferences(),
                                          quirks, server.caches.fragments))
        anything = anything or result.changed
    if not anything:
        return None
    return EasResponse(E("AirSync:Sync", colls_el), status="1")


# -- the response ----------------------------------------------------------------------

def render_collection(result: CollectionResult, folder: Folder | None, version: str,
                      prefs: list[convert.BodyPreference], quirks: convert.DeviceQuirks,
                      fragments: FragmentCache) -> Element:
    """One Collection of the response (MS-ASCMD 2.2.3.30.2): SyncKey, CollectionId,
    Status, Responses, MoreAvailable, Commands, in that order; item data as the
    device's version, body preferences and quirks want it."""
    el = E("AirSync:Collection", E("AirSync:SyncKey", result.sync_key),
           E("AirSync:CollectionId", result.collection_id),
           E("AirSync:Status", result.status))
    cls = folder.cls if folder is not None else ""
    if result.responses:
        resp_el = el.add("AirSync:Responses")
        for r in result.responses:
            if r.kind == "Add":
                a = resp_el.add("AirSync:Add")
                a.add("AirSync:ClientId", r.ref)
                if r.server_id:
                    a.add("AirSync:ServerId", r.server_id)
                a.add("AirSync:Status", r.status)
                if r.uid and r.status == "1":
                    a.append(E("AirSync:ApplicationData", E("Calendar:UID", r.uid)))
            elif r.kind == "Fetch":
                f = resp_el.add("AirSync:Fetch")
                f.add("AirSync:ServerId", r.ref)
                f.add("AirSync:Status", r.status)
                if r.item is not None and r.status == "1":
                    f.append(E("AirSync:ApplicationData",
                               *convert.to_eas(cls, r.item.data, version, prefs, quirks)))
            elif r.status != "1":
                o = resp_el.add(f"AirSync:{r.kind}")
                o.add("AirSync:ServerId", r.ref)
                o.add("AirSync:Status", r.status)
    if result.more_available:
        el.add("AirSync:MoreAvailable")
    if result.commands:
        options = fragments.options_key(version, prefs, quirks)
        cmds = el.add("AirSync:Commands")
        for ch in result.commands:
            item = ch.item
            if ch.kind in ("Add", "Change") and item is not None:
                cmds.append(E(f"AirSync:{ch.kind}", E("AirSync:ServerId", ch.server_id),
                              fragments.get(item.cls or cls, ch.server_id, item.modseq,
                                            item.data, version, prefs, quirks, options)))
            else:
                kind = ch.kind if ch.kind in ("Delete", "SoftDelete") else "Delete"
                cmds.append(E(f"AirSync:{kind}", E("AirSync:ServerId", ch.server_id)))
    return el


def _top_status(status: str, limit: int | None = None) -> EasResponse:
    el = E("AirSync:Sync", E("AirSync:Status", status))
    if limit is not None:
        el.add("AirSync:Limit", limit)
    return EasResponse(el, status=status)
