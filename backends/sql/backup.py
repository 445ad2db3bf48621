"""Backups of the SQL store: SQLite's online backup; PostgreSQL's is ``pg_dump``.

``backup_sqlite`` copies a SQLite database with SQLite's own backup API
(``sqlite3.Connection.backup``) while servers keep using it: the copy is made in one
step inside one read transaction, so it is the database as it was at one instant
(in WAL mode readers never block writers, so the servers go on writing meanwhile).
The copy is written beside the target under a temporary name, checked with
``PRAGMA quick_check``, switched out of WAL mode (one self-contained file) and
renamed into place, so a failed or interrupted backup never leaves a half-written
FILE, and an older backup of that name is replaced only by a complete one.

``pg_dump_command`` / ``pg_restore_command``: the commands to give an admin of a
PostgreSQL store, ready to run (the password of the URL, if any, left out: never
shown; libpq takes it from ``PGPASSWORD`` or ``~/.pgpass``).
"""

from __future__ import annotations

import os
import shlex
import sqlite3
import tempfile
from urllib.parse import urlsplit

from easync.i18n import msg

__all__ = ["BackupError", "backup_sqlite", "pg_dump_command", "pg_restore_command"]


class BackupError(Exception):
    """The backup cannot be made (one line for the admin): an ``easync.i18n.msg``, made
    in a worker thread (English), said in the admin's language with ``tr(e.args[0])``."""


def backup_sqlite(source: str, target: str, busy_timeout: float = 30.0) -> int:
    """Copy the SQLite database at ``source`` to ``target`` (replaced if it exists);
    returns the size of the copy in bytes.  Safe while servers use ``source``."""
    if not os.path.exists(source):
        raise BackupError(msg("no database at {path}", path=source))
    if os.path.exists(target) and os.path.samefile(source, target):
        raise BackupError(msg("{path} is the database itself", path=target))
    directory = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(directory):
        raise BackupError(msg("no directory {path}", path=directory))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".easync-backup-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise BackupError(msg("cannot write in {path}: {reason}", path=directory,
                                 reason=e.strerror)) from None
    os.close(fd)
    try:
        src = sqlite3.connect(source, timeout=busy_timeout)
        try:
            dst = sqlite3.connect(tmp)
            try:
                # pages=-1: the whole database in one step, one read transaction (a
                # stepwise copy restarts whenever another connection writes)
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")
                check = dst.execute("PRAGMA quick_check").fetchone()
                if check is None or check[0] != "ok":
                    raise BackupError(msg("the copy of {path} fails its check: {check}",
                                             path=source, check=check))
                dst.commit()
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except sqlite3.Error as e:
        raise BackupError(msg("cannot back up {path}: {reason}", path=source,
                                 reason=e)) from None
    except OSError as e:
        raise BackupError(msg("cannot write {path}: {reason}", path=target,
                                 reason=e.strerror)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return os.path.getsize(target)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", "@", 1)
    return parts._replace(netloc=netloc).geturl()


def pg_dump_command(url: str, target: str) -> str:
    """The ``pg_dump`` command line that backs up the PostgreSQL database at ``url``
    into ``target`` (custom format, for ``pg_restore``)."""
    return (f"pg_dump --format=custom --file={shlex.quote(target)} "
            f"--dbname={shlex.quote(_without_password(url))}")


def pg_restore_command(url: str, source: str) -> str:
    """The ``pg_restore`` command line that puts such a dump back into ``url``
    (replacing the tables it holds)."""
    return (f"pg_restore --clean --if-exists --no-owner "
            f"--dbname={shlex.quote(_without_password(url))} {shlex.quote(source)}")
