"""The raw-WBXML calendar end-to-end suite again, on a PostgreSQL database.

Every test of ``test_e2e_calendar_raw`` (a recurring meeting with exceptions, an
attendee and a timezone, an all-day event, changes and deletes across devices at 14.1
and 16.1; a re-sent Sync) is collected here a second time against ``twistd easync
--db postgresql://…`` on a fresh database.  Skipped, with the reason, when PostgreSQL
or libwbxml2-utils is missing (with CI=true: failed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_e2e_calendar_raw as suite
from easync_server import RunningServer
from pgtest import started_pg_server, suite_tests

pytestmark = suite.pytestmark

# The SQLite suite's tests, run here with this module's ``server`` fixture.
globals().update(suite_tests(suite))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with started_pg_server(tmp_path_factory, "cal") as srv:
        # the same users as the SQLite suite's fixture
        srv.add_user("dana", suite.PASSWORD, email="dana@example.org")
        srv.add_user("eve", suite.PASSWORD, email="eve@example.org")
        yield srv
