"""Issue #13 point 6, end to end: tombstones purged and idle devices forgotten by a
running ``twistd easync`` (easync.retention), seen by raw WBXML devices (libwbxml).

* A tombstone older than --tombstone-max-age is purged even though a device that has
  not synced since still needed it: that device's SyncKey is then invalid, Sync Status
  3 (MS-ASCMD 2.2.3.177.17; 2.2.3.166.4: the client returns to SyncKey 0), and its
  full resync holds what the folder holds now, not the item deleted elsewhere.
* A tombstone every device has synced past is purged whatever its age.
* A device unseen for --device-max-idle is forgotten: its next request is a new
  device's, so it must provision again (MS-ASPROV 3.1.5.1, Status 142
  DeviceNotProvisioned, MS-ASCMD 2.2.2), its FolderSync key is unknown (Status 9,
  MS-ASCMD 2.2.3.177.4) and so is its Sync key (Status 3).
* /metrics counts both.
"""

from __future__ import annotations

from pathlib import Path

import needs
from easync_server import RunningServer, free_port, read_metrics, wait_for
from rawclient import Node, RawDevice
from test_e2e_device_shapes import collection as coll_of

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "retention-Pa55"


def add(client_id: str, first: str) -> str:
    return (f"<Add><ClientId>{client_id}</ClientId><ApplicationData>"
            f"<K:FirstName>{first}</K:FirstName></ApplicationData></Add>")


def commands(*cmds: str) -> str:
    return "<GetChanges>0</GetChanges><Commands>" + "".join(cmds) + "</Commands>"


def delete(sid: str) -> str:
    return f"<Delete><ServerId>{sid}</ServerId></Delete>"


def status(r: Node | None) -> str | None:
    assert r is not None
    coll = r.find("AirSync:Collections/AirSync:Collection")
    assert coll is not None, r
    return coll.text_of("AirSync:Status")


def key_of(r: Node | None, old: str) -> str:
    return (coll_of(r).text_of("AirSync:SyncKey") or old) if r is not None else old


def names(items: dict[str, Node]) -> set[str]:
    return {n.text_of("Contacts:FirstName") or "" for n in items.values()}


class Site:
    def __init__(self, tmp_path: Path, args: list[str]) -> None:
        self.metrics_port = free_port()
        self.server = RunningServer(tmp_path, [
            "--purge-interval", "0.3",
            "--metrics-listen", f"tcp:{self.metrics_port}:interface=127.0.0.1", *args])

    def counter(self, sample: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return read_metrics(url, 5).get(sample, 0.0)


def test_an_aged_tombstone_sends_a_behind_device_back_to_a_full_resync(
        tmp_path: Path) -> None:
    site = Site(tmp_path, ["--tombstone-max-age", "2", "--device-max-idle", "0"])
    server = site.server.start()
    try:
        server.add_user("rosa", PASSWORD)
        phone = RawDevice(server.url, "rosa", PASSWORD, "PHONE1")
        tablet = RawDevice(server.url, "rosa", PASSWORD, "TABLET1")
        for dev in (phone, tablet):
            dev.provision()
        coll = phone.folders()["Contacts"]
        tablet.folders()
        kp, kt = phone.initial(coll), tablet.initial(coll)
        r = phone.sync(coll, kp, commands(add("c1", "Gone"), add("c2", "Stays")))
        kp = key_of(r, kp)
        sids = {c.text_of("AirSync:ClientId"): c.text_of("AirSync:ServerId")
                for c in coll_of(r).find("AirSync:Responses").children}
        kt, held, _deleted, _ = tablet.pull(coll, kt)
        assert names(held) == {"Gone", "Stays"}
        # the phone deletes Gone; the tablet does not sync for longer than the max age
        r = phone.sync(coll, kp, commands(delete(sids["c1"])))
        kp = key_of(r, kp)
        kp, _held, _deleted, _last = phone.pull(coll, kp)      # past its own delete
        wait_for(lambda: site.counter('easync_tombstones_purged_total{reason="age"}') >= 1,
                 timeout=20)
        r = tablet.sync(coll, kt)
        assert status(r) == "3"         # MS-ASCMD 2.2.3.177.17: invalid SyncKey
        kt, held, _deleted, _ = tablet.pull(coll, tablet.initial(coll))
        assert names(held) == {"Stays"}     # not the contact deleted elsewhere
        # the phone had synced past the delete: it goes on with its key
        kp, _held, _deleted, _last = phone.pull(coll, kp)    # (asserts Status 1)

        # a tombstone both devices have synced past goes whatever its age
        before = site.counter('easync_tombstones_purged_total{reason="synced"}')
        r = phone.sync(coll, kp, commands(delete(sids["c2"])))
        kp = key_of(r, kp)
        kt, held, deleted, _ = tablet.pull(coll, kt)
        assert deleted == [sids["c2"]] and held == {}
        kp, _held, _deleted, _ = phone.pull(coll, kp)
        wait_for(lambda: site.counter('easync_tombstones_purged_total{reason="synced"}')
                 > before, timeout=10)
        # both go on as before: nothing new, the same keys answered
        for dev, key in ((phone, kp), (tablet, kt)):
            r = dev.sync(coll, key)
            assert r is None or status(r) == "1"
    finally:
        server.stop()


def folder_sync(dev: RawDevice, key: str) -> Node:
    r = dev.call("FolderSync", f'<FolderSync xmlns="FolderHierarchy:"><SyncKey>{key}'
                               '</SyncKey></FolderSync>')
    assert r is not None
    return r


def test_an_idle_device_is_forgotten_and_starts_over(tmp_path: Path) -> None:
    # (last seen is written at most once a minute: an idle time this short only suits
    # a test)
    site = Site(tmp_path, ["--tombstone-max-age", "0", "--device-max-idle", "6"])
    server = site.server.start()
    try:
        server.add_user("rosa", PASSWORD)
        dev = RawDevice(server.url, "rosa", PASSWORD, "IDLEPHONE")
        dev.provision()
        assert "IDLEPHONE" in server.admin("device", "list", "rosa").stdout
        coll = dev.folders()["Contacts"]
        fkey = folder_sync(dev, "0").text_of("FolderHierarchy:SyncKey") or ""
        skey = dev.initial(coll)
        wait_for(lambda: site.counter("easync_devices_forgotten_total") >= 1, timeout=20)
        assert "IDLEPHONE" not in server.admin("device", "list", "rosa").stdout
        # a new device to the server: provisioning first (its policy key is unknown)
        r = folder_sync(dev, fkey)
        assert r.text_of("FolderHierarchy:Status") == "142"
        dev.provision()
        assert folder_sync(dev, fkey).text_of("FolderHierarchy:Status") == "9"
        assert folder_sync(dev, "0").text_of("FolderHierarchy:Status") == "1"
        assert status(dev.sync(coll, skey)) == "3"
        assert dev.initial(coll)
    finally:
        server.stop()
