"""Provision handshake, device information, remote wipe and the policy-key helpers."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from sqlserver import memory_server

from easync.commands import provision
from easync.commands import provisioning as policy
from easync.handler import EasRequest
from easync.wbxml import encode
from easync.wbxml.element import E, Element

PT = "MS-EAS-Provisioning-WBXML"


@pytest_twisted.async_yield_fixture
async def env(tmp_path: Any) -> Any:
    async with memory_server(tmp_path) as (server, user, _store):
        yield server, user


async def call(env: Any, body: Element | None, version: str = "16.1",
               device_id: str = "dev1") -> Element:
    server, user = env
    device = await server.state.save_device(user, device_id, device_type="iPhone")
    req = EasRequest(cmd="Provision", user=user, device_id=device_id, device_type="iPhone",
                     version=version, body=body, device=device)
    resp = await provision.handle(server, req)
    assert resp.http_status == 200
    assert resp.body is not None and resp.body.tag == "Provision:Provision"
    encode(resp.body)  # every tag exists in the code pages
    return resp.body


def download(devinfo: bool = True, policy_type: str = PT) -> Element:
    di = None
    if devinfo:
        di = E("Settings:DeviceInformation", E(
            "Settings:Set",
            E("Settings:Model", "iPhone15,2"),
            E("Settings:IMEI", "356938035643809"),
            E("Settings:FriendlyName", "Alice's phone"),
            E("Settings:OS", "iOS 17.4"),
            E("Settings:OSLanguage", "en"),
            E("Settings:PhoneNumber", "+15551234"),
            E("Settings:UserAgent", "Apple-iPhone15C2/2104.1"),
            E("Settings:EnableOutboundSMS", "0"),
            E("Settings:MobileOperator", "Carrier"),
        ))
    return E("Provision:Provision", di, E("Provision:Policies", E(
        "Provision:Policy", E("Provision:PolicyType", policy_type))))


def ack(key: str, status: str = "1") -> Element:
    return E("Provision:Provision", E("Provision:Policies", E(
        "Provision:Policy", E("Provision:PolicyType", PT), E("Provision:PolicyKey", key),
        E("Provision:Status", status))))


def policy_of(body: Element) -> Element:
    pol = body.find("Provision:Policies")
    assert pol is not None
    p = pol.find("Provision:Policy")
    assert p is not None
    return p


def is_key(value: str | None) -> bool:
    return value is not None and value.isdigit() and 0 < int(value) < 2 ** 32


@pytest_twisted.ensureDeferred
async def test_handshake_with_device_information(env: Any) -> None:
    server, user = env
    body = await call(env, download())
    tags = [c.tag for c in body.children]
    # Spec order (MS-ASPROV 3.2.5.1.1): DeviceInformation, Status, Policies.
    assert tags == ["Settings:DeviceInformation", "Provision:Status", "Provision:Policies"]
    assert body.find("Settings:DeviceInformation").findtext("Settings:Status") == "1"
    assert body.findtext("Provision:Status") == "1"
    pol = policy_of(body)
    assert [c.tag for c in pol.children] == [
        "Provision:PolicyType", "Provision:Status", "Provision:PolicyKey", "Provision:Data"]
    assert pol.findtext("Provision:PolicyType") == PT
    assert pol.findtext("Provision:Status") == "1"
    temp = pol.findtext("Provision:PolicyKey")
    assert is_key(temp)
    doc = pol.find("Provision:Data").find("Provision:EASProvisionDoc")
    assert doc is not None
    assert doc.findtext("Provision:DevicePasswordEnabled") == "0"
    assert doc.findtext("Provision:AllowBluetooth") == "2"
    assert doc.findtext("Provision:RequireDeviceEncryption") == "0"
    assert doc.children[0].tag == "Provision:DevicePasswordEnabled"

    device = await server.state.get_device(user, "dev1")
    assert device["info"]["Model"] == "iPhone15,2"
    assert device["info"]["IMEI"] == "356938035643809"
    assert device["info"]["FriendlyName"] == "Alice's phone"
    assert device["info"]["MobileOperator"] == "Carrier"
    assert device["info"]["EnableOutboundSMS"] == "0"
    # The temporary key is not a usable key.
    assert policy.policy_status(device, temp) in ("142", "144")

    body2 = await call(env, ack(temp))
    assert body2.findtext("Provision:Status") == "1"
    pol2 = policy_of(body2)
    assert pol2.findtext("Provision:Status") == "1"
    assert pol2.find("Provision:Data") is None
    final = pol2.findtext("Provision:PolicyKey")
    assert is_key(final) and final != temp
    device = await server.state.get_device(user, "dev1")
    assert str(device["policy_key"]) == final
    assert policy.policy_status(device, final) is None
    assert policy.policy_status(device, temp) == "144"
    assert policy.policy_status(device, None) == "142"
    assert policy.policy_status(device, "0") == "142"


@pytest_twisted.ensureDeferred
async def test_16_1_without_device_information_is_accepted(env: Any) -> None:
    body = await call(env, download(devinfo=False))
    assert body.find("Settings:DeviceInformation") is None
    assert body.children[0].tag == "Provision:Status"
    assert body.findtext("Provision:Status") == "1"
    assert is_key(policy_of(body).findtext("Provision:PolicyKey"))


@pytest_twisted.ensureDeferred
async def test_device_information_merges_with_earlier_fields(env: Any) -> None:
    server, user = env
    await call(env, download())
    await call(env, E("Provision:Provision", E("Settings:DeviceInformation", E(
        "Settings:Set", E("Settings:OS", "iOS 18.0"))), E("Provision:Policies", E(
            "Provision:Policy", E("Provision:PolicyType", PT)))))
    info = (await server.state.get_device(user, "dev1"))["info"]
    assert info["OS"] == "iOS 18.0"
    assert info["Model"] == "iPhone15,2"


@pytest_twisted.ensureDeferred
async def test_ack_with_wrong_key_is_policy_status_5(env: Any) -> None:
    server, user = env
    body = await call(env, download())
    temp = policy_of(body).findtext("Provision:PolicyKey")
    wrong = "1" if temp != "1" else "2"
    body2 = await call(env, ack(wrong))
    assert body2.findtext("Provision:Status") == "1"
    assert policy_of(body2).findtext("Provision:Status") == "5"
    assert policy_of(body2).find("Provision:PolicyKey") is None
    device = await server.state.get_device(user, "dev1")
    assert not device.get("policy_key")
    # The right key still works afterwards.
    body3 = await call(env, ack(temp))
    assert policy_of(body3).findtext("Provision:Status") == "1"


@pytest_twisted.ensureDeferred
async def test_ack_without_download_and_reused_ack_are_rejected(env: Any) -> None:
    body = await call(env, ack("12345"))
    assert policy_of(body).findtext("Provision:Status") == "5"
    temp = policy_of(await call(env, download())).findtext("Provision:PolicyKey")
    assert policy_of(await call(env, ack(temp))).findtext("Provision:Status") == "1"
    assert policy_of(await call(env, ack(temp))).findtext("Provision:Status") == "5"


@pytest_twisted.ensureDeferred
async def test_unknown_policy_type_is_policy_status_3(env: Any) -> None:
    body = await call(env, download(policy_type="MS-WAP-Provisioning-XML"))
    assert body.findtext("Provision:Status") == "1"
    pol = policy_of(body)
    assert pol.findtext("Provision:Status") == "3"
    assert pol.find("Provision:PolicyKey") is None
    assert pol.find("Provision:Data") is None


@pytest_twisted.ensureDeferred
async def test_malformed_provision_is_status_2(env: Any) -> None:
    body = await call(env, E("Provision:Provision", E("Provision:Policies")))
    assert body.findtext("Provision:Status") == "2"
    body = await call(env, E("Provision:Provision"))
    assert body.findtext("Provision:Status") == "2"
    body = await call(env, None)
    assert body.findtext("Provision:Status") == "2"


@pytest_twisted.ensureDeferred
async def test_12_1_handshake_uses_the_12_1_document(env: Any) -> None:
    body = await call(env, download(devinfo=False), version="12.1")
    doc = policy_of(body).find("Provision:Data").find("Provision:EASProvisionDoc")
    assert doc.findtext("Provision:AllowStorageCard") == "1"
    assert doc.find("Provision:UnapprovedInROMApplicationList") is not None
    temp = policy_of(body).findtext("Provision:PolicyKey")
    body2 = await call(env, ack(temp), version="12.1")
    assert is_key(policy_of(body2).findtext("Provision:PolicyKey"))


@pytest_twisted.ensureDeferred
async def test_remote_wipe_round_trip(env: Any) -> None:
    server, user = env
    temp = policy_of(await call(env, download())).findtext("Provision:PolicyKey")
    final = policy_of(await call(env, ack(temp))).findtext("Provision:PolicyKey")
    await server.state.save_device(user, "dev1", wipe="pending")
    device = await server.state.get_device(user, "dev1")
    assert policy.wipe_pending(device)
    # Even the right key is refused while the wipe is pending: back to Provision.
    assert policy.policy_status(device, final) == "140"

    # The device comes back with an empty Provision (MS-ASPROV 3.1.5.1.1).
    body = await call(env, E("Provision:Provision"))
    assert [c.tag for c in body.children] == ["Provision:Status", "Provision:RemoteWipe"]
    assert body.findtext("Provision:Status") == "1"
    assert body.find("Provision:RemoteWipe").children == []
    # A normal policy request also gets the directive and no policy key.
    body = await call(env, download())
    assert body.find("Provision:RemoteWipe") is not None
    assert body.find("Provision:Policies") is None

    # The device reports failure: still pending, directive repeated.
    body = await call(env, E("Provision:Provision", E("Provision:RemoteWipe",
                                                      E("Provision:Status", "2"))))
    assert body.findtext("Provision:Status") == "2"
    assert body.find("Provision:RemoteWipe") is not None
    assert (await server.state.get_device(user, "dev1"))["wipe"] == "pending"

    body = await call(env, E("Provision:Provision", E("Provision:RemoteWipe",
                                                      E("Provision:Status", "1"))))
    assert body.findtext("Provision:Status") == "1"
    assert body.find("Provision:RemoteWipe") is None
    device = await server.state.get_device(user, "dev1")
    assert device["wipe"] == "done"
    assert not policy.wipe_pending(device)


@pytest_twisted.ensureDeferred
async def test_account_only_remote_wipe_on_16_1(env: Any) -> None:
    server, user = env
    await server.state.save_device(user, "dev1", wipe="pending",
                                   info={"wipe_kind": "account"})
    body = await call(env, E("Provision:Provision"))
    assert body.find("Provision:AccountOnlyRemoteWipe") is not None
    assert body.find("Provision:RemoteWipe") is None
    # 14.1 has no AccountOnlyRemoteWipe (MS-ASPROV 2.2.2.1: 16.1 only), and a full
    # wipe is not what was ordered: the device is refused as blocked (MS-ASCMD 2.2.2
    # common status 129, which MS-ASPROV 2.2.2.54.2 lets Provision/Status carry)
    body = await call(env, E("Provision:Provision"), version="14.1")
    assert body.findtext("Provision:Status") == "129"
    assert body.find("Provision:RemoteWipe") is None
    assert body.find("Provision:AccountOnlyRemoteWipe") is None
    assert (await server.state.get_device(user, "dev1"))["wipe"] == "pending"
    body = await call(env, E("Provision:Provision", E("Provision:AccountOnlyRemoteWipe",
                                                      E("Provision:Status", "1"))))
    assert body.findtext("Provision:Status") == "1"
    assert (await server.state.get_device(user, "dev1"))["wipe"] == "done"


def test_policy_status_without_device() -> None:
    assert policy.policy_status(None, None) == "142"
    assert policy.policy_status(None, "123") == "142"
    assert policy.policy_status({"policy_key": None, "wipe": "none"}, "123") == "142"
    assert policy.policy_status({"policy_key": 123, "wipe": "none"}, "123") is None
    assert policy.policy_status({"policy_key": 123, "wipe": "none"}, "124") == "144"
    assert policy.policy_status({"policy_key": 123, "wipe": "done"}, "123") is None
    assert not policy.wipe_pending(None)


def test_new_policy_keys_are_never_zero() -> None:
    for _ in range(500):
        assert is_key(policy.new_policy_key())
    assert policy.new_policy_key(avoid=("5",)) != "5"


def test_policy_required_is_449_before_14_0() -> None:
    resp = policy.policy_required_response("FolderSync", "12.1", "142")
    assert resp.http_status == 449
    assert resp.body is None


@pytest.mark.parametrize("version", ["14.0", "14.1", "16.1"])
def test_policy_required_is_a_status_in_the_body_from_14_0(version: str) -> None:
    resp = policy.policy_required_response("FolderSync", version, "142")
    assert resp.http_status == 200
    assert resp.body == E("FolderHierarchy:FolderSync", E("FolderHierarchy:Status", "142"))
    assert resp.status == "142"


@pytest.mark.parametrize(("cmd", "root", "status_tag"), [
    ("Sync", "AirSync:Sync", "AirSync:Status"),
    ("Ping", "Ping:Ping", "Ping:Status"),
    ("GetItemEstimate", "ItemEstimate:GetItemEstimate", "ItemEstimate:Status"),
    ("Settings", "Settings:Settings", "Settings:Status"),
    ("ItemOperations", "ItemOperations:ItemOperations", "ItemOperations:Status"),
    ("FolderCreate", "FolderHierarchy:FolderCreate", "FolderHierarchy:Status"),
    ("MoveItems", "Move:MoveItems", "Move:Status"),
    ("SendMail", "ComposeMail:SendMail", "ComposeMail:Status"),
    ("Search", "Search:Search", "Search:Status"),
    ("ResolveRecipients", "ResolveRecipients:ResolveRecipients", "ResolveRecipients:Status"),
])
@pytest.mark.parametrize("reason", ["140", "143", "144"])
def test_policy_required_status_goes_in_the_commands_root(cmd: str, root: str,
                                                          status_tag: str,
                                                          reason: str) -> None:
    resp = policy.policy_required_response(cmd, "16.1", reason)
    assert resp.http_status == 200
    assert resp.body == E(root, E(status_tag, reason))


def test_policy_required_falls_back_to_449_without_a_top_level_status() -> None:
    assert policy.policy_required_response("MeetingResponse", "16.1", "142").http_status == 449
    assert policy.policy_required_response("GetAttachment", "14.1", "142").http_status == 449


@pytest_twisted.ensureDeferred
async def test_policy_key_0_in_the_download_and_missing_policy_type(env: Any) -> None:
    body = await call(env, E("Provision:Provision", E("Provision:Policies", E(
        "Provision:Policy", E("Provision:PolicyType", PT), E("Provision:PolicyKey", "0")))))
    pol = policy_of(body)
    assert pol.findtext("Provision:Status") == "1"
    assert is_key(pol.findtext("Provision:PolicyKey"))
    assert pol.find("Provision:Data") is not None
    body = await call(env, E("Provision:Provision", E("Provision:Policies", E(
        "Provision:Policy", E("Provision:PolicyKey", "5")))))
    assert body.findtext("Provision:Status") == "2"
    assert body.find("Provision:Policies") is None
