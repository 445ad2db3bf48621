"""The EAS commands: one static table from the command name (``Cmd=``) to its handler.

Every handler is imported here, explicitly: a command module that cannot be imported
stops the server at start instead of silently vanishing from OPTIONS.  The HTTP layer
(``easync.http.resource``) advertises exactly this table in ``MS-ASProtocolCommands``
(a command whose ``since`` version the server does not offer left out) and dispatches
through it; each handler is ``async def (server, req) -> EasResponse``
(``easync.handler``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from easync.commands import (
    find,
    folders,
    getitemestimate,
    itemoperations,
    mail,
    meetingresponse,
    moveitems,
    ping,
    provision,
    resolverecipients,
    search,
    settings,
    sync,
)
from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import User
from easync.requestread import CommandRead
from easync.wbxml.element import Element

Handler = Callable[[EasServer, EasRequest], Coroutine[Any, Any, EasResponse]]
#: what a command reads first, read with the request in one transaction
Reads = Callable[[EasServer, User, str, Element | None], CommandRead]


def _sync_reads(server: EasServer, user: User, device_id: str, body: Element | None
                ) -> CommandRead:
    """Sync's first reads; a Sync that asks to be held (Wait or HeartbeatInterval,
    MS-ASCMD 2.2.3.194/2.2.3.84) gets a lookout, as a Ping does."""
    states, folders_too = sync.request_reads(server, user, device_id, body)
    held = body is not None and (body.find("AirSync:Wait") is not None
                                 or body.find("AirSync:HeartbeatInterval") is not None)
    return CommandRead(states, folders_too, listen=held and folders_too)


@dataclass(frozen=True)
class Command:
    """One EAS command: its handler and how its request looks."""

    name: str
    root: str                  # the root element of its WBXML body
    handle: Handler
    empty_ok: bool = False     # the body may be empty (a cached request reused)
    mime_body: bool = False    # below 14.0 the body is raw MIME, not WBXML
    long_poll: bool = False    # holds the request open: no request time limit
    reads: Reads | None = None  # read with the request (``req.preloaded``)
    # the first protocol version with this command: OPTIONS lists it only when the
    # server offers that version (Find: 16.1, MS-ASCMD 2.2.3.69)
    since: tuple[int, int] = (0, 0)


def _table(*commands: Command) -> dict[str, Command]:
    return {c.name: c for c in commands}


COMMANDS: dict[str, Command] = _table(
    Command("Sync", "AirSync:Sync", sync.handle, empty_ok=True, long_poll=True,
            reads=_sync_reads),
    Command("FolderSync", "FolderHierarchy:FolderSync", folders.folder_sync,
            reads=folders.request_reads),
    Command("FolderCreate", "FolderHierarchy:FolderCreate", folders.folder_create),
    Command("FolderUpdate", "FolderHierarchy:FolderUpdate", folders.folder_update),
    Command("FolderDelete", "FolderHierarchy:FolderDelete", folders.folder_delete),
    Command("GetItemEstimate", "ItemEstimate:GetItemEstimate", getitemestimate.handle),
    Command("ItemOperations", "ItemOperations:ItemOperations", itemoperations.handle),
    Command("MoveItems", "Move:MoveItems", moveitems.handle),
    Command("Settings", "Settings:Settings", settings.handle),
    Command("Provision", "Provision:Provision", provision.handle),
    Command("Ping", "Ping:Ping", ping.handle, empty_ok=True, long_poll=True,
            reads=ping.request_reads),
    Command("SendMail", "ComposeMail:SendMail", mail.handle, empty_ok=True, mime_body=True),
    Command("SmartReply", "ComposeMail:SmartReply", mail.handle, empty_ok=True,
            mime_body=True),
    Command("SmartForward", "ComposeMail:SmartForward", mail.handle, empty_ok=True,
            mime_body=True),
    Command("MeetingResponse", "MeetingResponse:MeetingResponse", meetingresponse.handle),
    Command("Search", "Search:Search", search.handle),
    Command("ResolveRecipients", "ResolveRecipients:ResolveRecipients",
            resolverecipients.handle),
    Command("Find", "Find:Find", find.handle, since=find.SINCE),
)

__all__ = ["COMMANDS", "Command", "Handler", "Reads"]
