"""The issue-14 red-team end-to-end suite (test_issue14_redteam) again, with ``twistd
easync --db postgresql://…``: the same hostile and careless uses, the wake-ups through
LISTEN/NOTIFY.  Skipped, with the reason, when PostgreSQL is not reachable (CI=true:
failed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_issue14_redteam as suite
from easync_server import RunningServer, wait_for
from pgtest import started_pg_server, suite_tests

pytestmark = suite.pytestmark

# The SQLite suite's tests, run here with this module's ``server`` fixture.
globals().update(suite_tests(suite))
world = suite.world


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with started_pg_server(tmp_path_factory, "redteam") as srv:
        yield srv


def test_the_server_really_uses_postgresql(server: RunningServer) -> None:
    assert server.db.startswith("postgresql://")
    # (the hub says so once it listens, which may come just after the port opens)
    assert wait_for(lambda: "PostgreSQL LISTEN/NOTIFY" in server.log_text())
