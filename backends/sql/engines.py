"""The SQL dialects easync speaks: every SQLite/PostgreSQL difference lives here.

The store writes its SQL once, with ``?`` placeholders and portable types, and asks
its engine for the few things that differ:

* parameter style (``?`` for sqlite3, ``%s`` for psycopg),
* DDL tokens in the schema files (``@SERIAL_PK@``, ``@BLOB@``),
* connection set-up (SQLite pragmas) and pool settings,
* how a write transaction starts and takes the database lock,
* how new row ids are obtained (``lastrowid`` vs ``RETURNING``, id blocks for bulk
  inserts), counters bumped, upserts spelled,
* which exceptions mean "unique violation" or "retry the transaction".
"""

from __future__ import annotations

import errno
import os
import resource  # at import: loading a module may need the descriptor that is missing
from typing import Any, ClassVar
from urllib.parse import urlsplit

__all__ = ["DriverMissing", "Engine", "PostgresEngine", "SqliteEngine", "create_engine", "safe_url"]


class DriverMissing(ValueError):
    """The database URL needs a Python driver this installation cannot import.

    A ``ValueError`` like a malformed URL: the configured ``--db`` cannot be used here,
    and whoever turns a bad ``--db`` into one line for the admin does the same for this.
    ``package`` is what to ``pip install``."""

    def __init__(self, scheme: str, package: str, cause: ImportError) -> None:
        why = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        super().__init__(
            f"{scheme}:// databases need the Python package {package}, which cannot be "
            f"imported here ({why}): pip install '{package}'")
        self.package = package


class Engine:
    """What the store needs to know about one SQL dialect."""

    name = "generic"
    dbapi_name = ""
    #: replacements applied to schema files before they are run
    ddl_tokens: ClassVar[dict[str, str]] = {}

    def __init__(self) -> None:
        self._sql_cache: dict[str, str] = {}

    # -- pool -------------------------------------------------------------------
    def pool_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for ``adbapi.ConnectionPool``."""
        raise NotImplementedError

    def on_connect(self, conn: Any) -> None:
        """Called on every new DB-API connection."""

    @property
    def in_memory(self) -> bool:
        return False

    # -- SQL text ---------------------------------------------------------------
    def sql(self, text: str) -> str:
        """``text`` written with ``?`` placeholders, in this dialect's style."""
        return text

    def ddl(self, text: str) -> str:
        for token, value in self.ddl_tokens.items():
            text = text.replace(token, value)
        return text

    @staticmethod
    def placeholders(n: int) -> str:
        """``(?,?,…)`` with n markers (before ``sql()`` conversion)."""
        return "(" + ",".join("?" * n) + ")"

    def upsert(self, table: str, keys: tuple[str, ...], cols: tuple[str, ...]) -> str:
        """INSERT … ON CONFLICT (keys) DO UPDATE SET cols (the same in both dialects
        since SQLite 3.24, kept here so a third dialect has one place to change)."""
        allcols = keys + cols
        sets = ", ".join(f"{c} = excluded.{c}" for c in cols)
        return self.sql(
            f"INSERT INTO {table} ({', '.join(allcols)}) VALUES "
            f"{self.placeholders(len(allcols))} ON CONFLICT ({', '.join(keys)}) "
            f"DO UPDATE SET {sets}")

    # -- the change feed --------------------------------------------------------
    #: prefix that turns a SELECT into a query-plan listing
    explain_prefix = "EXPLAIN "

    def before_feed(self, cur: Any) -> None:
        """Called in the change-feed transaction before the feed query."""

    # -- transactions -----------------------------------------------------------
    def begin_write(self, conn: Any, cur: Any) -> None:
        """Start a transaction that will write."""

    def lock_for_migration(self, conn: Any, cur: Any) -> None:
        """Start the migration transaction, excluding other migrators."""
        self.begin_write(conn, cur)

    def table_exists(self, cur: Any, table: str) -> bool:
        raise NotImplementedError

    # -- ids and counters -------------------------------------------------------
    def insert_id(self, cur: Any, sql: str, params: tuple[Any, ...]) -> int:
        """Run an INSERT (``?`` style) into a table with an ``id`` serial key and
        return the new id."""
        raise NotImplementedError

    def allocate_ids(self, cur: Any, table: str, n: int) -> list[int]:
        """n fresh ids of ``table``'s serial ``id`` column, for explicit-id inserts
        with ``executemany`` (must be called inside a write transaction)."""
        raise NotImplementedError

    def bump(self, cur: Any, table: str, column: str, key: int, n: int) -> int:
        """``column += n`` on row ``key`` of ``table``, returning the new value. Also
        locks the row until the transaction ends."""
        raise NotImplementedError

    # -- errors -----------------------------------------------------------------
    def is_unique_violation(self, exc: BaseException) -> bool:
        return False

    def is_retryable(self, exc: BaseException) -> bool:
        """Deadlock or serialization failure: the transaction may simply be re-run."""
        return False

    def is_unavailable(self, exc: BaseException) -> bool:
        """The database cannot answer now (down, connection lost, locked too long, or
        this process out of file descriptors for a new connection): the request may be
        retried later, it is not a bug."""
        from twisted.enterprise.adbapi import ConnectionLost

        return isinstance(exc, ConnectionLost) or out_of_descriptors(exc)


def safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def out_of_descriptors(exc: BaseException) -> bool:
    """``exc`` is the process (EMFILE) or the system (ENFILE) out of file descriptors."""
    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)


def descriptors_exhausted(margin: int = 16) -> str:
    """Why a new connection may have failed for want of a file descriptor: libpq says
    only "connection is bad: no error details available" (and the failed connect has
    freed its own socket by then, so one more open would succeed).  ``""`` unless this
    process has within ``margin`` of its soft open-files limit open."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return ""
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError as e:
        return "out of file descriptors" if out_of_descriptors(e) else ""
    if used + margin < soft:
        return ""
    return f"out of file descriptors ({used} open, limit {soft})"


class SqliteEngine(Engine):
    name = "sqlite"
    dbapi_name = "sqlite3"
    ddl_tokens: ClassVar[dict[str, str]] = {
        "@SERIAL_PK@": "INTEGER PRIMARY KEY AUTOINCREMENT",
        "@BLOB@": "BLOB",
    }
    busy_timeout_ms = 10_000
    explain_prefix = "EXPLAIN QUERY PLAN "

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:" or self.path == ""

    def pool_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.path,), {
            "check_same_thread": False,
            "timeout": self.busy_timeout_ms / 1000,
            "cp_min": 1,
            "cp_max": 1,
        }

    def on_connect(self, conn: Any) -> None:
        cur = conn.cursor()
        try:
            if not self.in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        finally:
            cur.close()

    def begin_write(self, conn: Any, cur: Any) -> None:
        # Take the write lock at once: a deferred transaction that reads first and
        # writes later can fail with SQLITE_BUSY when another process wrote between.
        if not conn.in_transaction:
            cur.execute("BEGIN IMMEDIATE")

    def table_exists(self, cur: Any, table: str) -> bool:
        cur.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,))
        return cur.fetchone() is not None

    def insert_id(self, cur: Any, sql: str, params: tuple[Any, ...]) -> int:
        cur.execute(sql, params)
        return int(cur.lastrowid)

    def allocate_ids(self, cur: Any, table: str, n: int) -> list[int]:
        # AUTOINCREMENT tables keep their high-water mark in sqlite_sequence; an
        # explicit id above it moves it.  We hold the write lock, so nobody else
        # can take these ids between now and our INSERT.
        cur.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        row = cur.fetchone()
        start = int(row[0]) if row else 0
        return list(range(start + 1, start + n + 1))

    def bump(self, cur: Any, table: str, column: str, key: int, n: int) -> int:
        # (UPDATE … RETURNING needs SQLite 3.35; two statements work everywhere.)
        cur.execute(f"UPDATE {table} SET {column} = {column} + ? WHERE id = ?", (n, key))
        if cur.rowcount != 1:
            raise KeyError(key)
        cur.execute(f"SELECT {column} FROM {table} WHERE id = ?", (key,))
        return int(cur.fetchone()[0])

    def is_unique_violation(self, exc: BaseException) -> bool:
        import sqlite3

        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def is_unavailable(self, exc: BaseException) -> bool:
        import sqlite3

        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc).lower()
            return any(w in text for w in ("locked", "busy", "disk i/o", "unable to open"))
        return super().is_unavailable(exc)


class PostgresEngine(Engine):
    name = "postgres"
    dbapi_name = "psycopg"
    ddl_tokens: ClassVar[dict[str, str]] = {
        "@SERIAL_PK@": "BIGSERIAL PRIMARY KEY",
        "@BLOB@": "BYTEA",
    }
    #: any constant, shared by every easync process migrating this database
    MIGRATION_LOCK = 0x6561_7379_6E63

    def __init__(self, url: str, cp_min: int = 2, cp_max: int = 10) -> None:
        super().__init__()
        self.url = url
        self.cp_min = cp_min
        self.cp_max = cp_max

    def pool_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.url,), {
            "cp_min": self.cp_min,
            "cp_max": self.cp_max,
            "cp_reconnect": True,
            "application_name": "easync",
        }

    def sql(self, text: str) -> str:
        out = self._sql_cache.get(text)
        if out is None:
            if "%" in text:
                raise ValueError("a literal % in SQL would confuse psycopg")
            out = self._sql_cache[text] = text.replace("?", "%s")
        return out

    def before_feed(self, cur: Any) -> None:
        # The feed must walk items_feed in order and stop after LIMIT rows.  With
        # stale statistics (say, right after a bulk import, before autovacuum's
        # ANALYZE) the planner prefers a bitmap scan of every row after the cursor
        # plus a sort: O(folder) instead of O(limit), ~30 ms a call at 100,000
        # items.  These two settings, for this transaction only, leave it the
        # ordered index scan.  (Cached plans of the feed statement are always made
        # under them, since every execution of it follows this.)
        cur.execute("SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off")

    def lock_for_migration(self, conn: Any, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (self.MIGRATION_LOCK,))

    def table_exists(self, cur: Any, table: str) -> bool:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        return bool(cur.fetchone()[0])

    def insert_id(self, cur: Any, sql: str, params: tuple[Any, ...]) -> int:
        cur.execute(self.sql(sql) + " RETURNING id", params)
        return int(cur.fetchone()[0])

    def allocate_ids(self, cur: Any, table: str, n: int) -> list[int]:
        cur.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            (table, n))
        return sorted(int(r[0]) for r in cur.fetchall())

    def bump(self, cur: Any, table: str, column: str, key: int, n: int) -> int:
        cur.execute(
            f"UPDATE {table} SET {column} = {column} + %s WHERE id = %s RETURNING {column}",
            (n, key))
        row = cur.fetchone()
        if row is None:
            raise KeyError(key)
        return int(row[0])

    def is_unique_violation(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) == "23505"

    def is_retryable(self, exc: BaseException) -> bool:
        return getattr(exc, "sqlstate", None) in ("40001", "40P01")

    def is_unavailable(self, exc: BaseException) -> bool:
        import psycopg

        # connection failures, server shutdown, cancelled/timed-out statements,
        # serialization failures that outlived their retries
        return isinstance(exc, psycopg.OperationalError) or super().is_unavailable(exc)


def create_engine(url: str, **options: Any) -> Engine:
    """The engine for a database URL.

    ``sqlite:///relative/path.sqlite``, ``sqlite:////absolute/path.sqlite``,
    ``sqlite:///:memory:``, ``postgresql://user[:password]@host[:port]/dbname``
    (``postgres://`` too; any libpq URI parameters are passed through).
    ``options``: ``cp_min``/``cp_max`` for PostgreSQL.  A URL whose driver cannot be
    imported (psycopg for PostgreSQL) raises :class:`DriverMissing`.
    """
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if not url.lower().startswith("sqlite:///"):
            raise ValueError(f"SQLite URLs look like sqlite:///path.sqlite, not {url!r}")
        path = url[len("sqlite:///"):]
        if path not in (":memory:", ""):
            path = os.path.expanduser(path)
        return SqliteEngine(path)
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise ValueError(f"no database name in {safe_url(url)!r}")
        try:
            import psycopg  # noqa: F401 - only: can the pool import it later?
        except ImportError as e:
            raise DriverMissing(scheme, "psycopg[binary]", e) from None
        return PostgresEngine(url, **{k: v for k, v in options.items() if v is not None})
    raise ValueError(f"unsupported database URL {safe_url(url)!r} (sqlite:/// or "
                     f"postgresql://)")
