"""Versioned schema: numbered SQL files applied at start-up.

``schema/NNN_name.sql`` holds version NNN in portable SQL (see ``engines.py`` for
the tokens); ``NNN_name.sql.sqlite`` / ``NNN_name.sql.postgres`` replace it for one
dialect where the two must differ.  ``schema_version`` records what was applied.
All pending versions run in one transaction (DDL is transactional in both SQLite
and PostgreSQL), under a lock, so a crash leaves the old version intact and a
re-run or a second process starting at the same time does nothing twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from backends.sql.engines import Engine

_FILE_RE = re.compile(r"^(\d+)_([A-Za-z0-9_]+)\.sql(?:\.(sqlite|postgres))?$")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def _schema_files(schema_dir: str | Path | None) -> list[tuple[str, str]]:
    if schema_dir is not None:
        root = Path(schema_dir)
        return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(root.iterdir())
                if p.is_file()]
    root_res = resources.files("backends.sql").joinpath("schema")
    return [(p.name, p.read_text(encoding="utf-8")) for p in sorted(
        root_res.iterdir(), key=lambda p: p.name) if p.is_file()]


def load_migrations(engine: Engine, schema_dir: str | Path | None = None) -> list[Migration]:
    """The migrations for this engine's dialect, in version order."""
    generic: dict[int, tuple[str, str]] = {}
    specific: dict[int, tuple[str, str]] = {}
    for filename, text in _schema_files(schema_dir):
        m = _FILE_RE.match(filename)
        if not m:
            continue
        version, name, dialect = int(m.group(1)), m.group(2), m.group(3)
        if dialect is None:
            if version in generic:
                raise RuntimeError(f"two schema files for version {version}")
            generic[version] = (name, text)
        elif dialect == engine.name:
            specific[version] = (name, text)
    merged = {**generic, **specific}
    return [Migration(v, merged[v][0], engine.ddl(merged[v][1])) for v in sorted(merged)]


def split_statements(text: str) -> list[str]:
    """The statements of a schema file: whole-line ``--`` comments dropped, split at
    semicolons that end a line."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("--")]
    body = "\n".join(lines)
    return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]


def current_version(engine: Engine, cur: Any) -> int:
    if not engine.table_exists(cur, "schema_version"):
        return 0
    cur.execute("SELECT MAX(version) FROM schema_version")
    row = cur.fetchone()
    return int(row[0] or 0)


def migrate(engine: Engine, conn: Any, now: float,
            schema_dir: str | Path | None = None, target: int | None = None) -> int:
    """Bring the database up to ``target`` (default: the newest file); returns the
    version reached.  Runs inside the caller's transaction: the caller commits (or
    rolls back on error).  Raises RuntimeError for a database newer than the code."""
    migrations = load_migrations(engine, schema_dir)
    if target is None:
        target = migrations[-1].version if migrations else 0
    cur = conn.cursor()
    try:
        engine.lock_for_migration(conn, cur)
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version ("
                    " version INTEGER PRIMARY KEY,"
                    " name TEXT NOT NULL,"
                    " applied_at DOUBLE PRECISION NOT NULL)")
        have = current_version(engine, cur)
        known = migrations[-1].version if migrations else 0
        if have > known:
            raise RuntimeError(
                f"database schema version {have} is newer than this easync knows ({known})")
        for mig in migrations:
            if have < mig.version <= target:
                for statement in split_statements(mig.sql):
                    cur.execute(statement)
                cur.execute(engine.sql(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)"),
                    (mig.version, mig.name, now))
                have = mig.version
        return have
    finally:
        cur.close()
