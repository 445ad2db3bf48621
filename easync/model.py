"""Plain data passed between the protocol side and the stores.

Nothing here talks to a database or the network.  An item's ``data`` is the
*canonical item dict* described in ``easync/items/__init__.py``: JSON-able,
keyed by the MS-AS property names, independent of the protocol version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Folder Type values (MS-ASCMD 2.2.3.186.3) and the class each one syncs.
FOLDER_CLASS: dict[int, str] = {
    1: "Email", 2: "Email", 3: "Email", 4: "Email", 5: "Email", 6: "Email", 12: "Email",
    7: "Tasks", 15: "Tasks",
    8: "Calendar", 13: "Calendar",
    9: "Contacts", 14: "Contacts",
    10: "Notes", 17: "Notes",
}
USER_FOLDER_TYPE = {"Contacts": 14, "Calendar": 13, "Tasks": 15}


def is_system_user(name: str | None) -> bool:
    """A user the server makes to own shared data, never a person: the company
    address book's ``~company`` (SQL store) and ``crm:company`` (CRM store).  Its name
    starts with "~" or holds a ":" (``easync-admin user add`` refuses both, and a
    Basic-auth user name cannot carry a ":").  Nobody logs in as it, over EAS or on the
    account page, and no password, ActiveSync, two-factor or administrator switch is
    set on it."""
    return bool(name) and (str(name).startswith("~") or ":" in str(name))


# The default hierarchy every user gets: (type, display name).
DEFAULT_FOLDERS: tuple[tuple[int, str], ...] = (
    (9, "Contacts"),
    (8, "Calendar"),
    (7, "Tasks"),
    (2, "Inbox"),
    (3, "Drafts"),
    (4, "Deleted Items"),
    (5, "Sent Items"),
    (6, "Outbox"),
)


@dataclass
class User:
    id: int
    name: str
    email: str | None = None
    activesync: bool = False
    password_hash: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Folder:
    server_id: str          # stable, never reused; what EAS calls the folder ServerId
    parent_id: str          # "0" for top level
    name: str
    type: int               # MS-ASCMD folder Type
    modseq: int = 0         # modseq of the newest change to an item in this folder
    # the highest modseq of a tombstone purged from it (easync.storerules.feed_cursor):
    # a sync state needing the feed below it gets Status 3
    purged: int = 0
    # Shared folders (issue #14 point 1).  read_only: the device may not add, change
    # or delete items in it (a store's apply answers "readonly").  owner: the user
    # name of the owner when the folder is someone else's (None: the user's own).
    read_only: bool = False
    owner: str | None = None
    # One of the user's own folders that others hold too (the SQL store's shares):
    # a write to it wakes their devices as well.
    shared_out: bool = False

    @property
    def cls(self) -> str:
        return FOLDER_CLASS.get(self.type, "Email")

    @property
    def is_default(self) -> bool:
        return self.type < 12


@dataclass
class Item:
    server_id: str
    folder_id: str
    cls: str                # "Contacts" | "Calendar" | "Tasks"
    data: dict[str, Any]
    modseq: int = 0


@dataclass
class Change:
    """One entry of a folder's change feed."""

    server_id: str
    modseq: int
    deleted: bool
    created_modseq: int     # modseq at which the item first appeared in this folder
    item: Item | None = None  # None for deletions (and for the two kinds below)
    # A live item outside the window asked for (``changes_since`` with ``held_upto``),
    # or one that leaves the window (``window_changes``): a device holding it drops it
    # (Sync SoftDelete, MS-ASCMD 2.2.3.172).
    soft: bool = False
    # A live item that enters the window (``window_changes``): the device lacks it (Add).
    enters: bool = False


@dataclass
class ChangeBatch:
    changes: list[Change]
    more: bool              # more changes exist after the last one returned
    high: int               # cursor to resume from (modseq of the last change returned,
                            # or the cursor passed in when nothing was returned)


@dataclass
class Op:
    """A write, as applied by ``IItemStore.apply``.

    kind: "add" (data; server_id is assigned by the store),
          "change" (server_id, data: the full new canonical dict),
          "delete" (server_id).
    ``ref`` is echoed in the result (the engine uses the ClientId).
    """

    kind: str
    server_id: str | None = None
    data: dict[str, Any] | None = None
    ref: str | None = None
    cls: str | None = None
    # A delete a device made (Sync Delete): the id of that device.  The store keeps
    # the item's data as it deletes it (``IDeletedStore``: "nothing lost to a phone"),
    # in the same transaction where it can.
    keep: str | None = None
    # An add that restores a kept item (``easync.deleted``): that kept row's id.  The
    # store marks the row restored with the new server id in the transaction that
    # creates the item (a CRM store: in the one that records the CRM's record, which
    # its journal finds again after a crash), and makes no item for a row restored
    # already (``OpResult.error`` "restored", ``server_id`` what it became).
    restores: int | None = None


@dataclass
class KeptItem:
    """An item a device deleted, kept for a while (``IDeletedStore``)."""

    id: int                 # the kept row's id (what list and restore name)
    user_id: int
    device_id: str          # the device whose Sync deleted it
    folder_id: str          # the folder it was in
    cls: str                # "Contacts" | "Calendar" | "Tasks"
    server_id: str          # its server id then
    data: dict[str, Any]    # its canonical data then
    summary: str            # a contact's name, an event's or task's subject
    backend: str            # "sql" | "crm": the item store that held it
    deleted_at: float
    restored_at: float | None = None
    restored_id: str | None = None     # the server id of the item it was restored as


@dataclass
class OpResult:
    ref: str | None
    server_id: str | None
    ok: bool
    modseq: int = 0
    error: str | None = None  # "notfound" | "invalid" | "readonly" (a read-only folder)


@dataclass
class StateWrite:
    """A sync-state blob to save in the same transaction as item writes."""

    device_id: str
    name: str               # e.g. "sync:<collection id>" or "folders"
    state: dict[str, Any]
    # If set, ``IItemStore.apply`` calls it inside the transaction, after the ops,
    # with their OpResults, and saves what it returns instead of ``state`` (the
    # engine needs the modseqs the store just assigned to the device's own writes).
    build: Callable[[list[OpResult]], dict[str, Any]] | None = None
    # The ``easync.storerules.feed_cursor`` of the state this write replaces (None: no
    # check): a store refuses the write, and what goes with it, with
    # ``easync.errors.StateExpired`` when the folder's purged mark has passed it since
    # (a tombstone the request's feed read may have missed was purged meanwhile).
    feed_from: int | None = None
    # The (epoch, key) of the sync state this write replaces (None: no check): a store
    # refuses the write, and what goes with it, with ``easync.errors.StateConflict``
    # when the stored state is another one (``easync.storerules.refuse_replaced``).
    replaces: tuple[str, int] | None = None
