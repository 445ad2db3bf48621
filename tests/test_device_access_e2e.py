"""Issue #14 point 3 end to end: ``twistd easync`` (SQLite, and PostgreSQL with
several processes' hub) with raw WBXML devices (libwbxml, tests/rawclient.py) at 12.1,
14.1 and 16.1, pyactivesync, and ``easync-admin`` in its own process.

What the protocol gives (cited per test): a device that may not sync is answered the
command's top-level Status 129 DeviceIsBlockedForThisUser (MS-ASCMD 2.2.2 common
status codes, 14.0+; Provision/Status takes the common values, MS-ASPROV 2.2.2.54.2);
below 14.0 there are no common status codes and the answer is HTTP 403 (MS-ASHTTP
2.2.2.1.1).  A quarantined device may still Provision (its device information is
recorded for the administrator who decides), as a device in Exchange's quarantine can.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import needs
import pytest
from easync_server import RunningServer, wait_for
from pgtest import fresh_database, pg_server, unreachable
from rawclient import RawDevice

from easync.wbxml import decode

PASSWORD = "device-access-pass-1"
pytestmark = pytest.mark.filterwarnings(
    "ignore::urllib3.exceptions.InsecureRequestWarning")

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with ExitStack() as stack:
        if request.param == "sqlite":
            srv = RunningServer(tmp_path_factory.mktemp("access"))
        else:
            needs.require(unreachable())
            url = stack.enter_context(fresh_database("access"))
            srv = pg_server(tmp_path_factory.mktemp("access-pg"), url, [])
        srv.start()
        for name in ("quinn", "blake", "wanda", "percy", "pyas"):
            srv.add_user(name, PASSWORD, email=f"{name}@example.org")
        yield srv
        srv.stop()
        log = srv.log_text()
        assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def device(srv: RunningServer, user: str, device_id: str, version: str = "14.1",
           device_type: str = "iPhone", ua: str = "Apple-iPhone15C2/2104.252") -> RawDevice:
    return RawDevice(srv.url, user, PASSWORD, device_id, version=version,
                     device_type=device_type, user_agent=ua)


def listing(srv: RunningServer, *args: str) -> dict[str, list[str]]:
    """``easync-admin device list ARGS``: device id -> its line's words."""
    lines = srv.admin("device", "list", *args).stdout.splitlines()
    return {line.split()[1]: line.split() for line in lines[1:] if line.strip()}


def raw_status(dev: RawDevice, cmd: str, xml: str) -> tuple[int, str | None, Any]:
    """(HTTP code, top-level Status or None, the decoded body or None)."""
    from rawclient import parse_xml, wbxml_to_xml, xml_to_wbxml

    r = dev.post(cmd, xml_to_wbxml(xml))
    if r.status_code != 200 or not r.content:
        return r.status_code, None, None
    node = parse_xml(wbxml_to_xml(r.content))
    return 200, node.text_of(node.tag.split(":")[0] + ":Status"), node


def rule_ids(srv: RunningServer) -> list[str]:
    lines = srv.admin("rule", "list").stdout.splitlines()
    return [line.split()[0] for line in lines[1:] if line.split() and line.split()[0].isdigit()]


def test_quarantine_by_device_type_until_allowed(server: RunningServer) -> None:
    """A rule quarantines every new iPad of quinn: at 14.1 and 16.1 the device
    provisions (its information reaches the list) but FolderSync answers Status 129
    (MS-ASCMD 2.2.2, 2.2.3.177.5's common values); at 12.1 HTTP 403 (MS-ASHTTP
    2.2.2.1.1).  The device list shows it quarantined, with when it was first seen;
    ``device allow`` lets it sync, the other devices never noticed."""
    server.admin("rule", "add", "--user", "quinn", "--device-type", "iPad", "quarantine")
    phone = device(server, "quinn", "QPHONE1")
    phone.provision()
    assert "Contacts" in phone.folders()
    for version, did in (("14.1", "QPAD141"), ("16.1", "QPAD161")):
        pad = device(server, "quinn", did, version=version, device_type="iPad",
                     ua="Apple-iPad13C1/2104.252")
        pad.provision()                      # quarantine lets Provision through
        code, status, _ = raw_status(pad, "FolderSync", FOLDERSYNC)
        assert (code, status) == (200, "129"), (version, code, status)
    old = device(server, "quinn", "QPAD121", version="12.1", device_type="iPad")
    code, _status, _ = raw_status(old, "FolderSync", FOLDERSYNC)
    assert code == 403
    held = listing(server, "quinn", "--quarantined")
    assert sorted(held) == ["QPAD121", "QPAD141", "QPAD161"]
    assert "quarantined" in held["QPAD141"] and "QPHONE1" not in held
    # FIRST SEEN is a date (the 4th and 5th words: "YYYY-MM-DD HH:MM")
    assert held["QPAD141"][3][:2] == "20"
    assert "quinn QPAD141 FolderSync http=200 status=129" in server.log_text()

    server.admin("device", "allow", "quinn", "QPAD141")
    pad = device(server, "quinn", "QPAD141", device_type="iPad",
                 ua="Apple-iPad13C1/2104.252")
    pad.provision()
    folders = pad.folders()
    assert "Contacts" in folders
    assert pad.initial(folders["Contacts"])
    assert sorted(listing(server, "quinn", "--quarantined")) == ["QPAD121", "QPAD161"]
    assert "allowed" in listing(server, "quinn")["QPAD141"]
    assert "device QPAD141: allow" in server.admin("audit", "quinn").stdout
    # reset: the device's own decision goes, the rule decides again
    server.admin("device", "reset", "quinn", "QPAD141")
    assert "QPAD141" in listing(server, "quinn", "--quarantined")
    code, status, _ = raw_status(pad, "FolderSync", FOLDERSYNC)
    assert (code, status) == (200, "129")
    server.admin("device", "allow", "quinn", "QPAD141")


def test_block_by_user_agent_refuses_without_wiping(server: RunningServer) -> None:
    """A rule for everyone blocks a user agent: that device is refused — Provision
    Status 129 at 14.1 (MS-ASPROV 2.2.2.54.2 takes MS-ASCMD 2.2.2's 129), HTTP 403 at
    12.1 — and never told to wipe (no RemoteWipe, its record's wipe stays "none");
    removing the rule lets it sync again with what it had."""
    ua = "BadMail/1.0 (blocked)"
    dev = device(server, "blake", "BLAKE1", ua="GoodMail/2.0")
    dev.provision()
    folders = dev.folders()
    key = dev.initial(folders["Contacts"])
    server.admin("rule", "add", "--everyone", "--user-agent", "BadMail/*", "block")
    rid = rule_ids(server)[-1]
    dev.user_agent = ua
    code, status, body = raw_status(dev, "FolderSync", FOLDERSYNC)
    assert (code, status) == (200, "129")
    code, status, body = raw_status(
        dev, "Provision", '<Provision xmlns="Provision:"><Policies><Policy><PolicyType>'
        'MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>')
    assert (code, status) == (200, "129")
    assert body.find("Provision:RemoteWipe") is None
    assert body.find("Provision:Policies") is None
    old = device(server, "blake", "BLAKE12", version="12.1", ua=ua)
    assert raw_status(old, "FolderSync", FOLDERSYNC)[0] == 403
    row = listing(server, "blake")["BLAKE1"]
    assert "blocked" in row and "none" in row        # access, and wipe still "none"
    server.admin("rule", "remove", rid)
    # the same device, its policy key and sync key still good: nothing was wiped
    # (an empty 200 is Sync's "nothing new", MS-ASCMD 2.2.1.21; a refusal has a body)
    r = dev.sync(folders["Contacts"], key)
    if r is not None:
        assert r.text_of("AirSync:Status") is None
        coll = r.find("AirSync:Collections/AirSync:Collection")
        assert coll is not None and coll.text_of("AirSync:Status") == "1"
    assert "Contacts" in dev.folders()


@pytest.mark.parametrize("version", ["12.1", "14.1", "16.1"])
def test_held_ping_of_a_device_blocked_is_answered_at_once(server: RunningServer,
                                                          version: str) -> None:
    """``easync-admin device block`` (another process) while the device holds a
    Ping of 10 minutes: the Ping is answered within seconds — Ping Status 129 from
    14.0 (MS-ASCMD 2.2.2), HTTP 403 below (MS-ASHTTP 2.2.2.1.1) — not at its
    heartbeat; ``device allow`` lets it in again."""
    did = "WANDA" + version.replace(".", "")
    dev = device(server, "wanda", did, version=version)
    th, out = _hold_ping(dev)
    wait_for(lambda: f"wanda {did} Ping" in server.admin("device", "list", "wanda").stdout
             or did in _holding(server), timeout=15)
    t0 = time.monotonic()
    server.admin("device", "block", "wanda", did)
    th.join(30)
    assert not th.is_alive()
    took = time.monotonic() - t0
    print(f"held Ping {version} answered {took:.2f}s after easync-admin device block")
    assert took < 10
    if version == "12.1":
        assert out["code"] == 403
    else:
        assert out["code"] == 200
        assert decode(out["body"]).findtext("Ping:Status") == "129"
    server.admin("device", "allow", "wanda", did)
    assert "Contacts" in dev.folders()


@pytest.mark.parametrize("version", ["12.1", "14.1"])
def test_held_sync_of_a_device_quarantined_is_answered_at_once(server: RunningServer,
                                                              version: str) -> None:
    """A Sync held with Wait (12.1, MS-ASCMD 2.2.3.188) or HeartbeatInterval (14.1,
    2.2.3.83.2) is answered within seconds when its device is quarantined by hand:
    Sync Status 129 (MS-ASCMD 2.2.2) at 14.1, HTTP 403 at 12.1 (MS-ASHTTP 2.2.2.1.1)."""
    from rawclient import xml_to_wbxml

    did = "WSYNC" + version.replace(".", "")
    dev = device(server, "wanda", did, version=version)
    dev.provision()
    folders = dev.folders()
    key = dev.initial(folders["Contacts"])
    dev.sync(folders["Contacts"], key)           # (the first Sync after 0 may send items)
    r = dev.sync(folders["Contacts"], key)
    if r is not None:
        key = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey") or key
    wait = "<Wait>10</Wait>" if version == "12.1" else \
        "<HeartbeatInterval>600</HeartbeatInterval>"
    xml = (f'<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>{key}</SyncKey>'
           f'<CollectionId>{folders["Contacts"]}</CollectionId></Collection></Collections>'
           f'{wait}</Sync>')
    out: dict[str, Any] = {}

    def hold() -> None:
        r = dev.post("Sync", xml_to_wbxml(xml))
        out.update(code=r.status_code, body=r.content)

    th = threading.Thread(target=hold)
    th.start()
    wait_for(lambda: did in _holding(server), timeout=15)
    t0 = time.monotonic()
    server.admin("device", "quarantine", "wanda", did)
    th.join(30)
    assert not th.is_alive() and time.monotonic() - t0 < 10
    if version == "12.1":
        assert out["code"] == 403
    else:
        assert out["code"] == 200
        assert decode(out["body"]).findtext("AirSync:Status") == "129"
    assert "quarantined" in listing(server, "wanda", "--quarantined")[did]


def test_a_rule_for_everyone_answers_the_held_pings_it_refuses(server: RunningServer
                                                                ) -> None:
    """``easync-admin rule add --everyone --device-type …  block`` (another process)
    while two users' devices hold 10-minute Pings: the Ping of the device the rule
    matches is answered within seconds, Ping Status 129 (MS-ASCMD 2.2.2), not at its
    heartbeat; the other user's device, of another type, keeps its Ping held.  After
    ``rule remove`` the blocked device syncs again."""
    held: dict[str, dict[str, Any]] = {}
    threads = {}
    devs = {}
    for user, did, dtype in (("percy", "PERCYRULE1", "RuleHeldPhone"),
                             ("blake", "BLAKERULE1", "RuleOtherPhone")):
        devs[did] = device(server, user, did, device_type=dtype)
        threads[did], held[did] = _hold_ping(devs[did])
    for user, did in (("percy", "PERCYRULE1"), ("blake", "BLAKERULE1")):
        wait_for(lambda user=user, did=did: any(
            did in line and "Ping on" in line
            for line in server.admin("device", "list", user).stdout.splitlines()),
            timeout=15)
    t0 = time.monotonic()
    out = server.admin("rule", "add", "--everyone", "--device-type", "ruleheldphone",
                       "block").stdout
    rid = out.split()[1]
    try:
        threads["PERCYRULE1"].join(30)
        assert not threads["PERCYRULE1"].is_alive()
        took = time.monotonic() - t0
        print(f"held Ping answered {took:.2f}s after a rule for everyone")
        assert took < 10
        assert held["PERCYRULE1"]["code"] == 200
        assert decode(held["PERCYRULE1"]["body"]).findtext("Ping:Status") == "129"
        assert threads["BLAKERULE1"].is_alive(), held["BLAKERULE1"]
    finally:
        server.admin("rule", "remove", rid)
        server.admin("device", "block", "blake", "BLAKERULE1")     # (its Ping ends)
        threads["BLAKERULE1"].join(30)
        server.admin("device", "reset", "blake", "BLAKERULE1")
    assert "Contacts" in devs["PERCYRULE1"].folders()


def _hold_ping(dev: RawDevice) -> tuple[threading.Thread, dict[str, Any]]:
    """Provision ``dev``, sync its Contacts from 0 and start it holding a Ping of 10
    minutes on them in a thread: (the thread, what it got: code, body, took)."""
    from rawclient import xml_to_wbxml

    dev.provision()
    folders = dev.folders()
    dev.initial(folders["Contacts"])
    ping = (f'<Ping xmlns="Ping:"><HeartbeatInterval>600</HeartbeatInterval><Folders>'
            f'<Folder><Id>{folders["Contacts"]}</Id><Class>Contacts</Class></Folder>'
            f'</Folders></Ping>')
    out: dict[str, Any] = {}

    def hold() -> None:
        t0 = time.monotonic()
        r = dev.post("Ping", xml_to_wbxml(ping))
        out.update(code=r.status_code, body=r.content, took=time.monotonic() - t0)

    th = threading.Thread(target=hold, daemon=True)
    th.start()
    return th, out


def _holding(server: RunningServer) -> str:
    return "\n".join(line for line in server.admin("device", "list", "wanda").stdout
                     .splitlines() if " on " in line)


def test_account_only_wipe_at_16_1(server: RunningServer) -> None:
    """The default wipe is the account-only one: a 16.1 device is told
    ``AccountOnlyRemoteWipe`` (MS-ASPROV 2.2.2.1; commands first get Status 140,
    MS-ASCMD 2.2.2) and acknowledges it with its Status (MS-ASPROV 3.1.5.2); the
    record's wipe becomes "done".  A 14.1 device cannot be sent one: the order is
    refused when asked for (``--account-only``); ``--full`` is the explicit way to a
    full RemoteWipe."""
    dev = device(server, "percy", "PERCY16", version="16.1")
    dev.provision()
    dev.folders()
    old = device(server, "percy", "PERCY14", version="14.1")
    old.provision()
    refused = server.admin("device", "wipe", "percy", "PERCY14", "--account-only",
                           check=False)
    assert refused.returncode == 1 and "16.1" in refused.stderr and "--full" in refused.stderr
    # WIPE, then POLICY and USER AGENT
    assert listing(server, "percy")["PERCY14"][-3] == "none"

    server.admin("device", "wipe", "percy", "PERCY16")
    code, status, _ = raw_status(dev, "FolderSync", FOLDERSYNC)
    assert (code, status) == (200, "140")
    r = dev.post("Provision", bytes.fromhex("03016a00000e45") + b"\x01")  # <Provision/>
    assert r.status_code == 200
    body = decode(r.content)
    assert body.findtext("Provision:Status") == "1"
    assert body.find("Provision:AccountOnlyRemoteWipe") is not None
    assert body.find("Provision:RemoteWipe") is None
    # the acknowledgement, by hand (libwbxml 0.11 has no token for it): page 14,
    # Provision(0x05) / AccountOnlyRemoteWipe(0x3B) / Status(0x0B) "1"
    ack = bytes.fromhex("03016a00000e45") + bytes([0x7B, 0x4B, 0x03]) + b"1\x00" + \
        b"\x01\x01\x01"
    r = dev.post("Provision", ack)
    assert r.status_code == 200
    assert decode(r.content).findtext("Provision:Status") == "1"
    assert "done" in listing(server, "percy")["PERCY16"]

    server.admin("device", "wipe", "percy", "PERCY14", "--full")
    code, status, _ = raw_status(old, "FolderSync", FOLDERSYNC)
    assert (code, status) == (200, "140")
    r = old.post("Provision", bytes.fromhex("03016a00000e45") + b"\x01")
    assert decode(r.content).find("Provision:RemoteWipe") is not None


def test_pyactivesync_quarantined_then_allowed(server: RunningServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """pyactivesync (14.1): quarantined by a rule on its DeviceType, its FolderSync
    fails with Status 129 (MS-ASCMD 2.2.2); once an administrator allows it, it lists
    the folders."""
    pyactivesync = needs.importable("pyactivesync")
    server.admin("rule", "add", "--user", "pyas", "--any", "quarantine")
    # trusting the server's own certificate, as the phone whose user accepted it
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.workdir / "easync.pem"))
    c = pyactivesync.Client(server.host, "pyas", PASSWORD, device_id="PYAS1", timeout=30)
    with pytest.raises(pyactivesync.exceptions.StatusError) as err:
        c.list_folders()
    assert err.value.code == "129"
    assert "PYAS1" in listing(server, "pyas", "--quarantined")
    server.admin("device", "allow", "pyas", "PYAS1")
    assert "Contacts" in {f.name for f in c.list_folders()}


def test_user_blocks_own_device_on_the_account_page_while_it_pings(
        server: RunningServer) -> None:
    """The same through the account page of the running server (its JSON API, same
    port): the user blocks their own 14.1 device while it holds a Ping; the server's
    own hub wakes the Ping, answered Status 129 (MS-ASCMD 2.2.2) at once; the device
    list says blocked, nothing wiped."""
    import requests

    server.add_user("ursula", PASSWORD, email="ursula@example.org")
    dev = device(server, "ursula", "URSULA1")
    th, out = _hold_ping(dev)
    wait_for(lambda: "Ping on" in server.admin("device", "list", "ursula").stdout,
             timeout=15)
    web = requests.Session()
    base = server.url.replace("/Microsoft-Server-ActiveSync", "/account/api")
    csrf = web.get(f"{base}/session", timeout=30, verify=False).json()["csrf_token"]
    r = web.post(f"{base}/login", json={"username": "ursula", "password": PASSWORD},
                 headers={"X-CSRF-Token": csrf}, timeout=30, verify=False)
    assert r.status_code == 200 and r.json()["logged_in"], r.text
    csrf = web.get(f"{base}/session", timeout=30, verify=False).json()["csrf_token"]
    t0 = time.monotonic()
    r = web.post(f"{base}/devices/block", json={"device_id": "URSULA1"},
                 headers={"X-CSRF-Token": csrf}, timeout=30, verify=False)
    assert r.status_code == 200, r.text
    assert {d["device_id"]: d["access"] for d in r.json()["devices"]} == {"URSULA1": "block"}
    th.join(30)
    assert not th.is_alive() and time.monotonic() - t0 < 5
    assert out["code"] == 200
    assert decode(out["body"]).findtext("Ping:Status") == "129"
    row = listing(server, "ursula")["URSULA1"]
    assert "blocked" in row and "none" in row


def test_cli_refuses_bad_rules_and_audits_changes(server: RunningServer) -> None:
    """easync-admin: a rule that cannot be, an unknown rule id, user or device are each
    one line on stderr, exit 1, nothing stored; every change is an audit row."""
    before = server.admin("rule", "list").stdout
    for args in (("rule", "add", "--everyone", "--device-type", "", "block"),
                 ("rule", "add", "--everyone", "--device-type", "x" * 201, "block"),
                 ("rule", "add", "--user", "nobody", "--any", "block"),
                 ("rule", "remove", "999999"),
                 ("device", "block", "nobody", "X"),
                 ("device", "allow", "quinn", "NO-SUCH-DEVICE")):
        r = server.admin(*args, check=False)
        assert r.returncode == 1, (args, r.returncode, r.stderr)
        assert r.stderr.startswith("easync-admin: error: ") and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    bad = server.admin("rule", "add", "--everyone", "--device-type", "x", "explode",
                       check=False)
    assert bad.returncode == 2                          # argparse: a bad command line
    assert server.admin("rule", "list").stdout == before
    server.admin("rule", "add", "--user", "percy", "--device-id", "AUDITME", "block")
    rid = rule_ids(server)[-1]
    server.admin("rule", "remove", rid)
    audit = server.admin("audit", "percy").stdout
    assert f"rule added: #{rid} user percy, device_id 'AUDITME': block" in audit
    assert f"rule removed: #{rid}" in audit
