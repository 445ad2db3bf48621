"""test_redteam2_state again with ``twistd easync --backend crm`` against the fake CRM
in its own process: eight identical Syncs of one device at once (MS-ASCMD 3.1.5.3: a
resend is answered as before, nothing applied twice) make ONE record in the CRM, not
one per request — the requests that find the state replaced are refused before they
send anything to the CRM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_redteam2_state as suite
from easync_server import RunningServer
from test_e2e_crm import FakeCrmProcess

pytestmark = suite.pytestmark


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCrmProcess]:
    proc = FakeCrmProcess(tmp_path_factory.mktemp("crm"), flavour="vtiger")
    proc("add_user", name="rita", email="rita@example.org")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, crm: FakeCrmProcess
           ) -> Iterator[RunningServer]:
    work = tmp_path_factory.mktemp("redteam2-state-crm")
    (work / "crm.key").write_text("adminKEY123\n")
    srv = RunningServer(work, ["--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                               "--crm-access-key-file", str(work / "crm.key"),
                               "--crm-poll-interval", "0.3", "--crm-timeout", "5"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_the_same_sync_sent_eight_times_at_once_makes_one_crm_record(
        server: RunningServer, crm: FakeCrmProcess) -> None:
    suite.test_the_same_sync_sent_eight_times_at_once_adds_one_contact(server)
    assert [r["firstname"] for r in crm("live", module="Contacts", owner="rita")] == \
        ["Racer"]
