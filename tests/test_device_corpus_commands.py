"""Replay the device corpus's Provision and Find captures (tests/corpus/devices/,
``Command: Provision`` / ``Command: Find``) through a real ``twistd easync`` with a
policy that asks for a passcode.

Each capture is sent as the device sent it (its DeviceType, User-Agent, protocol
version) by a device that has not provisioned yet; the answer must follow MS-ASPROV:
3.2.5.1.1 (the initial request gets Status 1, the policy document and a temporary
PolicyKey; a DeviceInformation/Set gets DeviceInformation/Status 1, MS-ASCMD 2.2.3.49),
3.1.5.1.2 / 3.2.5.1.2 (the acknowledgement with the temporary key gets the final key),
and MS-ASCMD 2.2.2 (142 DeviceNotProvisioned until then).

Find captures are sent by a provisioned device at 16.1 (MS-ASCMD 2.2.1.2): encoded by
tests/findwire.py (libwbxml does not know code page 25).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import needs
import pytest
from devicecorpus import Capture, encode, fill, load, names
from easync_server import RunningServer
from findwire import decode as find_decode
from findwire import encode as find_encode
from rawclient import Node, RawDevice, parse_xml, wbxml_to_xml, xml_to_wbxml

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "corpus-Pa55word"
CONFIG = """\
provisioning = "on"

[policy]
DevicePasswordEnabled = true
MinDevicePasswordLength = 6
RequireDeviceEncryption = true
"""
_devices = itertools.count(1)
PROVISION = names("Provision")
FIND = names("Find")
CASES = [(name, version) for name in PROVISION for version in load(name).versions]
FIND_CASES = [(name, version) for name in FIND for version in load(name).versions]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("corpus-provision")
    (workdir / "easync.toml").write_text(CONFIG)
    srv = RunningServer(workdir, ["--config", str(workdir / "easync.toml")]).start()
    srv.add_user("alice", PASSWORD, email="alice@example.org")
    srv.add_user("quinn", PASSWORD, email="quinn@example.org")
    srv.add_user("wendy", PASSWORD, email="wendy@example.org")
    yield srv
    srv.stop()


def post(dev: RawDevice, xml: str) -> Node:
    r = dev.post("Provision", encode(fill(xml)))
    assert r.status_code == 200, r.status_code
    assert r.content, "empty Provision answer"
    return parse_xml(wbxml_to_xml(r.content))


def folder_sync(dev: RawDevice, key: str = "0") -> Node:
    r = dev.post("FolderSync", xml_to_wbxml(
        f'<FolderSync xmlns="FolderHierarchy:"><SyncKey>{key}</SyncKey></FolderSync>'))
    assert r.status_code == 200, r.status_code
    return parse_xml(wbxml_to_xml(r.content))


def folder_sync_status(dev: RawDevice) -> str | None:
    """FolderSync's Status, or "http NNN" when the answer is not HTTP 200."""
    r = dev.post("FolderSync", xml_to_wbxml(
        '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'))
    if r.status_code != 200:
        return f"http {r.status_code}"
    return parse_xml(wbxml_to_xml(r.content)).text_of("FolderHierarchy:Status")


def refused(version: str, status: str) -> str:
    """How a refusal reads at ``version``: the common Status from 14.0 on (MS-ASCMD
    2.2.2); below, no common status codes: HTTP 449 for "provision first" and HTTP 403
    for a device that may not sync (MS-ASHTTP 2.2.2.1.1)."""
    if version >= "14.0":
        return status
    return {"142": "http 449", "129": "http 403"}[status]


def test_every_provision_and_find_capture_is_described_and_listed() -> None:
    readme = (Path(__file__).parent / "corpus" / "devices" / "README.md").read_text("utf-8")
    assert PROVISION and FIND, "no Provision or no Find capture"
    for name in PROVISION + FIND:
        cap = load(name)
        missing = [k for k in ("Source", "Device", "DeviceType", "User-Agent", "Protocol",
                               "Command", "Shows", "Changed") if not cap.meta.get(k)]
        assert not missing, (name, missing)
        assert name in readme, name
        assert cap.body.startswith("<Provision " if name in PROVISION else "<Find "), name


@pytest.mark.parametrize(("name", "version"), CASES,
                         ids=[f"{n.removesuffix('.xml')}@{v}" for n, v in CASES])
def test_provision_capture(server: RunningServer, name: str, version: str) -> None:
    cap: Capture = load(name)
    dev = RawDevice(server.url, "alice", PASSWORD, f"corpusprov{next(_devices)}",
                    version=version, device_type=cap.device_type, user_agent=cap.user_agent)
    # MS-ASCMD 2.2.2: 142 DeviceNotProvisioned while a policy is required (14.0 and later)
    assert folder_sync_status(dev) == refused(version, "142")
    provision_as_captured(dev, cap, held=refused(version, "142"))
    # provisioned: the device syncs, and keeps syncing (no provisioning loop,
    # grommunio-sync#26: a policy key the server itself judges stale at once)
    for _ in range(3):
        assert folder_sync_status(dev) == "1"


@pytest.mark.parametrize(("name", "version"), CASES,
                         ids=[f"{n.removesuffix('.xml')}@{v}" for n, v in CASES])
def test_provision_capture_quarantined(server: RunningServer, name: str, version: str
                                       ) -> None:
    """A rule quarantines the capture's DeviceType for quinn: the device's own Provision
    goes through both phases (a quarantined device may provision, so that its
    information reaches the administrator), then FolderSync is Status 129
    DeviceIsBlockedForThisUser (MS-ASCMD 2.2.2; 14.0 and later)."""
    cap = load(name)
    server.admin("rule", "add", "--user", "quinn", "--device-type", cap.device_type,
                 "quarantine", check=False)
    did = f"corpusq{next(_devices)}"
    dev = RawDevice(server.url, "quinn", PASSWORD, did, version=version,
                    device_type=cap.device_type, user_agent=cap.user_agent)
    provision_as_captured(dev, cap, held=refused(version, "129"))
    assert folder_sync_status(dev) == refused(version, "129")
    listed = server.admin("device", "list", "quinn", "--quarantined").stdout
    assert did in listed, listed


@pytest.mark.parametrize(("name", "version"), CASES,
                         ids=[f"{n.removesuffix('.xml')}@{v}" for n, v in CASES])
def test_provision_capture_wipe_pending(server: RunningServer, name: str, version: str
                                        ) -> None:
    """The device, provisioned, is ordered wiped (``easync-admin device wipe``: the
    account-only wipe for a device that speaks 16.1, the whole-device one otherwise).
    Its next command is refused (MS-ASCMD 2.2.2 Status 140 RemoteWipeRequested; HTTP
    449 below 14.0, MS-ASHTTP 2.2.2.1.1); the device then sends its own Provision, as
    captured, and the answer must carry the directive: AccountOnlyRemoteWipe at 16.1
    (MS-ASPROV 2.2.2.1, 3.2.5.1.2.3), RemoteWipe otherwise (2.2.2.45).  The
    acknowledgement (constructed, MS-ASPROV 3.1.5.1.2.2 / 3.1.5.1.2.3) gets Status 1 and
    the device record's wipe becomes "done"."""
    cap = load(name)
    did = f"corpusw{next(_devices)}"
    dev = RawDevice(server.url, "wendy", PASSWORD, did, version=version,
                    device_type=cap.device_type, user_agent=cap.user_agent)
    provision_as_captured(dev, cap, held=refused(version, "142"))
    assert folder_sync_status(dev) == "1"
    server.admin("device", "wipe", "wendy", did)
    assert folder_sync_status(dev) == ("140" if version >= "14.0" else "http 449")

    raw = dev.post("Provision", encode(fill(cap.body)))
    assert raw.status_code == 200, raw.status_code
    r = parse_xml(wbxml_to_xml(raw.content))
    assert r.text_of("Provision:Status") == "1", r
    account_only = version == "16.1"
    if account_only:
        # libwbxml 0.11 has no name for AccountOnlyRemoteWipe (16.1, MS-ASWBXML page 14
        # token 0x3B): it shows as "unknown"; the bytes say which: an empty 0x3B tag
        assert r.find("Provision:RemoteWipe") is None, r
        assert [c.tag for c in r.children][-1] == "Provision:unknown", r
        assert raw.content.endswith(b"\x3b\x01"), raw.content.hex()
    else:
        assert r.find("Provision:RemoteWipe") is not None, r

    # the acknowledgement, Status 1 = the wipe went through (MS-ASPROV 2.2.2.54.3);
    # AccountOnlyRemoteWipe (page 14, token 0x3B) is hand-encoded: libwbxml 0.11 lacks it
    if account_only:
        ack = (bytes.fromhex("03016a00000e45") + bytes([0x7B, 0x4B, 0x03]) + b"1\x00"
               + b"\x01\x01\x01")
    else:
        ack = encode('<Provision xmlns="Provision:"><RemoteWipe><Status>1</Status>'
                     '</RemoteWipe></Provision>')
    a = dev.post("Provision", ack)
    assert a.status_code == 200, a.status_code
    answer = parse_xml(wbxml_to_xml(a.content))
    assert answer.text_of("Provision:Status") == "1", answer
    row = [line for line in server.admin("device", "list", "wendy").stdout.splitlines()
           if did in line]
    assert row and "done" in row[0].split(), row


def provision_as_captured(dev: RawDevice, cap: Capture, held: str = "142") -> str:
    """Send the capture, then the acknowledgement; the final PolicyKey.  ``held``: the
    FolderSync Status while only the temporary key is held (142, or 129 quarantined)."""

    r1 = post(dev, cap.body)
    # MS-ASPROV 3.2.5.1.1: Status 1, the policy type echoed, Policy Status 1, a
    # temporary PolicyKey and the policy document (MS-ASPROV 2.2.2.27 EASProvisionDoc)
    assert r1.text_of("Provision:Status") == "1", r1
    pol = r1.find("Provision:Policies/Provision:Policy")
    assert pol is not None, r1
    assert pol.text_of("Provision:PolicyType") == "MS-EAS-Provisioning-WBXML"
    assert pol.text_of("Provision:Status") == "1", r1
    temp = pol.text_of("Provision:PolicyKey")
    assert temp and temp.isdigit() and temp != "0", r1
    doc = pol.find("Provision:Data/Provision:EASProvisionDoc")
    assert doc is not None, r1
    assert doc.text_of("Provision:DevicePasswordEnabled") == "1"
    assert doc.text_of("Provision:MinDevicePasswordLength") == "6"
    # RequireDeviceEncryption exists from 12.1 on (MS-ASPROV 2.2.2.51, its protocol
    # version note): a 12.0 device gets the document without it
    if dev.version == "12.0":
        assert doc.find("Provision:RequireDeviceEncryption") is None, r1
    else:
        assert doc.text_of("Provision:RequireDeviceEncryption") == "1"
    # MS-ASPROV 3.2.5.1.1 / MS-ASCMD 2.2.3.49: DeviceInformation is answered with its own
    # Status 1 when the device sent it, and not at all when it did not
    if "DeviceInformation" in cap.body:
        assert r1.text_of("Settings:DeviceInformation/Settings:Status") == "1", r1
    else:
        assert r1.find("Settings:DeviceInformation") is None, r1

    # MS-ASPROV 3.1.5.1.2: the temporary key only serves the acknowledgement
    dev.policy_key = temp
    assert folder_sync_status(dev) == held

    # the acknowledgement (constructed, MS-ASPROV 3.1.5.1.2): Status 1 = applied
    r2 = post(dev, '<Provision xmlns="Provision:"><Policies><Policy>'
              '<PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>'
              f'<PolicyKey>{temp}</PolicyKey><Status>1</Status></Policy></Policies>'
              '</Provision>')
    # MS-ASPROV 3.2.5.1.2: Status 1, Policy Status 1 and the final key, with no Data
    assert r2.text_of("Provision:Status") == "1", r2
    pol2 = r2.find("Provision:Policies/Provision:Policy")
    assert pol2 is not None and pol2.text_of("Provision:Status") == "1", r2
    final = pol2.text_of("Provision:PolicyKey")
    assert final and final.isdigit() and final not in ("0", temp), r2
    assert pol2.find("Provision:Data") is None, r2
    dev.policy_key = final
    return final


@pytest.mark.parametrize(("name", "version"), FIND_CASES,
                         ids=[f"{n.removesuffix('.xml')}@{v}" for n, v in FIND_CASES])
def test_find_capture(server: RunningServer, name: str, version: str) -> None:
    cap = load(name)
    dev = RawDevice(server.url, "alice", PASSWORD, f"corpusfind{next(_devices)}",
                    version=version, device_type=cap.device_type, user_agent=cap.user_agent)
    dev.provision()
    fs = folder_sync(dev)
    assert fs.text_of("FolderHierarchy:Status") == "1", fs
    key = fs.text_of("FolderHierarchy:SyncKey")
    assert key

    r = dev.post("Find", find_encode(parse_xml(fill(cap.body))))
    assert r.status_code == 200, r.status_code
    answer = find_decode(r.content)
    # MS-ASCMD 2.2.3.177.2: Status 1; the Response's Store is "Mailbox" (2.2.3.178.1)
    assert answer.text_of("Find:Status") == "1", answer
    resp = answer.find("Find:Response")
    assert resp is not None, answer
    assert resp.text_of("ItemOperations:Store") == "Mailbox"
    assert resp.text_of("Find:Status") == "1", answer
    # easync keeps no mail: a Class "Email" search finds nothing (2.2.3.184.1 Total)
    assert resp.findall("Find:Result") == [], answer
    assert resp.text_of("Find:Total") == "0", answer
    # the search changes no sync state: the hierarchy key still holds, with no change
    again = folder_sync(dev, key)
    assert again.text_of("FolderHierarchy:Status") == "1", again
    assert again.text_of("FolderHierarchy:SyncKey") == key, again
    assert again.text_of("FolderHierarchy:Changes/FolderHierarchy:Count") in (None, "0"), again
