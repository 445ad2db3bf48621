"""The contracts between the protocol server and its stores.

The protocol side (``easync.http``, ``easync.commands``, ``easync.syncengine``)
only ever talks to these interfaces; ``backends/*`` implement them.  All
methods returning ``Deferred`` must never block the reactor.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from easync.model import ChangeBatch, Folder, Item, Op, OpResult, StateWrite, User


class IUserStore(Interface):
    """Local accounts (always in easync's own SQL database)."""

    def add_user(name: str, password_hash: str | None, email: str | None,
                 activesync: bool) -> Deferred[User]:
        """Create a user and its default folders. Raises KeyError if the name exists."""

    def get_user(name: str) -> Deferred[User | None]:
        """The user with this (case-insensitive) name, or None."""

    def list_users() -> Deferred[list[User]]:
        """All users, ordered by name."""

    def update_user(name: str, **fields: Any) -> Deferred[User]:
        """Set password_hash, email, activesync or keys of ``extra``. KeyError if missing."""


class IItemStore(Interface):
    """A user's folders and items, with a change feed."""

    def list_folders(user: User) -> Deferred[list[Folder]]:
        """All folders of the user (defaults first), with their current modseq."""

    def hierarchy_version(user: User) -> Deferred[int]:
        """A number that grows whenever a folder is created, renamed or deleted."""

    def create_folder(user: User, parent_id: str, name: str, type: int) -> Deferred[Folder]:
        """Create a user folder. ValueError('exists') if the name is taken under parent,
        ValueError('parent') if parent_id is not "0" nor a folder."""

    def update_folder(user: User, server_id: str, parent_id: str, name: str) -> Deferred[Folder]:
        """Rename/move. KeyError if missing, ValueError('special') for default folders,
        ValueError('exists'), ValueError('parent') as for create."""

    def delete_folder(user: User, server_id: str) -> Deferred[None]:
        """Delete a user folder and its items. KeyError if missing, ValueError('special')."""

    def get_items(user: User, server_ids: list[str]) -> Deferred[list[Item]]:
        """The live items among ``server_ids`` (missing ones are left out)."""

    def changes_since(user: User, folder_id: str, cursor: int, limit: int,
                      window: tuple[int | None, int | None] | None = None) -> Deferred[ChangeBatch]:
        """Up to ``limit`` changes in the folder with modseq > cursor, oldest first.

        Only the newest state of each item appears (the feed is keyed by item).
        ``window`` (start_ts, end_ts) in Unix seconds, when given, leaves out live
        calendar items that end before start_ts (recurring ones are kept), and
        for tasks ``(None, 1)`` means only incomplete tasks.  Cost: O(limit).
        """

    def count_changes_since(user: User, folder_id: str, cursor: int) -> Deferred[int]:
        """How many changes ``changes_since`` would return with no limit."""

    def apply(user: User, folder_id: str, ops: list[Op],
              state: StateWrite | None = None) -> Deferred[list[OpResult]]:
        """Apply writes to one folder; with ``state``, save that sync-state blob in the
        same transaction (all or nothing).  Each write gets a new modseq.  A change or
        delete of a missing item gives ``OpResult(ok=False, error="notfound")``."""

    def move_item(user: User, server_id: str, dst_folder_id: str) -> Deferred[str]:
        """Move an item, returning its new server id. KeyError('src'|'dst'),
        ValueError('class') when the destination holds another class."""


class IStateStore(Interface):
    """Devices and per-device sync state (always SQL)."""

    def get_device(user: User, device_id: str) -> Deferred[dict[str, Any] | None]:
        """The device record: keys device_id, device_type, user_agent, policy_key,
        wipe ('none'|'pending'|'done'), info (dict), first_seen, last_seen, last_sync,
        blocked (bool) — or None if never seen."""

    def save_device(user: User, device_id: str, **fields: Any) -> Deferred[dict[str, Any]]:
        """Create or update the device record with these fields; returns it."""

    def list_devices(user: User | None) -> Deferred[list[dict[str, Any]]]:
        """Devices of one user (or all, each with a 'user' key)."""

    def delete_device(user: User, device_id: str) -> Deferred[None]:
        """Forget a device and all its sync state."""

    def get_state(user: User, device_id: str, name: str) -> Deferred[dict[str, Any] | None]:
        """A state blob saved by ``save_state`` or ``IItemStore.apply``."""

    def save_state(user: User, write: StateWrite) -> Deferred[None]:
        """Save a state blob."""


class IChangeNotifier(Interface):
    """'Folder F of user U changed' — the push hub."""

    def publish(user_id: int, folder_id: str) -> None:
        """Announce a committed change."""

    def subscribe(user_id: int, folder_ids: list[str]) -> Deferred[list[str]]:
        """A Deferred firing with the changed folder ids at the next change to any of
        them; cancel it to unsubscribe."""

    waiting = Attribute("Number of subscriptions currently held.")
