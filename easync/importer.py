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

A vCard file is streamed: read line by line, a few hundred cards parsed at a time, each
contact spooled to a temporary file as JSON; only when the whole file has been read
without error are the contacts matched and written, ``BATCH`` at a time.  The folder's
items are indexed by UID, identity and a digest of their data (not kept whole).  So
memory stays bounded whatever the size of the file and of the folder, and a file that
turns out unreadable at its end writes nothing.  An iCalendar file likewise, after a
first look through it for the series whose overrides must be read with them
(``icalendar_reader.icalendar_parts``).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from easync.i18n import N_, _, ngettext
from easync.items.icalendar_reader import ICalendarError, icalendar_parts
from easync.items.vcard import VCardError, card_chunks, card_to_contact, contact_identity
from easync.model import Op

BATCH = 200                     # items per store.apply call
CARDS_PER_READ = 500            # vCards parsed at a time

#: ``progress(stage, done, total)``: "reading" (bytes of the file) or "writing"
#: (items matched and written), called now and then (an import on a terminal shows it)
Progress = Callable[[str, int, int], None]


class ImportFailed(Exception):
    """The file cannot be imported at all (unreadable, unknown format, bad folder)."""


#: the folder classes an import writes, by name (``_(...)`` in the reader's language)
FOLDER_CLASSES = {"Contacts": N_("Contacts"), "Calendar": N_("Calendar"),
                  "Tasks": N_("Tasks")}


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
        """``imported 12 contacts, 3 events, 1 task (2 updated); 1 warning``, in the
        language in force."""
        totals = (
            (self.contacts.total, ngettext("{n} contact", "{n} contacts",
                                           self.contacts.total)),
            (self.events.total, ngettext("{n} event", "{n} events", self.events.total)),
            (self.tasks.total, ngettext("{n} task", "{n} tasks", self.tasks.total)))
        parts = [form.format(n=n) for n, form in totals if n]
        text = _("imported {items}").format(items=", ".join(parts)) if parts else \
            _("imported nothing")
        updated = sum(c.updated for c in (self.contacts, self.events, self.tasks))
        unchanged = sum(c.unchanged for c in (self.contacts, self.events, self.tasks))
        detail = [ngettext("{n} updated", "{n} updated", updated).format(n=updated)
                  ] if updated else []
        if unchanged:
            detail.append(ngettext("{n} unchanged", "{n} unchanged", unchanged).format(
                n=unchanged))
        if detail:
            text += f" ({', '.join(detail)})"
        if self.warnings:
            text += "; " + ngettext("{n} warning", "{n} warnings", len(self.warnings)
                                    ).format(n=len(self.warnings))
        return text


def read_text(path: str) -> str:
    """A file's text: UTF-8 (with or without BOM), else Windows-1252 (old vCard 2.1)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ImportFailed(_("cannot read {path}: {reason}").format(
            path=path, reason=e.strerror)) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _encoding(path: str) -> str:
    """``read_text``'s choice of encoding, made by reading the file in blocks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "cp1252"
    except OSError as e:
        raise ImportFailed(_("cannot read {path}: {reason}").format(
            path=path, reason=e.strerror)) from None
    return "utf-8-sig"


def read_lines(path: str, progress: Progress | None = None) -> Iterator[str]:
    """The lines of a text file as ``read_text`` decodes it, one at a time, without
    their line ends (LF, CR LF, CR CR LF or a bare CR, as ``easync.items.vcard``
    takes them)."""
    encoding = _encoding(path)
    size = os.path.getsize(path)
    step = max(size // 100, 1 << 16)
    shown = 0
    try:
        with open(path, "rb") as f:
            for n, raw in enumerate(f):
                text = raw.decode(encoding, errors="replace")
                if n == 0:
                    text = text.removeprefix("\ufeff")
                text = text.removesuffix("\n").rstrip("\r") if text.endswith("\n") \
                    else text
                yield from text.split("\r")
                if progress is not None and f.tell() - shown >= step:
                    shown = f.tell()
                    progress("reading", shown, size)
    except OSError as e:
        raise ImportFailed(_("cannot read {path}: {reason}").format(
            path=path, reason=e.strerror)) from None


def _head(path: str) -> str:
    """The first characters of a file, for ``_kind``."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8192)
    except OSError as e:
        raise ImportFailed(_("cannot read {path}: {reason}").format(
            path=path, reason=e.strerror)) from None
    return raw.decode("utf-8-sig", errors="replace")


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
    raise ImportFailed(_("{path}: neither a vCard nor an iCalendar file").format(path=path))


async def live_items(store: Any, user: Any, folder_id: str, batch: int = 1000
                     ) -> AsyncIterator[list[Any]]:
    """The live items of a folder, ``batch`` at a time (one pass over its change feed)."""
    cursor = 0
    while True:
        page = await store.changes_since(user, folder_id, cursor, batch)
        items = [c.item for c in page.changes if not c.deleted and c.item is not None]
        if items:
            yield items
        if not page.more or page.high == cursor:
            return
        cursor = page.high


async def _existing(store: Any, user: Any, folder_id: str) -> list[Any]:
    """The live items of a folder, in one list."""
    return [it async for items in live_items(store, user, folder_id) for it in items]


def _digest(data: dict[str, Any]) -> bytes:
    """Equal for equal item dicts (JSON-able: what stores keep)."""
    text = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


@dataclass(slots=True)
class _Known:
    """What an import needs of an item already in the folder."""

    server_id: str
    has_uid: bool
    digest: bytes


def _identity_key(data: dict[str, Any]) -> bytes | None:
    """A contact's ``contact_identity`` as a short digest (None: nothing to go by)."""
    identity = contact_identity(data)
    if identity is None:
        return None
    return hashlib.blake2b("\x00".join(identity).encode("utf-8"), digest_size=16).digest()


async def _index(store: Any, user: Any, folder_id: str, cls: str
                 ) -> tuple[dict[str, _Known], dict[bytes, list[_Known]]]:
    """The folder's items by UID and (contacts) by identity."""
    by_uid: dict[str, _Known] = {}
    by_identity: dict[bytes, list[_Known]] = {}
    async for items in live_items(store, user, folder_id):
        for it in items:
            uid = it.data.get("UID")
            known = _Known(str(it.server_id), bool(uid), _digest(it.data))
            if uid:
                by_uid.setdefault(uid, known)
            if cls == "Contacts":
                identity = _identity_key(it.data)
                if identity is not None:
                    by_identity.setdefault(identity, []).append(known)
    return by_uid, by_identity


# Tells the running servers that these folders changed (easync.admin gives PostgreSQL's
# NOTIFY or the SQLite change log: the store's own machinery, which this module does not
# import).
Announce = Callable[[list[str]], Awaitable[object]]


async def _write(store: Any, user: Any, folder_id: str, cls: str,
                 items: Iterable[dict[str, Any]], counts: Counts,
                 announce: Announce | None = None, progress: Progress | None = None,
                 total: int = 0) -> None:
    by_uid, by_identity = await _index(store, user, folder_id, cls)
    taken: set[str] = set()
    ops: list[Op] = []
    written = done = 0

    async def flush() -> None:
        nonlocal written
        if not ops:
            return
        written += len(ops)
        results = await store.apply(user, folder_id, ops)
        failed = [r for r in results if not r.ok]
        if failed:
            raise ImportFailed(ngettext(
                "the store refused {n} {kind} item(s): {error}",
                "the store refused {n} {kind} item(s): {error}", len(failed)).format(
                    n=len(failed), kind=_(FOLDER_CLASSES[cls]), error=failed[0].error))
        ops.clear()

    try:
        for data in items:
            done += 1
            uid = data.get("UID")
            old = by_uid.get(uid) if uid else None
            if old is None and cls == "Contacts":
                # No UID match: the same name and first e-mail, unless both carry a UID.
                identity = _identity_key(data)
                same = by_identity.get(identity, []) if identity is not None else []
                old = next((k for k in same if k.server_id not in taken
                            and not (uid and k.has_uid)), None)
            if old is None or old.server_id in taken:
                ops.append(Op(kind="add", data=data, cls=cls))
                counts.added += 1
            else:
                taken.add(old.server_id)
                if old.digest == _digest(data):
                    counts.unchanged += 1
                else:
                    ops.append(Op(kind="change", server_id=old.server_id, data=data,
                                  cls=cls))
                    counts.updated += 1
            if len(ops) >= BATCH:
                await flush()
                if progress is not None:
                    progress("writing", done, total)
        await flush()
        if progress is not None:
            progress("writing", done, total)
    finally:
        if written and announce is not None:
            # wake the devices waiting on this folder, on every running easync node
            await announce([folder_id])


async def _folder(store: Any, user: Any, cls: str, folder_id: str | None,
                  folders: list[Any]) -> str:
    if folder_id is not None:
        folder = next((f for f in folders if f.server_id == folder_id), None)
        if folder is None:
            raise ImportFailed(_("user {name} has no folder {folder!r}").format(
                name=user.name, folder=folder_id))
        if folder.cls == cls:
            return folder_id
    default = next((f for f in folders if f.cls == cls and f.is_default), None)
    if default is None:
        raise ImportFailed(_("user {name} has no default {kind} folder").format(
            name=user.name, kind=_(FOLDER_CLASSES[cls])))
    return str(default.server_id)


def _spool_contacts(path: str, report: ImportReport, spool: IO[str],
                    progress: Progress | None) -> int:
    """Read the vCard file, a part at a time, into ``spool`` (one JSON contact a line);
    returns the number of contacts."""
    count = 0
    skipped: dict[str, None] = {}              # each skipped-line warning once
    try:
        for cards, lines in card_chunks(read_lines(path, progress), CARDS_PER_READ):
            skipped.update(dict.fromkeys(lines))
            for props in cards:
                data, warnings = card_to_contact(props)
                name = data.get("FileAs") or data.get("Email1Address") or _("(no name)")
                report.warnings.extend(_("contact {name}: {warning}").format(
                    name=name, warning=w) for w in warnings)
                spool.write(json.dumps(data, ensure_ascii=False) + "\n")
                count += 1
    except VCardError as e:
        raise ImportFailed(str(e)) from None
    report.warnings[:0] = list(skipped)
    return count


def _spool_calendar(path: str, default_tz: str | None, user_email: str | None,
                    report: ImportReport, events: IO[str], tasks: IO[str],
                    progress: Progress | None) -> tuple[int, int]:
    """Read the iCalendar file, a part at a time, into the two spools; returns the
    numbers of events and tasks."""
    counts = [0, 0]
    warnings: dict[str, None] = {}               # each warning once
    try:
        for part in icalendar_parts(lambda: read_lines(path, progress), default_tz,
                                    user_email):
            for i, (items, spool) in enumerate(((part[0], events), (part[1], tasks))):
                spool.writelines(json.dumps(data, ensure_ascii=False) + "\n"
                                 for data in items)
                counts[i] += len(items)
            warnings.update(dict.fromkeys(part[2]))
    except ICalendarError as e:
        raise ImportFailed(str(e)) from None
    report.warnings.extend(warnings)
    return counts[0], counts[1]


_KINDS = {"Contacts": N_("contacts"), "Calendar": N_("events"), "Tasks": N_("tasks")}


def _check_folder(user: Any, path: str, folder_id: str | None, folders: list[Any],
                  classes: list[str], report: ImportReport) -> None:
    """``--folder`` must be a folder of a kind the file holds (else nothing is
    imported); items of the file's other kinds go to their default folders, said in a
    warning."""
    if folder_id is None:
        return
    folder = next(f for f in folders if f.server_id == folder_id)
    holds = _(" and ").join(_(_KINDS[c]) for c in classes) or _("no item")
    if folder.cls not in classes:
        raise ImportFailed(_("folder {folder} ({name}) is a {kind} folder and {path} holds "
                             "{holds}: nothing imported").format(
            folder=folder_id, name=folder.name, kind=_(FOLDER_CLASSES.get(
                folder.cls, folder.cls)), path=path, holds=holds))
    report.warnings.extend(
        _("{path} also holds {items}: imported into the default {kind} folder").format(
            path=path, items=_(_KINDS[c]), kind=_(FOLDER_CLASSES[c]))
        for c in classes if c != folder.cls)


async def import_file(store: Any, user: Any, path: str, folder_id: str | None = None,
                      default_tz: str | None = None, announce: Announce | None = None,
                      progress: Progress | None = None) -> ImportReport:
    """Import a .vcf or .ics file for ``user``; ``folder_id`` replaces the default folder
    of the class it holds (a folder of a class the file does not hold: ``ImportFailed``,
    nothing imported).  ``announce`` is called with the folders written, to wake the
    devices waiting on them on every running node; ``progress`` now and then with how
    far the import is."""
    kind = _kind(_head(path), path)
    report = ImportReport()
    folders = await store.list_folders(user)
    if folder_id is not None and not any(f.server_id == folder_id for f in folders):
        raise ImportFailed(_("user {name} has no folder {folder!r}").format(
            name=user.name, folder=folder_id))
    shared = next((f for f in folders if f.server_id == folder_id and f.read_only), None)
    if shared is not None:
        raise ImportFailed(_("folder {folder!r} is shared with {name} read-only: import "
                             "into it as its owner, {owner}").format(
                                 folder=folder_id, name=user.name, owner=shared.owner))
    if kind == "vcard":
        with tempfile.TemporaryFile("w+", encoding="utf-8", prefix="easync-import-") as spool:
            count = _spool_contacts(path, report, spool, progress)
            if not count:
                raise ImportFailed(_("{path}: no vCard found").format(path=path))
            _check_folder(user, path, folder_id, folders, ["Contacts"], report)
            target = await _folder(store, user, "Contacts", folder_id, folders)
            spool.seek(0)
            await _write(store, user, target, "Contacts", map(json.loads, spool),
                         report.contacts, announce, progress, count)
        return report
    with tempfile.TemporaryFile("w+", encoding="utf-8", prefix="easync-import-") as events, \
            tempfile.TemporaryFile("w+", encoding="utf-8", prefix="easync-import-") as tasks:
        counts = _spool_calendar(path, default_tz, user.email, report, events, tasks,
                                 progress)
        _check_folder(user, path, folder_id, folders,
                      ["Calendar"] * bool(counts[0]) + ["Tasks"] * bool(counts[1]), report)
        for spool, cls, n, into in ((events, "Calendar", counts[0], report.events),
                                    (tasks, "Tasks", counts[1], report.tasks)):
            if n:
                target = await _folder(store, user, cls, folder_id, folders)
                spool.seek(0)
                await _write(store, user, target, cls, map(json.loads, spool), into,
                             announce, progress, n)
    return report
