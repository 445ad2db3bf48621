"""ItemOperations (MS-ASCMD 2.2.1.10): Fetch of contacts, events and tasks.

``ItemOperations/{Status, Response/(Fetch|EmptyFolderContents|Move)*}``, one answer
per request operation, in request order.  Top-level Status 1, or 2 (protocol error)
for a request without any operation.

* ``Fetch`` by ``AirSync:CollectionId`` + ``AirSync:ServerId`` (Store "Mailbox"):
  ``Fetch/{Status 1, CollectionId, ServerId, Class, Properties/…}``, the Properties
  built by the item codec with the Options' BodyPreference (truncation included).
  An item that does not exist, or is not in that collection, is Status 6 (object
  not found); one the codec cannot convert, 14.  A ``FileReference`` fetch is 15
  (invalid attachment: easync items carry none); a ``Search:LongId`` fetch is 6
  (there are no search results to point at); another Store is 9 (unknown store);
  a Fetch naming nothing is 2.
* ``EmptyFolderContents``: easync's mail folders are always empty, so emptying one
  is Status 1; a contacts/calendar/tasks folder is refused with 5 (access denied) —
  a single request must not erase an address book or calendar kept in a CRM; an
  unknown folder is 6.
* ``Move`` (conversations, 14.0+): there are no conversations: Status 6.

A request of more than ``MAX_OPERATIONS`` (100) Fetch, EmptyFolderContents and Move
elements together is refused whole, top-level Status 11, nothing done: MS-ASCMD
3.1.5.10's limit and error for ItemOperations (each Fetch is a store read).
"""

from __future__ import annotations

from easync.handler import EasRequest, EasResponse, EasServer
from easync.items.convert import DeviceQuirks, ItemError, body_preferences, to_eas
from easync.model import FOLDER_CLASS
from easync.wbxml.element import Element

IO = "ItemOperations:"
#: MS-ASCMD 3.1.5.10: the most Fetch + EmptyFolderContents + Move of one request
MAX_OPERATIONS = 100
_OPERATIONS = (IO + "Fetch", IO + "EmptyFolderContents", IO + "Move")


def _fetch_answer(status: str, *echo: Element | None) -> Element:
    out = Element(IO + "Fetch")
    out.add(IO + "Status", status)
    for el in echo:
        if el is not None:
            out.append(Element(el.tag, el.value))
    return out


async def _fetch(server: EasServer, req: EasRequest, el: Element,
                 quirks: DeviceQuirks) -> Element:
    store = (el.findtext(IO + "Store") or "Mailbox").strip()
    collection_el = el.find("AirSync:CollectionId")
    server_id_el = el.find("AirSync:ServerId")
    file_ref = el.find("AirSyncBase:FileReference")
    long_id = el.find("Search:LongId")
    if file_ref is not None:
        return _fetch_answer("15", file_ref)
    if long_id is not None:
        return _fetch_answer("6", long_id)
    if store.lower() != "mailbox":
        return _fetch_answer("9", collection_el, server_id_el)
    server_id = (server_id_el.value or "").strip() if server_id_el is not None else ""
    if not server_id:
        return _fetch_answer("2", collection_el, server_id_el)
    collection_id = (collection_el.value or "").strip() if collection_el is not None else ""

    items = await server.items.get_items(req.user, [server_id])
    item = items[0] if items else None
    if item is None or (collection_id and item.folder_id != collection_id):
        return _fetch_answer("6", collection_el, server_id_el)
    prefs = body_preferences(el.find(IO + "Options"))
    try:
        props = to_eas(item.cls, item.data, req.version, prefs, quirks)
    except (ItemError, ValueError):
        return _fetch_answer("14", collection_el, server_id_el)
    out = Element(IO + "Fetch")
    out.add(IO + "Status", "1")
    out.add("AirSync:CollectionId", item.folder_id)
    out.add("AirSync:ServerId", item.server_id)
    out.add("AirSync:Class", item.cls)
    properties = out.add(IO + "Properties")
    properties.children.extend(props)
    return out


async def _empty_folder(server: EasServer, req: EasRequest, el: Element) -> Element:
    out = Element(IO + "EmptyFolderContents")
    collection_id = (el.findtext("AirSync:CollectionId") or "").strip()
    if not collection_id:
        out.add(IO + "Status", "2")
        return out
    folders = {f.server_id: f for f in await server.items.list_folders(req.user)}
    folder = folders.get(collection_id)
    if folder is None:
        status = "6"
    elif FOLDER_CLASS.get(folder.type, "Email") == "Email":
        status = "1"
    else:
        status = "5"
    out.add(IO + "Status", status)
    out.add("AirSync:CollectionId", collection_id)
    return out


def _move(el: Element) -> Element:
    out = Element(IO + "Move")
    out.add(IO + "Status", "6")
    conversation = el.find(IO + "ConversationId")
    if conversation is not None:
        echo = Element(IO + "ConversationId", conversation.text, opaque=conversation.opaque)
        out.append(echo)
    return out


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    root = Element(IO + "ItemOperations")
    body = req.body
    if body is None or body.tag != IO + "ItemOperations":
        root.add(IO + "Status", "2")
        return EasResponse(body=root, status="2")
    if sum(1 for c in body.children if c.tag in _OPERATIONS) > MAX_OPERATIONS:
        root.add(IO + "Status", "11")
        return EasResponse(body=root, status="11")
    quirks = DeviceQuirks.from_request(req, server.settings)
    answers: list[Element] = []
    for child in body.children:
        if child.tag == IO + "Fetch":
            answers.append(await _fetch(server, req, child, quirks))
        elif child.tag == IO + "EmptyFolderContents":
            answers.append(await _empty_folder(server, req, child))
        elif child.tag == IO + "Move":
            answers.append(_move(child))
    if not answers:
        root.add(IO + "Status", "2")
        return EasResponse(body=root, status="2")
    root.add(IO + "Status", "1")
    root.add(IO + "Response").children.extend(answers)
    return EasResponse(body=root, status="1")
