"""The account page's HTML: plain server-rendered pages, one function each.

Every value that comes from a user, a device or the database goes through ``e()``
(HTML escaping) on its way in; the functions return ``str`` fragments of trusted HTML.
No inline script or style (the Content-Security-Policy forbids them): the look is
``/account/static/style.css`` and the only script (a copy button) is progressive.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from easync.account import static
from easync.account.adapter import Device, Shares, Status, UserRow
from easync.i18n import _, current, ngettext

ROOT = "/account"


def e(value: object) -> str:
    """HTML-escaped text (quotes too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: float | None, now: float | None = None) -> str:
    """A time for people: ``2025-03-14 09:26 UTC`` (+ "(3 minutes ago)" given ``now``)."""
    if not ts:
        return _("never")
    stamp = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    text = stamp.strftime("%Y-%m-%d %H:%M UTC")
    if now is not None:
        ago = now - ts
        if 0 <= ago < 90:
            text += " " + _("(just now)")
        elif 0 <= ago < 3600:
            n = int(ago // 60)
            text += " " + ngettext("({n} minute ago)", "({n} minutes ago)", n).format(n=n)
        elif 0 <= ago < 48 * 3600:
            n = int(ago // 3600)
            text += " " + ngettext("({n} hour ago)", "({n} hours ago)", n).format(n=n)
    return f'<time datetime="{stamp.isoformat()}">{e(text)}</time>'


def method_name(method: str | None) -> str:
    if method == "email":
        return _("by e-mail")
    if method == "totp":
        return _("with an authenticator app")
    return _("off")


def csrf_field(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{e(token)}">'


def form(action: str, csrf: str, inner: str, *, cls: str = "") -> str:
    klass = f' class="{cls}"' if cls else ""
    return (f'<form method="post" action="{e(action)}"{klass}>{csrf_field(csrf)}'
            f"{inner}</form>")


def flashes(messages: Iterable[tuple[str, str]]) -> str:
    out = []
    for kind, text in messages:
        role = "alert" if kind == "error" else "status"
        out.append(f'<div class="flash {e(kind)}" role="{role}">{e(text)}</div>')
    return "".join(out)


def page(title: str, body: str, *, user: str | None = None, csrf: str | None = None,
         admin: bool = False, messages: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole HTML document."""
    nav = ""
    if user is not None and csrf is not None:
        admin_link = (f'<a class="button secondary small" href="{ROOT}/admin">'
                      f'{_("Users")}</a>' if admin else "")
        nav = (f'<nav>{admin_link}'
               + form(f"{ROOT}/logout", csrf,
                      '<button class="secondary small" type="submit">'
                      f'{_("Log out")}</button>', cls="inline")
               + '</nav><div class="who">'
               + _("Signed in as <strong>{user}</strong>").format(user=e(user))
               + "</div>")
    doc = f"""<!doctype html>
<html lang="{current()}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{e(title)} · easync</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ROOT}/static/style.css?v={static.VERSION}">
<script src="{ROOT}/static/account.js?v={static.VERSION}" defer></script>
</head>
<body>
<header><div class="bar"><a class="brand" href="{ROOT}/">{_("easync account")}</a>{nav}</div></header>
<main>
<h1>{e(title)}</h1>
{flashes(messages)}{body}
</main>
</body>
</html>
"""
    return doc.encode("utf-8")


# ------------------------------------------------------------------ login

def login(csrf: str, username: str = "") -> str:
    return form(f"{ROOT}/login", csrf, f"""
<section class="card">
<p class="muted">{_("Manage the password your phone uses for ActiveSync, your two-factor "
                    "authentication and your devices.")}</p>
<label for="username">{_("User name")}</label>
<input id="username" name="username" type="text" autocomplete="username"
 autocapitalize="none" spellcheck="false" required maxlength="256" value="{e(username)}"
 autofocus>
<label for="password">{_("Password")}</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required maxlength="1024">
<button type="submit">{_("Log in")}</button>
</section>""")


def code_input(autofocus: bool = True) -> str:
    focus = " autofocus" if autofocus else ""
    return (f'<label for="code">{_("Security code")}</label>'
            '<input id="code" name="code" class="code" type="text" inputmode="numeric" '
            'autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="12" required'
            f"{focus}>")


def code_step(csrf: str, user: str, method: str, sent_to: str) -> str:
    """The second login step: the one-time code."""
    if method == "email":
        where = (_("We sent a 6-digit code to <strong>{email}</strong>. It is valid for 10 "
                   "minutes.").format(email=e(sent_to)) if sent_to else
                 _("Ask for a code: we send it to your e-mail address."))
        resend = form(f"{ROOT}/login/send", csrf,
                      f'<button class="secondary" type="submit">{_("Send a new code")}'
                      "</button>")
    else:
        where = _("Enter the 6-digit code your authenticator app shows for easync.")
        resend = ""
    signing_in = _("Signing in as <strong>{user}</strong>.").format(user=e(user))
    return f"""<section class="card">
<h2>{_("Two-factor authentication")}</h2>
<p>{signing_in} {where}</p>
{form(f"{ROOT}/login/code", csrf,
      code_input() + f'<button type="submit">{_("Verify")}</button>')}
<div class="actions">{resend}
{form(f"{ROOT}/logout", csrf,
      f'<button class="link" type="submit">{_("Cancel")}</button>')}</div>
</section>"""


def verify(csrf: str, user: str, method: str | None, sent_to: str, next_url: str) -> str:
    """"Confirm it's you": the password, and with 2FA on a code, before a change."""
    if method == "email":
        hint = (_("We sent a code to <strong>{email}</strong>.").format(email=e(sent_to))
                if sent_to else
                _("First ask for a code by e-mail, then enter it below with your password."))
        send = form(f"{ROOT}/verify/send", csrf,
                    f'<input type="hidden" name="next" value="{e(next_url)}">'
                    '<button class="secondary" type="submit">'
                    f'{_("Send a new code") if sent_to else _("Send me a code")}</button>')
        code = code_input(autofocus=False)
    elif method == "totp":
        hint = _("Enter your password and the code your authenticator app shows.")
        send = ""
        code = code_input(autofocus=False)
    else:
        hint = _("Enter your password.")
        send = ""
        code = ""
    return f"""<section class="card">
<p>{_("You need to authenticate to proceed.")} {hint}</p>
{send}
{form(f"{ROOT}/verify", csrf, f'''
<input type="hidden" name="next" value="{e(next_url)}">
<input type="text" name="username" value="{e(user)}" autocomplete="username" hidden>
<label for="password">{_("Your password")}</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required maxlength="1024" autofocus>
{code}
<button type="submit">{_("Verify")}</button>''')}
<p><a href="{ROOT}/">{_("Back")}</a></p>
</section>"""


# ------------------------------------------------------------------ overview

def _badge(on: bool, yes: str, no: str) -> str:
    return f'<span class="badge {"on" if on else "off"}">{yes if on else no}</span>'


def as_status_text(st: Status) -> str:
    """What the ActiveSync password means for phones now, in one sentence."""
    if not st.activesync:
        return _("ActiveSync is off for your account: ask an administrator to turn it on.")
    if st.eas_refused:
        return _("Two-factor authentication is on and you have no ActiveSync password: "
                 "phones are refused until you set one.")
    if st.as_password_set:
        return _("Phones must use your ActiveSync password; your login password does not "
                 "work for ActiveSync.")
    return _("Phones use your login password. Set an ActiveSync password to give them "
             "their own.")


def as_facts(st: Status, now: float) -> str:
    if st.as_password_set:
        used = when(st.as_password_last_used, now)
        if st.as_password_last_used and st.as_password_last_device:
            used += " " + _("by <strong>{device}</strong>").format(
                device=e(st.as_password_last_device))
        since = _("since {when}").format(when=when(st.as_password_since, now))
        rows = (f"<dt>{_('ActiveSync password')}</dt><dd>{_badge(True, _('set'), '')} "
                f"{since}</dd>"
                f"<dt>{_('Last used')}</dt><dd>{used}</dd>")
    else:
        mandatory = " " + _("(required)") if st.twofa_on else ""
        rows = (f'<dt>{_("ActiveSync password")}</dt><dd><span class="badge '
                f'{"bad" if st.eas_refused else "off"}">{_("not set")}</span>{mandatory}</dd>')
    return rows


def overview(st: Status, devices: list[Device], csrf: str, now: float,
             policy: list[str] | None = None,
             shares: Shares | None = None) -> str:
    warn = (f'<p class="warn">{e(as_status_text(st))}</p>' if st.eas_refused
            else f'<p class="muted">{e(as_status_text(st))}</p>')
    everyone = " " + _("(required for every user)") if st.twofa_everyone else ""
    now_on = (_("On, {method}").format(method=e(method_name(st.twofa))) if st.twofa_on
              else _("Off"))
    return f"""<section class="card" id="activesync">
<h2>ActiveSync</h2>
<dl class="facts">
<dt>ActiveSync</dt><dd>{_badge(st.activesync, _('enabled'), _('not enabled'))}</dd>
<dt>{_("Two-factor authentication")}</dt><dd>{e(method_name(st.twofa))}{everyone}</dd>
{as_facts(st, now)}
</dl>
{warn}
<a class="button" href="{ROOT}/as-password">{_("See and change the ActiveSync password")}</a>
</section>
<section class="card" id="devices">
<h2>{_("Devices")}</h2>
{device_list(devices, now)}
</section>
<section class="card" id="deleted">
<h2>{_("Recently deleted")}</h2>
<p class="muted">{_("What your phones and tablets deleted is kept for a while: put it "
                    "back on every device.")}</p>
<a class="button secondary" href="{ROOT}/deleted">{_("See recently deleted items")}</a>
</section>{policy_card(policy)}
<section class="card" id="twofa">
<h2>{_("Two-factor authentication")}</h2>
<p>{now_on}{everyone}.</p>
<a class="button secondary" href="{ROOT}/2fa">{_("Two-factor settings")}</a>
</section>{sharing(shares, csrf) if shares is not None and shares.available else ""}"""


def _kind(cls: str) -> str:
    return {"Contacts": _("contacts"), "Calendar": _("calendar"),
            "Tasks": _("tasks")}.get(cls, cls)


def _access(write: bool) -> str:
    return _("can change it") if write else _("read only")


def sharing(sh: Shares, csrf: str) -> str:
    """Shared folders: what the user shares (with a button to stop), what others
    share with them, and a form to share one of their folders with a colleague."""
    mine = []
    for m in sh.mine:
        who = m["to"] or _("everyone")
        stop = "" if m["to"] is None else form(
            f"{ROOT}/shares/remove", csrf,
            f'<input type="hidden" name="folder_id" value="{e(m["folder_id"])}">'
            f'<input type="hidden" name="to" value="{e(m["to"])}">'
            f'<button class="secondary" type="submit">{_("Stop sharing")}</button>',
            cls="inline")
        mine.append(f'<li><div class="row-title">{e(m["name"])} → {e(who)}</div>'
                    f'<p class="muted">{e(_kind(m["cls"]))}, {e(_access(m["write"]))}</p>'
                    f"{stop}</li>")
    theirs = [f'<li><div class="row-title">{e(w["name"])}</div>'
              f'<p class="muted">{e(_("from {owner}").format(owner=w["owner"]))}, '
              f'{e(_access(w["write"]))}</p></li>' for w in sh.with_me]
    options = "".join(f'<option value="{e(f["folder_id"])}">{e(f["name"])} '
                      f'({e(_kind(f["cls"]))})</option>' for f in sh.folders)
    add = form(f"{ROOT}/shares/add", csrf, f"""
<label for="share-folder">{_("Folder")}</label>
<select id="share-folder" name="folder_id">{options}</select>
<label for="share-to">{_("Colleague (user name)")}</label>
<input id="share-to" name="to" type="text" autocomplete="off" required>
<label for="share-access">{_("Access")}</label>
<select id="share-access" name="access">
<option value="read">{_("Read only")}</option>
<option value="write">{_("Can change it")}</option>
</select>
<button type="submit">{_("Share")}</button>""") if options else ""
    none_mine = f'<p class="muted">{_("You share no folder.")}</p>'
    none_theirs = f'<p class="muted">{_("Nobody shares a folder with you.")}</p>'
    return f"""
<section class="card" id="sharing">
<h2>{_("Shared folders")}</h2>
<p class="muted">{_("A folder you share appears on your colleague's phone as an extra "
                    "calendar or address book. Read only: their changes to it are undone "
                    "on their phone.")}</p>
<h3>{_("You share")}</h3>
{f'<ul class="list">{"".join(mine)}</ul>' if mine else none_mine}
{add}
<h3>{_("Shared with you")}</h3>
{f'<ul class="list">{"".join(theirs)}</ul>' if theirs else none_theirs}
</section>"""


def policy_card(lines: list[str] | None) -> str:
    """The device policy the user's phones must meet (read-only); "" when unknown."""
    if not lines:
        return ""
    items = "".join(f"<li>{e(line)}</li>" for line in lines)
    return f"""
<section class="card" id="policy">
<h2>{_("Device policy")}</h2>
<p class="muted">{_("What your phone must meet to sync with this account (your phone "
                    "asks you for it when you add the account or when it changes):")}</p>
<ul>{items}</ul>
</section>"""


def device_list(devices: list[Device], now: float) -> str:
    if not devices:
        return ('<p class="muted">'
                + _("No phone or tablet has connected with your account yet.") + "</p>")
    items = []
    for d in devices:
        wipe = ""
        if d.wipe == "pending":
            wipe = (f'<dt>{_("Wipe")}</dt><dd><span class="badge bad">{_("requested")}'
                    f'</span> {_("(at its next connection)")}</dd>')
        elif d.wipe == "done":
            wipe = f'<dt>{_("Wipe")}</dt><dd><span class="badge bad">{_("done")}</span></dd>'
        qid = quote(d.device_id, safe="")
        block = ("" if d.access == "block" else
                 f'<a class="button secondary" href="{ROOT}/devices/block?device={e(qid)}">'
                 f'{_("Block…")}</a>')
        account_wipe = _badge(d.account_wipe, _("possible"), _("not possible (needs EAS 16.1)"))
        items.append(f"""<li>
<div class="row-title">{e(d.device_type or _("Device"))} · {e(d.device_id)}</div>
<dl class="facts">
<dt>{_("Access")}</dt><dd>{access_badge(d.access)}</dd>
<dt>{_("Last sync")}</dt><dd>{when(d.last_sync, now)}</dd>
<dt>{_("Last seen")}</dt><dd>{when(d.last_seen, now)}</dd>
{f"<dt>{_('Client')}</dt><dd>{e(d.user_agent)}</dd>" if d.user_agent else ""}
<dt>{_("Account-only wipe")}</dt><dd>{account_wipe}</dd>
{wipe}
</dl>
<div class="actions">
{block}
<a class="button secondary" href="{ROOT}/devices/wipe?device={e(qid)}">{_("Wipe…")}</a>
<a class="button secondary" href="{ROOT}/devices/remove?device={e(qid)}">{_("Remove…")}</a>
</div>
</li>""")
    return f'<ul class="list">{"".join(items)}</ul>'


def access_badge(access: str) -> str:
    """A device's access state (``easync.deviceaccess``) as a badge."""
    if access == "block":
        return f'<span class="badge bad">{_("blocked")}</span>'
    if access == "quarantine":
        return (f'<span class="badge bad">{_("in quarantine")}</span> '
                + _("(waiting for an administrator)"))
    return f'<span class="badge">{_("allowed")}</span>'


def device_confirm(d: Device, action: str, csrf: str) -> str:
    hidden = f'<input type="hidden" name="device" value="{e(d.device_id)}">'
    cancel = f'<a class="button secondary" href="{ROOT}/#devices">{_("Cancel")}</a>'
    if action == "wipe":
        # account-only first (issue #14 point 3): the full wipe needs its own button and
        # a box ticked
        if d.account_wipe:
            about = _("The device erases the data of this account (contacts, calendar, "
                      "tasks synced from here) the next time it connects. Its other data, "
                      "photos included, stays.")
            go = _("Wipe this account from the device")
            first = (f"<p>{about}</p>"
                     + form(f"{ROOT}/devices/wipe", csrf, hidden
                            + '<input type="hidden" name="kind" value="account">'
                            + f'<button type="submit">{go}</button>{cancel}'))
        else:
            why = _("This device has not connected with EAS 16.1 or later: it cannot erase "
                    "just this account. Block it instead, or wipe the whole device below.")
            first = f'<p class="warn">{why}</p>{cancel}'
        whole = _("The whole device is erased the next time it connects, as for a lost or "
                  "stolen phone: everything on it, the owner's photos too.")
        sure = _("I understand: erase the WHOLE device")
        go_full = _("Wipe the whole device")
        full = (f"<h3>{go_full}</h3><p>{whole}</p>"
                + form(f"{ROOT}/devices/wipe", csrf, hidden
                       + '<input type="hidden" name="kind" value="full">'
                       + f'<label><input type="checkbox" name="sure" value="yes"> {sure}</label>'
                       + f'<button class="danger" type="submit">{go_full}</button>'))
        return f"""<section class="card">
<h2>{e(d.device_type or _("Device"))} · {e(d.device_id)}</h2>
{first}
{full}
</section>"""
    if action == "block":
        text = _("The device is refused from its next connection on: it stops syncing, and "
                 "nothing on it is erased. Only an administrator can let it in again.")
        button = f'<button class="danger" type="submit">{_("Block this device")}</button>'
    elif action == "wipe":
        text = ""
        button = ""
    else:
        text = _("easync forgets the device and its sync state. If it connects again it "
                 "starts over with a full sync; to stop it for good, change your "
                 "ActiveSync password as well.")
        button = f'<button class="danger" type="submit">{_("Remove this device")}</button>'
    return f"""<section class="card">
<h2>{e(d.device_type or _("Device"))} · {e(d.device_id)}</h2>
<p>{text}</p>
{form(f"{ROOT}/devices/{action}", csrf,
      f'<input type="hidden" name="device" value="{e(d.device_id)}">{button}'
      f'<a class="button secondary" href="{ROOT}/#devices">{_("Cancel")}</a>')}
</section>"""


# ------------------------------------------------------------------ ActiveSync password

def as_password(st: Status, csrf: str, now: float, reveal: str | None) -> str:
    shown = ""
    if reveal:
        shown = f"""<section class="card" id="generated">
<h2>{_("Your new ActiveSync password")}</h2>
<p class="secret" id="generated-password">{e(reveal)}</p>
{copy_button("generated-password")}
<p class="warn">{_("Enter it on your phone now, in the account's password field. It is "
                   "shown only this once: easync keeps only a hash of it.")}</p>
</section>"""
    clear = ""
    if st.as_password_set:
        note = (_("With two-factor authentication on, phones are then refused until you "
                  "set a new one.") if st.twofa_on else
                _("Phones then use your login password."))
        clear = f"""<section class="card">
<h2>{_("Remove the ActiveSync password")}</h2>
<p class="muted">{e(note)}</p>
{form(f"{ROOT}/as-password", csrf,
      '<input type="hidden" name="action" value="clear">'
      f'<button class="secondary" type="submit">{_("Remove it")}</button>')}
</section>"""
    title = _("Change the ActiveSync password") if st.as_password_set else \
        _("Set an ActiveSync password")
    return f"""{shown}<section class="card">
<dl class="facts">{as_facts(st, now)}</dl>
<p class="muted">{e(as_status_text(st))}</p>
</section>
<section class="card">
<h2>{title}</h2>
{form(f"{ROOT}/as-password", csrf, f'''
<input type="hidden" name="action" value="set">
<label for="new">{_("New password")}</label>
<input id="new" name="new" type="password" autocomplete="new-password" required
 maxlength="1024">
<label for="confirm">{_("Confirm password")}</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password" required
 maxlength="1024">
<p class="muted">{_("Up to 72 bytes. Every phone of yours then needs this password.")}</p>
<button type="submit">{_("Save")}</button>''')}
<p>{_("or")}</p>
{form(f"{ROOT}/as-password", csrf,
      '<input type="hidden" name="action" value="generate">'
      f'<button class="secondary" type="submit">{_("Generate one for me")}</button>')}
</section>
{clear}"""


# ------------------------------------------------------------------ 2FA

def twofa(st: Status, csrf: str, masked_email: str | None) -> str:
    cur = (_("On, {method}").format(method=e(method_name(st.twofa))) if st.twofa_on
           else _("Off"))
    if st.twofa_everyone:
        cur += " " + _("(required for every user)")
    email_btn = ""
    if st.twofa != "email":
        if st.email:
            email_btn = form(f"{ROOT}/2fa", csrf,
                             '<input type="hidden" name="method" value="email">'
                             f'<button type="submit">{_("Use codes by e-mail")}</button>')
        else:
            email_btn = ('<p class="muted">'
                         + _("Codes by e-mail need an e-mail address on your account; ask "
                             "an administrator.") + "</p>")
    totp_btn = ""
    if st.twofa != "totp":
        totp_btn = form(f"{ROOT}/2fa/totp", csrf,
                        f'<button type="submit">{_("Use an authenticator app")}</button>')
    off = ""
    if st.twofa_on:
        off = ('<p class="muted">'
               + _("Only an administrator can turn two-factor authentication off.") + "</p>")
    to = (" " + _("(to {email})").format(email=e(masked_email))
          if masked_email and st.twofa == "email" else "")
    return f"""<section class="card">
<dl class="facts"><dt>{_("Now")}</dt><dd>{cur}{to}</dd></dl>
<p class="muted">{_("With two-factor authentication on, logging in here needs a one-time "
                    "code too, and phones need an ActiveSync password.")}</p>
<div class="actions">{email_btn}{totp_btn}</div>
{off}
</section>"""


def totp_enrol(csrf: str, secret: str, qr_svg_data_uri: str) -> str:
    grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return f"""<section class="card">
<h2>{_("Add easync to your authenticator app")}</h2>
<p>{_("Scan this code with the app (Google Authenticator, Aegis, FreeOTP, 1Password, …):")}</p>
<img class="qr" src="{e(qr_svg_data_uri)}" alt="{e(_("QR code of the authenticator secret"))}"
 width="220" height="220">
<p class="muted">{_("Or enter this key by hand (time-based, 6 digits, 30 seconds):")}</p>
<p class="secret" id="totp-secret">{e(grouped)}</p>
{copy_button("totp-secret")}
{form(f"{ROOT}/2fa/totp/confirm", csrf, code_input(autofocus=False) +
      f'<button type="submit">{_("Confirm and turn on")}</button>')}
<p class="muted">{_("Two-factor authentication switches to the app only once a code from "
                    "it is accepted.")}</p>
<p><a href="{ROOT}/2fa">{_("Cancel")}</a></p>
</section>"""


# ------------------------------------------------------------------ admin

def quarantined(devices: list[Device], csrf: str, now: float) -> str:
    """The admin's list of devices in quarantine, each with Allow and Block."""
    if not devices:
        return (f'<section class="card" id="quarantine"><h2>{_("Devices in quarantine")}'
                f'</h2><p class="muted">{_("No device is waiting.")}</p></section>')
    items = []
    for d in devices:
        hidden = (f'<input type="hidden" name="user" value="{e(d.user)}">'
                  f'<input type="hidden" name="device" value="{e(d.device_id)}">')
        allow = form(f"{ROOT}/admin/device-access", csrf, hidden
                     + '<input type="hidden" name="access" value="allow">'
                     f'<button type="submit">{_("Allow")}</button>')
        block = form(f"{ROOT}/admin/device-access", csrf, hidden
                     + '<input type="hidden" name="access" value="block">'
                     f'<button class="danger" type="submit">{_("Block")}</button>')
        items.append(f"""<li>
<div class="row-title">{e(d.user)} · {e(d.device_type or _("Device"))} · {e(d.device_id)}</div>
<dl class="facts">
<dt>{_("First seen")}</dt><dd>{when(d.first_seen, now)}</dd>
<dt>{_("Last seen")}</dt><dd>{when(d.last_seen, now)}</dd>
{f"<dt>{_('Client')}</dt><dd>{e(d.user_agent)}</dd>" if d.user_agent else ""}
</dl>
<div class="actions">{allow}{block}</div>
</li>""")
    return (f'<section class="card" id="quarantine"><h2>{_("Devices in quarantine")}</h2>'
            f'<ul class="list">{"".join(items)}</ul></section>')


def admin(users: list[UserRow], everyone: bool, csrf: str, me: str) -> str:
    rows = []
    for u in users:
        qn = quote(u.name, safe="")
        as_form = form(f"{ROOT}/admin/activesync", csrf,
                       f'<input type="hidden" name="user" value="{e(u.name)}">'
                       f'<input type="hidden" name="state" value="{"off" if u.activesync else "on"}">'
                       f'<button class="secondary" type="submit">'
                       f'{_("Turn ActiveSync off") if u.activesync else _("Turn ActiveSync on")}'
                       "</button>")
        choices = [("off", _("2FA off")), ("email", _("2FA by e-mail"))]
        if u.twofa == "totp":       # users set up an authenticator app themselves
            choices.append(("totp", _("2FA by authenticator app")))
        options = "".join(
            f'<option value="{v}"{" selected" if (u.twofa or "off") == v else ""}>{t}</option>'
            for v, t in choices)
        tf_form = (f'<form method="get" action="{ROOT}/admin/2fa">'
                   f'<input type="hidden" name="user" value="{e(u.name)}">'
                   f'<label for="m-{e(qn)}">{_("Two-factor authentication")}</label>'
                   f'<select id="m-{e(qn)}" name="method">{options}</select>'
                   f'<button class="secondary" type="submit">{_("Change…")}</button></form>')
        refused = u.activesync and u.twofa and not u.as_password_set
        rows.append(f"""<li>
<div class="row-title">{e(u.name)}{" " + _("(you)") if u.name == me else ""}{
    f' <span class="badge">{_("admin")}</span>' if u.admin else ""}</div>
<dl class="facts">
<dt>{_("E-mail")}</dt><dd>{e(u.email or "—")}</dd>
<dt>ActiveSync</dt><dd>{_badge(u.activesync, _("enabled"), _("not enabled"))}</dd>
<dt>{_("2FA")}</dt><dd>{e(method_name(u.twofa))}</dd>
<dt>{_("ActiveSync password")}</dt><dd>{
    f'<span class="badge bad">{_("not set: phones refused")}</span>' if refused
    else _badge(u.as_password_set, _("set"), _("not set"))}</dd>
</dl>
<div class="actions">{as_form}<a class="button secondary" href="{ROOT}/deleted?user={
    e(qn)}">{_("Recently deleted")}</a></div>
{tf_form}
</li>""")
    flip = "off" if everyone else "on"
    now_state = (_("Now <strong>on</strong>.") if everyone else
                 _("Now <strong>off</strong>."))
    flip_button = (_("Turn it off for everyone") if everyone else
                   _("Turn it on for everyone"))
    return f"""<section class="card">
<h2>{_("Two-factor authentication for everyone")}</h2>
<p>{now_state} {_("When on, every user needs a one-time code to log in here and an "
                  "ActiveSync password for their phones (users without 2FA get codes by "
                  "e-mail).")}</p>
{form(f"{ROOT}/admin/2fa-everyone", csrf,
      f'<input type="hidden" name="state" value="{flip}">'
      f'<button class="secondary" type="submit">{flip_button}</button>')}
</section>
<section class="card">
<h2>{_("Users")}</h2>
<ul class="list">{"".join(rows)}</ul>
</section>"""


def deleted(user: str, rows: list[Any], csrf: str, now: float, other: bool) -> str:
    """The "Recently deleted" page: ``rows`` (``easync.model.KeptItem``), newest first,
    each with a restore button, and a form restoring all that one device deleted since
    a time.  ``other``: an administrator looking at ``user``'s."""
    hidden_user = f'<input type="hidden" name="user" value="{e(user)}">' if other else ""
    back = f"{ROOT}/admin" if other else f"{ROOT}/"
    if other:
        intro = _("What the devices of {user} deleted, kept for a while.").format(
            user=f"<strong>{e(user)}</strong>")
    else:
        intro = _("What your phones and tablets deleted is kept for a while. A restored "
                  "item comes back on every device at its next sync.")
    if not rows:
        listing = f'<p class="muted">{_("Nothing deleted recently.")}</p>'
    else:
        items = []
        for k in rows:
            button = (f'{hidden_user}<input type="hidden" name="id" value="{int(k.id)}">'
                      f'<button type="submit">{_("Restore")}</button>')
            items.append(f"""<li>
<div class="row-title">{e(k.summary or _("(no name)"))} · {e(_(k.cls))}</div>
<dl class="facts">
<dt>{_("Deleted")}</dt><dd>{when(k.deleted_at, now)}</dd>
<dt>{_("By device")}</dt><dd>{e(k.device_id)}</dd>
</dl>
<div class="actions">{form(f"{ROOT}/deleted/restore", csrf, button)}</div>
</li>""")
        listing = f'<ul class="list">{"".join(items)}</ul>'
    devices = sorted({k.device_id for k in rows})
    bulk = ""
    if devices:
        options = "".join(f'<option value="{e(d)}">{e(d)}</option>' for d in devices)
        hint = _("A date or time (UTC), such as 2026-12-01 or 2026-12-01T14:30, or an age "
                 "such as 2h or 3d.")
        fields = (f'{hidden_user}<label for="device">{_("Device")}</label>'
                  f'<select id="device" name="device">{options}</select>'
                  f'<label for="since">{_("Deleted since")}</label>'
                  '<input id="since" name="since" type="text" required maxlength="40"'
                  ' placeholder="2h, 3d, 2026-12-01">'
                  f'<p class="muted">{hint}</p>'
                  f'<button type="submit">{_("Restore")}</button>')
        bulk = f"""<section class="card">
<h2>{_("Restore everything a device deleted")}</h2>
{form(f"{ROOT}/deleted/restore", csrf, fields)}
</section>"""
    return f"""<section class="card">
<p>{intro}</p>
{listing}
<a class="button secondary" href="{back}">{_("Back")}</a>
</section>
{bulk}"""


def admin_twofa_confirm(u: UserRow, method: str, csrf: str) -> str:
    """Turning 2FA on or off for a user; with ActiveSync and no ActiveSync password, the
    page asks for one in the same step (optional), as vtenext does."""
    ask = ""
    if method != "off" and u.activesync and not u.as_password_set:
        warn = _("Turning on two-factor authentication requires a dedicated ActiveSync "
                 "password. {user} has none: their phones are refused until one is set. "
                 "Set it now, or leave both fields empty to let {user} set it on this "
                 "page.").format(user=e(u.name))
        ask = f"""<p class="warn">{warn}</p>
<label for="new">{_("New ActiveSync password")}</label>
<input id="new" name="new" type="password" autocomplete="new-password" maxlength="1024">
<label for="confirm">{_("Confirm password")}</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password"
 maxlength="1024">"""
    about = (_("You are about to turn two-factor authentication off for "
               "<strong>{user}</strong>.") if method == "off" else
             _("You are about to turn on two-factor authentication {method} for "
               "<strong>{user}</strong>.")).format(user=e(u.name),
                                                  method=e(method_name(method)))
    return f"""<section class="card">
<h2>{e(u.name)}</h2>
<p>{about}</p>
{form(f"{ROOT}/admin/2fa", csrf,
      f'<input type="hidden" name="user" value="{e(u.name)}">'
      f'<input type="hidden" name="method" value="{e(method)}">{ask}'
      '<button type="submit">OK</button>'
      f'<a class="button secondary" href="{ROOT}/admin">{_("Cancel")}</a>')}
</section>"""


def message(text: str, link: str = f"{ROOT}/", link_text: str | None = None) -> str:
    back = _("Back") if link_text is None else link_text
    return f'<section class="card"><p>{e(text)}</p><p><a href="{e(link)}">{e(back)}</a></p></section>'


def copy_button(target: str) -> str:
    """The "Copy" button of the element ``target`` (shown by account.js, which says
    the ``data-copied`` text once done)."""
    return (f'<button class="secondary" type="button" data-copy="{e(target)}" '
            f'data-copied="{e(_("Copied"))}" hidden>{_("Copy")}</button>')
