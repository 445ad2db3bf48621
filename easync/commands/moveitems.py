"""MoveItems (MS-ASCMD 2.2.1.12): move contacts/events/tasks between folders.

``MoveItems/Response*/{SrcMsgId, Status, DstMsgId}``, one Response per Move:
3 success (with the item's new ServerId in DstMsgId), 1 invalid source (no such
item, or not in SrcFldId), 2 invalid destination (no such folder, or DstFldId
missing), 4 source and destination are the same folder, 5 the destination holds
another class of item (a contact into a calendar, anything into a mail folder).
Both folders are announced to the change hub, so other devices' Pings wake.
A MoveItems without any Move is 103 (InvalidXML) at the top level from 14.0, HTTP 400
before; so is one of more than ``MAX_MOVES`` (MS-ASCMD 3.1.5.10's limit: each Move is
a store transaction of its own), nothing moved.
"""

from __future__ import annotations

from easync.handler import EasHTTPError, EasRequest, EasResponse, EasServer
from easync.syncengine import publish_to_holders, record_own_move
from easync.wbxml.element import Element

M = "Move:"
#: MS-ASCMD 3.1.5.10: the most Move elements of one request (more: Status 103)
MAX_MOVES = 1000


async def _move_one(server: EasServer, req: EasRequest, el: Element,
                    folder_ids: set[str]) -> Element:
    src_id = (el.findtext(M + "SrcMsgId") or "").strip()
    src_folder = (el.findtext(M + "SrcFldId") or "").strip()
    dst_folder = (el.findtext(M + "DstFldId") or "").strip()
    out = Element(M + "Response")
    out.add(M + "SrcMsgId", src_id)

    def done(status: str) -> Element:
        out.add(M + "Status", status)
        return out

    if not src_id:
        return done("1")
    if src_folder and src_folder == dst_folder:
        return done("4")
    items = await server.items.get_items(req.user, [src_id])
    item = items[0] if items else None
    if item is None or (src_folder and item.folder_id != src_folder):
        return done("1")
    if not dst_folder or dst_folder not in folder_ids:
        return done("2")
    if dst_folder == item.folder_id:
        return done("4")
    try:
        new_id = await server.items.move_item(req.user, src_id, dst_folder)
    except KeyError as exc:
        return done("2" if exc.args and exc.args[0] == "dst" else "1")
    except ValueError:
        return done("5")
    # the moving device already knows: neither the Delete nor the Add is echoed to it
    await record_own_move(server, req.user, req.device_id, item.folder_id, src_id,
                          dst_folder, new_id)
    # (a folder others hold too wakes their devices: easync.syncengine)
    await publish_to_holders(server, req.user, item.folder_id)
    await publish_to_holders(server, req.user, dst_folder)
    done("3")
    out.add(M + "DstMsgId", new_id)
    return out


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    root = Element(M + "MoveItems")
    body = req.body
    moves = body.findall(M + "Move") if body is not None and body.tag == M + "MoveItems" else []
    if not moves or len(moves) > MAX_MOVES:
        # Nothing to answer per item.  From 14.0 the top-level Status takes the common
        # code for a request that fails schema validation (103 InvalidXML); 12.x has no
        # such code, and a malformed request there is a plain HTTP 400.
        if req.v < (14, 0):
            raise EasHTTPError(400, f"MoveItems of {len(moves)} Move")
        root.add(M + "Status", "103")
        return EasResponse(body=root, status="103")
    folder_ids = {f.server_id for f in await server.items.list_folders(req.user)}
    for el in moves:
        root.append(await _move_one(server, req, el, folder_ids))
    statuses = [r.findtext(M + "Status") or "" for r in root.children]
    return EasResponse(body=root, status=statuses[0] if len(set(statuses)) == 1 else "mixed")
