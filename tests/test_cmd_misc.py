"""Settings, ItemOperations, MoveItems, the mail commands, Search, ResolveRecipients,
MeetingResponse."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from hubtest import Heard
from sqlserver import memory_server

from easync.commands import (
    COMMANDS,
    itemoperations,
    meetingresponse,
    moveitems,
    resolverecipients,
    search,
    settings,
)
from easync.handler import EasHTTPError, EasRequest
from easync.model import Op
from easync.wbxml import encode
from easync.wbxml.element import E, Element


@pytest_twisted.async_yield_fixture
async def env(tmp_path: Any) -> Any:
    async with memory_server(tmp_path) as (server, user, _store):
        yield server, user


async def call(env: Any, module: Any, cmd: str, body: Element | None,
               version: str = "16.1", raw: bytes = b"") -> Element:
    server, user = env
    device = await server.state.save_device(user, "dev1", device_type="iPhone")
    req = EasRequest(cmd=cmd, user=user, device_id="dev1", device_type="iPhone",
                     version=version, body=body, raw_body=raw, device=device,
                     user_agent="Apple-iPhone15C2/2104.1")
    resp = await module.handle(server, req)
    assert resp.http_status == 200
    assert resp.body is not None
    encode(resp.body)
    return resp.body


async def folder_ids(env: Any) -> dict[str, str]:
    server, user = env
    return {f.name: f.server_id for f in await server.items.list_folders(user)}


async def add_item(env: Any, folder: str, cls: str, data: dict[str, Any]) -> str:
    server, user = env
    [res] = await server.items.apply(user, folder, [Op(kind="add", data=data, ref="r",
                                                      cls=cls)])
    assert res.ok and res.server_id
    return res.server_id


# --------------------------------------------------------------------------- Settings

@pytest_twisted.ensureDeferred
async def test_settings_device_information_is_saved(env: Any) -> None:
    server, user = env
    body = await call(env, settings, "Settings", E("Settings:Settings", E(
        "Settings:DeviceInformation", E("Settings:Set", E("Settings:Model", "Pixel 8"),
                                        E("Settings:OS", "Android 14"),
                                        E("Settings:UserAgent", "Android-Mail/2024")))))
    assert body == E("Settings:Settings", E("Settings:Status", "1"), E(
        "Settings:DeviceInformation", E("Settings:Status", "1")))
    info = (await server.state.get_device(user, "dev1"))["info"]
    assert info == {"Model": "Pixel 8", "OS": "Android 14", "UserAgent": "Android-Mail/2024"}


@pytest_twisted.ensureDeferred
async def test_settings_user_information_14_1_and_later(env: Any) -> None:
    body = await call(env, settings, "Settings", E("Settings:Settings", E(
        "Settings:UserInformation", E("Settings:Get"))))
    assert body.findtext("Settings:Status") == "1"
    ui = body.find("Settings:UserInformation")
    assert ui.findtext("Settings:Status") == "1"
    account = ui.find("Settings:Get").find("Settings:Accounts").find("Settings:Account")
    assert account.findtext("Settings:AccountName") == "alice@example.com"
    assert account.findtext("Settings:UserDisplayName") == "alice"
    assert account.find("Settings:EmailAddresses").findtext(
        "Settings:PrimarySmtpAddress") == "alice@example.com"


@pytest_twisted.ensureDeferred
async def test_settings_user_information_14_0(env: Any) -> None:
    body = await call(env, settings, "Settings", E("Settings:Settings", E(
        "Settings:UserInformation", E("Settings:Get"))), version="14.0")
    ui = body.find("Settings:UserInformation")
    assert ui == E("Settings:UserInformation", E("Settings:Status", "1"), E(
        "Settings:Get", E("Settings:EmailAddresses",
                          E("Settings:SmtpAddress", "alice@example.com"))))


@pytest_twisted.ensureDeferred
async def test_settings_user_without_email_uses_login_name(env: Any) -> None:
    server, _ = env
    bob = await server.users.add_user("bob", None, None, True)
    req = EasRequest(cmd="Settings", user=bob, device_id="d", device_type="x",
                     version="12.1", body=E("Settings:Settings", E(
                         "Settings:UserInformation", E("Settings:Get"))))
    body = (await settings.handle(server, req)).body
    assert body.find("Settings:UserInformation").find("Settings:Get").find(
        "Settings:EmailAddresses").findtext("Settings:SmtpAddress") == "bob"


@pytest_twisted.ensureDeferred
async def test_settings_oof_password_rights_management_in_request_order(env: Any) -> None:
    body = await call(env, settings, "Settings", E(
        "Settings:Settings",
        E("Settings:Oof", E("Settings:Get", E("Settings:BodyType", "Text"))),
        E("Settings:DevicePassword", E("Settings:Set", E("Settings:Password", "1234"))),
        E("Settings:RightsManagementInformation", E("Settings:Get")),
        E("Settings:Oof", E("Settings:Set", E("Settings:OofState", "1"))),
        E("Settings:Oof", E("Settings:Set", E("Settings:OofState", "0"))),
    ))
    assert [c.tag for c in body.children] == [
        "Settings:Status", "Settings:Oof", "Settings:DevicePassword",
        "Settings:RightsManagementInformation", "Settings:Oof", "Settings:Oof"]
    oof_get, password, rmi, oof_on, oof_off = body.children[1:]
    assert oof_get == E("Settings:Oof", E("Settings:Status", "1"),
                        E("Settings:Get", E("Settings:OofState", "0")))
    assert password == E("Settings:DevicePassword", E("Settings:Status", "1"))
    assert rmi.findtext("Settings:Status") == "1"
    assert oof_on.findtext("Settings:Status") == "7"
    assert oof_off.findtext("Settings:Status") == "1"


@pytest_twisted.ensureDeferred
async def test_settings_malformed(env: Any) -> None:
    body = await call(env, settings, "Settings", E("Settings:Settings"))
    assert body == E("Settings:Settings", E("Settings:Status", "2"))
    body = await call(env, settings, "Settings", None)
    assert body.findtext("Settings:Status") == "2"
    body = await call(env, settings, "Settings", E("Settings:Settings", E(
        "Settings:DeviceInformation")))
    assert body.findtext("Settings:Status") == "1"
    assert body.find("Settings:DeviceInformation").findtext("Settings:Status") == "2"


# ---------------------------------------------------------------------- ItemOperations

def fetch(collection: str | None, server_id: str | None, *options: Element) -> Element:
    return E("ItemOperations:ItemOperations", E(
        "ItemOperations:Fetch", E("ItemOperations:Store", "Mailbox"),
        None if collection is None else E("AirSync:CollectionId", collection),
        None if server_id is None else E("AirSync:ServerId", server_id),
        E("ItemOperations:Options", *options) if options else None))


def fetch_of(body: Element) -> Element:
    assert body.findtext("ItemOperations:Status") == "1"
    f = body.find("ItemOperations:Response").find("ItemOperations:Fetch")
    assert f is not None
    return f


@pytest_twisted.ensureDeferred
async def test_fetch_contact_with_truncated_body(env: Any) -> None:
    folders = await folder_ids(env)
    text = "Met at the conference in Lisbon; wants a demo."
    sid = await add_item(env, folders["Contacts"], "Contacts", {
        "FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "ada@example.org",
        "Body": {"Type": 1, "Data": text}})
    body = await call(env, itemoperations, "ItemOperations", fetch(
        folders["Contacts"], sid,
        E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", "1"),
          E("AirSyncBase:TruncationSize", "10"))))
    f = fetch_of(body)
    assert [c.tag for c in f.children] == [
        "ItemOperations:Status", "AirSync:CollectionId", "AirSync:ServerId", "AirSync:Class",
        "ItemOperations:Properties"]
    assert f.findtext("ItemOperations:Status") == "1"
    assert f.findtext("AirSync:CollectionId") == folders["Contacts"]
    assert f.findtext("AirSync:ServerId") == sid
    assert f.findtext("AirSync:Class") == "Contacts"
    props = f.find("ItemOperations:Properties")
    assert props.findtext("Contacts:FirstName") == "Ada"
    assert props.findtext("Contacts:Email1Address") == "ada@example.org"
    b = props.find("AirSyncBase:Body")
    assert b.findtext("AirSyncBase:Type") == "1"
    assert b.findtext("AirSyncBase:Truncated") == "1"
    assert b.findtext("AirSyncBase:EstimatedDataSize") == str(len(text))
    assert b.findtext("AirSyncBase:Data") == text[:10]

    # Without a preference: the whole body.
    props = fetch_of(await call(env, itemoperations, "ItemOperations", fetch(
        folders["Contacts"], sid))).find("ItemOperations:Properties")
    assert props.find("AirSyncBase:Body").findtext("AirSyncBase:Data") == text


@pytest_twisted.ensureDeferred
async def test_fetch_item_without_body_has_no_body(env: Any) -> None:
    folders = await folder_ids(env)
    sid = await add_item(env, folders["Tasks"], "Tasks", {"Subject": "Call Ada",
                                                          "Complete": 0})
    f = fetch_of(await call(env, itemoperations, "ItemOperations", fetch(
        folders["Tasks"], sid, E("AirSyncBase:BodyPreference", E("AirSyncBase:Type", "2")))))
    assert f.findtext("AirSync:Class") == "Tasks"
    props = f.find("ItemOperations:Properties")
    assert props.findtext("Tasks:Subject") == "Call Ada"
    assert props.find("AirSyncBase:Body") is None


@pytest_twisted.ensureDeferred
async def test_fetch_missing_item_and_wrong_collection_are_status_6(env: Any) -> None:
    folders = await folder_ids(env)
    sid = await add_item(env, folders["Contacts"], "Contacts", {"FirstName": "Ada"})
    for coll, item in ((folders["Contacts"], sid + "999"), (folders["Calendar"], sid),
                       (folders["Contacts"], "nonsense")):
        body = await call(env, itemoperations, "ItemOperations", fetch(coll, item))
        assert body.findtext("ItemOperations:Status") == "1"
        f = body.find("ItemOperations:Response").find("ItemOperations:Fetch")
        assert f.findtext("ItemOperations:Status") == "6"
        assert f.findtext("AirSync:ServerId") == item
        assert f.find("ItemOperations:Properties") is None


@pytest_twisted.ensureDeferred
async def test_fetch_attachment_longid_and_other_store(env: Any) -> None:
    body = await call(env, itemoperations, "ItemOperations", E(
        "ItemOperations:ItemOperations",
        E("ItemOperations:Fetch", E("ItemOperations:Store", "Mailbox"),
          E("AirSyncBase:FileReference", "att-1")),
        E("ItemOperations:Fetch", E("ItemOperations:Store", "Mailbox"),
          E("Search:LongId", "RgAAAA")),
        E("ItemOperations:Fetch", E("ItemOperations:Store", "DocumentLibrary"),
          E("AirSync:ServerId", "x")),
        E("ItemOperations:Fetch", E("ItemOperations:Store", "Mailbox")),
    ))
    fetches = body.find("ItemOperations:Response").findall("ItemOperations:Fetch")
    assert [f.findtext("ItemOperations:Status") for f in fetches] == ["15", "6", "9", "2"]
    assert fetches[0].findtext("AirSyncBase:FileReference") == "att-1"
    assert fetches[1].findtext("Search:LongId") == "RgAAAA"


@pytest_twisted.ensureDeferred
async def test_item_operations_empty_folder_and_move(env: Any) -> None:
    server, user = env
    folders = await folder_ids(env)
    sid = await add_item(env, folders["Contacts"], "Contacts", {"FirstName": "Ada"})
    body = await call(env, itemoperations, "ItemOperations", E(
        "ItemOperations:ItemOperations",
        E("ItemOperations:EmptyFolderContents", E("AirSync:CollectionId",
                                                  folders["Deleted Items"])),
        E("ItemOperations:EmptyFolderContents", E("AirSync:CollectionId",
                                                  folders["Contacts"])),
        E("ItemOperations:EmptyFolderContents", E("AirSync:CollectionId", "nope")),
        E("ItemOperations:Move", E("ItemOperations:ConversationId", "abc"),
          E("ItemOperations:DstFldId", folders["Inbox"])),
    ))
    resp = body.find("ItemOperations:Response")
    assert [c.tag.split(":")[1] for c in resp.children] == [
        "EmptyFolderContents", "EmptyFolderContents", "EmptyFolderContents", "Move"]
    assert [c.findtext("ItemOperations:Status") for c in resp.children] == ["1", "5", "6", "6"]
    # The contacts folder was not emptied.
    assert len(await server.items.get_items(user, [sid])) == 1


@pytest_twisted.ensureDeferred
async def test_item_operations_malformed_is_status_2(env: Any) -> None:
    body = await call(env, itemoperations, "ItemOperations", E("ItemOperations:ItemOperations"))
    assert body == E("ItemOperations:ItemOperations", E("ItemOperations:Status", "2"))


# --------------------------------------------------------------------------- MoveItems

def move(src: str, src_fld: str, dst_fld: str) -> Element:
    return E("Move:Move", E("Move:SrcMsgId", src), E("Move:SrcFldId", src_fld),
             E("Move:DstFldId", dst_fld))


@pytest_twisted.ensureDeferred
async def test_move_items_all_statuses(env: Any) -> None:
    server, user = env
    folders = await folder_ids(env)
    other = await server.items.create_folder(user, "0", "Other contacts", 14)
    ada = await add_item(env, folders["Contacts"], "Contacts", {"FirstName": "Ada"})
    bob = await add_item(env, folders["Contacts"], "Contacts", {"FirstName": "Bob"})
    waiter = Heard(server.notifier, user.id, [other.server_id])
    body = await call(env, moveitems, "MoveItems", E(
        "Move:MoveItems",
        move(ada, folders["Contacts"], other.server_id),            # 3
        move(ada + "0", folders["Contacts"], other.server_id),      # 1: no such item
        move(bob, folders["Calendar"], other.server_id),            # 1: not in SrcFldId
        move(bob, folders["Contacts"], "nope"),                     # 2: no such folder
        move(bob, folders["Contacts"], folders["Contacts"]),        # 4: same folder
        move(bob, folders["Contacts"], folders["Calendar"]),        # 5: other class
        move(bob, folders["Contacts"], folders["Inbox"]),           # 5: mail folder
    ))
    responses = body.findall("Move:Response")
    assert [r.findtext("Move:Status") for r in responses] == ["3", "1", "1", "2", "4", "5", "5"]
    assert [r.findtext("Move:SrcMsgId") for r in responses] == [
        ada, ada + "0", bob, bob, bob, bob, bob]
    new_id = responses[0].findtext("Move:DstMsgId")
    assert new_id
    assert all(r.find("Move:DstMsgId") is None for r in responses[1:])
    [moved] = await server.items.get_items(user, [new_id])
    assert moved.folder_id == other.server_id
    assert moved.data["FirstName"] == "Ada"
    assert waiter.called
    [still] = await server.items.get_items(user, [bob])
    assert still.folder_id == folders["Contacts"]


@pytest_twisted.ensureDeferred
async def test_move_items_without_moves(env: Any) -> None:
    body = await call(env, moveitems, "MoveItems", E("Move:MoveItems"))
    assert body == E("Move:MoveItems", E("Move:Status", "103"))
    server, user = env
    req = EasRequest(cmd="MoveItems", user=user, device_id="d", device_type="x",
                     version="12.1", body=E("Move:MoveItems"))
    with pytest.raises(EasHTTPError) as exc:
        await moveitems.handle(server, req)
    assert exc.value.code == 400


# ------------------------------------------------------------------------------- mail

@pytest.mark.parametrize(("module", "cmd"), [(COMMANDS["SendMail"], "SendMail"),
                                             (COMMANDS["SmartReply"], "SmartReply"),
                                             (COMMANDS["SmartForward"], "SmartForward")])
@pytest_twisted.ensureDeferred
async def test_mail_is_refused_with_a_status(env: Any, module: Any, cmd: str) -> None:
    body = await call(env, module, cmd, E(f"ComposeMail:{cmd}",
                                          E("ComposeMail:ClientId", "c1"),
                                          E("ComposeMail:SaveInSentItems"),
                                          Element("ComposeMail:MIME", opaque=b"Subject: x\r\n")))
    assert body == E(f"ComposeMail:{cmd}", E("ComposeMail:Status", "137"))


@pytest_twisted.ensureDeferred
async def test_mail_12_1_raw_mime_is_http_400(env: Any) -> None:
    server, user = env
    req = EasRequest(cmd="SendMail", user=user, device_id="d", device_type="x",
                     version="12.1", body=None, raw_body=b"Subject: hi\r\n\r\nbody\r\n",
                     params={"SaveInSent": "T"})
    with pytest.raises(EasHTTPError) as exc:
        await COMMANDS["SendMail"].handle(server, req)
    assert exc.value.code == 400


# ------------------------------------------------------------------------------ Search

def gal(query: str, rng: str | None = None) -> Element:
    return E("Search:Search", E("Search:Store", E("Search:Name", "GAL"),
                                E("Search:Query", query),
                                E("Search:Options", E("Search:Range", rng)) if rng else None))


def gal_store(body: Element) -> Element:
    assert body.findtext("Search:Status") == "1"
    return body.find("Search:Response").find("Search:Store")


def gal_aliases(store: Element) -> list[str]:
    return [r.find("Search:Properties").findtext("GAL:Alias")
            for r in store.findall("Search:Result")]


@pytest_twisted.ensureDeferred
async def test_search_gal(env: Any) -> None:
    """MS-ASCMD 2.2.1.16 (GAL search), 2.2.3.139 (Range: 0-based, at most 100), and the
    match of issue #10 point 2: a prefix of the login, the address, the display name
    or one of its words (Exchange's ANR), ordered by display name."""
    server, _ = env
    await server.users.update_user("alice", display_name="Alice Smith")
    await server.users.add_user("bob", None, "bob@example.com", True)
    await server.users.update_user("bob", display_name="Bob Smith")
    await server.users.add_user("carol", None, "carol@other.org", True)
    store = gal_store(await call(env, search, "Search", gal("SMI")))
    assert store.findtext("Search:Status") == "1"
    results = store.findall("Search:Result")
    emails = [r.find("Search:Properties").findtext("GAL:EmailAddress") for r in results]
    assert emails == ["alice@example.com", "bob@example.com"]
    assert store.findtext("Search:Total") == "2"
    assert store.findtext("Search:Range") == "0-1"
    props = results[1].find("Search:Properties")
    assert props.findtext("GAL:DisplayName") == "Bob Smith"
    assert props.findtext("GAL:FirstName") == "Bob"
    assert props.findtext("GAL:LastName") == "Smith"
    assert props.findtext("GAL:Alias") == "bob"

    # a one-word name (carol has no display name: her login is shown) has no first
    # name: the optional element is left out, not sent empty (MS-ASCMD 2.2.3.70
    # GAL:FirstName, 0...1 in Properties 2.2.3.139.3)
    carol = gal_store(await call(env, search, "Search", gal("carol")))
    props = carol.find("Search:Result").find("Search:Properties")
    assert [c.tag for c in props.children if not (c.text or "").strip()] == []
    assert props.findtext("GAL:LastName") == props.findtext("GAL:DisplayName")
    assert props.find("GAL:FirstName") is None

    store = gal_store(await call(env, search, "Search", gal("smith", "1-5")))
    assert gal_aliases(store) == ["bob"]
    assert store.findtext("Search:Range") == "1-1"
    assert store.findtext("Search:Total") == "2"

    for query, aliases in (("car", ["carol"]), ("carol@oth", ["carol"]), ("bob s", ["bob"]),
                           ("b", ["bob"]), ("a", ["alice"])):
        assert gal_aliases(gal_store(await call(env, search, "Search", gal(query)))) == \
            aliases, query
    # a substring that begins no word no longer matches (it did before issue #10)
    for query in ("example.com", "mith", "arol"):
        store = gal_store(await call(env, search, "Search", gal(query)))
        assert gal_aliases(store) == [] and store.findtext("Search:Total") == "0", query


@pytest_twisted.ensureDeferred
async def test_search_gal_without_match_and_errors(env: Any) -> None:
    store = (await call(env, search, "Search", gal("zzz"))).find(
        "Search:Response").find("Search:Store")
    assert store.findtext("Search:Status") == "1"
    assert store.find("Search:Result") is None
    assert store.findtext("Search:Total") == "0"
    assert store.find("Search:Range") is not None
    store = (await call(env, search, "Search", gal("a", "9-2"))).find(
        "Search:Response").find("Search:Store")
    assert store.findtext("Search:Status") == "2"
    body = await call(env, search, "Search", E("Search:Search"))
    assert body.findtext("Search:Status") == "2"
    store = (await call(env, search, "Search", E("Search:Search", E(
        "Search:Store", E("Search:Name", "Mailbox"), E("Search:Query", "x"))))).find(
        "Search:Response").find("Search:Store")
    assert store.findtext("Search:Status") == "1"
    assert store.findtext("Search:Total") == "0"


# ------------------------------------------------------------------- ResolveRecipients

@pytest_twisted.ensureDeferred
async def test_resolve_recipients(env: Any) -> None:
    server, _ = env
    folders = await folder_ids(env)
    await add_item(env, folders["Contacts"], "Contacts", {
        "FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "Ada <ada@example.org>"})
    await add_item(env, folders["Contacts"], "Contacts", {
        "FirstName": "Adam", "LastName": "Smith", "Email1Address": "adam@example.org"})
    await server.users.add_user("bob", None, "bob@example.com", True)
    body = await call(env, resolverecipients, "ResolveRecipients", E(
        "ResolveRecipients:ResolveRecipients",
        E("ResolveRecipients:To", "ada@example.org"),
        E("ResolveRecipients:To", "Lovelace"),
        E("ResolveRecipients:To", "ada"),
        E("ResolveRecipients:To", "bob@example.com"),
        E("ResolveRecipients:To", "nobody@nowhere.test"),
    ))
    assert body.findtext("ResolveRecipients:Status") == "1"
    r = body.findall("ResolveRecipients:Response")
    assert [x.findtext("ResolveRecipients:To") for x in r] == [
        "ada@example.org", "Lovelace", "ada", "bob@example.com", "nobody@nowhere.test"]
    assert [x.findtext("ResolveRecipients:Status") for x in r] == ["1", "1", "2", "1", "4"]
    assert [x.findtext("ResolveRecipients:RecipientCount") for x in r] == [
        "1", "1", "2", "1", "0"]
    ada = r[0].find("ResolveRecipients:Recipient")
    assert ada.findtext("ResolveRecipients:Type") == "2"
    assert ada.findtext("ResolveRecipients:DisplayName") == "Ada Lovelace"
    assert ada.findtext("ResolveRecipients:EmailAddress") == "ada@example.org"
    bob = r[3].find("ResolveRecipients:Recipient")
    assert bob.findtext("ResolveRecipients:Type") == "1"
    assert bob.findtext("ResolveRecipients:EmailAddress") == "bob@example.com"


@pytest_twisted.ensureDeferred
async def test_resolve_recipients_ambiguity_limit_and_malformed(env: Any) -> None:
    folders = await folder_ids(env)
    for i in range(4):
        await add_item(env, folders["Contacts"], "Contacts", {
            "FirstName": f"Sam{i}", "Email1Address": f"sam{i}@example.org"})
    body = await call(env, resolverecipients, "ResolveRecipients", E(
        "ResolveRecipients:ResolveRecipients", E("ResolveRecipients:To", "sam"),
        E("ResolveRecipients:Options", E("ResolveRecipients:MaxAmbiguousRecipients", "2"))))
    r = body.find("ResolveRecipients:Response")
    assert r.findtext("ResolveRecipients:Status") == "3"
    assert r.findtext("ResolveRecipients:RecipientCount") == "2"
    assert len(r.findall("ResolveRecipients:Recipient")) == 2
    body = await call(env, resolverecipients, "ResolveRecipients",
                      E("ResolveRecipients:ResolveRecipients"))
    assert body == E("ResolveRecipients:ResolveRecipients", E("ResolveRecipients:Status", "5"))


@pytest_twisted.ensureDeferred
async def test_resolve_recipients_match_by_prefix_and_bounded_text(env: Any) -> None:
    """MS-ASCMD 2.2.1.15 with issue #10 point 2: a name matches where it begins a word
    or a whole name (Exchange's ANR), not as a substring; an "address" over RFC 5321's
    254 characters resolves to nothing; a 32 kB DisplayName is sent cut to 256."""
    folders = await folder_ids(env)
    await add_item(env, folders["Contacts"], "Contacts", {
        "FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "ada@example.org"})
    await add_item(env, folders["Contacts"], "Contacts", {
        "FileAs": "Q" * 32_000, "Email1Address": "q@example.org",
        "Email2Address": "q" * 300 + "@example.org"})
    tos = ["ace", "love", "Ada L", "lovelace, ada", "q" * 300 + "@example.org",
           "Q" * 32_000, "q@EXAMPLE.ORG"]
    body = await call(env, resolverecipients, "ResolveRecipients", E(
        "ResolveRecipients:ResolveRecipients", *[E("ResolveRecipients:To", t) for t in tos]))
    r = body.findall("ResolveRecipients:Response")
    assert [x.findtext("ResolveRecipients:Status") for x in r] == [
        "4", "1", "1", "1", "4", "1", "1"]
    for x in r[5:]:
        rec = x.find("ResolveRecipients:Recipient")
        assert rec.findtext("ResolveRecipients:DisplayName") == "Q" * 256
        assert rec.findtext("ResolveRecipients:EmailAddress") == "q@example.org"


@pytest_twisted.ensureDeferred
async def test_resolve_recipients_caps_to_elements(env: Any) -> None:
    """MS-ASCMD 2.2.3.183: at most 100 To; more is answered with the protocol-error
    Status 5 (2.2.3.177.12) and nothing is resolved; exactly 100 is still served."""
    def request(n: int) -> Element:
        return E("ResolveRecipients:ResolveRecipients",
                 *[E("ResolveRecipients:To", f"r{i}@nowhere.test") for i in range(n)])
    body = await call(env, resolverecipients, "ResolveRecipients", request(101))
    assert body == E("ResolveRecipients:ResolveRecipients", E("ResolveRecipients:Status", "5"))
    body = await call(env, resolverecipients, "ResolveRecipients", request(100))
    assert body.findtext("ResolveRecipients:Status") == "1"
    assert len(body.findall("ResolveRecipients:Response")) == 100


# --------------------------------------------------------------------- MeetingResponse

def meeting(user_response: str, request_id: str, collection: str | None = None,
            instance: str | None = None) -> Element:
    return E("MeetingResponse:Request", E("MeetingResponse:UserResponse", user_response),
             None if collection is None else E("MeetingResponse:CollectionId", collection),
             E("MeetingResponse:RequestId", request_id),
             None if instance is None else E("MeetingResponse:InstanceId", instance))


EVENT = {"Subject": "Review", "StartTime": "20300105T100000Z", "EndTime": "20300105T110000Z",
         "UID": "uid-1", "OrganizerName": "Bob", "OrganizerEmail": "bob@example.com",
         "MeetingStatus": 3, "BusyStatus": 2,
         "Attendees": [{"Email": "alice@example.com", "Name": "Alice", "AttendeeStatus": 5,
                        "AttendeeType": 1},
                       {"Email": "carol@example.com", "Name": "Carol", "AttendeeStatus": 3,
                        "AttendeeType": 1}]}


@pytest_twisted.ensureDeferred
async def test_meeting_response_accept_tentative_decline(env: Any) -> None:
    server, user = env
    folders = await folder_ids(env)
    cal = folders["Calendar"]
    ids = [await add_item(env, cal, "Calendar", dict(EVENT, UID=f"uid-{i}")) for i in range(3)]
    body = await call(env, meetingresponse, "MeetingResponse", E(
        "MeetingResponse:MeetingResponse", meeting("1", ids[0], cal), meeting("2", ids[1]),
        meeting("3", ids[2], cal)))
    results = body.findall("MeetingResponse:Result")
    assert [r.findtext("MeetingResponse:Status") for r in results] == ["1", "1", "1"]
    assert [r.findtext("MeetingResponse:RequestId") for r in results] == ids
    assert results[0].findtext("MeetingResponse:CalendarId") == ids[0]
    assert results[1].findtext("MeetingResponse:CalendarId") == ids[1]
    assert results[2].find("MeetingResponse:CalendarId") is None
    items = {i.server_id: i.data for i in await server.items.get_items(user, ids)}
    assert [items[i]["ResponseType"] for i in ids] == [3, 2, 4]
    assert [items[i]["BusyStatus"] for i in ids] == [2, 1, 0]
    for i, expected in zip(ids, (3, 2, 4), strict=True):
        by_email = {a["Email"]: a for a in items[i]["Attendees"]}
        assert by_email["alice@example.com"]["AttendeeStatus"] == expected
        assert by_email["carol@example.com"]["AttendeeStatus"] == 3
        assert items[i]["AppointmentReplyTime"].endswith("Z")
        assert items[i]["Subject"] == "Review"


@pytest_twisted.ensureDeferred
async def test_meeting_response_for_one_occurrence(env: Any) -> None:
    server, user = env
    cal = (await folder_ids(env))["Calendar"]
    sid = await add_item(env, cal, "Calendar", dict(EVENT, Recurrence={"Type": 0,
                                                                       "Interval": 1}))
    body = await call(env, meetingresponse, "MeetingResponse", E(
        "MeetingResponse:MeetingResponse",
        meeting("2", sid, cal, instance="2030-01-07T10:00:00.000Z")))
    assert body.find("MeetingResponse:Result").findtext("MeetingResponse:Status") == "1"
    [item] = await server.items.get_items(user, [sid])
    assert item.data.get("ResponseType") is None
    [exc] = item.data["Exceptions"]
    assert exc["ExceptionStartTime"] == "20300107T100000Z"
    assert exc["ResponseType"] == 2


@pytest_twisted.ensureDeferred
async def test_meeting_response_errors(env: Any) -> None:
    server, user = env
    folders = await folder_ids(env)
    cal = folders["Calendar"]
    sid = await add_item(env, cal, "Calendar", dict(EVENT))
    own = await add_item(env, cal, "Calendar", dict(EVENT, UID="own",
                                                    OrganizerEmail="alice@example.com"))
    contact = await add_item(env, folders["Contacts"], "Contacts", {"FirstName": "Ada"})
    body = await call(env, meetingresponse, "MeetingResponse", E(
        "MeetingResponse:MeetingResponse",
        meeting("1", sid + "999", cal),          # no such item
        meeting("1", contact),                   # not an event
        meeting("1", sid, folders["Contacts"]),  # wrong collection
        meeting("4", sid, cal),                  # bad UserResponse
        meeting("1", own, cal),                  # the user organises it
        meeting("1", sid, cal, instance="2030-01-07T10:00:00.000Z"),  # does not recur
    ))
    assert [r.findtext("MeetingResponse:Status")
            for r in body.findall("MeetingResponse:Result")] == ["2"] * 6
    [item] = await server.items.get_items(user, [sid])
    assert "ResponseType" not in item.data
    req = EasRequest(cmd="MeetingResponse", user=user, device_id="d", device_type="x",
                     version="16.1", body=E("MeetingResponse:MeetingResponse"))
    with pytest.raises(EasHTTPError):
        await meetingresponse.handle(server, req)
