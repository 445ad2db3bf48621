"""ResolveRecipients (MS-ASCMD 2.2.1.15): names/addresses → the user's contacts and
easync's accounts.

``ResolveRecipients/{Status 1, Response*/{To, Status, RecipientCount, Recipient*/
{Type, DisplayName, EmailAddress}}}``, one Response per ``To``.  An address (bare or
"Name <addr>") matches exactly (case-insensitive: both sides are lower-cased by
``easync.items.email_address``): the accounts whose address it is, and the contacts
that have it as Email1/2/3Address.  Anything else is a name, matched as Exchange's
ambiguous name resolution does: a contact or an account matches when the name is the
*beginning* of one of its words or of a whole name (contacts: FirstName, MiddleName,
LastName, FileAs, CompanyName, NickName, "first last", "last first", "last, first";
accounts: login name, e-mail address, display name), case-insensitive
(``easync.lookup``) — "ada", "love", "ada lov" find Ada Lovelace, "ace" does not (it
did up to issue #10, when a substring of any of them matched).  Accounts come first as Type 1 (GAL), then
contacts as Type 2, one Recipient per e-mail address; a contact without an address is
no recipient.  Response Status: 1 one recipient, 2 several (up to
MaxAmbiguousRecipients, default 19, at most 100), 3 more than that (the list is cut),
4 none.  Availability and certificates are not offered (easync has no free/busy
source and no certificates): those parts are simply absent.  A request without ``To``
is Status 5, and so is one with more than ``MAX_TO`` (100) ``To``: MS-ASCMD 2.2.3.183
allows 1...100 and says the server SHOULD answer more with a protocol status error,
which is Status 5 ("the range exceeded limits", MS-ASCMD 2.2.3.177.12), as Exchange
does; nothing is resolved for such a request.

Cost (issue #10 point 2): no scan of the user's contacts or of the accounts.  The
store answers from its indexes, in its thread, every query bounded by
MaxAmbiguousRecipients + 1: one query for the addresses of all the ``To`` (accounts)
and one (contacts), then per distinct name one for accounts and one for contacts.
So a request costs O(To * (log n + MaxAmbiguousRecipients)) whatever the account
holds.  An "address" longer than RFC 5321's 254 characters resolves to nothing, and a
DisplayName is cut to ``NAME_MAX`` characters, so the answer stays small.  Which
recipients are counted when more match than MaxAmbiguousRecipients + 1 contacts: the
first in the index's order; Status 3 then says the list is cut.
"""

from __future__ import annotations

from typing import Any

from easync.commands.search import gal_users
from easync.commands.settings import display_name, user_email
from easync.handler import EasRequest, EasResponse, EasServer
from easync.items import email_address
from easync.lookup import indexable_email, prefix_key, storable_email
from easync.model import Item, User
from easync.wbxml.element import Element

RR = "ResolveRecipients:"
DEFAULT_AMBIGUOUS = 19
MAX_AMBIGUOUS = 100
MAX_TO = 100  # MS-ASCMD 2.2.3.183: 1...100 To elements per request
NAME_MAX = 256  # characters of a DisplayName sent (Exchange's displayName limit)


def contact_name(data: dict[str, Any]) -> str:
    if data.get("FileAs"):
        return str(data["FileAs"])
    parts = [str(data[k]) for k in ("FirstName", "MiddleName", "LastName") if data.get(k)]
    return " ".join(parts) or str(data.get("CompanyName") or "")


def contact_addresses(data: dict[str, Any]) -> list[str]:
    """The contact's distinct addresses that can be recipients (``indexable_email``)."""
    out: list[str] = []
    for key in ("Email1Address", "Email2Address", "Email3Address"):
        addr = indexable_email(data.get(key))
        if addr and addr not in out:
            out.append(addr)
    return out


def _recipient(rtype: str, name: str, addr: str) -> Element:
    el = Element(RR + "Recipient")
    el.add(RR + "Type", rtype)
    el.add(RR + "DisplayName", (name or addr)[:NAME_MAX])
    el.add(RR + "EmailAddress", addr)
    return el


class _Found:
    """The recipients of one To, without duplicates (type, address)."""

    def __init__(self) -> None:
        self.items: list[Element] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, rtype: str, name: str, addr: str) -> None:
        if (rtype, addr) not in self._seen:
            self._seen.add((rtype, addr))
            self.items.append(_recipient(rtype, name, addr))

    def users(self, users: list[User]) -> None:
        for user in users:
            self.add("1", display_name(user), user_email(user))

    def contacts(self, contacts: list[Item], only: str | None = None) -> None:
        for item in contacts:
            for addr in contact_addresses(item.data):
                if only is None or addr == only:
                    self.add("2", contact_name(item.data), addr)


async def _lookups(server: EasServer, req: EasRequest, tos: list[str], limit: int
                   ) -> dict[str, _Found]:
    """The recipients of each distinct To, from the stores' indexed lookups, each
    bounded by ``limit`` matches."""
    addresses: dict[str, str | None] = {}     # To -> its address (None: unusable)
    names: dict[str, str] = {}                # To -> its lookup key
    for to in tos:
        addr = email_address(to)
        if addr:
            addresses[to] = addr if storable_email(addr) else None
        else:
            names[to] = prefix_key(to)
    wanted = sorted({a for a in addresses.values() if a})
    users_by = await server.users.find_users_by_emails(wanted, limit) if wanted else {}
    contacts_by = await server.items.find_contacts_by_emails(req.user, wanted, limit) \
        if wanted else {}
    out: dict[str, _Found] = {}
    for to, addr in addresses.items():
        found = out[to] = _Found()
        if addr:
            found.users(users_by.get(addr, []))
            found.contacts(contacts_by.get(addr, []), only=addr)
    by_key: dict[str, _Found] = {}
    for to, key in names.items():
        if key not in by_key:
            found = by_key[key] = _Found()
            if key:
                found.users(await gal_users(server, key, limit))
                found.contacts(await server.items.find_contacts_by_name(req.user, key, limit))
        out[to] = by_key[key]
    return out


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
    resolved = await _lookups(server, req, tos, limit + 1)
    root.add(RR + "Status", "1")
    for to in tos:
        found = resolved[to].items
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
