"""Shared folders in the SQL store (issue #14 point 1; table ``folder_shares``, schema 9).

A user may let a colleague — or everyone — hold one of their folders: read-only or
read-write.  The items stay the owner's rows: a grantee's device reads the owner's
change feed (the folder's modseqs are the owner's), and a write through a read-write
share takes the owner's modseq counter, as the owner's own devices' writes do.  A
read-only share is refused item by item (``OpResult(error="readonly")``): the sync
engine answers the device and sends the server's version back.

The company address book is a Contacts folder of the system user ``~company`` (no
password, ActiveSync off: nobody logs in as it), shared read-only with everyone
(grantee 0).  ``easync-admin folder create-shared`` makes it, ``easync-admin import
--folder`` fills it.

Folder listing: a grantee sees the folder at the top level (ParentId 0) with the
Type a user-created folder of its class has (MS-ASCMD 2.2.3.186.3: 13 calendar,
14 contacts, 15 tasks) and a name that says whose it is ("Calendar — anna").  Its
ServerId is the owner's folder id, which no other folder ever has (folder ids are
one sequence for all users, never reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from backends.sql.base import StorePart, _folder_from_row
from backends.sql.request import FOLDERS_SQL
from easync.model import FOLDER_CLASS, USER_FOLDER_TYPE, Folder, User
from easync.storerules import parse_folder_id

__all__ = ["COMPANY", "EVERYONE", "SqlShares", "folder_access_txn", "list_folders_txn"]

#: the system user owning the company address book
COMPANY = "~company"
#: grantee id meaning every user
EVERYONE = 0

SHARED_SQL = (
    "SELECT f.id, f.parent_id, f.name, f.type, f.modseq, f.purged, u.name,"
    " MAX(s.can_write) FROM folder_shares s"
    " JOIN folders f ON f.id = s.folder_id JOIN users u ON u.id = f.user_id"
    " WHERE s.grantee_id IN (?, 0) AND f.deleted = 0 AND f.user_id <> ?"
    " GROUP BY f.id, f.parent_id, f.name, f.type, f.modseq, f.purged, u.name"
    " ORDER BY f.id")

SHARED_OUT_SQL = (
    "SELECT DISTINCT s.folder_id FROM folder_shares s JOIN folders f ON f.id = s.folder_id"
    " WHERE f.user_id = ? AND f.deleted = 0")


def shared_name(name: str, owner: str) -> str:
    """What a grantee's phone shows: the folder's name and whose it is (the company
    book: its name alone)."""
    return name if owner == COMPANY else f"{name} \u2014 {owner}"


def list_folders_txn(engine: Any, cur: Any, user_id: int, shares: bool = True
                     ) -> list[Folder]:
    """The user's own live folders (those shared out marked), then the folders
    shared with them: three indexed queries.  ``shares`` False: a schema older than
    9 (no share table), the own folders alone."""
    cur.execute(engine.sql(FOLDERS_SQL), (user_id,))
    own = [_folder_from_row(r) for r in cur.fetchall()]
    if not shares:
        return own
    cur.execute(engine.sql(SHARED_OUT_SQL), (user_id,))
    out_ids = {str(r[0]) for r in cur.fetchall()}
    for f in own:
        if f.server_id in out_ids:
            f.shared_out = True
    cur.execute(engine.sql(SHARED_SQL), (user_id, user_id))
    for fid, _parent, name, ftype, modseq, purged, owner, can_write in cur.fetchall():
        cls = FOLDER_CLASS.get(int(ftype), "Email")
        if cls not in USER_FOLDER_TYPE:
            continue
        own.append(Folder(server_id=str(fid), parent_id="0", name=shared_name(name, owner),
                          type=USER_FOLDER_TYPE[cls], modseq=int(modseq),
                          purged=int(purged), read_only=not int(can_write or 0),
                          owner=str(owner)))
    return own


def folder_access_txn(engine: Any, cur: Any, user_id: int, fid: int
                      ) -> tuple[int, int, bool] | None:
    """(owner id, folder type, read only) of live folder ``fid`` as ``user_id`` may
    reach it: its own (read-write) or shared with them; None otherwise."""
    cur.execute(engine.sql("SELECT user_id, type FROM folders WHERE id = ? AND deleted = 0"),
                (fid,))
    row = cur.fetchone()
    if row is None:
        return None
    owner, ftype = int(row[0]), int(row[1])
    if owner == user_id:
        return owner, ftype, False
    cur.execute(engine.sql("SELECT MAX(can_write) FROM folder_shares WHERE folder_id = ?"
                           " AND grantee_id IN (?, 0)"), (fid, user_id))
    got = cur.fetchone()
    if got is None or got[0] is None:
        return None
    return owner, ftype, not int(got[0])


class SqlShares(StorePart):
    """Share and unshare folders; who holds a folder."""

    def share(self, folder_id: str, grantee_id: int, can_write: bool) -> Deferred[bool]:
        """Let user ``grantee_id`` (``EVERYONE``: every user) hold folder
        ``folder_id``; True when that changed anything.  KeyError when no such live
        folder; ValueError("self") to share a folder with its owner, ValueError("class")
        for a folder that holds no contacts, events or tasks."""
        return self._run(self._share, parse_folder_id(folder_id), int(grantee_id),
                         bool(can_write), write=True)

    def _share(self, cur: Any, fid: int | None, grantee: int, can_write: bool) -> bool:
        if fid is None:
            raise KeyError("folder")
        cur.execute(self._sql("SELECT user_id, type FROM folders WHERE id = ? AND deleted = 0"),
                    (fid,))
        row = cur.fetchone()
        if row is None:
            raise KeyError("folder")
        if int(row[0]) == grantee:
            raise ValueError("self")
        if FOLDER_CLASS.get(int(row[1]), "Email") not in USER_FOLDER_TYPE:
            raise ValueError("class")
        cur.execute(self._sql("SELECT can_write FROM folder_shares WHERE folder_id = ?"
                              " AND grantee_id = ?"), (fid, grantee))
        old = cur.fetchone()
        if old is not None and bool(int(old[0])) == can_write:
            return False
        if old is None:
            cur.execute(self._sql("INSERT INTO folder_shares (folder_id, grantee_id,"
                                  " can_write, created) VALUES (?, ?, ?, ?)"),
                        (fid, grantee, int(can_write), self.db.reactor.seconds()))
        else:
            cur.execute(self._sql("UPDATE folder_shares SET can_write = ? WHERE folder_id = ?"
                                  " AND grantee_id = ?"), (int(can_write), fid, grantee))
        self._bump_hierarchy(cur, grantee)
        return True

    def unshare(self, folder_id: str, grantee_id: int) -> Deferred[bool]:
        """Stop sharing; True when there was such a share.  The grantee's devices drop
        the folder (and its items) at their next FolderSync."""
        return self._run(self._unshare, parse_folder_id(folder_id), int(grantee_id),
                         write=True)

    def _unshare(self, cur: Any, fid: int | None, grantee: int) -> bool:
        if fid is None:
            return False
        cur.execute(self._sql("DELETE FROM folder_shares WHERE folder_id = ? AND grantee_id = ?"),
                    (fid, grantee))
        if not cur.rowcount:
            return False
        self._bump_hierarchy(cur, grantee)
        return True

    def _bump_hierarchy(self, cur: Any, grantee: int) -> None:
        """The grantees' hierarchies changed (the SQLite poller wakes their Pings)."""
        if grantee == EVERYONE:
            cur.execute("UPDATE users SET hierarchy_version = hierarchy_version + 1")
        else:
            self.engine.bump(cur, "users", "hierarchy_version", grantee, 1)

    def list_shares(self, user_id: int | None = None) -> Deferred[list[dict[str, Any]]]:
        """Every share (``user_id`` given: those of folders it owns and those it
        holds), as dicts: folder_id, folder, cls, owner, grantee (None: everyone),
        write."""
        def q(cur: Any) -> list[dict[str, Any]]:
            sql = ("SELECT s.folder_id, f.name, f.type, o.name, s.grantee_id, g.name,"
                   " s.can_write FROM folder_shares s JOIN folders f ON f.id = s.folder_id"
                   " JOIN users o ON o.id = f.user_id LEFT JOIN users g ON g.id = s.grantee_id"
                   " WHERE f.deleted = 0")
            params: Sequence[Any] = ()
            if user_id is not None:
                sql += " AND (f.user_id = ? OR s.grantee_id IN (?, 0))"
                params = (user_id, user_id)
            cur.execute(self._sql(sql + " ORDER BY s.folder_id, s.grantee_id"), params)
            return [{"folder_id": str(fid), "folder": name,
                     "cls": FOLDER_CLASS.get(int(ftype), "Email"), "owner": owner,
                     "grantee": None if int(gid) == EVERYONE else gname,
                     "write": bool(int(w))}
                    for fid, name, ftype, owner, gid, gname, w in cur.fetchall()]

        return self._run(q)

    def folder_audience(self, folder_id: str) -> Deferred[list[int]]:
        """The users who hold folder ``folder_id``: its owner and its grantees (every
        user, for a share with everyone).  What a write to it must wake."""
        def q(cur: Any) -> list[int]:
            fid = parse_folder_id(folder_id)
            if fid is None:
                return []
            cur.execute(self._sql("SELECT user_id FROM folders WHERE id = ?"), (fid,))
            row = cur.fetchone()
            if row is None:
                return []
            cur.execute(self._sql("SELECT grantee_id FROM folder_shares WHERE folder_id = ?"),
                        (fid,))
            grantees = {int(r[0]) for r in cur.fetchall()}
            if EVERYONE in grantees:
                cur.execute("SELECT id FROM users")
                grantees = {int(r[0]) for r in cur.fetchall()}
            return sorted(grantees | {int(row[0])})

        return self._run(q)

    def company_user(self) -> Deferred[User]:
        """The system user owning the company address book (made on first use)."""
        from backends.sql.base import _USER_COLS, _user_from_row

        def q(cur: Any) -> User:
            cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE name = ?"),
                        (COMPANY,))
            row = cur.fetchone()
            if row is None:
                self.engine.insert_id(
                    cur, "INSERT INTO users (name, activesync, extra) VALUES (?, 0, '{}')",
                    (COMPANY,))
                cur.execute(self._sql(f"SELECT {_USER_COLS} FROM users WHERE name = ?"),
                            (COMPANY,))
                row = cur.fetchone()
            return _user_from_row(row)

        return self._run(q, write=True)

    def create_folder_of(self, owner_id: int, name: str, ftype: int) -> Deferred[Folder]:
        """A top-level folder of user ``owner_id`` (the company book)."""
        def q(cur: Any) -> Folder:
            self.engine.bump(cur, "users", "hierarchy_version", owner_id, 1)
            fid = self.engine.insert_id(
                cur, "INSERT INTO folders (user_id, parent_id, name, type) VALUES (?, ?, ?, ?)",
                (owner_id, "0", name, int(ftype)))
            return Folder(server_id=str(fid), parent_id="0", name=name, type=int(ftype))

        return self._run(q, write=True)
