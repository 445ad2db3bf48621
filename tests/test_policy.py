"""The device policy (issue #14 point 4): settings and their ranges, the document per
protocol version read back by libwbxml, the 2.5 WAP form, the Provision answers to a
device that did not apply it, the 143 of a changed policy, config and easync-admin.

MS-ASPROV sections: 2.2.2.28 EASProvisionDoc and each element's "Protocol Versions"
table (2.2.2.25 DevicePasswordEnabled, 2.2.2.32 MaxDevicePasswordFailedAttempts 4-16,
2.2.2.36 MaxInactivityTimeDeviceLock, 2.2.2.38 MinDevicePasswordLength 1-16),
2.2.2.24.2 Data as a string at 2.5, 2.2.2.43 PolicyType per version, 2.2.2.54.1 the
client's acknowledgement Status, 3.1.5.2 Provision Status 139 / 145; MS-ASCMD 2.2.2
Status 143 PolicyRefresh.
"""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET
from typing import Any

import needs
import pytest
import pytest_twisted
from rawclient import Node, parse_xml, wbxml_to_xml
from sqlserver import memory_server
from test_admin import Admin

from easync import config as cfg
from easync.commands import provision
from easync.commands import provisioning as prov
from easync.handler import EasHTTPError, EasRequest
from easync.policy import (
    DEFAULT_FINGERPRINT,
    DEFAULTS,
    PolicyError,
    effective,
    fingerprint,
    parse_policy,
    user_fingerprint,
)
from easync.settings import Settings
from easync.wbxml import encode
from easync.wbxml.element import E, Element

pytestmark = needs.mark(needs.libwbxml())

PT = "MS-EAS-Provisioning-WBXML"
WAP = "MS-WAP-Provisioning-XML"
STRICT = {"DevicePasswordEnabled": "1", "AlphanumericDevicePasswordRequired": "1",
          "MinDevicePasswordLength": "8", "MaxInactivityTimeDeviceLock": "300",
          "MaxDevicePasswordFailedAttempts": "6", "AllowSimpleDevicePassword": "0",
          "RequireDeviceEncryption": "1", "AllowCamera": "0",
          "DevicePasswordExpiration": "90", "DevicePasswordHistory": "5"}
# The 12.1 elements (MS-ASPROV 2.2.2.x "Protocol Versions": not in 12.0).
ONLY_12_1 = ("AllowStorageCard", "AllowCamera", "RequireDeviceEncryption",
             "MinDevicePasswordComplexCharacters", "AllowBluetooth", "AllowBrowser")
# libwbxml spells token 0x10 of code page 14 by its 12.0 name
LIB_NAMES = {"RequireStorageCardEncryption": "DeviceEncryptionEnabled"}


def settings(**kw: Any) -> Settings:
    s = Settings()
    for k, v in kw.items():
        setattr(s, k, v)
    return s


@pytest_twisted.async_yield_fixture
async def strict_env(tmp_path: Any) -> Any:
    pol = tuple(sorted(STRICT.items()))
    async with memory_server(tmp_path, settings=settings(policy=pol)) as (server, user, _s):
        yield server, user


async def call(server: Any, user: Any, body: Element | None, version: str = "16.1",
               device_id: str = "dev1") -> Any:
    device = await server.state.get_device(user, device_id) or \
        await server.state.save_device(user, device_id, device_type="iPhone")
    req = EasRequest(cmd="Provision", user=user, device_id=device_id, device_type="iPhone",
                     version=version, body=body, device=device)
    return await provision.handle(server, req)


def download(policy_type: str = PT) -> Element:
    return E("Provision:Provision", E("Provision:Policies", E(
        "Provision:Policy", E("Provision:PolicyType", policy_type))))


def ack(key: str, status: str | None = "1", policy_type: str = PT) -> Element:
    return E("Provision:Provision", E("Provision:Policies", E(
        "Provision:Policy", E("Provision:PolicyType", policy_type),
        E("Provision:PolicyKey", key),
        E("Provision:Status", status) if status is not None else None)))


def via_libwbxml(body: Element) -> Node:
    """The response as an independent decoder reads it."""
    return parse_xml(wbxml_to_xml(encode(body)))


def doc_values(node: Node) -> dict[str, str | None]:
    doc = node.find("Provision:Policies/Provision:Policy/Provision:Data/"
                    "Provision:EASProvisionDoc")
    assert doc is not None
    return {c.tag.partition(":")[2]: c.text for c in doc.children}


# -- the document per version -----------------------------------------------------------

@pytest.mark.parametrize("version", ["12.0", "12.1", "14.1", "16.1"])
@pytest_twisted.ensureDeferred
async def test_the_configured_policy_is_in_the_provision_document(strict_env: Any,
                                                                   version: str) -> None:
    """MS-ASPROV 3.2.5.1.1: the initial answer carries the policy in Data/EASProvisionDoc;
    12.1 elements only from 12.1 (each element's Protocol Versions table)."""
    server, user = strict_env
    resp = await call(server, user, download(), version=version)
    node = via_libwbxml(resp.body)
    assert node.text_of("Provision:Status") == "1"
    values = doc_values(node)
    for name, value in STRICT.items():
        if version == "12.0" and name in ONLY_12_1:
            assert name not in values
        else:
            assert values[LIB_NAMES.get(name, name)] == value, name
    for name in ONLY_12_1:
        assert (name in values) == (version != "12.0")
    # what was not configured stays permissive
    assert values["AttachmentsEnabled"] == "1"
    if version != "12.0":
        assert values["AllowWiFi"] == "1"


@pytest_twisted.ensureDeferred
async def test_the_user_settings_win_over_the_server(strict_env: Any) -> None:
    server, user = strict_env
    await server.users.update_user(user.name, extra={"policy": {
        "MinDevicePasswordLength": "4", "AllowCamera": "1"}})
    user = await server.users.get_user(user.name)
    values = doc_values(via_libwbxml((await call(server, user, download())).body))
    assert values["MinDevicePasswordLength"] == "4"
    assert values["AllowCamera"] == "1"
    assert values["DevicePasswordEnabled"] == "1"       # the server's, not overridden


@pytest_twisted.ensureDeferred
async def test_2_5_gets_the_wap_provisioning_document(strict_env: Any) -> None:
    """MS-ASPROV 2.2.2.43 / 2.2.2.24.2: at 2.5 PolicyType is MS-WAP-Provisioning-XML and
    Data is a wap-provisioningdoc string: SecurityPolicy 4131=0 (a passcode required),
    the inactivity lock in minutes, DeviceWipeThreshold, MinimumPasswordLength,
    PasswordComplexity 0 (alphanumeric)."""
    server, user = strict_env
    resp = await call(server, user, download(WAP), version="2.5")
    node = via_libwbxml(resp.body)
    pol = node.find("Provision:Policies/Provision:Policy")
    assert pol is not None and pol.text_of("Provision:Status") == "1"
    assert pol.text_of("Provision:PolicyType") == WAP
    temp = pol.text_of("Provision:PolicyKey")
    assert temp and temp.isdigit()
    doc = ET.fromstring(pol.text_of("Provision:Data") or "")
    assert doc.tag == "wap-provisioningdoc"
    parms = {p.get("name"): p.get("value") for p in doc.iter("parm")}
    assert parms["4131"] == "0"
    assert parms["AEFrequencyType"] == "1" and parms["AEFrequencyValue"] == "5"
    assert parms["DeviceWipeThreshold"] == "6"
    assert parms["MinimumPasswordLength"] == "8"
    assert parms["PasswordComplexity"] == "0"
    assert [c.get("type") for c in doc] == ["SecurityPolicy", "Registry"]
    # the acknowledgement with the same policy type gets the final key
    final = via_libwbxml((await call(server, user, ack(temp, policy_type=WAP),
                                     version="2.5")).body)
    key = final.text_of("Provision:Policies/Provision:Policy/Provision:PolicyKey")
    assert key and key != temp
    device = await server.state.get_device(user, "dev1")
    assert str(device["policy_key"]) == key
    assert device["policy_hash"] == fingerprint(effective(STRICT))


@pytest_twisted.ensureDeferred
async def test_the_permissive_wap_document_asks_for_no_passcode(tmp_path: Any) -> None:
    async with memory_server(tmp_path) as (server, user, _s):
        resp = await call(server, user, download(WAP), version="2.5")
        data = resp.body.find("Provision:Policies").find("Provision:Policy").findtext(
            "Provision:Data")
        parms = {p.get("name"): p.get("value") for p in ET.fromstring(data).iter("parm")}
        assert parms["4131"] == "1"
        assert parms["AEFrequencyType"] == "0"
        assert "DeviceWipeThreshold" not in parms


@pytest.mark.parametrize(("version", "policy_type"), [("2.5", PT), ("14.1", WAP),
                                                      ("12.0", WAP)])
@pytest_twisted.ensureDeferred
async def test_a_policy_type_the_version_does_not_use_is_policy_status_3(
        strict_env: Any, version: str, policy_type: str) -> None:
    server, user = strict_env
    body = (await call(server, user, download(policy_type), version=version)).body
    pol = body.find("Provision:Policies").find("Provision:Policy")
    assert pol.findtext("Provision:Status") == "3"
    assert pol.find("Provision:PolicyKey") is None


# -- a device that does not apply the policy ---------------------------------------------

async def handshake(server: Any, user: Any, status: str, version: str = "16.1") -> Any:
    temp = (await call(server, user, download(), version=version)).body.find(
        "Provision:Policies").find("Provision:Policy").findtext("Provision:PolicyKey")
    return await call(server, user, ack(temp, status), version=version)


@pytest.mark.parametrize("status", ["2", "3", "4"])
@pytest_twisted.ensureDeferred
async def test_non_compliant_ack_is_let_in_and_recorded_by_default(strict_env: Any,
                                                                   status: str) -> None:
    server, user = strict_env
    resp = await handshake(server, user, status)
    pol = resp.body.find("Provision:Policies").find("Provision:Policy")
    assert resp.body.findtext("Provision:Status") == "1"
    assert pol.findtext("Provision:Status") == "1"
    key = pol.findtext("Provision:PolicyKey")
    device = await server.state.get_device(user, "dev1")
    assert str(device["policy_key"]) == key
    assert device["policy_status"] == status
    assert prov.policy_status(device, key, fingerprint(effective(STRICT))) is None


@pytest.mark.parametrize(("status", "code"), [("2", "139"), ("3", "139"), ("4", "145")])
@pytest_twisted.ensureDeferred
async def test_non_compliant_ack_is_refused_without_allow_non_provisionable(
        tmp_path: Any, status: str, code: str) -> None:
    """MS-ASPROV 3.1.5.2: 139 "cannot fully comply" (client Status 2; 3 applied
    nothing at all), 145 "externally managed" (4) when the server does not allow
    them; no policy key, so the device's next command is sent back to Provision."""
    s = settings(policy=tuple(sorted(STRICT.items())), allow_non_provisionable=False)
    async with memory_server(tmp_path, settings=s) as (server, user, _s):
        resp = await handshake(server, user, status)
        node = via_libwbxml(resp.body)
        assert node.text_of("Provision:Status") == code
        assert node.find("Provision:Policies") is None
        device = await server.state.get_device(user, "dev1")
        assert device["policy_key"] is None
        assert device["policy_status"] == f"refused:{status}"
        assert prov.policy_status(device, None) == "142"
        # a compliant acknowledgement afterwards is accepted
        resp = await handshake(server, user, "1")
        assert resp.body.find("Provision:Policies").find("Provision:Policy").findtext(
            "Provision:Status") == "1"
        device = await server.state.get_device(user, "dev1")
        assert device["policy_key"] and device["policy_status"] == "1"


@pytest_twisted.ensureDeferred
async def test_non_compliant_ack_below_14_is_http_403(tmp_path: Any) -> None:
    """Status codes above 100 are 14.0+ (MS-ASCMD 2.2.2); below, 403 (MS-ASHTTP
    2.2.2.1.1: the user may not sync), and no key."""
    s = settings(policy=tuple(sorted(STRICT.items())), allow_non_provisionable=False)
    async with memory_server(tmp_path, settings=s) as (server, user, _s):
        with pytest.raises(EasHTTPError) as e:
            await handshake(server, user, "2", version="12.1")
        assert e.value.code == 403
        assert (await server.state.get_device(user, "dev1"))["policy_key"] is None


@pytest_twisted.ensureDeferred
async def test_an_ack_status_that_does_not_exist_is_a_protocol_error(strict_env: Any) -> None:
    server, user = strict_env
    resp = await handshake(server, user, "9")
    assert resp.body.findtext("Provision:Status") == "2"
    assert (await server.state.get_device(user, "dev1"))["policy_key"] is None


# -- a changed policy: 143 -----------------------------------------------------------------

def test_a_changed_policy_is_policy_refresh() -> None:
    """MS-ASCMD 2.2.2: 143 PolicyRefresh when the device's acknowledged policy is not
    the current one; a record without a fingerprint acknowledged the permissive one."""
    strict = fingerprint(effective(STRICT))
    device = {"policy_key": 77, "wipe": "none", "policy_hash": strict}
    assert prov.policy_status(device, "77", strict) is None
    assert prov.policy_status(device, "77", DEFAULT_FINGERPRINT) == "143"
    assert prov.policy_status(device, "78", DEFAULT_FINGERPRINT) == "144"
    old = {"policy_key": 77, "wipe": "none", "policy_hash": None}
    assert prov.policy_status(old, "77", DEFAULT_FINGERPRINT) is None
    assert prov.policy_status(old, "77", strict) == "143"
    assert prov.policy_required_response("Sync", "14.1", "143").body == E(
        "AirSync:Sync", E("AirSync:Status", "143"))
    assert prov.policy_required_response("Sync", "12.1", "143").http_status == 449


def test_fingerprints_follow_the_content() -> None:
    server = tuple(sorted(STRICT.items()))
    assert user_fingerprint(server, None) == fingerprint(effective(STRICT))
    assert user_fingerprint(server, {"AllowCamera": "1"}) != user_fingerprint(server, None)
    # setting a value to what it already is changes nothing
    assert user_fingerprint(server, {"AllowCamera": "0"}) == user_fingerprint(server, None)
    assert user_fingerprint((), None) == DEFAULT_FINGERPRINT == fingerprint(DEFAULTS)


# -- settings, config and command line ---------------------------------------------------

@pytest.mark.parametrize(("given", "message"), [
    ({"MinDevicePasswordLength": "17"}, "from 1 to 16"),
    ({"MinDevicePasswordLength": "0"}, "from 1 to 16"),
    ({"MaxDevicePasswordFailedAttempts": "3"}, "from 4 to 16"),
    ({"MaxDevicePasswordFailedAttempts": "17"}, "from 4 to 16"),
    ({"MaxInactivityTimeDeviceLock": "-1"}, "from 0 to 9999"),
    ({"MinDevicePasswordComplexCharacters": "5"}, "from 1 to 4"),
    ({"DevicePasswordEnabled": "maybe"}, "expected on or off"),
    ({"AllowBluetooth": "3"}, "expected one of 0, 1, 2"),
    ({"PasscodeColour": "1"}, "unknown policy setting"),
    ({"ApprovedApplicationList": "x"}, "cannot be set"),
    ({"DevicePasswordHistory": ""}, "a number from 0 to 50 is required"),
])
def test_out_of_range_values_are_refused(given: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(given)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.resolve({}, {"policy": given})


def test_values_are_normalised() -> None:
    assert parse_policy("devicepasswordenabled=on, MinDevicePasswordLength=06 "
                        "MaxDevicePasswordFailedAttempts=none") == {
        "DevicePasswordEnabled": "1", "MinDevicePasswordLength": "6",
        "MaxDevicePasswordFailedAttempts": ""}
    assert parse_policy({"AllowCamera": False, "MaxInactivityTimeDeviceLock": 60}) == {
        "AllowCamera": "0", "MaxInactivityTimeDeviceLock": "60"}
    with pytest.raises(PolicyError, match="SETTING=VALUE"):
        parse_policy("DevicePasswordEnabled")


def test_config_file_policy_table(tmp_path: Any) -> None:
    path = tmp_path / "easync.toml"
    path.write_text('provisioning = true\nallow-non-provisionable = "off"\n'
                    '[policy]\nDevicePasswordEnabled = true\nMinDevicePasswordLength = 6\n')
    conf = cfg.resolve({}, cfg.load_file(str(path)))
    assert conf.settings.policy == (("DevicePasswordEnabled", "1"),
                                    ("MinDevicePasswordLength", "6"))
    assert conf.settings.allow_non_provisionable is False
    path.write_text("[policy]\nMinDevicePasswordLength = 40\n")
    with pytest.raises(cfg.ConfigError, match="policy: MinDevicePasswordLength"):
        cfg.resolve({}, cfg.load_file(str(path)))
    path.write_text("policy = [1, 2]\n")
    with pytest.raises(cfg.ConfigError, match="must be a table"):
        cfg.load_file(str(path))


def test_command_line_policy() -> None:
    from easync.tap import Options

    opts = Options()
    opts.parseOptions(["--policy", "DevicePasswordEnabled=1,MinDevicePasswordLength=6",
                       "--allow-non-provisionable", "off"])
    s = opts.settings()
    assert dict(s.policy) == {"DevicePasswordEnabled": "1", "MinDevicePasswordLength": "6"}
    assert s.allow_non_provisionable is False
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="MinDevicePasswordLength"):
        Options().parseOptions(["--policy", "MinDevicePasswordLength=99"])
    assert Settings().allow_non_provisionable is True      # Exchange-like default


# -- easync-admin policy ---------------------------------------------------------------------

def test_admin_policy_set_show_reset(tmp_path: Any) -> None:
    run = Admin(tmp_path)
    assert run("user", "add", "mario", "--password-stdin", stdin="pw\n").returncode == 0
    res = run("policy", "set", "mario", "DevicePasswordEnabled=1",
              "MinDevicePasswordLength=6")
    assert res.returncode == 0, res.stderr
    db = run.db[len("sqlite:///"):]
    with sqlite3.connect(db) as conn:
        extra = conn.execute("SELECT extra FROM users WHERE name='mario'").fetchone()[0]
    assert '"policy"' in extra and '"MinDevicePasswordLength":"6"' in extra
    # a second set merges
    assert run("policy", "set", "mario", "AllowCamera=off").returncode == 0
    conf = tmp_path / "easync.toml"
    conf.write_text("[policy]\nMaxInactivityTimeDeviceLock = 120\n")
    show = run("policy", "show", "mario", "--config", str(conf))
    assert show.returncode == 0, show.stderr
    rows = {ln.split()[0]: ln.split()[1:] for ln in show.stdout.splitlines()
            if ln.split() and ln.split()[0][0].isupper() and len(ln.split()) >= 3}
    assert rows["MinDevicePasswordLength"] == ["6", "user"]
    assert rows["AllowCamera"] == ["0", "user"]
    assert rows["MaxInactivityTimeDeviceLock"] == ["120", "server"]
    assert "passcode required (any), at least 6 characters" in show.stdout
    assert "locks after 120 seconds without use" in show.stdout
    # bad values: exit 1, nothing stored
    bad = run("policy", "set", "mario", "MaxDevicePasswordFailedAttempts=2")
    assert bad.returncode == 1 and "from 4 to 16" in bad.stderr
    assert run("policy", "set", "nobody", "AllowCamera=0").returncode == 1
    reset = run("policy", "reset", "mario")
    assert reset.returncode == 0
    with sqlite3.connect(db) as conn:
        extra = conn.execute("SELECT extra FROM users WHERE name='mario'").fetchone()[0]
    assert '"policy"' not in extra
    again = run("policy", "reset", "mario")
    assert again.returncode == 0 and "nothing to reset" in again.stdout
    audit = run("audit", "mario")
    assert "policy set AllowCamera=0" in audit.stdout and "policy reset" in audit.stdout


@pytest_twisted.ensureDeferred
async def test_a_passcode_alone_asks_for_no_wipe_and_no_lock(tmp_path: Any) -> None:
    """Turning only the passcode on must not make phones erase themselves: the wipe
    threshold and the idle lock are sent empty (MS-ASPROV 2.2.2.32, 2.2.2.36: empty =
    not set by the policy) unless configured."""
    s = settings(policy=(("DevicePasswordEnabled", "1"),))
    async with memory_server(tmp_path, settings=s) as (server, user, _s):
        values = doc_values(via_libwbxml((await call(server, user, download())).body))
        assert values["DevicePasswordEnabled"] == "1"
        assert values["MaxDevicePasswordFailedAttempts"] is None
        assert values["MaxInactivityTimeDeviceLock"] is None
        data = (await call(server, user, download(WAP), version="2.5")).body.find(
            "Provision:Policies").find("Provision:Policy").findtext("Provision:Data")
        parms = {p.get("name"): p.get("value") for p in ET.fromstring(data).iter("parm")}
        assert parms["4131"] == "0"
        assert "DeviceWipeThreshold" not in parms and parms["AEFrequencyType"] == "0"
