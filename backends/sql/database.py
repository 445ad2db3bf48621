"""One SQL database: its engine, its connection pool and its transactions.

``Database(reactor, url)`` is what every part of the SQL store (and the CRM mirror,
and ``SqlAuthStore``) runs its SQL through, as synapse's ``DatabasePool``:

* ``await db.open()`` starts the pool and brings the schema up to date
  (``migrations.py``); calls made meanwhile wait for it;
* ``db.run_interaction(desc, fn, *args, write=False)`` runs ``fn(cur, *args)`` in one
  transaction in a pool thread and returns a Deferred of its result; ``write=True``
  takes the write lock first (``Engine.begin_write``); a deadlock or serialization
  failure re-runs it; a database that cannot answer fails with ``Unavailable``;
* ``db.sql(text)`` spells a statement written with ``?`` placeholders in the
  engine's dialect (``db.engine`` for the rest: upserts, ids, counters).
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from backends.sql.engines import (
    Engine,
    create_engine,
    descriptors_exhausted,
    out_of_descriptors,
    safe_url,
)
from backends.sql.migrations import migrate
from easync.errors import Unavailable

__all__ = ["Database", "safe_url"]

T = TypeVar("T")
_MAX_RETRIES = 3
log = Logger()


class _Connection(adbapi.Connection):
    """adbapi's pooled connection, except that a rollback on a connection the database
    ended (a restart, an outage: psycopg's "the connection is lost") is one warning
    line, not adbapi's "Rollback failed" traceback for every transaction under way."""

    def rollback(self) -> None:
        if not self._pool.reconnect:
            self._connection.rollback()
            return
        try:
            self._connection.rollback()
            cur = self._connection.cursor()       # is it still alive?
            cur.execute(self._pool.good_sql)
            cur.close()
            self._connection.commit()
            return
        except Exception as e:  # noqa: BLE001  (any DB-API error: the connection is gone)
            log.warn("database connection lost at a rollback ({err}); a new one is "  # noqa: G010
                     "made for the next transaction", err=str(e).strip() or type(e).__name__)
        self._pool.disconnect(self._connection)
        raise adbapi.ConnectionLost()


class _Pool(adbapi.ConnectionPool):
    """``adbapi.ConnectionPool`` with ``_Connection``, which tells a lost connection in
    a line: the pool's own wrapper then does not log it again as a traceback."""

    connectionFactory = _Connection

    def _runWithConnection(self, func: Callable[..., T], *args: Any, **kw: Any) -> T:
        conn = self.connectionFactory(self)
        try:
            result = func(conn, *args, **kw)
            conn.commit()
            return result
        except BaseException:
            try:
                conn.rollback()
            except adbapi.ConnectionLost:
                pass                            # (told by _Connection.rollback)
            except BaseException:  # noqa: BLE001  (logged; the first error is raised)
                log.failure("rollback failed")
            raise


class Database:
    """A pool of connections to one database and the transactions run on it."""

    def __init__(self, reactor: Any, url: str, *, schema_dir: str | Path | None = None,
                 cp_min: int | None = None, cp_max: int | None = None) -> None:
        self.reactor = reactor
        self.url = url
        self.engine: Engine = create_engine(url, cp_min=cp_min, cp_max=cp_max)
        self.schema_dir = schema_dir
        self._pool: adbapi.ConnectionPool | None = None     # set once migrated
        # when this process was last found near its open-files limit, and how near
        self._fd_checked: tuple[float, str] = (float("-inf"), "")
        self._opening: list[Deferred[None]] | None = None   # waiters while migrating
        #: the schema version reached by ``open``
        self.schema_version = 0
        #: transactions run so far (``run_interaction`` calls): what a request costs in
        #: database round trips is the difference across it (tests, benchmarks)
        self.interactions = 0

    @property
    def is_open(self) -> bool:
        """Migrated and ready (``open`` done, ``close`` not called)."""
        return self._pool is not None

    @property
    def is_opening(self) -> bool:
        """``open`` is under way (calls made now wait for it)."""
        return self._opening is not None

    async def open(self, target_version: int | None = None) -> None:
        """Open the pool and bring the schema up to date (``target_version``: stop
        at that version — for tests of upgrades).  Calls made while this runs wait
        for it; if it fails they fail with its error."""
        if self._pool is not None or self._opening is not None:
            return
        self._check_directory()
        args, kwargs = self.engine.pool_args()
        engine = self.engine

        def openfun(conn: Any) -> None:
            engine.on_connect(conn)
            if engine.in_memory:
                # every connection to :memory: is a new database (there is only one)
                migrate(engine, conn, self.reactor.seconds(), self.schema_dir,
                        target_version)
                conn.commit()

        pool = _Pool(engine.dbapi_name, *args, cp_openfun=openfun,
                                     cp_reactor=self.reactor, cp_noisy=False, **kwargs)
        pool.start()
        waiters: list[Deferred[None]] = []
        self._opening = waiters
        try:
            self.schema_version = await pool.runWithConnection(
                lambda conn: migrate(engine, conn, self.reactor.seconds(),
                                     self.schema_dir, target_version))
        except BaseException as e:
            self._opening = None
            pool.close()
            for d in waiters:
                d.errback(e)
            raise
        self._pool, self._opening = pool, None
        for d in waiters:
            d.callback(None)

    def open_blocking(self) -> None:
        """Connect and bring the schema up to date in the calling thread, then
        disconnect: for a process whose reactor does not run yet (``twistd easync``
        starting), so that a database that cannot be opened is an error at once
        rather than a server answering 503.  ``open`` then finds the schema current.
        An in-memory database is left to ``open`` (each connection is a new one)."""
        engine = self.engine
        if engine.in_memory:
            return
        self._check_directory()
        args, kwargs = engine.pool_args()
        dbapi = importlib.import_module(engine.dbapi_name)
        # the DB-API arguments the pool would connect with, without its own cp_ ones
        conn = dbapi.connect(*args, **{k: v for k, v in kwargs.items()
                                       if not k.startswith("cp_")})
        try:
            engine.on_connect(conn)
            migrate(engine, conn, self.reactor.seconds(), self.schema_dir)
            conn.commit()
        except BaseException:
            with contextlib.suppress(Exception):   # a lost connection cannot roll back
                conn.rollback()
            raise
        finally:
            conn.close()

    def _check_directory(self) -> None:
        """A SQLite file's directory must exist (SQLite itself only says "unable to
        open database file")."""
        path = getattr(self.engine, "path", None)
        if path and not self.engine.in_memory:
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise FileNotFoundError(f"directory {directory} does not exist")

    async def close(self) -> None:
        """Close every pooled connection and stop the pool's threads."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def run_interaction(self, desc: str, fn: Callable[..., T], *args: Any,
                        write: bool = False) -> Deferred[T]:
        """Run ``fn(cur, *args)`` in one transaction in a pool thread (``desc`` names
        it in errors); retried on a deadlock or serialization failure."""
        engine = self.engine
        self.interactions += 1

        def txn(conn: Any) -> T:
            attempt = 0
            while True:
                cur = conn.cursor()
                try:
                    if write:
                        engine.begin_write(conn, cur)
                    return fn(cur, *args)
                except Exception as e:
                    if not engine.is_retryable(e) or attempt >= _MAX_RETRIES:
                        raise
                    conn.rollback()
                    attempt += 1
                finally:
                    cur.close()

        if self._pool is not None:
            return self._pool.runWithConnection(txn).addErrback(self._unavailable)
        if self._opening is None:
            return fail(RuntimeError(f"SqlStore is not open ({desc})"))
        ready: Deferred[None] = Deferred()
        self._opening.append(ready)
        return ready.addCallback(
            lambda _: self.run_interaction(desc, fn, *args, write=write))

    def _unavailable(self, f: Failure) -> Failure:
        """A database that cannot answer becomes ``Unavailable`` (HTTP 503 with
        Retry-After for the protocol side); other errors pass unchanged."""
        if self.engine.is_unavailable(f.value):
            why = str(f.value)
            now = self.reactor.seconds()
            if now - self._fd_checked[0] >= 1:      # a listing of /proc/self/fd a second
                self._fd_checked = (now, descriptors_exhausted())
            if self._fd_checked[1]:
                why = f"this process is {self._fd_checked[1]} (ulimit -n): {why}"
            elif out_of_descriptors(f.value):
                why = f"this process is out of file descriptors (ulimit -n): {why}"
            raise Unavailable(f"database unavailable: {why}") from f.value
        return f

    def sql(self, text: str) -> str:
        """``text``, written with ``?`` placeholders, in the engine's dialect."""
        return self.engine.sql(text)

    async def raw_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement written with ``?`` placeholders and return its rows
        (tests, EXPLAIN, the admin CLI)."""

        def q(cur: Any) -> list[tuple[Any, ...]]:
            cur.execute(self.sql(sql), tuple(params))
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

        return await self.run_interaction("raw_query", q)
