"""What the account page needs from the account service, in the page's own terms.

``AccountOps`` is the one seam between the web side (``easync.account.pages`` and
``easync.account.api``) and the auth core (``easync.auth.accounts``); ``ServiceOps`` in
``easync.account.adapter`` implements it over that service.  Every method may raise:

- ``Refused``: the request is refused for a reason the user can act on; its ``message``
  is shown as it is (wrong password, wrong or expired code, too many attempts, an
  ActiveSync password that is too long, …).  Nothing was changed.
- ``easync.errors.Unavailable``: the database or directory cannot answer (HTTP 503).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# Limits the page itself checks before asking the service (bcrypt reads 72 bytes).
MAX_PASSWORD_BYTES = 72
MAX_NAME_CHARS = 128


class Refused(Exception):
    """Refused with a message meant for the user; nothing was changed."""

    def __init__(self, message: str, *, code: str = "refused",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code            # machine-readable, for the JSON API
        self.retry_after = retry_after


@dataclass
class Login:
    """A login password that was accepted."""

    user: str                       # canonical name
    method: str | None              # the second factor still needed: "email", "totp", None
    admin: bool = False


@dataclass
class Status:
    """What the user may see about their own account."""

    user: str
    email: str | None
    activesync: bool
    twofa: str | None               # "email" | "totp" | None (off)
    twofa_everyone: bool            # 2FA is on for every user by a server setting
    as_password_set: bool
    as_password_since: float | None = None
    as_password_last_used: float | None = None
    as_password_last_device: str | None = None
    admin: bool = False

    @property
    def twofa_on(self) -> bool:
        return self.twofa is not None

    @property
    def eas_refused(self) -> bool:
        """2FA on without an ActiveSync password: every phone is refused."""
        return self.activesync and self.twofa_on and not self.as_password_set


@dataclass
class Device:
    device_id: str
    device_type: str = ""
    user_agent: str = ""
    first_seen: float | None = None
    last_seen: float | None = None
    last_sync: float | None = None
    wipe: str = "none"              # none | pending | done
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class UserRow:
    """One line of the admin's user list."""

    name: str
    email: str | None
    activesync: bool
    twofa: str | None
    as_password_set: bool
    admin: bool = False


@dataclass
class Enrolment:
    """An authenticator-app enrolment in progress: shown as a QR code and as text."""

    secret: str
    uri: str
    qr_svg: str                     # <svg ...> markup of the QR code of ``uri``


class AccountOps(Protocol):
    """The operations behind the page.  ``addr`` is the client's address (throttling,
    audit log); ``by`` is the administrator acting on someone else's account (None: the
    user acts on their own)."""

    async def check_password(self, name: str, password: str, addr: str) -> Login:
        """The login password; with 2FA on, ``Login.method`` says which code follows."""

    async def send_code(self, user: str, addr: str) -> str:
        """E-mail a one-time code; returns the address it went to, masked."""

    async def check_code(self, user: str, code: str, addr: str) -> None: ...

    async def status(self, user: str) -> Status: ...

    async def set_as_password(self, user: str, new: str, confirm: str, addr: str,
                              by: str | None = None) -> None: ...

    async def generate_as_password(self, user: str, addr: str) -> str:
        """Set a random ActiveSync password and return it (to be shown once)."""

    async def clear_as_password(self, user: str, addr: str) -> None: ...

    async def devices(self, user: str) -> list[Device]: ...

    async def wipe_device(self, user: str, device_id: str, addr: str,
                          by: str | None = None) -> None: ...

    async def remove_device(self, user: str, device_id: str, addr: str,
                            by: str | None = None) -> None: ...

    async def set_twofa(self, user: str, method: str | None, addr: str,
                        by: str | None = None, as_password: str | None = None,
                        as_confirm: str | None = None) -> str:
        """2FA on ("email"/"totp") or off (None); with ``as_password`` (+ confirm) that
        ActiveSync password is set in the same step.  Returns a sentence for the user."""

    async def start_totp(self, user: str) -> Enrolment: ...

    async def confirm_totp(self, user: str, code: str, addr: str) -> None: ...

    async def list_users(self, by: str) -> list[UserRow]: ...

    async def set_activesync(self, user: str, on: bool, addr: str, by: str) -> None: ...

    async def set_twofa_everyone(self, on: bool, addr: str, by: str) -> list[str]:
        """Returns the users (ActiveSync on, no ActiveSync password) refused from now."""

    async def twofa_everyone(self) -> bool: ...
