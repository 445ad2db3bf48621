"""What a request reads before its command runs, in one store transaction (issue #12
point 4): ``RequestRead`` says what, ``RequestSnapshot`` is what was found.

The HTTP layer asks for the user's record (read again: a password or ActiveSync
setting changed in another process is seen at once), the device record (a wipe or a
new policy key set elsewhere likewise), the sync states and folders the command will
look at, and — when the front door let the request in from what it remembers and the
auth tables are in the same database — the rows the lockout check of remembered
credentials needs.  ``IStateStore.read_request`` reads them together; each part is
exactly what the single-purpose call (``get_user``, ``get_device``, ``get_state``,
``list_folders``, ``IAuthStore.get_setting``/``familiar_get``/``throttle_get``) gives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from easync.model import Folder, User

__all__ = ["SYNC_STATE", "AuthRead", "CommandRead", "RequestRead", "RequestSnapshot",
           "followed_states", "state_read"]

#: the name of a folder's sync state is this followed by the folder id
#: (``easync.syncengine.state_name``)
SYNC_STATE = "sync:"


@dataclass(frozen=True, slots=True)
class AuthRead:
    """Auth-table reads (``IAuthStore``'s tables in the state store's database):
    ``setting`` (its value), whether the source (``device``, ``address``) logged in as
    ``user`` at ``since`` or later, and the throttle rows of ``counters``."""

    user: str
    device: str = ""
    address: str = ""
    since: float = 0.0
    setting: str | None = None
    counters: Sequence[tuple[str, str]] = ()


@dataclass(frozen=True, slots=True)
class RequestRead:
    """Read the user named ``user_name``, its device ``device_id``, the sync states
    ``states`` of that device, its folders (``folders``) and ``auth``.

    ``follow``: the name of a state (Ping's parameter cache) whose ``"folders"`` list
    names folders whose sync states (``SYNC_STATE`` + id) are read too, the first
    ``follow_max`` of them: what a Ping with no Folders of its own watches."""

    user_name: str
    device_id: str
    states: Sequence[str] = ()
    folders: bool = False
    auth: AuthRead | None = None
    follow: str | None = None
    follow_max: int = 0


@dataclass(frozen=True, slots=True)
class CommandRead:
    """What a command reads first, for the HTTP layer to read with the request (the
    ``RequestRead`` fields of the same names).  ``listen``: the command holds the
    request (Ping): the user's changes published from before the read on are noted
    (``easync.notify.Lookout``) and handed to its hold, so a change committed between
    the read and the hold still wakes it."""

    states: Sequence[str] = ()
    folders: bool = False
    follow: str | None = None
    follow_max: int = 0
    listen: bool = False


def followed_states(read: RequestRead, found: dict[str, Any]) -> list[str]:
    """The states ``read.follow`` names (given what was read of ``read.states``,
    ``found``), but those already read.  The same for every store."""
    if read.follow is None:
        return []
    cached = found.get(read.follow)
    ids = cached.get("folders") if isinstance(cached, dict) else None
    if not isinstance(ids, list):
        return []
    names = [SYNC_STATE + str(fid) for fid in ids[:read.follow_max]]
    return [n for n in dict.fromkeys(names) if n not in found]


@dataclass(slots=True)
class RequestSnapshot:
    """What a ``RequestRead`` found.  ``states``: every name asked for (None: no such
    state), and the followed ones; ``folders`` None when not asked; ``setting`` the
    setting's value (None: unset); ``familiar`` None and ``counters`` empty when
    ``auth`` was not asked.  ``lookout``: set by the HTTP layer for a command that
    holds the request (``CommandRead.listen``), not by the store."""

    user: User | None
    device: dict[str, Any] | None = None
    states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    folders: list[Folder] | None = None
    setting: str | None = None
    familiar: bool | None = None
    counters: dict[tuple[str, str], tuple[int, float, float] | None] = field(
        default_factory=dict)
    lookout: Any = None
    #: the device access rules of the user and of everyone (``easync.deviceaccess``;
    #: ``IStateStore.list_device_rules``): read with every request
    rules: list[Any] = field(default_factory=list)


async def state_read(store: Any, user: User, device_id: str, name: str,
                     read: dict[str, dict[str, Any] | None] | None) -> dict[str, Any] | None:
    """The device's state ``name`` as the request's read found it (``read``: the
    snapshot's ``states``; None, nothing read) when it was read, else read now from
    ``store`` (an ``IStateStore``)."""
    if read is not None and name in read:
        return read[name]
    return await store.get_state(user, device_id, name)  # type: ignore[no-any-return]
