"""What the parts of the SQL store share: row helpers and the part base class.

Every part (``users``, ``items``, ``state``, ``holds``) is a ``StorePart`` over one
``Database``: its ``_run`` runs a function in one transaction of that database
(``Database.run_interaction``), its ``_sql`` spells ``?`` placeholders in the
engine's dialect.  Functions whose names end in ``_txn`` take a cursor and run
*inside* a transaction the caller opened with ``run_interaction``: they are the
transaction-level API other backends (the CRM mirror) combine with their own SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred

from backends.sql.database import Database
from backends.sql.engines import Engine
from easync.lookup import prefix_end, prefix_key
from easync.model import Folder, User
from easync.storerules import DEVICE_COLUMNS as _DEVICE_COLS

T = TypeVar("T")

_USER_COLS = "id, name, email, activesync, password_hash, extra"
_CHUNK = 500          # ids per IN (…) list


def _chunks(seq: Sequence[T], n: int = _CHUNK) -> Iterable[Sequence[T]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _user_from_row(row: Sequence[Any]) -> User:
    return User(id=int(row[0]), name=row[1], email=row[2], activesync=bool(row[3]),
                password_hash=row[4], extra=json.loads(row[5]) if row[5] else {})


def _folder_from_row(row: Sequence[Any]) -> Folder:
    # row: id, parent_id, name, type, modseq[, purged]
    return Folder(server_id=str(row[0]), parent_id=row[1], name=row[2], type=int(row[3]),
                  modseq=int(row[4]), purged=int(row[5]) if len(row) > 5 else 0)


def _device_from_row(row: Sequence[Any]) -> dict[str, Any]:
    dev = dict(zip(_DEVICE_COLS, row))
    dev["info"] = json.loads(dev["info"]) if dev["info"] else {}
    dev["blocked"] = bool(dev["blocked"])
    if dev["policy_key"] is not None:
        dev["policy_key"] = int(dev["policy_key"])
    return dev



class StorePart:
    """One concern of the SQL store, over the shared ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def _run(self, fn: Callable[..., T], *args: Any, write: bool = False) -> Deferred[T]:
        return self.db.run_interaction(fn.__qualname__, fn, *args, write=write)

    def _sql(self, text: str) -> str:
        return self.db.sql(text)

    def _prefix_walk(self, cur: Any, table: str, key_col: str, where: str,
                     params: tuple[Any, ...], prefix: str, limit: int,
                     explain: list[str] | None = None) -> list[int]:
        """The first ``limit`` distinct ``key_col`` values of ``table`` rows with a
        token starting with ``prefix`` (normalised), in (token, key) order: pages of
        one index range walked by keyset, so the cost is O(log n + rows read), and
        rows read are at most ``limit`` times the tokens one key can have.  With
        ``explain`` (a list), the first page's plan lines are added to it instead."""
        key = prefix_key(prefix)
        if not key or limit <= 0:
            return []
        end = prefix_end(key)
        bound = " AND token < ?" if end is not None else ""
        page = max(64, 4 * limit)
        # an ordered walk of the index that stops after LIMIT rows, as the change feed
        # (PostgreSQL with stale statistics preferred a bitmap scan of every token
        # with the prefix plus a sort: 45 ms for "l" among 50,000 contacts)
        self.engine.before_feed(cur)
        found: dict[int, None] = {}
        last: tuple[str, int] | None = None
        while True:
            after = "" if last is None else f" AND (token, {key_col}) > (?, ?)"
            sql = self._sql(
                f"SELECT token, {key_col} FROM {table} WHERE {where} AND token >= ?{bound}"
                f"{after} ORDER BY token, {key_col} LIMIT ?")
            args = (*params, key, *([end] if end is not None else []),
                    *(last if last is not None else ()), page)
            if explain is not None:
                cur.execute(self.engine.explain_prefix + sql, args)
                explain.extend(str(row[-1]) for row in cur.fetchall())
                return []
            cur.execute(sql, args)
            rows = cur.fetchall()
            for token, kid in rows:
                found.setdefault(int(kid), None)
                if len(found) >= limit:
                    return list(found)
            if len(rows) < page:
                return list(found)
            last = (rows[-1][0], int(rows[-1][1]))

    def _union_probe(self, cur: Any, table: str, value_col: str, key_col: str,
                     where: str, params: tuple[Any, ...], values: list[str], limit: int
                     ) -> dict[str, list[int]]:
        """For each value, up to ``limit`` ``key_col`` of the ``table`` rows where
        ``where`` holds and ``value_col`` is that value: one statement per 100 values,
        a UNION ALL of one index probe with a LIMIT per value."""
        out: dict[str, list[int]] = {}
        if limit <= 0:
            return out
        for part in _chunks(values, 100):
            sql = " UNION ALL ".join(
                f"SELECT v, k FROM (SELECT {value_col} AS v, {key_col} AS k FROM {table}"
                f" WHERE {where} AND {value_col} = ? LIMIT ?) AS q{n}"
                for n in range(len(part)))
            args: list[Any] = []
            for value in part:
                args.extend((*params, value, limit))
            cur.execute(self._sql(sql), args)
            for value, kid in cur.fetchall():
                out.setdefault(str(value), []).append(int(kid))
        return out

