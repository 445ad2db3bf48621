"""Acceptance: the account page's issue-14 controls in a real browser (Debian
``chromium``, headless, through ``chromedriver``; the ``Browser`` of
tests/test_account_browser.py) against ``twistd easync`` over TLS, each click checked
on the phone side with raw WBXML devices (libwbxml, tests/rawclient.py):

- "Shared folders": anna shares her contacts with bob (read only); bob's phone's
  FolderSync lists them as a user-created contacts folder (Type 14, MS-ASCMD
  2.2.3.186.3); "Stop sharing" takes them off it.
  "Shared with you" lists bob's calendar, which he shares with her.
- "Recently deleted": what anna's phone deleted (Sync Delete, MS-ASCMD 2.2.3.42.2) is
  listed; "Restore" brings one back to the phone as a Sync Add (MS-ASCMD 2.2.3.7.2);
  an administrator restores the rest with "Restore everything a device deleted".
- Devices: the access state of each device; "Block…" on her own 14.1 phone, after
  which its FolderSync is answered Status 129 DeviceIsBlockedForThisUser (MS-ASCMD
  2.2.2 common status codes); "Wipe…" on her 16.1 phone offers "Wipe this account from
  the device" first and the full wipe only in a second form with a box to tick; after
  the account-only wipe its commands get Status 140 (MS-ASCMD 2.2.2) and its next
  Provision carries AccountOnlyRemoteWipe (MS-ASPROV 2.2.2.1).
- The administrator's "Devices in quarantine": iPads quarantined by a rule are
  answered Status 129 (MS-ASCMD 2.2.2); "Allow" lets one list its folders, "Block"
  keeps the other out (still 129) and off the list.
- "Device policy" (read-only): the policy the phone is provisioned with (its
  passcode and MaxInactivityTimeDeviceLock in the EASProvisionDoc, MS-ASPROV 2.2.2.28 and
  2.2.2.36, set for anna by the admin).
- One Italian look at the "Shared folders" card and the "Recently deleted" page.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest

webdriver = needs.importable("selenium.webdriver")

from easync_server import RunningServer
from rawclient import Node, RawDevice
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select
from test_account_browser import WORDS, Browser
from test_deleted_e2e import add, collection, commands, delete
from test_device_access_e2e import FOLDERSYNC, raw_status
from test_e2e_policy import handshake

from easync.wbxml import decode

pytestmark = [needs.mark(needs.chromium()), needs.mark(needs.libwbxml()),
              pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]

PASSWORD = "issue14 login pw 1"
ROOT_PASSWORD = "issue14 admin pw 1"


class World:
    srv: RunningServer
    b: Browser
    shots: Path


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World()
    w.srv = RunningServer(tmp_path, args=["--login-delay", "0"])
    browser = None
    try:
        w.srv.start()
        w.srv.add_user("root", ROOT_PASSWORD, email="root@example.test")
        w.srv.admin("user", "admin", "root", "on")
        for name in ("anna", "bob"):
            w.srv.add_user(name, PASSWORD, email=f"{name}@example.test")
        # every new iPad of anna waits for an administrator
        w.srv.admin("rule", "add", "--user", "anna", "--device-type", "iPad", "quarantine")
        w.shots = Path(os.environ.get("EASYNC_SCREENSHOTS") or tmp_path / "screenshots")
        browser = Browser(f"https://{w.srv.host}", w.shots / "issue14")
        w.b = browser
        yield w
    finally:
        if browser is not None:
            browser.quit()
        w.srv.stop()
    log = w.srv.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]
    for secret in (PASSWORD, ROOT_PASSWORD):
        assert secret not in log


def phone(srv: RunningServer, user: str, device_id: str, version: str = "14.1",
          device_type: str = "iPhone") -> RawDevice:
    ua = "Apple-iPad13C1/2104.252" if device_type == "iPad" else "Apple-iPhone15C2/2104.252"
    return RawDevice(srv.url, user, PASSWORD, device_id, version=version,
                     device_type=device_type, user_agent=ua)


def folder_names(dev: RawDevice) -> dict[str, str]:
    """FolderSync from 0: DisplayName -> Type of every folder the phone is given."""
    r = dev.call("FolderSync", FOLDERSYNC)
    assert r is not None and r.text_of("FolderHierarchy:Status") == "1", r
    return {a.text_of("FolderHierarchy:DisplayName") or "": a.text_of("FolderHierarchy:Type")
            or "" for a in r.iter("FolderHierarchy:Add")}


def sync_adds(dev: RawDevice, folder: str, key: str) -> tuple[str, list[str]]:
    """One Sync: the new key and the FirstName of every Add the phone is sent."""
    r = dev.sync(folder, key)
    if r is None:                         # "nothing new" (MS-ASCMD 2.2.1.21)
        return key, []
    coll = collection(r)
    firsts = [(c.find("AirSync:ApplicationData") or Node("x")).text_of("Contacts:FirstName")
              or "" for c in coll.iter("AirSync:Add")]
    return coll.text_of("AirSync:SyncKey") or key, firsts


def login(b: Browser, user: str, password: str) -> None:
    b.open("/account/login")
    b.fill("username", user)
    b.fill("password", password)
    b.click(WORDS[b.lang]["log in"])
    b.wait_path("/account/")


def console_errors(b: Browser) -> list[str]:
    """What the browser logged as errors since the last call (a script error, a
    refused inline script or style, a resource that failed — the favicon too: the
    page names an empty one, so the browser asks for no /favicon.ico)."""
    return [e["message"] for e in b.driver.get_log("browser") if e["level"] == "SEVERE"]


PAGE_FAULTS = """
const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
return {
  duplicate_ids: ids.filter((x, i) => ids.indexOf(x) !== i),
  post_forms_without_csrf: [...document.querySelectorAll('form')].filter(
      f => f.method === 'post' && !f.querySelector('input[name=csrf]')).map(f => f.action),
  labels_of_nothing: [...document.querySelectorAll('label[for]')].filter(
      l => !document.getElementById(l.htmlFor)).map(l => l.htmlFor),
  fields_without_label: [...document.querySelectorAll(
      'input:not([type=hidden]):not([hidden]), select')].filter(
      i => !(i.labels && i.labels.length)).map(i => i.name),
};"""


def look(b: Browser, name: str) -> None:
    """A screenshot of the page, which must have no fault a browser sees: every POST
    form carries its CSRF token, ids are unique, every field has its label."""
    b.shot(name)
    faults = b.driver.execute_script(PAGE_FAULTS)
    assert not any(faults.values()), (name, faults)


def logout(b: Browser) -> None:
    assert console_errors(b) == []
    b.click(WORDS[b.lang]["log out"])
    b.wait_path("/account/login")


def card(b: Browser, card_id: str) -> str:
    return b.driver.find_element(By.ID, card_id).text


def row(b: Browser, card_id: str, row_text: str) -> str:
    """The text of the list row (``li``) of card ``card_id`` that mentions ``row_text``."""
    return b.driver.find_element(
        By.XPATH, f"//section[@id='{card_id}']//li[contains(normalize-space(), "
                  f"'{row_text}')]").text


def in_row(b: Browser, scope: str, row_text: str, label: str) -> Any:
    """The button or link ``label`` in the list row (``li``) of ``scope`` (an XPath)
    that mentions ``row_text``."""
    return b.driver.find_element(
        By.XPATH, f"{scope}//li[contains(normalize-space(), '{row_text}')]"
                  f"//*[self::button or self::a][normalize-space()='{label}']")


def test_issue14_controls_in_a_browser(world: World) -> None:
    srv, b = world.srv, world.b
    t0 = time.monotonic()

    # The phones: anna's 16.1 phone with three contacts, her 14.1 phone, bob's phone,
    # and anna's new iPad, quarantined by the rule.
    a16 = phone(srv, "anna", "ANNA161", version="16.1")
    a14 = phone(srv, "anna", "ANNA141")
    bob = phone(srv, "bob", "BOBPHONE")
    pad = phone(srv, "anna", "ANNAPAD", device_type="iPad")
    pad2 = phone(srv, "anna", "ANNAPAD2", device_type="iPad")
    # anna's own policy over the server's: a passcode, and a lock after two minutes
    srv.admin("policy", "set", "anna", "DevicePasswordEnabled=1", "MinDevicePasswordLength=6",
              "MaxInactivityTimeDeviceLock=120")
    for dev in (a16, bob, pad, pad2):
        dev.provision()
    # the policy document her phone is given (EASProvisionDoc, MS-ASPROV 2.2.2.28;
    # MaxInactivityTimeDeviceLock 2.2.2.36)
    got = handshake(a14)
    assert (got["DevicePasswordEnabled"], got["MinDevicePasswordLength"],
            got["MaxInactivityTimeDeviceLock"]) == ("1", "6", "120")
    contacts = a16.folders()["Contacts"]
    a14.folders()
    bobs_calendar = bob.folders()["Calendar"]
    srv.admin("share", "add", "bob", bobs_calendar, "--to", "anna")
    key = a16.initial(contacts)
    r = a16.sync(contacts, key, commands(add("c1", "Bice", "Rossi"), add("c2", "Ciro", "Verdi"),
                                         add("c3", "Dino", "Neri")))
    coll = collection(r)
    key = coll.text_of("AirSync:SyncKey") or key
    ids = {resp.text_of("AirSync:ClientId"): resp.text_of("AirSync:ServerId")
           for resp in coll.iter("AirSync:Add")}
    # the phone deletes two of them
    coll = collection(a16.sync(contacts, key, commands(delete(ids["c1"] or ""),
                                                       delete(ids["c2"] or ""))))
    key = coll.text_of("AirSync:SyncKey") or key
    for dev in (pad, pad2):
        assert raw_status(dev, "FolderSync", FOLDERSYNC)[:2] == (200, "129")

    # 1. anna logs in: her devices with their access, the policy card, the shares.
    login(b, "anna", PASSWORD)
    a161, a141 = row(b, "devices", "ANNA161"), row(b, "devices", "ANNA141")
    assert re.search(r"Access\s+allowed", a161) and re.search(r"Access\s+allowed", a141)
    assert re.search(r"Access\s+in quarantine", row(b, "devices", "ANNAPAD"))
    # the account-only wipe: possible on the 16.1 phone only
    assert re.search(r"Account-only wipe\s+possible", a161), a161
    assert re.search(r"Account-only wipe\s+not possible \(needs EAS 16\.1\)", a141), a141
    policy = card(b, "policy")
    assert policy.startswith("Device policy"), policy
    assert "passcode required (any), at least 6 characters" in policy, policy
    assert "locks after 120 seconds without use" in policy, policy
    assert not b.driver.find_elements(By.CSS_SELECTOR, "#policy form")  # read-only
    sharing = card(b, "sharing")
    assert "You share no folder." in sharing
    assert re.search("Calendar \u2014 bob\\s+from bob, read only", sharing), sharing
    look(b, "01-overview")

    # 2. She shares her contacts with bob, read only: his phone lists them.
    assert "Contacts \u2014 anna" not in folder_names(bob)
    Select(b.driver.find_element(By.ID, "share-folder")).select_by_value(contacts)
    b.fill("to", "bob")
    Select(b.driver.find_element(By.ID, "share-access")).select_by_value("read")
    b.click("Share")
    assert "Shared with bob" in b.text()
    sharing = card(b, "sharing")
    assert re.search(r"Contacts → bob\s+contacts, read only", sharing), sharing
    look(b, "02-shared")
    assert folder_names(bob).get("Contacts \u2014 anna") == "14"

    # In Italian (the browser's language): the shares card, and the "Recently deleted"
    # form's field, whose label must not read "deleted by" (the device is chosen above it).
    it = Browser(f"https://{srv.host}", world.shots / "issue14-it", "it")
    try:
        login(it, "anna", PASSWORD)
        sharing = card(it, "sharing")
        assert sharing.startswith("Cartelle condivise"), sharing
        assert re.search(r"Contacts → bob\s+contatti, sola lettura", sharing), sharing
        assert re.search("Calendar \u2014 bob\\s+da bob, sola lettura", sharing), sharing
        look(it, "07-sharing-it")
        it.click("Vedi gli elementi eliminati di recente")
        it.wait_path("/account/deleted")
        assert "Bice Rossi · Contatti" in it.text()
        since = it.driver.find_element(By.XPATH, "//label[@for='since']").text
        assert since == "Eliminati a partire da", since
        look(it, "08-deleted-it")
        assert console_errors(it) == []
    finally:
        it.quit()

    # 3. Recently deleted: the two contacts her phone deleted; one restored by its button
    #    comes back to the phone.
    b.click("See recently deleted items")
    b.wait_path("/account/deleted")
    text = b.text()
    assert "Bice" in text and "Ciro" in text and "Dino" not in text
    assert text.count("ANNA161") >= 2
    look(b, "03-deleted")
    b.press(in_row(b, "", "Bice", "Restore"))
    b.wait_path("/account/deleted")
    assert "1 item restored" in b.text()
    assert "Bice" not in b.text().split("Restore everything")[0]
    key, back = sync_adds(a16, contacts, key)
    assert back == ["Bice"]
    b.open("/account/")

    # 4. She stops sharing: the folder leaves bob's phone.
    b.press(in_row(b, "//section[@id='sharing']", "Contacts → bob", "Stop sharing"))
    assert "No longer shared with bob" in b.text()
    assert "Contacts \u2014 anna" not in folder_names(bob)
    logout(b)

    # 5. The administrator: "Devices in quarantine", Allow lets the iPad in; anna's
    #    "Recently deleted" restored with "everything this device deleted since".
    login(b, "root", ROOT_PASSWORD)
    b.click("Users")
    b.wait_path("/account/admin")
    quarantine = card(b, "quarantine")
    assert "ANNAPAD2" in quarantine and "ANNA161" not in quarantine
    look(b, "04-admin-quarantine")
    b.press(in_row(b, "//section[@id='quarantine']", "ANNAPAD ", "Allow"))
    assert "ANNAPAD of anna allowed" in b.text()
    assert "Contacts" in folder_names(pad)
    b.press(in_row(b, "//section[@id='quarantine']", "ANNAPAD2", "Block"))
    assert "ANNAPAD2 of anna blocked" in b.text()
    assert "No device is waiting." in card(b, "quarantine")
    assert raw_status(pad2, "FolderSync", FOLDERSYNC)[:2] == (200, "129")
    listed = {line.split()[1]: line.split()
              for line in srv.admin("device", "list", "anna").stdout.splitlines()[1:]}
    assert "blocked" in listed["ANNAPAD2"] and "allowed" in listed["ANNAPAD"]
    b.click("Users")
    b.wait_path("/account/admin")
    b.press(b.driver.find_element(By.XPATH, "//a[@href='/account/deleted?user=anna']"))
    b.wait_path("/account/deleted")
    assert "Ciro" in b.text() and "Bice" not in b.text()
    Select(b.driver.find_element(By.ID, "device")).select_by_value("ANNA161")
    b.fill("since", "1h")
    b.press(b.driver.find_element(
        By.XPATH, "//form[.//input[@name='since']]//button[normalize-space()='Restore']"))
    assert "1 item restored" in b.text(), b.text()
    assert "Nothing deleted recently." in b.text()
    look(b, "05-admin-restored")
    key, back = sync_adds(a16, contacts, key)
    assert back == ["Ciro"]
    logout(b)

    # 6. anna blocks her 14.1 phone: refused with Status 129 from then on.
    login(b, "anna", PASSWORD)
    assert raw_status(a14, "FolderSync", FOLDERSYNC)[:2] == (200, "1")
    b.press(in_row(b, "//section[@id='devices']", "ANNA141", "Block…"))
    b.wait_path("/account/devices/block")
    assert "nothing on it is erased" in b.text()
    b.click("Block this device")
    assert "Device ANNA141 blocked" in b.text()
    assert re.search(r"Access\s+blocked", row(b, "devices", "ANNA141"))
    assert raw_status(a14, "FolderSync", FOLDERSYNC)[:2] == (200, "129")

    # 7. The wipe page of the 16.1 phone: the account-only wipe first; the full wipe in
    #    a second form, its box not ticked.
    b.press(in_row(b, "//section[@id='devices']", "ANNA161", "Wipe…"))
    b.wait_path("/account/devices/wipe")
    forms = b.driver.find_elements(By.XPATH, "//form[@action='/account/devices/wipe']")
    assert [f.find_element(By.NAME, "kind").get_attribute("value") for f in forms] == [
        "account", "full"]
    assert forms[0].find_element(By.TAG_NAME, "button").text == \
        "Wipe this account from the device"
    assert not forms[0].find_elements(By.NAME, "sure")
    box = forms[1].find_element(By.NAME, "sure")
    assert box.get_attribute("type") == "checkbox" and not box.is_selected()
    look(b, "06-wipe")
    # the full wipe without the box ticked: refused on the page, nothing ordered
    assert console_errors(b) == []
    b.click("Wipe the whole device")
    # (the refusal is a 400, which the browser logs)
    assert all("status of 400" in m for m in console_errors(b))
    assert "Tick the box to confirm that the whole device is to be erased." in b.text()
    assert raw_status(a16, "FolderSync", FOLDERSYNC)[:2] == (200, "1")
    b.click("Wipe this account from the device")
    assert "Wipe of this account's data requested for ANNA161" in b.text()
    assert re.search(r"Wipe\s+requested", row(b, "devices", "ANNA161"))
    assert raw_status(a16, "FolderSync", FOLDERSYNC)[:2] == (200, "140")
    answer = a16.post("Provision", bytes.fromhex("03016a00000e45") + b"\x01")  # <Provision/>
    body = decode(answer.content)
    assert body.find("Provision:AccountOnlyRemoteWipe") is not None
    assert body.find("Provision:RemoteWipe") is None
    # the phone acknowledges it (MS-ASPROV 3.1.5.2; libwbxml 0.11 has no token for it:
    # page 14, Provision / AccountOnlyRemoteWipe / Status "1"): the page says it is done
    ack = bytes.fromhex("03016a00000e45") + bytes([0x7B, 0x4B, 0x03]) + b"1\x00\x01\x01\x01"
    assert decode(a16.post("Provision", ack).content).findtext("Provision:Status") == "1"
    b.open("/account/")
    assert re.search(r"Wipe\s+done", row(b, "devices", "ANNA161"))

    assert console_errors(b) == []

    took = time.monotonic() - t0
    print(f"issue-14 browser flow: {took:.1f}s")
    assert took < 60          # (about 17 s alone; the budget of tests/test_account_browser.py)
