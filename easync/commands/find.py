"""Find (MS-ASCMD 2.2.1.2, protocol 16.1 only): the GAL, and the user's own contacts.

Request ``Find/{SearchId, ExecuteSearch/{GALSearchCriterion | MailBoxSearchCriterion}
/{Query, [Options/{Range, [DeepTraversal], [Picture]}]}}`` (MS-ASCMD 6.7); answer
``Find/{Status, [Response/{itemoperations:Store "Mailbox", Status, Result*, [Range],
Total}]}`` (MS-ASCMD 6.8, 2.2.3.153.2; the Store value is always "Mailbox",
2.2.3.178.1).

* ``GALSearchCriterion`` (Query is a string, 2.2.3.142.1): easync's accounts, found
  exactly as the GAL Search finds them (``easync.commands.search.gal_users``: a word
  of the login name, e-mail address or display name that *begins* with the query,
  ordered by display name, at most ``GAL_MAX_MATCHES`` looked at, so Total is at most
  1000).  Each Result carries only ``Properties`` with the gal:* elements
  (2.2.3.139.1) — no Class, ServerId or CollectionId: a directory entry is no item of
  the mailbox (Exchange sends none either, as pyactivesync's ``FindItem`` records).
* ``MailBoxSearchCriterion`` (Query holds FreeText, airsync:Class, airsync:CollectionId):
  easync keeps no mail, so the spec's only class, "Email" (2.2.3.27.1), finds nothing:
  Response Status 1, Total 0, no Result.  The user's *contacts* are searched when the
  Query names a Contacts folder of the user in CollectionId (whatever its Class), or
  when its Class is "Contacts" — an easync extension (the spec allows only "Email"),
  for clients that search the address book through Find.  Contacts are found as
  ResolveRecipients finds them (``IItemStore.find_contacts_by_name``: the FreeText
  begins a word of a name field, on the store's name index), and also by the
  beginning of an e-mail address, and a contact without any address (a phone number
  only) too — ResolveRecipients returns only contacts it can send to; each Result is
  ``{Class "Contacts", ServerId, CollectionId, Properties/gal:*}``, the contact's
  name, company, title, office, phones and first address shown in the gal:*
  elements Find's Properties allow.  A CollectionId the user has no folder of is
  Status 3 (FolderSync required, 2.2.3.177.2); one of another class finds nothing.
  With a CollectionId only that folder's contacts are searched (the index has a
  range per folder), so Total and the slice count that folder's matches only.
* Range (2.2.3.143.1): "m-n" with 0 <= m <= n <= 999, default 0-99; easync returns
  at most ``MAX_RESULTS`` (100) per answer ("the server can return fewer results than
  requested").  The answer's Range is the slice sent, absent when nothing is sent;
  Total is the number of matches (contacts: counted up to one past the requested
  Range, so a Total greater than the Range's end + 1 says more are there, 2.2.3.184.1).
  easync keeps no search state by SearchId: any range is served from a new lookup, so
  Status 4 (StartWithRangeZero) is never needed.  DeepTraversal and Picture are
  accepted and ignored (no subfolders to descend, no pictures).
* Invalid requests get Find/Status 2 ("the client's search failed to validate",
  2.2.3.177.2) and no Response: no SearchId or one that is not a UUID (the schema's
  pattern, MS-ASCMD 6.7), not exactly one criterion, no Query, an empty query, a
  malformed Range, a Class other than Email/Contacts, an empty CollectionId.
* Find exists only in protocol 16.1 (2.2.3.69's version table; MS-ASWBXML code page
  25 is 16.1 only), and OPTIONS lists it only when 16.1 is offered.  A device that
  speaks an older version and sends it anyway gets Find/Status 138
  (VersionNotSupported, MS-ASCMD 2.2.2: "the command is not supported in the
  protocol version specified").

Cost: one indexed lookup in the store's thread — accounts bounded by
``GAL_MAX_MATCHES``, contacts by the requested Range's end + 2 (at most 1001) — plus
the folder list for a CollectionId; on the reactor at most ``MAX_RESULTS`` Results
are built, whatever the store holds (bench/bench_find.py).
"""

from __future__ import annotations

import re
from typing import Any

from easync.commands.resolverecipients import NAME_MAX, contact_name
from easync.commands.search import gal_properties, gal_users
from easync.handler import EasRequest, EasResponse, EasServer
from easync.model import FOLDER_CLASS, Item
from easync.wbxml.element import Element

FD = "Find:"
AS = "AirSync:"
MAILBOX = FD + "MailBoxSearchCriterion"
GAL = FD + "GalSearchCriterion"     # MS-ASWBXML 2.1.2.1.26 spells it so (MS-ASCMD: GAL…)
#: the protocol version Find needs (MS-ASCMD 2.2.3.69)
SINCE = (16, 1)
DEFAULT_RANGE = (0, 99)
#: the most Results one answer carries
MAX_RESULTS = 100
#: MS-ASCMD 2.2.3.143.1: 0 <= m <= n <= 999
RANGE_MAX = 999
OK, INVALID, FOLDERSYNC_REQUIRED = "1", "2", "3"
VERSION_NOT_SUPPORTED = "138"       # MS-ASCMD 2.2.2 common status
_RANGE = re.compile(r"^\s*(\d{1,3})\s*-\s*(\d{1,3})\s*$")
_SEARCH_ID = re.compile(r"^[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}$")
# contact field -> gal:* element, in the order of MS-ASCMD 2.2.3.139.1
_CONTACT_PROPS = (("BusinessPhoneNumber", "Phone"), ("OfficeLocation", "Office"),
                  ("JobTitle", "Title"), ("CompanyName", "Company"),
                  ("FirstName", "FirstName"), ("LastName", "LastName"),
                  ("HomePhoneNumber", "HomePhone"), ("MobilePhoneNumber", "MobilePhone"))


class _Invalid(Exception):
    """The request fails to validate: Find/Status 2."""


def parse_range(text: str | None) -> tuple[int, int]:
    """The requested Range as (first, last), cut to ``MAX_RESULTS`` entries; the
    default 0-99 when absent.  Raises ``_Invalid`` for anything but "m-n" with
    0 <= m <= n <= 999."""
    if text is None:
        return DEFAULT_RANGE
    m = _RANGE.match(text)
    if not m:
        raise _Invalid("Range")
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi < lo or hi > RANGE_MAX:
        raise _Invalid("Range")
    return lo, min(hi, lo + MAX_RESULTS - 1)


def _short(value: Any) -> str:
    return str(value)[:NAME_MAX]


def contact_properties(data: dict[str, Any]) -> list[Element]:
    """The gal:* children of the Properties of one contact Result."""
    props = [Element("GAL:DisplayName", _short(contact_name(data)))]
    for field, tag in _CONTACT_PROPS:
        if data.get(field):
            props.append(Element(f"GAL:{tag}", _short(data[field])))
    for field in ("Email1Address", "Email2Address", "Email3Address"):
        if data.get(field):
            props.append(Element("GAL:EmailAddress", _short(data[field])))
            break
    return props


def _contact_result(item: Item) -> Element:
    result = Element(FD + "Result")
    result.add(AS + "Class", "Contacts")
    result.add(AS + "ServerId", item.server_id)
    result.add(AS + "CollectionId", item.folder_id)
    result.add(FD + "Properties").children.extend(contact_properties(item.data))
    return result


def _criterion(body: Element | None) -> Element:
    """The one search criterion of a valid request (else ``_Invalid``)."""
    if body is None or body.tag != FD + "Find":
        raise _Invalid("no Find")
    if not _SEARCH_ID.match((body.findtext(FD + "SearchId") or "").strip()):
        raise _Invalid("SearchId")
    execute = body.find(FD + "ExecuteSearch")
    criteria = [c for c in (execute.children if execute is not None else [])
                if c.tag in (MAILBOX, GAL)]
    if len(criteria) != 1:
        raise _Invalid("criterion")
    return criteria[0]


class _Found:
    """What a search found: the Results of the requested slice and the Total."""

    def __init__(self, results: list[Element], total: int, first: int) -> None:
        self.results, self.total, self.first = results, total, first


async def _gal(server: EasServer, query: Element, rng: tuple[int, int]) -> _Found:
    text = (query.value or "").strip()
    if not text or query.children:
        raise _Invalid("Query")
    users = await gal_users(server, text)
    lo, hi = rng
    results = []
    for user in users[lo:hi + 1]:
        result = Element(FD + "Result")
        result.add(FD + "Properties").children.extend(gal_properties(user))
        results.append(result)
    return _Found(results, len(users), lo)


async def _mailbox(server: EasServer, req: EasRequest, query: Element,
                   rng: tuple[int, int]) -> _Found | str:
    """The contacts found (or nothing: easync has no mail); a Status string for a
    CollectionId the user has no folder of."""
    text = (query.findtext(FD + "FreeText") or "").strip()
    cls = query.findtext(AS + "Class")
    collection = query.findtext(AS + "CollectionId")
    if not text:
        raise _Invalid("FreeText")
    cls = cls.strip() if cls is not None else None
    if cls not in (None, "Email", "Contacts"):
        raise _Invalid("Class")
    lo, hi = rng
    folder_id = None
    if collection is not None:
        if not collection.strip():
            raise _Invalid("CollectionId")
        folders = {f.server_id: f for f in await server.items.list_folders(req.user)}
        folder = folders.get(collection.strip())
        if folder is None:
            return FOLDERSYNC_REQUIRED
        if FOLDER_CLASS.get(folder.type) != "Contacts":
            return _Found([], 0, lo)
        folder_id = folder.server_id
    elif cls != "Contacts":
        if cls is None:
            raise _Invalid("Class")
        return _Found([], 0, lo)            # Email: easync keeps no mail
    # one past the requested slice: a Total beyond its end says there is more
    items = await server.items.find_contacts_by_name(req.user, text, hi + 2,
                                                     recipients=False, folder_id=folder_id)
    return _Found([_contact_result(i) for i in items[lo:hi + 1]], len(items), lo)


def _answer(status: str, found: _Found | None = None) -> EasResponse:
    root = Element(FD + "Find")
    root.add(FD + "Status", status)
    if found is not None:
        response = root.add(FD + "Response")
        response.add("ItemOperations:Store", "Mailbox")
        response.add(FD + "Status", OK)
        response.children.extend(found.results)
        if found.results:
            response.add(FD + "Range",
                         f"{found.first}-{found.first + len(found.results) - 1}")
        response.add(FD + "Total", found.total)
    return EasResponse(body=root, status=status)


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    if req.v < SINCE:
        return _answer(VERSION_NOT_SUPPORTED)
    try:
        criterion = _criterion(req.body)
        query = criterion.find(FD + "Query")
        if query is None:
            raise _Invalid("Query")
        options = criterion.find(FD + "Options")
        rng = parse_range(options.findtext(FD + "Range") if options is not None else None)
        if criterion.tag == GAL:
            found: _Found | str = await _gal(server, query, rng)
        else:
            found = await _mailbox(server, req, query, rng)
    except _Invalid:
        return _answer(INVALID)
    if isinstance(found, str):
        return _answer(found)
    return _answer(OK, found)
