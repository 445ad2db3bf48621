"""The JSON API behind the account page: ``/account/api/…``.

The same operations as the pages, with the same session: the ``easync_account`` cookie
(``GET /account/api/session`` makes one and returns its CSRF token) and, on every POST,
the ``X-CSRF-Token`` header and a JSON object body (``Content-Type: application/json``).
Errors are ``{"error": {"code": "...", "message": "..."}}`` with 400 (bad input), 401
(not logged in), 403 (wrong password or code, CSRF, not allowed, or ``"code":
"verify"``: confirm with ``POST /account/api/verify`` first), 404, 429 (+ Retry-After)
or 503 (+ Retry-After).  The endpoint list with examples is in README.md ("Account
page").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from easync.account.adapter import Device, ServiceOps, Shares, Status, UserRow
from easync.account.core import Account, NeedsLogin, NeedsVerification, NotAdmin
from easync.account.request import Ctx, Reply, error_json, json_reply, refusal
from easync.account.sessions import RECENT_SECONDS, Session
from easync.auth.accounts import AccountError
from easync.i18n import _, tr

Route = Callable[[Ctx], Awaitable[Reply]]


def _str(ctx: Ctx, name: str, required: bool = False) -> str | None:
    value = ctx.json.get(name)
    if value is None:
        if required:
            raise AccountError(_("The field {name} is missing.").format(name=repr(name)),
                               "bad_request")
        return None
    if not isinstance(value, str):
        raise AccountError(_("The field {name} must be a string.").format(name=repr(name)),
                           "bad_request")
    return value


def _bool(ctx: Ctx, name: str) -> bool:
    value = ctx.json.get(name)
    if not isinstance(value, bool):
        raise AccountError(_("The field {name} must be true or false.").format(
            name=repr(name)), "bad_request")
    return value


def _refused(e: AccountError) -> Reply:
    status, headers = refusal(e)
    reply = json_reply(error_json(e.code, e.message), status)
    reply.headers.update(headers)
    return reply


def status_json(st: Status) -> dict[str, Any]:
    return {
        "user": st.user, "email": st.email, "activesync": st.activesync,
        "two_factor": st.twofa or "off", "two_factor_everyone": st.twofa_everyone,
        "admin": st.admin,
        "activesync_password": {
            "set": st.as_password_set, "since": st.as_password_since,
            "last_used": st.as_password_last_used,
            "last_used_device": st.as_password_last_device,
        },
        "eas_refused": st.eas_refused,
    }


def device_json(d: Device) -> dict[str, Any]:
    return {"device_id": d.device_id, "device_type": d.device_type,
            "user_agent": d.user_agent, "first_seen": d.first_seen,
            "last_seen": d.last_seen, "last_sync": d.last_sync, "wipe": d.wipe,
            "access": d.access, "account_wipe": d.account_wipe}


def user_json(u: UserRow) -> dict[str, Any]:
    return {"name": u.name, "email": u.email, "activesync": u.activesync,
            "two_factor": u.twofa or "off", "activesync_password_set": u.as_password_set,
            "admin": u.admin}


def shares_json(sh: Shares) -> dict[str, Any]:
    return {"available": sh.available, "mine": sh.mine, "with_me": sh.with_me,
            "folders": sh.folders}


class Api:
    def __init__(self, account: Account, ops: ServiceOps, clock: Any) -> None:
        self.acc = account
        self.ops = ops
        self.clock = clock
        g = self._guarded
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", "session"): g(self.session),
            ("POST", "login"): g(self.login),
            ("POST", "login/code"): g(self.login_code),
            ("POST", "login/send"): g(self.login_send),
            ("POST", "logout"): g(self.logout),
            ("POST", "verify"): g(self.verify),
            ("POST", "verify/send"): g(self.verify_send),
            ("GET", "status"): g(self.status),
            ("POST", "as-password"): g(self.as_password),
            ("POST", "as-password/generate"): g(self.as_generate),
            ("POST", "as-password/clear"): g(self.as_clear),
            ("GET", "devices"): g(self.devices),
            ("POST", "devices/wipe"): g(self.wipe),
            ("POST", "devices/remove"): g(self.remove),
            ("POST", "devices/block"): g(self.block),
            ("POST", "2fa"): g(self.twofa),
            ("POST", "2fa/totp"): g(self.totp_start),
            ("POST", "2fa/totp/confirm"): g(self.totp_confirm),
            ("GET", "shares"): g(self.shares),
            ("POST", "shares/add"): g(self.share_add),
            ("POST", "shares/remove"): g(self.share_remove),
            ("GET", "admin/users"): g(self.admin_users),
            ("POST", "admin/activesync"): g(self.admin_activesync),
            ("POST", "admin/2fa"): g(self.admin_twofa),
            ("POST", "admin/2fa-everyone"): g(self.admin_everyone),
            ("GET", "deleted"): g(self.deleted),
            ("POST", "deleted/restore"): g(self.deleted_restore),
            ("GET", "admin/quarantine"): g(self.admin_quarantine),
            ("POST", "admin/device-access"): g(self.admin_device_access),
        }

    def _guarded(self, fn: Route) -> Route:
        async def run(ctx: Ctx) -> Reply:
            try:
                return await fn(ctx)
            except NeedsLogin:
                return _refused(AccountError(_("Log in first."), "login"))
            except NeedsVerification:
                return _refused(AccountError(
                    _("Confirm it's you first: POST /account/api/verify with your "
                      "password (and code)."), "verify"))
            except NotAdmin:
                return _refused(AccountError(_("For administrators only."), "forbidden"))
            except AccountError as e:
                return _refused(e)
        return run

    def _session_json(self, s: Session) -> dict[str, Any]:
        now = self.clock.seconds()
        recent = s.recently_verified(now)
        pending = self.acc.pending(s)
        return {
            "logged_in": s.logged_in, "user": s.user, "admin": s.admin if s.user else False,
            "csrf_token": s.csrf,
            "code_required": ({"method": pending.method, "sent_to": pending.sent_to or None}
                              if pending is not None else None),
            "verified_until": s.verified_at + RECENT_SECONDS if recent else None,
        }

    # -- session and login -------------------------------------------------------------
    async def session(self, ctx: Ctx) -> Reply:
        return json_reply(self._session_json(ctx.session))

    async def login(self, ctx: Ctx) -> Reply:
        s = ctx.session
        if s.logged_in:
            return json_reply(error_json("logged_in", _("Already logged in: log out first.")), 400)
        username, password = _str(ctx, "username"), _str(ctx, "password")
        try:
            await self.acc.login_password(s, username, password, ctx.addr)
        except AccountError:
            s.pending = None
            raise
        body = self._session_json(s)
        errors = s.take_flash()
        if errors:
            body["warning"] = errors[-1][1]
        return json_reply(body)

    async def login_code(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.login_code(s, _str(ctx, "code"), ctx.addr)
        return json_reply(self._session_json(s))

    async def login_send(self, ctx: Ctx) -> Reply:
        sent_to = await self.acc.login_send_code(ctx.session, ctx.addr)
        return json_reply({"sent_to": sent_to})

    async def logout(self, ctx: Ctx) -> Reply:
        self.acc.logout(ctx.session)
        ctx.end()
        return json_reply({"logged_in": False})

    async def verify(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.verify(s, _str(ctx, "password"), _str(ctx, "code"), ctx.addr)
        return json_reply(self._session_json(s))

    async def verify_send(self, ctx: Ctx) -> Reply:
        sent_to = await self.acc.verify_send_code(ctx.session, ctx.addr)
        return json_reply({"sent_to": sent_to})

    # -- the user's own account ----------------------------------------------------------
    async def status(self, ctx: Ctx) -> Reply:
        user = self.acc.require_user(ctx.session)
        return json_reply(status_json(await self.ops.status(user)))

    async def as_password(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.set_as_password(s, _str(ctx, "new"), _str(ctx, "confirm"), ctx.addr)
        return json_reply(status_json(await self.ops.status(self.acc.require_user(s))))

    async def as_generate(self, ctx: Ctx) -> Reply:
        s = ctx.session
        password = await self.acc.generate_as_password(s, ctx.addr)
        return json_reply({"password": password,
                           "note": _("Shown this once: only a hash of it is kept.")})

    async def as_clear(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.clear_as_password(s, ctx.addr)
        return json_reply(status_json(await self.ops.status(self.acc.require_user(s))))

    async def devices(self, ctx: Ctx) -> Reply:
        user = self.acc.require_user(ctx.session)
        return json_reply({"devices": [device_json(d) for d in await self.ops.devices(user)]})

    async def wipe(self, ctx: Ctx) -> Reply:
        """``{"device_id"}``: this account's data only (EAS 16.1); the whole device only
        with ``"full": true``."""
        s = ctx.session
        await self.acc.wipe(s, _str(ctx, "device_id", required=True), ctx.addr,
                            full=_bool(ctx, "full") if "full" in ctx.json else False)
        return await self.devices(ctx)

    async def block(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.block(s, _str(ctx, "device_id", required=True), ctx.addr)
        return await self.devices(ctx)

    async def admin_quarantine(self, ctx: Ctx) -> Reply:
        held = await self.acc.admin_quarantined(ctx.session)
        return json_reply({"devices": [{**device_json(d), "user": d.user} for d in held]})

    async def admin_device_access(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.admin_device_access(s, _str(ctx, "user", required=True),
                                           _str(ctx, "device_id", required=True),
                                           _str(ctx, "access", required=True), ctx.addr)
        return await self.admin_quarantine(ctx)

    async def remove(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.remove(s, _str(ctx, "device_id", required=True), ctx.addr)
        return await self.devices(ctx)

    async def twofa(self, ctx: Ctx) -> Reply:
        s = ctx.session
        if _str(ctx, "method") != "email":
            raise AccountError(_('The field "method" must be "email" (an authenticator app '
                                 "is set up with /account/api/2fa/totp)."), "bad_request")
        await self.acc.use_email_codes(s, ctx.addr)
        return json_reply(status_json(await self.ops.status(self.acc.require_user(s))))

    async def totp_start(self, ctx: Ctx) -> Reply:
        e = await self.acc.start_totp(ctx.session)
        return json_reply({"secret": e.secret, "uri": e.uri, "qr_svg": e.qr_svg})

    async def totp_confirm(self, ctx: Ctx) -> Reply:
        s = ctx.session
        await self.acc.confirm_totp(s, _str(ctx, "code"), ctx.addr)
        return json_reply(status_json(await self.ops.status(self.acc.require_user(s))))

    # -- shared folders (issue #14 point 1) -------------------------------------------------
    async def shares(self, ctx: Ctx) -> Reply:
        user = self.acc.require_user(ctx.session)
        return json_reply(shares_json(await self.ops.shares(user)))

    async def share_add(self, ctx: Ctx) -> Reply:
        user = self.acc.require_user(ctx.session)
        write = ctx.json.get("write", False)
        if not isinstance(write, bool):
            raise AccountError(_("The field {name} must be true or false.").format(
                name=repr("write")), "bad_request")
        await self.ops.share(user, _str(ctx, "folder_id", required=True) or "",
                             _str(ctx, "to", required=True) or "", write, ctx.addr)
        return json_reply(shares_json(await self.ops.shares(user)))

    async def share_remove(self, ctx: Ctx) -> Reply:
        user = self.acc.require_user(ctx.session)
        await self.ops.unshare(user, _str(ctx, "folder_id", required=True) or "",
                               _str(ctx, "to", required=True) or "", ctx.addr)
        return json_reply(shares_json(await self.ops.shares(user)))

    # -- admin ------------------------------------------------------------------------------
    async def admin_users(self, ctx: Ctx) -> Reply:
        me = self.acc.require_admin(ctx.session)
        users = await self.ops.list_users(me)
        return json_reply({"two_factor_everyone": await self.ops.twofa_everyone(),
                           "users": [user_json(u) for u in users]})

    async def admin_activesync(self, ctx: Ctx) -> Reply:
        s = ctx.session
        on = _bool(ctx, "on")
        await self.acc.admin_activesync(s, _str(ctx, "user"), "on" if on else "off",
                                        ctx.addr)
        return await self.admin_users(ctx)

    async def admin_twofa(self, ctx: Ctx) -> Reply:
        s = ctx.session
        said = await self.acc.admin_twofa(s, _str(ctx, "user"), _str(ctx, "method"),
                                          _str(ctx, "new"), _str(ctx, "confirm"), ctx.addr)
        return json_reply({"message": said})

    async def admin_everyone(self, ctx: Ctx) -> Reply:
        s = ctx.session
        on = _bool(ctx, "on")
        refused = await self.acc.admin_twofa_everyone(s, "on" if on else "off", ctx.addr)
        return json_reply({"two_factor_everyone": on, "eas_refused_users": refused})

    # -- what devices deleted (easync.deleted) -------------------------------------------
    async def _deleted_target(self, ctx: Ctx, name: str | None, *, restore: bool = False
                              ) -> tuple[Any, Any, str]:
        return await self.ops.deleted_target(self.acc, ctx.session, name, restore=restore)

    def _since(self, raw: str | None) -> float | None:
        from easync.deleted import parse_since

        if raw is None or raw == "":
            return None
        try:
            return parse_since(raw, self.clock.seconds())
        except ValueError:
            raise AccountError(_("Not a time: {value} (give a date such as 2026-12-01, a "
                                 "time such as 2026-12-01T14:30, or an age such as 2h or "
                                 "3d).").format(value=repr(raw)), "bad_request") from None

    async def deleted(self, ctx: Ctx) -> Reply:
        args: dict[bytes, list[bytes]] = ctx.request.args or {}

        def arg(name: str) -> str | None:
            values = args.get(name.encode())
            return values[0].decode("utf-8", "replace") if values else None

        service, user, _me = await self._deleted_target(ctx, arg("user"))
        found = await service.list_items(user, device_id=arg("device"),
                                   since=self._since(arg("since")), limit=500)
        return json_reply({"user": user.name, "deleted": [kept_json(k) for k in found]})

    async def deleted_restore(self, ctx: Ctx) -> Reply:
        from easync.deleted import RestoreError

        service, user, me = await self._deleted_target(ctx, _str(ctx, "user"), restore=True)
        ids = ctx.json.get("ids")
        device = _str(ctx, "device_id")
        since = self._since(_str(ctx, "since"))
        try:
            if ids is not None:
                if not isinstance(ids, list) or not ids or not all(
                        isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise AccountError(_('The field "ids" must be a list of item ids.'),
                                       "bad_request")
                done = await service.restore_ids(user, ids, actor=me)
            elif since is not None:
                done = await service.restore_since(user, since, device_id=device, actor=me)
            else:
                raise AccountError(_('Give "ids", or "since" (and "device_id").'),
                                   "bad_request")
        except RestoreError as e:
            raise AccountError(_("Nothing was restored: {why}.").format(why=tr(e.message)),
                               "not-found" if e.code == "not_found" else "bad_request"
                               ) from None
        return json_reply({
            "restored": [{"id": k.id, "server_id": sid, "summary": k.summary}
                         for k, sid in done.restored],
            "already_restored": done.already,
            "failed": [{"id": i, "reason": tr(why)} for i, why in done.failed],
            "more": done.left})


def kept_json(k: Any) -> dict[str, Any]:
    return {"id": k.id, "deleted_at": k.deleted_at, "device_id": k.device_id,
            "folder_id": k.folder_id, "kind": k.cls, "summary": k.summary,
            "restored_id": k.restored_id}
