"""The account page's logic, shared by the HTML pages and the JSON API.

Each method takes the visitor's ``Session``, checks the input (with the messages users
see), asks ``ServiceOps``, and updates the session.  Refusals are ``AccountError`` with a
message meant for the user; the session and the account are then as they were.

Verification rule (decided here, documented in README "Account page"): logging in needs
the password and, with 2FA on, a one-time code.  That verification, or a later "confirm
it's you" (password + code again), counts for ``RECENT_SECONDS`` (5 minutes): within it
the user may see and change the ActiveSync password, wipe or remove a device, change 2FA
and use the admin functions; after it, each of these asks for the password (+ code)
again first.  The overview (ActiveSync on/off, password set or not and since when, the
devices) is shown to any logged-in session.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.logger import Logger

from easync.account.adapter import MAX_NAME_CHARS, Enrolment, Login, ServiceOps
from easync.account.sessions import PENDING_SECONDS, Pending, Session, SessionStore
from easync.auth.accounts import AccountError
from easync.i18n import _

log = Logger(namespace="easync.account")

# The longest login password the page passes on (LDAP passwords may exceed bcrypt's 72).
MAX_LOGIN_PASSWORD_CHARS = 1024
_CODE = re.compile(r"^[0-9]{6,8}$")


class NeedsLogin(Exception):
    """The session is not logged in (the page sends to the login form)."""


class NeedsVerification(Exception):
    """The action needs a recent verification (the page sends to "confirm it's you")."""


class NotAdmin(Exception):
    """The action is for administrators only."""


def clean_code(raw: str | None) -> str:
    """The digits of a one-time code as typed (spaces and dashes allowed), or AccountError."""
    code = re.sub(r"[\s-]", "", raw or "")
    if not code:
        raise AccountError(_("Enter the security code."), code="code_missing")
    if not _CODE.match(code):
        raise AccountError(_("The security code is the 6 digits we sent you or your app "
                             "shows."),
                      code="code_malformed")
    return code


def clean_username(raw: str | None) -> str:
    name = (raw or "").strip()
    if not name:
        raise AccountError(_("Enter your user name."), code="username_missing")
    if len(name) > MAX_NAME_CHARS:
        raise AccountError(_("The user name is too long (at most {n} characters).").format(
            n=MAX_NAME_CHARS),
                      code="username_too_long")
    if any(not c.isprintable() for c in name):
        raise AccountError(_("The user name contains control characters."),
                           code="invalid-name")
    return name


def clean_login_password(raw: str | None) -> str:
    password = raw or ""
    if not password:
        raise AccountError(_("Enter your password."), code="password_missing")
    if len(password) > MAX_LOGIN_PASSWORD_CHARS:
        raise AccountError(_("The password is too long (at most {n} characters).").format(
            n=MAX_LOGIN_PASSWORD_CHARS), code="password_too_long")
    return password


class Account:
    """The page's operations on sessions."""

    def __init__(self, ops: ServiceOps, sessions: SessionStore, clock: Any) -> None:
        self.ops = ops
        self.sessions = sessions
        self.clock = clock

    # ---------------------------------------------------------------- guards
    def require_user(self, s: Session) -> str:
        if s.user is None:
            raise NeedsLogin()
        return s.user

    def require_recent(self, s: Session) -> str:
        user = self.require_user(s)
        if not s.recently_verified(self.clock.seconds()):
            raise NeedsVerification()
        return user

    def require_admin(self, s: Session, recent: bool = True) -> str:
        user = self.require_user(s)
        if not s.admin:
            raise NotAdmin()
        if recent:
            self.require_recent(s)
        return user

    # ---------------------------------------------------------------- login
    async def login_password(self, s: Session, username: str | None, password: str | None,
                             addr: str) -> Login:
        """The first login step.  With 2FA off the session is logged in (new id); with
        e-mail codes one is sent at once; either way ``s.pending`` then waits for it."""
        name = clean_username(username)
        pw = clean_login_password(password)
        result = await self.ops.check_password(name, pw, addr)
        if result.method is None:
            self._logged_in(s, result.user, result.admin)
            return result
        s.pending = Pending(user=result.user, method=result.method,
                            since=self.clock.seconds())
        s.data["admin_pending"] = result.admin
        if result.method == "email":
            try:
                s.pending.sent_to = await self.ops.send_code(result.user, addr)
            except AccountError as e:
                # The password was right; the page shows the code step with the reason
                # and a "send a new code" button.
                s.say("error", e.message)
        return result

    def pending(self, s: Session) -> Pending | None:
        """The login waiting for its code (None if none, or if it waited too long)."""
        p = s.pending
        if p is not None and self.clock.seconds() - p.since > PENDING_SECONDS:
            s.pending = None
            return None
        return p

    async def login_send_code(self, s: Session, addr: str) -> str:
        p = self.pending(s)
        if p is None or p.method != "email":
            raise NeedsLogin()
        p.sent_to = await self.ops.send_code(p.user, addr)
        return p.sent_to

    async def login_code(self, s: Session, code: str | None, addr: str) -> str:
        p = self.pending(s)
        if p is None:
            raise NeedsLogin()
        digits = clean_code(code)
        await self.ops.check_code(p.user, digits, addr)
        admin = bool(s.data.pop("admin_pending", False))
        self._logged_in(s, p.user, admin)
        return p.user

    def _logged_in(self, s: Session, user: str, admin: bool) -> None:
        now = self.clock.seconds()
        s.pending = None
        s.user = user
        s.admin = admin
        s.logged_in_at = now
        s.verified_at = now
        self.sessions.rotate(s)
        log.info("account page: {user} logged in{admin}", user=user,
                 admin=" (admin)" if admin else "")

    def logout(self, s: Session) -> None:
        if s.user is not None:
            log.info("account page: {user} logged out", user=s.user)
        self.sessions.end(s)

    # ---------------------------------------------------------------- step-up
    async def verify_send_code(self, s: Session, addr: str) -> str:
        user = self.require_user(s)
        sent_to = await self.ops.send_code(user, addr)
        s.data["verify_sent_to"] = sent_to
        return sent_to

    async def verify(self, s: Session, password: str | None, code: str | None,
                     addr: str) -> None:
        """"Confirm it's you": the password, and with 2FA on the code, in one step."""
        user = self.require_user(s)
        pw = clean_login_password(password)
        result = await self.ops.check_password(user, pw, addr)
        if result.user != user:
            raise AccountError(_("Wrong password."), code="login_failed")
        if result.method is not None:
            await self.ops.check_code(user, clean_code(code), addr)
        s.verified_at = self.clock.seconds()
        s.admin = result.admin
        s.data.pop("verify_sent_to", None)
        self.sessions.rotate(s)

    # ---------------------------------------------------------------- ActiveSync password
    async def set_as_password(self, s: Session, new: str | None, confirm: str | None,
                              addr: str) -> None:
        user = self.require_recent(s)
        await self.ops.set_as_password(user, new or "", confirm or "", addr)

    async def generate_as_password(self, s: Session, addr: str) -> str:
        user = self.require_recent(s)
        return await self.ops.generate_as_password(user, addr)

    async def clear_as_password(self, s: Session, addr: str) -> None:
        user = self.require_recent(s)
        await self.ops.clear_as_password(user, addr)

    # ---------------------------------------------------------------- devices
    async def device(self, s: Session, device_id: str | None) -> Any:
        user = self.require_user(s)
        for d in await self.ops.devices(user):
            if d.device_id == device_id:
                return d
        raise AccountError(_("There is no such device on your account."), code="no_device")

    async def wipe(self, s: Session, device_id: str | None, addr: str, *,
                   full: bool = False) -> None:
        """Order a wipe of one's own device: this account's data only (EAS 16.1,
        the default), or with ``full`` the whole device."""
        user = self.require_recent(s)
        d = await self.device(s, device_id)
        await self.ops.wipe_device(user, d.device_id, addr, full=full)

    async def block(self, s: Session, device_id: str | None, addr: str) -> None:
        """Block one's own device: it is refused from its next request on, nothing is
        erased; only an administrator lets it in again."""
        user = self.require_recent(s)
        d = await self.device(s, device_id)
        await self.ops.set_device_access(user, d.device_id, "block", addr)

    async def admin_quarantined(self, s: Session) -> list[Any]:
        me = self.require_admin(s, recent=False)
        return list(await self.ops.quarantined(me))

    async def admin_device_access(self, s: Session, name: str | None,
                                  device_id: str | None, access: str | None,
                                  addr: str) -> str:
        """Allow or block a user's device (admin); the user's name."""
        me = self.require_admin(s)
        if access not in ("allow", "block"):
            raise AccountError(_("Choose allow or block."), code="bad_state")
        target = await self._admin_target(me, name)
        if not device_id or len(device_id) > 64:
            raise AccountError(_("There is no such device on your account."),
                               code="no_device")
        await self.ops.set_device_access(target, device_id, access, addr, by=me)
        return target

    async def remove(self, s: Session, device_id: str | None, addr: str) -> None:
        user = self.require_recent(s)
        d = await self.device(s, device_id)
        await self.ops.remove_device(user, d.device_id, addr)

    # ---------------------------------------------------------------- 2FA (own)
    async def use_email_codes(self, s: Session, addr: str) -> None:
        user = self.require_recent(s)
        await self.ops.set_twofa(user, "email", addr)

    async def start_totp(self, s: Session) -> Enrolment:
        user = self.require_recent(s)
        enrolment = await self.ops.start_totp(user)
        s.data["totp"] = enrolment
        return enrolment

    async def confirm_totp(self, s: Session, code: str | None, addr: str) -> None:
        user = self.require_recent(s)
        await self.ops.confirm_totp(user, clean_code(code), addr)
        s.data.pop("totp", None)

    # ---------------------------------------------------------------- admin
    async def admin_activesync(self, s: Session, name: str | None, state: str | None,
                               addr: str) -> str:
        me = self.require_admin(s)
        if state not in ("on", "off"):
            raise AccountError(_("Choose on or off."), code="bad_state")
        target = await self._admin_target(me, name)
        await self.ops.set_activesync(target, state == "on", addr, by=me)
        return target

    async def admin_twofa(self, s: Session, name: str | None, method: str | None,
                          new: str | None, confirm: str | None, addr: str) -> str:
        """2FA on (email|totp) or off for a user; with ActiveSync on and no ActiveSync
        password, an optional new one (typed twice) is set in the same step, first."""
        me = self.require_admin(s)
        if method == "none":        # an alias: easync-admin's output once said "none"
            method = "off"
        if method == "totp":
            # The service would make a new secret nobody but the admin ever sees.
            raise AccountError(_("Users set up an authenticator app themselves, on their "
                                 "two-factor page; choose e-mail codes or off."),
                               code="bad_method")
        if method not in ("email", "off"):
            raise AccountError(_("Choose e-mail codes or off."), code="bad_method")
        target = await self._admin_target(me, name)
        given = method != "off" and bool(new or confirm)
        return await self.ops.set_twofa(
            target, None if method == "off" else method, addr, by=me,
            as_password=(new or "") if given else None,
            as_confirm=(confirm or "") if given else None)

    async def admin_twofa_everyone(self, s: Session, state: str | None, addr: str
                                   ) -> list[str]:
        me = self.require_admin(s)
        if state not in ("on", "off"):
            raise AccountError(_("Choose on or off."), code="bad_state")
        return await self.ops.set_twofa_everyone(state == "on", addr, by=me)

    async def admin_user(self, s: Session, name: str | None) -> Any:
        """The admin list's row of one user."""
        me = self.require_admin(s, recent=False)
        target = (name or "").strip().lower()
        if not target or len(target) > MAX_NAME_CHARS:
            raise AccountError(_("Choose a user."), code="no_user")
        for u in await self.ops.list_users(me):
            if u.name == target:
                return u
        raise AccountError(_("There is no user named {name}.").format(name=repr(name)),
                           code="no_user")

    async def _admin_target(self, me: str, name: str | None) -> str:
        target = (name or "").strip()
        if not target or len(target) > MAX_NAME_CHARS:
            raise AccountError(_("Choose a user."), code="no_user")
        return target
