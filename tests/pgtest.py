"""PostgreSQL for the tests: a fresh database per test module (when no server answers, a
skip with the reason, or with CI=true a failure: tests/needs.py).

The server is the one at ``$EASYNC_TEST_PG`` (default
``postgresql://postgres@127.0.0.1:5432/test``, as in test_store_contract.py); each
database made here is called ``easync_<what>_<pid>_<n>`` and dropped afterwards.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import needs
import pytest

PG_ADMIN_URL = os.environ.get("EASYNC_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
_numbers = itertools.count()


def unreachable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3).close()
    except Exception as e:  # noqa: BLE001 - any failure means "not available"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {e}"
    return None


@contextmanager
def fresh_database(what: str) -> Iterator[str]:
    """The URL of a new empty database, dropped (with its connections) at the end."""
    import psycopg

    name = f"easync_{what}_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def terminate(url: str, pid: int) -> bool:
    """``pg_terminate_backend(pid)``, as an administrator would; True if it was ended."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        row = conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
    return bool(row and row[0])


def pg_server(workdir: Any, db_url: str, args: list[str] | None = None,
              tls: bool = True) -> Any:
    """A ``RunningServer`` (not started) on the PostgreSQL database ``db_url``: its
    ``--db`` and the ``easync-admin`` it runs both use it."""
    from easync_server import RunningServer

    srv = RunningServer(workdir, args, tls=tls)
    srv.db = db_url
    srv.args[srv.args.index("--db") + 1] = db_url
    return srv


@contextmanager
def started_pg_server(tmp_path_factory: pytest.TempPathFactory, what: str) -> Iterator[Any]:
    """A started ``pg_server`` on a ``fresh_database(what)``, in a new temporary folder
    ``<what>-pg``, stopped at the end; ``needs.require`` when PostgreSQL is not reachable."""
    needs.require(unreachable())
    with fresh_database(what) as url:
        srv = pg_server(tmp_path_factory.mktemp(f"{what}-pg"), url).start()
        try:
            yield srv
        finally:
            srv.stop()


def suite_tests(suite: ModuleType) -> dict[str, Any]:
    """The tests of the module ``suite``, to be collected again in another module (where
    they get that module's fixtures): ``globals().update(suite_tests(suite))``."""
    return {name: getattr(suite, name) for name in dir(suite)
            if name.startswith("test_") and callable(getattr(suite, name))}


def listener_pids(url: str, node_name: str) -> list[int]:
    """Backend pids of the LISTEN connections of the node called ``node_name`` on the
    database of ``url``."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s", (f"easync-listen {node_name}"[:63],)).fetchall()
    return [int(r[0]) for r in rows]
