"""Issue #10 point 7 through ``twistd easync --max-devices-per-user 2``: a new DeviceId
beyond the cap is refused with Status 177 MaximumDevicesReached (MS-ASCMD 2.2.2;
Provision's Status, MS-ASPROV 2.2.2.54.2, takes the common values), or HTTP 403 below
14.0 (MS-ASHTTP 2.2.2.1.1); nothing is stored for it; the known devices keep working;
``easync-admin device remove`` frees a slot; 20 new devices at once get 2 slots.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import needs
import pytest
import requests
from easync_server import RunningServer
from pgtest import fresh_database, pg_server, unreachable

from easync.wbxml import E, decode, encode

PASSWORD = "device-cap-pass-1"
pytestmark = pytest.mark.filterwarnings(
    "ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    args = ["--max-devices-per-user", "2"]
    with ExitStack() as stack:
        if request.param == "sqlite":
            srv = RunningServer(tmp_path_factory.mktemp("devcap"), args)
        else:
            needs.require(unreachable())
            url = stack.enter_context(fresh_database("devcap"))
            srv = pg_server(tmp_path_factory.mktemp("devcap-pg"), url, args)
        srv.start()
        srv.add_user("capu", PASSWORD, email="capu@example.org")
        srv.add_user("rush", PASSWORD, email="rush@example.org")
        yield srv
        srv.stop()
        log = srv.log_text()
        assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def post(srv: RunningServer, cmd: str, device: str, body: bytes, *, user: str = "capu",
         version: str = "14.1") -> requests.Response:
    return requests.post(
        srv.url, params={"Cmd": cmd, "User": user, "DeviceId": device,
                         "DeviceType": "iPhone"},
        headers={"MS-ASProtocolVersion": version,
                 "Content-Type": "application/vnd.ms-sync.wbxml"},
        data=body, auth=(user, PASSWORD), verify=False, timeout=30)


PROVISION = encode(E("Provision:Provision",
                     E("Settings:DeviceInformation", E("Settings:Set",
                                                       E("Settings:Model", "iPhone"))),
                     E("Provision:Policies", E("Provision:Policy", E(
                         "Provision:PolicyType", "MS-EAS-Provisioning-WBXML")))))
PROVISION_12 = encode(E("Provision:Provision", E("Provision:Policies", E(
    "Provision:Policy", E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML")))))
FOLDERSYNC = encode(E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", "0")))


def provision_status(srv: RunningServer, device: str, user: str = "capu") -> str | None:
    r = post(srv, "Provision", device, PROVISION, user=user)
    assert r.status_code == 200, r.status_code
    return decode(r.content).findtext("Provision:Status")


def devices(srv: RunningServer, user: str) -> list[str]:
    out = srv.admin("device", "list", user).stdout.splitlines()
    return sorted(line.split()[1] for line in out[1:] if line.strip())


def test_new_device_over_the_cap(server: RunningServer) -> None:
    """Issue #10 point 7: two devices provision; the third gets Provision and
    FolderSync Status 177 (14.1) or HTTP 403 (12.1), is not stored, is logged; the
    first two keep working; removing one (easync-admin) lets the third in."""
    assert provision_status(server, "CAPA") == "1"
    assert provision_status(server, "CAPB") == "1"
    assert provision_status(server, "CAPC") == "177"
    fs = post(server, "FolderSync", "CAPC", FOLDERSYNC)
    assert fs.status_code == 200
    assert decode(fs.content).findtext("FolderHierarchy:Status") == "177"
    assert post(server, "Provision", "CAPC", PROVISION_12, version="12.1").status_code == 403
    assert devices(server, "capu") == ["CAPA", "CAPB"]
    assert "capu CAPC Provision http=200 status=177" in server.log_text()
    assert "device cap: 2 devices, at most 2" in server.log_text()
    assert provision_status(server, "CAPA") == "1"          # known devices still work
    server.admin("device", "remove", "capu", "CAPA")
    assert provision_status(server, "CAPC") == "1"
    assert devices(server, "capu") == ["CAPB", "CAPC"]


def test_twenty_new_devices_at_once(server: RunningServer) -> None:
    """Issue #10 point 7: 20 new DeviceIds of one user provisioning at the same time
    with a cap of 2: exactly 2 are accepted and stored, 18 get Status 177."""
    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(lambda n: provision_status(server, f"RUSH{n:02}", "rush"),
                                 range(20)))
    assert sorted(statuses) == ["1", "1"] + ["177"] * 18, statuses
    assert len(devices(server, "rush")) == 2
