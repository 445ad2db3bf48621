"""``IAuthStore`` on easync's SQL database (tables of schema versions 3 and 4).

``SqlAuthStore(store)`` shares the ``SqlStore``'s connection pool and its transaction
plumbing (retries on deadlock, ``Unavailable`` when the database cannot answer), so
the throttling state and codes are shared by every process on the same database.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from backends.sql.request import familiar_txn, setting_txn, throttle_row_txn
from backends.sql.store import SqlStore
from easync.interfaces import IAuthStore

__all__ = ["SqlAuthStore"]


@implementer(IAuthStore)
class SqlAuthStore:
    """Settings, audit log, throttling, e-mail codes and TOTP steps in SQL."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def _run(self, fn: Any, *args: Any, write: bool = False) -> Deferred[Any]:
        # The same package's transaction runner: one pool, one set of retry rules.
        return self.store.db.run_interaction(fn.__qualname__, fn, *args, write=write)

    def _sql(self, text: str) -> str:
        return self.store.engine.sql(text)

    # -- settings ---------------------------------------------------------------------
    def get_setting(self, name: str) -> Deferred[str | None]:
        def q(cur: Any) -> str | None:
            return setting_txn(self.store.engine, cur, name)

        return self._run(q)

    def set_setting(self, name: str, value: str | None) -> Deferred[None]:
        engine = self.store.engine

        def q(cur: Any) -> None:
            if value is None:
                cur.execute(self._sql("DELETE FROM server_settings WHERE name = ?"), (name,))
            else:
                cur.execute(engine.upsert("server_settings", ("name",), ("value",)),
                            (name, value))

        return self._run(q, write=True)

    # -- audit --------------------------------------------------------------------------
    def add_audit(self, at: float, actor: str, user_name: str | None, action: str,
                  detail: str, address: str) -> Deferred[None]:
        def q(cur: Any) -> None:
            cur.execute(self._sql(
                "INSERT INTO audit_log (at, actor, user_name, action, detail, address)"
                " VALUES (?, ?, ?, ?, ?, ?)"), (at, actor, user_name, action, detail, address))

        return self._run(q, write=True)

    def list_audit(self, user_name: str | None, limit: int) -> Deferred[list[dict[str, Any]]]:
        def q(cur: Any) -> list[dict[str, Any]]:
            sql = "SELECT at, actor, user_name, action, detail, address FROM audit_log"
            if user_name is None:
                cur.execute(self._sql(sql + " ORDER BY id DESC LIMIT ?"), (limit,))
            else:
                cur.execute(self._sql(sql + " WHERE user_name = ? ORDER BY id DESC LIMIT ?"),
                            (user_name, limit))
            keys = ("at", "actor", "user", "action", "detail", "address")
            return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

        return self._run(q)

    # -- throttling ---------------------------------------------------------------------
    def throttle_get(self, scope: str, name: str
                     ) -> Deferred[tuple[int, float, float] | None]:
        def q(cur: Any) -> tuple[int, float, float] | None:
            return throttle_row_txn(self.store.engine, cur, scope, name)

        return self._run(q)

    def throttle_fail(self, scope: str, name: str, now: float, window: float
                      ) -> Deferred[tuple[int, float]]:
        def q(cur: Any) -> tuple[int, float]:
            cur.execute(self._sql("SELECT failures, window_start, locked_until FROM"
                                  " auth_throttle WHERE scope = ? AND name = ?"), (scope, name))
            row = cur.fetchone()
            if row is None:
                cur.execute(self._sql(
                    "INSERT INTO auth_throttle (scope, name, failures, window_start,"
                    " locked_until) VALUES (?, ?, 1, ?, 0)"), (scope, name, now))
                return 1, 0.0
            failures, start, locked = int(row[0]), float(row[1]), float(row[2])
            if now - start >= window:
                failures, start = 0, now
            failures += 1
            cur.execute(self._sql("UPDATE auth_throttle SET failures = ?, window_start = ?"
                                  " WHERE scope = ? AND name = ?"),
                        (failures, start, scope, name))
            return failures, locked

        return self._run(q, write=True)

    def throttle_lock(self, scope: str, name: str, until: float) -> Deferred[None]:
        engine = self.store.engine

        def q(cur: Any) -> None:
            cur.execute(engine.upsert("auth_throttle", ("scope", "name"),
                                      ("failures", "window_start", "locked_until")),
                        (scope, name, 0, until, until))

        return self._run(q, write=True)

    def throttle_clear(self, scope: str, name: str) -> Deferred[None]:
        def q(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM auth_throttle WHERE scope = ? AND name = ?"),
                        (scope, name))

        return self._run(q, write=True)

    # -- the login throttle: reservations, growing lockouts, familiar sources --------------
    def _lock_rows(self, cur: Any, scope: str, name: str, create: bool, now: float
                   ) -> tuple[int, int, float, float, int, float] | None:
        """The counter's row, locked until the transaction ends (PostgreSQL: FOR UPDATE;
        SQLite: the write transaction already holds the database lock); made first when
        missing and ``create``."""
        pg = self.store.engine.name == "postgres"
        sql = self._sql("SELECT failures, pending, window_start, locked_until, lockouts,"
                        " last_lockout FROM auth_throttle WHERE scope = ? AND name = ?"
                        + (" FOR UPDATE" if pg else ""))
        cur.execute(sql, (scope, name))
        row = cur.fetchone()
        if row is None and create:
            # concurrent makers of the same row: one inserts, the others do nothing and
            # then wait for its row lock
            cur.execute(self._sql(
                "INSERT INTO auth_throttle (scope, name, failures, pending, window_start,"
                " locked_until, lockouts, last_lockout) VALUES (?, ?, 0, 0, ?, 0, 0, 0)"
                " ON CONFLICT (scope, name) DO NOTHING"), (scope, name, now))
            cur.execute(sql, (scope, name))
            row = cur.fetchone()
        if row is None:
            return None
        return (int(row[0]), int(row[1]), float(row[2]), float(row[3]), int(row[4]),
                float(row[5]))

    def throttle_reserve(self, counters: Sequence[tuple[str, str, int]], now: float,
                         window: float) -> Deferred[tuple[bool, list[int], float]]:
        def q(cur: Any) -> tuple[bool, list[int], float]:
            rows = {}
            for scope, name, _limit in sorted(counters):    # one lock order: no deadlock
                row = self._lock_rows(cur, scope, name, True, now)
                assert row is not None
                failures, pending, start, locked, _n, _last = row
                if now - start >= window:        # a new window: old failures forgotten
                    failures, pending, start = 0, 0, now
                rows[(scope, name)] = (failures, pending, start, locked)
            counts = [rows[(s, n)][0] for s, n, _ in counters]
            locked_until = max((r[3] for r in rows.values() if r[3] > now), default=0.0)
            if locked_until:
                return False, counts, locked_until
            if any(rows[(s, n)][0] + rows[(s, n)][1] >= limit for s, n, limit in counters):
                return False, counts, 0.0       # every slot taken by failures and checks
            for (scope, name), (failures, pending, start, _l) in rows.items():
                cur.execute(self._sql(
                    "UPDATE auth_throttle SET failures = ?, pending = ?, window_start = ?"
                    " WHERE scope = ? AND name = ?"),
                    (failures, pending + 1, start, scope, name))
            return True, counts, 0.0

        return self._run(q, write=True)

    def throttle_confirm(self, counters: Sequence[tuple[str, str, int]], now: float,
                         first: float, cap: float, memory: float
                         ) -> Deferred[list[tuple[int, float]]]:
        def q(cur: Any) -> list[tuple[int, float]]:
            done: dict[tuple[str, str], tuple[int, float]] = {}
            for scope, name, limit in sorted(counters):
                row = self._lock_rows(cur, scope, name, False, now)
                if row is None:        # cleared by an administrator meanwhile
                    done[(scope, name)] = (0, 0.0)
                    continue
                failures, pending, _start, locked, lockouts, last = row
                failures, pending = failures + 1, max(pending - 1, 0)
                seconds = 0.0
                if failures >= limit and locked <= now:
                    n = lockouts if now - last < memory else 0
                    seconds = float(min(first * 2 ** min(n, 30), cap))
                    cur.execute(self._sql(
                        "UPDATE auth_throttle SET failures = 0, pending = ?,"
                        " window_start = ?, locked_until = ?, lockouts = ?, last_lockout = ?"
                        " WHERE scope = ? AND name = ?"),
                        (pending, now, now + seconds, n + 1, now, scope, name))
                else:
                    cur.execute(self._sql(
                        "UPDATE auth_throttle SET failures = ?, pending = ?"
                        " WHERE scope = ? AND name = ?"), (failures, pending, scope, name))
                done[(scope, name)] = (failures, seconds)
            return [done[(s, n)] for s, n, _ in counters]

        return self._run(q, write=True)

    def throttle_release(self, counters: Sequence[tuple[str, str, int]]) -> Deferred[None]:
        def q(cur: Any) -> None:
            for scope, name, _limit in sorted(counters):
                cur.execute(self._sql(
                    "UPDATE auth_throttle SET pending = pending - 1"
                    " WHERE scope = ? AND name = ? AND pending > 0"), (scope, name))

        return self._run(q, write=True)

    def familiar_get(self, user: str, device: str, address: str, since: float
                     ) -> Deferred[bool]:
        def q(cur: Any) -> bool:
            return familiar_txn(self.store.engine, cur, user, device, address, since)

        return self._run(q)

    def familiar_note(self, user: str, kind: str, value: str, now: float,
                      forget_before: float) -> Deferred[None]:
        engine = self.store.engine

        def q(cur: Any) -> None:
            cur.execute(engine.upsert("auth_familiar", ("user_name", "kind", "value"),
                                      ("last_ok",)), (user, kind, value, now))
            cur.execute(self._sql("DELETE FROM auth_familiar WHERE user_name = ?"
                                  " AND last_ok < ?"), (user, forget_before))

        return self._run(q, write=True)

    # -- e-mail codes ---------------------------------------------------------------------
    def save_email_code(self, user_id: int, code_mac: str, sent_at: float, expires_at: float,
                        tries: int) -> Deferred[None]:
        engine = self.store.engine

        def q(cur: Any) -> None:
            cur.execute(engine.upsert("email_codes", ("user_id",),
                                      ("code_mac", "sent_at", "expires_at", "tries_left",
                                       "used_at")),
                        (user_id, code_mac, sent_at, expires_at, tries, None))

        return self._run(q, write=True)

    def get_email_code(self, user_id: int) -> Deferred[dict[str, Any] | None]:
        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(self._sql("SELECT code_mac, sent_at, expires_at, tries_left, used_at"
                                  " FROM email_codes WHERE user_id = ?"), (user_id,))
            row = cur.fetchone()
            if row is None:
                return None
            keys = ("code_mac", "sent_at", "expires_at", "tries_left", "used_at")
            return dict(zip(keys, row, strict=True))

        return self._run(q)

    def spend_email_code_try(self, user_id: int) -> Deferred[int]:
        def q(cur: Any) -> int:
            cur.execute(self._sql("UPDATE email_codes SET tries_left = tries_left - 1"
                                  " WHERE user_id = ? AND tries_left > 0"), (user_id,))
            cur.execute(self._sql("SELECT tries_left FROM email_codes WHERE user_id = ?"),
                        (user_id,))
            row = cur.fetchone()
            return 0 if row is None else max(0, int(row[0]))

        return self._run(q, write=True)

    def use_email_code(self, user_id: int, code_mac: str, now: float) -> Deferred[bool]:
        def q(cur: Any) -> bool:
            cur.execute(self._sql("UPDATE email_codes SET used_at = ? WHERE user_id = ?"
                                  " AND code_mac = ? AND used_at IS NULL AND tries_left > 0"),
                        (now, user_id, code_mac))
            return bool(cur.rowcount == 1)

        return self._run(q, write=True)

    def delete_email_code(self, user_id: int) -> Deferred[None]:
        def q(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM email_codes WHERE user_id = ?"), (user_id,))

        return self._run(q, write=True)

    # -- TOTP replay protection -------------------------------------------------------------
    def use_totp_step(self, user_id: int, step: int) -> Deferred[bool]:
        engine = self.store.engine

        def q(cur: Any) -> bool:
            cur.execute(self._sql("UPDATE totp_steps SET step = ? WHERE user_id = ?"
                                  " AND step < ?"), (step, user_id, step))
            if cur.rowcount == 1:
                return True
            cur.execute(self._sql("SELECT 1 FROM totp_steps WHERE user_id = ?"), (user_id,))
            if cur.fetchone() is not None:
                return False
            try:
                cur.execute(self._sql("INSERT INTO totp_steps (user_id, step) VALUES (?, ?)"),
                            (user_id, step))
            except Exception as e:
                if engine.is_unique_violation(e):
                    return False        # another process accepted a code just now
                raise
            return True

        return self._run(q, write=True)
