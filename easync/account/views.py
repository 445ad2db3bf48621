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
from urllib.parse import quote

from easync.account import static
from easync.account.adapter import Device, Status, UserRow

ROOT = "/account"


def e(value: object) -> str:
    """HTML-escaped text (quotes too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: float | None, now: float | None = None) -> str:
    """A time for people: ``2025-03-14 09:26 UTC`` (+ "(3 minutes ago)" given ``now``)."""
    if not ts:
        return "never"
    stamp = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    text = stamp.strftime("%Y-%m-%d %H:%M UTC")
    if now is not None:
        ago = now - ts
        if 0 <= ago < 90:
            text += " (just now)"
        elif 0 <= ago < 3600:
            text += f" ({int(ago // 60)} minutes ago)"
        elif 0 <= ago < 48 * 3600:
            text += f" ({int(ago // 3600)} hours ago)"
    return f'<time datetime="{stamp.isoformat()}">{e(text)}</time>'


def method_name(method: str | None) -> str:
    return {"email": "by e-mail", "totp": "with an authenticator app"}.get(
        method or "", "off")


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
        admin_link = (f'<a class="button secondary small" href="{ROOT}/admin">Users</a>'
                      if admin else "")
        nav = (f'<nav>{admin_link}'
               + form(f"{ROOT}/logout", csrf,
                      '<button class="secondary small" type="submit">Log out</button>',
                      cls="inline")
               + f'</nav><div class="who">Signed in as <strong>{e(user)}</strong></div>')
    doc = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{e(title)} · easync</title>
<link rel="stylesheet" href="{ROOT}/static/style.css?v={static.VERSION}">
<script src="{ROOT}/static/account.js?v={static.VERSION}" defer></script>
</head>
<body>
<header><div class="bar"><a class="brand" href="{ROOT}/">easync account</a>{nav}</div></header>
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
<p class="muted">Manage the password your phone uses for ActiveSync, your two-factor
authentication and your devices.</p>
<label for="username">User name</label>
<input id="username" name="username" type="text" autocomplete="username"
 autocapitalize="none" spellcheck="false" required maxlength="256" value="{e(username)}"
 autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required maxlength="1024">
<button type="submit">Log in</button>
</section>""")


def code_input(autofocus: bool = True) -> str:
    focus = " autofocus" if autofocus else ""
    return ('<label for="code">Security code</label>'
            '<input id="code" name="code" class="code" type="text" inputmode="numeric" '
            'autocomplete="one-time-code" pattern="[0-9 ]*" maxlength="12" required'
            f"{focus}>")


def code_step(csrf: str, user: str, method: str, sent_to: str) -> str:
    """The second login step: the one-time code."""
    if method == "email":
        where = (f"We sent a 6-digit code to <strong>{e(sent_to)}</strong>. It is valid "
                 "for 10 minutes." if sent_to else
                 "Ask for a code: we send it to your e-mail address.")
        resend = form(f"{ROOT}/login/send", csrf,
                      '<button class="secondary" type="submit">Send a new code</button>')
    else:
        where = "Enter the 6-digit code your authenticator app shows for easync."
        resend = ""
    return f"""<section class="card">
<h2>Two-factor authentication</h2>
<p>Signing in as <strong>{e(user)}</strong>. {where}</p>
{form(f"{ROOT}/login/code", csrf, code_input() + '<button type="submit">Verify</button>')}
<div class="actions">{resend}
{form(f"{ROOT}/logout", csrf, '<button class="link" type="submit">Cancel</button>')}</div>
</section>"""


def verify(csrf: str, user: str, method: str | None, sent_to: str, next_url: str) -> str:
    """"Confirm it's you": the password, and with 2FA on a code, before a change."""
    if method == "email":
        hint = (f"We sent a code to <strong>{e(sent_to)}</strong>." if sent_to else
                "First ask for a code by e-mail, then enter it below with your password.")
        send = form(f"{ROOT}/verify/send", csrf,
                    f'<input type="hidden" name="next" value="{e(next_url)}">'
                    '<button class="secondary" type="submit">'
                    f'{"Send a new code" if sent_to else "Send me a code"}</button>')
        code = code_input(autofocus=False)
    elif method == "totp":
        hint = "Enter your password and the code your authenticator app shows."
        send = ""
        code = code_input(autofocus=False)
    else:
        hint = "Enter your password."
        send = ""
        code = ""
    return f"""<section class="card">
<p>You need to authenticate to proceed. {hint}</p>
{send}
{form(f"{ROOT}/verify", csrf, f'''
<input type="hidden" name="next" value="{e(next_url)}">
<input type="text" name="username" value="{e(user)}" autocomplete="username" hidden>
<label for="password">Your password</label>
<input id="password" name="password" type="password" autocomplete="current-password"
 required maxlength="1024" autofocus>
{code}
<button type="submit">Verify</button>''')}
<p><a href="{ROOT}/">Back</a></p>
</section>"""


# ------------------------------------------------------------------ overview

def _badge(on: bool, yes: str = "on", no: str = "off") -> str:
    return f'<span class="badge {"on" if on else "off"}">{yes if on else no}</span>'


def as_status_text(st: Status) -> str:
    """What the ActiveSync password means for phones now, in one sentence."""
    if not st.activesync:
        return "ActiveSync is off for your account: ask an administrator to turn it on."
    if st.eas_refused:
        return ("Two-factor authentication is on and you have no ActiveSync password: "
                "phones are refused until you set one.")
    if st.as_password_set:
        return ("Phones must use your ActiveSync password; your login password does not "
                "work for ActiveSync.")
    return ("Phones use your login password. Set an ActiveSync password to give them "
            "their own.")


def as_facts(st: Status, now: float) -> str:
    if st.as_password_set:
        used = when(st.as_password_last_used, now)
        if st.as_password_last_used and st.as_password_last_device:
            used += f" by <strong>{e(st.as_password_last_device)}</strong>"
        rows = (f"<dt>ActiveSync password</dt><dd>{_badge(True, 'set', '')} since "
                f"{when(st.as_password_since, now)}</dd>"
                f"<dt>Last used</dt><dd>{used}</dd>")
    else:
        mandatory = " (required)" if st.twofa_on else ""
        rows = ('<dt>ActiveSync password</dt><dd><span class="badge '
                f'{"bad" if st.eas_refused else "off"}">not set</span>{mandatory}</dd>')
    return rows


def overview(st: Status, devices: list[Device], csrf: str, now: float) -> str:
    warn = (f'<p class="warn">{e(as_status_text(st))}</p>' if st.eas_refused
            else f'<p class="muted">{e(as_status_text(st))}</p>')
    everyone = " (required for every user)" if st.twofa_everyone else ""
    return f"""<section class="card" id="activesync">
<h2>ActiveSync</h2>
<dl class="facts">
<dt>ActiveSync</dt><dd>{_badge(st.activesync, 'enabled', 'not enabled')}</dd>
<dt>Two-factor authentication</dt><dd>{e(method_name(st.twofa))}{everyone}</dd>
{as_facts(st, now)}
</dl>
{warn}
<a class="button" href="{ROOT}/as-password">See and change the ActiveSync password</a>
</section>
<section class="card" id="devices">
<h2>Devices</h2>
{device_list(devices, now)}
</section>
<section class="card" id="twofa">
<h2>Two-factor authentication</h2>
<p>{"On, " + e(method_name(st.twofa)) if st.twofa_on else "Off"}{everyone}.</p>
<a class="button secondary" href="{ROOT}/2fa">Two-factor settings</a>
</section>"""


def device_list(devices: list[Device], now: float) -> str:
    if not devices:
        return '<p class="muted">No phone or tablet has connected with your account yet.</p>'
    items = []
    for d in devices:
        wipe = ""
        if d.wipe == "pending":
            wipe = ('<dt>Wipe</dt><dd><span class="badge bad">requested</span> '
                    "(at its next connection)</dd>")
        elif d.wipe == "done":
            wipe = '<dt>Wipe</dt><dd><span class="badge bad">done</span></dd>'
        qid = quote(d.device_id, safe="")
        items.append(f"""<li>
<div class="row-title">{e(d.device_type or "Device")} · {e(d.device_id)}</div>
<dl class="facts">
<dt>Last sync</dt><dd>{when(d.last_sync, now)}</dd>
<dt>Last seen</dt><dd>{when(d.last_seen, now)}</dd>
{f"<dt>Client</dt><dd>{e(d.user_agent)}</dd>" if d.user_agent else ""}
{wipe}
</dl>
<div class="actions">
<a class="button secondary" href="{ROOT}/devices/wipe?device={e(qid)}">Wipe…</a>
<a class="button secondary" href="{ROOT}/devices/remove?device={e(qid)}">Remove…</a>
</div>
</li>""")
    return f'<ul class="list">{"".join(items)}</ul>'


def device_confirm(d: Device, action: str, csrf: str) -> str:
    if action == "wipe":
        text = ("The device erases its data the next time it connects: the whole device, "
                "as for a lost or stolen phone. Use this only for a device you no longer "
                "hold.")
        button = '<button class="danger" type="submit">Wipe this device</button>'
    else:
        text = ("easync forgets the device and its sync state. If it connects again it "
                "starts over with a full sync; to stop it for good, change your "
                "ActiveSync password as well.")
        button = '<button class="danger" type="submit">Remove this device</button>'
    return f"""<section class="card">
<h2>{e(d.device_type or "Device")} · {e(d.device_id)}</h2>
<p>{text}</p>
{form(f"{ROOT}/devices/{action}", csrf,
      f'<input type="hidden" name="device" value="{e(d.device_id)}">{button}'
      f'<a class="button secondary" href="{ROOT}/#devices">Cancel</a>')}
</section>"""


# ------------------------------------------------------------------ ActiveSync password

def as_password(st: Status, csrf: str, now: float, reveal: str | None) -> str:
    shown = ""
    if reveal:
        shown = f"""<section class="card" id="generated">
<h2>Your new ActiveSync password</h2>
<p class="secret" id="generated-password">{e(reveal)}</p>
<button class="secondary" type="button" data-copy="generated-password" hidden>Copy</button>
<p class="warn">Enter it on your phone now, in the account's password field.
It is shown only this once: easync keeps only a hash of it.</p>
</section>"""
    clear = ""
    if st.as_password_set:
        note = (" With two-factor authentication on, phones are then refused until you set "
                "a new one." if st.twofa_on else " Phones then use your login password.")
        clear = f"""<section class="card">
<h2>Remove the ActiveSync password</h2>
<p class="muted">{e(note.strip())}</p>
{form(f"{ROOT}/as-password", csrf,
      '<input type="hidden" name="action" value="clear">'
      '<button class="secondary" type="submit">Remove it</button>')}
</section>"""
    title = "Change the ActiveSync password" if st.as_password_set else \
        "Set an ActiveSync password"
    return f"""{shown}<section class="card">
<dl class="facts">{as_facts(st, now)}</dl>
<p class="muted">{e(as_status_text(st))}</p>
</section>
<section class="card">
<h2>{title}</h2>
{form(f"{ROOT}/as-password", csrf, '''
<input type="hidden" name="action" value="set">
<label for="new">New password</label>
<input id="new" name="new" type="password" autocomplete="new-password" required
 maxlength="1024">
<label for="confirm">Confirm password</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password" required
 maxlength="1024">
<p class="muted">Up to 72 bytes. Every phone of yours then needs this password.</p>
<button type="submit">Save</button>''')}
<p>or</p>
{form(f"{ROOT}/as-password", csrf,
      '<input type="hidden" name="action" value="generate">'
      '<button class="secondary" type="submit">Generate one for me</button>')}
</section>
{clear}"""


# ------------------------------------------------------------------ 2FA

def twofa(st: Status, csrf: str, masked_email: str | None) -> str:
    cur = f"On, {e(method_name(st.twofa))}" if st.twofa_on else "Off"
    if st.twofa_everyone:
        cur += " (required for every user)"
    email_btn = ""
    if st.twofa != "email":
        if st.email:
            email_btn = form(f"{ROOT}/2fa", csrf,
                             '<input type="hidden" name="method" value="email">'
                             '<button type="submit">Use codes by e-mail</button>')
        else:
            email_btn = ('<p class="muted">Codes by e-mail need an e-mail address on your '
                         "account; ask an administrator.</p>")
    totp_btn = ""
    if st.twofa != "totp":
        totp_btn = form(f"{ROOT}/2fa/totp", csrf,
                        '<button type="submit">Use an authenticator app</button>')
    off = ""
    if st.twofa_on:
        off = ('<p class="muted">Only an administrator can turn two-factor authentication '
               "off.</p>")
    to = f" (to {e(masked_email)})" if masked_email and st.twofa == "email" else ""
    return f"""<section class="card">
<dl class="facts"><dt>Now</dt><dd>{cur}{to}</dd></dl>
<p class="muted">With two-factor authentication on, logging in here needs a one-time code
too, and phones need an ActiveSync password.</p>
<div class="actions">{email_btn}{totp_btn}</div>
{off}
</section>"""


def totp_enrol(csrf: str, secret: str, qr_svg_data_uri: str) -> str:
    grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return f"""<section class="card">
<h2>Add easync to your authenticator app</h2>
<p>Scan this code with the app (Google Authenticator, Aegis, FreeOTP, 1Password, …):</p>
<img class="qr" src="{e(qr_svg_data_uri)}" alt="QR code of the authenticator secret"
 width="220" height="220">
<p class="muted">Or enter this key by hand (time-based, 6 digits, 30 seconds):</p>
<p class="secret" id="totp-secret">{e(grouped)}</p>
<button class="secondary" type="button" data-copy="totp-secret" hidden>Copy</button>
{form(f"{ROOT}/2fa/totp/confirm", csrf, code_input(autofocus=False) +
      '<button type="submit">Confirm and turn on</button>')}
<p class="muted">Two-factor authentication switches to the app only once a code from it
is accepted.</p>
<p><a href="{ROOT}/2fa">Cancel</a></p>
</section>"""


# ------------------------------------------------------------------ admin

def admin(users: list[UserRow], everyone: bool, csrf: str, me: str) -> str:
    rows = []
    for u in users:
        qn = quote(u.name, safe="")
        as_form = form(f"{ROOT}/admin/activesync", csrf,
                       f'<input type="hidden" name="user" value="{e(u.name)}">'
                       f'<input type="hidden" name="state" value="{"off" if u.activesync else "on"}">'
                       f'<button class="secondary" type="submit">'
                       f'{"Turn ActiveSync off" if u.activesync else "Turn ActiveSync on"}'
                       "</button>")
        choices = [("off", "2FA off"), ("email", "2FA by e-mail")]
        if u.twofa == "totp":       # users set up an authenticator app themselves
            choices.append(("totp", "2FA by authenticator app"))
        options = "".join(
            f'<option value="{v}"{" selected" if (u.twofa or "off") == v else ""}>{t}</option>'
            for v, t in choices)
        tf_form = (f'<form method="get" action="{ROOT}/admin/2fa">'
                   f'<input type="hidden" name="user" value="{e(u.name)}">'
                   f'<label for="m-{e(qn)}">Two-factor authentication</label>'
                   f'<select id="m-{e(qn)}" name="method">{options}</select>'
                   '<button class="secondary" type="submit">Change…</button></form>')
        refused = u.activesync and u.twofa and not u.as_password_set
        rows.append(f"""<li>
<div class="row-title">{e(u.name)}{" (you)" if u.name == me else ""}{
    ' <span class="badge">admin</span>' if u.admin else ""}</div>
<dl class="facts">
<dt>E-mail</dt><dd>{e(u.email or "—")}</dd>
<dt>ActiveSync</dt><dd>{_badge(u.activesync, "enabled", "not enabled")}</dd>
<dt>2FA</dt><dd>{e(method_name(u.twofa))}</dd>
<dt>ActiveSync password</dt><dd>{
    '<span class="badge bad">not set: phones refused</span>' if refused
    else _badge(u.as_password_set, "set", "not set")}</dd>
</dl>
<div class="actions">{as_form}</div>
{tf_form}
</li>""")
    state = "on" if everyone else "off"
    flip = "off" if everyone else "on"
    return f"""<section class="card">
<h2>Two-factor authentication for everyone</h2>
<p>Now <strong>{state}</strong>. When on, every user needs a one-time code to log in here
and an ActiveSync password for their phones (users without 2FA get codes by e-mail).</p>
{form(f"{ROOT}/admin/2fa-everyone", csrf,
      f'<input type="hidden" name="state" value="{flip}">'
      f'<button class="secondary" type="submit">Turn it {flip} for everyone</button>')}
</section>
<section class="card">
<h2>Users</h2>
<ul class="list">{"".join(rows)}</ul>
</section>"""


def admin_twofa_confirm(u: UserRow, method: str, csrf: str) -> str:
    """Turning 2FA on or off for a user; with ActiveSync and no ActiveSync password, the
    page asks for one in the same step (optional), as vtenext does."""
    ask = ""
    if method != "off" and u.activesync and not u.as_password_set:
        ask = f"""<p class="warn">Turning on two-factor authentication requires a dedicated
ActiveSync password. {e(u.name)} has none: their phones are refused until one is set.
Set it now, or leave both fields empty to let {e(u.name)} set it on this page.</p>
<label for="new">New ActiveSync password</label>
<input id="new" name="new" type="password" autocomplete="new-password" maxlength="1024">
<label for="confirm">Confirm password</label>
<input id="confirm" name="confirm" type="password" autocomplete="new-password"
 maxlength="1024">"""
    what = ("turn two-factor authentication off" if method == "off" else
            f"turn on two-factor authentication {method_name(method)}")
    return f"""<section class="card">
<h2>{e(u.name)}</h2>
<p>You are about to {e(what)} for <strong>{e(u.name)}</strong>.</p>
{form(f"{ROOT}/admin/2fa", csrf,
      f'<input type="hidden" name="user" value="{e(u.name)}">'
      f'<input type="hidden" name="method" value="{e(method)}">{ask}'
      '<button type="submit">OK</button>'
      f'<a class="button secondary" href="{ROOT}/admin">Cancel</a>')}
</section>"""


def message(text: str, link: str = f"{ROOT}/", link_text: str = "Back") -> str:
    return f'<section class="card"><p>{e(text)}</p><p><a href="{e(link)}">{e(link_text)}</a></p></section>'
