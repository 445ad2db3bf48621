"""The change hub for one process: "folder F of user U changed" wakes its waiters.

A waiter is a ``listen`` listener (``easync.push.Hold``: told of every change, with the
change's ``ChangeHint`` when the publisher gave one, until it leaves).  A publish only
*tells* the listeners, which is cheap; the held requests answer later, a slice per reactor
turn (``easync.push.Holds``), so one change that concerns 10,000 Pings never holds the
reactor for long."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from zope.interface import implementer

from easync.interfaces import ChangeHint, IChangeListener, IChangeNotifier

__all__ = ["ANY", "LocalNotifier", "Lookout"]

#: listen to every folder of the user; published (by the SQLite poller, for a user
#: whose changes it may have missed) it means "any folder may have changed"
ANY = "*"


@implementer(IChangeNotifier)
class LocalNotifier:
    """In-process notifier.  Cost of a publish: O(waiters on that user's folder)."""

    def __init__(self, clock: Any = None) -> None:
        self.clock = clock
        # user id -> folder id -> set of listeners
        self._waiters: dict[int, dict[str, set[Any]]] = defaultdict(lambda: defaultdict(set))
        # each waiter -> the folders it watches (until it is removed)
        self._folders: dict[Any, list[str]] = {}
        self._count = 0
        self.published = 0

    @property
    def waiting(self) -> int:
        return self._count

    def publish(self, user_id: int, folder_id: str, hint: ChangeHint | None = None) -> None:
        self.published += 1
        folders = self._waiters.get(user_id)
        if not folders:
            return
        waiters = folders.get(folder_id)
        if waiters:
            for w in list(waiters):
                w.on_change(folder_id, hint)
        if folder_id != ANY:
            lookouts = folders.get(ANY)
            if lookouts:
                for w in list(lookouts):
                    w.on_change(folder_id, hint)

    def listen(self, user_id: int, folder_ids: list[str], listener: IChangeListener) -> None:
        if listener in self._folders:
            return
        self._folders[listener] = list(folder_ids)
        folders = self._waiters[user_id]
        for fid in folder_ids:
            folders[fid].add(listener)
        self._count += 1

    def unlisten(self, user_id: int, listener: IChangeListener) -> None:
        self._remove(user_id, listener)

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
        everyone: dict[int, tuple[int, Any]] = {}
        for user_id, folders in self._waiters.items():
            for waiters in folders.values():
                for w in waiters:
                    everyone[id(w)] = (user_id, w)
        for _user_id, w in everyone.values():
            for fid in list(self._folders.get(w, ())):
                w.on_change(fid, None)  # unhinted: the listener looks at them all
        return len(everyone)

    def _remove(self, user_id: int, d: Any) -> None:
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


@implementer(IChangeListener)
class Lookout:
    """Notes every change of one user's folders from its making until it hands them
    to the request's hold (``hand_over``) or is closed: made before a long poll's
    store read (``easync.http.resource``), it closes the window between that read
    and the hold's listening.  Cheap: a dict of the folders changed meanwhile."""

    __slots__ = ("news", "notifier", "user_id")

    def __init__(self, notifier: IChangeNotifier, user_id: int) -> None:
        self.notifier: IChangeNotifier | None = notifier
        self.user_id = user_id
        self.news: dict[str, ChangeHint | None] = {}
        notifier.listen(user_id, [ANY], self)

    def on_change(self, folder_id: str, hint: ChangeHint | None) -> None:
        news = self.news
        if folder_id in news:
            old = news[folder_id]
            news[folder_id] = None if old is None else old.merge(hint)
        else:
            news[folder_id] = hint

    def hand_over(self, listener: IChangeListener, folders: list[str]) -> None:
        """Tell ``listener``, which now listens to ``folders``, what changed in them
        since the lookout was made (``ANY``: each of them, unhinted), and close."""
        news = self.news
        self.close()
        if ANY in news:
            for fid in folders:
                listener.on_change(fid, None)
            return
        for fid, hint in news.items():
            if fid in folders:
                listener.on_change(fid, hint)

    def close(self) -> None:
        """Stop noting (idempotent)."""
        notifier, self.notifier = self.notifier, None
        if notifier is not None:
            notifier.unlisten(self.user_id, self)
            self.news = {}

    def finished(self, result: object = None) -> None:
        """For ``Request.notifyFinish``: the request ended (answered or gone)
        without handing over: close."""
        self.close()
