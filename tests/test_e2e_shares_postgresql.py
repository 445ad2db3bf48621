"""The shared-folder end-to-end suite (test_e2e_shares) again, with ``twistd easync
--db postgresql://…``: the share table, the owner's feed read by the colleague, the
read-only refusals and the wake-ups (LISTEN/NOTIFY: a NOTIFY per holder of the folder)
on PostgreSQL.  Skipped, with the reason, when PostgreSQL is not reachable (CI=true:
failed)."""

from __future__ import annotations

from collections.abc import Iterator

import needs
import pytest

needs.importable("pyactivesync")

import test_e2e_shares as suite
from easync_server import RunningServer, wait_for
from pgtest import started_pg_server, suite_tests

pytestmark = suite.pytestmark

# The SQLite suite's tests, run here with this module's ``server`` fixture.
globals().update(suite_tests(suite))
world = suite.world


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with started_pg_server(tmp_path_factory, "shares") as srv:
        yield srv


def test_the_server_really_uses_postgresql(server: RunningServer) -> None:
    assert server.db.startswith("postgresql://")
    # (the hub says so once it listens, which may come just after the port opens)
    assert wait_for(lambda: "PostgreSQL LISTEN/NOTIFY" in server.log_text())
