"""Issue #10 point 2, end to end: ``twistd easync`` started on a database written before
schema version 5 fills the lookup index in the background, then answers
ResolveRecipients (MS-ASCMD 2.2.1.15) and the GAL Search (MS-ASCMD 2.2.1.16) over
HTTPS from it, by prefix of a word as Exchange's ANR does (no substring match).
Requests and answers go through libwbxml, an independent codec.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import bcrypt
import needs
import pytest
from easync_server import RunningServer, wait_for
from rawclient import Node, RawDevice

from backends.sql.engines import SqliteEngine
from backends.sql.migrations import migrate
from easync.model import DEFAULT_FOLDERS

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "Look-up-Pa55"
OLD_CONTACTS = 300


def old_database(path: Path) -> None:
    """A database as easync left it before schema 5: two users, contacts, no tokens."""
    conn = sqlite3.connect(path)
    migrate(SqliteEngine(str(path)), conn, time.time(), target=3)
    conn.commit()
    pw = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    for name, extra in (("lena", {}), ("olga", {"display_name": "Olga Orlova"})):
        conn.execute("INSERT INTO users (name, email, password_hash, activesync, extra)"
                     " VALUES (?, ?, ?, 1, ?)",
                     (name, f"{name}@example.org", pw, json.dumps(extra)))
    (uid,) = conn.execute("SELECT id FROM users WHERE name = 'lena'").fetchone()
    for ftype, fname in DEFAULT_FOLDERS:
        conn.execute("INSERT INTO folders (user_id, parent_id, name, type) VALUES (?, '0', ?, ?)",
                     (uid, fname, ftype))
    (fid,) = conn.execute("SELECT id FROM folders WHERE user_id = ? AND type = 9",
                          (uid,)).fetchone()
    rows = [{"FirstName": "Ada", "LastName": "Lovelace", "Email1Address": "ada@example.org"}]
    rows += [{"FirstName": f"Person{n}", "LastName": "Filler",
              "Email1Address": f"p{n}@example.org"} for n in range(OLD_CONTACTS - 1)]
    for n, data in enumerate(rows, 1):
        conn.execute("INSERT INTO items (user_id, folder_id, cls, data, modseq, created_modseq)"
                     " VALUES (?, ?, 'Contacts', ?, ?, ?)", (uid, fid, json.dumps(data), n, n))
        conn.execute("INSERT INTO contact_emails (item_id, user_id, email)"
                     " VALUES (last_insert_rowid(), ?, ?)", (uid, data["Email1Address"]))
    conn.execute("UPDATE users SET modseq = ? WHERE id = ?", (len(rows), uid))
    conn.commit()
    conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("lookups")
    old_database(work / "easync.sqlite")
    srv = RunningServer(work).start()
    yield srv
    srv.stop()


def resolve(dev: RawDevice, *tos: str) -> list[Node]:
    xml = ('<ResolveRecipients xmlns="ResolveRecipients:">'
           + "".join(f"<To>{t}</To>" for t in tos) + "</ResolveRecipients>")
    r = dev.call("ResolveRecipients", xml)
    assert r is not None and r.text_of("ResolveRecipients:Status") == "1"
    return list(r.iter("ResolveRecipients:Response"))


def gal(dev: RawDevice, query: str) -> Node:
    r = dev.call("Search", f'<Search xmlns="Search:"><Store><Name>GAL</Name>'
                 f'<Query>{query}</Query><Options><Range>0-9</Range></Options>'
                 f'</Store></Search>')
    assert r is not None
    store = r.find("Search:Response/Search:Store")
    assert store is not None and store.text_of("Search:Status") == "1"
    return store


def test_an_upgraded_database_resolves_by_prefix_over_https(server: RunningServer) -> None:
    dev = RawDevice(server.url, "lena", PASSWORD, "lookup1")
    dev.provision()

    def status_of(to: str) -> str | None:
        return resolve(dev, to)[0].text_of("ResolveRecipients:Status")

    # the old contacts are found once the background backfill has reached them
    wait_for(lambda: status_of("love") == "1", timeout=20)
    wait_for(lambda: status_of(f"Person{OLD_CONTACTS - 2}") == "1", timeout=20)
    assert "backfill of older contacts and users done" in wait_for(
        lambda: "backfill of" in server.log_text() and server.log_text())

    love, ace, addr, many, olga = resolve(dev, "love", "ace", "ADA@example.org", "filler",
                                          "Olga O")
    rec = love.find("ResolveRecipients:Recipient")
    assert rec is not None
    assert rec.text_of("ResolveRecipients:Type") == "2"
    assert rec.text_of("ResolveRecipients:DisplayName") == "Ada Lovelace"
    assert rec.text_of("ResolveRecipients:EmailAddress") == "ada@example.org"
    assert ace.text_of("ResolveRecipients:Status") == "4"       # a substring no longer
    assert addr.text_of("ResolveRecipients:Status") == "1"
    assert many.text_of("ResolveRecipients:Status") == "3"      # 299 fillers, cut to 19
    assert many.text_of("ResolveRecipients:RecipientCount") == "19"
    assert olga.text_of("ResolveRecipients:Status") == "1"
    assert olga.text_of("ResolveRecipients:Recipient/ResolveRecipients:Type") == "1"

    store = gal(dev, "orl")
    assert store.text_of("Search:Total") == "1"     # (libwbxml spells the GAL page "Gal")
    assert store.text_of("Search:Result/Search:Properties/Gal:DisplayName") == "Olga Orlova"
    assert gal(dev, "example.org").text_of("Search:Total") == "0"
    assert gal(dev, "o").text_of("Search:Range") == "0-0"
    assert "Traceback" not in server.log_text()
