"""The account page's view of the account service ``easync.auth.accounts.Accounts``.

``ServiceOps`` is what the page (``core``, ``pages``, ``api``) asks: each operation one
call (or two) of the service, in the page's terms — the values below (``Status``,
``Device``, ``UserRow``, ``Login``, ``Enrolment``) instead of the service's, and the
service's ``AccountError`` refusals with their message made a sentence in the visitor's
language (the ``code`` and any ``retry_after`` kept).  The login password goes through the front door
(``easync.auth.door.FrontDoor`` with ``LoginPasswordChecker``), the one authentication
step of every entrance.  Permissions are the service's: the page passes the logged-in
user as ``actor``, so a user can only act on their own account and the admin operations
need the user's ``admin`` flag.  Besides refusals, every operation may raise
``easync.errors.Unavailable`` (the database or directory cannot answer: HTTP 503).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.cred.error import UnauthorizedLogin

from easync.auth import accounts as acc
from easync.auth.door import AccountLogin, FrontDoor, LoginPasswordChecker
from easync.i18n import _, tr

T = TypeVar("T")

# Limits the page itself checks before asking the service (bcrypt reads 72 bytes).
MAX_PASSWORD_BYTES = 72
MAX_NAME_CHARS = 128


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
    access: str = "allow"           # allow | block | quarantine (easync.deviceaccess)
    access_reason: str = "default"  # device | rule N | default
    account_wipe: bool = False      # it spoke EAS 16.1+: an account-only wipe is possible
    user: str = ""                  # its owner (the admin's list of quarantined devices)


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




def sentence(text: str) -> str:
    """``wrong code (4 tries left)`` → ``Wrong code (4 tries left).``, in the language in
    force (``easync.i18n.tr``: the service's messages are ``msg``)."""
    text = tr(text).strip()
    if not text:
        return _("Refused.")
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _method(value: str | None) -> str | None:
    return None if value in (None, "", "none") else value


def svg_data_uri(svg: str) -> str:
    """An ``<img src>`` for SVG markup made to be inlined (segno's ``svg_inline``): as a
    document of its own it needs the SVG namespace, and a viewBox to scale."""
    head, sep, rest = svg.partition(">")
    if sep and head.startswith("<svg"):
        if "xmlns=" not in head:
            head += ' xmlns="http://www.w3.org/2000/svg"'
        size = dict(re.findall(r'\b(width|height)="(\d+(?:\.\d+)?)"', head))
        if "viewBox" not in head and len(size) == 2:
            head += f' viewBox="0 0 {size["width"]} {size["height"]}"'
        svg = head + sep + rest
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode()


@dataclass
class Shares:
    """What the user shares and what is shared with them (issue #14 point 1)."""

    mine: list[dict[str, Any]] = field(default_factory=list)     # my folders, to whom
    with_me: list[dict[str, Any]] = field(default_factory=list)  # others' folders I hold
    folders: list[dict[str, Any]] = field(default_factory=list)  # my folders I may share
    available: bool = True      # the store shares folders (the SQL store)


def _device(d: Any) -> Device:
    return Device(device_id=d.device_id, device_type=d.device_type or "",
                  user_agent=d.user_agent or "", first_seen=d.first_seen,
                  last_seen=d.last_seen, last_sync=d.last_sync, wipe=d.wipe,
                  extra={"blocked": d.blocked}, access=d.access,
                  access_reason=d.access_reason, account_wipe=d.account_wipe, user=d.user)


class ServiceOps:
    """The page's operations, each one call (or two) of the service.  ``addr`` is the
    client's address (throttling, audit log); ``by`` is the administrator acting on
    someone else's account (None: the user acts on their own)."""

    def __init__(self, service: acc.Accounts,
                 policy: tuple[tuple[str, str], ...] = ()) -> None:
        self.service = service
        self.door = FrontDoor(service.users, LoginPasswordChecker(service))
        self.policy = tuple(policy)       # the server's device policy (--policy)
        #: the item store that shares folders, and how to tell a user's devices that
        #: their folder list changed (``enable_sharing``); None: no sharing
        self.items: Any = None
        self.announce: Any = None

    async def deleted_target(self, account: Any, session: Any, name: str | None, *,
                             restore: bool = False) -> tuple[Any, Any, str]:
        """For the "Recently deleted" page and its JSON API: (the DeletedItems
        service, the user acted on, the acting user).  The logged-in user's own, or
        with ``name`` any user's for an administrator (``account``: the page's
        ``easync.account.core.Account``).  Restoring another user's items is an admin
        action like the others: it needs a recent verification (seeing the list does
        not)."""
        me = account.require_user(session)
        service = getattr(self.service, "deleted", None)
        if service is None:
            raise acc.AccountError(_("Deleted items are not kept on this server."),
                                   "not-found")
        target = me
        if name and name.strip().lower() != me.lower():
            me = account.require_admin(session, recent=restore)
            target = name.strip()
        user = await self.service.users.get_user(target)
        if user is None:
            raise acc.AccountError(
                _("There is no user named {name}.").format(name=repr(target)), "no_user")
        return service, user, me

    async def policy_lines(self, name: str) -> list[str]:
        """What the user's phones must meet (``easync.policy.describe`` of the server's
        policy with the user's own settings over it), in the page's language."""
        from easync.policy import describe, effective

        user = await self.service.users.get_user(name)
        own = user.extra.get("policy") if user is not None else None
        return describe(effective(self.policy, own))

    def enable_sharing(self, items: Any, announce: Any) -> None:
        """Share folders through ``items`` (``easync.sharing.Sharing.supported``);
        ``announce(user id, ["hierarchy"])`` wakes that user's devices."""
        from easync.sharing import Sharing

        if Sharing.supported(items):
            self.items, self.announce = items, announce

    def _sharing(self, addr: str) -> Any:
        from easync.sharing import Sharing

        if self.items is None:
            raise acc.AccountError(_("Folders cannot be shared with this server's store."),
                                   "not-found")

        async def audit(actor: str, user: str | None, action: str, detail: str) -> None:
            await self.service.audit_raw(actor, user, action, detail, addr)

        return Sharing(self.items, audit, self.announce)

    async def _share_call(self, aw: Awaitable[T]) -> T:
        from easync.sharing import ShareError

        try:
            return await aw
        except ShareError as e:
            raise acc.AccountError(sentence(tr(e.message)), "bad_request") from None
        except KeyError:
            raise acc.AccountError(_("No such folder."), "not-found") from None

    # -- shared folders -------------------------------------------------------------------
    async def shares(self, user: str) -> Shares:
        if self.items is None:
            return Shares(available=False)
        me = await self.service.users.get_user(user)
        if me is None:
            return Shares()
        out = Shares()
        for f in await self.items.list_folders(me):
            if f.owner is not None:
                out.with_me.append({"folder_id": f.server_id, "name": f.name,
                                    "cls": f.cls, "owner": f.owner,
                                    "write": not f.read_only})
            elif f.cls in ("Contacts", "Calendar", "Tasks") and not f.read_only:
                out.folders.append({"folder_id": f.server_id, "name": f.name,
                                    "cls": f.cls})
        for row in await self.items.list_shares(me):
            if row["owner"] == me.name:
                out.mine.append({"folder_id": row["folder_id"], "name": row["folder"],
                                 "cls": row["cls"], "to": row["grantee"],
                                 "write": row["write"]})
        return out

    async def share(self, user: str, folder_id: str, to: str, write: bool,
                    addr: str) -> bool:
        return await self._share_call(self._sharing(addr).share(
            user, user, folder_id, to, write))

    async def unshare(self, user: str, folder_id: str, to: str, addr: str) -> bool:
        return await self._share_call(self._sharing(addr).unshare(user, user, folder_id, to))

    async def _call(self, aw: Awaitable[T]) -> T:
        try:
            return await aw
        except acc.AccountError as e:
            retry = e.retry_after
            raise acc.AccountError(sentence(e.message), e.code,
                                   retry_after=float(retry) if retry else None) from None

    # -- login and codes ---------------------------------------------------------------
    async def check_password(self, name: str, password: str, addr: str) -> Login:
        """The login password; with 2FA on, ``Login.method`` says which code follows."""
        try:
            user = await self._call(self.door.authenticate(AccountLogin(name, password, addr)))
        except UnauthorizedLogin:       # the record vanished after the check
            raise acc.AccountError(_("Wrong user name or password."), "bad-password"
                                   ) from None
        st = await self._call(self.service.status(user.name))
        return Login(user=user.name, method=_method(st.two_factor_effective), admin=st.admin)

    async def send_code(self, user: str, addr: str) -> str:
        return await self._call(self.service.send_code(user))

    async def check_code(self, user: str, code: str, addr: str) -> None:
        await self._call(self.service.verify_code(user, code, address=addr))

    # -- seeing ---------------------------------------------------------------------------
    async def status(self, user: str) -> Status:
        st = await self._call(self.service.status(user, actor=user))
        return _status(st)

    async def devices(self, user: str) -> list[Device]:
        found = await self._call(self.service.list_devices(user, actor=user))
        return [_device(d) for d in found]

    async def quarantined(self, by: str) -> list[Device]:
        """Every user's devices in quarantine (admin)."""
        found = await self._call(self.service.list_devices(None, actor=by))
        return [_device(d) for d in found if d.access == "quarantine"]

    async def set_device_access(self, user: str, device_id: str, access: str | None,
                                addr: str, by: str | None = None) -> None:
        await self._call(self.service.set_device_access(user, device_id, access,
                                                        actor=by or user, address=addr))

    # -- the ActiveSync password ---------------------------------------------------------
    async def set_as_password(self, user: str, new: str, confirm: str, addr: str,
                              by: str | None = None) -> None:
        await self._call(self.service.set_as_password(
            user, new, confirm, actor=by or user, address=addr))

    async def generate_as_password(self, user: str, addr: str) -> str:
        return await self._call(self.service.generate_as_password(
            user, actor=user, address=addr))

    async def clear_as_password(self, user: str, addr: str) -> None:
        await self._call(self.service.clear_as_password(user, actor=user, address=addr))

    # -- devices ----------------------------------------------------------------------------
    async def wipe_device(self, user: str, device_id: str, addr: str,
                          by: str | None = None, *, full: bool = False) -> None:
        await self._call(self.service.wipe_device(user, device_id, account_only=not full,
                                                  actor=by or user, address=addr))

    async def remove_device(self, user: str, device_id: str, addr: str,
                            by: str | None = None) -> None:
        await self._call(self.service.remove_device(user, device_id, actor=by or user,
                                                    address=addr))

    # -- 2FA --------------------------------------------------------------------------------
    async def set_twofa(self, user: str, method: str | None, addr: str,
                        by: str | None = None, as_password: str | None = None,
                        as_confirm: str | None = None) -> str:
        result = await self._call(self.service.set_two_factor(
            user, method or "off", as_password=as_password, as_confirm=as_confirm,
            actor=by or user, address=addr))
        return sentence(result.message)

    async def start_totp(self, user: str) -> Enrolment:
        e = await self._call(self.service.start_totp_enrolment(user, actor=user))
        return Enrolment(secret=e.secret, uri=e.uri, qr_svg=e.qr_svg)

    async def confirm_totp(self, user: str, code: str, addr: str) -> None:
        await self._call(self.service.confirm_totp_enrolment(user, code, actor=user,
                                                             address=addr))

    # -- admin ----------------------------------------------------------------------------
    async def list_users(self, by: str) -> list[UserRow]:
        found = await self._call(self.service.list_users(actor=by))
        return [UserRow(name=u.name, email=u.email, activesync=u.activesync,
                        twofa=_method(u.two_factor_effective),
                        as_password_set=u.as_password.is_set, admin=u.admin)
                for u in found]

    async def set_activesync(self, user: str, on: bool, addr: str, by: str) -> None:
        await self._call(self.service.set_activesync(user, on, actor=by, address=addr))

    async def set_twofa_everyone(self, on: bool, addr: str, by: str) -> list[str]:
        return await self._call(self.service.set_two_factor_all(on, actor=by, address=addr))

    async def twofa_everyone(self) -> bool:
        return await self.service.two_factor_all()


def _status(st: Any) -> Status:
    a = st.as_password
    return Status(
        user=st.name, email=st.email, activesync=st.activesync,
        twofa=_method(st.two_factor_effective), twofa_everyone=st.two_factor_all,
        as_password_set=a.is_set, as_password_since=a.set_at,
        as_password_last_used=a.last_used_at, as_password_last_device=a.last_used_device,
        admin=st.admin)
