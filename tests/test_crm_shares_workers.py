"""The CRM shared-calendar acceptance test (test_crm_shares_e2e) again, with
``twistd easync --backend crm --workers 2`` on PostgreSQL: the phones' requests land
on either process, the CRM is polled by one of them (the poller's advisory lock), and
a CRM change of mario's event must still wake anna's Ping held on the other (the
poller publishes to every holder of the shared folder through LISTEN/NOTIFY).
Skipped, with the reason, when PostgreSQL is not reachable (CI=true: failed)."""

from __future__ import annotations

from collections.abc import Iterator

import needs
import pytest
import test_crm_shares_e2e as suite
from easync_server import RunningServer, wait_for
from pgtest import fresh_database, pg_server, suite_tests, unreachable
from test_e2e_crm import FakeCrmProcess

pytestmark = suite.pytestmark

globals().update(suite_tests(suite))
crm = suite.crm


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, crm: FakeCrmProcess
           ) -> Iterator[RunningServer]:
    needs.require(unreachable())
    work = tmp_path_factory.mktemp("easync-crm-shares-workers")
    (work / "crm.key").write_text("adminKEY123\n")
    with fresh_database("crmshareworkers") as url:
        srv = pg_server(work, url, [
            "--workers", "2", "--backend", "crm", "--crm-url", crm.url,
            "--crm-user", "admin", "--crm-access-key-file", str(work / "crm.key"),
            "--crm-poll-interval", str(suite.POLL), "--crm-timeout", "3"])
        srv.start()
        try:
            for name in ("mario", "anna"):
                srv.add_user(name, suite.PASSWORD, email=f"{name}@example.org")
            wait_for(lambda: "this process polls the CRM now" in srv.log_text(), 20)
            yield srv
        finally:
            srv.stop()
