"""``IAuthStore`` on easync's SQL database (tables of schema version 3).

``SqlAuthStore(store)`` shares the ``SqlStore``'s connection pool and its transaction
plumbing (retries on deadlock, ``Unavailable`` when the database cannot answer), so
the throttling state and codes are shared by every process on the same database.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

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
        return self.store._run(fn, *args, write=write)

    def _sql(self, text: str) -> str:
        return self.store.engine.sql(text)

    # -- settings ---------------------------------------------------------------------
    def get_setting(self, name: str) -> Deferred[str | None]:
        def q(cur: Any) -> str | None:
            cur.execute(self._sql("SELECT value FROM server_settings WHERE name = ?"), (name,))
            row = cur.fetchone()
            return None if row is None else str(row[0])

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
            cur.execute(self._sql("SELECT failures, window_start, locked_until FROM"
                                  " auth_throttle WHERE scope = ? AND name = ?"), (scope, name))
            row = cur.fetchone()
            return None if row is None else (int(row[0]), float(row[1]), float(row[2]))

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
