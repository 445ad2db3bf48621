"""Acceptance: the device policy through ``twistd easync`` over TLS (issue #14 point 4),
with raw WBXML (libwbxml encodes and decodes every request and answer) at 2.5, 12.1,
14.1 and 16.1, and with pyactivesync.

MS-ASPROV 3.2.5.1.1 (the initial answer carries the policy), 2.2.2.24.2 / 2.2.2.43
(2.5: MS-WAP-Provisioning-XML), 2.2.2.54.1 (the client's acknowledgement Status),
3.1.5.2 (Provision Status 139 when the server refuses a device that did not fully
apply it); MS-ASCMD 2.2.2 (143 PolicyRefresh, 142 DeviceNotProvisioned) and MS-ASHTTP
2.2.2.1.1 (449 below 14.0).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import needs
import pytest
from easync_server import RunningServer
from rawclient import Node, RawDevice

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "correct horse battery staple"
CONFIG = """\
provisioning = "on"

[policy]
DevicePasswordEnabled = true
MinDevicePasswordLength = 6
MaxInactivityTimeDeviceLock = 300
MaxDevicePasswordFailedAttempts = 8
AllowSimpleDevicePassword = false
RequireDeviceEncryption = true
"""


def start(workdir: Path, *args: str) -> RunningServer:
    (workdir / "easync.toml").write_text(CONFIG)
    srv = RunningServer(workdir, ["--config", str(workdir / "easync.toml"), *args]).start()
    srv.add_user("alice", PASSWORD, email="alice@example.org")
    srv.add_user("bob", PASSWORD, email="bob@example.org")
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = start(tmp_path_factory.mktemp("policy"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = start(tmp_path_factory.mktemp("strict"), "--allow-non-provisionable", "off")
    yield srv
    srv.stop()


def device(srv: RunningServer, device_id: str, version: str = "14.1",
           user: str = "alice") -> RawDevice:
    return RawDevice(srv.url, user, PASSWORD, device_id, version=version)


def download(dev: RawDevice, policy_type: str = "MS-EAS-Provisioning-WBXML") -> Node:
    r = dev.call("Provision", '<Provision xmlns="Provision:"><Policies><Policy>'
                 f'<PolicyType>{policy_type}</PolicyType></Policy></Policies></Provision>')
    assert r is not None and r.text_of("Provision:Status") == "1", r
    return r


def acknowledge(dev: RawDevice, temp: str, status: str,
                policy_type: str = "MS-EAS-Provisioning-WBXML") -> Node:
    dev.policy_key = temp
    r = dev.call("Provision", '<Provision xmlns="Provision:"><Policies><Policy>'
                 f'<PolicyType>{policy_type}</PolicyType><PolicyKey>{temp}</PolicyKey>'
                 f'<Status>{status}</Status></Policy></Policies></Provision>')
    assert r is not None
    return r


def doc(r: Node) -> dict[str, str | None]:
    d = r.find("Provision:Policies/Provision:Policy/Provision:Data/Provision:EASProvisionDoc")
    assert d is not None
    return {c.tag.partition(":")[2]: c.text for c in d.children}


def handshake(dev: RawDevice, status: str = "1") -> dict[str, str | None]:
    """Download and acknowledge; the document received."""
    r = download(dev)
    temp = r.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
    assert temp
    r2 = acknowledge(dev, temp, status)
    dev.policy_key = r2.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
    return doc(r)


def folder_sync(dev: RawDevice) -> Any:
    return dev.post("FolderSync", _fs())


def _fs() -> bytes:
    from rawclient import xml_to_wbxml

    return xml_to_wbxml('<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey>'
                        '</FolderSync>')


def status_of(resp: Any) -> str | None:
    from rawclient import parse_xml, wbxml_to_xml

    assert resp.status_code == 200, resp.status_code
    return parse_xml(wbxml_to_xml(resp.content)).text_of("FolderHierarchy:Status")


def test_the_server_policy_reaches_the_device_and_it_syncs(server: RunningServer) -> None:
    dev = device(server, "e2ePolicy1", version="16.1")
    got = handshake(dev)
    assert got["DevicePasswordEnabled"] == "1"
    assert got["MinDevicePasswordLength"] == "6"
    assert got["MaxInactivityTimeDeviceLock"] == "300"
    assert got["MaxDevicePasswordFailedAttempts"] == "8"
    assert got["AllowSimpleDevicePassword"] == "0"
    assert got["RequireDeviceEncryption"] == "1"
    assert got["AllowCamera"] == "1"                     # not configured: permissive
    assert status_of(folder_sync(dev)) == "1"
    listing = server.admin("device", "list", "alice").stdout
    line = next(ln for ln in listing.splitlines() if "e2ePolicy1" in ln)
    assert " applied " in f" {line} "


def test_a_user_policy_change_sends_the_device_back_to_provision(server: RunningServer
                                                                  ) -> None:
    """After ``easync-admin policy set`` the device's next command gets 143 (14.1) and
    it provisions again, receiving the user's settings over the server's."""
    dev = device(server, "e2ePolicy2", user="bob")
    assert handshake(dev)["MinDevicePasswordLength"] == "6"
    assert status_of(folder_sync(dev)) == "1"
    server.admin("policy", "set", "bob", "MinDevicePasswordLength=10", "AllowCamera=off")
    assert status_of(folder_sync(dev)) == "143"
    got = handshake(dev)
    assert got["MinDevicePasswordLength"] == "10"
    assert got["AllowCamera"] == "0"
    assert got["DevicePasswordEnabled"] == "1"          # the server's stays
    assert status_of(folder_sync(dev)) == "1"
    # back to the server's policy: again once
    server.admin("policy", "reset", "bob")
    assert status_of(folder_sync(dev)) == "143"
    assert handshake(dev)["MinDevicePasswordLength"] == "6"
    assert status_of(folder_sync(dev)) == "1"


def test_below_14_a_changed_policy_is_http_449(server: RunningServer) -> None:
    dev = device(server, "e2ePolicy3", version="12.1", user="bob")
    got = handshake(dev)
    assert "AllowCamera" in got                         # a 12.1 element at 12.1
    assert folder_sync(dev).status_code == 200
    server.admin("policy", "set", "bob", "DevicePasswordHistory=3")
    try:
        assert folder_sync(dev).status_code == 449
        assert handshake(dev)["DevicePasswordHistory"] == "3"
        assert folder_sync(dev).status_code == 200
    finally:
        server.admin("policy", "reset", "bob")


def test_12_0_gets_no_12_1_elements(server: RunningServer) -> None:
    got = handshake(device(server, "e2ePolicy4", version="12.0"))
    assert got["MinDevicePasswordLength"] == "6"
    assert "AllowCamera" not in got and "RequireDeviceEncryption" not in got


def test_2_5_device_gets_the_wap_document(server: RunningServer) -> None:
    dev = device(server, "e2ePolicy5", version="2.5")
    assert folder_sync(dev).status_code == 449          # not provisioned yet
    wap = "MS-WAP-Provisioning-XML"
    r = download(dev, wap)
    pol = r.find("Provision:Policies/Provision:Policy")
    assert pol is not None and pol.text_of("Provision:Status") == "1"
    parms = {p.get("name"): p.get("value")
             for p in ET.fromstring(pol.text_of("Provision:Data") or "").iter("parm")}
    assert parms["4131"] == "0"                         # a passcode is required
    assert parms["MinimumPasswordLength"] == "6"
    assert parms["AEFrequencyValue"] == "5"             # 300 s = 5 minutes
    assert parms["DeviceWipeThreshold"] == "8"
    r2 = acknowledge(dev, pol.text_of("Provision:PolicyKey") or "", "1", wap)
    dev.policy_key = r2.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
    assert folder_sync(dev).status_code == 200


def test_partial_compliance_is_let_in_by_default(server: RunningServer) -> None:
    dev = device(server, "e2ePolicy6")
    handshake(dev, status="2")
    assert dev.policy_key
    assert status_of(folder_sync(dev)) == "1"
    line = next(ln for ln in server.admin("device", "list", "alice").stdout.splitlines()
                if "e2ePolicy6" in ln)
    assert " partial " in f" {line} "
    assert "e2ePolicy6 acknowledged with Status 2" in server.log_text()


def test_partial_compliance_is_refused_without_allow_non_provisionable(
        strict_server: RunningServer) -> None:
    dev = device(strict_server, "e2ePolicy7")
    r = download(dev)
    temp = r.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey") or ""
    refused = acknowledge(dev, temp, "2")
    assert refused.text_of("Provision:Status") == "139"
    assert refused.find("Provision:Policies") is None   # no key
    dev.policy_key = None
    assert status_of(folder_sync(dev)) == "142"
    line = next(ln for ln in strict_server.admin("device", "list", "alice").stdout
                .splitlines() if "e2ePolicy7" in ln)
    assert "refused(partial)" in line
    # the same device applying it fully is let in
    handshake(dev, status="1")
    assert status_of(folder_sync(dev)) == "1"
    # a 12.1 device: HTTP 403
    old = device(strict_server, "e2ePolicy8", version="12.1")
    temp = download(old).text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
    old.policy_key = temp
    from rawclient import xml_to_wbxml

    resp = old.post("Provision", xml_to_wbxml(
        '<Provision xmlns="Provision:"><Policies><Policy>'
        '<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>'
        f'<PolicyKey>{temp}</PolicyKey><Status>3</Status></Policy></Policies></Provision>'))
    assert resp.status_code == 403
    assert "policy refused: user alice device e2ePolicy8" in strict_server.log_text()


def test_pyactivesync_provisions_and_reprovisions_after_a_change(server: RunningServer
                                                                 ) -> None:
    """pyactivesync acknowledges with Status 1 whatever the policy; after a change its
    next command fails with Status 143 (it does not re-provision by itself) and a new
    ``provision()`` lets it go on."""
    pyactivesync = needs.importable("pyactivesync")
    from pyactivesync.exceptions import StatusError

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(server.workdir / "easync.pem"))
        server.add_user("carol", PASSWORD)
        c = pyactivesync.Client(server.host, "carol", PASSWORD, device_id="pasPolicy1",
                                timeout=30)
        assert any(f.name == "Contacts" for f in c.list_folders())
        server.admin("policy", "set", "carol", "MaxDevicePasswordFailedAttempts=4")
        with pytest.raises(StatusError) as e:
            c.list_folders()
        assert e.value.code == "143"
        c.provision()
        assert any(f.name == "Contacts" for f in c.list_folders())


def test_policy_round_trip_on_postgresql(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same on PostgreSQL: migration 012's columns, the user's settings in its row."""
    import pgtest

    needs.require(pgtest.unreachable())
    with pgtest.fresh_database("policy") as url:
        work = tmp_path_factory.mktemp("policy-pg")
        (work / "easync.toml").write_text(CONFIG)
        srv = pgtest.pg_server(work, url, ["--config", str(work / "easync.toml")]).start()
        try:
            srv.add_user("dora", PASSWORD)
            dev = device(srv, "pgPolicy1", user="dora")
            assert handshake(dev, status="2")["MinDevicePasswordLength"] == "6"
            assert status_of(folder_sync(dev)) == "1"
            srv.admin("policy", "set", "dora", "MinDevicePasswordLength=12")
            assert status_of(folder_sync(dev)) == "143"
            assert handshake(dev)["MinDevicePasswordLength"] == "12"
            assert status_of(folder_sync(dev)) == "1"
            line = next(ln for ln in srv.admin("device", "list", "dora").stdout.splitlines()
                        if "pgPolicy1" in ln)
            assert " applied " in f" {line} "
        finally:
            srv.stop()


def test_the_account_page_shows_the_policy(server: RunningServer) -> None:
    """The user sees, read-only, what their phone must meet: the server's policy with
    their own settings over it."""
    import re

    import requests

    server.admin("policy", "set", "alice", "MaxInactivityTimeDeviceLock=120")
    try:
        with requests.Session() as s:
            base = f"https://{server.host}/account"
            # (the self-signed certificate: not verified, as RawDevice does)
            form = s.get(base + "/login", timeout=10, verify=False)
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf, form.text
            r = s.post(base + "/login", data={"csrf": csrf.group(1), "username": "alice",
                                              "password": PASSWORD}, timeout=10,
                       verify=False)
            assert r.status_code == 200 and 'id="devices"' in r.text, r.text[:500]
            card = r.text[r.text.index('id="policy"'):]
            card = card[:card.index("</section>")]
            assert "passcode required (any), at least 6 characters" in card
            assert "no simple passcodes (1111, 1234)" in card
            assert "locks after 120 seconds without use" in card     # alice's own
            assert "device encryption required" in card
    finally:
        server.admin("policy", "reset", "alice")
