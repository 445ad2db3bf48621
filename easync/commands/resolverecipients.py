"""ResolveRecipients (MS-ASCMD 2.2.1.15): names/addresses → the user's contacts and
easync's accounts.

``ResolveRecipients/{Status 1, Response*/{To, Status, RecipientCount, Recipient*/
{Type, DisplayName, EmailAddress}}}``, one Response per ``To``.  An address (bare or
"Name <addr>") matches exactly; anything else matches contacts (FileAs, first/last
name, company) and accounts (login, display name) containing it, case-insensitive.
Accounts come first as Type 1 (GAL), then contacts as Type 2, one Recipient per
e-mail address.  Response Status: 1 one recipient, 2 several (up to
MaxAmbiguousRecipients, default 19), 3 more than that (the list is cut), 4 none.
Availability and certificates are not offered (easync has no free/busy source and no
certificates): those parts are simply absent.  A request without ``To`` is Status 5,
and so is one with more than ``MAX_TO`` (100) ``To``: MS-ASCMD 2.2.3.183 allows 1...100
and says the server SHOULD answer more with a protocol status error, which is Status 5
("the range exceeded limits", MS-ASCMD 2.2.3.177.12), as Exchange does; nothing is
resolved for such a request.

Cost: a scan of the user's contact folders per request (the store has no search);
ResolveRecipients is rare (composing mail, adding attendees).
"""

from __future__ import annotations

from typing import Any

from easync.commands.search import gal_users
from easync.commands.settings import display_name, user_email
from easync.context import EasRequest, EasResponse, EasServer
from easync.items import email_address
from easync.wbxml.element import Element

RR = "ResolveRecipients:"
DEFAULT_AMBIGUOUS = 19
MAX_AMBIGUOUS = 100
MAX_TO = 100  # MS-ASCMD 2.2.3.183: 1...100 To elements per request
_PAGE = 500


def contact_name(data: dict[str, Any]) -> str:
    if data.get("FileAs"):
        return str(data["FileAs"])
    parts = [str(data[k]) for k in ("FirstName", "MiddleName", "LastName") if data.get(k)]
    return " ".join(parts) or str(data.get("CompanyName") or "")


def contact_addresses(data: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key in ("Email1Address", "Email2Address", "Email3Address"):
        addr = email_address(data.get(key))
        if addr and addr not in out:
            out.append(addr)
    return out


async def all_contacts(server: EasServer, req: EasRequest) -> list[dict[str, Any]]:
    """Every live contact's data, from every Contacts folder of the user."""
    out: list[dict[str, Any]] = []
    for folder in await server.items.list_folders(req.user):
        if folder.cls != "Contacts":
            continue
        cursor = 0
        while True:
            batch = await server.items.changes_since(req.user, folder.server_id, cursor, _PAGE)
            out.extend(c.item.data for c in batch.changes
                       if not c.deleted and c.item is not None)
            if not batch.more or batch.high <= cursor:
                break
            cursor = batch.high
    return out


def _recipient(rtype: str, name: str, addr: str) -> Element:
    el = Element(RR + "Recipient")
    el.add(RR + "Type", rtype)
    el.add(RR + "DisplayName", name or addr)
    el.add(RR + "EmailAddress", addr)
    return el


async def _resolve(server: EasServer, req: EasRequest, to: str,
                   contacts: list[dict[str, Any]]) -> list[Element]:
    found: list[Element] = []
    seen: set[tuple[str, str]] = set()

    def add(rtype: str, name: str, addr: str) -> None:
        if (rtype, addr) not in seen:
            seen.add((rtype, addr))
            found.append(_recipient(rtype, name, addr))

    wanted = email_address(to)
    if wanted:
        for user in await server.users.list_users():
            if (email_address(user_email(user)) or "") == wanted:
                add("1", display_name(user), user_email(user))
        for data in contacts:
            if wanted in contact_addresses(data):
                add("2", contact_name(data), wanted)
        return found
    q = to.strip().casefold()
    for user in await gal_users(server, to.strip()):
        add("1", display_name(user), user_email(user))
    for data in contacts:
        names = (contact_name(data), str(data.get("FirstName") or ""),
                 str(data.get("LastName") or ""), str(data.get("CompanyName") or ""),
                 f"{data.get('FirstName') or ''} {data.get('LastName') or ''}".strip())
        if any(q in n.casefold() for n in names if n):
            for addr in contact_addresses(data):
                add("2", contact_name(data), addr)
    return found


def _max_ambiguous(options: Element | None) -> int:
    text = options.findtext(RR + "MaxAmbiguousRecipients") if options is not None else None
    if text and text.strip().isdigit():
        return max(1, min(int(text.strip()), MAX_AMBIGUOUS))
    return DEFAULT_AMBIGUOUS


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    root = Element(RR + "ResolveRecipients")
    body = req.body
    tos = []
    if body is not None and body.tag == RR + "ResolveRecipients":
        tos = [(el.value or "").strip() for el in body.findall(RR + "To")]
    tos = [t for t in tos if t]
    if not tos or len(tos) > MAX_TO:
        root.add(RR + "Status", "5")
        return EasResponse(body=root, status="5")
    limit = _max_ambiguous(body.find(RR + "Options") if body is not None else None)
    contacts = await all_contacts(server, req)
    root.add(RR + "Status", "1")
    for to in tos:
        found = await _resolve(server, req, to, contacts)
        response = root.add(RR + "Response")
        response.add(RR + "To", to)
        if not found:
            status = "4"
        elif len(found) == 1:
            status = "1"
        elif len(found) <= limit:
            status = "2"
        else:
            status, found = "3", found[:limit]
        response.add(RR + "Status", status)
        response.add(RR + "RecipientCount", len(found))
        response.children.extend(found)
    return EasResponse(body=root, status="1")
