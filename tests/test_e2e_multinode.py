"""Acceptance: two ``twistd easync`` processes on one PostgreSQL database.

Device A holds a Ping on node 1, device B writes through node 2: A is woken within 1 s
and its next Sync delivers B's contact.  Also: the other direction, a write by
``easync-admin import`` (a third process), and a node whose LISTEN connection is cut
(``pg_terminate_backend``) that reconnects and goes on waking its Pings.

Both nodes serve TLS with one shared self-signed certificate (``--tls-cert``), which
the clients trust.  Skipped, with the reason, when PostgreSQL is not
reachable (with CI=true: failed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import easync_server
import needs
import pytest

needs.importable("pyactivesync")

from easync_server import RunningServer
from pgtest import fresh_database, listener_pids, pg_server, terminate, unreachable
from pyactivesync import Client
from pyactivesync.models import Contact

# every test here measures wall-clock time: alone under pytest-xdist (tests/conftest.py)
pytestmark = pytest.mark.solo

PASSWORD = "multi-Node-pw1"


class Cluster:
    def __init__(self, url: str, node1: RunningServer, node2: RunningServer) -> None:
        self.url, self.node1, self.node2 = url, node1, node2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    needs.require(unreachable())
    base = tmp_path_factory.mktemp("multinode")
    cert = base / "shared.pem"
    with fresh_database("multinode") as url:
        nodes: list[RunningServer] = []
        try:
            for name in ("node1", "node2"):
                workdir = base / name
                workdir.mkdir()
                srv = pg_server(workdir, url, ["--tls-cert", str(cert), "--node-name", name])
                nodes.append(srv.start())          # node1 creates the certificate
            nodes[0].add_user("alice", PASSWORD, email="alice@example.org")
            nodes[0].add_user("bob", PASSWORD, email="bob@example.org")
            # both nodes listening before any test counts on it
            wait_for(lambda: all(listener_pids(url, n) for n in ("node1", "node2")))
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("REQUESTS_CA_BUNDLE", str(cert))
                yield Cluster(url, nodes[0], nodes[1])
        finally:
            for srv in nodes:
                srv.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    return easync_server.wait_for(predicate, timeout)


def device(node: RunningServer, device_id: str, user: str = "alice") -> Client:
    return Client(node.host, user, PASSWORD, device_id=device_id, timeout=30)


class HeldPing:
    """A Ping in a thread, as a phone holds one; ``done_at`` is when it returned."""

    def __init__(self, client: Client, folder: str) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done_at = 0.0
        self._thread = threading.Thread(target=self._run, args=(client, folder), daemon=True)
        self._thread.start()

    def _run(self, client: Client, folder: str) -> None:
        try:
            self.result = client.ping([folder], folder_class="Contacts", heartbeat=120,
                                      timeout=60)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.done_at = time.monotonic()

    def held(self, seconds: float = 1.0) -> bool:
        """Still waiting after ``seconds`` (long enough to be subscribed on the node)."""
        self._thread.join(seconds)
        return self._thread.is_alive()

    def join(self, timeout: float = 10.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the Ping was not answered"
        if self.error is not None:
            raise self.error
        return self.result


def primed(client: Client) -> tuple[str, str]:
    """(Contacts folder id, a sync key at the current end) for a new device."""
    folder = {f.name: f.id for f in client.list_folders()}["Contacts"]
    key = client.sync_folder(folder, "0").sync_key
    while True:
        res = client.sync_folder(folder, key)
        key = res.sync_key
        if not res.more_available:
            return folder, key


def test_write_on_node2_wakes_ping_on_node1_within_a_second(cluster: Cluster) -> None:
    a = device(cluster.node1, "multiA1")
    b = device(cluster.node2, "multiB1")
    folder, key_a = primed(a)
    folder_b, key_b = primed(b)
    assert folder_b == folder

    ping = HeldPing(a, folder)
    assert ping.held()
    added = b.create_contact(folder, key_b, Contact(first_name="Cross", last_name="Node"))
    written = time.monotonic()                      # B's write has committed by now
    assert added.status == "1" and added.server_id
    result = ping.join()
    latency = ping.done_at - written
    assert result.status == "2"
    assert result.changed_folder_ids == [folder]
    assert latency < 1.0, f"woken after {latency:.3f} s"

    got = a.sync_folder(folder, key_a)              # A's next Sync delivers it
    assert [it.server_id for it in got.added] == [added.server_id]
    assert got.added[0].fields.get("Contacts.LastName") == "Node"

    # and the other way round: B waits on node 2, A writes through node 1
    ping = HeldPing(b, folder)
    assert ping.held()
    a.create_contact(folder, got.sync_key, Contact(first_name="Back", last_name="Again"))
    written = time.monotonic()
    result = ping.join()
    assert result.status == "2" and result.changed_folder_ids == [folder]
    assert ping.done_at - written < 1.0


def test_only_that_users_pings_are_woken(cluster: Cluster) -> None:
    alice = device(cluster.node1, "multiA2")
    bob = device(cluster.node1, "multiBob2", user="bob")
    writer = device(cluster.node2, "multiW2")
    folder_a, _ = primed(alice)
    folder_b, _ = primed(bob)
    _, key_w = primed(writer)
    alice_ping, bob_ping = HeldPing(alice, folder_a), HeldPing(bob, folder_b)
    assert alice_ping.held() and bob_ping.held(0)
    writer.create_contact(folder_a, key_w, Contact(first_name="Only", last_name="Alice"))
    assert alice_ping.join().status == "2"
    assert bob_ping.held(1.0)                       # bob's Ping is still waiting
    # end it: a change of bob's (through node 2 as well)
    other = device(cluster.node2, "multiBobW2", user="bob")
    _, key_o = primed(other)
    other.create_contact(folder_b, key_o, Contact(first_name="For", last_name="Bob"))
    assert bob_ping.join().status == "2"


def test_admin_import_wakes_ping_on_a_node(cluster: Cluster, tmp_path: Path) -> None:
    a = device(cluster.node1, "multiA3")
    folder, key = primed(a)
    ping = HeldPing(a, folder)
    assert ping.held()
    vcf = tmp_path / "one.vcf"
    vcf.write_text("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:multinode-import-1\r\n"
                   "N:Bianchi;Luca;;;\r\nFN:Luca Bianchi\r\nEND:VCARD\r\n")
    cluster.node2.admin("import", "alice", str(vcf))   # (--db: the PostgreSQL database)
    written = time.monotonic()
    result = ping.join()
    assert result.status == "2" and result.changed_folder_ids == [folder]
    assert ping.done_at - written < 1.0
    got = a.sync_folder(folder, key)
    assert [it.fields.get("Contacts.LastName") for it in got.added] == ["Bianchi"]


def test_node_that_loses_its_listen_connection_reconnects(cluster: Cluster) -> None:
    a = device(cluster.node1, "multiA4")
    b = device(cluster.node2, "multiB4")
    folder, _ = primed(a)
    _, key_b = primed(b)
    ping = HeldPing(a, folder)
    assert ping.held()
    [old] = listener_pids(cluster.url, "node1")
    assert terminate(cluster.url, old)
    new = wait_for(lambda: [p for p in listener_pids(cluster.url, "node1") if p != old])
    assert len(new) == 1
    # Node 1 answered its held waiters on reconnecting (it may have missed changes).
    # The Ping then looks at its folders: finding nothing new for this device it
    # waits on (or, should it answer, the device simply pings again).
    wait_for(lambda: "answering 1 held waiter(s) after (re)connecting"
             in cluster.node1.log_text())
    if not ping.held(0.5):
        assert ping.join().status in ("1", "2", "7")
        ping = HeldPing(a, folder)
        assert ping.held()
    b.create_contact(folder, key_b, Contact(first_name="After", last_name="Reconnect"))
    written = time.monotonic()
    result = ping.join()
    assert result.status == "2" and result.changed_folder_ids == [folder]
    assert ping.done_at - written < 1.0
