"""Issue #14 point 5, end to end: Find (MS-ASCMD 2.2.1.2, EAS 16.1) through
``twistd easync`` over HTTPS, on the SQL store and on the CRM store (the fake CRM in
its own process), with raw WBXML and with pyactivesync (which speaks 16.1 and has
``find_gal`` / ``find_mailbox``).

libwbxml 0.11.8 has no code page 25, so Find requests and answers are written and
read by ``findwire`` from the MS-ASWBXML 2.1.2.1.26 token table (not by easync's
codec); everything else (Provision, FolderSync, Sync) goes through libwbxml as in
the other raw tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
from backendsites import started
from easync_server import RunningServer, wait_for
from findwire import N, gal_find, mailbox_find
from findwire import decode as wire_decode
from findwire import encode as wire_encode
from rawclient import Node, RawDevice

pytestmark = needs.mark(needs.libwbxml())
pyactivesync = needs.importable("pyactivesync")

PASSWORD = "find-Pa55-word"
USERS = ("fiona", "george")


@pytest.fixture(scope="module", params=["sql", "crm"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[RunningServer, Any]]:
    with started(tmp_path_factory, request.param, "find", USERS, PASSWORD) as s:
        yield s


def device(srv: RunningServer, user: str, dev: str, version: str = "16.1") -> RawDevice:
    d = RawDevice(srv.url, user, PASSWORD, dev, version=version)
    d.provision()
    return d


def find(d: RawDevice, request: Node) -> Node:
    """POST a Find; its answer (HTTP 200, a WBXML body) decoded by findwire."""
    r = d.post("Find", wire_encode(request))
    assert r.status_code == 200, r.status_code
    assert r.headers["Content-Type"] == "application/vnd.ms-sync.wbxml"
    assert b"Traceback" not in r.content
    return wire_decode(r.content)


def response(answer: Node) -> Node:
    assert answer.text_of("Find:Status") == "1", answer
    resp = answer.find("Find:Response")
    assert resp is not None
    assert resp.text_of("ItemOperations:Store") == "Mailbox"   # MS-ASCMD 2.2.3.178.1
    assert resp.text_of("Find:Status") == "1"
    return resp


def names(resp: Node) -> list[str | None]:
    return [r.text_of("Find:Properties/GAL:DisplayName") for r in resp.findall("Find:Result")]


def add_contacts(d: RawDevice, folder: str, rows: list[dict[str, str]]) -> None:
    """The device adds contacts with a Sync (libwbxml)."""
    key = d.initial(folder)
    adds = "".join(
        f"<Add><ClientId>c{n}</ClientId><ApplicationData>"
        + "".join(f"<K:{k}>{v}</K:{k}>" for k, v in row.items())
        + "</ApplicationData></Add>" for n, row in enumerate(rows))
    r = d.sync(folder, key, f"<GetChanges>0</GetChanges><Commands>{adds}</Commands>")
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1"
    statuses = [a.text_of("AirSync:Status") for a in coll.iter("AirSync:Add")]
    assert statuses == ["1"] * len(rows), statuses


@pytest.fixture(scope="module")
def phones(site: tuple[RunningServer, Any]) -> dict[str, Any]:
    """fiona and george, each with a 16.1 device and contacts of their own."""
    srv, _crm = site
    fiona, george = device(srv, "fiona", "findF1"), device(srv, "george", "findG1")
    f_contacts, g_contacts = fiona.folders()["Contacts"], george.folders()["Contacts"]
    add_contacts(fiona, f_contacts, [
        {"FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "ada@example.org",
         "CompanyName": "Analytical Engines", "MobilePhoneNumber": "+39 333 1234567"},
        *({"FirstName": f"Person{n:02d}", "LastName": "Filler",
           "Email1Address": f"p{n}@example.org"} for n in range(12))])
    add_contacts(george, g_contacts, [
        {"FirstName": "Adam", "LastName": "Lovett", "Email1Address": "adam@example.org"}])
    return {"fiona": fiona, "george": george, "contacts": f_contacts}


def test_options_lists_find_with_16_1(site: tuple[RunningServer, Any]) -> None:
    """MS-ASHTTP 2.2.4.1.2.1/2.2.4.1.2.2: the commands and versions offered; Find is
    a 16.1 command (MS-ASCMD 2.2.3.69) and 16.1 is offered."""
    srv, _ = site
    d = RawDevice(srv.url, "fiona", PASSWORD, "findopt")
    r = d.session.options(srv.url, auth=d.auth, verify=False)
    assert r.status_code == 200
    assert "16.1" in r.headers["MS-ASProtocolVersions"].split(",")
    commands = r.headers["MS-ASProtocolCommands"].split(",")
    assert "Find" in commands and "Search" in commands


def test_gal_find_returns_the_colleague(phones: dict[str, Any]) -> None:
    """MS-ASCMD 2.2.1.2, GALSearchCriterion: the account, with gal:* Properties."""
    resp = response(find(phones["fiona"], gal_find("geo")))
    [result] = resp.findall("Find:Result")
    assert result.text_of("Find:Properties/GAL:EmailAddress") == "george@example.org"
    assert result.text_of("Find:Properties/GAL:Alias") == "george"
    assert resp.text_of("Find:Total") == "1"
    assert resp.text_of("Find:Range") == "0-0"


def test_contacts_find_returns_the_users_contact_only(phones: dict[str, Any]) -> None:
    """A mailbox Find on Contacts (Class, or the Contacts CollectionId) finds the
    user's own contact; the same words never reach another user's contacts."""
    fiona, contacts = phones["fiona"], phones["contacts"]
    for request in (mailbox_find("love"), mailbox_find("love", cls=None, collection=contacts)):
        resp = response(find(fiona, request))
        [result] = resp.findall("Find:Result")
        assert result.text_of("AirSync:Class") == "Contacts"
        assert result.text_of("AirSync:CollectionId") == contacts
        assert result.text_of("AirSync:ServerId")
        assert result.text_of("Find:Properties/GAL:DisplayName") == "Ada Lovelace"
        assert result.text_of("Find:Properties/GAL:MobilePhone") == "+39 333 1234567"
        assert result.text_of("Find:Properties/GAL:Company") == "Analytical Engines"
        assert resp.text_of("Find:Total") == "1"
    # george's Adam Lovett: not for fiona, found by george
    resp = response(find(fiona, mailbox_find("lovett")))
    assert names(resp) == [] and resp.text_of("Find:Total") == "0"
    assert names(response(find(phones["george"], mailbox_find("lovett")))) == ["Adam Lovett"]
    # mail: easync keeps none (Class Email, MS-ASCMD 2.2.3.27.1): success, no match
    resp = response(find(fiona, mailbox_find("ada", cls="Email")))
    assert names(resp) == [] and resp.text_of("Find:Total") == "0"


def test_range_is_honoured(phones: dict[str, Any]) -> None:
    """MS-ASCMD 2.2.3.143.1: the slice asked for; Total beyond it says there is more."""
    fiona = phones["fiona"]
    first = response(find(fiona, mailbox_find("filler", rng="0-4")))
    assert len(first.findall("Find:Result")) == 5
    assert first.text_of("Find:Range") == "0-4"
    assert int(first.text_of("Find:Total") or 0) > 5
    second = response(find(fiona, mailbox_find("filler", rng="5-11")))
    assert len(second.findall("Find:Result")) == 7
    assert second.text_of("Find:Range") == "5-11"
    ids = [r.text_of("AirSync:ServerId") for r in
           first.findall("Find:Result") + second.findall("Find:Result")]
    assert len(set(ids)) == 12
    rest = response(find(fiona, mailbox_find("filler", rng="10-99")))
    assert rest.text_of("Find:Range") == "10-11" and rest.text_of("Find:Total") == "12"


def test_bad_requests_get_status_2(site: tuple[RunningServer, Any],
                                   phones: dict[str, Any]) -> None:
    """MS-ASCMD 2.2.3.177.2: Status 2 and no Response for a search that fails to
    validate; never a traceback; an unknown folder is Status 3."""
    srv, _ = site
    fiona = phones["fiona"]
    log_before = len(srv.log_text())
    no_query = N("Find:Find", N("Find:SearchId", "0b2d7c55-8d4e-4f0a-a1f6-5f2b7f0e9c33"),
                 N("Find:ExecuteSearch", N("Find:GalSearchCriterion", N(
                     "Find:Options", N("Find:Range", "0-9")))))
    for request in (no_query, gal_find("ada", rng="5-2"), gal_find("ada", rng="0-5000"),
                    mailbox_find(None), gal_find("ada", search_id="not-a-guid")):
        answer = find(fiona, request)
        assert answer.text_of("Find:Status") == "2"
        assert answer.find("Find:Response") is None
    assert find(fiona, mailbox_find("ada", collection="nope")).text_of("Find:Status") == "3"
    # a body that is not WBXML: HTTP 400, no traceback
    r = fiona.post("Find", b"\x03\x01\x6a\x00\x00\x19\x45\x46")
    assert r.status_code == 400 and b"Traceback" not in r.content
    assert "Traceback" not in srv.log_text()[log_before:]


def test_a_14_1_device_gets_version_not_supported(site: tuple[RunningServer, Any],
                                                  phones: dict[str, Any]) -> None:
    """Find exists only in 16.1 (MS-ASCMD 2.2.3.69): a 14.1 device that sends it gets
    the common status 138 VersionNotSupported (MS-ASCMD 2.2.2), nothing searched."""
    srv, _ = site
    old = device(srv, "fiona", "findOld", version="14.1")
    answer = find(old, mailbox_find("love"))
    assert answer.text_of("Find:Status") == "138"
    assert answer.find("Find:Response") is None


def test_a_contact_made_on_the_server_is_found(site: tuple[RunningServer, Any],
                                              phones: dict[str, Any],
                                              tmp_path: Path) -> None:
    """A contact that no phone wrote is found too: on the CRM store one made in the
    CRM (it reaches the user's mirror), on the SQL store one imported with
    ``easync-admin import`` (a vCard)."""
    srv, crm = site
    if crm is not None:
        crm("add_record", module="Contacts", owner="fiona",
            fields={"firstname": "Grace", "lastname": "Hopper",
                    "email": "grace@example.org"})
    else:
        card = tmp_path / "grace.vcf"
        card.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nN:Hopper;Grace;;;\r\n"
                        "FN:Grace Hopper\r\nEMAIL:grace@example.org\r\nEND:VCARD\r\n")
        srv.admin("import", "fiona", str(card))
    fiona = phones["fiona"]
    wait_for(lambda: names(response(find(fiona, mailbox_find("hopper")))) == [
        "Grace Hopper"], timeout=20)


def recipients(d: RawDevice, to: str) -> list[str | None]:
    """The Recipient DisplayNames ResolveRecipients (libwbxml) gives for ``to``."""
    r = d.call("ResolveRecipients", '<ResolveRecipients xmlns="ResolveRecipients:">'
               f"<To>{to}</To></ResolveRecipients>")
    assert r is not None and r.text_of("ResolveRecipients:Status") == "1"
    return [rec.text_of("ResolveRecipients:DisplayName")
            for rec in r.iter("ResolveRecipients:Recipient")]


def test_a_contact_without_an_address_is_found(site: tuple[RunningServer, Any],
                                               phones: dict[str, Any]) -> None:
    """Issue 14 point 5: Find finds a contact that has a phone number only — written
    by the phone (SQL store) or made in the CRM (its mirror) — and a contact by the
    beginning of its address; ResolveRecipients (MS-ASCMD 2.2.1.15) still offers only
    contacts it can send to."""
    _, crm = site
    fiona = phones["fiona"]
    if crm is None:
        add_contacts(fiona, phones["contacts"], [
            {"FirstName": "Mario", "LastName": "Plumber", "MobilePhoneNumber": "+39 333 7"}])
    else:
        crm("add_record", module="Contacts", owner="fiona",
            fields={"firstname": "Mario", "lastname": "Plumber", "mobile": "+39 333 7"})
    wait_for(lambda: names(response(find(fiona, mailbox_find("plumber")))) == [
        "Mario Plumber"], timeout=20)
    [result] = response(find(fiona, mailbox_find("mario pl"))).findall("Find:Result")
    assert result.text_of("Find:Properties/GAL:MobilePhone") == "+39 333 7"
    assert result.text_of("Find:Properties/GAL:EmailAddress") is None
    assert names(response(find(fiona, mailbox_find("ada@exam")))) == ["Ada Lovelace"]
    assert recipients(fiona, "plumber") == []
    assert recipients(fiona, "lovelace") == ["Ada Lovelace"]


def test_pyactivesync_find(site: tuple[RunningServer, Any], phones: dict[str, Any],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """pyactivesync 16.1 ``find_gal`` and ``find_mailbox`` against easync."""
    from pyactivesync import Client

    srv, _ = site
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
    c = Client(srv.host, "fiona", PASSWORD, device_id="findpas1", timeout=30)
    gal = c.find_gal("george")
    assert gal.status == "1"
    assert [i.fields.get("GAL.EmailAddress") for i in gal.items] == ["george@example.org"]
    folders = {f.name: f.id for f in c.list_folders()}
    found = c.find_mailbox("lovelace", folder_id=folders["Contacts"], item_class="Contacts",
                           max_results=5)
    assert found.status == "1"
    [item] = found.items
    assert item.collection_id == folders["Contacts"]
    assert item.fields.get("GAL.DisplayName") == "Ada Lovelace"
    page = c.find_mailbox("filler", item_class="Contacts", range_start=10, max_results=5)
    assert page.range == "10-11" and len(page.items) == 2
