"""GetItemEstimate (MS-ASCMD 2.2.1.9): how many changes the next Sync would send
(with the FilterType given: what a change of window would add and soft-delete)."""

from __future__ import annotations

from easync.handler import EasHTTPError, EasRequest, EasResponse, EasServer
from easync.syncengine import SyncEngine
from easync.wbxml.element import E

#: MS-ASCMD 2.2.3.29.1: at most 300 Collection elements in one request (each costs
#: the store a read).  More: MS-ASCMD 3.1.5.10's answer to a request over the limit,
#: the top-level Status 103 from 14.0 (HTTP 400 below), nothing estimated
MAX_COLLECTIONS = 300


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    colls = body.find("ItemEstimate:Collections") if body is not None else None
    asked = colls.findall("ItemEstimate:Collection") if colls is not None else []
    if len(asked) > MAX_COLLECTIONS:
        if req.v < (14, 0):
            raise EasHTTPError(400, f"GetItemEstimate of {len(asked)} collections")
        return EasResponse(E("ItemEstimate:GetItemEstimate", E("ItemEstimate:Status", "103")),
                           status="103")
    if not asked:
        return EasResponse(E("ItemEstimate:GetItemEstimate", E("ItemEstimate:Status", "2")),
                           status="2")
    folders = {f.server_id: f for f in await server.items.list_folders(req.user)}
    engine = SyncEngine(server)
    root = E("ItemEstimate:GetItemEstimate")
    statuses = []
    for coll in asked:
        cid = coll.findtext("ItemEstimate:CollectionId") or ""
        key = coll.findtext("AirSync:SyncKey")
        filter_type = None
        opts = coll.find("AirSync:Options")
        # MS-ASCMD 2.2.3.68.1: in airsync:Options from 14.0, a child of Collection
        # itself at 12.x (airsync:FilterType; some clients spell it in this namespace)
        ft = (opts.findtext("AirSync:FilterType") if opts is not None
              else coll.findtext("AirSync:FilterType") or
              coll.findtext("ItemEstimate:FilterType"))
        if ft:
            try:
                filter_type = int(ft)
            except ValueError:
                filter_type = None
        folder = folders.get(cid)
        if folder is None:
            status, estimate = "2", 0
        elif key is None:
            status, estimate = "4", 0
        else:
            status, estimate = await engine.estimate(req.user, req.device_id, folder, key,
                                                     filter_type)
        statuses.append(status)
        resp = root.add("ItemEstimate:Response")
        resp.add("ItemEstimate:Status", status)
        c = resp.add("ItemEstimate:Collection")
        c.add("ItemEstimate:CollectionId", cid)
        if status == "1":
            c.add("ItemEstimate:Estimate", estimate)
    return EasResponse(root, status=",".join(statuses))
