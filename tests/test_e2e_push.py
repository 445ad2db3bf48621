"""Acceptance: Ping against ``twistd easync`` over TLS — pyactivesync as the devices,
raw requests (libwbxml-encoded, or broken on purpose) where pyactivesync cannot say
what is needed, ``/metrics`` to see inside the server, ``easync-admin device list``
to see who holds a Ping.

* A holds a Ping on Contacts (heartbeat 120); B adds a contact; A's Ping answers
  Status 2 naming the folder within 1 s, and A's next Sync delivers the contact.
  With no change the Ping answers Status 1 after its heartbeat.
* A device's second Ping ends its first; a disconnect while waiting frees the waiter
  (the hub holds nothing for it).
* Out-of-range heartbeat, too many folders, unknown folder, malformed Ping: Statuses
  5, 6, 7, 4.
"""

from __future__ import annotations

import base64
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import easync_server
import needs
import pytest

needs.importable("pyactivesync")
from easync_server import RunningServer, free_port, read_metrics
from pyactivesync import Client
from pyactivesync.models import Contact
from rawclient import RawDevice

from easync.wbxml import E, encode

PASSWORD = "push acceptance password"
HEARTBEAT_MIN = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    metrics_port = free_port()
    srv = RunningServer(tmp_path_factory.mktemp("push"), [
        "--heartbeat-min", str(HEARTBEAT_MIN), "--heartbeat-max", "600",
        "--max-ping-folders", "3",
        "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1"]).start()
    srv.metrics_port = metrics_port  # type: ignore[attr-defined]
    srv.add_user("alice", PASSWORD, email="alice@example.org")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REQUESTS_CA_BUNDLE", str(srv.workdir / "easync.pem"))
        yield srv
    srv.stop()
    log = srv.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def client(server: RunningServer, device: str) -> Client:
    return Client(server.host, "alice", PASSWORD, device_id=device, timeout=30)


def metrics(server: RunningServer) -> dict[str, float]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"  # type: ignore[attr-defined]
    return read_metrics(url, timeout=10)


def held_pings(server: RunningServer) -> int:
    return int(metrics(server)['easync_held_requests{command="Ping"}'])


def wait_for(cond: Any, timeout: float = 10.0) -> None:
    easync_server.wait_for(cond, timeout)


class PingThread(threading.Thread):
    """A pyactivesync Ping in a thread (it blocks until answered)."""

    def __init__(self, c: Client, folders: list[str], heartbeat: int) -> None:
        super().__init__(daemon=True)
        self.c, self.folders, self.heartbeat = c, folders, heartbeat
        self.result: Any = None
        self.error: BaseException | None = None
        self.answered_at = 0.0

    def run(self) -> None:
        try:
            self.result = self.c.ping(self.folders, folder_class="Contacts",
                                      heartbeat=self.heartbeat, timeout=self.heartbeat + 30)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.answered_at = time.monotonic()


def synced(c: Client, folder: str) -> str:
    key = c.sync_folder(folder, "0").sync_key
    while True:
        res = c.sync_folder(folder, key)
        key = res.sync_key
        if not res.more_available:
            return key


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_ping_woken_by_another_device(server: RunningServer) -> None:
    a, b = client(server, "pushA"), client(server, "pushB")
    folder = {f.name: f.id for f in a.list_folders()}["Contacts"]
    key_a = synced(a, folder)
    key_b = synced(b, folder)
    before = held_pings(server)
    ping = PingThread(a, [folder], 120)
    ping.start()
    wait_for(lambda: held_pings(server) == before + 1)
    # easync-admin sees who holds a Ping, and on which node (written within a second)
    wait_for(lambda: "Ping on " in _device_row(server, "pushA"), timeout=5)
    assert "Ping on " not in _device_row(server, "pushB")
    added = b.create_contact(folder, key_b, Contact(first_name="Pushed", last_name="Now"))
    written = time.monotonic()
    assert added.status == "1"
    ping.join(10)
    assert ping.error is None and ping.result is not None
    assert ping.result.status == "2"
    assert ping.result.changed_folder_ids == [folder]
    assert ping.answered_at - written < 1.0
    got = a.sync_folder(folder, key_a)
    assert [(it.fields.get("Contacts.FirstName"), it.fields.get("Contacts.LastName"))
            for it in got.added] == [("Pushed", "Now")]
    wait_for(lambda: "Ping on " not in _device_row(server, "pushA"), timeout=5)
    m = metrics(server)
    assert m['easync_requests_total{command="Ping",http="200",status="2"}'] >= 1
    assert m["easync_push_latency_seconds_count"] >= 1


def _device_row(server: RunningServer, device: str) -> str:
    out = server.admin("device", "list", "alice").stdout.splitlines()
    return next((line for line in out if f" {device} " in line), "")


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_ping_heartbeat_status_1(server: RunningServer) -> None:
    a = client(server, "pushHB")
    folder = {f.name: f.id for f in a.list_folders()}["Contacts"]
    synced(a, folder)
    t0 = time.monotonic()
    res = a.ping([folder], folder_class="Contacts", heartbeat=HEARTBEAT_MIN, timeout=30)
    took = time.monotonic() - t0
    assert res.status == "1" and res.changed_folder_ids == []
    assert HEARTBEAT_MIN - 0.1 <= took < HEARTBEAT_MIN + 2


def test_second_ping_ends_the_first(server: RunningServer) -> None:
    a = client(server, "pushTwice")
    folder = {f.name: f.id for f in a.list_folders()}["Contacts"]
    synced(a, folder)
    first = PingThread(a, [folder], 300)
    first.start()
    wait_for(lambda: held_pings(server) == 1)
    second_client = client(server, "pushTwice")     # same device, another connection
    second = PingThread(second_client, [folder], 300)
    t0 = time.monotonic()
    second.start()
    first.join(5)
    assert not first.is_alive() and first.error is None
    assert first.result.status == "1" and first.answered_at - t0 < 2
    wait_for(lambda: held_pings(server) == 1)       # the second, alone
    # the second ends when the client goes away: nothing is left in the server
    raw = raw_ping(server, "pushTwice", folder, 300)
    second.join(5)
    assert second.result.status == "1"             # ended by the raw one
    wait_for(lambda: held_pings(server) == 1)
    raw.close()
    wait_for(lambda: held_pings(server) == 0)
    m = metrics(server)
    assert m["easync_hub_subscriptions"] == 0


def raw_ping(server: RunningServer, device: str, folder: str, heartbeat: int) -> ssl.SSLSocket:
    """A Ping over a bare TLS socket, left open (to be closed by the test)."""
    body = encode(E("Ping:Ping", E("Ping:HeartbeatInterval", str(heartbeat)), E(
        "Ping:Folders", E("Ping:Folder", E("Ping:Id", folder), E("Ping:Class", "Contacts")))))
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    head = (f"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=alice&DeviceId={device}"
            f"&DeviceType=SmartPhone HTTP/1.1\r\nHost: {server.host}\r\n"
            f"Authorization: Basic {auth}\r\nMS-ASProtocolVersion: 14.1\r\n"
            f"X-MS-PolicyKey: {_policy_key(server, device)}\r\n"
            "Content-Type: application/vnd.ms-sync.wbxml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    ctx = ssl.create_default_context(cafile=str(server.workdir / "easync.pem"))
    sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port)),
                           server_hostname="127.0.0.1")
    sock.sendall(head + body)
    return sock


def _policy_key(server: RunningServer, device: str) -> str:
    """The device's policy key, as the database has it (pyactivesync provisioned it)."""
    import sqlite3

    db = Path(server.db.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        (key,) = conn.execute("SELECT policy_key FROM devices WHERE device_id = ?",
                              (device,)).fetchone()
    return str(key)


def test_disconnect_frees_the_waiter(server: RunningServer) -> None:
    a = client(server, "pushGone")
    folder = {f.name: f.id for f in a.list_folders()}["Contacts"]
    synced(a, folder)
    for _ in range(3):
        sock = raw_ping(server, "pushGone", folder, 300)
        wait_for(lambda: held_pings(server) == 1)
        assert metrics(server)["easync_hub_subscriptions"] == 1
        sock.close()
        wait_for(lambda: held_pings(server) == 0)
        assert metrics(server)["easync_hub_subscriptions"] == 0


@needs.mark(needs.libwbxml())
def test_ping_statuses(server: RunningServer) -> None:
    d = RawDevice(server.url, "alice", PASSWORD, "pushRaw")
    d.provision()
    folders = d.folders()
    contacts = folders["Contacts"]

    def ping(inner: str) -> Any:
        return d.call("Ping", f'<Ping xmlns="Ping:">{inner}</Ping>')

    def folder_xml(*ids: str) -> str:
        return "<Folders>" + "".join(
            f"<Folder><Id>{i}</Id><Class>Contacts</Class></Folder>" for i in ids) + "</Folders>"

    # nothing cached for this device yet: an empty Ping lacks its parameters
    assert d.call("Ping", None).text_of("Ping:Status") == "3"
    low = ping(f"<HeartbeatInterval>1</HeartbeatInterval>{folder_xml(contacts)}")
    assert (low.text_of("Ping:Status"), low.text_of("Ping:HeartbeatInterval")) == ("5", "2")
    high = ping(f"<HeartbeatInterval>601</HeartbeatInterval>{folder_xml(contacts)}")
    assert (high.text_of("Ping:Status"), high.text_of("Ping:HeartbeatInterval")) == ("5", "600")
    many = ping("<HeartbeatInterval>60</HeartbeatInterval>" + folder_xml(
        *[folders[n] for n in ("Contacts", "Calendar", "Tasks", "Inbox")]))
    assert (many.text_of("Ping:Status"), many.text_of("Ping:MaxFolders")) == ("6", "3")
    unknown = ping(f"<HeartbeatInterval>60</HeartbeatInterval>{folder_xml('987654')}")
    assert unknown.text_of("Ping:Status") == "7"
    bad = ping(f"<HeartbeatInterval>soon</HeartbeatInterval>{folder_xml(contacts)}")
    assert bad.text_of("Ping:Status") == "4"
    no_id = ping("<HeartbeatInterval>60</HeartbeatInterval><Folders><Folder>"
                 "<Class>Contacts</Class></Folder></Folders>")
    assert no_id.text_of("Ping:Status") == "4"
    # not WBXML at all: HTTP 400
    r = d.post("Ping", b"\x03\x01\x6a\x00\x45\x46")
    assert r.status_code == 400
    assert held_pings(server) == 0
