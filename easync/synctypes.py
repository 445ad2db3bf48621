"""What the Sync command and the sync engine hand each other: plain data, no WBXML.

``easync.commands.sync`` parses the request's WBXML into a ``CollectionRequest`` per
collection (client commands as ``AddCommand``/``ChangeCommand``/``DeleteCommand``/
``FetchCommand``, their ApplicationData already read into canonical item dicts),
``easync.syncengine`` answers each with a ``CollectionResult`` (the status, the new
SyncKey, MoreAvailable, the ``ClientResponse`` to each client command and the
``ServerChange`` entries for the device, with the items themselves), and the command
renders that to WBXML.  The engine never sees an element and never builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from easync.model import Item


@dataclass(slots=True)
class AddCommand:
    """A client Add (MS-ASCMD 2.2.3.7.5)."""

    client_id: str                       # "" when the device sent none (Status 4)
    data: dict[str, Any] | None = None   # the ApplicationData read (None: none sent)
    error: str | None = None             # why it could not be read (Status 6)


@dataclass(slots=True)
class ChangeCommand:
    """A client Change (MS-ASCMD 2.2.3.24.5), of one occurrence with ``instance_id``."""

    server_id: str
    instance_id: str | None = None
    data: dict[str, Any] | None = None   # the ApplicationData read (empty when none sent)
    error: str | None = None             # why it could not be read (Status 6)
    digest: str = ""                     # of the ApplicationData as sent (see fingerprint)


@dataclass(slots=True)
class DeleteCommand:
    """A client Delete (MS-ASCMD 2.2.3.42.2), of one occurrence with ``instance_id``."""

    server_id: str
    instance_id: str | None = None


@dataclass(slots=True)
class FetchCommand:
    """A client Fetch (MS-ASCMD 2.2.3.63.2)."""

    server_id: str


@dataclass(slots=True)
class OtherCommand:
    """A child of Commands the engine does not act on: nothing is applied, but the
    request still gets an answer (it carried commands)."""

    name: str


ClientCommand = AddCommand | ChangeCommand | DeleteCommand | FetchCommand | OtherCommand


@dataclass
class CollectionRequest:
    """One collection of a Sync request, parsed (MS-ASCMD 2.2.3.30.2)."""

    collection_id: str
    sync_key: str
    window: int                         # the WindowSize in effect (2.2.3.199)
    get_changes: bool
    filter_type: int | None = None      # 2.2.3.68.2 (None: keep the one in effect)
    conflict: int = 1                   # 2.2.3.34: 1 server wins (default), 0 client wins
    supported: list[str] | None = None  # 2.2.3.171: canonical property names
    commands: list[ClientCommand] = field(default_factory=list)


ResponseKind = Literal["Add", "Change", "Delete", "Fetch"]


@dataclass(slots=True)
class ClientResponse:
    """The answer to one client command (an entry of Responses, MS-ASCMD 2.2.3.145).

    ``ref`` is the Add's ClientId, or the ServerId the command named.  In a result,
    a Fetch carries ``item`` (None: not found, Status 8)."""

    kind: ResponseKind
    ref: str
    server_id: str | None = None        # the ServerId an Add made
    status: str = "1"
    uid: str | None = None              # the calendar UID the server gave an Add (16.x)
    item: Item | None = None

    def to_json(self) -> list[Any]:
        """The form the sync state keeps (the answer a resend gets again)."""
        return [self.kind, self.ref, self.server_id, self.status, self.uid]

    @classmethod
    def from_json(cls, value: list[Any]) -> ClientResponse:
        kind, ref, server_id, status, uid = value
        return cls(kind, ref, server_id, status, uid)


ChangeKind = Literal["Add", "Change", "Delete", "SoftDelete"]


@dataclass(slots=True)
class ServerChange:
    """One entry of the Commands the server sends (MS-ASCMD 2.2.3.32); an Add or a
    Change carries the item."""

    kind: ChangeKind
    server_id: str
    item: Item | None = None


@dataclass
class CollectionResult:
    """What the engine answers for one collection (MS-ASCMD 2.2.3.30.2 in a response).

    ``changed``: anything to tell the device (a new key, responses, commands); a Sync
    where no collection changed gets an empty answer (or is held)."""

    collection_id: str
    sync_key: str
    status: str = "1"
    changed: bool = True
    more_available: bool = False
    responses: list[ClientResponse] = field(default_factory=list)
    commands: list[ServerChange] = field(default_factory=list)
    delivered: int = 0                  # entries counted against the WindowSize
