"""test_redteam2_state again with ``twistd easync --backend crm`` against the fake CRM
in its own process: eight identical Syncs of one device at once (MS-ASCMD 3.1.5.3: a
resend is answered as before, nothing applied twice) make ONE record in the CRM, not
one per request — the requests that find the state replaced are refused before they
send anything to the CRM."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_redteam2_state as suite
from backendsites import started
from easync_server import RunningServer
from test_e2e_crm import FakeCrmProcess

pytestmark = suite.pytestmark


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[RunningServer, FakeCrmProcess]]:
    with started(tmp_path_factory, "crm", "redteam2-state") as (srv, crm):
        assert crm is not None
        crm("add_user", name="rita", email="rita@example.org")   # (easync's: by the test)
        yield srv, crm


def test_the_same_sync_sent_eight_times_at_once_makes_one_crm_record(
        site: tuple[RunningServer, FakeCrmProcess]) -> None:
    server, crm = site
    suite.test_the_same_sync_sent_eight_times_at_once_adds_one_contact(server)
    assert [r["firstname"] for r in crm("live", module="Contacts", owner="rita")] == \
        ["Racer"]
