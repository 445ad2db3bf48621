"""Issue #14 point 2 end to end: nothing lost to a phone, through a real ``twistd easync``
(TLS, SQLite), raw WBXML devices (libwbxml) and pyactivesync.

* A device's Sync Delete (MS-ASCMD 2.2.3.42.2) is kept: ``easync-admin deleted list``
  shows it, with the device and the contact's name.
* A Sync that deletes more than --mass-delete-share of a folder (and at least
  --mass-delete-min items) gives a warning log line, an audit row (``easync-admin
  audit``) and ``easync_mass_deletes_total`` on /metrics; a small delete gives none.
* ``easync-admin deleted restore NAME --device A --since T`` re-creates what A deleted
  since T: device B, holding a Ping (MS-ASCMD 2.2.3.135: Status 2 when a folder
  changed), is woken and its next Sync gets the contacts back as Adds (MS-ASCMD
  2.2.3.7.2); a second restore makes nothing more.
* pyactivesync deletes with DeletesAsMoves (MS-ASCMD 2.2.3.48): the server has no mail
  and its Deleted Items holds no contacts, so the delete is a delete, kept the same way;
  the account page's JSON API (CSRF token, session cookie) lists and restores it.
* Bad input (unknown id, another user's id, a bad time) is refused with a message and
  changes nothing.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import needs
import pytest
import requests
from easync_server import RunningServer, free_port, read_metrics, wait_for
from rawclient import Node, RawDevice

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "deleted-Pa55word"


def commands(*cmds: str) -> str:
    return "<GetChanges>0</GetChanges><Commands>" + "".join(cmds) + "</Commands>"


def add(client_id: str, first: str, last: str) -> str:
    return (f"<Add><ClientId>{client_id}</ClientId><ApplicationData>"
            f"<K:FirstName>{first}</K:FirstName><K:LastName>{last}</K:LastName>"
            "</ApplicationData></Add>")


def delete(sid: str) -> str:
    return f"<Delete><ServerId>{sid}</ServerId></Delete>"


def collection(r: Node | None) -> Node:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None and coll.text_of("AirSync:Status") == "1", r
    return coll


def names(items: dict[str, Node]) -> set[str]:
    return {f"{n.text_of('Contacts:FirstName')} {n.text_of('Contacts:LastName')}"
            for n in items.values()}


class PingThread(threading.Thread):
    """A raw Ping on one folder, in a thread (it blocks until answered)."""

    def __init__(self, dev: RawDevice, folder: str, heartbeat: int) -> None:
        super().__init__(daemon=True)
        self.dev, self.folder, self.heartbeat = dev, folder, heartbeat
        self.result: Node | None = None
        self.error: BaseException | None = None
        self.answered_at = 0.0

    def run(self) -> None:
        try:
            self.result = self.dev.call(
                "Ping", f'<Ping xmlns="Ping:"><HeartbeatInterval>{self.heartbeat}'
                        f'</HeartbeatInterval><Folders><Folder><Id>{self.folder}</Id>'
                        '<Class>Contacts</Class></Folder></Folders></Ping>')
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.answered_at = time.monotonic()


@pytest.fixture
def site(tmp_path: Path) -> Any:
    metrics_port = free_port()
    srv = RunningServer(tmp_path, [
        "--heartbeat-min", "2", "--mass-delete-share", "0.5", "--mass-delete-min", "10",
        "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1"]).start()
    srv.metrics_port = metrics_port  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()
    log = srv.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def held_pings(srv: RunningServer) -> float:
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"  # type: ignore[attr-defined]
    return read_metrics(url, 5).get('easync_held_requests{command="Ping"}', 0.0)


def mass_deletes(srv: RunningServer) -> float:
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"  # type: ignore[attr-defined]
    return read_metrics(url, 5).get("easync_mass_deletes_total", -1.0)


def deleted_rows(srv: RunningServer, *args: str) -> list[list[str]]:
    out = srv.admin("deleted", "list", *args).stdout.splitlines()
    assert out[0].split()[:3] == ["ID", "DELETED", "DEVICE"], out
    return [re.split(r"\s{2,}", line) for line in out[1:]]


def test_kept_listed_alarm_and_restore_wakes_the_other_device(site: RunningServer) -> None:
    srv = site
    srv.add_user("rosa", PASSWORD)
    srv.add_user("bruno", PASSWORD)
    a = RawDevice(srv.url, "rosa", PASSWORD, "PHONEA")
    b = RawDevice(srv.url, "rosa", PASSWORD, "TABLETB")
    for dev in (a, b):
        dev.provision()
    coll = a.folders()["Contacts"]
    b.folders()
    ka, kb = a.initial(coll), b.initial(coll)
    r = a.sync(coll, ka, commands(*(add(f"c{i}", f"Name{i}", f"Family{i}")
                                    for i in range(20))))
    c = collection(r)
    ka = c.text_of("AirSync:SyncKey") or ka
    sids = {x.text_of("AirSync:ClientId"): x.text_of("AirSync:ServerId") or ""
            for x in c.find("AirSync:Responses").children}
    assert len(sids) == 20
    kb, held, _gone, _ = b.pull(coll, kb)
    assert len(held) == 20

    # A deletes 3 of 20: kept and listed, no alarm (3 < --mass-delete-min)
    collection(a.sync(coll, ka, commands(*(delete(sids[f"c{i}"]) for i in range(3)))))
    ka, _h, _d, _ = a.pull(coll, ka)
    rows = deleted_rows(srv, "rosa")
    assert len(rows) == 3
    assert {(row[2], row[4], row[5]) for row in rows} == {
        ("PHONEA", "Contacts", f"Name{i} Family{i}") for i in range(3)}
    assert mass_deletes(srv) == 0
    assert "mass delete" not in srv.log_text()
    assert deleted_rows(srv, "bruno") == []         # nothing of another user
    time.sleep(1.2)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time()))
    time.sleep(1.0)

    # A deletes 15 of the 17 left in one Sync: the alarm
    r = a.sync(coll, ka, commands(*(delete(sids[f"c{i}"]) for i in range(3, 18))))
    ka = collection(r).text_of("AirSync:SyncKey") or ka
    wait_for(lambda: mass_deletes(srv) == 1, timeout=5)
    line = next(x for x in srv.log_text().splitlines() if "mass delete" in x)
    assert "PHONEA" in line and "rosa" in line and "15 of 17" in line
    audit = srv.admin("audit", "rosa").stdout
    assert "mass-delete" in audit and "deleted 15 of 17" in audit
    assert len(deleted_rows(srv, "rosa")) == 18
    assert len(deleted_rows(srv, "rosa", "--device", "PHONEA", "--since", since)) == 15

    # B syncs the deletes, then holds a Ping; the admin restores A's deletes since T
    kb, held, gone, _ = b.pull(coll, kb)
    assert len(gone) == 18
    ping = PingThread(b, coll, 60)
    ping.start()
    wait_for(lambda: held_pings(srv) == 1, timeout=10)     # B holds its Ping now
    res = srv.admin("deleted", "restore", "rosa", "--device", "PHONEA", "--since", since)
    done = time.monotonic()
    assert "15 items restored" in res.stdout, res.stdout
    ping.join(15)
    assert ping.error is None and ping.result is not None
    assert ping.result.text_of("Ping:Status") == "2"      # MS-ASCMD 2.2.3.135: changes
    # SQLite: the server notices another process's write at its next poll (1 s)
    assert ping.answered_at - done < 2.5, ping.answered_at - done
    kb, held, gone, _ = b.pull(coll, kb)
    assert gone == []
    assert names(held) == {f"Name{i} Family{i}" for i in range(3, 18)}
    assert not set(held) & set(sids.values())             # new ServerIds
    # A gets them back too (an Add each), and nothing twice
    ka, held_a, _d, _ = a.pull(coll, ka)
    assert len(held_a) == 15

    # a second restore of the same makes nothing more; the 3 older ones stay listed
    res = srv.admin("deleted", "restore", "rosa", "--device", "PHONEA", "--since", since)
    assert "0 items restored" in res.stdout
    kb, held, _gone, _ = b.pull(coll, kb)
    assert held == {}
    rows = deleted_rows(srv, "rosa")
    assert len(rows) == 3

    # bad input: a clear error, nothing changed
    first = rows[0][0]
    bad = srv.admin("deleted", "restore", "rosa", "999999", check=False)
    assert bad.returncode == 1 and "no deleted item 999999" in bad.stderr
    bad = srv.admin("deleted", "restore", "bruno", first, check=False)
    assert bad.returncode == 1 and f"no deleted item {first}" in bad.stderr
    bad = srv.admin("deleted", "restore", "rosa", "--all-since", "yesterday", check=False)
    assert bad.returncode == 1 and "not a time" in bad.stderr
    bad = srv.admin("deleted", "list", "rosa", "--since", "soon", check=False)
    assert bad.returncode == 1 and "not a time" in bad.stderr
    bad = srv.admin("deleted", "restore", "rosa", check=False)
    assert bad.returncode == 1
    assert len(deleted_rows(srv, "rosa")) == 3
    kb, held, _gone, _ = b.pull(coll, kb)
    assert held == {}
    # an admin restore is in the audit log
    assert "deleted-restore" in srv.admin("audit", "rosa").stdout


class AccountApi:
    """The account page's JSON API over the server's TLS listener."""

    def __init__(self, srv: RunningServer) -> None:
        self.base = f"https://{srv.host}/account/api/"
        self.http = requests.Session()
        # the server's own certificate (given per request: an environment's
        # REQUESTS_CA_BUNDLE would win over the session's setting)
        self.verify = str(srv.workdir / "easync.pem")
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None, **params: str
             ) -> requests.Response:
        headers = {"X-CSRF-Token": self.csrf} if method == "POST" else {}
        return self.http.request(method, self.base + path, json=body, params=params,
                                 headers=headers, timeout=30, verify=self.verify)

    def login(self, user: str) -> None:
        self.csrf = self.call("GET", "session").json()["csrf_token"]
        r = self.call("POST", "login", {"username": user, "password": PASSWORD})
        assert r.status_code == 200, r.text
        self.csrf = r.json()["csrf_token"]


def test_pyactivesync_delete_restored_from_the_account_page(site: RunningServer) -> None:
    needs.importable("pyactivesync")
    from pyactivesync import Client, ContactChange
    from pyactivesync.models import Contact

    srv = site
    srv.add_user("lia", PASSWORD)
    srv.add_user("ugo", PASSWORD)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
        phone = Client(srv.host, "lia", PASSWORD, device_id="pyphone1", timeout=30)
        folder = {f.name: f.id for f in phone.list_folders()}["Contacts"]
        key = phone.sync_folder(folder, "0").sync_key
        key = phone.sync_folder(folder, key).sync_key
        made = phone.create_contact(folder, key, Contact(first_name="Carla",
                                                         last_name="Verdi"))
        assert made.status == "1"
        key = made.sync_key
        # pyactivesync asks DeletesAsMoves (MS-ASCMD 2.2.3.48) by default
        res = phone.apply_contact_changes(folder, key,
                                          [ContactChange(server_id=made.server_id,
                                                         delete=True)])
        key = res.sync_key
        got = phone.sync_folder(folder, key)
        key = got.sync_key
        assert got.added == []

        api = AccountApi(srv)
        api.login("lia")
        listed = api.call("GET", "deleted")
        assert listed.status_code == 200, listed.text
        rows = listed.json()["deleted"]
        assert [(r["device_id"], r["kind"], r["summary"]) for r in rows] == [
            ("pyphone1", "Contacts", "Carla Verdi")]
        kept_id = rows[0]["id"]

        # bad input first: no CSRF token, another user's list, a bad time, unknown id
        no_csrf = api.http.post(api.base + "deleted/restore", json={"ids": [kept_id]},
                                timeout=30, verify=api.verify)
        assert no_csrf.status_code == 403
        assert api.call("GET", "deleted", user="ugo").status_code == 403
        assert api.call("POST", "deleted/restore", {"since": "whenever"}).status_code == 400
        assert api.call("POST", "deleted/restore", {"ids": [kept_id + 1000]}
                        ).status_code == 404
        assert api.call("POST", "deleted/restore", {"ids": "all"}).status_code == 400
        other = AccountApi(srv)
        other.login("ugo")
        assert other.call("POST", "deleted/restore", {"ids": [kept_id]}).status_code == 404
        assert phone.sync_folder(folder, key).added == []

        done = api.call("POST", "deleted/restore", {"ids": [kept_id]})
        assert done.status_code == 200, done.text
        assert [r["summary"] for r in done.json()["restored"]] == ["Carla Verdi"]
        again = api.call("POST", "deleted/restore", {"ids": [kept_id]}).json()
        assert again["restored"] == [] and again["already_restored"] == [kept_id]
        got = phone.sync_folder(folder, key)
        assert [(it.fields.get("Contacts.FirstName"), it.fields.get("Contacts.LastName"))
                for it in got.added] == [("Carla", "Verdi")]
        assert api.call("GET", "deleted").json()["deleted"] == []
        phone.close()


def test_kept_items_expire_after_deleted_keep(tmp_path: Path) -> None:
    """--deleted-keep: the server's retention pass forgets kept deletes older than it
    (counted on /metrics); a restore of a forgotten id is an unknown id."""
    metrics_port = free_port()
    srv = RunningServer(tmp_path, [
        "--deleted-keep", "6", "--purge-interval", "0.3",
        "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1"]).start()
    try:
        srv.add_user("rosa", PASSWORD)
        a = RawDevice(srv.url, "rosa", PASSWORD, "PHONEA")
        a.provision()
        coll = a.folders()["Contacts"]
        ka = a.initial(coll)
        r = a.sync(coll, ka, commands(add("c1", "Old", "Contact")))
        c = collection(r)
        ka = c.text_of("AirSync:SyncKey") or ka
        sid = c.find("AirSync:Responses").children[0].text_of("AirSync:ServerId") or ""
        collection(a.sync(coll, ka, commands(delete(sid))))
        rows = deleted_rows(srv, "rosa")
        assert [row[5] for row in rows] == ["Old Contact"]
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_for(lambda: read_metrics(url, 5).get("easync_deleted_items_purged_total", 0)
                 >= 1, timeout=30)
        assert deleted_rows(srv, "rosa") == []
        bad = srv.admin("deleted", "restore", "rosa", rows[0][0], check=False)
        assert bad.returncode == 1 and "no deleted item" in bad.stderr
    finally:
        srv.stop()
    assert "Traceback" not in srv.log_text()
