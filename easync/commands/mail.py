"""SendMail, SmartReply, SmartForward (MS-ASCMD 2.2.1.17, 2.2.1.19, 2.2.1.20).

easync keeps contacts, calendars and tasks and has no way to send mail, so every
submission is refused — never silently accepted: an empty 200 would tell the device
the message went out.

* 14.0+ (``ComposeMail:*`` WBXML): HTTP 200 with ``ComposeMail:<Cmd>/Status 137``
  (CommandNotSupported, MS-ASCMD 2.2.2).  It is a permanent condition, so the
  device reports the failure (the message stays in its Outbox with an error)
  instead of retrying: 110/111/120 would read as transient server or submission
  failures worth retrying, 101/107 would blame the message's content.
* 12.x (raw ``message/rfc822`` body, no WBXML status element exists for these
  commands): a bare HTTP 400.  Not 5xx (clients retry those), not 403 (AOSP reads
  403 as "provision again"), not 449/401 (provisioning/credentials loops).
"""

from __future__ import annotations

from easync.handler import EasHTTPError, EasRequest, EasResponse, EasServer
from easync.wbxml.element import Element

NOT_SUPPORTED = "137"


def refuse(req: EasRequest) -> EasResponse:
    """The answer to a mail submission ``req`` (SendMail/SmartReply/SmartForward)."""
    if req.v < (14, 0):
        raise EasHTTPError(400, f"{req.cmd}: easync does not send mail")
    root = Element(f"ComposeMail:{req.cmd}")
    root.add("ComposeMail:Status", NOT_SUPPORTED)
    return EasResponse(body=root, status=NOT_SUPPORTED)


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    """The handler of SendMail, SmartReply and SmartForward: see ``refuse``."""
    return refuse(req)
