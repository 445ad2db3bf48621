"""Find (MS-ASCMD 2.2.1.2, EAS 16.1), in process: its code page against the bytes of
[MS-ASWBXML] 2.1.2.1.26, the handler on the SQL store (SQLite), and OPTIONS.

libwbxml 0.11.8 does not know code page 25 (``xml2wbxml`` refuses a Find document;
``easync.wbxml.codepages.LIBWBXML_MISSING`` lists the page), so the codec is checked
against byte sequences written here by hand from the specification's token table.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from findwire import decode as wire_decode
from findwire import encode as wire_encode
from findwire import gal_find, mailbox_find
from rawclient import Node
from sqlserver import sqlite_server

from easync.commands import COMMANDS, find
from easync.handler import EasRequest
from easync.http.resource import ActiveSyncResource
from easync.model import Op
from easync.settings import Settings
from easync.wbxml import decode, encode
from easync.wbxml.element import E, Element

SEARCH_ID = "9e5b1ff0-42c1-4b7e-9b7b-3b1d0c6a2f11"


def s(text: str) -> bytes:
    """STR_I (0x03), the UTF-8 text, its NUL terminator."""
    return b"\x03" + text.encode() + b"\x00"


# ------------------------------------------------------------------------- the codec

# A GAL Find request, token by token from MS-ASWBXML 2.1.2.1.26 (page 25): Find 0x05,
# SearchId 0x06, ExecuteSearch 0x07, GalSearchCriterion 0x19, Query 0x09, Options 0x0C,
# Range 0x0D; 0x40 = has content, 0x01 = END, 0x00 0x19 = SWITCH_PAGE 25.
GAL_REQUEST = (b"\x03\x01\x6a\x00" + b"\x00\x19"
               + b"\x45" + b"\x46" + s(SEARCH_ID) + b"\x01"
               + b"\x47" + b"\x59" + b"\x49" + s("ada") + b"\x01"
               + b"\x4c" + b"\x4d" + s("0-9") + b"\x01" + b"\x01"
               + b"\x01" + b"\x01" + b"\x01")
GAL_TREE = E("Find:Find", E("Find:SearchId", SEARCH_ID), E(
    "Find:ExecuteSearch", E("Find:GalSearchCriterion", E("Find:Query", "ada"),
                            E("Find:Options", E("Find:Range", "0-9")))))

# A mailbox Find with Query/{FreeText, airsync:Class, airsync:CollectionId} and
# DeepTraversal (empty: no content bit): page 0 AirSync Class 0x10, CollectionId 0x12.
MAILBOX_REQUEST = (b"\x03\x01\x6a\x00" + b"\x00\x19"
                   + b"\x45" + b"\x46" + s(SEARCH_ID) + b"\x01"
                   + b"\x47" + b"\x48" + b"\x49" + b"\x4b" + s("love") + b"\x01"
                   + b"\x00\x00" + b"\x50" + s("Contacts") + b"\x01"
                   + b"\x52" + s("1") + b"\x01" + b"\x01"
                   + b"\x00\x19" + b"\x4c" + b"\x4d" + s("0-4") + b"\x01" + b"\x0e" + b"\x01"
                   + b"\x01" + b"\x01" + b"\x01")
MAILBOX_TREE = E("Find:Find", E("Find:SearchId", SEARCH_ID), E(
    "Find:ExecuteSearch", E("Find:MailBoxSearchCriterion", E(
        "Find:Query", E("Find:FreeText", "love"), E("AirSync:Class", "Contacts"),
        E("AirSync:CollectionId", "1")),
        E("Find:Options", E("Find:Range", "0-4"), E("Find:DeepTraversal")))))

# A response: Status 0x0A, Response 0x11, itemoperations:Store (page 20, 0x07), Result
# 0x12, airsync:Class/ServerId/CollectionId (page 0: 0x10/0x0D/0x12), Properties 0x13,
# gal:DisplayName/EmailAddress (page 16: 0x05/0x0F), Range 0x0D, Total 0x16.
RESPONSE = (b"\x03\x01\x6a\x00" + b"\x00\x19"
            + b"\x45" + b"\x4a" + s("1") + b"\x01"
            + b"\x51" + b"\x00\x14" + b"\x47" + s("Mailbox") + b"\x01"
            + b"\x00\x19" + b"\x4a" + s("1") + b"\x01"
            + b"\x52" + b"\x00\x00" + b"\x50" + s("Contacts") + b"\x01"
            + b"\x4d" + s("1:7") + b"\x01" + b"\x52" + s("1") + b"\x01"
            + b"\x00\x19" + b"\x53" + b"\x00\x10" + b"\x45" + s("Ada Lovelace") + b"\x01"
            + b"\x4f" + s("ada@example.org") + b"\x01" + b"\x01" + b"\x01"
            + b"\x00\x19" + b"\x4d" + s("0-0") + b"\x01" + b"\x56" + s("1") + b"\x01"
            + b"\x01" + b"\x01")
RESPONSE_TREE = E("Find:Find", E("Find:Status", "1"), E(
    "Find:Response", E("ItemOperations:Store", "Mailbox"), E("Find:Status", "1"),
    E("Find:Result", E("AirSync:Class", "Contacts"), E("AirSync:ServerId", "1:7"),
      E("AirSync:CollectionId", "1"),
      E("Find:Properties", E("GAL:DisplayName", "Ada Lovelace"),
        E("GAL:EmailAddress", "ada@example.org"))),
    E("Find:Range", "0-0"), E("Find:Total", "1")))


@pytest.mark.parametrize(("data", "tree"), [(GAL_REQUEST, GAL_TREE),
                                            (MAILBOX_REQUEST, MAILBOX_TREE),
                                            (RESPONSE, RESPONSE_TREE)],
                         ids=["gal-request", "mailbox-request", "response"])
def test_find_page_against_the_spec_bytes(data: bytes, tree: Element) -> None:
    """MS-ASWBXML 2.1.2.1.26: easync reads the hand-made bytes as the tree and writes
    the tree as exactly those bytes."""
    assert decode(data) == tree
    assert encode(tree) == data


def test_the_test_wire_codec_agrees_with_the_spec_bytes() -> None:
    """findwire (the e2e tests' Find codec) writes and reads the same bytes."""
    assert wire_encode(gal_find("ada", search_id=SEARCH_ID)) == GAL_REQUEST
    node = wire_decode(RESPONSE)
    assert node.text_of("Find:Response/Find:Result/Find:Properties/GAL:DisplayName") \
        == "Ada Lovelace"
    assert node.text_of("Find:Response/ItemOperations:Store") == "Mailbox"


# ------------------------------------------------------------------------ the handler

def to_element(node: Node) -> Element:
    el = Element(node.tag, node.text)
    el.children = [to_element(c) for c in node.children]
    return el


@pytest_twisted.async_yield_fixture
async def env(tmp_path: Any) -> Any:
    async with sqlite_server(tmp_path, user=("alice", "alice@example.com")) as (
            server, user, _store):
        yield server, user


async def call(env: Any, body: Element | Node | None, version: str = "16.1",
               user: Any = None) -> Element:
    server, alice = env
    if isinstance(body, Node):
        body = to_element(body)
    req = EasRequest(cmd="Find", user=user or alice, device_id="dev1",
                     device_type="iPhone", version=version, body=body)
    resp = await COMMANDS["Find"].handle(server, req)
    assert resp.http_status == 200 and resp.body is not None
    encode(resp.body)
    return resp.body


def response_of(body: Element) -> Element:
    assert body.findtext("Find:Status") == "1", body
    response = body.find("Find:Response")
    assert response is not None
    assert response.findtext("ItemOperations:Store") == "Mailbox"   # MS-ASCMD 2.2.3.178.1
    assert response.findtext("Find:Status") == "1"
    return response


def prop(result: Element, tag: str) -> str | None:
    return result.find("Find:Properties").findtext(tag)


async def contacts_folder(env: Any, user: Any = None) -> str:
    server, alice = env
    folders = await server.items.list_folders(user or alice)
    return next(f.server_id for f in folders if f.type == 9)


async def add_contacts(env: Any, rows: list[dict[str, Any]], user: Any = None) -> list[str]:
    server, alice = env
    folder = await contacts_folder(env, user)
    results = await server.items.apply(user or alice, folder, [
        Op(kind="add", data=d, ref=str(n), cls="Contacts") for n, d in enumerate(rows)])
    assert all(r.ok for r in results)
    return [r.server_id for r in results]


@pytest_twisted.ensureDeferred
async def test_gal_find(env: Any) -> None:
    """MS-ASCMD 2.2.1.2 with GALSearchCriterion: the accounts whose name, address or
    display-name word begins with the query, gal:* Properties (2.2.3.139.1), Range
    and Total (2.2.3.143.1, 2.2.3.184.1)."""
    server, _ = env
    await server.users.update_user("alice", display_name="Alice Smith")
    await server.users.add_user("bob", None, "bob@example.com", True)
    await server.users.update_user("bob", display_name="Bob Smith")
    await server.users.add_user("carol", None, "carol@other.org", True)
    response = response_of(await call(env, gal_find("smi")))
    results = response.findall("Find:Result")
    assert [prop(r, "GAL:EmailAddress") for r in results] == [
        "alice@example.com", "bob@example.com"]
    assert prop(results[1], "GAL:DisplayName") == "Bob Smith"
    assert prop(results[1], "GAL:Alias") == "bob"
    assert results[1].find("AirSync:ServerId") is None     # a directory entry, no item
    assert response.findtext("Find:Range") == "0-1"
    assert response.findtext("Find:Total") == "2"
    # Range honoured: the second entry only, Total still 2
    response = response_of(await call(env, gal_find("smith", "1-1")))
    assert [prop(r, "GAL:Alias") for r in response.findall("Find:Result")] == ["bob"]
    assert response.findtext("Find:Range") == "1-1"
    assert response.findtext("Find:Total") == "2"
    # nothing matches: Total 0, no Result, no Range
    response = response_of(await call(env, gal_find("example.com")))
    assert response.find("Find:Result") is None and response.find("Find:Range") is None
    assert response.findtext("Find:Total") == "0"


@pytest_twisted.ensureDeferred
async def test_contacts_find_is_the_users_own(env: Any) -> None:
    """A mailbox Find on the Contacts class (or a Contacts CollectionId) searches the
    user's contacts, by a prefix of a name word; another user's are never found."""
    server, _ = env
    folder = await contacts_folder(env)
    [ada, _] = await add_contacts(env, [
        {"FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "ada@example.org",
         "CompanyName": "Analytical Engines", "MobilePhoneNumber": "+39 333 1234567",
         "JobTitle": "Countess"},
        {"FirstName": "Charles", "LastName": "Babbage", "Email1Address": "cb@example.org"}])
    bob = await server.users.add_user("bob", None, "bob@example.com", True)
    await add_contacts(env, [{"FirstName": "Adam", "LastName": "Lovett",
                              "Email1Address": "adam@example.org"}], user=bob)

    for request in (mailbox_find("love"), mailbox_find("love", cls=None, collection=folder),
                    mailbox_find("LOVE", cls="Email", collection=folder)):
        response = response_of(await call(env, request))
        [result] = response.findall("Find:Result")
        assert result.findtext("AirSync:Class") == "Contacts"
        assert result.findtext("AirSync:ServerId") == ada
        assert result.findtext("AirSync:CollectionId") == folder
        assert prop(result, "GAL:DisplayName") == "Ada Lovelace"
        assert prop(result, "GAL:EmailAddress") == "ada@example.org"
        assert prop(result, "GAL:MobilePhone") == "+39 333 1234567"
        assert prop(result, "GAL:Company") == "Analytical Engines"
        assert prop(result, "GAL:Title") == "Countess"
        assert response.findtext("Find:Total") == "1"
    # bob's contact Adam Lovett is found by bob, not by alice
    response = response_of(await call(env, mailbox_find("lovett")))
    assert response.find("Find:Result") is None and response.findtext("Find:Total") == "0"
    response = response_of(await call(env, mailbox_find("lovett"), user=bob))
    assert [prop(r, "GAL:DisplayName") for r in response.findall("Find:Result")] == [
        "Adam Lovett"]
    # a substring that begins no word finds nothing (as ResolveRecipients)
    assert response_of(await call(env, mailbox_find("ace"))).findtext("Find:Total") == "0"


@pytest_twisted.ensureDeferred
async def test_contacts_find_range(env: Any) -> None:
    """MS-ASCMD 2.2.3.143.1: the slice asked for, at most 100 per answer; Total says
    when more are there (2.2.3.184.1)."""
    await add_contacts(env, [{"FirstName": f"Person{n:03d}", "LastName": "Filler",
                              "Email1Address": f"p{n}@example.org"} for n in range(150)])
    response = response_of(await call(env, mailbox_find("filler", rng="0-9")))
    assert len(response.findall("Find:Result")) == 10
    assert response.findtext("Find:Range") == "0-9"
    assert int(response.findtext("Find:Total") or 0) > 10      # more to ask for
    first = [r.findtext("AirSync:ServerId") for r in response.findall("Find:Result")]
    response = response_of(await call(env, mailbox_find("filler", rng="5-14")))
    again = [r.findtext("AirSync:ServerId") for r in response.findall("Find:Result")]
    assert again[:5] == first[5:] and len(again) == 10          # pages line up
    assert response.findtext("Find:Range") == "5-14"
    response = response_of(await call(env, mailbox_find("filler", rng="0-999")))
    assert len(response.findall("Find:Result")) == 100          # at most 100 per answer
    assert response.findtext("Find:Range") == "0-99"
    response = response_of(await call(env, mailbox_find("filler", rng="140-160")))
    assert len(response.findall("Find:Result")) == 10
    assert response.findtext("Find:Range") == "140-149"
    assert response.findtext("Find:Total") == "150"


@pytest_twisted.ensureDeferred
async def test_mail_find_finds_nothing(env: Any) -> None:
    """Class Email (the spec's only class, MS-ASCMD 2.2.3.27.1): easync keeps no mail,
    so the search succeeds with no match; so does a CollectionId of a mail folder."""
    server, alice = env
    await add_contacts(env, [{"FirstName": "Ada", "LastName": "Lovelace",
                              "Email1Address": "ada@example.org"}])
    inbox = next(f.server_id for f in await server.items.list_folders(alice) if f.type == 2)
    for request in (mailbox_find("ada", cls="Email"),
                    mailbox_find("ada", cls="Email", collection=inbox)):
        response = response_of(await call(env, request))
        assert response.find("Find:Result") is None
        assert response.findtext("Find:Total") == "0"


@pytest.mark.parametrize("name,request_", [
    ("no body", None),
    ("no SearchId", E("Find:Find", E("Find:ExecuteSearch", E(
        "Find:GalSearchCriterion", E("Find:Query", "ada"))))),
    ("SearchId not a UUID", gal_find("ada", search_id="search-1")),
    ("no criterion", E("Find:Find", E("Find:SearchId", SEARCH_ID),
                       E("Find:ExecuteSearch"))),
    ("two criteria", E("Find:Find", E("Find:SearchId", SEARCH_ID), E(
        "Find:ExecuteSearch", E("Find:GalSearchCriterion", E("Find:Query", "ada")),
        E("Find:GalSearchCriterion", E("Find:Query", "bob"))))),
    ("GAL without Query", E("Find:Find", E("Find:SearchId", SEARCH_ID), E(
        "Find:ExecuteSearch", E("Find:GalSearchCriterion", E("Find:Options", E(
            "Find:Range", "0-9")))))),
    ("GAL empty Query", gal_find("  ")),
    ("mailbox without FreeText", mailbox_find(None)),
    ("mailbox without Class or CollectionId", mailbox_find("ada", cls=None)),
    ("mailbox Class Calendar", mailbox_find("ada", cls="Calendar")),
    ("mailbox empty CollectionId", mailbox_find("ada", collection="")),
    ("Range backwards", gal_find("ada", "9-2")),
    ("Range past 999", gal_find("ada", "0-1000")),
    ("Range not a range", gal_find("ada", "ten")),
    ("Range negative", mailbox_find("ada", rng="-1-5")),
])
@pytest_twisted.ensureDeferred
async def test_invalid_requests_get_status_2(env: Any, name: str, request_: Any) -> None:
    """MS-ASCMD 2.2.3.177.2: Status 2 "the client's search failed to validate", no
    Response; schema MS-ASCMD 6.7 (SearchId a UUID, one criterion, Query required),
    2.2.3.143.1 (0 <= m <= n <= 999), 2.2.3.27.1 (Class)."""
    body = await call(env, request_)
    assert body == E("Find:Find", E("Find:Status", "2")), name


@pytest_twisted.ensureDeferred
async def test_unknown_collection_is_foldersync_required(env: Any) -> None:
    """MS-ASCMD 2.2.3.177.2: Status 3, the folder hierarchy is out of date."""
    body = await call(env, mailbox_find("ada", collection="999999"))
    assert body == E("Find:Find", E("Find:Status", "3"))


@pytest.mark.parametrize("version", ["12.1", "14.0", "14.1", "16.0"])
@pytest_twisted.ensureDeferred
async def test_before_16_1_find_is_version_not_supported(env: Any, version: str) -> None:
    """Find and its code page exist in 16.1 only (MS-ASCMD 2.2.3.69, MS-ASWBXML
    2.1.2.1.26): an older device gets the common status 138 VersionNotSupported
    (MS-ASCMD 2.2.2), nothing searched."""
    await add_contacts(env, [{"FirstName": "Ada", "LastName": "Lovelace",
                              "Email1Address": "ada@example.org"}])
    body = await call(env, mailbox_find("ada"), version=version)
    assert body == E("Find:Find", E("Find:Status", "138"))


# ------------------------------------------------------------------------- OPTIONS

@pytest.mark.parametrize(("top", "listed"), [("16.1", True), ("16.0", False),
                                             ("14.1", False)])
def test_options_lists_find_only_where_16_1_is_offered(top: str, listed: bool) -> None:
    """MS-ASHTTP 2.2.4.1.2.1: MS-ASProtocolCommands lists the commands the server
    supports; Find is a 16.1 command (MS-ASCMD 2.2.3.69)."""
    from easync.handler import EasServer

    server = EasServer(users=None, items=None, state=None, notifier=None,  # type: ignore[arg-type]
                       clock=None, settings=Settings(server_version=top))  # type: ignore[arg-type]
    resource = ActiveSyncResource(server, door=None)  # type: ignore[arg-type]
    commands = resource.commands.split(",")
    assert ("Find" in commands) is listed
    assert "Search" in commands and "ResolveRecipients" in commands
    assert resource.versions.split(",")[-1] == top


def test_find_is_in_the_table() -> None:
    assert COMMANDS["Find"].root == "Find:Find"
    assert COMMANDS["Find"].handle is find.handle
    assert COMMANDS["Find"].since == (16, 1)


@pytest_twisted.ensureDeferred
async def test_hostile_queries_are_bounded(env: Any) -> None:
    """A 32 kB query, control characters, lone surrogates: a search like any other
    (compared on its first 254 characters, easync.lookup), an answer of bounded size."""
    await add_contacts(env, [{"FirstName": "Ada", "LastName": "Lovelace",
                              "Email1Address": "ada@example.org"}])
    for text in ("x" * 32_000, "ada\x00\x01\x1f", "\ud800ada", "ada" + " " * 10_000):
        for request in (mailbox_find(text), gal_find(text)):
            body = await call(env, request)
            response = response_of(body)
            assert len(encode(body)) < 2_000
            assert len(response.findall("Find:Result")) <= 1
    # the control characters are blanks: "ada\x00\x01\x1f" is the word "ada"
    response = response_of(await call(env, mailbox_find("ada\x00\x01\x1f")))
    assert [prop(r, "GAL:DisplayName") for r in response.findall("Find:Result")] == [
        "Ada Lovelace"]


# ------------------------------------------ every contact, one folder (issue 14 point 5)

async def resolve(env: Any, to: str) -> list[str]:
    """The Recipient DisplayNames ResolveRecipients gives for ``to``."""
    server, alice = env
    req = EasRequest(cmd="ResolveRecipients", user=alice, device_id="dev1",
                     device_type="iPhone", version="16.1",
                     body=E("ResolveRecipients:ResolveRecipients",
                            E("ResolveRecipients:To", to)))
    resp = await COMMANDS["ResolveRecipients"].handle(server, req)
    assert resp.body is not None
    return [r.findtext("ResolveRecipients:DisplayName") or ""
            for response in resp.body.findall("ResolveRecipients:Response")
            for r in response.findall("ResolveRecipients:Recipient")]


def names_found(response: Element) -> list[str | None]:
    return [prop(r, "GAL:DisplayName") for r in response.findall("Find:Result")]


@pytest_twisted.ensureDeferred
async def test_contacts_without_an_address_are_found(env: Any) -> None:
    """Find searches the user's contacts (the easync Contacts-class extension of
    MS-ASCMD 2.2.3.27.1): every contact, by a word of its first, last or company
    name, its nickname, or FileAs — one with a phone number only too; a contact with
    an address also by the beginning of that address.  ResolveRecipients still gives
    only contacts it can send to (MS-ASCMD 2.2.3.140: a Recipient has an
    EmailAddress)."""
    [plumber, _, ada] = await add_contacts(env, [
        {"FirstName": "Mario", "LastName": "Rossi", "CompanyName": "Idraulica Veloce",
         "NickName": "Supermario", "MobilePhoneNumber": "+39 333 7654321"},
        {"FileAs": "Pizzeria Da Gino", "BusinessPhoneNumber": "+39 02 123456"},
        {"FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "countess@example.org"}])
    for query in ("mario", "ross", "rossi mario", "idraul", "veloce", "supermario"):
        response = response_of(await call(env, mailbox_find(query)))
        [result] = response.findall("Find:Result")
        assert result.findtext("AirSync:ServerId") == plumber, query
        assert prop(result, "GAL:DisplayName") == "Mario Rossi"
        assert prop(result, "GAL:MobilePhone") == "+39 333 7654321"
        assert prop(result, "GAL:EmailAddress") is None
        assert response.findtext("Find:Total") == "1"
    response = response_of(await call(env, mailbox_find("gino")))
    assert [prop(r, "GAL:Phone") for r in response.findall("Find:Result")] == [
        "+39 02 123456"]
    # by the beginning of an address, whole or in part, any case
    for query in ("countess", "COUNTESS@example", "countess@example.org"):
        response = response_of(await call(env, mailbox_find(query)))
        assert [r.findtext("AirSync:ServerId") for r in response.findall("Find:Result")] \
            == [ada], query
    # ResolveRecipients: the contact it can send to, never one without an address
    assert await resolve(env, "mario") == []
    assert await resolve(env, "gino") == []
    assert await resolve(env, "ada") == ["Ada Lovelace"]
    # and not by a part of an address (it looks addresses up whole)
    assert await resolve(env, "countess") == []


@pytest_twisted.ensureDeferred
async def test_contacts_find_within_one_folder(env: Any) -> None:
    """MS-ASCMD 2.2.3.30.5: CollectionId names the folder to search.  With 150
    matches in the default Contacts folder sorted before the 3 of a second one, the
    second folder's search still gives its own 3, with Total 3; the default folder's
    Total counts its matches only."""
    server, alice = env
    main = await contacts_folder(env)
    other = await server.items.create_folder(alice, "0", "Suppliers", 14)
    await add_contacts(env, [{"FirstName": f"Aaron{n:03d}", "LastName": "Smith"}
                             for n in range(150)])
    results = await server.items.apply(alice, other.server_id, [
        Op(kind="add", data={"FirstName": f"Zed{n}", "LastName": "Smith"}, ref=str(n),
           cls="Contacts") for n in range(3)])
    theirs = [r.server_id for r in results]
    response = response_of(await call(env, mailbox_find("smith", cls=None,
                                                        collection=other.server_id)))
    assert [r.findtext("AirSync:ServerId") for r in response.findall("Find:Result")] \
        == theirs
    assert {r.findtext("AirSync:CollectionId") for r in response.findall("Find:Result")} \
        == {other.server_id}
    assert response.findtext("Find:Total") == "3"
    response = response_of(await call(env, mailbox_find("smith", cls=None, collection=main,
                                                        rng="140-160")))
    assert response.findtext("Find:Total") == "150"
    assert {r.findtext("AirSync:CollectionId") for r in response.findall("Find:Result")} \
        == {main}
    # all folders (Class Contacts): both folders' matches
    response = response_of(await call(env, mailbox_find("zed")))
    assert response.findtext("Find:Total") == "3"
    # a contact moved to the other folder is found there, no longer in the first
    [moved] = await add_contacts(env, [{"FirstName": "Mover", "LastName": "Jones"}])
    new_id = await server.items.move_item(alice, moved, other.server_id)
    response = response_of(await call(env, mailbox_find("mover", cls=None,
                                                        collection=other.server_id)))
    assert [r.findtext("AirSync:ServerId") for r in response.findall("Find:Result")] \
        == [new_id]
    response = response_of(await call(env, mailbox_find("mover", cls=None, collection=main)))
    assert response.findtext("Find:Total") == "0"
