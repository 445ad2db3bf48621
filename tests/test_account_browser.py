"""Acceptance: the whole vtenext flow in a real browser (Debian ``chromium``, headless,
driven through ``chromedriver`` with Selenium) against ``twistd easync`` over TLS.

An administrator turns two-factor authentication on for a user on the account page; the
user logs in there with the password and the code read from a real SMTP listener (a
separate process started by the test), sets an ActiveSync password; a phone
(pyactivesync) then syncs with it and is refused with the login password.

The flow runs twice: in English, and in Italian with the browser's language set to
Italian (``--lang=it`` and its Accept-Language), the page's words then being vtenext's
("Password ActiveSync", "Verifica", …), the e-mailed code Italian too (issue 13 point 9).

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

# What the flow clicks and reads, in each language (the Italian is the catalogue's,
# written out here so that a changed translation is seen).
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "log in": "Log in", "users": "Users", "ok": "OK", "log out": "Log out",
        "verify": "Verify", "save": "Save",
        "see": "See and change the ActiveSync password",
        "needs as": "requires a dedicated ActiveSync password",
        "eas refuses": "EAS refuses this user until an ActiveSync password is set",
        "wrong code": "Wrong code (4 tries left).",
        "phones refused": "phones are refused until you set one",
        "mismatch": "The new password and its confirmation differ.",
        "is set": "Your ActiveSync password is set",
        "last used": r"Last used\s+\d{4}-\d\d-\d\d [^\n]* by MARIOPHONE",
        # (between the device and its last sync: its access, "Access allowed")
        "last sync": r"MARIOPHONE\s+(?:\S+\s+){0,3}?Last sync\s+\d{4}-\d\d-\d\d",
        "subject": "Your easync security code",
    },
    "it": {
        "log in": "Accedi", "users": "Utenti", "ok": "OK", "log out": "Esci",
        "verify": "Verifica", "save": "Salva",
        "see": "Vedi e modifica la Password ActiveSync",
        "needs as": "Attivando l'autenticazione a 2 fattori è necessario impostare una "
                    "password dedicata per ActiveSync.",
        "eas refuses": "EAS rifiuta questo utente finché non viene impostata una Password "
                       "ActiveSync",
        "wrong code": "Codice errato (4 tentativi rimasti).",
        "phones refused": "i dispositivi mobili vengono rifiutati finché non ne imposti una",
        "mismatch": "La nuova password e la conferma non coincidono.",
        "is set": "La tua Password ActiveSync è impostata",
        "last used": r"Ultimo utilizzo\s+\d{4}-\d\d-\d\d [^\n]* da MARIOPHONE",
        "last sync": r"MARIOPHONE\s+(?:\S+\s+){0,3}?Ultima sincronizzazione\s+\d{4}-\d\d-\d\d",
        "subject": "Il tuo codice di sicurezza easync",
    },
}


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
                    self.subject = str(msg["Subject"])
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

    def __init__(self, base: str, shots: Path, lang: str = "en") -> None:
        from selenium.webdriver.chrome.service import Service

        self.base = base
        self.shots = shots
        self.lang = lang
        self.profile = tempfile.mkdtemp(prefix="easync-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", f"--user-data-dir={self.profile}",
                    "--window-size=390,844",
                    # easync's own self-signed certificate (a phone's user accepts it once)
                    "--ignore-certificate-errors", f"--lang={lang}"):
            opts.add_argument(arg)
        # The Accept-Language the browser sends (--lang alone does not set it headless).
        opts.add_experimental_option("prefs", {"intl.accept_languages": lang})
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


@pytest.fixture(params=["en", "it"])
def world(request: pytest.FixtureRequest, tmp_path: Path
          ) -> Iterator[tuple[RunningServer, Mailbox, Browser]]:
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
        browser = Browser(f"https://{srv.host}", shots / request.param, request.param)
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
    w = WORDS[b.lang]
    t0 = time.monotonic()

    # Before: 2FA off, no ActiveSync password: the login password syncs.
    with eas_client(srv, USER_PASSWORD, "PHONEBEFORE") as phone:
        assert any(f.name == "Contacts" for f in phone.list_folders())

    # 1. The administrator logs in and turns 2FA (e-mail codes) on for mario.
    b.open("/account/")
    b.wait_path("/account/login")
    # the page speaks the browser's language
    assert b.driver.execute_script("return document.documentElement.lang") == b.lang
    b.shot("01-login")
    b.fill("username", "root")
    b.fill("password", ADMIN_PASSWORD)
    b.click(w["log in"])
    b.wait_path("/account/")
    session = next(c for c in b.cookies() if c["name"] == "easync_account")
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    b.click(w["users"])
    b.wait_path("/account/admin")
    b.shot("02-admin-users")
    Select(b.driver.find_element(By.ID, "m-mario")).select_by_value("email")
    b.press(b.driver.find_element(By.XPATH, "//form[.//select[@id='m-mario']]//button"))
    b.wait_path("/account/admin/2fa")
    assert w["needs as"] in b.text()
    b.shot("03-admin-2fa-confirm")
    b.click(w["ok"])                      # leave the ActiveSync password to mario
    b.wait_path("/account/admin")
    assert w["eas refuses"] in b.text()
    b.click(w["log out"])
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
    b.click(w["log in"])
    b.wait_path("/account/login/code")
    assert "m***@example.test" in b.text()
    b.shot("04-code")
    code = mail.code_for("mario@example.test", before)
    assert mail.subject == w["subject"]          # the e-mail speaks the page's language
    b.fill("code", "000000" if code != "000000" else "111111")
    b.click(w["verify"])
    assert w["wrong code"] in b.text()
    b.fill("code", code)
    b.click(w["verify"])
    b.wait_path("/account/")
    assert w["phones refused"] in b.text()
    b.shot("05-overview-refused")

    # 3. He sets an ActiveSync password (new + confirm; a mismatch is refused first).
    b.click(w["see"])
    b.wait_path("/account/as-password")
    b.fill("new", AS_PASSWORD)
    b.fill("confirm", AS_PASSWORD + "x")
    b.click(w["save"])
    assert w["mismatch"] in b.text()
    b.fill("new", AS_PASSWORD)
    b.fill("confirm", AS_PASSWORD)
    b.click(w["save"])
    b.wait_path("/account/as-password")
    assert w["is set"] in b.text()
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
    assert re.search(w["last used"], text), text
    assert re.search(w["last sync"], text), text
    b.shot("07-overview-synced")

    log = srv.log_text()
    for secret in (USER_PASSWORD, ADMIN_PASSWORD, AS_PASSWORD, code):
        assert secret not in log
    assert time.monotonic() - t0 < 60
