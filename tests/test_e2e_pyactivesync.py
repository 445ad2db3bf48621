"""Acceptance: pyactivesync (a real EAS client, from PyPI) against ``twistd easync`` over TLS."""

from __future__ import annotations

from dataclasses import fields

import needs
import pytest

pyactivesync = needs.importable("pyactivesync")
from easync_server import RunningServer
from pyactivesync import Client
from pyactivesync.models import Contact, ContactChange

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = RunningServer(tmp_path_factory.mktemp("e2e")).start()
    srv.add_user("alice", PASSWORD, email="alice@example.org")
    srv.add_user("bob", PASSWORD, email="bob@example.org")
    srv.add_user("carol", PASSWORD, activesync=False)
    # The client trusts the server's own self-signed certificate, as a phone does once
    # its user accepts it: real verification, host name included.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
        yield srv
    srv.stop()


def client(server: RunningServer, device: str, user: str = "alice",
           password: str = PASSWORD) -> Client:
    return Client(server.host, user, password, device_id=device, timeout=30)


def folder_ids(c: Client) -> dict[str, str]:
    return {f.name: f.id for f in c.list_folders()}


def full_sync(c: Client, folder: str, key: str = "0") -> tuple[str, dict, list[str]]:
    """Sync until nothing more is available; returns (key, {sid: fields}, deleted)."""
    items: dict[str, dict] = {}
    deleted: list[str] = []
    if key == "0":
        key = c.sync_folder(folder, "0").sync_key
    while True:
        res = c.sync_folder(folder, key)
        key = res.sync_key
        for it in res.added + res.changed:
            items[it.server_id] = it.fields
        deleted.extend(res.deleted)
        if not res.more_available:
            return key, items, deleted


RICH = Contact(
    first_name="Giulia", middle_name="Maria", last_name="Rossi", suffix="Jr.", title="Dott.",
    job_title="Engineer", file_as="Rossi, Giulia", company_name="ACME S.p.A.",
    department="R&D", office_location="Building 3",
    email1_address="giulia.rossi@example.org", email2_address="g.rossi@home.example",
    email3_address="giulia@other.example",
    home_phone_number="+39 06 1111", home2_phone_number="+39 06 2222",
    business_phone_number="+39 02 3333", business2_phone_number="+39 02 4444",
    mobile_phone_number="+39 333 5555", business_fax_number="+39 02 6666",
    home_fax_number="+39 06 7777", pager_number="8888", car_phone_number="9999",
    radio_phone_number="1010", assistant_name="Marco", assistant_phone_number="+39 02 1212",
    business_address_street="Via Roma 1", business_address_city="Milano",
    business_address_state="MI", business_address_postal_code="20100",
    business_address_country="Italia",
    home_address_street="Via Appia 2", home_address_city="Roma", home_address_state="RM",
    home_address_postal_code="00100", home_address_country="Italia",
    other_address_street="Rue 3", other_address_city="Paris", other_address_state="IDF",
    other_address_postal_code="75001", other_address_country="France",
    web_page="https://example.org/giulia", spouse="Luca",
    birthday="1985-03-14T00:00:00.000Z", anniversary="2010-06-20T00:00:00.000Z",
    categories=["Clienti", "VIP"],
)

TAGS = {f.name: f.name for f in fields(Contact)}


def expected_fields(contact: Contact) -> dict[str, str]:
    from pyactivesync.client import _CONTACT_FIELD_TAGS

    out = {}
    for name, tag in _CONTACT_FIELD_TAGS.items():
        value = getattr(contact, name)
        if value is not None:
            out[tag] = value
    return out


def leaf(fields_: dict, tag: str) -> str | None:
    """A flattened pyactivesync field by tag name (keys look like 'Contacts.FirstName')."""
    for k, v in fields_.items():
        if k.split(".")[-1] == tag:
            return v
    return None


def test_provision_and_folders(server: RunningServer) -> None:
    with client(server, "devprov1") as c:
        key = c.provision()
        assert key and key != "0"
        folders = {f.name: f for f in c.list_folders()}
    for name in ("Contacts", "Calendar", "Tasks", "Inbox"):
        assert name in folders
    assert folders["Contacts"].type.value == 9
    assert folders["Calendar"].type.value == 8
    assert folders["Tasks"].type.value == 7


def test_contact_round_trip_between_devices(server: RunningServer) -> None:
    a = client(server, "deviceA1")
    b = client(server, "deviceB1")
    third = client(server, "deviceC1")
    fa = folder_ids(a)["Contacts"]
    fb = folder_ids(b)["Contacts"]
    assert fa == fb
    ka, items_a, _ = full_sync(a, fa)
    kb, _items_b, _ = full_sync(b, fb)
    kc = third.sync_folder(fa, "0").sync_key
    before_c = set(items_a)

    added = a.create_contact(fa, ka, RICH)
    assert added.status == "1" and added.server_id
    sid = added.server_id
    ka = added.sync_key

    # device B sees it with every field
    kb, new_b, _ = full_sync(b, fb, kb)
    assert sid in new_b
    got = new_b[sid]
    for tag, value in expected_fields(RICH).items():
        if tag in ("Birthday", "Anniversary"):
            assert leaf(got, tag)[:10] == value[:10], tag
        else:
            assert leaf(got, tag) == value, tag
    cats = [v for k, v in got.items() if k.endswith("Category")]
    assert cats == ["Clienti", "VIP"] or set(cats) <= {"Clienti", "VIP"}

    # device A does not get its own contact echoed back
    ka, echo, _ = full_sync(a, fa, ka)
    assert sid not in echo

    # B changes it (full replace, as pyactivesync documents), A sees the change
    changed = Contact(first_name="Giulia", last_name="Bianchi", job_title="CTO",
                      email1_address="giulia.rossi@example.org")
    res = b.apply_contact_changes(fb, kb, [ContactChange(server_id=sid, contact=changed)])
    kb = res.sync_key
    ka, new_a, _ = full_sync(a, fa, ka)
    assert leaf(new_a[sid], "LastName") == "Bianchi"
    assert leaf(new_a[sid], "JobTitle") == "CTO"
    assert leaf(new_a[sid], "CompanyName") is None      # omitted → cleared

    # A deletes it, B sees the delete
    res = a.apply_contact_changes(fa, ka, [ContactChange(server_id=sid, delete=True)],
                                  deletes_as_moves=False)
    ka = res.sync_key
    kb, _items, deleted = full_sync(b, fb, kb)
    assert sid in deleted

    # the third device, which slept through it all, never sees the contact
    kc, items_c, deleted_c = full_sync(third, fa, kc)
    assert sid not in items_c and sid not in deleted_c
    assert set(items_c) == before_c


def test_item_estimate_agrees_with_sync(server: RunningServer) -> None:
    writer = client(server, "estwriter", user="bob")
    reader = client(server, "estreader", user="bob")
    folder = folder_ids(writer)["Contacts"]
    kw, _, _ = full_sync(writer, folder)
    kr = reader.sync_folder(folder, "0").sync_key
    kr = reader.sync_folder(folder, kr).sync_key  # primed, at the current end
    for i in range(7):
        r = writer.create_contact(folder, kw, Contact(first_name=f"E{i}", last_name="Est"))
        kw = r.sync_key
    estimate = reader.get_item_estimate(folder, kr)
    assert estimate == 7
    _, items, _ = full_sync(reader, folder, kr)
    assert len(items) == estimate


def test_paging_with_more_available(server: RunningServer) -> None:
    writer = client(server, "pagewriter", user="bob")
    folder = folder_ids(writer)["Tasks"]
    # Tasks folder starts empty for bob; add through contacts folder API is contacts-only,
    # so page over Contacts instead.
    folder = folder_ids(writer)["Contacts"]
    kw, existing, _ = full_sync(writer, folder)
    for i in range(60):
        kw = writer.create_contact(folder, kw, Contact(first_name=f"P{i}", last_name="Page")
                                   ).sync_key
    reader = client(server, "pagereader", user="bob")
    key = reader.sync_folder(folder, "0").sync_key
    seen: dict[str, dict] = {}
    rounds = 0
    while True:
        res = reader.sync_folder(folder, key, window_size=25)
        rounds += 1
        assert len(res.added) <= 25
        for it in res.added:
            assert it.server_id not in seen       # never twice
            seen[it.server_id] = it.fields
        key = res.sync_key
        if not res.more_available:
            break
    assert len(seen) == len(existing) + 60
    assert rounds >= 3


def test_user_without_activesync_gets_403(server: RunningServer) -> None:
    import requests

    with client(server, "carol1", user="carol") as c, pytest.raises(requests.HTTPError) as e:
        c.provision()
    assert e.value.response.status_code == 403


def test_wrong_password_gets_401(server: RunningServer) -> None:
    import requests

    with client(server, "wrongpw", password="nope") as c, pytest.raises(requests.HTTPError) as e:
        c.provision()
    assert e.value.response.status_code == 401
    assert "basic" in e.value.response.headers.get("WWW-Authenticate", "").lower()


def test_domain_and_upn_user_forms(server: RunningServer) -> None:
    for login in ("EXAMPLE\\alice", "alice@example.org"):
        with client(server, "forms" + str(len(login)), user=login) as c:
            assert "Contacts" in folder_ids(c)


def test_no_password_in_logs(server: RunningServer) -> None:
    text = server.log_text()
    assert "Microsoft-Server-ActiveSync" in text or "FolderSync" in text
    assert PASSWORD not in text
