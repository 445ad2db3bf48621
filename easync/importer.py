"""``easync-admin import``: vCard and iCalendar files into a user's folders.

vCard (.vcf, 2.1/3.0/4.0, any number of cards) → the user's default Contacts folder;
iCalendar (.ics) VEVENTs → the default Calendar folder, VTODOs → the default Tasks folder.
Every write goes through ``IItemStore.apply``, so the change feed (and push) sees it.

Importing a file again updates what it imported before instead of duplicating it:

* events and tasks are the same when they have the same UID;
* contacts are the same when the card's UID matches one imported before, or, for a card
  (or a stored contact) without UID, when first, middle and last name (or company, for a
  card without a name) and the first e-mail address are all equal.

An item whose new data equals the stored one is left untouched (no change to sync).

The files are read by ``easync.items.vcard`` (vCard 2.1, 3.0 and 4.0, with
``vobject``) and ``easync.items.icalendar_reader`` (with ``icalendar``); this module
matches what they read with the folder's items and writes the difference.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from easync.items.icalendar_reader import ICalendarError, parse_icalendar
from easync.items.vcard import VCardError, card_to_contact, contact_identity, read_cards
from easync.model import Op

BATCH = 200                     # items per store.apply call


class ImportFailed(Exception):
    """The file cannot be imported at all (unreadable, unknown format, bad folder)."""


@dataclass
class Counts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def total(self) -> int:
        return self.added + self.updated + self.unchanged


@dataclass
class ImportReport:
    contacts: Counts = field(default_factory=Counts)
    events: Counts = field(default_factory=Counts)
    tasks: Counts = field(default_factory=Counts)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``imported 12 contacts, 3 events, 1 task (2 updated); 1 warning``."""

        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else 's'}"

        parts = [n(c.total, w) for c, w in ((self.contacts, "contact"),
                                            (self.events, "event"), (self.tasks, "task"))
                 if c.total]
        text = "imported " + (", ".join(parts) if parts else "nothing")
        updated = sum(c.updated for c in (self.contacts, self.events, self.tasks))
        unchanged = sum(c.unchanged for c in (self.contacts, self.events, self.tasks))
        detail = [f"{updated} updated"] if updated else []
        if unchanged:
            detail.append(f"{unchanged} unchanged")
        if detail:
            text += f" ({', '.join(detail)})"
        if self.warnings:
            text += f"; {n(len(self.warnings), 'warning')}"
        return text


def read_text(path: str) -> str:
    """A file's text: UTF-8 (with or without BOM), else Windows-1252 (old vCard 2.1)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ImportFailed(f"cannot read {path}: {e.strerror}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _kind(text: str, path: str) -> str:
    head = text.lstrip()[:2000].upper()
    if head.startswith("BEGIN:VCARD"):
        return "vcard"
    if head.startswith("BEGIN:VCALENDAR"):
        return "icalendar"
    lower = path.lower()
    if lower.endswith((".vcf", ".vcard")):
        return "vcard"
    if lower.endswith((".ics", ".ical", ".ifb")):
        return "icalendar"
    raise ImportFailed(f"{path}: neither a vCard nor an iCalendar file")


async def _existing(store: Any, user: Any, folder_id: str) -> list[Any]:
    """The live items of a folder (one pass over its change feed)."""
    items: list[Any] = []
    cursor = 0
    while True:
        batch = await store.changes_since(user, folder_id, cursor, 1000)
        items.extend(c.item for c in batch.changes if not c.deleted and c.item is not None)
        if not batch.more or batch.high == cursor:
            return items
        cursor = batch.high


# Tells the running servers that these folders changed (easync.admin gives PostgreSQL's
# NOTIFY or the SQLite change log: the store's own machinery, which this module does not
# import).
Announce = Callable[[list[str]], Awaitable[object]]


async def _write(store: Any, user: Any, folder_id: str, cls: str,
                 items: Iterable[dict[str, Any]], counts: Counts,
                 announce: Announce | None = None) -> None:
    existing = await _existing(store, user, folder_id)
    by_uid = {it.data["UID"]: it for it in existing if it.data.get("UID")}
    by_identity: dict[tuple[str, ...] | None, list[Any]] = {}
    if cls == "Contacts":
        for it in existing:
            by_identity.setdefault(contact_identity(it.data), []).append(it)
        by_identity.pop(None, None)
    taken: set[str] = set()
    ops: list[Op] = []
    for data in items:
        uid = data.get("UID")
        old = by_uid.get(uid) if uid else None
        if old is None and cls == "Contacts":
            # No UID match: the same name and first e-mail, unless both carry a UID.
            old = next((it for it in by_identity.get(contact_identity(data), [])
                        if it.server_id not in taken and not (uid and it.data.get("UID"))),
                       None)
        if old is None or old.server_id in taken:
            ops.append(Op(kind="add", data=data, cls=cls))
            counts.added += 1
            continue
        taken.add(old.server_id)
        if old.data == data:
            counts.unchanged += 1
            continue
        ops.append(Op(kind="change", server_id=old.server_id, data=data, cls=cls))
        counts.updated += 1
    try:
        for i in range(0, len(ops), BATCH):
            results = await store.apply(user, folder_id, ops[i:i + BATCH])
            failed = [r for r in results if not r.ok]
            if failed:
                raise ImportFailed(f"the store refused {len(failed)} {cls} item(s): "
                                   f"{failed[0].error}")
    finally:
        if ops and announce is not None:
            # wake the devices waiting on this folder, on every running easync node
            await announce([folder_id])


async def _folder(store: Any, user: Any, cls: str, folder_id: str | None,
                  folders: list[Any]) -> str:
    if folder_id is not None:
        folder = next((f for f in folders if f.server_id == folder_id), None)
        if folder is None:
            raise ImportFailed(f"user {user.name} has no folder {folder_id!r}")
        if folder.cls == cls:
            return folder_id
    default = next((f for f in folders if f.cls == cls and f.is_default), None)
    if default is None:
        raise ImportFailed(f"user {user.name} has no default {cls} folder")
    return str(default.server_id)


_KINDS = {"Contacts": "contacts", "Calendar": "events", "Tasks": "tasks"}


def _check_folder(user: Any, path: str, folder_id: str | None, folders: list[Any],
                  classes: list[str], report: ImportReport) -> None:
    """``--folder`` must be a folder of a kind the file holds (else nothing is
    imported); items of the file's other kinds go to their default folders, said in a
    warning."""
    if folder_id is None:
        return
    folder = next(f for f in folders if f.server_id == folder_id)
    holds = " and ".join(_KINDS[c] for c in classes) or "no item"
    if folder.cls not in classes:
        raise ImportFailed(f"folder {folder_id} ({folder.name}) is a {folder.cls} folder "
                           f"and {path} holds {holds}: nothing imported")
    report.warnings.extend(
        f"{path} also holds {_KINDS[c]}: imported into the default {c} folder"
        for c in classes if c != folder.cls)


async def import_file(store: Any, user: Any, path: str, folder_id: str | None = None,
                      default_tz: str | None = None,
                      announce: Announce | None = None) -> ImportReport:
    """Import a .vcf or .ics file for ``user``; ``folder_id`` replaces the default folder
    of the class it holds (a folder of a class the file does not hold: ``ImportFailed``,
    nothing imported).  ``announce`` is called with the folders written, to wake
    the devices waiting on them on every running node."""
    text = read_text(path)
    kind = _kind(text, path)
    report = ImportReport()
    folders = await store.list_folders(user)
    if folder_id is not None and not any(f.server_id == folder_id for f in folders):
        raise ImportFailed(f"user {user.name} has no folder {folder_id!r}")
    if kind == "vcard":
        contacts = []
        try:
            cards, skipped = read_cards(text)
        except VCardError as e:
            raise ImportFailed(str(e)) from None
        report.warnings.extend(skipped)
        for props in cards:
            data, warnings = card_to_contact(props)
            name = data.get("FileAs") or data.get("Email1Address") or "(no name)"
            report.warnings.extend(f"contact {name}: {w}" for w in warnings)
            contacts.append(data)
        if not contacts:
            raise ImportFailed(f"{path}: no vCard found")
        _check_folder(user, path, folder_id, folders, ["Contacts"], report)
        target = await _folder(store, user, "Contacts", folder_id, folders)
        await _write(store, user, target, "Contacts", contacts, report.contacts,
                     announce)
        return report
    try:
        events, tasks, warnings = parse_icalendar(text, default_tz, user.email)
    except ICalendarError as e:
        raise ImportFailed(str(e)) from None
    report.warnings.extend(warnings)
    _check_folder(user, path, folder_id, folders,
                  ["Calendar"] * bool(events) + ["Tasks"] * bool(tasks), report)
    if events:
        target = await _folder(store, user, "Calendar", folder_id, folders)
        await _write(store, user, target, "Calendar", events, report.events,
                     announce)
    if tasks:
        target = await _folder(store, user, "Tasks", folder_id, folders)
        await _write(store, user, target, "Tasks", tasks, report.tasks,
                     announce)
    return report
