"""The SQL store's devices and their sync state (``IStateStore``)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, fail

from backends.sql.base import _DEVICE_COLS, StorePart, _device_from_row
from easync.deviceaccess import Rule, check_rule, rule_matches
from easync.errors import TooManyDevices
from easync.model import StateWrite, User
from easync.storerules import (
    device_values,
    feed_cursor,
    purged_folder,
    refuse_expired,
    refuse_replaced,
)
from easync.storerules import dumps as _dumps

__all__ = ["SqlState"]

#: user ids per UPDATE of ``access_version``
_CHUNK = 400


class SqlState(StorePart):
    """Devices and per-device state blobs."""

    def get_device(self, user: User, device_id: str) -> Deferred[dict[str, Any] | None]:
        return self._run(self._get_device, user.id, device_id)

    def _get_device(self, cur: Any, user_id: int, device_id: str) -> dict[str, Any] | None:
        cur.execute(self._sql(f"SELECT {', '.join(_DEVICE_COLS)} FROM devices"
                              " WHERE user_id = ? AND device_id = ?"), (user_id, device_id))
        row = cur.fetchone()
        return _device_from_row(row) if row else None

    def save_device(self, user: User, device_id: str, *, max_devices: int = 0,
                    **fields: Any) -> Deferred[dict[str, Any]]:
        """Create or update; ``first_seen``/``last_seen`` default to now on creation.
        Unknown field names raise ValueError; ``wipe`` must be none|pending|done.
        ``max_devices`` (0: none): a new device when the user has that many already
        raises ``TooManyDevices`` and stores nothing (issue #10 point 7)."""
        try:
            values = device_values(fields)
        except ValueError as e:
            return fail(e)
        return self._run(self._save_device, user.id, device_id, values,
                         self.db.reactor.seconds(), max_devices, write=True)

    def _save_device(self, cur: Any, user_id: int, device_id: str, values: dict[str, Any],
                     now: float, max_devices: int = 0) -> dict[str, Any]:
        exists = self._sql("SELECT 1 FROM devices WHERE user_id = ? AND device_id = ?")
        cur.execute(exists, (user_id, device_id))
        new = cur.fetchone() is None
        if new:
            # A new device: lock the user's row (as item writes do) so that the count
            # below and the insert are not raced by another new device of this user
            # (PostgreSQL's READ COMMITTED; SQLite's write lock is already held), then
            # look again: the same device may have been inserted while we waited.
            self.engine.bump(cur, "users", "modseq", user_id, 0)
            cur.execute(exists, (user_id, device_id))
            new = cur.fetchone() is None
        if new and max_devices:
            cur.execute(self._sql("SELECT COUNT(*) FROM devices WHERE user_id = ?"),
                        (user_id,))
            (count,) = cur.fetchone()
            if count >= max_devices:
                raise TooManyDevices(int(count), max_devices)
        if new:
            row = {"first_seen": now, "last_seen": now, **values}
            cols = ("user_id", "device_id", *row)
            cur.execute(self._sql(f"INSERT INTO devices ({', '.join(cols)}) VALUES "
                                  f"{self.engine.placeholders(len(cols))}"),
                        (user_id, device_id, *row.values()))
        elif values:
            sets = ", ".join(f"{k} = ?" for k in values)
            cur.execute(self._sql(f"UPDATE devices SET {sets} WHERE user_id = ?"
                                  " AND device_id = ?"), (*values.values(), user_id, device_id))
        dev = self._get_device(cur, user_id, device_id)
        assert dev is not None
        return dev

    def list_devices(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        """Devices (each with a 'user' key: the user's name), by user then device."""

        def q(cur: Any) -> list[dict[str, Any]]:
            cols = ", ".join(f"d.{c}" for c in _DEVICE_COLS)
            sql = f"SELECT u.name, {cols} FROM devices d JOIN users u ON u.id = d.user_id"
            if user is None:
                cur.execute(sql + " ORDER BY u.name, d.device_id")
            else:
                cur.execute(self._sql(sql + " WHERE d.user_id = ? ORDER BY d.device_id"),
                            (user.id,))
            out = []
            for row in cur.fetchall():
                dev = _device_from_row(row[1:])
                dev["user"] = row[0]
                out.append(dev)
            return out

        return self._run(q)

    # -- device access (easync.deviceaccess) --------------------------------------------
    def set_device_access(self, user: User, device_id: str, access: str | None
                          ) -> Deferred[dict[str, Any] | None]:
        """Set a device's own access decision (None: the rules decide), bumping the
        user's ``access_version`` in the same transaction; the device record, or None
        (nothing written) when the user has no such device."""
        try:
            values = device_values({"access": access})
        except ValueError as e:
            return fail(e)

        def q(cur: Any) -> dict[str, Any] | None:
            sets = ", ".join(f"{k} = ?" for k in values)
            cur.execute(self._sql(f"UPDATE devices SET {sets} WHERE user_id = ?"
                                  " AND device_id = ?"), (*values.values(), user.id, device_id))
            if cur.rowcount != 1:
                return None
            self.engine.bump(cur, "users", "access_version", user.id, 1)
            return self._get_device(cur, user.id, device_id)

        return self._run(q, write=True)

    def device_rules_txn(self, cur: Any, user_id: int | None) -> list[Rule]:
        """The rules that apply to ``user_id``'s devices (its own and everyone's); with
        None, every rule.  Each with its user's name."""
        sql = ("SELECT r.id, r.user_id, r.kind, r.pattern, r.action, r.created, r.created_by,"
               " u.name FROM device_rules r LEFT JOIN users u ON u.id = r.user_id")
        if user_id is None:
            cur.execute(sql + " ORDER BY r.id")
        else:
            # two ranges of the user_id index
            cur.execute(self._sql(sql + " WHERE r.user_id IS NULL UNION ALL " + sql
                                  + " WHERE r.user_id = ? ORDER BY 1"), (user_id,))
        return [Rule(int(r[0]), None if r[1] is None else int(r[1]), str(r[2]), str(r[3]),
                     str(r[4]), float(r[5] or 0.0), r[6], r[7]) for r in cur.fetchall()]

    def list_device_rules(self, user: User | None) -> Deferred[list[Rule]]:
        return self._run(self.device_rules_txn, None if user is None else user.id)

    def add_device_rule(self, user: User | None, kind: str, pattern: str, action: str,
                        created_by: str | None = None) -> Deferred[Rule]:
        now = self.db.reactor.seconds()

        def q(cur: Any) -> Rule:
            uid = None if user is None else user.id
            rid = self.engine.insert_id(
                cur, "INSERT INTO device_rules (user_id, kind, pattern, action, created,"
                " created_by) VALUES (?, ?, ?, ?, ?, ?)",
                (uid, kind, pattern, action, now, created_by))
            rule = Rule(int(rid), uid, kind, pattern, action, now, created_by,
                        None if user is None else user.name)
            return replace(rule, touched=self._access_touched(cur, rule))

        try:
            check_rule(kind, pattern, action)
        except ValueError as e:
            return fail(e)
        return self._run(q, write=True)

    def remove_device_rule(self, rule_id: int) -> Deferred[Rule | None]:
        def q(cur: Any) -> Rule | None:
            found = [r for r in self.device_rules_txn(cur, None) if r.id == rule_id]
            if not found:
                return None
            cur.execute(self._sql("DELETE FROM device_rules WHERE id = ?"), (rule_id,))
            return replace(found[0], touched=self._access_touched(cur, found[0]))

        return self._run(q, write=True)

    def _access_touched(self, cur: Any, rule: Rule) -> tuple[int, ...]:
        """Bump ``access_version`` of the users whose devices ``rule`` (added or
        removed) applies to, in the caller's transaction, so that their held Pings
        and Sync-Waits look at their device again (a rule for everyone too); their
        ids.  A scan of ``devices`` in the database thread, for an admin's action."""
        if rule.user_id is not None:
            users = [rule.user_id]
        else:
            cur.execute("SELECT user_id, device_id, device_type, user_agent FROM devices")
            users = sorted({int(r[0]) for r in cur.fetchall()
                            if rule_matches(rule, str(r[1]), str(r[2] or ""), str(r[3] or ""))})
        for i in range(0, len(users), _CHUNK):
            part = users[i:i + _CHUNK]
            cur.execute(self._sql("UPDATE users SET access_version = access_version + 1"
                                  f" WHERE id IN ({','.join('?' * len(part))})"), part)
        return tuple(users)

    def delete_device(self, user: User, device_id: str) -> Deferred[None]:
        return self._run(self.delete_device_txn, user.id, device_id, write=True)

    def delete_device_txn(self, cur: Any, user_id: int, device_id: str) -> None:
        """``delete_device`` inside the caller's write transaction."""
        for table in ("sync_states", "held_requests", "devices"):
            cur.execute(self._sql(f"DELETE FROM {table} WHERE user_id = ?"
                                  " AND device_id = ?"), (user_id, device_id))

    def get_state(self, user: User, device_id: str, name: str
                  ) -> Deferred[dict[str, Any] | None]:
        def q(cur: Any) -> dict[str, Any] | None:
            cur.execute(self._sql("SELECT state FROM sync_states WHERE user_id = ?"
                                  " AND device_id = ? AND name = ?"), (user.id, device_id, name))
            row = cur.fetchone()
            return json.loads(row[0]) if row else None

        return self._run(q)

    def save_state(self, user: User, write: StateWrite) -> Deferred[None]:
        return self._run(self.save_state_txn, user.id, write, write=True)  # (2nd: the flag)

    def save_state_txn(self, cur: Any, user_id: int, write: StateWrite) -> None:
        """``save_state`` inside the caller's write transaction (``StateExpired``, and
        nothing written, when the folder's purged mark passed ``write.feed_from``;
        ``StateConflict`` when the stored state is not the one ``write.replaces``:
        its row read locked, PostgreSQL ``FOR UPDATE``, SQLite's write transaction
        being exclusive)."""
        fid = purged_folder(write)
        if fid is not None:
            cur.execute(self._sql("SELECT purged FROM folders WHERE id = ?"), (fid,))
            row = cur.fetchone()
            refuse_expired(write, int(row[0]) if row else 0)
        self.check_replaced_txn(cur, user_id, write, lock=True)
        cur.execute(self.engine.upsert("sync_states", ("user_id", "device_id", "name"),
                                       ("state", "feed_cursor")),
                    (user_id, write.device_id, write.name, _dumps(write.state),
                     feed_cursor(write.name, write.state)))

    def check_replaced_txn(self, cur: Any, user_id: int, write: StateWrite,
                           lock: bool = False) -> None:
        """``StateConflict`` when ``write`` names the state it replaces
        (``StateWrite.replaces``) and the stored one is another; ``lock``: read the row
        ``FOR UPDATE`` (PostgreSQL; SQLite's write transaction is exclusive anyway)."""
        if write.replaces is None:
            return
        lock_sql = " FOR UPDATE" if lock and self.engine.name == "postgres" else ""
        cur.execute(self._sql("SELECT state FROM sync_states WHERE user_id = ?"
                              " AND device_id = ? AND name = ?" + lock_sql),
                    (user_id, write.device_id, write.name))
        row = cur.fetchone()
        refuse_replaced(write, json.loads(row[0]) if row else None)

    def delete_state(self, user: User, device_id: str, name: str) -> Deferred[None]:
        """Forget one state blob (no error if absent)."""

        def q(cur: Any) -> None:
            cur.execute(self._sql("DELETE FROM sync_states WHERE user_id = ? AND device_id = ?"
                                  " AND name = ?"), (user.id, device_id, name))

        return self._run(q, write=True)

