"""Acceptance: the whole vtenext flow in a real browser (Debian ``chromium``, headless,
driven through ``chromedriver`` with Selenium) against ``twistd easync`` over TLS.

An administrator turns two-factor authentication on for a user on the account page; the
user logs in there with the password and the code read from a real SMTP listener (a
separate process started by the test), sets an ActiveSync password; a phone
(pyactivesync) then syncs with it and is refused with the login password.

Screenshots of the key pages, at a phone's viewport (390×844), are written to
``$EASYNC_SCREENSHOTS`` when set (else to the test's temporary directory).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import needs
import pytest

needs.importable("pyactivesync")
webdriver = needs.importable("selenium.webdriver")

import requests
from easync_server import REPO, RunningServer, free_port
from pyactivesync import Client
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [needs.mark(needs.chromium()), pytest.mark.timeout(120)]

ADMIN_PASSWORD = "admin login pw 1"
USER_PASSWORD = "mario login pw 1"
AS_PASSWORD = "Telefono-Mario-42"


class Mailbox:
    """The SMTP listener: ``tests/smtp_sink.py`` in its own process, one file a mail."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "mail"
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "smtp_sink.py"), str(self.port),
             str(self.dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if line != "ready":
            raise RuntimeError(f"SMTP listener did not start: {line}")

    def count(self) -> int:
        return len(list(self.dir.glob("*.eml")))

    def code_for(self, to: str, after: int, timeout: float = 15.0) -> str:
        """The code of the first message to ``to`` after the first ``after`` ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in sorted(self.dir.glob("*.eml"))[after:]:
                msg = message_from_bytes(path.read_bytes(), policy=policy.default)
                if to in str(msg["To"]):
                    body = msg.get_body(preferencelist=("plain",)).get_content()
                    for word in body.replace(".", " ").split():
                        if len(word) == 6 and word.isdigit():
                            return word
            time.sleep(0.1)
        raise AssertionError(f"no code mailed to {to} within {timeout} s")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class Browser:
    """Headless Chromium with a phone-sized window."""

    def __init__(self, base: str, shots: Path) -> None:
        from selenium.webdriver.chrome.service import Service

        self.base = base
        self.shots = shots
        self.profile = tempfile.mkdtemp(prefix="easync-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
                    "--window-size=390,844",
                    # easync's own self-signed certificate (a phone's user accepts it once)
                    "--ignore-certificate-errors"):
            opts.add_argument(arg)
        # A phone's viewport (headless windows are at least 500 pixels wide).
        opts.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0}})
        self.driver = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
        self.driver.set_page_load_timeout(30)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def fill(self, name: str, value: str) -> None:
        field = self.driver.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)

    def click(self, label: str) -> None:
        """Click a button or link and wait for the next page to load."""
        self.press(self.driver.find_element(
            By.XPATH, f"//button[normalize-space()='{label}'] | "
                      f"//a[normalize-space()='{label}']"))

    def press(self, element: Any) -> None:
        # The page being left carries a mark; the next one (a new window object) does not.
        self.driver.execute_script("window.easyncOldPage = true;")
        element.click()

        def loaded(d: Any) -> bool:
            try:
                return bool(d.execute_script(
                    "return !window.easyncOldPage && document.readyState === 'complete';"))
            except WebDriverException:      # between two documents
                return False
        WebDriverWait(self.driver, 15).until(loaded)

    def wait_path(self, path: str) -> None:
        WebDriverWait(self.driver, 15).until(
            lambda d: d.current_url.split("?")[0].split("#")[0] == self.base + path)

    def text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def shot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))

    def cookies(self) -> list[dict[str, Any]]:
        return self.driver.get_cookies()

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture()
def world(tmp_path: Path) -> Iterator[tuple[RunningServer, Mailbox, Browser]]:
    mail = Mailbox(tmp_path)
    srv = RunningServer(tmp_path, args=[
        "--smtp-host", "127.0.0.1", "--smtp-port", str(mail.port),
        "--smtp-from", "easync@example.test", "--login-delay", "0"])
    browser = None
    try:
        srv.start()
        srv.add_user("root", ADMIN_PASSWORD, email="root@example.test")
        srv.admin("user", "admin", "root", "on")
        srv.add_user("mario", USER_PASSWORD, email="mario@example.test")
        shots = Path(os.environ.get("EASYNC_SCREENSHOTS") or tmp_path / "screenshots")
        browser = Browser(f"https://{srv.host}", shots)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
            yield srv, mail, browser
    finally:
        if browser is not None:
            browser.quit()
        srv.stop()
        mail.stop()


def eas_client(srv: RunningServer, password: str, device: str) -> Client:
    return Client(srv.host, "mario", password, device_id=device, timeout=30)


def test_vtenext_flow_in_a_browser(world: tuple[RunningServer, Mailbox, Browser]) -> None:
    srv, mail, b = world
    t0 = time.monotonic()

    # Before: 2FA off, no ActiveSync password: the login password syncs.
    with eas_client(srv, USER_PASSWORD, "PHONEBEFORE") as phone:
        assert any(f.name == "Contacts" for f in phone.list_folders())

    # 1. The administrator logs in and turns 2FA (e-mail codes) on for mario.
    b.open("/account/")
    b.wait_path("/account/login")
    b.shot("01-login")
    b.fill("username", "root")
    b.fill("password", ADMIN_PASSWORD)
    b.click("Log in")
    b.wait_path("/account/")
    session = next(c for c in b.cookies() if c["name"] == "easync_account")
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    b.click("Users")
    b.wait_path("/account/admin")
    b.shot("02-admin-users")
    Select(b.driver.find_element(By.ID, "m-mario")).select_by_value("email")
    b.press(b.driver.find_element(By.XPATH, "//form[.//select[@id='m-mario']]//button"))
    b.wait_path("/account/admin/2fa")
    assert "requires a dedicated ActiveSync password" in b.text()
    b.shot("03-admin-2fa-confirm")
    b.click("OK")                         # leave the ActiveSync password to mario
    b.wait_path("/account/admin")
    assert "EAS refuses this user until an ActiveSync password is set" in b.text()
    b.click("Log out")
    b.wait_path("/account/login")

    # 2FA on and no ActiveSync password: EAS refuses mario, login password or not.
    with eas_client(srv, USER_PASSWORD, "PHONEREFUSED") as phone, \
            pytest.raises(requests.HTTPError) as refused:
        phone.list_folders()
    assert refused.value.response.status_code == 401

    # 2. mario logs in with the password and the code the SMTP listener received.
    before = mail.count()
    b.fill("username", "mario")
    b.fill("password", USER_PASSWORD)
    b.click("Log in")
    b.wait_path("/account/login/code")
    assert "m***@example.test" in b.text()
    b.shot("04-code")
    code = mail.code_for("mario@example.test", before)
    b.fill("code", "000000" if code != "000000" else "111111")
    b.click("Verify")
    assert "Wrong code" in b.text()
    b.fill("code", code)
    b.click("Verify")
    b.wait_path("/account/")
    assert "phones are refused until you set one" in b.text()
    b.shot("05-overview-refused")

    # 3. He sets an ActiveSync password (new + confirm; a mismatch is refused first).
    b.click("See and change the ActiveSync password")
    b.wait_path("/account/as-password")
    b.fill("new", AS_PASSWORD)
    b.fill("confirm", AS_PASSWORD + "x")
    b.click("Save")
    assert "do not match" in b.text() or "differ" in b.text()
    b.fill("new", AS_PASSWORD)
    b.fill("confirm", AS_PASSWORD)
    b.click("Save")
    b.wait_path("/account/as-password")
    assert "Your ActiveSync password is set" in b.text()
    assert AS_PASSWORD not in b.driver.page_source
    b.shot("06-as-password-set")

    # 4. The phone syncs with the ActiveSync password, and is refused with the login one.
    with eas_client(srv, AS_PASSWORD, "MARIOPHONE") as phone:
        folders = {f.name: f.id for f in phone.list_folders()}
        key = phone.sync_folder(folders["Contacts"], "0").sync_key
        assert phone.sync_folder(folders["Contacts"], key).sync_key
    with eas_client(srv, USER_PASSWORD, "MARIOPHONE2") as phone, \
            pytest.raises(requests.HTTPError) as refused:
        phone.list_folders()
    assert refused.value.response.status_code == 401

    # The page now shows the password's last use and the device.
    b.open("/account/")
    text = b.text()
    assert re.search(r"Last used\s+\d{4}-\d\d-\d\d [^\n]* by MARIOPHONE", text), text
    assert re.search(r"MARIOPHONE\s+Last sync\s+\d{4}-\d\d-\d\d", text), text
    b.shot("07-overview-synced")

    log = srv.log_text()
    for secret in (USER_PASSWORD, ADMIN_PASSWORD, AS_PASSWORD, code):
        assert secret not in log
    assert time.monotonic() - t0 < 60
