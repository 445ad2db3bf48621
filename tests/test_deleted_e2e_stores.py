"""Issue #14 point 2 end to end on the other stores: ``twistd easync`` on PostgreSQL (the
restore made by ``easync-admin``, another process, reaches a held Ping through
LISTEN/NOTIFY) and ``--backend crm`` over the fake CRM in its own process (a phone's
delete is kept before the CRM is asked; the restore creates a CRM record again).

Raw WBXML devices (libwbxml).  MS-ASCMD 2.2.3.42.2 (Sync Delete), 2.2.3.135 (Ping
Status 2: a watched folder changed)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
from easync_server import RunningServer, free_port, wait_for
from pgtest import fresh_database, pg_server, unreachable
from rawclient import RawDevice
from test_deleted_e2e import (
    AccountApi,
    PingThread,
    add,
    collection,
    commands,
    delete,
    deleted_rows,
    held_pings,
    mass_deletes,
    names,
)
from test_e2e_crm import FakeCrmProcess

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "deleted-Pa55word"


def fill(a: RawDevice, coll: str, key: str, n: int) -> tuple[str, dict[str, str]]:
    r = a.sync(coll, key, commands(*(add(f"c{i}", f"Name{i}", f"Family{i}")
                                     for i in range(n))))
    c = collection(r)
    sids = {x.text_of("AirSync:ClientId") or "": x.text_of("AirSync:ServerId") or ""
            for x in c.find("AirSync:Responses").children}
    assert len(sids) == n
    return c.text_of("AirSync:SyncKey") or key, sids


@pytest.fixture
def pg_site(tmp_path: Path) -> Iterator[RunningServer]:
    needs.require(unreachable())
    metrics_port = free_port()
    with fresh_database("deleted_e2e") as url:
        srv = pg_server(tmp_path, url, [
            "--heartbeat-min", "2", "--mass-delete-share", "0.5", "--mass-delete-min", "10",
            "--metrics-listen", f"tcp:{metrics_port}:interface=127.0.0.1"])
        srv.metrics_port = metrics_port  # type: ignore[attr-defined]
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()
        log = srv.log_text()
        assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def test_postgresql_restore_by_easync_admin_wakes_a_held_ping(pg_site: RunningServer) -> None:
    srv = pg_site
    srv.add_user("nadia", PASSWORD)
    a = RawDevice(srv.url, "nadia", PASSWORD, "PGPHONE")
    b = RawDevice(srv.url, "nadia", PASSWORD, "PGTABLET")
    for dev in (a, b):
        dev.provision()
    coll = a.folders()["Contacts"]
    b.folders()
    ka, kb = a.initial(coll), b.initial(coll)
    ka, sids = fill(a, coll, ka, 20)
    kb, held, _gone, _ = b.pull(coll, kb)
    assert len(held) == 20
    r = a.sync(coll, ka, commands(*(delete(sids[f"c{i}"]) for i in range(12))))
    ka = collection(r).text_of("AirSync:SyncKey") or ka
    wait_for(lambda: mass_deletes(srv) == 1, timeout=5)      # 12 of 20 > 0.5
    assert "deleted 12 of 20" in srv.admin("audit", "nadia").stdout
    assert len(deleted_rows(srv, "nadia", "--device", "PGPHONE")) == 12
    kb, _held, gone, _ = b.pull(coll, kb)
    assert len(gone) == 12
    ping = PingThread(b, coll, 60)
    ping.start()
    wait_for(lambda: held_pings(srv) == 1, timeout=10)     # B holds its Ping now
    res = srv.admin("deleted", "restore", "nadia", "--all-since", "1h")
    done = time.monotonic()
    assert "12 items restored" in res.stdout
    ping.join(15)
    assert ping.error is None and ping.result is not None
    assert ping.result.text_of("Ping:Status") == "2"
    # NOTIFY, sent as the command ends: the Ping is answered within a second of it
    # (often before the process has exited)
    assert ping.answered_at - done < 1.0, ping.answered_at - done
    kb, held, gone, _ = b.pull(coll, kb)
    assert gone == [] and names(held) == {f"Name{i} Family{i}" for i in range(12)}
    assert deleted_rows(srv, "nadia") == []


@pytest.fixture
def crm_site(tmp_path: Path) -> Iterator[tuple[RunningServer, FakeCrmProcess]]:
    crm = FakeCrmProcess(tmp_path)
    crm("add_user", name="gina", email="gina@example.org")
    (tmp_path / "crm.key").write_text("adminKEY123\n")
    srv = RunningServer(tmp_path, ["--backend", "crm", "--crm-url", crm.url,
                                   "--crm-user", "admin",
                                   "--crm-access-key-file", str(tmp_path / "crm.key"),
                                   "--crm-poll-interval", "0.3", "--crm-timeout", "3"])
    srv.start()
    try:
        srv.add_user("gina", PASSWORD, email="gina@example.org")
        yield srv, crm
    finally:
        srv.stop()
        crm.stop()
    log = srv.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def crm_names(crm: FakeCrmProcess) -> list[str]:
    return sorted(f"{r['firstname']} {r['lastname']}"
                  for r in crm("live", module="Contacts", owner="gina"))


def test_crm_phone_delete_kept_and_restored_as_a_new_crm_record(
        crm_site: tuple[RunningServer, FakeCrmProcess]) -> None:
    srv, crm = crm_site
    a = RawDevice(srv.url, "gina", PASSWORD, "CRMPHONE")
    a.provision()
    coll = a.folders()["Contacts"]
    ka = a.initial(coll)
    ka, _h, _d, _ = a.pull(coll, ka)
    ka, sids = fill(a, coll, ka, 3)
    assert crm_names(crm) == ["Name0 Family0", "Name1 Family1", "Name2 Family2"]
    r = a.sync(coll, ka, commands(delete(sids["c1"])))
    ka = collection(r).text_of("AirSync:SyncKey") or ka
    assert crm_names(crm) == ["Name0 Family0", "Name2 Family2"]
    rows = deleted_rows(srv, "gina")
    assert [(row[2], row[5]) for row in rows] == [("CRMPHONE", "Name1 Family1")]
    # easync-admin has no CRM connection: it refuses, and nothing changes
    bad = srv.admin("deleted", "restore", "gina", rows[0][0], check=False)
    assert bad.returncode == 1 and "--backend crm" in bad.stderr
    assert crm_names(crm) == ["Name0 Family0", "Name2 Family2"]
    creates = crm("calls").get("create", 0)
    api = AccountApi(srv)
    api.login("gina")
    done = api.call("POST", "deleted/restore", {"device_id": "CRMPHONE", "since": "1h"})
    assert done.status_code == 200, done.text
    assert [x["summary"] for x in done.json()["restored"]] == ["Name1 Family1"]
    assert crm("calls").get("create", 0) == creates + 1
    assert crm_names(crm) == ["Name0 Family0", "Name1 Family1", "Name2 Family2"]
    ka, held, _gone, _ = a.pull(coll, ka)
    assert names(held) == {"Name1 Family1"}
    again: Any = api.call("POST", "deleted/restore", {"ids": [int(rows[0][0])]}).json()
    assert again["restored"] == [] and crm_names(crm) == [
        "Name0 Family0", "Name1 Family1", "Name2 Family2"]
