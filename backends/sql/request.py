"""What a request reads before its command runs, in one transaction
(``IStateStore.read_request``, ``easync.requestread``).

The user (by name), its device, the device's sync states asked for, the user's folders
and the auth rows a remembered login's lockout check needs: the same statements as
``SqlUsers.get_user``, ``SqlState.get_device``/``get_state``, ``SqlItems.list_folders``
and ``SqlAuthStore``'s reads (whose statements are the functions here), run one after
the other in one pool thread: one round trip from the reactor instead of one each.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from backends.sql.base import StorePart, _chunks
from backends.sql.engines import Engine
from backends.sql.state import SqlState
from backends.sql.users import SqlUsers
from easync.requestread import AuthRead, RequestRead, RequestSnapshot, followed_states

__all__ = ["SqlRequestReads", "familiar_txn", "setting_txn", "throttle_row_txn"]

FOLDERS_SQL = ("SELECT id, parent_id, name, type, modseq, purged FROM folders"
               " WHERE user_id = ? AND deleted = 0"
               " ORDER BY CASE WHEN type < 12 THEN 0 ELSE 1 END, id")


def setting_txn(engine: Engine, cur: Any, name: str) -> str | None:
    """A server setting's value (None: unset)."""
    cur.execute(engine.sql("SELECT value FROM server_settings WHERE name = ?"), (name,))
    row = cur.fetchone()
    return None if row is None else str(row[0])


def throttle_row_txn(engine: Engine, cur: Any, scope: str, name: str
                     ) -> tuple[int, float, float] | None:
    """(failures, window start, locked until) of one throttle counter, or None."""
    cur.execute(engine.sql("SELECT failures, window_start, locked_until FROM"
                           " auth_throttle WHERE scope = ? AND name = ?"), (scope, name))
    row = cur.fetchone()
    return None if row is None else (int(row[0]), float(row[1]), float(row[2]))


def familiar_txn(engine: Engine, cur: Any, user: str, device: str, address: str,
                 since: float) -> bool:
    """Did the DeviceId or the address log in as ``user`` at ``since`` or later?"""
    for kind, value in (("device", device), ("addr", address)):
        if not value:
            continue
        cur.execute(engine.sql(          # primary-key look-ups
            "SELECT 1 FROM auth_familiar WHERE user_name = ? AND kind = ?"
            " AND value = ? AND last_ok >= ?"), (user, kind, value, since))
        if cur.fetchone() is not None:
            return True
    return False


class SqlRequestReads(StorePart):
    """``read_request`` over the users and state parts."""

    def __init__(self, db: Any, users: SqlUsers, state: SqlState) -> None:
        super().__init__(db)
        self.users = users
        self.state = state

    def read_request(self, read: RequestRead) -> Deferred[RequestSnapshot]:
        return self._run(self._read, read)

    def _read(self, cur: Any, read: RequestRead) -> RequestSnapshot:
        user = self.users.get_user_txn(cur, read.user_name.lower())
        snap = RequestSnapshot(user)
        if user is not None:
            snap.device = self.state._get_device(cur, user.id, read.device_id)
            snap.rules = self.state.device_rules_txn(cur, user.id)
            snap.states = self._states(cur, user.id, read.device_id, read.states)
            more = followed_states(read, snap.states)
            if more:
                snap.states.update(self._states(cur, user.id, read.device_id, more))
            if read.folders:
                from backends.sql.shares import list_folders_txn
                snap.folders = list_folders_txn(self.engine, cur, user.id,
                                                self.db.schema_version >= 9)
        if read.auth is not None:
            self._auth(cur, read.auth, snap)
        return snap

    def _states(self, cur: Any, user_id: int, device_id: str, names: Sequence[str]
                ) -> dict[str, dict[str, Any] | None]:
        found: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
        # a name with a NUL (a CollectionId sent as WBXML OPAQUE) is never stored:
        # not found, without asking (PostgreSQL refuses a NUL in text)
        for part in _chunks(sorted({n for n in names if "\x00" not in n})):
            cur.execute(self._sql(
                "SELECT name, state FROM sync_states WHERE user_id = ? AND device_id = ?"
                f" AND name IN {self.engine.placeholders(len(part))}"),
                (user_id, device_id, *part))
            for name, state in cur.fetchall():
                found[name] = json.loads(state)
        return found

    def _auth(self, cur: Any, auth: AuthRead, snap: RequestSnapshot) -> None:
        engine = self.engine
        if auth.setting is not None:
            snap.setting = setting_txn(engine, cur, auth.setting)
        snap.familiar = familiar_txn(engine, cur, auth.user, auth.device, auth.address,
                                     auth.since)
        snap.counters = {(scope, name): throttle_row_txn(engine, cur, scope, name)
                         for scope, name in auth.counters}
