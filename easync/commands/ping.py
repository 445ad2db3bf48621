"""Ping (MS-ASCMD 2.2.1.13): hold the request until a watched folder changes.

Request ``Ping/{HeartbeatInterval, Folders/Folder*/{Id, Class}}``; both parts are
cached per device (state blob ``"ping"``) and reused when a later Ping omits them
(an empty body reuses both).  Response ``Ping/{Status, [Folders/Folder*],
[HeartbeatInterval], [MaxFolders]}`` with Status

1. the heartbeat expired with no change (also: a newer long poll of the device ended
   this one);
2. changes in the folders listed;
3. HeartbeatInterval or Folders missing and nothing cached;
4. malformed: a non-numeric HeartbeatInterval, an empty Folders, a Folder without Id;
5. HeartbeatInterval out of ``--heartbeat-min``…``--heartbeat-max``: the response
   carries the limit crossed;
6. more folders than ``--max-ping-folders``: the response carries MaxFolders;
7. a folder the device does not know (or that is gone), or the hierarchy changed
   since the device's last FolderSync: the device must FolderSync.

"Changes" are counted against the last SyncKey the device holds for each folder (CMD
3.1.5.8), leaving out the device's own writes; a folder the device never synced
counts as changed only when a change to it arrives while the Ping is held.  A held
Ping is a ``easync.push.Hold`` (a hub listener and a timer, no thread): it is
released by a change, by its heartbeat, by a newer Ping or Sync-Wait of the same
device, or dropped when the client disconnects (the HTTP layer cancels the handler).

A Ping's first look costs no transaction of its own (issue #12): its parameter
cache, the hierarchy the device holds, the watched folders' states and the folders
are read with the user and the device (``request_reads``, one transaction), and the
``easync.notify.Lookout`` made before that read hands the hold what changed between
the read and the hold's listening.

A woken Ping reads the store only when the change does not say enough (issue #12):
a change published with a ``ChangeHint`` (a device's Sync, another node's NOTIFY,
an import's ``announce``) is judged against what the Ping learnt of the device at
its start (its cursor in each folder, whether a FilterType window applies), so
10,000 Pings woken by one change answer with no store read at all.  The device's own
writes never wake it.  Changes without a hint (hierarchy, CRM, MoveItems, the SQLite
poller, a hub reconnect) are looked up as before.  (What was learnt at the start is
not trusted beyond the hold: a change committed after it has a modseq past any cursor
the device had; only a device that synced that very change through another connection
while its Ping is held gets a Status 2 and an empty Sync, as when a change comes just
after its Sync.)
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from functools import lru_cache
from typing import Any

from twisted.logger import Logger

from easync.commands import folders as hierarchy
from easync.commands.provisioning import access_refused
from easync.deviceaccess import ACCESS
from easync.handler import EasRequest, EasResponse, EasServer
from easync.interfaces import ChangeHint
from easync.items import convert
from easync.model import Folder, StateWrite
from easync.push import ALL
from easync.requestread import CommandRead, state_read
from easync.syncengine import SyncEngine, expired, state_name
from easync.wbxml.codec import encode
from easync.wbxml.element import E, Element

log = Logger()

CACHE = "ping"
HIERARCHY = "hierarchy"     # the change hub's name for "the folder list changed"


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


@lru_cache(maxsize=4096)
def _changed_answer(folders: tuple[str, ...]) -> tuple[Element, bytes]:
    """Ping Status 2 with its Folders (CMD 2.2.1.13), encoded once per folder list: a
    change that concerns 10,000 held Pings of a few folder lists runs the encoder a few
    times, not 10,000 (issue #12 point 1).  The tree is shared: not to be changed."""
    body = E("Ping:Ping", E("Ping:Status", "2"))
    listed = body.add("Ping:Folders")
    for fid in folders:
        listed.add("Ping:Folder", fid)
    return body, encode(body)


def _changed(folders: Iterable[str]) -> EasResponse:
    """The Status 2 answer naming ``folders``, ready-made (``_changed_answer``)."""
    body, wbxml = _changed_answer(tuple(folders))
    return EasResponse(body, status="2", wbxml=wbxml)


#: what a held Ping knows of a folder from its look at the start: None, the device
#: never synced it; else (its cursor, whether every change after the cursor is due to
#: the device: no FilterType window, nothing held outside one)
Mark = tuple[int, bool] | None


def _mark(st: dict[str, Any] | None, folder: Folder, now: float) -> Mark:
    if st is None:
        return None
    # (as SyncEngine.collect decides the window the changes are read with)
    if "win" in st:
        windowless = not st["win"]
    else:
        windowless = st.get("filter") is None or convert.filter_window(
            int(st["filter"]), folder.cls, now) is None
    plain = windowless and not st.get("outside") and not st.get("rw")
    return int(st["cursor"]), plain


async def pending_changes(server: EasServer, user: Any, device_id: str,
                          folders: list[Folder], woken: Container[str] | None = None,
                          marks: dict[str, Mark] | None = None,
                          states: dict[str, dict[str, Any] | None] | None = None
                          ) -> list[str]:
    """The watched folders holding changes this device has not synced yet.

    ``woken``: folders the hub reported changed since the Ping started; one the
    device never synced counts as changed only if it is among them.  ``marks``:
    filled with what the device has synced of each folder.  ``states``: the
    device's sync states as read with the request (those not there are read)."""
    engine = SyncEngine(server, states)
    now = server.clock.seconds()
    out = []
    for folder in folders:
        st = await engine.get_state(user, device_id, state_name(folder.server_id))
        if marks is not None:
            marks[folder.server_id] = _mark(st, folder, now)
        if folder.modseq == 0:
            continue
        if st is None:
            if woken and folder.server_id in woken:
                out.append(folder.server_id)
        elif expired(st, folder):
            out.append(folder.server_id)    # its Sync answers Status 3: let it come
        elif st.get("owed"):
            # the server's version of an item a read-only folder refused is owed to
            # the device (its write came with GetChanges 0): its Sync brings it
            out.append(folder.server_id)
        elif folder.modseq > st["cursor"] and (
                await engine.collect(user, folder, st, 1, now))[0]:
            out.append(folder.server_id)
    return out


def _from_hints(news: dict[str, ChangeHint | None], marks: dict[str, Mark],
                device_id: str) -> tuple[set[str], set[str]]:
    """What the hub's hints tell of the woken folders without reading the store:
    (folders changed for this device, folders to look up).  A hinted change counts
    when the device never synced the folder (CMD 2.2.1.13: woken), or when it is not
    the device's own write, is past the device's cursor, and no window stands
    between (every change is then due to the device).  The device's own writes are
    never a change for it (they were left out as they came, ``Hold.own_ignored``)."""
    changed: set[str] = set()
    look: set[str] = set()
    for fid, hint in news.items():
        if fid not in marks:            # not learnt at the start: look it up
            look.add(fid)
            continue
        mark = marks[fid]
        if hint is None:
            look.add(fid)
        elif mark is None:
            changed.add(fid)
        elif hint.device_id == device_id:
            continue
        elif not mark[1]:
            look.add(fid)
        elif hint.modseq > mark[0]:
            changed.add(fid)
    return changed, look


def _parse(body: Any, cached: dict[str, Any], settings: Any
           ) -> EasResponse | tuple[int | None, list[str] | None]:
    """The request's HeartbeatInterval and folder ids (None: not given), or the
    error response."""
    heartbeat: int | None = cached.get("heartbeat")
    folder_ids: list[str] | None = cached.get("folders")
    if body is None:
        return heartbeat, folder_ids
    if any(c.tag not in ("Ping:HeartbeatInterval", "Ping:Folders") for c in body.children):
        return _status("4")
    hb_text = body.findtext("Ping:HeartbeatInterval")
    if hb_text is not None:
        try:
            heartbeat = int(hb_text.strip())
        except ValueError:
            return _status("4")
        if heartbeat < settings.heartbeat_min:
            return _status("5", HeartbeatInterval=settings.heartbeat_min)
        if heartbeat > settings.heartbeat_max:
            return _status("5", HeartbeatInterval=settings.heartbeat_max)
    folders_el = body.find("Ping:Folders")
    if folders_el is not None:
        ids: list[str] = []
        for f in folders_el.children:
            if f.tag != "Ping:Folder":
                return _status("4")
            fid = (f.findtext("Ping:Id") or "").strip()
            if not fid:
                return _status("4")
            if fid not in ids:
                ids.append(fid)
        if not ids:
            return _status("4")
        if len(ids) > settings.max_ping_folders:
            return _status("6", MaxFolders=settings.max_ping_folders)
        folder_ids = ids
    return heartbeat, folder_ids


async def _hierarchy_changed(server: EasServer, req: EasRequest, folder_ids: list[str],
                             current: list[Folder],
                             states: dict[str, dict[str, Any] | None] | None = None) -> bool:
    """Must the device FolderSync before this Ping?  Yes when a watched folder is
    unknown or gone, or when the folders differ from what its last FolderSync gave it
    (a device that never ran FolderSync is judged by the folder ids alone).
    ``states``: as read with the request."""
    ids = {f.server_id for f in current}
    if any(fid not in ids for fid in folder_ids):
        return True
    known = await state_read(server.state, req.user, req.device_id, hierarchy.STATE_NAME,
                             states)
    return known is not None and known.get("snapshot") != hierarchy.snapshot_of(current)


def _body_folders(body: Any, most: int) -> list[str] | None:
    """The folder ids the body names (None: no Folders), at most ``most`` of them
    (leniently: ``_parse`` judges the request)."""
    folders_el = body.find("Ping:Folders") if body is not None else None
    if folders_el is None:
        return None
    ids = [(f.findtext("Ping:Id") or "").strip() for f in folders_el.children
           if f.tag == "Ping:Folder"]
    return [fid for fid in dict.fromkeys(ids) if fid][:most]


def request_reads(server: EasServer, user: Any, device_id: str, body: Any) -> CommandRead:
    """What a Ping looks at first, for the HTTP layer to read with the request in one
    transaction (issue #12): its parameter cache, the hierarchy the device holds
    (Status 7), the sync state of each watched folder (the body's Folders, else the
    cached ones: ``follow``) and, when the item store is the state store, the
    folders.  ``listen``: a lookout notes the user's changes from before that read
    until the hold listens (``easync.notify.Lookout``)."""
    most = server.settings.max_ping_folders
    ids = _body_folders(body, most)
    states = [CACHE, hierarchy.STATE_NAME]
    if ids is not None:
        states += [state_name(fid) for fid in ids]
    return CommandRead(states, server.items is server.state,
                       CACHE if ids is None else None, most, listen=True)


async def _parameters(server: EasServer, req: EasRequest,
                      states: dict[str, dict[str, Any] | None] | None = None
                      ) -> EasResponse | tuple[int, list[str]]:
    """The Ping's heartbeat and folder ids — or the answer when it cannot be held.
    Everything looked at here is dropped before the hold.  ``states``: as read with
    the request."""
    user = req.user
    cached = await state_read(server.state, user, req.device_id, CACHE, states) or {}
    parsed = _parse(req.body, cached, server.settings)
    if isinstance(parsed, EasResponse):
        return parsed
    heartbeat, folder_ids = parsed
    if heartbeat is None or not folder_ids:
        return _status("3")
    if req.body is not None and (cached.get("heartbeat") != heartbeat
                                 or cached.get("folders") != folder_ids):
        await server.state.save_state(user, StateWrite(
            req.device_id, CACHE, {"heartbeat": heartbeat, "folders": folder_ids}))
    return heartbeat, folder_ids


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    user = req.user
    # A new Ping from this device: the device has given up its previous long poll.
    server.holds.supersede(user.id, req.device_id)
    # what the HTTP layer read with the request (one transaction, issue #12): the
    # first look uses it; a woken Ping reads anew
    pre, req.preloaded = req.preloaded, None
    lookout = pre.lookout if pre is not None else None
    states = pre.states if pre is not None else None
    got = await _parameters(server, req, states)
    if isinstance(got, EasResponse):
        if lookout is not None:
            lookout.close()
        return got
    heartbeat, folder_ids = got
    del got
    # what a held Ping does not need, it does not keep (the request's snapshot was
    # taken out of ``req`` above: only ``pre`` refers to it, dropped after the look)
    req.body = req.device = None
    # Listen first, then look: a change committed in between still wakes us.  The
    # folders too are looked at only once listening: a folder deleted (and
    # announced) just after the look wakes the Ping, which then answers 7 (issue #10
    # point 11), instead of missing the news and answering 1 at its heartbeat.  What
    # was read with the request is from before the hold listened: the lookout made
    # before that read tells the hold what changed since (in this process or, through
    # the poller or NOTIFY, in another).
    hold = server.holds.start(user.id, req.device_id, "Ping",
                              [*folder_ids, HIERARCHY, ACCESS], heartbeat, owner=req)
    if lookout is not None:
        lookout.hand_over(hold, hold.folders)
        lookout = None
    try:
        if pre is not None and pre.folders is not None:
            current = pre.folders
        else:
            current = await server.items.list_folders(user)
        pre = None
        if await _hierarchy_changed(server, req, folder_ids, current, states):
            return _status("7")
        by_id = {f.server_id: f for f in current}
        marks: dict[str, Mark] = {}
        changed = await pending_changes(server, user, req.device_id,
                                        [by_id[fid] for fid in folder_ids], marks=marks,
                                        states=states)
        if changed:
            return _changed(changed)
        # from now on the device's own writes in the folders it syncs are no news
        hold.own_ignored = frozenset(f for f, m in marks.items() if m is not None)
        del by_id, current, changed
        states = None
        woken: set[str] = set()         # every folder woken for since the Ping began
        while True:
            await hold.wait()
            if hold.changed:
                woken_at = hold.woken_at
                news = hold.take()
                if ACCESS in news or ALL in news:
                    # the user's device access changed (a block, a quarantine, a
                    # rule): this device may no longer sync; one read of its record
                    refused = await access_refused(server, req)
                    if refused is not None:
                        return refused
                    news.pop(ACCESS, None)
                    if not news:
                        continue
                woken.update(news)
                tree = HIERARCHY in news or ALL in news
                found: set[str]
                look: set[str]
                if ALL in news:
                    found, look = set(), set(folder_ids)
                else:
                    # what the changes themselves say: no store read (issue #12)
                    found, look = _from_hints(
                        {f: h for f, h in news.items() if f != HIERARCHY}, marks,
                        req.device_id)
                if look or tree:
                    current = await server.items.list_folders(user)
                    if tree and await _hierarchy_changed(server, req, folder_ids, current):
                        return _status("7")
                    by_id = {f.server_id: f for f in current}
                    if any(fid not in by_id for fid in folder_ids):
                        return _status("7")     # a watched folder is gone
                    found.update(await pending_changes(
                        server, user, req.device_id,
                        [by_id[fid] for fid in folder_ids if fid in look], woken))
                    del by_id, current
                if found:
                    resp = _changed([f for f in folder_ids if f in found])
                    resp.woken = woken_at
                    return resp
                del news, found, look
                # only the device's own writes: keep waiting until the heartbeat
            elif hold.reason is not None:
                return _status("1")             # heartbeat, or a newer Ping took over
    finally:
        hold.end()
