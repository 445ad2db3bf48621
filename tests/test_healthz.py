"""``GET /healthz`` on the metrics listener (issue 13 point 8): 200 when the database
answers and the change hub is up, 503 naming the failing part otherwise, never
holding the reactor.

The outage is made as a PostgreSQL restart makes it: every connection of easync's
database terminated, and new ones refused for a while ("database is not currently
accepting connections", as a server shutting down or starting up refuses them); and
as a migration or ``VACUUM FULL`` makes it: the table the check reads locked.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from easync.health import HealthCheck
from tests.easync_server import RunningServer, free_port, wait_for


def get(url: str, timeout: float = 10) -> tuple[int, str, float]:
    """(HTTP status, body, seconds taken)."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode(), time.monotonic() - start
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), time.monotonic() - start


# -- the check itself, on a test clock ---------------------------------------------------

def test_one_query_at_a_time_and_a_hung_one_times_out() -> None:
    clock = Clock()
    pending: list[Deferred[None]] = []

    def database() -> Deferred[None]:
        pending.append(Deferred())
        return pending[-1]

    check = HealthCheck(clock, database, lambda: None, timeout=2.0)
    first, second = [], []
    check.check().addCallback(first.append)
    clock.advance(1)
    check.check().addCallback(second.append)           # waits for the same query
    assert check.queries == 1 and first == second == []
    clock.advance(1)                                   # 2 s: both give up
    assert first == second == [[("database", "no answer within 2 s")]]
    third: list[Any] = []
    clock.advance(5)
    check.check().addCallback(third.append)            # still hung: answered at once
    assert third == [[("database", "no answer for 7 s")]] and check.queries == 1
    pending[0].callback(None)                          # it answers at last
    fourth: list[Any] = []
    check.check().addCallback(fourth.append)           # a new query
    assert check.queries == 2 and fourth == []
    pending[1].callback(None)
    assert fourth == [[]]


def test_failures_are_named_and_the_store_prefix_dropped() -> None:
    from twisted.internet.defer import fail

    from easync.errors import Unavailable

    check = HealthCheck(Clock(), lambda: fail(Unavailable(
        "database unavailable: connection refused\nIs the server running?")),
        lambda: "not listening", timeout=2.0)
    got: list[Any] = []
    check.check().addCallback(got.append)
    assert got == [[("database", "connection refused"), ("change hub", "not listening")]]


# -- a real server ---------------------------------------------------------------------------

def serve(server: RunningServer) -> str:
    port = free_port()
    server.args += ["--metrics-listen", f"tcp:{port}:interface=127.0.0.1"]
    server.start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: get(f"{url}/metrics")[0] == 200)
    return url


def test_healthz_on_sqlite(tmp_path: Path) -> None:
    server = RunningServer(tmp_path, tls=False)
    try:
        url = serve(server)
        status, body, _ = get(f"{url}/healthz")
        assert (status, body) == (200, "ok: database and change hub up\n")
        assert get(f"{url}/metrics")[0] == 200
        assert get(f"{url}/other")[0] == 404
    finally:
        server.stop()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[tuple[RunningServer, str, str]]:
    """A server on a fresh PostgreSQL database: (server, metrics URL, database name)."""
    from pgtest import fresh_database, pg_server, unreachable

    needs.require(unreachable())
    with fresh_database("healthz") as db_url:
        server = pg_server(tmp_path, db_url, tls=False)
        try:
            url = serve(server)
            wait_for(lambda: get(f"{url}/healthz")[0] == 200)
            yield server, url, db_url.rsplit("/", 1)[1]
        finally:
            server.stop()
            admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", db_url.rsplit("/", 1)[1])


def admin(sql: str, name: str) -> Any:
    import psycopg
    from pgtest import PG_ADMIN_URL

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        return conn.execute(sql.format(name)).fetchall() if "SELECT" in sql else \
            conn.execute(sql.format(name))


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_healthz_when_postgresql_goes_away_and_comes_back(
        pg: tuple[RunningServer, str, str]) -> None:
    server, url, name = pg
    admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", name)
    ended = admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                  "WHERE datname = '{}' AND pid <> pg_backend_pid()", name)
    assert ended                                       # the pool's and the hub's
    answers: list[tuple[int, str, float]] = []

    def refused() -> bool:
        answers.append(get(f"{url}/healthz"))
        return "not currently accepting connections" in answers[-1][1]

    wait_for(refused)
    assert all(took < 3.5 for _, _, took in answers)  # never longer than the timeout
    status, body, _ = answers[-1]
    lines = body.splitlines()
    assert status == 503
    assert [ln.split(":")[0] for ln in lines] == ["database", "change hub"]
    assert lines[1] == ("change hub: not listening for other nodes' changes "
                        "(reconnecting to the database)")
    assert get(f"{url}/metrics")[0] == 200             # the reactor serves meanwhile
    answers += [get(f"{url}/healthz") for _ in range(3)]
    assert {status for status, _, _ in answers} == {503}
    admin("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", name)
    wait_for(lambda: get(f"{url}/healthz")[0] == 200, timeout=40)
    log = server.log_text()
    # one line when it started failing (another if the failing parts changed), not
    # one per check; one when it is up again
    failing = log.count("healthz: failing: ")
    assert 1 <= failing <= 2 < len(answers)
    assert log.count("healthz: database and change hub up again") == 1
    # the outage is told in lines, not in tracebacks of the connection pool's rollback
    # of a transaction whose connection was ended
    assert "Rollback failed" not in log and "Traceback" not in log, log[-4000:]


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_healthz_when_the_database_does_not_answer(pg: tuple[RunningServer, str, str]) -> None:
    """The table locked by another transaction: the check's query hangs; /healthz
    answers 503 after 2 s, the next one at once (no second query), /metrics at once."""
    import psycopg
    from pgtest import PG_ADMIN_URL

    _server, url, name = pg

    locker = psycopg.connect(f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}", connect_timeout=3)
    try:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        status, body, took = get(f"{url}/healthz")
        assert (status, body) == (503, "database: no answer within 2 s\n")
        assert 1.8 < took < 3.5
        status, body, took = get(f"{url}/healthz")
        assert status == 503 and body.startswith("database: no answer for ") and took < 1
        assert get(f"{url}/metrics")[2] < 1
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: get(f"{url}/healthz")[0] == 200)
