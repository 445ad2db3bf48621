"""MeetingResponse (MS-ASCMD 2.2.1.11): accept / tentatively accept / decline from
the calendar.

easync keeps no mail, so ``RequestId`` must name a calendar item (the device answers
from its calendar); anything else — a meeting-request mail id, a Search LongId, an
event the user organises, a bad UserResponse — is Result Status 2 (invalid meeting
request).  On success the stored event gets ``ResponseType`` (3 accepted,
2 tentative, 4 declined), ``AppointmentReplyTime`` (now), ``BusyStatus`` (busy,
tentative, free) and the user's own attendee entry the same ``AttendeeStatus``;
with an ``InstanceId`` only that occurrence (an exception) changes.  A declined
event stays in the store — it is the CRM's record, shared with its other attendees —
and the Result then carries no CalendarId (MS-ASCMD 2.2.3.18).  No reply mail is
sent (``SendResponse`` is ignored).  Result Status 3 when the store refuses the
write.  A request with no ``Request`` is HTTP 400: the response schema has no
top-level Status to put an error in.  One of more than ``MAX_REQUESTS`` (MS-ASCMD
3.1.5.10's limit: each is a store transaction) is answered with one Result of
Status 103 from 14.0 (HTTP 400 below), nothing done.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from easync.commands.settings import user_email
from easync.handler import EasHTTPError, EasRequest, EasResponse, EasServer
from easync.items import email_address
from easync.items.convert import ItemError, apply_instance_change
from easync.model import Op
from easync.syncengine import publish_to_holders
from easync.wbxml.element import Element

MR = "MeetingResponse:"
#: MS-ASCMD 3.1.5.10: the most Request elements of one request (more: Status 103)
MAX_REQUESTS = 100
# UserResponse → (ResponseType / AttendeeStatus, BusyStatus)
_OUTCOME = {"1": (3, 2), "2": (2, 1), "3": (4, 0)}


def respond(data: dict[str, Any], user_addr: str, user_response: str, now: str,
            instance_id: str | None) -> dict[str, Any]:
    """The event after the user's answer (ItemError for a bad InstanceId)."""
    response_type, busy = _OUTCOME[user_response]
    changes: dict[str, Any] = {"ResponseType": response_type, "BusyStatus": busy,
                               "AppointmentReplyTime": now}
    attendees = []
    for att in data.get("Attendees") or []:
        att = dict(att)
        if email_address(att.get("Email")) == user_addr:
            att["AttendeeStatus"] = response_type
        attendees.append(att)
    if attendees:
        changes["Attendees"] = attendees
    if instance_id:
        return apply_instance_change(data, instance_id, changes)
    new = dict(data)
    new.update(changes)
    return new


async def _one(server: EasServer, req: EasRequest, el: Element, user_addr: str,
               now: str) -> Element:
    request_id = (el.findtext(MR + "RequestId") or "").strip()
    collection_id = (el.findtext(MR + "CollectionId") or "").strip()
    user_response = (el.findtext(MR + "UserResponse") or "").strip()
    instance_id = (el.findtext(MR + "InstanceId") or el.findtext("AirSyncBase:InstanceId")
                   or "").strip() or None
    out = Element(MR + "Result")
    if request_id:
        out.add(MR + "RequestId", request_id)

    def status(code: str) -> Element:
        out.add(MR + "Status", code)
        return out

    if not request_id or user_response not in _OUTCOME:
        return status("2")
    items = await server.items.get_items(req.user, [request_id])
    item = items[0] if items else None
    if item is None or item.cls != "Calendar" or (
            collection_id and collection_id != item.folder_id):
        return status("2")
    if email_address(item.data.get("OrganizerEmail")) == user_addr:
        return status("2")
    try:
        new = respond(item.data, user_addr, user_response, now, instance_id)
    except ItemError:
        return status("2")
    results = await server.items.apply(req.user, item.folder_id, [
        Op(kind="change", server_id=item.server_id, data=new, cls="Calendar")])
    if not results or not results[0].ok:
        return status("3")
    await publish_to_holders(server, req.user, item.folder_id)   # (shared calendars)
    status("1")
    if user_response != "3":
        out.add(MR + "CalendarId", item.server_id)
    return out


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    body = req.body
    requests = []
    if body is not None and body.tag == MR + "MeetingResponse":
        requests = body.findall(MR + "Request")
    if not requests:
        raise EasHTTPError(400, "MeetingResponse without Request")
    if len(requests) > MAX_REQUESTS:
        if req.v < (14, 0):
            raise EasHTTPError(400, f"MeetingResponse of {len(requests)} Request")
        root = Element(MR + "MeetingResponse")
        root.add(MR + "Result").add(MR + "Status", "103")
        return EasResponse(body=root, status="103")
    user_addr = email_address(user_email(req.user)) or user_email(req.user).lower()
    now = datetime.fromtimestamp(server.clock.seconds(), UTC).strftime("%Y%m%dT%H%M%SZ")
    root = Element(MR + "MeetingResponse")
    for el in requests:
        root.append(await _one(server, req, el, user_addr, now))
    statuses = {r.findtext(MR + "Status") or "" for r in root.children}  # each has one
    return EasResponse(body=root, status=statuses.pop() if len(statuses) == 1 else "mixed")
