"""The SQL store's record of held long polls (``IHoldStore``): which process holds
which device's Ping or Sync, so that ``easync-admin`` can list them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from backends.sql.base import StorePart
from easync.interfaces import IHoldStore
from easync.model import User

__all__ = ["SqlHolds"]


@implementer(IHoldStore)
class SqlHolds(StorePart):
    """The ``held_requests`` table."""

    def record_holds(self, node: str, starts: Sequence[tuple[int, str, str, float, float]],
                     ends: Sequence[tuple[int, str, float]]) -> Deferred[None]:
        """One transaction: remove the rows of ``ends`` (user id, device id, started)
        that ``node`` wrote, then write ``starts`` (user id, device id, command,
        started, deadline) as held on ``node`` (replacing the device's row)."""

        def q(cur: Any) -> None:
            if ends:
                cur.executemany(self._sql(
                    "DELETE FROM held_requests WHERE user_id = ? AND device_id = ?"
                    " AND node = ? AND started = ?"),
                    [(u, dev, node, since) for u, dev, since in ends])
            if starts:
                cur.executemany(self.engine.upsert(
                    "held_requests", ("user_id", "device_id"),
                    ("node", "command", "started", "deadline")),
                    [(u, dev, node, cmd, since, until) for u, dev, cmd, since, until in starts])

        return self._run(q, write=True)

    def clear_holds(self, node: str) -> Deferred[None]:
        """Forget every row of ``node``, and rows of any node whose deadline passed."""

        def q(cur: Any, now: float) -> None:
            cur.execute(self._sql("DELETE FROM held_requests WHERE node = ? OR deadline < ?"),
                        (node, now))

        return self._run(q, self.db.reactor.seconds(), write=True)

    def list_holds(self, user: User | None) -> Deferred[list[dict[str, Any]]]:
        """The held-request rows (keys user, device_id, node, command, started,
        deadline) of one user or of all, by user then device."""

        def q(cur: Any) -> list[dict[str, Any]]:
            sql = ("SELECT u.name, h.device_id, h.node, h.command, h.started, h.deadline"
                   " FROM held_requests h JOIN users u ON u.id = h.user_id")
            if user is None:
                cur.execute(sql + " ORDER BY u.name, h.device_id")
            else:
                cur.execute(self._sql(sql + " WHERE h.user_id = ? ORDER BY h.device_id"),
                            (user.id,))
            keys = ("user", "device_id", "node", "command", "started", "deadline")
            return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]

        return self._run(q)

