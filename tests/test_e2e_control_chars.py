"""Issue #10, point 8, end to end: a contact whose FirstName carries U+0001-U+001F
(sent as raw bytes in a WBXML inline string, MS-ASWBXML) reaches a second device
without the characters that XML 1.0 (section 2.2) forbids, and libwbxml parses the
second device's Sync response.
"""

from __future__ import annotations

import needs
import pytest
from easync_server import RunningServer
from rawclient import RawDevice, parse_xml, wbxml_to_xml, xml_to_wbxml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "ctrl-Pa55-word"
MARK = "QQCTRLQQ"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = RunningServer(tmp_path_factory.mktemp("ctrl")).start()
    srv.add_user("cleo", PASSWORD, email="cleo@example.org")
    yield srv
    srv.stop()


def test_controls_in_first_name_do_not_reach_another_device(server: RunningServer) -> None:
    a = RawDevice(server.url, "cleo", PASSWORD, "ctrlA")
    b = RawDevice(server.url, "cleo", PASSWORD, "ctrlB")
    a.provision()
    b.provision()
    coll = a.folders()["Contacts"]
    b.folders()
    key_b = b.initial(coll)
    key_a = a.initial(coll)
    xml = (f'<Sync xmlns="AirSync:" xmlns:K="Contacts:"><Collections><Collection>'
           f'<SyncKey>{key_a}</SyncKey><CollectionId>{coll}</CollectionId>'
           f'<GetChanges>0</GetChanges><Commands><Add><ClientId>c1</ClientId>'
           f'<ApplicationData><K:FirstName>Al{MARK}ma</K:FirstName>'
           f'<K:LastName>Rossi</K:LastName></ApplicationData></Add></Commands>'
           f'</Collection></Collections></Sync>')
    controls = bytes(range(1, 0x20))
    body = xml_to_wbxml(xml)
    assert MARK.encode() in body
    r = a.post("Sync", body.replace(MARK.encode(), controls))
    assert r.status_code == 200
    reply = parse_xml(wbxml_to_xml(r.content))
    assert reply.find("AirSync:Collections/AirSync:Collection/AirSync:Responses/AirSync:Add"
                      ) is not None
    r2 = b.post("Sync", xml_to_wbxml(
        f'<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>{key_b}</SyncKey>'
        f'<CollectionId>{coll}</CollectionId></Collection></Collections></Sync>'))
    assert r2.status_code == 200
    got = parse_xml(wbxml_to_xml(r2.content))        # libwbxml must parse it
    apps = [add.find("AirSync:ApplicationData") for add in got.iter("AirSync:Add")]
    assert len(apps) == 1 and apps[0] is not None
    name = apps[0].text_of("Contacts:FirstName") or ""
    # tab, LF, CR are kept (the XML round trip in the test turns CR into LF)
    assert name in ("Al\t\n\rma", "Al\t\n\nma"), repr(name)
    assert apps[0].text_of("Contacts:LastName") == "Rossi"
