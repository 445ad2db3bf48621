"""Red team 2: a lost phone on a server without provisioning (``twistd easync
--provisioning off``): the administrator blocks it, then orders a wipe.

* MS-ASCMD 2.2.2: common Status 140 RemoteWipeRequested ("the device has been
  remotely wiped"… the client goes to Provision) and 129 DeviceIsBlockedForThisUser;
  below 14.0 HTTP 449 (MS-ASHTTP 2.2.2.1.1: "retry after sending a Provision").
* MS-ASPROV 3.2.5.1.2: the wipe directive is carried by the Provision response.
* README "Device access": a wipe pending is delivered whatever the access state.
"""

from __future__ import annotations

from collections.abc import Iterator

import needs
import pytest
from easync_server import RunningServer
from rawclient import Node, RawDevice, parse_xml, wbxml_to_xml, xml_to_wbxml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "red team two 7"
FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'
PROVISION = ('<Provision xmlns="Provision:"><Policies><Policy><PolicyType>'
             "MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("redteam2-wipe"),
                        args=["--provisioning", "off"]).start()
    try:
        srv.add_user("lena", PASSWORD, email="lena@example.org")
        yield srv
    finally:
        srv.stop()


def _answer(d: RawDevice, cmd: str, xml: str) -> tuple[int, Node | None]:
    r = d.post(cmd, xml_to_wbxml(xml))
    return r.status_code, parse_xml(wbxml_to_xml(r.content)) if r.content else None


@pytest.mark.parametrize("version", ["14.1", "12.1"])
def test_a_blocked_phone_gets_no_data_once_a_wipe_is_ordered(
        server: RunningServer, version: str) -> None:
    """The phone synced (no Provision: the server asks for none); the admin blocks it
    (FolderSync: Status 129, or HTTP 403 below 14.0), then orders the wipe.  Every
    command but Provision is now answered Status 140 (HTTP 449 below 14.0) with no
    data, and its Provision carries the RemoteWipe — before, ordering the wipe let
    the blocked phone sync everything again (the wipe is delivered whatever the
    access state, and without provisioning nothing sent it to Provision)."""
    dev = f"Lost{version.replace('.', '')}"
    d = RawDevice(server.url, "lena", PASSWORD, dev, version=version)
    code, body = _answer(d, "FolderSync", FOLDERSYNC)
    assert code == 200 and body is not None and body.text_of("FolderHierarchy:Status") == "1"
    contacts = next(a.text_of("FolderHierarchy:ServerId") for a in body.iter(
        "FolderHierarchy:Add") if a.text_of("FolderHierarchy:Type") == "9")
    server.admin("device", "block", "lena", dev)
    code, body = _answer(d, "FolderSync", FOLDERSYNC)
    if version == "12.1":
        assert code == 403 and body is None
    else:
        assert code == 200 and body is not None
        assert body.text_of("FolderHierarchy:Status") == "129", body
    server.admin("device", "wipe", "lena", dev, "--full")
    sync = (f'<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>0</SyncKey>'
            f"<CollectionId>{contacts}</CollectionId></Collection></Collections></Sync>")
    for cmd, xml, status in (("FolderSync", FOLDERSYNC, "FolderHierarchy:Status"),
                             ("Sync", sync, "AirSync:Status")):
        code, body = _answer(d, cmd, xml)
        if version == "12.1":
            assert code == 449 and body is None, (cmd, code)
        else:
            assert code == 200 and body is not None, (cmd, code)
            assert body.text_of(status) == "140", body
            assert not body.iter("FolderHierarchy:Add"), body
    code, body = _answer(d, "Provision", PROVISION)
    assert code == 200 and body is not None and body.find("Provision:RemoteWipe") is not None
