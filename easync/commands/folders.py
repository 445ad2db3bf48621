"""FolderSync, FolderCreate, FolderUpdate, FolderDelete (MS-ASCMD 2.2.1.3–2.2.1.6).

The hierarchy a device holds is kept per device in the state blob ``"folders"``::

    {"counter": 7,                      # last hierarchy key issued (keys are "1", "2", …)
     "key": "7", "snapshot": {server_id: [parent_id, name, type], …},
     "prev_key": "6", "prev_snapshot": {…}}   # the one before, for a resent key

A FolderSync with the current key answers the differences between ``snapshot`` and
the store; with ``prev_key`` (the device never got our last answer) the differences
from ``prev_snapshot`` — the same answer again when nothing changed since.  Any
other key is Status 9; SyncKey 0 sends everything as Add.  A FolderSync 0 never
touches item sync states.

FolderCreate/Update/Delete need the current key; each success issues a new key and
applies the device's own change to its snapshot (and only that change), so its
next FolderSync neither repeats it nor misses a concurrent change from elsewhere.

A folder someone else shares with the user (``Folder.owner`` set), or any read-only
folder (``Folder.read_only``: e.g. a CRM store's company address book), cannot be renamed,
moved or deleted from the phone: FolderUpdate Status 2, FolderDelete Status 3 (the
"special folder" answers of MS-ASCMD 2.2.3.177.6 and 2.2.3.177.4); nothing can be
created under it (Status 5: it is not one of the user's folders, so no parent of theirs).

Status choices: only user Calendar/Contacts/Tasks folders (Type 13/14/15) can be
created — easync keeps no mail or notes, and a folder of another type would be an
empty shell the device believes holds its mail — so other types get Status 10
("incorrectly formatted request": not transient, the client must not retry; 3
would wrongly blame the parent folder).  Moving a folder under itself or one of
its descendants is also Status 10.
"""

from __future__ import annotations

from typing import Any

from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import USER_FOLDER_TYPE, Folder, StateWrite, User
from easync.requestread import CommandRead, state_read
from easync.wbxml.element import Element

STATE_NAME = "folders"
NS = "FolderHierarchy:"
CREATABLE_TYPES = frozenset(USER_FOLDER_TYPE.values())  # 13, 14, 15

Snapshot = dict[str, list[Any]]


def snapshot_of(folders: list[Folder]) -> Snapshot:
    """The hierarchy as the device sees it: server_id → [parent_id, name, type]."""
    return {f.server_id: [f.parent_id, f.name, int(f.type)] for f in folders
            if 1 <= int(f.type) <= 19}


def _depth(snap: Snapshot, sid: str) -> int:
    """How many ancestors ``sid`` has in ``snap`` (cycles and unknown parents stop it)."""
    depth, seen, node = 0, {sid}, snap[sid][0]
    while node in snap and node not in seen:
        seen.add(node)
        depth += 1
        node = snap[node][0]
    return depth


def _parents_first(ids: list[str], snap: Snapshot) -> list[str]:
    """``ids`` ordered so that a folder comes after its parent (stable otherwise)."""
    return sorted(ids, key=lambda sid: _depth(snap, sid))


def hierarchy_diff(old: Snapshot, new: Snapshot) -> list[Element]:
    """Add/Update/Delete elements that turn ``old`` into ``new``."""
    out: list[Element] = []
    added = [sid for sid in new if sid not in old]
    changed = [sid for sid in new if sid in old and list(old[sid]) != list(new[sid])]
    deleted = [sid for sid in old if sid not in new]
    for sid in deleted:
        el = Element(NS + "Delete")
        el.add(NS + "ServerId", sid)
        out.append(el)
    for tag, ids in (("Add", _parents_first(added, new)), ("Update", changed)):
        for sid in ids:
            parent, name, ftype = new[sid]
            el = Element(NS + tag)
            el.add(NS + "ServerId", sid)
            el.add(NS + "ParentId", parent)
            el.add(NS + "DisplayName", name)
            el.add(NS + "Type", ftype)
            out.append(el)
    return out


async def load_state(server: EasServer, req: EasRequest) -> dict[str, Any] | None:
    return await server.state.get_state(req.user, req.device_id, STATE_NAME)


async def save_state(server: EasServer, req: EasRequest, state: dict[str, Any]) -> None:
    await server.state.save_state(req.user, StateWrite(req.device_id, STATE_NAME, state))


def advance(state: dict[str, Any] | None, snapshot: Snapshot, *,
            keep_prev: bool = True) -> dict[str, Any]:
    """A new state whose current key is fresh and holds ``snapshot``; the current
    key (if any, and ``keep_prev``) becomes the previous one."""
    old = state or {}
    counter = int(old.get("counter") or 0) + 1
    new: dict[str, Any] = {"counter": counter, "key": str(counter), "snapshot": snapshot}
    if keep_prev and old.get("key"):
        new["prev_key"] = old["key"]
        new["prev_snapshot"] = old.get("snapshot") or {}
    return new


def _status_only(tag: str, status: str) -> EasResponse:
    root = Element(NS + tag)
    root.add(NS + "Status", status)
    return EasResponse(body=root, status=status)


# --------------------------------------------------------------------------- FolderSync

def request_reads(server: EasServer, user: User, device_id: str, body: Element | None
                  ) -> CommandRead:
    """What a FolderSync reads, for the HTTP layer to read with the request in one
    transaction: the hierarchy the device holds and, when the item store is the
    state store, the folders."""
    return CommandRead((STATE_NAME,), server.items is server.state)


async def folder_sync(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    if body is None or body.tag != NS + "FolderSync":
        return _status_only("FolderSync", "10")
    key = body.findtext(NS + "SyncKey")
    if key is None or not key.strip():
        return _status_only("FolderSync", "10")
    key = key.strip()

    # as read with the request (MS-ASCMD 2.2.1.5: one look at the hierarchy), else now
    pre, req.preloaded = req.preloaded, None
    state = await state_read(server.state, req.user, req.device_id, STATE_NAME,
                             pre.states if pre is not None else None)
    listed = pre.folders if pre is not None and pre.folders is not None else \
        await server.items.list_folders(req.user)
    del pre
    live = snapshot_of(listed)

    if key == "0":
        base: Snapshot = {}
        new_state = advance(state, live, keep_prev=False)
        await save_state(server, req, new_state)
        out_key = new_state["key"]
    elif state and key == state.get("key"):
        base = state.get("snapshot") or {}
        if base == live:
            out_key = key
        else:
            new_state = advance(state, live)
            await save_state(server, req, new_state)
            out_key = new_state["key"]
    elif state and key == state.get("prev_key"):
        # The device never saw our last answer: answer from what it really holds.
        base = state.get("prev_snapshot") or {}
        if live == (state.get("snapshot") or {}):
            out_key = state["key"]          # same answer as last time
        else:
            new_state = dict(advance(state, live, keep_prev=False))
            new_state["prev_key"] = state["prev_key"]
            new_state["prev_snapshot"] = base
            await save_state(server, req, new_state)
            out_key = new_state["key"]
    else:
        return _status_only("FolderSync", "9")

    entries = hierarchy_diff(base, live)
    root = Element(NS + "FolderSync")
    root.add(NS + "Status", "1")
    root.add(NS + "SyncKey", out_key)
    changes = root.add(NS + "Changes")
    changes.add(NS + "Count", len(entries))
    changes.children.extend(entries)
    return EasResponse(body=root, status="1")


# ------------------------------------------------------------------ Create/Update/Delete

async def _check_key(server: EasServer, req: EasRequest,
                     key: str) -> dict[str, Any] | None:
    state = await load_state(server, req)
    if not state or key.strip() != state.get("key"):
        return None
    return state


def _int_or_none(text: str | None) -> int | None:
    try:
        value = int((text or "").strip())
    except ValueError:
        return None
    return value


async def _commit(server: EasServer, req: EasRequest, state: dict[str, Any],
                  snapshot: Snapshot, command: str) -> Element:
    """``snapshot`` saved under a new sync key (the other devices told); the reply's
    root element for ``command`` with Status 1 and that key."""
    new_state = advance(state, snapshot)
    await save_state(server, req, new_state)
    server.notifier.publish(req.user.id, "hierarchy")
    root = Element(NS + command)
    root.add(NS + "Status", "1")
    root.add(NS + "SyncKey", str(new_state["key"]))
    return root


def _with_folder(state: dict[str, Any], folder: Folder) -> Snapshot:
    """The state's snapshot with ``folder`` (made or changed) in it."""
    snapshot = dict(state.get("snapshot") or {})
    snapshot[folder.server_id] = [folder.parent_id, folder.name, int(folder.type)]
    return snapshot


async def folder_create(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    if body is None or body.tag != NS + "FolderCreate":
        return _status_only("FolderCreate", "10")
    key = body.findtext(NS + "SyncKey")
    parent = body.findtext(NS + "ParentId")
    name = body.findtext(NS + "DisplayName")
    ftype = _int_or_none(body.findtext(NS + "Type"))
    if key is None or parent is None or name is None or not _usable_name(name) \
            or ftype is None:
        return _status_only("FolderCreate", "10")
    parent = parent.strip() or "0"
    if ftype not in CREATABLE_TYPES:
        return _status_only("FolderCreate", "10")
    state = await _check_key(server, req, key)
    if state is None:
        return _status_only("FolderCreate", "9")
    try:
        folder = await server.items.create_folder(req.user, parent, name, ftype)
    except ValueError as exc:
        return _status_only("FolderCreate", _value_error_status(exc))
    root = await _commit(server, req, state, _with_folder(state, folder), "FolderCreate")
    root.add(NS + "ServerId", folder.server_id)
    return EasResponse(body=root, status="1")


def _usable_name(name: str) -> bool:
    """A DisplayName a folder can have: not empty or blank, and no NUL (OPAQUE data
    may carry one; no store keeps it: PostgreSQL refuses it in text).  Otherwise the
    request is malformed, Status 10 (MS-ASCMD 2.2.3.177.3 FolderCreate, 2.2.3.177.6 FolderUpdate)."""
    return bool(name.strip()) and "\x00" not in name


def _value_error_status(exc: ValueError) -> str:
    reason = str(exc.args[0]) if exc.args else ""
    return {"exists": "2", "special": "3", "parent": "5", "name": "10",
            "type": "10"}.get(reason, "6")


def _is_under(parents: dict[str, str], node: str, ancestor: str) -> bool:
    """True when ``node`` is ``ancestor`` or lies below it (``parents``: id → parent id)."""
    seen: set[str] = set()
    while node and node != "0" and node not in seen:
        if node == ancestor:
            return True
        seen.add(node)
        node = parents.get(node, "0")
    return False


async def folder_update(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    if body is None or body.tag != NS + "FolderUpdate":
        return _status_only("FolderUpdate", "10")
    key = body.findtext(NS + "SyncKey")
    server_id = body.findtext(NS + "ServerId")
    parent = body.findtext(NS + "ParentId")
    name = body.findtext(NS + "DisplayName")
    if key is None or not (server_id or "").strip() or parent is None \
            or name is None or not _usable_name(name):
        return _status_only("FolderUpdate", "10")
    server_id = (server_id or "").strip()
    parent = parent.strip() or "0"
    state = await _check_key(server, req, key)
    if state is None:
        return _status_only("FolderUpdate", "9")
    folders = await server.items.list_folders(req.user)
    if any(f.server_id == server_id and (f.owner or f.read_only) for f in folders):
        # someone else's folder shared with the user: not the user's to rename or
        # move (MS-ASCMD 2.2.3.177.6 Status 2: "the specified folder is a special
        # folder ... Special folders cannot be updated")
        return _status_only("FolderUpdate", "2")
    parents = {f.server_id: f.parent_id for f in folders}
    if parent != "0" and (_is_under(parents, parent, server_id) or
                          any(f.server_id == parent and (f.owner or f.read_only)
                              for f in folders)):
        return _status_only("FolderUpdate", "10")
    try:
        folder = await server.items.update_folder(req.user, server_id, parent, name)
    except KeyError:
        return _status_only("FolderUpdate", "4")
    except ValueError as exc:
        return _status_only("FolderUpdate", _value_error_status(exc))
    root = await _commit(server, req, state, _with_folder(state, folder), "FolderUpdate")
    if any(f.server_id == server_id and f.shared_out for f in folders):
        await _tell_holders(server, req.user, server_id)
    return EasResponse(body=root, status="1")


async def folder_delete(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    if body is None or body.tag != NS + "FolderDelete":
        return _status_only("FolderDelete", "10")
    key = body.findtext(NS + "SyncKey")
    server_id = (body.findtext(NS + "ServerId") or "").strip()
    if key is None or not server_id:
        return _status_only("FolderDelete", "10")
    state = await _check_key(server, req, key)
    if state is None:
        return _status_only("FolderDelete", "9")
    listed = await server.items.list_folders(req.user)
    if any(f.server_id == server_id and (f.owner or f.read_only) for f in listed):
        # someone else's folder shared with the user (MS-ASCMD 2.2.3.177.4 Status 3:
        # "a special system folder [that] cannot be deleted by the client"); the
        # owner or an administrator unshares it
        return _status_only("FolderDelete", "3")
    try:
        await server.items.delete_folder(req.user, server_id)
    except KeyError:
        return _status_only("FolderDelete", "4")
    except ValueError as exc:
        return _status_only("FolderDelete", _value_error_status(exc))
    # Drop the folder and whatever went with it (subfolders the store removed too),
    # but only below it: anything else that vanished is for FolderSync to report.
    live_ids = {f.server_id for f in await server.items.list_folders(req.user)}
    old = state.get("snapshot") or {}
    old_parents = {sid: entry[0] for sid, entry in old.items()}
    snapshot: Snapshot = {}
    for sid, entry in old.items():
        if sid not in live_ids and _is_under(old_parents, sid, server_id):
            continue
        snapshot[sid] = entry
    root = await _commit(server, req, state, snapshot, "FolderDelete")
    if any(f.server_id == server_id and f.shared_out for f in listed):
        await _tell_holders(server, req.user, server_id)
    return EasResponse(body=root, status="1")


async def _tell_holders(server: EasServer, user: User, folder_id: str) -> None:
    """The owner renamed or deleted a folder others hold (a shared folder): their
    hierarchies changed too, their held Pings are told (Status 7)."""
    audience = getattr(server.items, "folder_audience", None)
    if audience is None:
        return
    for uid in await audience(folder_id):
        if uid != user.id:
            server.notifier.publish(uid, "hierarchy")

