"""The change hub for one process: "folder F of user U changed" wakes its waiters."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from easync.interfaces import IChangeNotifier


@implementer(IChangeNotifier)
class LocalNotifier:
    """In-process notifier.  Cost of a publish: O(waiters on that user's folder)."""

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        # user id -> folder id -> set of waiting Deferreds
        self._waiters: dict[int, dict[str, set[Deferred[list[str]]]]] = defaultdict(
            lambda: defaultdict(set)
        )
        # each waiting Deferred -> the folders it watches (until it is removed)
        self._folders: dict[Deferred[list[str]], list[str]] = {}
        self._count = 0
        self.published = 0

    @property
    def waiting(self) -> int:
        return self._count

    def publish(self, user_id: int, folder_id: str) -> None:
        self.published += 1
        folders = self._waiters.get(user_id)
        if not folders:
            return
        waiters = folders.get(folder_id)
        if not waiters:
            return
        for d in list(waiters):
            self._remove(user_id, d)
            d.callback([folder_id])

    def subscribe(self, user_id: int, folder_ids: list[str]) -> Deferred[list[str]]:
        d: Deferred[list[str]] = Deferred(lambda d: self._remove(user_id, d))
        self._folders[d] = list(folder_ids)
        folders = self._waiters[user_id]
        for fid in folder_ids:
            folders[fid].add(d)
        self._count += 1
        return d

    def users(self) -> list[int]:
        """The users that have at least one waiter now."""
        return list(self._waiters)

    def watched(self, user_id: int) -> list[str]:
        """The folders of this user that at least one waiter watches."""
        return list(self._waiters.get(user_id, ()))

    def wake_all(self) -> int:
        """Answer every waiter with all the folders it watches ("anything may have
        changed": used when this process may have missed changes, e.g. after losing
        the connection that brings other nodes' changes).  Returns how many."""
        everyone: dict[int, tuple[int, Deferred[list[str]]]] = {}
        for user_id, folders in self._waiters.items():
            for waiters in folders.values():
                for d in waiters:
                    everyone[id(d)] = (user_id, d)
        for user_id, d in everyone.values():
            if d.called:            # ended by an earlier waiter's callback
                continue
            watched = list(self._folders.get(d, ()))
            self._remove(user_id, d)
            d.callback(watched)
        return len(everyone)

    def _remove(self, user_id: int, d: Deferred[list[str]]) -> None:
        watched = self._folders.pop(d, ())
        folders = self._waiters.get(user_id)
        if folders is None:
            return
        removed = False
        for fid in watched:
            waiters = folders.get(fid)
            if waiters and d in waiters:
                waiters.discard(d)
                removed = True
                if not waiters:
                    del folders[fid]
        if not folders:
            self._waiters.pop(user_id, None)
        if removed:
            self._count -= 1
