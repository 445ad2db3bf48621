"""test_redteam2_state again with ``twistd easync --db postgresql://…`` (the sync
state's row locked in the write transaction).  Skipped, with the reason, when
PostgreSQL is not reachable (CI=true: failed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_redteam2_state as suite
from easync_server import RunningServer
from pgtest import started_pg_server, suite_tests

pytestmark = suite.pytestmark

globals().update(suite_tests(suite))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with started_pg_server(tmp_path_factory, "redteam2state") as srv:
        yield srv


def test_the_server_really_uses_postgresql(server: RunningServer) -> None:
    assert server.db.startswith("postgresql://")
