"""Sync (MS-ASCMD 2.2.1.21): parse the request, run each collection, hold when asked."""

from __future__ import annotations

from typing import Any

from easync.commands.ping import HIERARCHY
from easync.handler import EasRequest, EasResponse, EasServer
from easync.items import convert
from easync.model import StateWrite
from easync.syncengine import CollectionRequest, SyncEngine, make_key, quirks_for
from easync.wbxml.element import E, Element

CACHE = "synccache"
# MS-ASCMD 2.2.3.199: "The server interprets the value 0 (zero) and values above 512 as 512."
WINDOW_MAX = 512
# The request cache this process last saw saved per (user id, device id): a device that
# repeats the same request costs no read of it.
_saved: dict[tuple[int, str], dict[str, Any]] = {}


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


def _options(coll: Element, cls_hint: str | None) -> dict[str, Any]:
    """Options of a collection: FilterType, BodyPreference, Conflict (one Options per Class)."""
    out: dict[str, Any] = {}
    for opt in coll.findall("AirSync:Options"):
        ocls = opt.findtext("AirSync:Class")
        if ocls and cls_hint and ocls != cls_hint:
            continue
        ft = _int(opt.findtext("AirSync:FilterType"))
        if ft is not None:
            if not 0 <= ft <= 8:
                raise BadRequest("4")
            out["filter"] = ft
        conflict = _int(opt.findtext("AirSync:Conflict"))
        if conflict is not None:
            out["conflict"] = conflict
        prefs = opt.findall("AirSyncBase:BodyPreference")
        if prefs:
            out["prefs"] = [[p.findtext("AirSyncBase:Type"),
                             p.findtext("AirSyncBase:TruncationSize"),
                             p.findtext("AirSyncBase:AllOrNone"),
                             p.findtext("AirSyncBase:Preview")] for p in prefs]
    return out


def _prefs(raw: list[list[str | None]] | None) -> list[Any]:
    if not raw:
        return []
    opts = Element("AirSync:Options")
    for t, size, aon, preview in raw:
        bp = opts.add("AirSyncBase:BodyPreference")
        if t is not None:
            bp.add("AirSyncBase:Type", t)
        if size is not None:
            bp.add("AirSyncBase:TruncationSize", size)
        if aon is not None:
            bp.add("AirSyncBase:AllOrNone", aon)
        if preview is not None:
            bp.add("AirSyncBase:Preview", preview)
    try:
        return convert.body_preferences(opts)
    except (ValueError, convert.ItemError):
        return []


def parse(body: Element, settings: Any) -> dict[str, Any]:
    """The request as a plain dict (what the request cache keeps, minus Commands)."""
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
    for coll in colls.findall("AirSync:Collection") if colls is not None else []:
        cid = coll.findtext("AirSync:CollectionId")
        key = coll.findtext("AirSync:SyncKey")
        if not cid or key is None:
            raise BadRequest("4")
        gc_text = coll.findtext("AirSync:GetChanges")
        getchanges = None if gc_text is None else gc_text in ("", "1")
        supported = coll.find("AirSync:Supported")
        wsize = _int(coll.findtext("AirSync:WindowSize"))
        if wsize is not None and wsize < 0:
            raise BadRequest("4")
        entry = {
            "id": cid, "key": key, "getchanges": getchanges, "window": wsize,
            "supported": None if supported is None else convert.supported_names(supported),
            "commands": coll.find("AirSync:Commands"),
            "deletes_as_moves": coll.findtext("AirSync:DeletesAsMoves", "1") in ("", "1"),
        }
        entry.update(_options(coll, coll.findtext("AirSync:Class")))
        collections.append(entry)
    if len(collections) > settings.max_sync_collections:
        raise BadRequest("15", settings.max_sync_collections)
    partial = body.find("AirSync:Partial") is not None
    return {"hold": hold, "window": window, "collections": collections, "partial": partial}


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


def _cacheable(spec: dict[str, Any]) -> dict[str, Any]:
    colls = []
    for c in spec["collections"]:
        c2 = {k: v for k, v in c.items() if k not in ("commands", "key", "supported")}
        colls.append(c2)
    return {"hold": spec["hold"], "window": spec["window"], "collections": colls}


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    settings = server.settings
    user = req.user
    try:
        if req.body is None:
            cached = await server.state.get_state(user, req.device_id, CACHE)
            if not cached:
                return _top_status("13")
            spec = dict(cached)
            spec["collections"] = [dict(c, key=None, commands=None, supported=None)
                                   for c in cached["collections"]]
        else:
            spec = parse(req.body, settings)
            if spec["partial"] or not spec["collections"]:
                cached = await server.state.get_state(user, req.device_id, CACHE)
                if not cached:
                    return _top_status("13")
                if not spec["partial"] and not spec["collections"]:
                    # only Wait/HeartbeatInterval/WindowSize: reuse the cached collections
                    pass
                given = {c["id"]: c for c in spec["collections"]}
                merged = [dict(c, key=None, commands=None, supported=None)
                          for c in cached["collections"] if c["id"] not in given]
                spec["collections"] = merged + spec["collections"]
                if spec["hold"] is None and spec["partial"]:
                    spec["hold"] = cached.get("hold")
                if spec["window"] is None:
                    spec["window"] = cached.get("window")
            new_cache = _cacheable(spec)
            mem = (user.id, req.device_id)
            if _saved.get(mem) != new_cache:
                old = await server.state.get_state(user, req.device_id, CACHE)
                if old != new_cache:
                    await server.state.save_state(user, StateWrite(req.device_id, CACHE,
                                                                   new_cache))
                if len(_saved) > 100_000:
                    _saved.clear()
                _saved[mem] = new_cache
    except BadRequest as e:
        return _top_status(e.status, e.limit)

    engine = SyncEngine(server)
    quirks = quirks_for(req.device_type, req.user_agent, req.device, req.version,
                        settings)
    hold = None
    if spec["hold"]:
        # A long poll: it ends the device's previous one, and subscribes before the
        # first look so that a change committed meanwhile still wakes it.
        # The hierarchy too: a folder deleted meanwhile ends it with Status 12.
        hold = server.holds.start(user.id, req.device_id, "Sync",
                                  [*(c["id"] for c in spec["collections"]), HIERARCHY],
                                  spec["hold"])
    try:
        resp = await _run(server, engine, req, spec, quirks)
        await _note_sync(server, req)
        if resp is not None or hold is None:
            return resp if resp is not None else EasResponse(None, status="1")
        # Nothing to tell: hold the request until a change or the heartbeat.
        req.body = None
        while True:
            await hold.wait()
            if hold.changed:
                woken_at = hold.woken_at
                hold.take()                 # (subscribed again before looking)
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


async def _folder_gone(server: EasServer, req: EasRequest, spec: dict[str, Any]) -> bool:
    """Is a folder of this Sync no longer the user's?  (Issue #10 point 11.)"""
    live = {f.server_id for f in await server.items.list_folders(req.user)}
    return any(c["id"] not in live for c in spec["collections"])


# The device record's last_sync (shown by the account page and easync-admin device list)
# is written at most this often per device.
LAST_SYNC_EVERY = 60.0


async def _note_sync(server: EasServer, req: EasRequest) -> None:
    now = server.clock.seconds()
    if now - float((req.device or {}).get("last_sync") or 0) >= LAST_SYNC_EVERY:
        await server.state.save_device(req.user, req.device_id, last_sync=now)


async def _run(server: EasServer, engine: SyncEngine, req: EasRequest, spec: dict[str, Any],
               quirks: Any) -> EasResponse | None:
    """Run every collection once; None when there is nothing at all to send."""
    settings = server.settings
    user = req.user
    folders = {f.server_id: f for f in await server.items.list_folders(user)}
    remaining = window_size(spec["window"], None, settings.max_window)
    colls_el = Element("AirSync:Collections")
    anything = False
    for c in spec["collections"]:
        key = c["key"]
        if key is None:  # from the cache: the device's current key
            st = await server.state.get_state(user, req.device_id, f"sync:{c['id']}")
            if st is None:
                colls_el.append(E("AirSync:Collection", E("AirSync:SyncKey", "0"),
                                  E("AirSync:CollectionId", c["id"]), E("AirSync:Status", "3")))
                anything = True
                continue
            key = make_key(st["epoch"], st["key"])
        getchanges = c["getchanges"]
        if getchanges is None:
            getchanges = key != "0"
        window = window_size(c["window"], settings.default_window, settings.max_window)
        commands = c.get("commands")
        creq = CollectionRequest(
            collection_id=c["id"], sync_key=key, window=window,
            get_changes=getchanges and key != "0",
            filter_type=c.get("filter"), conflict=c.get("conflict", 1),
            prefs=_prefs(c.get("prefs")), supported=c.get("supported"),
            commands=list(commands.children) if commands is not None else [],
            deletes_as_moves=c.get("deletes_as_moves", True),
        )
        result = await engine.sync_collection(user, req.device_id, req.version, quirks,
                                              folders.get(c["id"]), creq, remaining)
        remaining -= result.delivered
        colls_el.append(result.element)
        anything = anything or result.changed
    if not anything:
        return None
    return EasResponse(E("AirSync:Sync", colls_el), status="1")


def _top_status(status: str, limit: int | None = None) -> EasResponse:
    el = E("AirSync:Sync", E("AirSync:Status", status))
    if limit is not None:
        el.add("AirSync:Limit", limit)
    return EasResponse(el, status=status)
