"""Share and unshare folders: the rules the admin CLI and the account page share
(issue #14 point 1).

The store does the work (the SQL store's ``share_folder``, ``unshare_folder``,
``list_shares``, ``folder_audience``); here are the checks a person's request needs
(whose folder it is, that the colleague exists), the audit row of every share and
unshare, and the wake-up of the devices whose hierarchy changed (``announce``: a
callable taking a user id and folder ids, the in-process hub's ``publish`` or the
CLI's cross-process NOTIFY).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from easync.i18n import msg
from easync.model import USER_FOLDER_TYPE, Folder, User, is_system_user

__all__ = ["EVERYONE", "ShareError", "Sharing"]

EVERYONE = 0
Announce = Callable[[int, list[str]], Any]


class ShareError(Exception):
    """A refused share; ``message`` an ``easync.i18n.msg`` (``tr`` shows it in the
    reader's language)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Sharing:
    """``Sharing(store, audit, announce)``: ``audit(actor, user, action, detail)`` an
    awaitable writing one audit row (``Accounts.audit_raw`` without the address)."""

    def __init__(self, store: Any, audit: Callable[..., Any],
                 announce: Announce | None = None) -> None:
        self.store = store
        self.audit = audit
        self.announce = announce

    @staticmethod
    def supported(store: Any) -> bool:
        return hasattr(store, "share_folder")

    async def _user(self, name: str) -> User:
        user = await self.store.get_user(name)
        if user is None:
            raise ShareError(msg("no user named {name!r}", name=name))
        return user

    async def own_folder(self, owner: User, folder_id: str) -> Folder:
        """One of ``owner``'s own folders that can be shared (contacts, calendar,
        tasks; not a read-only one such as the CRM's company address book)."""
        for f in await self.store.list_folders(owner):
            if f.server_id == str(folder_id) and f.owner is None and not f.read_only:
                if f.cls not in USER_FOLDER_TYPE:
                    break
                return f
        raise ShareError(msg("{name} has no contacts, calendar or tasks folder {folder}",
                             name=owner.name, folder=folder_id))

    async def share(self, actor: str, owner_name: str, folder_id: str, to: str | None,
                    write: bool) -> bool:
        """Share ``owner_name``'s folder with user ``to`` (None: everyone), read-only
        or read-write.  True when that changed anything."""
        owner = await self._user(owner_name)
        folder = await self.own_folder(owner, folder_id)
        if to is not None and is_system_user(to):
            # the company book's owner: nobody uses it, a share with it is a mistake
            raise ShareError(msg("no user named {name!r}", name=to))
        grantee = EVERYONE if to is None else (await self._user(to)).id
        if grantee == owner.id:
            raise ShareError(msg("{name} owns this folder already", name=owner.name))
        changed = bool(await self.store.share_folder(folder.server_id, grantee, write))
        if changed:
            await self.audit(actor, owner.name, "share",
                             f"folder {folder.server_id} ({folder.name}) to "
                             f"{to.lower() if to else 'everyone'}, "
                             f"{'read-write' if write else 'read-only'}")
            await self._wake(folder.server_id, grantee)
        return changed

    async def unshare(self, actor: str, owner_name: str, folder_id: str,
                      to: str | None) -> bool:
        """Stop sharing; True when there was such a share."""
        owner = await self._user(owner_name)
        folder = await self.own_folder(owner, folder_id)
        grantee = EVERYONE if to is None else (await self._user(to)).id
        audience = await self.store.folder_audience(folder.server_id) \
            if grantee == EVERYONE else [grantee]
        changed = bool(await self.store.unshare_folder(folder.server_id, grantee))
        if changed:
            await self.audit(actor, owner.name, "unshare",
                             f"folder {folder.server_id} ({folder.name}) from "
                             f"{to.lower() if to else 'everyone'}")
            for uid in audience:
                await self._tell(uid)
        return changed

    async def _wake(self, folder_id: str, grantee: int) -> None:
        if grantee == EVERYONE:
            for uid in await self.store.folder_audience(folder_id):
                await self._tell(uid)
        else:
            await self._tell(grantee)

    async def _tell(self, uid: int) -> None:
        """The user's hierarchy changed: their held Pings answer (MS-ASCMD 2.2.1.13,
        Ping Status 7: a FolderSync is due)."""
        if self.announce is not None:
            got = self.announce(uid, ["hierarchy"])
            if inspect.isawaitable(got):
                await got

    async def list(self, user: User | None = None) -> list[dict[str, Any]]:
        """The shares (of ``user``'s folders and those it holds; all without one)."""
        return list(await self.store.list_shares(user))
