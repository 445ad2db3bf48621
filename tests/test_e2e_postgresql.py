"""The pyactivesync end-to-end suite again, with ``twistd easync --db postgresql://…``.

Every test of ``test_e2e_pyactivesync`` (provision, folders, a contact created, changed
and deleted across devices, GetItemEstimate, paging, 401/403, user name forms, logs) is
collected here a second time and runs against a server on a fresh PostgreSQL database
(made for this module, dropped after).  Skipped, with the reason, when PostgreSQL at
``$EASYNC_TEST_PG`` (default 127.0.0.1:5432) is not reachable (with CI=true: failed).
"""

from __future__ import annotations

from collections.abc import Iterator

import needs
import pytest

needs.importable("pyactivesync")

import test_e2e_pyactivesync as suite
from easync_server import RunningServer, wait_for
from pgtest import started_pg_server, suite_tests

# The SQLite suite's tests, run here with this module's ``server`` fixture.
globals().update(suite_tests(suite))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with started_pg_server(tmp_path_factory, "e2e") as srv:
        # the same users as the SQLite suite's fixture
        srv.add_user("alice", suite.PASSWORD, email="alice@example.org")
        srv.add_user("bob", suite.PASSWORD, email="bob@example.org")
        srv.add_user("carol", suite.PASSWORD, activesync=False)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
            yield srv


def test_the_server_really_uses_postgresql(server: RunningServer) -> None:
    assert server.db.startswith("postgresql://")
    assert "sqlite" not in " ".join(server.args)
    assert not (server.workdir / "easync.sqlite").exists()
    # (the hub says so once it listens, which may come just after the port opens)
    assert wait_for(lambda: "PostgreSQL LISTEN/NOTIFY" in server.log_text())
