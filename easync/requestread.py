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

__all__ = ["AuthRead", "RequestRead", "RequestSnapshot"]


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
    ``states`` of that device, its folders (``folders``) and ``auth``."""

    user_name: str
    device_id: str
    states: Sequence[str] = ()
    folders: bool = False
    auth: AuthRead | None = None


@dataclass(slots=True)
class RequestSnapshot:
    """What a ``RequestRead`` found.  ``states``: every name asked for (None: no such
    state); ``folders`` None when not asked; ``setting`` the setting's value (None:
    unset); ``familiar`` None and ``counters`` empty when ``auth`` was not asked."""

    user: User | None
    device: dict[str, Any] | None = None
    states: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    folders: list[Folder] | None = None
    setting: str | None = None
    familiar: bool | None = None
    counters: dict[tuple[str, str], tuple[int, float, float] | None] = field(
        default_factory=dict)
