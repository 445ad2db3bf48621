"""A listener on the change hub for tests: what a held request is to the hub
(``IChangeNotifier.listen``), reduced to noting what it is told."""

from __future__ import annotations

import time

from twisted.internet.task import deferLater
from zope.interface import implementer

from easync.interfaces import ChangeHint, IChangeListener, IChangeNotifier


@implementer(IChangeListener)
class Heard:
    """Listens to ``folders`` of ``user_id`` on ``hub`` and notes each change it is
    told of (``folders``, ``hints``, in order).  ``once``: it leaves the hub at the
    first change, as a Ping answers (what the hub tells it in that same call, e.g.
    every folder on a wake-all, is still noted)."""

    def __init__(self, hub: IChangeNotifier, user_id: int, folders: list[str],
                 once: bool = True) -> None:
        self.hub = hub
        self.user_id = user_id
        self.once = once
        self.folders: list[str] = []
        self.hints: list[ChangeHint | None] = []
        hub.listen(user_id, list(folders), self)

    def on_change(self, folder_id: str, hint: ChangeHint | None) -> None:
        if self.once and not self.folders:
            self.hub.unlisten(self.user_id, self)
        self.folders.append(folder_id)
        self.hints.append(hint)

    @property
    def called(self) -> bool:
        """Told of a change yet?"""
        return bool(self.folders)

    def stop(self) -> None:
        """Leave the hub (idempotent)."""
        self.hub.unlisten(self.user_id, self)

    async def first(self, timeout: float = 5.0) -> list[str]:
        """The folders noted, once there is one (letting the reactor run)."""
        from twisted.internet import reactor

        deadline = time.monotonic() + timeout
        while not self.folders:
            if time.monotonic() > deadline:
                raise AssertionError("no change heard")
            await deferLater(reactor, 0.005, lambda: None)
        return self.folders
