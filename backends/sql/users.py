"""The SQL store's users: accounts and their directory tokens (``IUserStore``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from backends.sql.base import _USER_COLS, StorePart, _chunks, _user_from_row
from easync.lookup import indexable_email, user_tokens
from easync.model import DEFAULT_FOLDERS, User
from easync.storerules import user_changes

__all__ = ["SqlUsers"]



class SqlUsers(StorePart):
    """Users, their default folders at creation, and the ``user_names`` tokens."""

    def add_user(self, name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        return self._run(self.add_user_txn, name.lower(), password_hash, email,
                         bool(activesync), write=True)

    def add_user_txn(self, cur: Any, name: str, password_hash: str | None,
                     email: str | None, activesync: bool) -> User:
        """``add_user`` (``name`` already lower-case) inside the caller's write
        transaction."""
        cur.execute(self._sql("SELECT 1 FROM users WHERE name = ?"), (name,))
        if cur.fetchone():
            raise KeyError(name)
        try:
            uid = self.engine.insert_id(
                cur, "INSERT INTO users (name, email, password_hash, activesync, extra)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, email, password_hash, int(activesync), "{}"))
        except Exception as e:
            if self.engine.is_unique_violation(e):
                raise KeyError(name) from None
            raise
        cur.executemany(
            self._sql("INSERT INTO folders (user_id, parent_id, name, type) VALUES (?, ?, ?, ?)"),
            [(uid, "0", fname, ftype) for ftype, fname in DEFAULT_FOLDERS])
        self.write_user_tokens_txn(cur, [(uid, name, email, {})])
        return User(id=uid, name=name, email=email, activesync=activesync,
                    password_hash=password_hash, extra={})

    def get_user(self, name: str) -> Deferred[User | None]:
        return self._run(self.get_user_txn, name.lower())

    def get_user_txn(self, cur: Any, name: str) -> User | None:
        """The user of this lower-case name, inside the caller's transaction."""
        cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE name = ?"), (name,))
        row = cur.fetchone()
        return _user_from_row(row) if row else None

    def list_users(self) -> Deferred[list[User]]:
        def q(cur: Any) -> list[User]:
            cur.execute(f"SELECT {_USER_COLS} FROM users ORDER BY name")
            return [_user_from_row(r) for r in cur.fetchall()]

        return self._run(q)

    def update_user(self, name: str, **fields: Any) -> Deferred[User]:
        """Set ``password_hash``, ``email``, ``activesync``; any other keyword sets that
        key of ``extra`` (None removes it); ``extra={…}`` merges a dict likewise."""
        return self._run(self._update_user, name.lower(), fields, write=True)

    def _update_user(self, cur: Any, name: str, fields: dict[str, Any]) -> User:
        user = self.get_user_txn(cur, name)
        if user is None:
            raise KeyError(name)
        changes = user_changes(user.extra, fields)
        sets = ", ".join(f"{k} = ?" for k in changes)
        cur.execute(self._sql(f"UPDATE users SET {sets} WHERE id = ?"),
                    (*changes.values(), user.id))
        result = self.get_user_txn(cur, name)
        assert result is not None
        if user_tokens(user.name, user.email, user.extra) != \
                user_tokens(result.name, result.email, result.extra):
            # (not on every login's as_last_used: only when a directory word changed)
            self.write_user_tokens_txn(cur, [(result.id, result.name, result.email,
                                           result.extra)])
        return result


    def write_user_tokens_txn(self, cur: Any,
                              users: Sequence[tuple[int, str, str | None, dict[str, Any]]]
                              ) -> None:
        """Replace the directory tokens of these (id, name, email, extra) users."""
        ids = [(u[0],) for u in users]
        if not ids:
            return
        cur.executemany(self._sql("DELETE FROM user_names WHERE user_id = ?"), ids)
        rows = [(uid, tok) for uid, name, email, extra in users
                for tok in sorted(user_tokens(name, email, extra))]
        if rows:
            cur.executemany(self._sql("INSERT INTO user_names (user_id, token) VALUES (?, ?)"),
                            rows)


    def _users_by_id(self, cur: Any, ids: Sequence[int]) -> dict[int, User]:
        out: dict[int, User] = {}
        for part in _chunks(list(ids)):
            cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE id IN"
                                  f" {self.engine.placeholders(len(part))}"), part)
            for row in cur.fetchall():
                u = _user_from_row(row)
                out[u.id] = u
        return out

    def find_users(self, query: str, limit: int) -> Deferred[list[User]]:
        """See IUserStore (index user_names_lookup)."""

        def q(cur: Any) -> list[User]:
            ids = self._prefix_walk(cur, "user_names", "user_id", "1 = 1", (), query,
                                    int(limit))
            users = self._users_by_id(cur, ids)
            return [users[i] for i in ids if i in users]

        return self._run(q)

    def find_users_by_emails(self, emails: list[str], limit: int
                             ) -> Deferred[dict[str, list[User]]]:
        """See IUserStore: tokens equal to the address (index user_names_lookup),
        kept when the address is the user's own (not a display-name word)."""

        def q(cur: Any) -> dict[str, list[User]]:
            wanted = sorted({a for a in (indexable_email(e) for e in emails) if a})
            hits = self._union_probe(cur, "user_names", "token", "user_id", "1 = 1", (),
                                     wanted, int(limit))
            users = self._users_by_id(cur, sorted({i for ids in hits.values() for i in ids}))
            out: dict[str, list[User]] = {}
            for addr, ids in hits.items():
                mine = [users[i] for i in sorted(ids) if i in users
                        and indexable_email(users[i].email or users[i].name) == addr]
                if mine:
                    out[addr] = mine
            return out

        return self._run(q)

