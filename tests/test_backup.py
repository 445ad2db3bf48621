"""Issue 13 point 7: ``easync-admin backup`` while the server serves, and a restore seen
by a phone, end to end (``twistd easync`` on SQLite, raw WBXML through libwbxml).

After a restore the server's sync states are the ones of the backup: a phone that synced
since holds a newer SyncKey, which the restored state does not know.  Its next Sync gets
Status 3 (MS-ASCMD 2.2.3.177.17, "Invalid synchronization key"); the phone goes back to
SyncKey 0 and gets exactly the restored items, each once.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import needs
import pytest
from easync_server import RunningServer
from rawclient import RawDevice
from test_e2e_device_shapes import add, change, collection
from test_e2e_resend import holdings
from vcardgen import write_vcards

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "backup-Pa55"
USER = "rosa"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path / "site")
    srv.workdir.mkdir()
    try:
        srv.start()
        srv.add_user(USER, PASSWORD, email=f"{USER}@example.org")
        yield srv
    finally:
        srv.stop()


def phone(srv: RunningServer, device_id: str) -> tuple[RawDevice, str]:
    """A provisioned phone and its Contacts folder."""
    dev = RawDevice(srv.url, USER, PASSWORD, device_id)
    dev.provision()
    return dev, dev.folders()["Contacts"]


def first_names(db_file: Path) -> list[str]:
    """FirstName of every live contact in a database file (read with sqlite3, not
    with easync)."""
    with sqlite3.connect(db_file) as conn:
        rows = conn.execute("SELECT data FROM items WHERE deleted = 0").fetchall()
    import json

    return sorted(json.loads(r[0]).get("FirstName", "") for r in rows)


def test_backup_while_a_phone_syncs(server: RunningServer, tmp_path: Path) -> None:
    server.admin("import", USER, str(write_vcards(tmp_path / "base.vcf", 300)))
    dev, contacts = phone(server, "BACKUPPHONE1")
    key = dev.initial(contacts)
    held: dict[str, str] = {}
    key = holdings(dev, contacts, key, held)
    assert len(held) == 300

    acknowledged: list[str] = []            # names the server has answered for
    errors: list[BaseException] = []
    stop = threading.Event()

    def keep_adding() -> None:
        nonlocal key
        n = 0
        try:
            while not stop.is_set():
                key, _sid = add(dev, contacts, key, f"<K:FirstName>Nuovo{n}</K:FirstName>",
                                cid=f"n{n}")
                acknowledged.append(f"Nuovo{n}")
                n += 1
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    writer = threading.Thread(target=keep_adding)
    writer.start()
    copies = []
    try:
        for i in range(3):
            before = list(acknowledged)
            copy = tmp_path / f"copy{i}.sqlite"
            res = server.admin("backup", str(copy))
            after = list(acknowledged)
            assert f"to {copy}" in res.stdout
            copies.append((copy, before, after))
    finally:
        stop.set()
        writer.join(30)
    assert not errors, errors
    assert len(acknowledged) >= 3, "the phone did not sync while the backups ran"
    for copy, before, after in copies:
        # one self-contained file (no -wal beside it), whole and consistent, and
        # readable by its owner only (password hashes, every device's sync state)
        assert not Path(f"{copy}-wal").exists()
        assert copy.stat().st_mode & 0o777 == 0o600
        with sqlite3.connect(copy) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        names = first_names(copy)
        added = [n for n in names if n.startswith("Nuovo")]
        # the database at one instant between the command's start and its end:
        # everything answered before it, nothing the phone had not sent by its end
        assert set(before) <= set(added) <= set(after), (copy, len(before), len(after))
        assert len(names) == len(set(names)) == 300 + len(added)
    assert "Traceback" not in server.log_text()


def test_backup_refusals(server: RunningServer, tmp_path: Path) -> None:
    db_file = server.workdir / "easync.sqlite"
    res = server.admin("backup", str(db_file), check=False)
    assert (res.returncode, res.stderr.strip()) == (
        1, f"easync-admin: error: {db_file} is the database itself")
    res = server.admin("backup", str(tmp_path / "missing-dir" / "x.sqlite"), check=False)
    assert res.returncode == 1 and "no directory" in res.stderr
    assert "Traceback" not in res.stderr


def test_postgresql_backup_is_the_pg_dump_it_names(tmp_path: Path) -> None:
    """On PostgreSQL the command copies nothing: it names the pg_dump command (the
    URL's password left out), exit 1.  That command, run as printed, and the
    README's pg_restore command give back the database."""
    from pgtest import fresh_database, unreachable

    from backends.sql.backup import pg_restore_command

    needs.require(unreachable())
    needs.require(needs.tool("pg_dump", "postgresql-client"))
    needs.require(needs.tool("pg_restore", "postgresql-client"))
    dump = tmp_path / "easync.dump"
    with fresh_database("backup_src") as src, fresh_database("backup_dst") as dst:
        site = RunningServer(tmp_path)          # only its easync-admin, on PostgreSQL
        site.db = src
        site.add_user("livia", PASSWORD, email="livia@example.org")
        with_password = src.replace("postgres@", "postgres:s3cret@", 1)
        site.db = with_password
        res = site.admin("backup", str(dump), check=False)
        assert res.returncode == 1 and "s3cret" not in res.stderr + res.stdout
        printed = res.stderr.split("pg_dump (safe while the servers run): ", 1)[1].strip()
        assert printed == f"pg_dump --format=custom --file={dump} --dbname={src}"
        subprocess.run(printed, shell=True, check=True, capture_output=True, timeout=60)
        subprocess.run(pg_restore_command(dst, str(dump)), shell=True, check=True,
                       capture_output=True, timeout=60)
        site.db = dst
        listed = site.admin("user", "list").stdout
        assert "livia" in listed and "livia@example.org" in listed


def test_restore_gives_the_phone_status_3_and_a_clean_resync(
        server: RunningServer, tmp_path: Path) -> None:
    server.admin("import", USER, str(write_vcards(tmp_path / "base.vcf", 40)))
    dev, contacts = phone(server, "RESTOREPHONE1")
    key = dev.initial(contacts)
    held: dict[str, str] = {}
    key = holdings(dev, contacts, key, held)
    restored_names = sorted(held.values())
    assert len(restored_names) == 40

    backup = tmp_path / "nightly.sqlite"
    server.admin("backup", str(backup))

    # after the backup: the phone adds and changes, the server gets more
    key, sid = add(dev, contacts, key, "<K:FirstName>DopoBackup</K:FirstName>")
    held[sid] = "DopoBackup"
    some = next(iter(held))
    key = change(dev, contacts, key, some, "<K:FirstName>Cambiato</K:FirstName>")
    held[some] = "Cambiato"
    server.admin("import", USER, str(write_vcards(tmp_path / "more.vcf", 5, start=100)))
    key = holdings(dev, contacts, key, held)
    assert len(held) == 46

    # the restore as the README gives it: stop, copy back, drop the old WAL, start
    server.stop()
    db_file = server.workdir / "easync.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, db_file)
    server.start()

    # MS-ASCMD 2.2.3.177.17: the SyncKey the phone holds is unknown: Status 3
    r = dev.sync(contacts, key)
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "3", r
    # the phone starts again from SyncKey 0 with nothing held
    held = {}
    key = holdings(dev, contacts, dev.initial(contacts), held)
    assert sorted(held.values()) == restored_names
    # and syncs on normally from there
    key, sid = add(dev, contacts, key, "<K:FirstName>DopoRestore</K:FirstName>")
    r = dev.sync(contacts, key)
    assert r is None or collection(r).find("AirSync:Commands") is None
    assert "Traceback" not in server.log_text()
