"""The HTTP layer and bad input, against a running server (real TLS, real HTTP).

Each bad request gets the protocol's HTTP code or Status, a log line, and leaves
stored data and sync state as they were.  Never a 5xx, never a traceback.
"""

from __future__ import annotations

import base64
import struct

import needs
import pytest
from easync_server import RunningServer
from rawclient import RawDevice, xml_to_wbxml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "http-Test-pw1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = RunningServer(tmp_path_factory.mktemp("http"),
                        args=["--max-request-size", "65536"]).start()
    srv.add_user("frank", PASSWORD, email="frank@example.org")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def primed(server: RunningServer):
    """A provisioned device with one contact and a Contacts sync key."""
    d = RawDevice(server.url, "frank", PASSWORD, "badinput1")
    d.provision()
    folders = d.folders()
    contacts = folders["Contacts"]
    key = d.initial(contacts)
    r = d.sync(contacts, key, "<GetChanges>0</GetChanges><Commands><Add><ClientId>c1</ClientId>"
               "<ApplicationData><K:FirstName>Keep</K:FirstName></ApplicationData></Add>"
               "</Commands>")
    key = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    return d, contacts, key


def unchanged(d: RawDevice, contacts: str, key: str, server: RunningServer) -> None:
    """The device's key is still valid with nothing new, and the data is as it was."""
    r = d.sync(contacts, key)
    if r is not None:
        coll = r.find("AirSync:Collections/AirSync:Collection")
        assert coll.text_of("AirSync:Status") == "1"
        assert coll.find("AirSync:Commands") is None
    other = RawDevice(server.url, "frank", PASSWORD, f"check{len(server.log_text())}")
    other.provision()
    k = other.initial(contacts)
    _, items, _, _ = other.pull(contacts, k)
    names = sorted(n.text_of("Contacts:FirstName") for n in items.values())
    assert names == ["Keep"]


def assert_clean(resp, code: int) -> None:
    assert resp.status_code == code
    assert resp.status_code < 500
    assert b"Traceback" not in resp.content
    assert b"File \"" not in resp.content


def test_options_advertises_versions_and_commands(server: RunningServer) -> None:
    d = RawDevice(server.url, "frank", PASSWORD, "opts1")
    r = d.session.options(server.url, auth=d.auth, verify=False)
    assert r.status_code == 200
    assert r.headers["MS-ASProtocolVersions"] == "2.5,12.0,12.1,14.0,14.1,16.0,16.1"
    cmds = r.headers["MS-ASProtocolCommands"].split(",")
    for c in ("Sync", "FolderSync", "Provision", "GetItemEstimate", "ItemOperations",
              "MoveItems", "Settings", "FolderCreate", "FolderUpdate", "FolderDelete"):
        assert c in cmds
    unauth = d.session.options(server.url, verify=False)
    assert unauth.status_code == 401
    assert unauth.headers["WWW-Authenticate"].lower().startswith("basic")


def test_base64_query_form(server: RunningServer, primed) -> None:
    d, _contacts, _key = primed
    device_id = b"badinput1"
    pk = struct.pack("<I", int(d.policy_key))
    blob = (bytes([141, 9]) + struct.pack("<H", 0x0409) + bytes([len(device_id)]) + device_id
            + bytes([4]) + pk + bytes([6]) + b"iPhone")
    query = base64.b64encode(blob).decode()
    body = xml_to_wbxml('<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>')
    r = d.post("FolderSync", body, query=query, headers={"MS-ASProtocolVersion": ""})
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/vnd.ms-sync.wbxml"
    from rawclient import parse_xml, wbxml_to_xml

    tree = parse_xml(wbxml_to_xml(r.content))
    names = [a.text_of("FolderHierarchy:DisplayName") for a in tree.iter("FolderHierarchy:Add")]
    assert "Contacts" in names


@pytest.mark.parametrize("body,why", [
    (b"\x00\x01\x02garbage" * 3, "bad WBXML"),
    (b"\x03\x01\x6a\x00\x45\x5c\x4f", "bad WBXML"),                   # truncated
    (b"\x03\x01\x6a\x00" + b"\x45\x5c\x4f\x56" * 200, "bad WBXML"),   # deep and truncated
    (b"\x03\x01\x6a\x00" + b"\x00\x07\x56" + b"\x01", "does not match"),  # FolderSync root
])
def test_bad_wbxml_is_400(server: RunningServer, primed, body: bytes, why: str) -> None:
    d, contacts, key = primed
    r = d.post("Sync", body)
    assert_clean(r, 400)
    assert why in server.log_text()
    unchanged(d, contacts, key, server)


def test_over_deep_wbxml_is_400(server: RunningServer, primed) -> None:
    d, contacts, key = primed
    # 200 nested Collections elements, properly closed: valid WBXML, hostile depth
    body = b"\x03\x01\x6a\x00\x45" + b"\x5c" * 200 + b"\x01" * 201
    r = d.post("Sync", body)
    assert_clean(r, 400)
    unchanged(d, contacts, key, server)


@pytest.mark.parametrize("query,why", [
    ("Cmd=Frobnicate&User=frank&DeviceId=badinput1&DeviceType=iPhone", "unknown"),
    ("Cmd=Sync&User=frank&DeviceType=iPhone", "missing DeviceId"),
    ("Cmd=Sync&User=frank&DeviceId=badinput1", "missing DeviceType"),
    ("%%%", "unknown or missing command"),
])
def test_bad_request_line_is_400(server: RunningServer, primed, query: str, why: str) -> None:
    d, contacts, key = primed
    r = d.post("Sync", xml_to_wbxml('<Sync xmlns="AirSync:"><Collections/></Sync>'), query=query)
    assert_clean(r, 400)
    assert why in server.log_text()
    unchanged(d, contacts, key, server)


def test_unsupported_version_is_400(server: RunningServer, primed) -> None:
    d, contacts, key = primed
    r = d.post("FolderSync", xml_to_wbxml(
        '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'),
        headers={"MS-ASProtocolVersion": "9.9"})
    assert_clean(r, 400)
    unchanged(d, contacts, key, server)


def test_oversized_body_is_413(server: RunningServer, primed) -> None:
    d, contacts, key = primed
    r = d.post("Sync", b"\x03\x01\x6a\x00" + b"\x45" * 200_000)
    assert_clean(r, 413)
    assert "size limit" in server.log_text()
    unchanged(d, contacts, key, server)


def test_invalid_sync_key_is_status_3(server: RunningServer, primed) -> None:
    d, contacts, key = primed
    r = d.sync(contacts, "{deadbeef}42",
               "<GetChanges>0</GetChanges><Commands><Add><ClientId>x9</ClientId>"
               "<ApplicationData><K:FirstName>Never</K:FirstName></ApplicationData></Add>"
               "</Commands>")
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll.text_of("AirSync:Status") == "3"
    unchanged(d, contacts, key, server)


def test_unknown_collection_is_status_12(server: RunningServer, primed) -> None:
    d, contacts, key = primed
    r = d.sync("99999", "{deadbeef}1")
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll.text_of("AirSync:Status") == "12"
    unchanged(d, contacts, key, server)


def test_missing_policy_key_14_is_status_142_and_12_is_449(server: RunningServer) -> None:
    d = RawDevice(server.url, "frank", PASSWORD, "noprov1", version="14.1")
    r = d.call("FolderSync", '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
               '</FolderSync>')
    assert r.text_of("FolderHierarchy:Status") == "142"
    old = RawDevice(server.url, "frank", PASSWORD, "noprov2", version="12.1")
    resp = old.post("FolderSync", xml_to_wbxml(
        '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'))
    assert_clean(resp, 449)


def test_mail_commands_answer_not_supported_without_http_error(server: RunningServer,
                                                               primed) -> None:
    d, _contacts, _key = primed
    r = d.post("SendMail", xml_to_wbxml(
        '<SendMail xmlns="ComposeMail:"><ClientId>m1</ClientId><SaveInSentItems/>'
        '<MIME>From: a@b\r\n\r\nhi</MIME></SendMail>'))
    assert_clean(r, 200)
    assert r.content  # a Status, not an empty "success"


AUTODISCOVER_REQ = (
    '<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
    'exchange/autodiscover/mobilesync/requestschema/2006"><Request>'
    "<EMailAddress>frank@example.org</EMailAddress><AcceptableResponseSchema>{schema}"
    "</AcceptableResponseSchema></Request></Autodiscover>")


def test_autodiscover_gives_the_activesync_url(server: RunningServer) -> None:
    import xml.etree.ElementTree as ET

    import requests

    url = f"https://{server.host}/autodiscover/autodiscover.xml"
    body = AUTODISCOVER_REQ.format(schema="http://schemas.microsoft.com/exchange/autodiscover/"
                                          "mobilesync/responseschema/2006")
    r = requests.post(url, data=body, auth=("frank@example.org", PASSWORD), verify=False,
                      headers={"Content-Type": "text/xml"}, timeout=10)
    assert r.status_code == 200
    ns = {"a": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
          "m": "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/"
               "2006"}
    root = ET.fromstring(r.content)
    server_el = root.find("m:Response/m:Action/m:Settings/m:Server", ns)
    assert server_el.findtext("m:Type", namespaces=ns) == "MobileSync"
    assert server_el.findtext("m:Url", namespaces=ns) == server.url
    assert root.findtext("m:Response/m:User/m:EMailAddress", namespaces=ns) == \
        "frank@example.org"
    # the Outlook schema is not served: error 601, not a crash
    r = requests.post(url.upper().replace("HTTPS://", "https://").replace(
        server.host.upper(), server.host), data=AUTODISCOVER_REQ.format(
        schema="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"),
        auth=("frank", PASSWORD), verify=False, timeout=10)
    assert r.status_code == 200
    assert b"<ErrorCode>601</ErrorCode>" in r.content
    # no credentials: 401, as for ActiveSync itself
    r = requests.post(url, data=body, verify=False, timeout=10)
    assert r.status_code == 401
