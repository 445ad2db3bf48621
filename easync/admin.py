"""``easync-admin``: manage users, devices and imports in easync's database.

Passwords are never taken from the command line (it is visible to every user of the
machine in the process list): they are asked twice on the terminal, or read as one line
from standard input with ``--password-stdin``.

Exit codes: 0 done, 1 the operation failed (unknown user, name taken, bad file, …),
2 bad command line, 3 the database cannot be opened.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import bcrypt

from easync.config import OPTIONS as SERVER_OPTIONS
from easync.config import db_url

DEFAULT_DB = next(o.default for o in SERVER_OPTIONS if o.name == "db")
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
        raise AdminError(f"EASYNC_BCRYPT_ROUNDS must be a number, not {raw!r}") from None
    if not 4 <= rounds <= 31:
        raise AdminError(f"EASYNC_BCRYPT_ROUNDS must be between 4 and 31, not {rounds}")
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
            raise AdminError("no password on standard input")
    else:
        if not stdin.isatty():
            raise AdminError("standard input is not a terminal: give the password with "
                             "--password-stdin (one line on standard input)")
        password = getpass.getpass("New password: ")
        if not password:
            raise AdminError("empty password")
        if getpass.getpass("Repeat the password: ") != password:
            raise AdminError("the two passwords differ")
    if len(password.encode("utf-8")) > 72:
        # bcrypt only looks at the first 72 bytes; a longer password would silently
        # accept any text sharing its first 72 bytes.
        raise AdminError("passwords longer than 72 bytes are not supported")
    return password


# ---------------------------------------------------------------- output helpers

def _on_off(value: Any) -> str:
    return "on" if value else "off"


def _when(value: Any) -> str:
    if value in (None, "", 0):
        return "-"
    if isinstance(value, (int, float)):
        stamp = datetime.datetime.fromtimestamp(value, datetime.UTC)
        return stamp.strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


# ---------------------------------------------------------------- commands

async def _user(store: Any, name: str) -> Any:
    user = await store.get_user(name)
    if user is None:
        raise AdminError(f"no user named {name!r}")
    return user


async def cmd_user_add(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    if not _NAME.match(args.name):
        raise AdminError(f"invalid user name {args.name!r}: 1-128 characters, no spaces, "
                         "no \\ / or :")
    if args.email is not None and not _EMAIL.match(args.email):
        raise AdminError(f"invalid e-mail address {args.email!r}")
    if await store.get_user(args.name) is not None:
        raise AdminError(f"a user named {args.name!r} already exists")
    password_hash = hash_password(read_password(args.password_stdin))
    try:
        user = await store.add_user(args.name, password_hash, args.email, args.activesync)
    except KeyError:
        raise AdminError(f"a user named {args.name!r} already exists") from None
    out.write(f"added user {user.name} (ActiveSync {_on_off(user.activesync)})\n")


async def cmd_user_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    users = await store.list_users()
    rows = [["NAME", "EMAIL", "ACTIVESYNC"]]
    rows += [[u.name, u.email or "-", _on_off(u.activesync)] for u in users]
    _table(rows, out)


async def cmd_user_passwd(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    password_hash = hash_password(read_password(args.password_stdin))
    await store.update_user(user.name, password_hash=password_hash)
    out.write(f"password of {user.name} changed\n")


async def cmd_user_activesync(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name)
    await store.update_user(user.name, activesync=args.state == "on")
    out.write(f"ActiveSync {args.state} for {user.name}\n")


async def cmd_device_list(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user = await _user(store, args.name) if args.name else None
    devices = await store.list_devices(user)
    rows = [["USER", "DEVICE", "TYPE", "LAST SEEN", "WIPE", "USER AGENT"]]
    for d in devices:
        owner = d.get("user", user)
        owner_name = getattr(owner, "name", owner)
        rows.append([str(owner_name if owner_name is not None else "-"),
                     str(d.get("device_id", "-")), str(d.get("device_type") or "-"),
                     _when(d.get("last_seen")), str(d.get("wipe") or "none"),
                     str(d.get("user_agent") or "-")])
    _table(rows, out)


async def _device(store: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    user = await _user(store, args.name)
    device = await store.get_device(user, args.device_id)
    if device is None:
        raise AdminError(f"user {user.name} has no device {args.device_id!r}")
    return user, device


async def cmd_device_wipe(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user, device = await _device(store, args)
    info = dict(device.get("info") or {})
    info["wipe_kind"] = "account" if args.account_only else "device"
    await store.save_device(user, args.device_id, wipe="pending", info=info)
    what = "the account's data" if args.account_only else "the whole device"
    out.write(f"wipe of {what} requested for {args.device_id} of {user.name}; "
              "it happens at the device's next connection\n")


async def cmd_device_remove(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    user, _device_record = await _device(store, args)
    await store.delete_device(user, args.device_id)
    out.write(f"removed device {args.device_id} of {user.name} and its sync state\n")


async def cmd_import(store: Any, args: argparse.Namespace, out: TextIO) -> None:
    from easync.importer import ImportFailed, import_file

    user = await _user(store, args.name)
    try:
        report = await import_file(store, user, args.file, folder_id=args.folder,
                                   default_tz=args.timezone)
    except ImportFailed as e:
        raise AdminError(str(e)) from None
    out.write(report.summary() + "\n")
    out.writelines(f"warning: {warning}\n" for warning in report.warnings)


# ---------------------------------------------------------------- parser

def _db_url(value: str) -> str:
    try:
        return db_url(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="easync-admin", allow_abbrev=False,
        description="Manage easync users, devices and imports.",
        epilog="Exit codes: 0 done, 1 failed, 2 bad command line, "
               "3 database cannot be opened.")
    p.add_argument("--db", default=os.environ.get("EASYNC_DB", DEFAULT_DB), metavar="URL",
                   type=_db_url,
                   help=f"database URL, as twistd easync --db (default: $EASYNC_DB or "
                        f"{DEFAULT_DB})")
    top = p.add_subparsers(dest="group", metavar="{user,device,import}", required=True)

    user = top.add_parser("user", allow_abbrev=False, help="add, list and change users")
    user = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = user.add_parser("add", allow_abbrev=False, help="add a user")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--email", metavar="ADDR", help="the user's e-mail address")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password as one line from standard input")
    a.add_argument("--activesync", action="store_true",
                   help="allow ActiveSync at once (off by default)")
    a.set_defaults(func=cmd_user_add)
    a = user.add_parser("list", allow_abbrev=False,
                        help="list users: name, e-mail, ActiveSync on/off")
    a.set_defaults(func=cmd_user_list)
    a = user.add_parser("passwd", allow_abbrev=False, help="set a user's password")
    a.add_argument("name", metavar="NAME")
    a.add_argument("--password-stdin", action="store_true",
                   help="read the password as one line from standard input")
    a.set_defaults(func=cmd_user_passwd)
    a = user.add_parser("activesync", allow_abbrev=False,
                        help="allow or refuse ActiveSync for a user")
    a.add_argument("name", metavar="NAME")
    a.add_argument("state", choices=("on", "off"))
    a.set_defaults(func=cmd_user_activesync)

    device = top.add_parser("device", allow_abbrev=False, help="list, wipe and remove devices")
    device = device.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = device.add_parser("list", allow_abbrev=False,
                          help="devices of one user, or of all users")
    a.add_argument("name", metavar="NAME", nargs="?")
    a.set_defaults(func=cmd_device_list)
    a = device.add_parser("wipe", allow_abbrev=False,
                          help="order a remote wipe at the device's next connection")
    a.add_argument("name", metavar="NAME")
    a.add_argument("device_id", metavar="DEVICEID")
    a.add_argument("--account-only", action="store_true",
                   help="wipe only this account's data (EAS 16.1 devices), not the device")
    a.set_defaults(func=cmd_device_wipe)
    a = device.add_parser("remove", allow_abbrev=False,
                          help="forget a device and its sync state")
    a.add_argument("name", metavar="NAME")
    a.add_argument("device_id", metavar="DEVICEID")
    a.set_defaults(func=cmd_device_remove)

    a = top.add_parser("import", allow_abbrev=False,
                       help="import a vCard (.vcf) or iCalendar (.ics) file")
    a.add_argument("name", metavar="NAME")
    a.add_argument("file", metavar="FILE")
    a.add_argument("--folder", metavar="ID",
                   help="folder server id (default: the user's default Contacts, Calendar "
                        "or Tasks folder)")
    a.add_argument("--timezone", metavar="ZONE", default=None,
                   help="IANA zone for all-day and floating times (default: the file's "
                        "X-WR-TIMEZONE, else UTC)")
    a.set_defaults(func=cmd_import)
    return p


async def run(reactor: Any, args: argparse.Namespace, out: TextIO | None = None) -> None:
    """Open the database, run the command, close the database."""
    from backends.sql.store import SqlStore

    out = out or sys.stdout
    try:
        store = SqlStore(reactor, args.db)
        await store.open()
    except Exception as e:  # noqa: BLE001 - any driver error means the same to the user
        raise AdminError(f"cannot open database {args.db}: {e}", code=3) from None
    try:
        await args.func(store, args, out)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> None:
    """The ``easync-admin`` entry point; exits with the exit code."""
    from twisted.internet import task

    args = build_parser().parse_args(argv)

    async def _main(reactor: Any) -> None:
        try:
            await run(reactor, args)
        except AdminError as e:
            sys.stderr.write(f"easync-admin: error: {e.message}\n")
            raise SystemExit(e.code) from None
        except Exception as e:  # noqa: BLE001 - one line, never a traceback
            sys.stderr.write(f"easync-admin: error: {type(e).__name__}: {e}\n")
            raise SystemExit(1) from None

    task.react(_main)


if __name__ == "__main__":
    main()
