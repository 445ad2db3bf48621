"""Issue 13 point 7: ``easync-admin export`` writes what ``easync-admin import`` reads
back identically.

The corpus (tests/data: vCard 2.1/3.0/4.0 with photos, Apple labels, escaped commas; an
iCalendar file with zones, all-day events, series with EXDATEs and moved occurrences,
meetings, tasks) is imported for one user, exported, imported for a fresh user, and
exported again: the two users' items are the same field by field, and the two exports
are the same text.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest_twisted
from easync_server import _env

from easync import export, importer

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"


async def _items(store: Any, user: Any) -> dict[str, dict[str, Any]]:
    """Every item of the user's default folders, keyed by class and UID (or FileAs)."""
    out = {}
    for folder in await store.list_folders(user):
        if folder.cls not in export.EXTENSIONS:
            continue
        for it in await importer._existing(store, user, folder.server_id):
            key = it.data.get("UID") or it.data.get("FileAs")
            assert f"{folder.cls}:{key}" not in out
            out[f"{folder.cls}:{key}"] = it.data
    return out


def _read(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text("utf-8") for p in sorted(directory.iterdir())}


@pytest_twisted.ensureDeferred
async def test_export_import_round_trip(tmp_path: Path) -> None:
    from easync.testing import MemoryStore

    store = MemoryStore()
    first = await store.add_user("mario", None, "mario@example.it", True)
    for name in ("contacts.vcf", "calendar.ics"):
        await importer.import_file(store, first, str(DATA / name))
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    done = await export.export_user(store, first, str(one), io.StringIO())
    assert sorted((d.cls, d.count) for d in done) == [
        ("Calendar", 10), ("Contacts", 5), ("Tasks", 2)]
    assert all(not d.skipped for d in done), [d.skipped for d in done]
    # RFC 5545 3.2.19: every TZID a property names has its VTIMEZONE in the file
    for name in ("calendar.ics", "tasks.ics"):
        text = (one / name).read_bytes().decode("utf-8").replace("\r\n ", "")
        named = set(re.findall(r";TZID=([^:;]+)[:;]", text))
        defined = set(re.findall(r"BEGIN:VTIMEZONE\r\nTZID:([^\r]+)\r\n", text))
        assert named and named == defined, (name, named, defined)

    # the same person moved to a fresh account (the same address: meetings they
    # organize stay theirs, MeetingStatus 1)
    second = await store.add_user("mario2", None, "mario@example.it", True)
    for name in ("contacts.vcf", "calendar.ics", "tasks.ics"):
        report = await importer.import_file(store, second, str(one / name))
        assert not report.warnings, report.warnings
    before, after = await _items(store, first), await _items(store, second)
    assert len(before) == 17
    for key, data in before.items():
        assert after[key] == data, key
    assert after.keys() == before.keys()

    await export.export_user(store, second, str(two), io.StringIO())
    assert _read(two) == _read(one)


def test_export_on_the_command_line(tmp_path: Path) -> None:
    env = dict(_env(), EASYNC_BCRYPT_ROUNDS="4")            # in English

    def admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "easync.admin", "--db",
                               f"sqlite:///{tmp_path}/e.sqlite", *args], input=stdin,
                              text=True, capture_output=True, env=env, timeout=60,
                              check=False)

    assert admin("init").returncode == 0
    assert admin("user", "add", "anna", "--password-stdin", stdin="x\n").returncode == 0
    assert admin("import", "anna", str(DATA / "contacts.vcf")).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    res = admin("export", "anna", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert f"exported 5 Contacts item(s) to {out}/contacts.vcf" in res.stdout
    assert sorted(p.name for p in out.iterdir()) == ["calendar.ics", "contacts.vcf",
                                                     "tasks.ics"]
    # one folder to standard output (the report on stderr): the same text as the file
    import sqlite3

    with sqlite3.connect(tmp_path / "e.sqlite") as conn:
        [(contacts_id,)] = conn.execute("SELECT id FROM folders WHERE type = 9").fetchall()
    one = admin("export", "anna", "--folder", str(contacts_id))
    assert one.returncode == 0, one.stderr
    # (text=True reads CRLF as LF)
    assert one.stdout == (out / "contacts.vcf").read_text("utf-8")
    assert one.stderr == "exported 5 Contacts item(s) to -\n"
    folders = admin("export", "anna")
    assert folders.returncode == 1
    assert folders.stderr == ("easync-admin: error: give --folder to export to standard "
                              "output, or --out DIR\n")
    bad = admin("export", "anna", "--folder", "nope")
    assert bad.returncode == 1 and "no Contacts, Calendar or Tasks folder 'nope'" in bad.stderr


def test_what_a_file_cannot_carry_is_reported() -> None:
    text, lost = export.contact_to_vcard({
        "FirstName": "Rita", "Alias": "rita", "Body": {"Type": 2, "Data": "<b>ciao</b>"},
        "Email1Address": "rita@example.it"})
    assert lost == ["Alias", "Body (not plain text)"]
    assert "NOTE:<b>ciao</b>\r\n" in text and "rita@example.it" in text
    _todo, lost = export.task_to_vtodo({"Subject": "x", "ReminderSet": 1,
                                        "ReminderTime": "2026-01-05T07:30:00.000Z"})
    assert lost == ["ReminderTime (a task without start or due date)"]
    _events, lost = export.event_to_vevents(
        {"StartTime": "20260105T083000Z", "EndTime": "20260105T090000Z",
         "Recurrence": {"Type": 4, "Interval": 1}}, export.ZoneInfo("UTC"))
    assert lost == ["Recurrence"]
