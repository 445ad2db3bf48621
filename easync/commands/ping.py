"""Ping (MS-ASCMD 2.2.1.13): hold the request until a watched folder changes.

A held Ping is a Deferred from the change hub, not a thread or a process: it is
released by a change, by its heartbeat timer, by a newer Ping of the same device,
or cancelled when the client disconnects (the HTTP layer cancels the handler).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from easync.context import EasRequest, EasResponse, EasServer
from easync.model import Folder, StateWrite
from easync.syncengine import SyncEngine, state_name
from easync.wbxml.element import E

log = Logger()

CACHE = "ping"
HIERARCHY = "hierarchy"

# (user id, device id) -> the Deferred of the Ping that device holds on this node.
_held: dict[tuple[int, str], Deferred[Any]] = {}


class Superseded(Exception):
    """A newer Ping of the same device took over."""


def held_count() -> int:
    return len(_held)


def held_devices() -> list[tuple[int, str]]:
    return list(_held)


def _status(status: str, **extra: Any) -> EasResponse:
    root = E("Ping:Ping", E("Ping:Status", status))
    for tag, value in extra.items():
        if tag == "folders":
            folders = root.add("Ping:Folders")
            for fid in value:
                folders.add("Ping:Folder", fid)
        else:
            root.add(f"Ping:{tag}", value)
    return EasResponse(root, status=status)


async def pending_changes(server: EasServer, user: Any, device_id: str,
                          folders: list[Folder]) -> list[str]:
    """The watched folders holding changes this device has not synced yet."""
    engine = SyncEngine(server)
    out = []
    now = server.clock.seconds()
    for folder in folders:
        if folder.modseq == 0:
            continue
        st = await server.state.get_state(user, device_id, state_name(folder.server_id))
        if st is None or folder.modseq <= st["cursor"]:
            continue
        changes, _more, _c = await engine.collect(user, folder, st, 1, now)
        if changes:
            out.append(folder.server_id)
    return out


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    settings = server.settings
    user = req.user
    body = req.body
    cached = await server.state.get_state(user, req.device_id, CACHE) or {}
    heartbeat: int | None = cached.get("heartbeat")
    folder_ids: list[str] | None = cached.get("folders")
    if body is not None:
        hb_text = body.findtext("Ping:HeartbeatInterval")
        if hb_text is not None:
            try:
                heartbeat = int(hb_text)
            except ValueError:
                return _status("4")
            if heartbeat < settings.heartbeat_min:
                return _status("5", HeartbeatInterval=settings.heartbeat_min)
            if heartbeat > settings.heartbeat_max:
                return _status("5", HeartbeatInterval=settings.heartbeat_max)
        folders_el = body.find("Ping:Folders")
        if folders_el is not None:
            ids = []
            for f in folders_el.findall("Ping:Folder"):
                fid = f.findtext("Ping:Id")
                if not fid:
                    return _status("4")
                ids.append(fid)
            if not ids:
                return _status("4")
            if len(ids) > settings.max_ping_folders:
                return _status("6", MaxFolders=settings.max_ping_folders)
            folder_ids = ids
    if heartbeat is None or not folder_ids:
        return _status("3")
    if body is not None and (cached.get("heartbeat") != heartbeat
                             or cached.get("folders") != folder_ids):
        await server.state.save_state(user, StateWrite(
            req.device_id, CACHE, {"heartbeat": heartbeat, "folders": folder_ids}))

    by_id = {f.server_id: f for f in await server.items.list_folders(user)}
    if any(fid not in by_id for fid in folder_ids):
        return _status("7")                    # the device must FolderSync first
    watched = [by_id[fid] for fid in folder_ids]
    changed = await pending_changes(server, user, req.device_id, watched)
    if changed:
        return _status("2", folders=changed)

    # Hold.  A newer Ping of this device ends the older one at once.
    key = (user.id, req.device_id)
    previous = _held.pop(key, None)
    if previous is not None and not previous.called:
        previous.errback(Superseded())
    deadline = server.clock.seconds() + heartbeat
    while True:
        remaining = deadline - server.clock.seconds()
        if remaining <= 0:
            return _status("1")
        sub = server.notifier.subscribe(user.id, [*folder_ids, HIERARCHY])
        mine: Deferred[Any] = Deferred(lambda _d, s=sub: s.cancel())
        sub.addCallbacks(lambda v, m=mine: m.called or m.callback(v),
                         lambda f, m=mine: m.called or m.errback(f))
        _held[key] = mine
        timer = server.clock.callLater(remaining, lambda m=mine: m.called or m.callback(None))
        try:
            woken = await mine
        except Superseded:
            sub.cancel()
            return _status("1")
        except CancelledError:
            log.info("Ping of {device} ended by the client", device=req.device_id)
            raise
        finally:
            if timer.active():
                timer.cancel()
            if _held.get(key) is mine:
                del _held[key]
        if woken is None:
            sub.cancel()
            return _status("1")                # heartbeat: nothing changed
        if HIERARCHY in woken:
            return _status("7")
        by_id = {f.server_id: f for f in await server.items.list_folders(user)}
        if any(fid not in by_id for fid in folder_ids):
            return _status("7")
        changed = await pending_changes(server, user, req.device_id,
                                        [by_id[fid] for fid in folder_ids])
        if changed:
            return _status("2", folders=changed)
        # only the device's own writes: keep waiting until the heartbeat
