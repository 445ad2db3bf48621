"""Smart lockout end to end (issue #10 point 5): ``twistd easync`` over HTTPS, each client
on its own real source address (127.0.0.2, .3, ... of the loopback network), the
DeviceId in the request line as phones send it.

A phone syncs; an attacker elsewhere guesses; the phone keeps syncing (also after a
restart, when no checker remembers its password) while the attacker, even with the
right password, gets 429.  Then guesses for many users from one address (an office NAT)
lock the address out but not the phone behind it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
import rawclient
from easync_server import RunningServer
from requests.adapters import HTTPAdapter

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "right-password-1"
FOLDER_SYNC = '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'


class FromAddress(HTTPAdapter):
    """Connections made from one local source address."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source, 0)
        super().init_poolmanager(*args, **kwargs)


def device(srv: RunningServer, user: str, password: str, device_id: str, source: str
           ) -> rawclient.RawDevice:
    dev = rawclient.RawDevice(srv.url, user, password, device_id)
    dev.session.mount("https://", FromAddress(source))
    return dev


def status(dev: rawclient.RawDevice) -> int:
    """The HTTP status of a FolderSync (401/429: refused at the login)."""
    return dev.post("FolderSync", rawclient.xml_to_wbxml(FOLDER_SYNC)).status_code


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    work: Path = tmp_path_factory.mktemp("e2e-lockout")
    server = RunningServer(work, ["--login-delay", "0"]).start()
    try:
        for name in ("phil", "carl", "una", "vito", "wes", "xia", "yan"):
            server.add_user(name, PASSWORD, email=f"{name}@example.org")
        yield server
    finally:
        server.stop()


def test_a_familiar_phone_syncs_through_an_attackers_lockout(srv: RunningServer) -> None:
    """issue #10 point 5 (Exchange Online's smart lockout): after phil's phone (DeviceId
    PHILPHONE) synced, 15 wrong passwords from another address and DeviceId give 401 ten
    times (--lockout-after), then 429; the attacker's right password is 429 with
    Retry-After at most the first lockout (60 s); the phone still gets 200, also after a
    restart (its password remembered nowhere: checked again, the device found familiar in
    the database)."""
    phone = device(srv, "phil", PASSWORD, "PHILPHONE", "127.0.0.2")
    phone.provision()
    assert "Contacts" in phone.folders()
    evil = device(srv, "phil", "guess", "EVILDEVICE", "127.0.0.3")
    got = [status(evil) for _ in range(15)]
    assert got == [401] * 10 + [429] * 5
    evil.auth = ("phil", PASSWORD)
    r = evil.post("FolderSync", rawclient.xml_to_wbxml(FOLDER_SYNC))
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 60
    assert r.reason == "Too Many Requests"      # RFC 6585 section 4, not "Unknown Status"
    assert status(phone) == 200
    srv.stop()
    srv.start()
    assert status(phone) == 200
    assert status(evil) == 429
    # the phone from a new address: its DeviceId alone makes it familiar
    moved = device(srv, "phil", PASSWORD, "PHILPHONE", "127.0.0.4")
    moved.policy_key = phone.policy_key
    assert status(moved) == 200
    log = srv.log_text()
    assert "lockout" in srv.admin("audit", "phil").stdout
    assert PASSWORD not in log and "guess" not in log


def test_an_office_nat_lockout_spares_the_phone_behind_it(srv: RunningServer) -> None:
    """issue #10 point 5: 60 wrong guesses for five users from one address (the office
    NAT, 127.0.0.5) lock the address out after 50 (5 x --lockout-after); carl, whose
    phone (CARLPHONE) synced before from elsewhere, still syncs from behind that NAT,
    while a user with no familiar source there gets 429."""
    phone = device(srv, "carl", PASSWORD, "CARLPHONE", "127.0.0.6")
    phone.provision()
    names = ["una", "vito", "wes", "xia", "carl"]
    got = [status(device(srv, names[i % 5], f"guess-{i}", f"NAT{i}", "127.0.0.5"))
           for i in range(60)]
    assert got == [401] * 50 + [429] * 10
    behind = device(srv, "carl", PASSWORD, "CARLPHONE", "127.0.0.5")
    behind.policy_key = phone.policy_key
    assert status(behind) == 200
    assert status(device(srv, "yan", PASSWORD, "YANPHONE", "127.0.0.5")) == 429
    assert status(device(srv, "yan", PASSWORD, "YANPHONE", "127.0.0.7")) != 429
