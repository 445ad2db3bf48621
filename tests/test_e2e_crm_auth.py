"""Acceptance: ``twistd easync --backend crm --auth crm``: the CRM password (vtenext
``login_pwd``) under the same ActiveSync-password and 2FA rules as local accounts, and
a CRM that cannot answer gives 503, never 401."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import needs
import pytest
from easync_server import RunningServer
from rawclient import RawDevice, xml_to_wbxml
from test_e2e_crm import FakeCrmProcess

pytestmark = needs.mark(needs.libwbxml())

FOLDERSYNC = '<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>'
CRM_PW = {"dana": "dana-crm-pw", "erin": "erin-crm-pw", "finn": "finn-crm-pw"}


@dataclass
class Setup:
    crm: FakeCrmProcess
    server: RunningServer


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work: Path = tmp_path_factory.mktemp("crm-auth")
    crm = FakeCrmProcess(work)
    for name, pw in CRM_PW.items():
        crm("add_user", name=name, password=pw, email=f"{name}@example.org")
    (work / "crm.key").write_text("adminKEY123\n")
    srv = RunningServer(work, ["--backend", "crm", "--auth", "crm", "--crm-url", crm.url,
                               "--crm-user", "admin", "--crm-access-key-file",
                               str(work / "crm.key"), "--crm-poll-interval", "0.5",
                               "--crm-timeout", "2", "--login-delay", "0"])
    srv.start()
    yield Setup(crm, srv)
    srv.stop()
    crm.stop()


def status(setup: Setup, user: str, password: str, dev: str = "authdev") -> int:
    """The HTTP status of a FolderSync with these credentials (after provisioning when
    they are accepted)."""
    d = RawDevice(setup.server.url, user, password, dev)
    r = d.post("FolderSync", xml_to_wbxml(FOLDERSYNC))
    if r.status_code in (200, 449):
        d.provision()
        return 200
    return r.status_code


def admin(setup: Setup, *args: str, stdin: str | None = None) -> None:
    setup.server.admin(*args, stdin=stdin)


def test_crm_password_then_activesync_password(setup: Setup) -> None:
    # first login with the CRM password: a local record, ActiveSync off (as for LDAP)
    assert status(setup, "dana", CRM_PW["dana"]) == 403
    assert status(setup, "dana", "wrong") == 401
    admin(setup, "user", "activesync", "dana", "on")
    assert status(setup, "dana", CRM_PW["dana"]) == 200
    assert status(setup, "EXAMPLE\\dana", CRM_PW["dana"], "authdev2") == 200
    # an ActiveSync password set: only it is accepted, never the CRM password
    admin(setup, "user", "as-password", "dana", "--password-stdin", stdin="dana-AS-pass-1\n")
    assert status(setup, "dana", CRM_PW["dana"]) == 401
    assert status(setup, "dana", "dana-AS-pass-1") == 200
    # and the phone syncs the user's CRM records with it
    d = RawDevice(setup.server.url, "dana", "dana-AS-pass-1", "authsync")
    d.provision()
    assert {"Contacts", "Calendar", "Tasks"} <= set(d.folders())


def test_two_factor_makes_the_activesync_password_mandatory(setup: Setup) -> None:
    assert status(setup, "erin", CRM_PW["erin"]) == 403
    admin(setup, "user", "activesync", "erin", "on")
    assert status(setup, "erin", CRM_PW["erin"]) == 200
    admin(setup, "user", "2fa", "erin", "totp", stdin="")
    assert status(setup, "erin", CRM_PW["erin"], "authdev3") in (401, 403)
    admin(setup, "user", "as-password", "erin", "--password-stdin", stdin="erin-AS-pass-2\n")
    assert status(setup, "erin", "erin-AS-pass-2", "authdev3") == 200
    assert status(setup, "erin", CRM_PW["erin"], "authdev4") == 401


def test_crm_down_is_503_not_401(setup: Setup) -> None:
    setup.crm("set", down=True)
    try:
        d = RawDevice(setup.server.url, "finn", CRM_PW["finn"], "authdown")
        r = d.post("FolderSync", xml_to_wbxml(FOLDERSYNC))
        assert r.status_code == 503 and r.headers.get("Retry-After")
    finally:
        setup.crm("set", down=False)
    assert status(setup, "finn", CRM_PW["finn"], "authdown") == 403   # known now, off
