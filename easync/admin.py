"""``easync-admin``: manage users, devices and imports in easync's database.

Passwords are never taken from the command line (it is visible to every user of the
machine in the process list): they are asked twice on the terminal, or read as one line
from standard input with ``--password-stdin``.

Only ``easync-admin init`` creates a database: the other commands refuse a SQLite file
that does not exist (run in the wrong directory, they would otherwise make an empty one).

Exit codes: 0 done, 1 the operation failed (unknown user, name taken, bad file, …),
2 bad command line, 3 the database cannot be opened (or does not exist).
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import bcrypt

from easync import config as server_config
from easync import i18n
from easync.config import db_url
from easync.i18n import _, ngettext, tr
from easync.interfaces import IHoldStore
from easync.model import User, is_system_user

# the server's defaults (easync.config's option table): the same database and key file
DEFAULT_DB: str = server_config.default("db")
DEFAULT_SECRET_KEY: str = server_config.default("secret-key")
DEFAULT_ROUNDS = 12
_NAME = re.compile(r"^[^\s\\/:]{1,128}$")
_EMAIL = re.compile(r"^[^\s@<>]+@[^\s@<>]+$")


class AdminError(Exception):
    """A failure reported as one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------- passwords

def bcrypt_rounds() -> int:
    """The bcrypt cost: 12, or ``EASYNC_BCRYPT_ROUNDS`` (4..31, for tests)."""
    raw = os.environ.get("EASYNC_BCRYPT_ROUNDS", "").strip()
    if not raw:
        return DEFAULT_ROUNDS
    try:
        rounds = int(raw)
    except ValueError:
        raise AdminError(_("EASYNC_BCRYPT_ROUNDS must be a number, not {raw!r}").format(
            raw=raw)) from None
    if not 4 <= rounds <= 31:
        raise AdminError(_("EASYNC_BCRYPT_ROUNDS must be between 4 and 31, not {rounds}").format(
            rounds=rounds))
    return rounds


def hash_password(password: str, rounds: int | None = None) -> str:
    """A bcrypt hash of the password, as text."""
    salt = bcrypt.gensalt(rounds or bcrypt_rounds())
    return bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii")


def read_password(from_stdin: bool, stdin: TextIO | None = None) -> str:
    """The new password: one line of standard input, or asked twice on the terminal."""
    stdin = stdin or sys.stdin
    if from_stdin:
        line = stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise AdminError(_("no password on standard input"))
    else:
        if not stdin.isatty():
            raise AdminError(_("standard input is not a terminal: give the password with "
                               "--password-stdin (one line on standard input)"))
        password = getpass.getpass(_("New password: "))
        if not password:
            raise AdminError(_("empty password"))
        if getpass.getpass(_("Repeat the password: ")) != password:
            raise AdminError(_("the two passwords differ"))
    if len(password.encode("utf-8")) > 72:
        # bcrypt only looks at the first 72 bytes; a longer password would silently
        # accept any text sharing its first 72 bytes.
        raise AdminError(_("passwords longer than 72 bytes are not supported"))
    return password


def read_line(stdin: TextIO, what: str) -> str:
    """One secret line from standard input (a pipe); refused when empty."""
    value = stdin.readline().rstrip("\r\n")
    if not value:
        raise AdminError(_("no {what} on standard input").format(what=what))
    return value


# ---------------------------------------------------------------- the account service

def _accounts(store: Any, args: argparse.Namespace) -> Any:
    """The account service over the opened store (made once per run)."""
    accounts = getattr(args, "_accounts", None)
    if accounts is None:
        from backends.sql.authstore import SqlAuthStore
        from easync.auth.accounts import Accounts
        from easync.auth.keys import SecretBox, SecretKeyError

        try:
            box = SecretBox.from_file(args.secret_key)
        except SecretKeyError as e:
            raise AdminError(str(e)) from None
        accounts = Accounts(store, store, SqlAuthStore(store), args.reactor, box=box)
        args._accounts = accounts
    return accounts


async def _call(aw: Any) -> Any:
    """Await a service call; its refusals become one-line errors."""
    from easync.auth.accounts import AccountError

    try:
        return await aw
    except AccountError as e:
        raise AdminError(tr(e.message)) from None


# ---------------------------------------------------------------- output helpers

def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _two_fa(method: str) -> str:
    """A 2FA method as the CLI and the JSON API spell it: ``email``, ``totp`` or ``off``
    (the service's "none")."""
    return "off" if method == "none" else method


def _when(value: Any) -> str:
    if value in (None, "", 0):
        return "-"
    if isinstance(value, (int, float)):
        stamp = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return stamp.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def _shown(text: str) -> str:
    """``text`` for the terminal: every non-printable character (ESC, BEL, a line
    break…) as its Python escape (``easync.http.basic.log_safe``).  Devices choose
    their user agent, and users their contacts' and folders' names: none of it may move
    the cursor, retitle the window or write the clipboard of the administrator reading
    a listing."""
    from easync.http.basic import log_safe

    return log_safe(text)


def _table(rows: list[list[str]], out: TextIO) -> None:
    rows = [[_shown(str(c)) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


# ---------------------------------------------------------------- commands

async def _user(store: Any, name: str) -> Any:
    user = await store.get_user(name)
    if user is None:
        raise AdminError(_("no user named {name!r}").format(name=name))
    return user


async def cmd_init(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    if args.new_file:
        out.write(_("created database {path} (schema version {version})").format(
            path=args.new_file, version=store.schema_version) + "\n")
    else:
        out.write(_("database {db} is ready (schema version {version})").format(
            db=args.db, version=store.schema_version) + "\n")


async def cmd_user_add(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    if not _NAME.match(args.name):
        raise AdminError(_("invalid user name {name!r}: 1-128 characters, no spaces, "
                           "no \\ / or :").format(name=args.name))
    if is_system_user(args.name):
        raise AdminError(_("invalid user name {name!r}: a name starting with ~ is kept "
                           "for the server's system users").format(name=args.name))
    if args.email is not None and not _EMAIL.match(args.email):
        raise AdminError(_("invalid e-mail address {email!r}").format(email=args.email))
    if await store.get_user(args.name) is not None:
        raise AdminError(_("a user named {name!r} already exists").format(name=args.name))
    password_hash = hash_password(read_password(args.password_stdin))
    try:
        user = await store.add_user(args.name, password_hash, args.email, args.activesync)
    except KeyError:
        raise AdminError(_("a user named {name!r} already exists").format(
            name=args.name)) from None
    await _accounts(store, args).user_added(user.name, user.activesync)
    out.write(_("added user {name} (ActiveSync {state})").format(
        name=user.name, state=_on_off(user.activesync)) + "\n")


async def cmd_user_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    accounts = _accounts(store, args)
    rows = [["NAME", "EMAIL", "ACTIVESYNC", "2FA", "AS-PASSWORD", "ADMIN"]]
    for st in await accounts.list_users():
        two_fa = _two_fa(st.two_factor_effective)
        if st.two_factor == "none" and two_fa != "off":
            two_fa += "(all)"
        rows.append([st.name, st.email or "-", _on_off(st.activesync), two_fa,
                     "set" if st.as_password.is_set else "-", "yes" if st.admin else "-"])
    _table(rows, out)
    if await accounts.two_factor_all():
        out.write(_("two-factor authentication is on for everyone") + "\n")


async def cmd_user_show(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    st = await _call(_accounts(store, args).status(args.name))
    asp = st.as_password
    lines = [
        (_("user"), st.name + (" (LDAP)" if st.origin == "ldap" else "")),
        (_("e-mail"), st.email or "-"),
        ("ActiveSync", _on_off(st.activesync)),
        (_("administrator"), _("yes") if st.admin else _("no")),
        (_("two-factor"), _two_fa(st.two_factor_effective) + (
            " " + _("(on for everyone)") if st.two_factor_all else "")),
        (_("ActiveSync password"), (_("set {when}").format(when=_when(asp.set_at)))
         if asp.is_set else _("not set")),
        ("  " + _("last used"), _when(asp.last_used_at) + (
            " " + _("by {device}").format(device=asp.last_used_device)
            if asp.last_used_device else "")),
        (_("EAS logins"), tr(st.eas.reason)),
    ]
    out.writelines(f"{key + ':':<22}{value}\n" for key, value in lines)


async def cmd_user_passwd(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    if is_system_user(user.name):
        raise AdminError(_("{name} is a system user (it owns shared folders): nobody "
                           "logs in as it").format(name=user.name))
    password_hash = hash_password(read_password(args.password_stdin))
    await store.update_user(user.name, password_hash=password_hash)
    await _accounts(store, args).login_password_changed(user.name)
    out.write(_("password of {name} changed").format(name=user.name) + "\n")


async def cmd_user_activesync(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    st = await _call(_accounts(store, args).set_activesync(args.name, args.state == "on"))
    out.write((_("ActiveSync on for {name}") if args.state == "on" else
               _("ActiveSync off for {name}")).format(name=st.name) + "\n")
    if st.activesync and st.eas.kind == "refused":
        out.write(_("note: EAS refuses {name} until an ActiveSync password is set "
                    "(two-factor authentication is on)").format(name=st.name) + "\n")


async def cmd_user_admin(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    st = await _call(_accounts(store, args).set_admin(args.name, args.state == "on"))
    out.write((_("{name} is now an administrator of the account page") if st.admin else
               _("{name} is no longer an administrator of the account page")).format(
                   name=st.name) + "\n")


async def cmd_user_2fa(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    accounts = _accounts(store, args)
    st = await _call(accounts.status(args.name))
    args.method = _two_fa(args.method)      # "none": an alias of "off"
    as_password = None
    confirm = None
    wants = (args.method != "off" and st.activesync and not st.as_password.is_set)
    if wants and args.as_password_stdin:
        as_password = read_line(sys.stdin, _("ActiveSync password"))
    elif wants and sys.stdin.isatty():
        out.write(_("Two-factor authentication makes an ActiveSync password mandatory "
                    "for {name}.\nEnter one now, or nothing to set it later (EAS "
                    "refuses {name} until then).\n").format(name=st.name))
        out.flush()
        as_password = getpass.getpass(_("ActiveSync password: ")) or None
        if as_password is not None:
            confirm = getpass.getpass(_("Repeat the ActiveSync password: "))
    elif args.as_password_stdin:
        raise AdminError("--as-password-stdin: " + (
            _("{name} already has an ActiveSync password").format(name=st.name)
            if st.as_password.is_set else
            _("two-factor authentication is being turned off") if args.method == "off" else
            _("ActiveSync is off for {name}").format(name=st.name)))
    result = await _call(accounts.set_two_factor(
        args.name, args.method, as_password=as_password,
        as_confirm=confirm if confirm is not None else as_password))
    out.write(tr(result.message) + "\n")
    if result.enrolment is not None:
        e = result.enrolment
        out.write(_("Scan this QR code with an authenticator app, or enter the key "
                    "{secret}:").format(secret=e.secret) + f"\n{e.qr_text}{e.uri}\n")


async def cmd_user_2fa_all(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    refused = await _call(_accounts(store, args).set_two_factor_all(args.state == "on"))
    out.write((_("two-factor authentication on for everyone") if args.state == "on" else
               _("two-factor authentication off for everyone")) + "\n")
    if refused:
        out.write(_("EAS refuses these users until they set an ActiveSync password: "
                    "{users}").format(users=", ".join(refused)) + "\n")


async def cmd_user_as_password(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    accounts = _accounts(store, args)
    if args.clear:
        mode = await _call(accounts.clear_as_password(args.name))
        out.write(_("ActiveSync password of {name} cleared; EAS logins: {reason}").format(
            name=args.name.lower(), reason=tr(mode.reason)) + "\n")
    elif args.generate:
        password = await _call(accounts.generate_as_password(args.name))
        out.write(_("ActiveSync password of {name} (shown once, enter it on the "
                    "phone):").format(name=args.name.lower()) + f"\n{password}\n")
    else:
        password = read_line(sys.stdin, _("ActiveSync password"))
        await _call(accounts.set_as_password(args.name, password, None))
        out.write(_("ActiveSync password of {name} set; EAS accepts only it from now "
                    "on").format(name=args.name.lower()) + "\n")


async def cmd_user_unlock(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    if await _call(_accounts(store, args).unlock(args.name)):
        out.write(_("lockouts of {name} lifted").format(name=args.name.lower()) + "\n")
    else:   # exit status 0 all the same: the user is not locked out, as asked
        out.write(_("{name} is not locked out: nothing to lift").format(
            name=args.name.lower()) + "\n")


async def cmd_audit(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    entries = await _call(_accounts(store, args).audit_log(args.name, args.limit))
    rows = [["WHEN", "ACTOR", "USER", "ACTION", "DETAIL"]]
    for e in reversed(entries):
        rows.append([_when(e.at), e.actor, e.user or "-", e.action,
                     e.detail + (f" (from {e.address})" if e.address else "")])
    _table(rows, out)


def _access(state: str, reason: str) -> str:
    """A device's access state as shown: "allowed", "blocked (rule 3)", "quarantined
    (device)" (the reason only when it is not the default)."""
    shown = {"allow": _("allowed"), "block": _("blocked"),
             "quarantine": _("quarantined")}.get(state, state)
    if reason == "default":
        return shown
    if reason == "device":
        return f"{shown} ({_('by hand')})"
    return f"{shown} ({reason.replace('rule ', _('rule') + ' ')})"


async def cmd_device_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    devices = await _call(_accounts(store, args).list_devices(args.name))
    if args.quarantined:
        devices = [d for d in devices if d.access == "quarantine"]
    held = await _held_now(store, args.name)
    rows = [["USER", "DEVICE", "TYPE", "FIRST SEEN", "LAST SEEN", "LAST SYNC", "HOLDING NOW",
             "ACCESS", "EAS", "WIPE", "POLICY", "USER AGENT"]]
    for d in devices:
        rows.append([d.user, d.device_id, d.device_type or "-", _when(d.first_seen),
                     _when(d.last_seen), _when(d.last_sync),
                     held.get((d.user, d.device_id), "-"), _access(d.access, d.access_reason),
                     d.protocol_version or "-", d.wipe, _policy_state(d.policy_status),
                     d.user_agent or "-"])
    _table(rows, out)


def _policy_state(status: str | None) -> str:
    """A device's answer to the policy, in a word (MS-ASPROV 2.2.2.54.1 values)."""
    if not status:
        return "-"
    refused, _sep, code = status.rpartition(":")
    word = {"1": _("applied"), "2": _("partial"), "3": _("not-applied"),
            "4": _("external")}.get(code, code)
    return _("refused({state})").format(state=word) if refused else word


async def _announce_access(store: Any, *user_ids: int) -> None:
    """Tell the running nodes that these users' device access changed (PostgreSQL:
    NOTIFYs; SQLite: the server's poller sees ``users.access_version`` grow)."""
    from backends.sql.pgnotify import announce_changes
    from easync.deviceaccess import ACCESS

    await announce_changes(store, {uid: [ACCESS] for uid in user_ids})


async def _device_access(store: Any, args: argparse.Namespace, out: TextIO,
                         access: str | None) -> None:
    d = await _call(_accounts(store, args).set_device_access(args.name, args.device_id,
                                                             access))
    await _announce_access(store, (await _user(store, args.name)).id)
    out.write(_("device {device} of {name}: {access}").format(
        device=args.device_id, name=args.name.lower(),
        access=_access(d.access, d.access_reason)) + "\n")


async def cmd_device_allow(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    await _device_access(store, args, out, "allow")


async def cmd_device_block(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    await _device_access(store, args, out, "block")


async def cmd_device_quarantine(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    await _device_access(store, args, out, "quarantine")


async def cmd_device_reset(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    await _device_access(store, args, out, None)


async def cmd_rule_add(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    kind, pattern = next((k, getattr(args, k)) for k in ("device_id", "device_type",
                                                         "user_agent", "any")
                         if getattr(args, k))
    if kind == "any":
        pattern = "*"
    rule = await _call(_accounts(store, args).add_rule(args.user, kind, pattern, args.rule_action))
    await _announce_access(store, *rule.touched)
    out.write(_("rule {id} added").format(id=rule.id) + "\n")


async def cmd_rule_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    rules = await _call(_accounts(store, args).list_rules())
    rows = [["ID", "FOR", "MATCH", "PATTERN", "ACTION", "ADDED", "BY"]]
    for r in rules:
        rows.append([str(r.id), r.user or _("everyone"), r.kind.replace("_", "-"), r.pattern,
                     r.action, _when(r.created), r.created_by or "-"])
    _table(rows, out)
    out.write(_("no rule matches: allow (add a rule for everyone with --any to change "
                "the default)") + "\n")


async def cmd_rule_remove(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    rule = await _call(_accounts(store, args).remove_rule(args.id))
    await _announce_access(store, *rule.touched)
    out.write(_("rule {id} removed").format(id=rule.id) + "\n")


async def _held_now(store: Any, name: str | None) -> dict[tuple[str, str], str]:
    """(user, device) → "Ping on NODE for 3m05s" for the long polls held now, as the
    nodes record them (``held_requests``).  A row past its heartbeat deadline was left
    by a node that stopped without clearing it: not shown."""
    if not IHoldStore.providedBy(store):
        return {}
    user = await _user(store, name) if name else None
    now = datetime.datetime.now(datetime.UTC).timestamp()
    out = {}
    for row in await store.list_holds(user):
        if row["deadline"] < now:
            continue
        secs = max(0, int(now - row["started"]))
        age = f"{secs // 3600}h{secs // 60 % 60:02d}m" if secs >= 3600 else \
            f"{secs // 60}m{secs % 60:02d}s"
        out[(row["user"], row["device_id"])] = f"{row['command']} on {row['node']} for {age}"
    return out


async def cmd_device_wipe(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    accounts = _accounts(store, args)
    account_only = not args.full
    whole_instead = False
    try:
        await _call(accounts.wipe_device(args.name, args.device_id,
                                         account_only=account_only))
    except AdminError as e:
        if not account_only or "16.1" not in str(e):
            raise
        if args.account_only:
            raise AdminError(str(e) + " " + _("(--full wipes the whole device)")) from None
        # No choice given: `device wipe NAME DEVICEID` wipes (DESIGN.md's contract);
        # a device that never spoke EAS 16.1 can only take the whole-device wipe.
        await _call(accounts.wipe_device(args.name, args.device_id, account_only=False))
        account_only, whole_instead = False, True
    # a request the device holds answers now (PostgreSQL: a NOTIFY; SQLite: the poller)
    await _announce_access(store, (await _user(store, args.name)).id)
    if whole_instead:
        out.write(_("{device} never connected with EAS 16.1, so it cannot remove only "
                    "this account's data: the whole device will be wiped (use "
                    "--account-only to refuse that)").format(device=args.device_id) + "\n")
    out.write((_("wipe of the account's data requested for {device} of {name}; it "
                 "happens at the device's next connection") if account_only else
               _("wipe of the whole device requested for {device} of {name}; it happens "
                 "at the device's next connection")).format(
                   device=args.device_id, name=args.name.lower()) + "\n")


async def cmd_device_remove(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    await _call(_accounts(store, args).remove_device(args.name, args.device_id))
    out.write(_("removed device {device} of {name} and its sync state").format(
        device=args.device_id, name=args.name.lower()) + "\n")


# ---------------------------------------------------------------- the device policy

def _server_policy(args: argparse.Namespace) -> dict[str, str]:
    """The server's policy settings from ``--config FILE`` (its ``policy`` key), or
    none when no file is given."""
    from easync.policy import PolicyError, parse_policy

    path = getattr(args, "config", None) or getattr(args, "server_config", None)
    if not path:
        return {}
    try:
        given = server_config.load_file(path).get("policy", {})
        return parse_policy(given)
    except (server_config.ConfigError, PolicyError) as e:
        raise AdminError(str(e)) from None


def _policy_pairs(pairs: Sequence[str]) -> dict[str, str]:
    from easync.policy import PolicyError, parse_policy

    try:
        return parse_policy(list(pairs))
    except PolicyError as e:
        raise AdminError(str(e)) from None


async def cmd_policy_set(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    changes = _policy_pairs(args.settings)
    own = dict(user.extra.get("policy") or {})
    own.update(changes)
    await store.update_user(user.name, extra={"policy": own})
    detail = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()))
    await _accounts(store, args).audit_raw("easync-admin", user.name, "policy",
                                           "policy set " + detail, "")
    out.write(_("policy of {name} changed: {settings}; each of its devices provisions "
                "again at its next request").format(name=user.name, settings=detail) + "\n")


async def cmd_policy_reset(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    if not user.extra.get("policy"):
        out.write(_("{name} has no policy settings of their own: nothing to reset").format(
            name=user.name) + "\n")
        return
    await store.update_user(user.name, extra={"policy": None})
    await _accounts(store, args).audit_raw("easync-admin", user.name, "policy",
                                           "policy reset", "")
    out.write(_("policy of {name} reset to the server's").format(name=user.name) + "\n")


async def cmd_policy_show(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from easync.policy import SETTINGS, describe, effective

    server = _server_policy(args)
    own: dict[str, str] = {}
    if args.name:
        user = await _user(store, args.name)
        own = dict(user.extra.get("policy") or {})
        out.write(_("policy of {name}").format(name=user.name) + "\n")
    else:
        out.write(_("server policy") + "\n")
    policy = effective(server, own)
    out.writelines("  " + line + "\n" for line in describe(policy))
    rows = [["SETTING", "VALUE", "FROM"]]
    for s in SETTINGS:
        if s.kind == "list":
            continue
        origin = (_("user") if s.name in own else _("server") if s.name in server
                  else _("default"))
        if args.all or origin != _("default"):
            rows.append([s.name, policy[s.name] or _("(empty)"), origin])
    if len(rows) > 1:
        _table(rows, out)
    if not (getattr(args, "config", None) or getattr(args, "server_config", None)):
        out.write(_("(the server's own settings are not shown: give its config file "
                    "with --config)") + "\n")


def _progress(stream: TextIO) -> Callable[[str, int, int], None] | None:
    """A progress line rewritten in place on ``stream``, when it is a terminal."""
    if not stream.isatty():
        return None

    def show(stage: str, done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        what = _("reading the file") if stage == "reading" else \
            _("writing {done:,} of {total:,} items").format(done=done, total=total)
        stream.write(f"\r{what}: {percent}%\x1b[K")
        stream.flush()

    return show


async def cmd_folder_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    folders = await store.list_folders(user)
    # live items per folder (tombstones left for devices not counted)
    counts = {str(folder_id): n for folder_id, n in await store.raw_query(
        "SELECT folder_id, COUNT(*) FROM items WHERE user_id = ? AND deleted = 0 "
        "GROUP BY folder_id", (user.id,))}
    for f in folders:
        if f.owner is not None:     # shared with the user: the owner's items
            counts[f.server_id] = (await store.raw_query(
                "SELECT COUNT(*) FROM items WHERE folder_id = ? AND deleted = 0",
                (int(f.server_id),)))[0][0]
    rows = [["ID", "NAME", "KIND", "ITEMS"]]
    for f in sorted(folders, key=lambda f: (f.cls, not f.is_default, f.name.lower())):
        kind = f.cls + (" (default)" if f.is_default else "")
        if f.owner is not None:
            kind += " " + (_("(shared by {owner}, read-only)") if f.read_only else
                           _("(shared by {owner}, read-write)")).format(owner=f.owner)
        elif f.shared_out:
            kind += " " + _("(shared)")
        rows.append([f.server_id, f.name, kind, str(counts.get(f.server_id, 0))])
    _table(rows, out)


def _sharing(store: Any, args: argparse.Namespace) -> Any:
    """The share rules over the store, audited as easync-admin, announcing hierarchy
    changes to the running nodes."""
    from backends.sql.pgnotify import announce
    from easync.sharing import Sharing

    accounts = _accounts(store, args)

    async def audit(actor: str, user: str | None, action: str, detail: str) -> None:
        await accounts.audit_raw(actor, user, action, detail, "")

    return Sharing(store, audit, lambda uid, folders: announce(store, uid, folders))


async def _share_call(aw: Any) -> Any:
    from easync.sharing import ShareError

    try:
        return await aw
    except ShareError as e:
        raise AdminError(tr(e.message)) from None
    except KeyError:
        raise AdminError(_("no such folder")) from None


async def cmd_share_add(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    to = None if args.everyone else args.to
    changed = await _share_call(_sharing(store, args).share(
        "easync-admin", args.owner, args.folder, to, args.write))
    access = _("read-write") if args.write else _("read-only")
    who = to.lower() if to else _("everyone")
    if changed:
        out.write(_("folder {folder} of {owner} shared with {who}, {access}").format(
            folder=args.folder, owner=args.owner.lower(), who=who, access=access) + "\n")
    else:
        out.write(_("folder {folder} of {owner} was shared with {who}, {access}, "
                    "already").format(folder=args.folder, owner=args.owner.lower(),
                                      who=who, access=access) + "\n")


async def cmd_share_remove(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    to = None if args.everyone else args.to
    who = to.lower() if to else _("everyone")
    if await _share_call(_sharing(store, args).unshare("easync-admin", args.owner,
                                                       args.folder, to)):
        out.write(_("folder {folder} of {owner} no longer shared with {who}; their "
                    "phones drop it at their next folder sync").format(
                        folder=args.folder, owner=args.owner.lower(), who=who) + "\n")
    else:
        out.write(_("folder {folder} of {owner} was not shared with {who}: nothing to "
                    "remove").format(folder=args.folder, owner=args.owner.lower(),
                                     who=who) + "\n")


async def cmd_share_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name) if args.name else None
    rows = [["FOLDER", "NAME", "KIND", "OWNER", "SHARED WITH", "ACCESS"]]
    for s in await _sharing(store, args).list(user):
        rows.append([s["folder_id"], s["folder"], s["cls"], s["owner"],
                     s["grantee"] or _("everyone"),
                     _("read-write") if s["write"] else _("read-only")])
    _table(rows, out)


async def cmd_folder_create_shared(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from easync.model import USER_FOLDER_TYPE

    if not args.display_name.strip():
        raise AdminError(_("empty folder name"))
    company = await store.company_user()
    folder = await store.create_folder_of(company, args.display_name.strip(),
                                          USER_FOLDER_TYPE[args.kind])
    await _share_call(_sharing(store, args).share(
        "easync-admin", company.name, folder.server_id,
        None if not args.to else args.to, False))
    out.write(_("folder {folder} ({name}) created, shared read-only with {who}; fill it "
                "with: easync-admin import {owner} FILE --folder {folder}").format(
                    folder=folder.server_id, name=folder.name,
                    who=args.to.lower() if args.to else _("everyone"),
                    owner=shlex.quote(company.name)) + "\n")


async def cmd_import(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from easync.importer import ImportFailed, import_file

    user = await _user(store, args.name)
    progress = _progress(sys.stderr)
    try:
        report = await import_file(
            store, user, args.file, folder_id=args.folder, default_tz=args.timezone,
            announce=lambda folders: _announce_all(store, user, folders),
            progress=progress)
    except ImportFailed as e:
        raise AdminError(str(e)) from None
    finally:
        if progress is not None:
            sys.stderr.write("\r\x1b[K")          # the progress line, erased
            sys.stderr.flush()
    out.write(report.summary() + "\n")
    out.writelines(_("warning: {warning}").format(warning=warning) + "\n"
                   for warning in report.warnings)


async def _announce_all(store: Any, user: Any, folders: Any, source: str = "easync-import",
                        modseqs: dict[str, int] | None = None) -> None:
    """Tell the nodes an import (or a restore) changed these folders: for the user, and
    for everyone else who holds one of them (a shared folder: the company book, a
    shared calendar).  ``modseqs``: as ``announce`` takes them (the folders' hints)."""
    from backends.sql.pgnotify import announce, announce_changes

    folders = list(folders)
    await announce(store, user.id, folders, source=source, modseqs=modseqs)
    audience = getattr(store, "folder_audience", None)
    if audience is None:
        return
    others: dict[int, list[str]] = {}
    for fid in folders:
        if fid == "hierarchy":
            continue
        for uid in await audience(fid):
            if uid != user.id:
                others.setdefault(uid, []).append(fid)
    # every holder in as few NOTIFYs as fit (thousands for a folder shared with everyone)
    await announce_changes(store, others, source=source, modseqs=modseqs)


async def cmd_export(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from easync.export import ExportFailed, export_user
    from easync.importer import FOLDER_CLASSES

    user = await _user(store, args.name)
    try:
        done = await export_user(store, user, args.out, out, folder_id=args.folder)
    except ExportFailed as e:
        raise AdminError(str(e)) from None
    # the report goes to stderr when the export itself is on standard output
    report = sys.stderr if args.out is None else out
    # English keeps "item(s)" for both numbers; ngettext gives other languages their
    # plural.  The kind is the folder's class, in the reader's language.
    for d in done:
        report.write(ngettext("exported {count} {kind} item(s) to {path}",
                              "exported {count} {kind} item(s) to {path}", d.count).format(
            count=d.count, kind=_(FOLDER_CLASSES.get(d.cls, d.cls)), path=d.path) + "\n")
        report.writelines(ngettext("warning: {n} item(s) lost {what}: not in "
                                   "vCard/iCalendar", "warning: {n} item(s) lost {what}: "
                                   "not in vCard/iCalendar", n).format(n=n, what=what) + "\n"
                          for what, n in sorted(d.skipped.items()))


async def cmd_backup(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from twisted.internet import threads

    from backends.sql.backup import BackupError, backup_sqlite, pg_dump_command

    if store.engine.name != "sqlite":
        raise AdminError(_("easync-admin backup copies SQLite databases; back up "
                           "PostgreSQL with pg_dump (safe while the servers run): "
                           "{command}").format(command=pg_dump_command(args.db, args.file)))
    if store.engine.in_memory:
        raise AdminError(_("an in-memory database cannot be backed up"))
    try:
        size = await threads.deferToThread(backup_sqlite, store.engine.path, args.file)
    except BackupError as e:
        # made in another thread, so in English: a msg(), said again here (e.args[0]:
        # str(e) would lose its template)
        raise AdminError(tr(e.args[0])) from None
    out.write(_("backed up {db} to {file} ({size} bytes)").format(
        db=store.engine.path, file=args.file, size=size) + "\n")


async def _deleted(store: Any, args: argparse.Namespace, restore: bool = False) -> Any:
    """The kept deletes of ``store`` (easync.deleted), restored through the item store
    the server uses and announced to the running servers: the SQL store, or with a
    ``--config`` whose backend is crm the CRM store (logged in to the CRM with the
    server's crm-url, crm-user and crm-access-key-file; its add path, journal
    included, writes the CRM record and its mirror in the shared database)."""
    from easync.deleted import DeletedItems

    items: Any = store
    backend = "sql"
    server = getattr(args, "server", None)
    if restore and server is not None and server.store.backend == "crm":
        from backends.crm import make_store

        try:
            items = make_store(args.reactor, store, server.crm)
        except ValueError as e:          # the access-key file cannot be read
            raise AdminError(str(e)) from None
        await items.open()
        backend = "crm"

    def publish(user_id: int, folder_id: str, results: list[Any]) -> None:
        # the user's devices, and those of every colleague who holds the folder
        top = max((r.modseq for r in results if r.ok), default=0)
        pending.append(_announce_all(store, User(id=user_id, name=""), [folder_id],
                                     source="easync-admin", modseqs={folder_id: top}))

    pending: list[Any] = []
    args._announces = pending

    async def audit(actor: str | None, user: str, action: str, detail: str) -> None:
        await _accounts(store, args).audit_raw(actor or "easync-admin", user, action,
                                               detail, "")

    return DeletedItems(store, items, args.reactor, backend=backend, publish=publish,
                        audit=audit)


def _since(value: str | None) -> float | None:
    from easync.deleted import parse_since

    if value is None:
        return None
    try:
        return parse_since(value, datetime.datetime.now(datetime.UTC).timestamp())
    except ValueError:
        raise AdminError(_("not a time: {value!r} (give an ISO date or time such as "
                           "2026-12-01 or 2026-12-01T14:30, or an age such as 2h or "
                           "3d)").format(value=value)) from None


async def cmd_deleted_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    found = await (await _deleted(store, args)).list_items(
        user, device_id=args.device, since=_since(args.since), folder_id=args.folder,
        restored=args.restored, limit=args.limit)
    rows = [[_("ID"), _("DELETED"), _("DEVICE"), _("FOLDER"), _("KIND"), _("ITEM"),
             _("RESTORED")]]
    for k in found:
        rows.append([str(k.id), _when(k.deleted_at), k.device_id, k.folder_id, _(k.cls),
                     k.summary or "-", k.restored_id or "-"])
    _table(rows, out)


async def cmd_deleted_restore(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from easync.deleted import RestoreError
    from easync.errors import Unavailable

    user = await _user(store, args.name)
    since = _since(args.since if args.since is not None else args.all_since)
    items = await _deleted(store, args, restore=True)
    try:
        if args.ids:
            if since is not None or args.device:
                raise AdminError(_("give item ids, or --device ID --since T, or "
                                   "--all-since T"))
            done = await items.restore_ids(user, args.ids)
        elif args.device and args.since is not None and args.all_since is None:
            done = await items.restore_since(user, since or 0.0, device_id=args.device)
        elif args.all_since is not None and not args.device and args.since is None:
            done = await items.restore_since(user, since or 0.0)
        else:
            raise AdminError(_("give item ids, or --device ID --since T, or --all-since T"))
    except Unavailable as e:
        # the CRM (or the database) cannot answer: nothing was restored
        raise AdminError(_("the store cannot answer now, nothing was restored: {reason}"
                           ).format(reason=str(e))) from None
    except RestoreError as e:
        if e.code == "wrong_backend" and getattr(args, "server", None) is None:
            # kept by the CRM store: restored through it with the server's config
            raise AdminError(tr(e.message) + "; " + _(
                "or give easync-admin the server's config file, which names the CRM: "
                "easync-admin --config FILE deleted restore ...")) from None
        raise AdminError(tr(e.message)) from None
    for announced in getattr(args, "_announces", []):
        await announced
    out.writelines(_("restored {id} ({kind} {item}) as {server_id}").format(
            id=kept.id, kind=_(kept.cls), item=_shown(kept.summary or "-"),
            server_id=server_id) + "\n" for kept, server_id in done.restored)
    out.writelines(_("{id} was restored already").format(id=kept_id) + "\n" for kept_id in done.already)
    out.writelines(_("{id} not restored: {why}").format(id=kept_id, why=tr(why)) + "\n" for kept_id, why in done.failed)
    if done.left:
        out.write(_("{n} more match: run the command again").format(n=done.left) + "\n")
    out.write(ngettext("{n} item restored; the user's devices get it at their next sync",
                       "{n} items restored; the user's devices get them at their next "
                       "sync", len(done.restored)).format(n=len(done.restored)) + "\n")
    if done.failed:
        raise AdminError(_("{n} not restored").format(n=len(done.failed)))


# ---------------------------------------------------------------- parser

def _db_url(value: str) -> str:
    try:
        return db_url(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="easync-admin", allow_abbrev=False,
        description=_("Manage easync users, devices and imports."),
        epilog=_("Exit codes: 0 done, 1 failed, 2 bad command line, "
               "3 database cannot be opened."))
    p.add_argument("--config", dest="server_config", metavar="FILE",
                   help=_("the server's config file (twistd easync --config): its db, "
                          "secret-key and, with backend crm, the CRM it restores deleted "
                          "items into"))
    p.add_argument("--db", default=None, metavar="URL", type=_db_url,
                   help=_("database URL, as twistd easync --db (default: the --config "
                          "file's, $EASYNC_DB or {default})").format(default=DEFAULT_DB))
    p.add_argument("--secret-key", default=None, metavar="FILE",
                   help=_("the server's secret key file, as twistd easync --secret-key "
                          "(default: the --config file's, $EASYNC_SECRET_KEY or "
                          "{default})").format(default=DEFAULT_SECRET_KEY))
    top = p.add_subparsers(
        dest="group",
        metavar="{init,user,device,rule,policy,folder,share,audit,deleted,import,export,backup}",
        required=True)

    a = top.add_parser("init", allow_abbrev=False,
                       help=_("create the database (a new SQLite file) or bring its schema "
                              "up to date; the other commands never create one"))
    a.set_defaults(func=cmd_init)

    user = top.add_parser("user", allow_abbrev=False, help=_("add, list and change users"
                          )).add_subparsers(dest="action", metavar="ACTION", required=True)
    a = user.add_parser("add", allow_abbrev=False, help=_("add a user"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("--email", metavar="ADDR", help=_("the user's e-mail address"))
    a.add_argument("--password-stdin", action="store_true",
                   help=_("read the password as one line from standard input"))
    a.add_argument("--activesync", action="store_true",
                   help=_("allow ActiveSync at once (off by default)"))
    a.set_defaults(func=cmd_user_add)
    a = user.add_parser("list", allow_abbrev=False,
                        help=_("list users: name, e-mail, ActiveSync, 2FA, ActiveSync password"))
    a.set_defaults(func=cmd_user_list)
    a = user.add_parser("passwd", allow_abbrev=False, help=_("set a user's password"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("--password-stdin", action="store_true",
                   help=_("read the password as one line from standard input"))
    a.set_defaults(func=cmd_user_passwd)
    a = user.add_parser("activesync", allow_abbrev=False,
                        help=_("allow or refuse ActiveSync for a user"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("state", choices=("on", "off"))
    a.set_defaults(func=cmd_user_activesync)
    a = user.add_parser("show", allow_abbrev=False,
                        help=_("a user's ActiveSync, 2FA and ActiveSync-password status"))
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_user_show)
    a = user.add_parser("2fa", allow_abbrev=False,
                        help=_("two-factor authentication for a user: e-mail codes, an "
                             "authenticator app (totp) or off"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("method", choices=("email", "totp", "off", "none"),
                   metavar="email|totp|off", help=_("none is taken for off"))
    a.add_argument("--as-password-stdin", action="store_true",
                   help=_("read the ActiveSync password this makes mandatory as one line "
                        "from standard input (else asked on a terminal, or set later)"))
    a.set_defaults(func=cmd_user_2fa)
    a = user.add_parser("2fa-all", allow_abbrev=False,
                        help=_("two-factor authentication for everyone, on or off"))
    a.add_argument("state", choices=("on", "off"))
    a.set_defaults(func=cmd_user_2fa_all)
    a = user.add_parser("as-password", allow_abbrev=False,
                        help=_("set, generate or clear a user's ActiveSync password"))
    a.add_argument("name", metavar="NAME")
    g = a.add_mutually_exclusive_group(required=True)
    g.add_argument("--password-stdin", action="store_true",
                   help=_("read it as one line from standard input"))
    g.add_argument("--generate", action="store_true",
                   help=_("generate one and print it once"))
    g.add_argument("--clear", action="store_true",
                   help=_("remove it (EAS takes the login password again, unless 2FA is on)"))
    a.set_defaults(func=cmd_user_as_password)
    a = user.add_parser("admin", allow_abbrev=False,
                        help=_("make a user an administrator of the account page, or not"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("state", choices=("on", "off"))
    a.set_defaults(func=cmd_user_admin)
    a = user.add_parser("unlock", allow_abbrev=False,
                        help=_("lift a user's lockout after failed logins or codes"))
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_user_unlock)

    device = top.add_parser("device", allow_abbrev=False, help=_(
        "list, allow, block, quarantine, wipe and remove devices"
                            )).add_subparsers(dest="action", metavar="ACTION", required=True)
    a = device.add_parser("list", allow_abbrev=False,
                          help=_("devices of one user, or of all users"))
    a.add_argument("name", metavar="NAME", nargs="?")
    a.add_argument("--quarantined", action="store_true",
                   help=_("only the devices in quarantine, waiting for an administrator"))
    a.set_defaults(func=cmd_device_list)
    for verb, func, text in (
            ("allow", cmd_device_allow, _("let a device sync, whatever the rules say")),
            ("block", cmd_device_block, _("refuse a device, whatever the rules say (its "
                                          "data is not wiped)")),
            ("quarantine", cmd_device_quarantine, _("hold a device until an administrator "
                                                    "allows it")),
            ("reset", cmd_device_reset, _("drop a device's own allow, block or quarantine: "
                                          "the rules decide again"))):
        a = device.add_parser(verb, allow_abbrev=False, help=text)
        a.add_argument("name", metavar="NAME")
        a.add_argument("device_id", metavar="DEVICEID")
        a.set_defaults(func=func)
    a = device.add_parser("wipe", allow_abbrev=False,
                          help=_("order a remote wipe at the device's next connection: only "
                                 "this account's data where the device can (EAS 16.1)"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("device_id", metavar="DEVICEID")
    a.add_argument("--account-only", action="store_true",
                   help=_("wipe only this account's data, or refuse when the device "
                          "cannot (never seen at EAS 16.1)"))
    a.add_argument("--full", action="store_true",
                   help=_("wipe the WHOLE device (factory reset: the owner's photos too)"))
    a.set_defaults(func=cmd_device_wipe)
    a = device.add_parser("remove", allow_abbrev=False,
                          help=_("forget a device and its sync state"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("device_id", metavar="DEVICEID")
    a.set_defaults(func=cmd_device_remove)

    policy = top.add_parser("policy", allow_abbrev=False,
                            help=_("the device policy (passcode, lock) of a user")
                            ).add_subparsers(dest="action", metavar="ACTION", required=True)
    a = policy.add_parser("set", allow_abbrev=False,
                          help=_("set a user's own policy settings (over the server's)"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("settings", metavar="SETTING=VALUE", nargs="+")
    a.set_defaults(func=cmd_policy_set)
    a = policy.add_parser("show", allow_abbrev=False,
                          help=_("the policy of a user, or the server's"))
    a.add_argument("name", metavar="NAME", nargs="?")
    a.add_argument("--config", metavar="FILE",
                   help=_("the server's config file, for its [policy] settings"))
    a.add_argument("--all", action="store_true",
                   help=_("list every setting, also those left at their default"))
    a.set_defaults(func=cmd_policy_show)
    a = policy.add_parser("reset", allow_abbrev=False,
                          help=_("drop a user's own policy settings (the server's apply)"))
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_policy_reset)

    rule = top.add_parser("rule", allow_abbrev=False, help=_(
        "device access rules: allow, block or quarantine devices by id, type or user agent"
    )).add_subparsers(dest="action", metavar="ACTION", required=True)
    a = rule.add_parser("add", allow_abbrev=False, help=_("add a device access rule"))
    who = a.add_mutually_exclusive_group(required=True)
    who.add_argument("--everyone", action="store_true", help=_("the rule is for every user"))
    who.add_argument("--user", metavar="NAME", help=_("the rule is for this user"))
    match = a.add_mutually_exclusive_group(required=True)
    match.add_argument("--device-id", metavar="X", help=_("match this DeviceId"))
    match.add_argument("--device-type", metavar="X", help=_("match this DeviceType"))
    match.add_argument("--user-agent", metavar="X", help=_("match this User-Agent"))
    match.add_argument("--any", action="store_true", help=_("match every device"))
    a.add_argument("rule_action", metavar="ACTION", choices=("allow", "block", "quarantine"),
                   help=_("allow, block or quarantine (a pattern ending in * matches by "
                          "prefix; case does not matter)"))
    a.set_defaults(func=cmd_rule_add)
    a = rule.add_parser("list", allow_abbrev=False, help=_("list the device access rules"))
    a.set_defaults(func=cmd_rule_list)
    a = rule.add_parser("remove", allow_abbrev=False, help=_("remove a device access rule"))
    a.add_argument("id", metavar="ID", type=int)
    a.set_defaults(func=cmd_rule_remove)

    folder = top.add_parser("folder", allow_abbrev=False, help=_("list a user's folders, create company folders")
                            ).add_subparsers(dest="action", metavar="ACTION", required=True)
    a = folder.add_parser("list", allow_abbrev=False,
                          help=_("a user's folders: id (for import --folder), name, kind, "
                                 "items"))
    a.add_argument("name", metavar="NAME")
    a.set_defaults(func=cmd_folder_list)

    a = folder.add_parser("create-shared", allow_abbrev=False,
                          help=_("create a company folder (e.g. the company address book), "
                                 "shared read-only with everyone or one user"))
    a.add_argument("display_name", metavar="NAME")
    a.add_argument("--kind", choices=("Contacts", "Calendar", "Tasks"), default="Contacts")
    a.add_argument("--to", metavar="USER",
                   help=_("share it with this user only (default: everyone)"))
    a.set_defaults(func=cmd_folder_create_shared)

    share = top.add_parser("share", allow_abbrev=False,
                           help=_("share a user's folder with a colleague or everyone")
                           ).add_subparsers(dest="action", metavar="ACTION", required=True)
    for verb, func, text in (
            ("add", cmd_share_add, _("share OWNER's folder FOLDER (id, as 'folder list' "
                                     "shows it), read-only unless --write")),
            ("remove", cmd_share_remove, _("stop sharing a folder with a user or everyone"))):
        a = share.add_parser(verb, allow_abbrev=False, help=text)
        a.add_argument("owner", metavar="OWNER")
        a.add_argument("folder", metavar="FOLDER")
        g = a.add_mutually_exclusive_group(required=True)
        g.add_argument("--to", metavar="USER", help=_("the colleague"))
        g.add_argument("--everyone", action="store_true", help=_("every user"))
        if verb == "add":
            a.add_argument("--write", action="store_true",
                           help=_("let them change it too (written to the owner's data)"))
        a.set_defaults(func=func)
    a = share.add_parser("list", allow_abbrev=False,
                         help=_("shares: all, or of USER's folders and those USER holds"))
    a.add_argument("name", metavar="USER", nargs="?")
    a.set_defaults(func=cmd_share_list)

    a = top.add_parser("audit", allow_abbrev=False,
                       help=_("the audit log: credential changes and lockouts"))
    a.add_argument("name", metavar="NAME", nargs="?")
    a.add_argument("--limit", type=int, default=50, metavar="N",
                   help=_("newest N entries (default 50)"))
    a.set_defaults(func=cmd_audit)

    deleted = top.add_parser("deleted", allow_abbrev=False,
                             help=_("list and restore what devices deleted")
                             ).add_subparsers(dest="action", metavar="ACTION", required=True)
    a = deleted.add_parser("list", allow_abbrev=False,
                           help=_("what the user's devices deleted (kept for "
                                  "--deleted-keep), newest first"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("--device", metavar="ID", help=_("only what this device deleted"))
    a.add_argument("--since", metavar="T",
                   help=_("only what was deleted since T: an ISO date or time (UTC), or "
                          "an age such as 2h or 3d"))
    a.add_argument("--folder", metavar="ID", help=_("only what was in this folder"))
    a.add_argument("--restored", action="store_true",
                   help=_("list restored items too"))
    a.add_argument("--limit", type=int, default=200, metavar="N",
                   help=_("newest N items (default 200)"))
    a.set_defaults(func=cmd_deleted_list)
    a = deleted.add_parser("restore", allow_abbrev=False,
                           help=_("re-create deleted items: they reach every device of "
                                  "the user"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("ids", metavar="ID", nargs="*", type=int,
                   help=_("ids as 'deleted list' shows them"))
    a.add_argument("--device", metavar="ID",
                   help=_("everything this device deleted (with --since)"))
    a.add_argument("--since", metavar="T", help=_("deleted since T (with --device)"))
    a.add_argument("--all-since", metavar="T",
                   help=_("everything any device of the user deleted since T"))
    a.set_defaults(func=cmd_deleted_restore)

    a = top.add_parser("import", allow_abbrev=False,
                       help=_("import a vCard (.vcf) or iCalendar (.ics) file"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--folder", metavar="ID",
                   help=_("folder id, as 'folder list' shows it, of a kind the file holds "
                          "(default: the user's default Contacts, Calendar or Tasks folder)"))
    a.add_argument("--timezone", metavar="ZONE", default=None,
                   help=_("IANA zone for all-day and floating times (default: the file's "
                        "X-WR-TIMEZONE, else UTC)"))
    a.set_defaults(func=cmd_import)

    a = top.add_parser("export", allow_abbrev=False,
                       help=_("write a user's contacts (vCard) and calendar and tasks "
                              "(iCalendar), as import reads them back"))
    a.add_argument("name", metavar="NAME")
    a.add_argument("--folder", metavar="ID",
                   help=_("only this folder (server id); to standard output without --out"))
    a.add_argument("--out", metavar="DIR",
                   help=_("directory for contacts.vcf, calendar.ics, tasks.ics (and "
                          "<class>-<id> files for other folders)"))
    a.set_defaults(func=cmd_export)

    a = top.add_parser("backup", allow_abbrev=False,
                       help=_("copy the SQLite database to FILE while the server runs "
                              "(PostgreSQL: use pg_dump)"))
    a.add_argument("file", metavar="FILE", help=_("the copy (replaced if it exists)"))
    a.set_defaults(func=cmd_backup)
    return p


async def run(reactor: Any, args: argparse.Namespace, out: TextIO | None = None) -> None:
    """Open the database, run the command, close the database."""
    from backends.sql.store import SqlStore

    out = out or sys.stdout
    args.reactor = reactor
    _server_settings(args)
    try:
        store = SqlStore(reactor, args.db)
        # never an empty database made by a run in the wrong directory: only init
        # creates a SQLite file
        args.new_file = _missing_sqlite_file(store)
        if args.new_file and args.func is not cmd_init:
            raise AdminError(_(
                "no database at {path} (--db {db}): run easync-admin where the server "
                "runs or give the server's --db; to create a new database there: "
                "easync-admin --db {db} init").format(path=args.new_file, db=args.db),
                code=3)
        await store.open()
    except AdminError:
        raise
    except Exception as e:  # noqa: BLE001 - any driver error means the same to the user
        raise AdminError(_("cannot open database {db}: {reason}").format(db=args.db, reason=e),
                         code=3) from None
    try:
        await args.func(store, args, out)
    finally:
        await store.close()


def _server_settings(args: argparse.Namespace) -> None:
    """``args.server``: the server's configuration from ``--config FILE`` (None without
    one); ``--db`` and ``--secret-key`` when not given: the file's, else the
    environment's, else the server's defaults."""
    path = getattr(args, "server_config", None)
    given: dict[str, Any] = {}
    args.server = None
    if path:
        try:
            given = server_config.load_file(path)
            args.server = server_config.resolve({}, given)
        except server_config.ConfigError as e:
            raise AdminError(str(e)) from None
    if getattr(args, "db", None) is None:
        raw = args.server.store.db if args.server is not None and "db" in given else \
            os.environ.get("EASYNC_DB", DEFAULT_DB)
        try:
            args.db = db_url(raw)
        except ValueError as e:
            raise AdminError(str(e), code=2) from None
    if getattr(args, "secret_key", None) is None:
        args.secret_key = args.server.auth.secret_key \
            if args.server is not None and "secret-key" in given else \
            os.environ.get("EASYNC_SECRET_KEY", DEFAULT_SECRET_KEY)


def _missing_sqlite_file(store: Any) -> str | None:
    """The absolute path of the store's SQLite file if it does not exist yet."""
    path = getattr(store.engine, "path", None)
    if not path or store.engine.in_memory or os.path.exists(path):
        return None
    return os.path.abspath(path)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``easync-admin`` entry point; exits with the exit code."""
    from twisted.internet import task

    i18n.use(i18n.locale_language())        # messages in the locale's language
    args = build_parser().parse_args(argv)

    async def _main(reactor: Any) -> None:
        try:
            await run(reactor, args)
        except AdminError as e:
            sys.stderr.write("easync-admin: " + _("error: {message}").format(
                message=e.message) + "\n")
            raise SystemExit(e.code) from None
        except Exception as e:  # noqa: BLE001 - one line, never a traceback
            sys.stderr.write("easync-admin: " + _("error: {message}").format(
                message=f"{type(e).__name__}: {e}") + "\n")
            raise SystemExit(1) from None

    task.react(_main)


if __name__ == "__main__":
    main()
