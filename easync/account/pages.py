"""The HTML pages of ``/account/``: GET shows a page, POST acts then redirects (303) to
the page to show next; a refused POST shows its form again with the reason (HTTP 400,
403 for a wrong password or code, 429 with Retry-After when throttled)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from easync.account import views
from easync.account.adapter import ServiceOps, svg_data_uri
from easync.account.core import Account, NeedsLogin, NeedsVerification, NotAdmin
from easync.account.request import (
    ROOT,
    Ctx,
    Reply,
    redirect,
    refusal,
    safe_next,
    verify_url,
)
from easync.auth.accounts import AccountError
from easync.i18n import _, ngettext, tr

Route = Callable[[Ctx], Awaitable[Reply]]


class Pages:
    def __init__(self, account: Account, ops: ServiceOps, clock: Any) -> None:
        self.acc = account
        self.ops = ops
        self.clock = clock
        g = self._guarded
        self.routes: dict[tuple[str, str], Route] = {
            ("GET", ""): g(self.overview),
            ("GET", "login"): self.login_form,
            ("POST", "login"): self.login,
            ("GET", "login/code"): self.code_form,
            ("POST", "login/code"): self.code,
            ("POST", "login/send"): self.send_code,
            ("POST", "logout"): self.logout,
            ("GET", "verify"): g(self.verify_form),
            ("POST", "verify"): g(self.verify),
            ("POST", "verify/send"): g(self.verify_send),
            ("GET", "as-password"): g(self.as_password_form),
            ("POST", "as-password"): g(self.as_password, back=f"{ROOT}/as-password"),
            ("GET", "devices/wipe"): g(self.device_form("wipe")),
            ("POST", "devices/wipe"): g(self.device_action("wipe"), back=f"{ROOT}/"),
            ("GET", "devices/block"): g(self.device_form("block")),
            ("POST", "devices/block"): g(self.device_action("block"), back=f"{ROOT}/"),
            ("GET", "devices/remove"): g(self.device_form("remove")),
            ("POST", "devices/remove"): g(self.device_action("remove"), back=f"{ROOT}/"),
            ("GET", "2fa"): g(self.twofa_form),
            ("POST", "2fa"): g(self.twofa, back=f"{ROOT}/2fa"),
            ("POST", "2fa/totp"): g(self.totp_start, back=f"{ROOT}/2fa"),
            ("GET", "2fa/totp"): g(self.totp_form),
            ("POST", "2fa/totp/confirm"): g(self.totp_confirm, back=f"{ROOT}/2fa"),
            ("POST", "shares/add"): g(self.share_add, back=f"{ROOT}/#sharing"),
            ("POST", "shares/remove"): g(self.share_remove, back=f"{ROOT}/#sharing"),
            ("GET", "admin"): g(self.admin_form),
            ("GET", "admin/2fa"): g(self.admin_twofa_form),
            ("POST", "admin/2fa"): g(self.admin_twofa, back=f"{ROOT}/admin"),
            ("POST", "admin/activesync"): g(self.admin_activesync, back=f"{ROOT}/admin"),
            ("POST", "admin/2fa-everyone"): g(self.admin_everyone, back=f"{ROOT}/admin"),
            ("GET", "deleted"): g(self.deleted),
            ("POST", "deleted/restore"): g(self.deleted_restore, back=f"{ROOT}/deleted"),
            ("POST", "admin/device-access"): g(self.admin_device_access,
                                               back=f"{ROOT}/admin"),
        }

    # ---------------------------------------------------------------- helpers
    def _guarded(self, fn: Route, back: str | None = None) -> Route:
        """Send to the login form, to "confirm it's you" (then back: ``back`` for a POST,
        the page itself for a GET) or refuse, as the guards in ``core`` say."""
        async def run(ctx: Ctx) -> Reply:
            try:
                return await fn(ctx)
            except NeedsLogin:
                if ctx.has_session and ctx.session.pending is not None:
                    return redirect(f"{ROOT}/login/code")
                return redirect(f"{ROOT}/login")
            except NeedsVerification:
                target = back or ctx.request.uri.decode("utf-8", "replace")
                if back is not None:
                    ctx.session.say("error", _("Confirm it's you first, then try again."))
                return redirect(verify_url(safe_next(target)))
            except NotAdmin:
                return self.show(ctx, _("Not allowed"), views.message(
                    _("This page is for administrators.")), status=403)
            except AccountError as e:        # e.g. the account is gone, or no longer an admin
                return self.refused(ctx, self.show(ctx, _("Sorry"), views.message(e.message)), e)
        return run

    def show(self, ctx: Ctx, title: str, body: str, status: int = 200,
             error: str | None = None) -> Reply:
        s = ctx.session
        messages = s.take_flash()
        if error:
            messages.append(("error", error))
        return Reply(status, views.page(title, body, user=s.user, csrf=s.csrf if s.user
                                        else None, admin=s.admin, messages=messages))

    def refused(self, ctx: Ctx, reply: Reply, e: AccountError) -> Reply:
        reply.status, headers = refusal(e)
        reply.headers.update(headers)
        return reply

    def message_page(self, ctx: Ctx, text: str) -> bytes:
        s = ctx.session
        return views.page(_("Sorry"), views.message(text), user=s.user,
                          csrf=s.csrf if s.user else None, admin=s.admin)

    def csrf_page(self, ctx: Ctx, why: str) -> bytes:
        """A refused POST: the reason, and the login form (or a way back) again."""
        s = ctx.session
        if s.user is None:
            return views.page(_("Log in"), views.login(s.csrf), messages=[("error", why)])
        return views.page(_("Not done"), views.message(why + " " + _("Please try again.")),
                          user=s.user, csrf=s.csrf, admin=s.admin)

    # ---------------------------------------------------------------- login
    async def login_form(self, ctx: Ctx, error: str | None = None, username: str = "",
                         status: int = 200) -> Reply:
        s = ctx.session
        if s.user is not None:
            return redirect(f"{ROOT}/")
        if error is None and self.acc.pending(s) is not None:
            return redirect(f"{ROOT}/login/code")
        return self.show(ctx, _("Log in"), views.login(s.csrf, username), status, error)

    async def login(self, ctx: Ctx) -> Reply:
        s = ctx.session
        if s.user is not None:
            return redirect(f"{ROOT}/")
        username = ctx.arg("username") or ""
        try:
            result = await self.acc.login_password(s, username, ctx.arg("password"),
                                                   ctx.addr)
        except AccountError as e:
            s.pending = None
            return self.refused(ctx, await self.login_form(
                ctx, e.message, username=username[:256]), e)
        if result.method is None:
            return redirect(f"{ROOT}/")
        return redirect(f"{ROOT}/login/code")

    async def code_form(self, ctx: Ctx, error: str | None = None, status: int = 200) -> Reply:
        s = ctx.session
        p = self.acc.pending(s)
        if p is None:
            return redirect(f"{ROOT}/" if s.user is not None else f"{ROOT}/login")
        return self.show(ctx, _("Log in"), views.code_step(s.csrf, p.user, p.method, p.sent_to),
                         status, error)

    async def code(self, ctx: Ctx) -> Reply:
        s = ctx.session
        if self.acc.pending(s) is None:
            s.say("error", _("The login waited too long for its code. Log in again."))
            return redirect(f"{ROOT}/login")
        try:
            await self.acc.login_code(s, ctx.arg("code"), ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.code_form(ctx, e.message), e)
        return redirect(f"{ROOT}/")

    async def send_code(self, ctx: Ctx) -> Reply:
        s = ctx.session
        try:
            sent_to = await self.acc.login_send_code(s, ctx.addr)
        except NeedsLogin:
            return redirect(f"{ROOT}/login")
        except AccountError as e:
            return self.refused(ctx, await self.code_form(ctx, e.message), e)
        s.say("ok", _("A new code was sent to {email}.").format(email=sent_to))
        return redirect(f"{ROOT}/login/code")

    async def logout(self, ctx: Ctx) -> Reply:
        self.acc.logout(ctx.session)
        ctx.end()
        return redirect(f"{ROOT}/login")

    # ---------------------------------------------------------------- confirm it's you
    async def verify_form(self, ctx: Ctx, error: str | None = None, status: int = 200,
                          next_url: str | None = None) -> Reply:
        s = ctx.session
        user = self.acc.require_user(s)
        st = await self.ops.status(user)
        nxt = safe_next(next_url or ctx.query("next"))
        return self.show(ctx, _("Confirm it's you"), views.verify(
            s.csrf, user, st.twofa, s.data.get("verify_sent_to", ""), nxt), status, error)

    async def verify(self, ctx: Ctx) -> Reply:
        s = ctx.session
        nxt = safe_next(ctx.arg("next"))
        try:
            await self.acc.verify(s, ctx.arg("password"), ctx.arg("code"), ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.verify_form(ctx, e.message, next_url=nxt), e)
        return redirect(nxt)

    async def verify_send(self, ctx: Ctx) -> Reply:
        s = ctx.session
        nxt = safe_next(ctx.arg("next"))
        try:
            sent_to = await self.acc.verify_send_code(s, ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.verify_form(ctx, e.message, next_url=nxt), e)
        s.say("ok", _("A code was sent to {email}.").format(email=sent_to))
        return redirect(verify_url(nxt))

    # ---------------------------------------------------------------- overview
    async def overview(self, ctx: Ctx) -> Reply:
        s = ctx.session
        user = self.acc.require_user(s)
        st = await self.ops.status(user)
        devices = await self.ops.devices(user)
        policy = await self.ops.policy_lines(user)
        shares = await self.ops.shares(user)
        return self.show(ctx, _("Your account"), views.overview(
            st, devices, s.csrf, self.clock.seconds(), policy, shares))

    # ---------------------------------------------------------------- shared folders
    async def share_add(self, ctx: Ctx) -> Reply:
        s = ctx.session
        user = self.acc.require_user(s)
        folder, to = ctx.arg("folder_id") or "", (ctx.arg("to") or "").strip()
        write = ctx.arg("access") == "write"
        try:
            if not to:
                raise AccountError(_("Enter the colleague's user name."), "bad_request")
            if await self.ops.share(user, folder, to, write, ctx.addr):
                s.say("ok", _("Shared with {user}: it appears on their phones at their "
                              "next sync.").format(user=to.lower()))
            else:
                s.say("ok", _("It was shared with {user} like that already.").format(
                    user=to.lower()))
        except AccountError as e:
            s.say("error", e.message)
        return redirect(f"{ROOT}/#sharing")

    async def share_remove(self, ctx: Ctx) -> Reply:
        s = ctx.session
        user = self.acc.require_user(s)
        folder, to = ctx.arg("folder_id") or "", ctx.arg("to") or ""
        try:
            await self.ops.unshare(user, folder, to, ctx.addr)
            s.say("ok", _("No longer shared with {user}: it leaves their phones at their "
                          "next sync.").format(user=to.lower()))
        except AccountError as e:
            s.say("error", e.message)
        return redirect(f"{ROOT}/#sharing")

    # ---------------------------------------------------------------- ActiveSync password
    async def as_password_form(self, ctx: Ctx, error: str | None = None,
                               status: int = 200) -> Reply:
        s = ctx.session
        user = self.acc.require_recent(s)
        st = await self.ops.status(user)
        return self.show(ctx, _("ActiveSync password"), views.as_password(
            st, s.csrf, self.clock.seconds(), s.take_reveal()), status, error)

    async def as_password(self, ctx: Ctx) -> Reply:
        s = ctx.session
        action = ctx.arg("action")
        try:
            if action == "set":
                await self.acc.set_as_password(s, ctx.arg("new"), ctx.arg("confirm"),
                                               ctx.addr)
                s.say("ok", _("Your ActiveSync password is set. Enter it on your phone: "
                              "from now on ActiveSync accepts only this password."))
            elif action == "generate":
                s.reveal = await self.acc.generate_as_password(s, ctx.addr)
                s.say("ok", _("A new ActiveSync password was generated."))
            elif action == "clear":
                await self.acc.clear_as_password(s, ctx.addr)
                s.say("ok", _("Your ActiveSync password was removed."))
            else:
                raise AccountError(_("Choose what to do with the ActiveSync password."),
                              code="bad_action")
        except AccountError as e:
            return self.refused(ctx, await self.as_password_form(ctx, e.message), e)
        return redirect(f"{ROOT}/as-password")

    # ---------------------------------------------------------------- devices
    def device_form(self, action: str) -> Callable[..., Awaitable[Reply]]:
        """The confirmation page of ``action`` (also shown again, with ``error``)."""
        async def run(ctx: Ctx, error: str | None = None, status: int = 200) -> Reply:
            s = ctx.session
            self.acc.require_recent(s)
            device_id = ctx.query("device") or ctx.arg("device")
            try:
                d = await self.acc.device(s, device_id)
            except AccountError as e:
                return self.show(ctx, _("Devices"), views.message(e.message), 404)
            title = {"wipe": _("Wipe a device"), "block": _("Block a device")}.get(
                action, _("Remove a device"))
            return self.show(ctx, title, views.device_confirm(d, action, s.csrf), status,
                             error)
        return run

    def device_action(self, action: str) -> Route:
        form = self.device_form(action)

        async def run(ctx: Ctx) -> Reply:
            s = ctx.session
            device_id = ctx.arg("device")
            try:
                if action == "wipe":
                    # the full wipe is an explicit second choice: its own button and a
                    # box ticked to say so; anything else is the account-only wipe
                    full = ctx.arg("kind") == "full"
                    if full and ctx.arg("sure") != "yes":
                        raise AccountError(_("Tick the box to confirm that the whole "
                                             "device is to be erased."), code="not_sure")
                    await self.acc.wipe(s, device_id, ctx.addr, full=full)
                    s.say("ok", (_("Wipe of the whole device requested for {device}: it "
                                   "happens at the device's next connection.") if full else
                                 _("Wipe of this account's data requested for {device}: it "
                                   "happens at the device's next connection.")
                                 ).format(device=device_id))
                elif action == "block":
                    await self.acc.block(s, device_id, ctx.addr)
                    s.say("ok", _("Device {device} blocked: it can no longer sync. Nothing "
                                  "on it was erased.").format(device=device_id))
                else:
                    await self.acc.remove(s, device_id, ctx.addr)
                    s.say("ok", _("Device {device} removed.").format(device=device_id))
            except AccountError as e:
                return self.refused(ctx, await form(ctx, e.message), e)
            return redirect(f"{ROOT}/#devices")
        return run

    # ---------------------------------------------------------------- 2FA
    async def twofa_form(self, ctx: Ctx, error: str | None = None, status: int = 200
                         ) -> Reply:
        s = ctx.session
        user = self.acc.require_user(s)
        st = await self.ops.status(user)
        return self.show(ctx, _("Two-factor authentication"), views.twofa(
            st, s.csrf, _mask(st.email)), status, error)

    async def twofa(self, ctx: Ctx) -> Reply:
        s = ctx.session
        if ctx.arg("method") != "email":
            return self.refused(ctx, await self.twofa_form(
                ctx, _("Choose e-mail codes or an authenticator app.")), AccountError(""))
        try:
            await self.acc.use_email_codes(s, ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.twofa_form(ctx, e.message), e)
        s.say("ok", _("Two-factor authentication now uses codes sent by e-mail."))
        return redirect(f"{ROOT}/2fa")

    async def totp_start(self, ctx: Ctx) -> Reply:
        s = ctx.session
        try:
            await self.acc.start_totp(s)
        except AccountError as e:
            return self.refused(ctx, await self.twofa_form(ctx, e.message), e)
        return redirect(f"{ROOT}/2fa/totp")

    async def totp_form(self, ctx: Ctx, error: str | None = None, status: int = 200
                        ) -> Reply:
        s = ctx.session
        user = self.acc.require_recent(s)
        enrolment = s.data.get("totp")
        if enrolment is None or user is None:
            return redirect(f"{ROOT}/2fa")
        return self.show(ctx, _("Authenticator app"), views.totp_enrol(
            s.csrf, enrolment.secret, svg_data_uri(enrolment.qr_svg)), status, error)

    async def totp_confirm(self, ctx: Ctx) -> Reply:
        s = ctx.session
        try:
            await self.acc.confirm_totp(s, ctx.arg("code"), ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.totp_form(ctx, e.message), e)
        s.say("ok", _("Two-factor authentication now uses your authenticator app."))
        return redirect(f"{ROOT}/2fa")

    # ---------------------------------------------------------------- admin
    async def admin_form(self, ctx: Ctx, error: str | None = None, status: int = 200
                         ) -> Reply:
        s = ctx.session
        me = self.acc.require_admin(s)
        users = await self.ops.list_users(me)
        everyone = await self.ops.twofa_everyone()
        held = await self.acc.admin_quarantined(s)
        return self.show(ctx, _("Users"), views.admin(users, everyone, s.csrf, me)
                         + views.quarantined(held, s.csrf, self.clock.seconds()), status,
                         error)

    async def admin_device_access(self, ctx: Ctx) -> Reply:
        s = ctx.session
        access, device_id = ctx.arg("access"), ctx.arg("device")
        try:
            target = await self.acc.admin_device_access(s, ctx.arg("user"), device_id,
                                                        access, ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.admin_form(ctx, e.message), e)
        s.say("ok", (_("Device {device} of {user} allowed: it syncs from its next "
                       "request.") if access == "allow" else
                     _("Device {device} of {user} blocked.")).format(
                         device=device_id, user=target))
        return redirect(f"{ROOT}/admin")

    async def admin_twofa_form(self, ctx: Ctx, error: str | None = None, status: int = 200
                               ) -> Reply:
        s = ctx.session
        self.acc.require_admin(s)
        method = ctx.query("method") or ctx.arg("method") or ""
        if method not in ("email", "off"):
            if method == "totp":
                s.say("error", _("Users set up an authenticator app themselves, on their "
                                 "two-factor page."))
            return redirect(f"{ROOT}/admin")
        try:
            u = await self.acc.admin_user(s, ctx.query("user") or ctx.arg("user"))
        except AccountError as e:
            return self.show(ctx, _("Users"), views.message(e.message, f"{ROOT}/admin"), 404)
        return self.show(ctx, _("Two-factor authentication"),
                         views.admin_twofa_confirm(u, method, s.csrf), status, error)

    async def admin_twofa(self, ctx: Ctx) -> Reply:
        s = ctx.session
        method = ctx.arg("method")
        try:
            said = await self.acc.admin_twofa(s, ctx.arg("user"), method, ctx.arg("new"),
                                              ctx.arg("confirm"), ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.admin_twofa_form(ctx, e.message), e)
        s.say("ok", said)
        return redirect(f"{ROOT}/admin")

    async def admin_activesync(self, ctx: Ctx) -> Reply:
        s = ctx.session
        try:
            target = await self.acc.admin_activesync(s, ctx.arg("user"), ctx.arg("state"),
                                                     ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.admin_form(ctx, e.message), e)
        s.say("ok", (_("ActiveSync is on for {user}.") if ctx.arg("state") == "on" else
                     _("ActiveSync is off for {user}.")).format(user=target))
        return redirect(f"{ROOT}/admin")

    async def admin_everyone(self, ctx: Ctx) -> Reply:
        s = ctx.session
        try:
            refused = await self.acc.admin_twofa_everyone(s, ctx.arg("state"), ctx.addr)
        except AccountError as e:
            return self.refused(ctx, await self.admin_form(ctx, e.message), e)
        s.say("ok", _("Two-factor authentication for everyone is on.") if ctx.arg("state") ==
              "on" else _("Two-factor authentication for everyone is off."))
        if refused:
            s.say("error", _("ActiveSync now refuses these users until they set an "
                             "ActiveSync password: {users}.").format(users=", ".join(refused)))
        return redirect(f"{ROOT}/admin")


    # ---------------------------------------------------------------- deleted items
    async def _deleted_target(self, ctx: Ctx, name: str | None, *, restore: bool = False
                              ) -> tuple[Any, Any, str]:
        return await self.ops.deleted_target(self.acc, ctx.session, name, restore=restore)

    async def deleted(self, ctx: Ctx) -> Reply:
        s = ctx.session
        service, user, me = await self._deleted_target(ctx, ctx.query("user"))
        rows = await service.list_items(user, limit=200)
        return self.show(ctx, _("Recently deleted"), views.deleted(
            user.name, rows, s.csrf, self.clock.seconds(), user.name.lower() != me.lower()))

    async def deleted_restore(self, ctx: Ctx) -> Reply:
        from easync.deleted import RestoreError, parse_since

        s = ctx.session
        service, user, me = await self._deleted_target(ctx, ctx.arg("user"), restore=True)
        back = f"{ROOT}/deleted" + (f"?user={quote(user.name, safe='')}"
                                    if user.name.lower() != me.lower() else "")
        raw_id, device, since = ctx.arg("id"), ctx.arg("device"), ctx.arg("since")
        try:
            if raw_id:
                if not raw_id.isdigit():
                    raise RestoreError(_("not an item id: {value}").format(value=raw_id))
                done = await service.restore_ids(user, [int(raw_id)], actor=me)
            elif device and since:
                try:
                    moment = parse_since(since, self.clock.seconds())
                except ValueError:
                    raise RestoreError(_("not a time: {value}").format(value=since)) from None
                done = await service.restore_since(user, moment, device_id=device, actor=me)
            else:
                raise RestoreError(_("choose an item, or a device and a time"))
        except RestoreError as e:
            s.say("error", _("Nothing was restored: {why}.").format(why=tr(e.message)))
            return redirect(back)
        n = len(done.restored)
        if n:
            s.say("ok", ngettext("{n} item restored: it comes back on every device at its "
                                 "next sync.", "{n} items restored: they come back on every "
                                 "device at their next sync.", n).format(n=n))
        elif done.already:
            s.say("ok", _("Already restored."))
        if done.failed:
            s.say("error", _("Not restored: {ids}.").format(
                ids=", ".join(f"{i} ({tr(why)})" for i, why in done.failed)))
        return redirect(back)


def _mask(email: str | None) -> str | None:
    """``mario.rossi@example.it`` → ``m***@example.it``."""
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"
