"""Acceptance: the CRM's company address book with ``twistd easync --backend crm
--crm-shared-contacts all --workers 3`` on PostgreSQL (issue #14 point 1, CRM side).

* Phones of two users, connecting to any of the three processes, find the book (the
  processes may make its holder and load it at the same moment): each CRM contact is
  in it once.
* A change made in the CRM wakes the Pings held on the book by both users' phones on
  every worker (the one poller publishes to each reader through the PostgreSQL change
  hub; MS-ASCMD 2.2.1.13 Ping Status 2).

Skipped, with the reason, when PostgreSQL is not reachable (with CI=true: failed).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import easync_server
import needs
import pytest
import test_workers
from easync_server import free_ports, read_metrics
from pgtest import fresh_database, pg_server, unreachable
from test_e2e_crm import FakeCrmProcess

from easync.wbxml import E

PASSWORD = "crm-book-workers-Pa55"
POLL = 0.3
WORKERS = 3
BOOK = "Company address book"
USERS = ("dana", "erin")


class Cluster:
    def __init__(self, srv: Any, crm: FakeCrmProcess, url: str, metrics_port: int) -> None:
        self.srv, self.crm, self.url, self.metrics_port = srv, crm, url, metrics_port

    def held(self) -> list[int]:
        return [int(read_metrics(f"http://127.0.0.1:{self.metrics_port + i}/metrics",
                                 timeout=5)['easync_held_requests{command="Ping"}'])
                for i in range(WORKERS)]

    def send(self, user: str, cmd: str, device: str, body: Any) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=30)
        s.sendall(test_workers.request(self.srv.host, cmd, device, body, user=user,
                                       password=PASSWORD))
        return s

    def call(self, user: str, cmd: str, device: str, body: Any) -> Any:
        with self.send(user, cmd, device, body) as s:
            return test_workers.read_response(s, want_200=True)

    def sql(self, query: str) -> Any:
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as conn:
            return conn.execute(query).fetchall()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    needs.require(unreachable())
    crm = FakeCrmProcess(tmp_path_factory.mktemp("crm-book-workers-fake"), flavour="vtiger")
    workdir = tmp_path_factory.mktemp("crm-book-workers")
    (workdir / "crm.key").write_text("adminKEY123\n")
    metrics_port = free_ports(WORKERS)
    try:
        for name in (*USERS, "bob"):
            crm("add_user", name=name, email=f"{name}@example.org")
            crm("add_records", module="Contacts", owner=name,
                fields=[{"lastname": f"{name}-{k}"} for k in range(30)])
        with fresh_database("crmbookworkers") as url:
            srv = pg_server(workdir, url, [
                "--workers", str(WORKERS), "--provisioning", "off",
                "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1",
                "--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                "--crm-access-key-file", str(workdir / "crm.key"),
                "--crm-poll-interval", str(POLL), "--crm-timeout", "5",
                "--crm-shared-contacts", "all"], tls=False)
            srv.start()
            try:
                for name in USERS:
                    srv.add_user(name, PASSWORD, email=f"{name}@example.org")
                c = Cluster(srv, crm, url, metrics_port)
                easync_server.wait_for(lambda: len(c.held()) == WORKERS, 40)
                yield c
            finally:
                srv.stop()
    finally:
        crm.stop()


def book_of(c: Cluster, user: str, device: str) -> str:
    folders = c.call(user, "FolderSync", device, E("FolderHierarchy:FolderSync",
                                                   E("FolderHierarchy:SyncKey", "0")))
    (sid,) = [(a.findtext("FolderHierarchy:ServerId"), a.findtext("FolderHierarchy:Type"))
              for a in folders.find("FolderHierarchy:Changes").children
              if a.findtext("FolderHierarchy:DisplayName") == BOOK]
    assert sid[1] == "14"
    return str(sid[0])


def pull(c: Cluster, user: str, device: str, folder: str) -> list[str]:
    """The last names a Sync from SyncKey 0 brings (windows until MoreAvailable
    stops)."""
    key, names = "0", []
    while True:
        resp = c.call(user, "Sync", device, E("AirSync:Sync", E("AirSync:Collections", E(
            "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId",
                                                              folder)))))
        if resp is None:                # an empty answer: nothing new
            return names
        coll = resp.find("AirSync:Collections").find("AirSync:Collection")
        first, key = key == "0", coll.findtext("AirSync:SyncKey")
        cmds = coll.find("AirSync:Commands")
        names += [a.find("AirSync:ApplicationData").findtext("Contacts:LastName")
                  for a in (cmds.children if cmds is not None else [])
                  if a.tag == "AirSync:Add"]
        if not first and coll.find("AirSync:MoreAvailable") is None:
            return names


def test_every_reader_on_every_worker(cluster: Cluster) -> None:
    c = cluster
    run = uuid.uuid4().hex[:6]
    books = {f"{u}{i}": book_of(c, u, f"bk{run}{u}{i}") for u in USERS for i in range(3)}
    assert len(set(books.values())) == 1
    book = next(iter(books.values()))
    # each CRM contact is in the book once, whichever process loaded it
    rows = c.sql("SELECT crm_id, count(*) FROM crm_shared WHERE deleted = 0"
                 " GROUP BY crm_id HAVING count(*) > 1")
    assert rows == []
    assert c.sql("SELECT count(*) FROM crm_shared WHERE deleted = 0")[0][0] == 90
    for u in USERS:
        got = pull(c, u, f"bk{run}{u}0", book)
        assert len(got) == 60 and not any(n.startswith(f"{u}-") for n in got)
    # Pings held on the book by both users' phones, spread over the workers
    ping = E("Ping:Ping", E("Ping:HeartbeatInterval", "300"), E("Ping:Folders", E(
        "Ping:Folder", E("Ping:Id", book), E("Ping:Class", "Contacts"))))
    socks = []
    try:
        for u in USERS:
            for i in range(4):
                dev = f"bp{run}{u}{i}"
                book_of(c, u, dev)
                pull(c, u, dev, book)
                socks.append(c.send(u, "Ping", dev, ping))
        per_worker = easync_server.wait_for(
            lambda: next((h for h in [c.held()] if sum(h) == len(socks)), None), 20)
        assert sum(1 for n in per_worker if n) >= 2, per_worker
        (bob,) = [r["id"] for r in c.crm("live", module="Contacts", owner="bob")
                  if r["lastname"] == "bob-7"]
        c.crm("modify_record", id=bob, fields={"lastname": "bob-renamed"})
        t0 = time.monotonic()
        for s in socks:
            assert test_workers.read_response(s, want_200=True).findtext(
                "Ping:Status") == "2"
        assert time.monotonic() - t0 < POLL + 2.0
    finally:
        for s in socks:
            s.close()
