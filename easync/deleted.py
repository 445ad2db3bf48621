"""Nothing lost to a phone: what devices delete is kept, listed and restored (issue #14
point 2), and a Sync that deletes most of a folder raises an alarm.

* A device's Sync Delete (MS-ASCMD 2.2.3.42.2) reaches the item store as an ``Op``
  with ``keep`` set to the device id (``easync.syncengine``); the store writes the
  item's canonical data to ``IDeletedStore`` with the delete (the SQL store in the
  same transaction, the CRM store before it asks the CRM).  Deletes made otherwise
  (the CRM's own UI, an import, a folder deleted, MoveItems) are not kept.  With
  DeletesAsMoves (MS-ASCMD 2.2.3.48) the client asks the server to move the deleted
  item to Deleted Items; this server has no mail, and its Deleted Items folder holds
  no contacts, events or tasks, so a delete is a delete and is kept here instead.
* ``DeletedItems.restore`` re-creates a kept item through the item store's normal add
  path (``IItemStore.apply`` with an "add" op): it gets a new ServerId and reaches
  every device of the user through the change hub (``publish``), as an Add at its
  next Sync, at once for a device holding a Ping.  A kept row is claimed before the
  add (``IDeletedStore.claim_restore``): restoring it twice makes one item.  The add
  names the row (``Op.restores``): the store marks it restored in the transaction
  that creates the item (the CRM store journals the add before asking the CRM, and
  marks it where it records the CRM's record), so a restore that stops half-way is
  never made twice by a retry.  An item whose folder is gone is restored into the
  user's default folder of its class.
* ``MassDeletes.check``: a Sync whose Deletes took more than ``share`` of the folder's
  items (and at least ``minimum`` of them) is logged as a warning, written to the
  audit log and counted (``easync_mass_deletes_total`` on ``/metrics``).
* Rows older than ``--deleted-keep`` are forgotten by the retention pass
  (``easync.retention``), a short batch at a time.
"""

from __future__ import annotations

import datetime
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from easync.i18n import msg
from easync.model import KeptItem, Op, OpResult, User

__all__ = ["DeletedItems", "MassDeletes", "RestoreError", "Restored", "parse_since",
           "summary"]

log = Logger()

#: the default folder Type of each class (MS-ASCMD 2.2.3.186.3)
DEFAULT_TYPE = {"Contacts": 9, "Calendar": 8, "Tasks": 7}
#: kept rows one restore request may re-create (each is one store write): a request
#: asking for more restores this many, newest first, and says how many are left
MAX_RESTORE = 1000
#: items re-created per store write (one transaction each)
RESTORE_BATCH = 100
SUMMARY_CHARS = 80
#: the largest row id (SQLite's INTEGER, PostgreSQL's BIGINT)
MAX_ROW_ID = 2 ** 63 - 1

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class RestoreError(ValueError):
    """A list or restore request that cannot be carried out (its message says why,
    for the user: an unknown id, a bad time)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def summary(cls: str, data: dict[str, Any]) -> str:
    """A short text naming an item for a list: a contact's name (or company, or
    address), an event's or task's subject."""
    def text(*keys: str) -> str:
        for key in keys:
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return value
        return ""

    if cls == "Contacts":
        name = " ".join(p for p in (text("FirstName"), text("LastName")) if p) or \
            text("FileAs", "CompanyName", "Email1Address", "MobilePhoneNumber")
    else:
        name = text("Subject")
    name = " ".join(name.split())
    return name if len(name) <= SUMMARY_CHARS else name[:SUMMARY_CHARS - 1] + "…"


def parse_since(value: str, now: float) -> float:
    """A point in time as the admin gives it: an ISO date or date and time (UTC when
    it has no offset), or an age back from ``now`` ("2h", "3d", "90m", "1w").
    ValueError for anything else."""
    raw = (value or "").strip()
    m = _RELATIVE.match(raw)
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2).lower()]
    try:
        when = datetime.datetime.fromisoformat(raw.replace("Z", "+00:00")
                                               if raw.endswith("Z") else raw)
    except ValueError:
        raise ValueError(f"not a time: {value!r} (give an ISO date or time such as "
                         "2026-12-01 or 2026-12-01T14:30, or an age such as 2h or 3d)"
                         ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@dataclass
class Restored:
    """What one restore did."""

    restored: list[tuple[KeptItem, str]]    # (kept row, the new server id)
    already: list[int]                      # ids restored before (nothing done)
    failed: list[tuple[int, str]]           # (id, why): left restorable
    left: int = 0                           # more matched than one request restores


Publish = Callable[[int, str, list[OpResult]], Any]
Audit = Callable[[str | None, str, str, str], Awaitable[None]]


class DeletedItems:
    """Listing and restoring a user's kept items.  ``kept``: the ``IDeletedStore``;
    ``items``: the ``IItemStore`` that re-creates them (``backend`` names it: a row
    kept by another store is refused); ``publish(user id, folder id, results)``:
    announce a committed restore to the change hub; ``audit(actor, user, action,
    detail)``: the audit log (optional)."""

    def __init__(self, kept: Any, items: Any, clock: Any, *, backend: str = "sql",
                 publish: Publish | None = None, audit: Audit | None = None) -> None:
        self.kept = kept
        self.items = items
        self.clock = clock
        self.backend = backend
        self.publish = publish
        self.audit = audit

    async def list_items(self, user: User, *, device_id: str | None = None,
                   since: float | None = None, folder_id: str | None = None,
                   restored: bool = False, limit: int = 500) -> list[KeptItem]:
        found: list[KeptItem] = await self.kept.list_deleted(
            user, device_id=device_id, since=since, folder_id=folder_id,
            restored=restored, limit=limit)
        return found

    async def restore_ids(self, user: User, ids: Sequence[int], *,
                          actor: str | None = None) -> Restored:
        """Restore the user's kept items ``ids``.  RestoreError (nothing done) when
        one of them is not the user's kept item."""
        wanted = list(dict.fromkeys(int(i) for i in ids))
        if not wanted:
            raise RestoreError(msg("no item to restore"))
        if len(wanted) > MAX_RESTORE:
            raise RestoreError(msg("at most {n} items per restore", n=MAX_RESTORE))
        # an id no row can have (a row id is a positive 64-bit integer) is unknown
        # like any other, not a number the database refuses (a 500)
        rows = {k.id: k for k in await self.kept.get_deleted(
            user, [i for i in wanted if 0 < i <= MAX_ROW_ID])}
        unknown = [i for i in wanted if i not in rows]
        if unknown:
            raise RestoreError(msg("no deleted item {ids} for {user}",
                                   ids=", ".join(str(i) for i in unknown), user=user.name),
                               "not_found")
        return await self._restore(user, [rows[i] for i in wanted], actor, 0)

    async def restore_since(self, user: User, since: float, *, device_id: str | None = None,
                            actor: str | None = None) -> Restored:
        """Restore what the user's devices (or one device) deleted at ``since`` or
        later and is not restored yet: the newest ``MAX_RESTORE`` of them, re-created
        oldest first (``Restored.left``: how many more matched)."""
        rows = await self.kept.list_deleted(user, device_id=device_id, since=since,
                                            limit=MAX_RESTORE + 1)
        left = max(0, len(rows) - MAX_RESTORE)
        return await self._restore(user, list(reversed(rows[:MAX_RESTORE])), actor, left)

    async def _restore(self, user: User, rows: list[KeptItem], actor: str | None,
                       left: int) -> Restored:
        out = Restored([], [], [], left)
        foreign = [k for k in rows if k.backend != self.backend]
        if foreign:
            raise RestoreError(
                msg("items {ids} were deleted from the {backend} store: restore them where "
                    "the server runs with --backend {backend} (its account page)",
                    ids=", ".join(str(k.id) for k in foreign), backend=foreign[0].backend),
                "wrong_backend")
        folders = {f.server_id: f for f in await self.items.list_folders(user)}
        defaults = {f.cls: f.server_id for f in folders.values()
                    if f.type == DEFAULT_TYPE.get(f.cls)}
        now = self.clock.seconds()
        todo = [k for k in rows if k.restored_id is None]
        out.already.extend(k.id for k in rows if k.restored_id is not None)
        for i in range(0, len(todo), RESTORE_BATCH):
            part = todo[i:i + RESTORE_BATCH]
            # one transaction claims the batch: a row another restore holds (or made)
            # is not claimed, so restoring it twice makes one item
            claimed = {k.id: k for k in await self.kept.claim_restore(
                user, [k.id for k in part], now)}
            out.already.extend(k.id for k in part if k.id not in claimed)
            by_folder: dict[str, list[KeptItem]] = {}
            homeless: list[KeptItem] = []
            for k in part:
                if k.id not in claimed:
                    continue
                target = k.folder_id
                folder = folders.get(target)
                if folder is None or folder.cls != k.cls:
                    target = defaults.get(k.cls, "")
                if target:
                    by_folder.setdefault(target, []).append(claimed[k.id])
                else:
                    homeless.append(k)
            if homeless:
                await self.kept.release_restore([k.id for k in homeless])
                out.failed.extend((k.id, msg("the user has no {kind} folder", kind=k.cls))
                                  for k in homeless)
            for target, items in by_folder.items():
                await self._write(user, target, items, out)
        if out.restored and self.audit is not None:
            await self.audit(actor, user.name, "deleted-restore",
                             "restored {n} deleted item(s): {ids}".format(
                                 n=len(out.restored),
                                 ids=", ".join(str(k.id) for k, _ in out.restored[:50])
                                 + (" …" if len(out.restored) > 50 else "")))
        return out

    async def _write(self, user: User, folder_id: str, part: list[KeptItem],
                     out: Restored) -> None:
        """Re-create ``part`` (claimed rows) in one store write."""
        # Op.restores: the store marks each row restored in the transaction that makes
        # its item, and makes none for a row restored already
        ops = [Op(kind="add", data=dict(k.data), ref=str(k.id), cls=k.cls, restores=k.id)
               for k in part]
        try:
            results: list[OpResult] = await self.items.apply(user, folder_id, ops)
        except Exception as e:  # noqa: BLE001 - the store failed: give every claim back
            await self.kept.release_restore([k.id for k in part])
            why = str(e) or type(e).__name__
            out.failed.extend((k.id, why) for k in part)
            log.warn("restore of deleted items of {user} failed: {err}",  # noqa: G010
                     user=user.name, err=why)
            return
        made = [(k, str(r.server_id)) for k, r in zip(part, results, strict=True)
                if r.ok and r.server_id]
        # restored already (a restore that stopped after its item was made)
        out.already.extend(k.id for k, r in zip(part, results, strict=True)
                           if not r.ok and r.error == "restored")
        refused = [(k, r.error or "refused") for k, r in zip(part, results, strict=True)
                   if not (r.ok and r.server_id) and r.error != "restored"]
        if made:
            await self.kept.finish_restore([(k.id, sid) for k, sid in made])
            out.restored.extend(made)
        if refused:
            await self.kept.release_restore([k.id for k, _ in refused])
            out.failed.extend((k.id, why) for k, why in refused)
        if self.publish is not None and made:
            got = self.publish(user.id, folder_id, results)
            if inspect.isawaitable(got):
                await got
        log.info("restored {n} deleted item(s) of {user} into folder {folder}",
                 n=sum(1 for r in results if r.ok), user=user.name, folder=folder_id)


class MassDeletes:
    """The mass-delete alarm: a Sync whose Deletes took more than ``share`` of a
    folder's items, and at least ``minimum`` items, is logged, audited and counted."""

    def __init__(self, share: float = 0.5, minimum: int = 10,
                 audit: Audit | None = None) -> None:
        self.share = share
        self.minimum = minimum
        self.audit = audit
        self.count = 0          # alarms raised by this process

    def register(self, metrics: Any) -> None:
        """``easync_mass_deletes_total`` on ``/metrics`` (``easync.metrics.Metrics``)."""
        metrics.counter("easync_mass_deletes_total",
                        "Syncs whose Deletes took more than --mass-delete-share of a "
                        "folder's items (at least --mass-delete-min).",
                        lambda: {"": float(self.count)})

    def needs_count(self, deleted: int) -> bool:
        """Is the folder's size worth reading for ``deleted`` deletes?"""
        return self.share > 0 and deleted >= max(1, self.minimum)

    async def check(self, user: User, device_id: str, folder_id: str, deleted: int,
                    left: int, owner: str | None = None) -> bool:
        """``deleted`` items went in one Sync, ``left`` live items remain: an alarm?
        ``owner``: the folder's owner when it is another user's, shared with ``user``
        (the items are kept as the owner's: the alarm points there)."""
        total = deleted + left
        if not self.needs_count(deleted) or total <= 0 or deleted <= self.share * total:
            return False
        self.count += 1
        keeper = owner or user.name
        whose = f" (of {owner}, shared with {user.name})" if owner else ""
        log.warn("mass delete: device {device} of {user} deleted {n} of {m} items of"  # noqa: G010
                 " folder {folder}{whose} in one Sync (kept: easync-admin deleted list"
                 " {keeper})", device=device_id, user=user.name, n=deleted, m=total,
                 folder=folder_id, whose=whose, keeper=keeper)
        if self.audit is not None:
            try:
                await self.audit("device " + device_id, keeper, "mass-delete",
                                 f"device {device_id} of {user.name} deleted {deleted} of "
                                 f"{total} items of folder {folder_id}{whose} in one Sync"
                                 if owner else
                                 f"device {device_id} deleted {deleted} of {total} items of "
                                 f"folder {folder_id} in one Sync")
            except Exception as e:  # noqa: BLE001 - the alarm never fails the Sync
                log.warn("mass delete: audit row not written: {err}",  # noqa: G010
                         err=str(e))
        return True
