"""Issue #14 point 2 end to end on the other stores: ``twistd easync`` on PostgreSQL (the
restore made by ``easync-admin``, another process, reaches a held Ping through
LISTEN/NOTIFY) and ``--backend crm`` over the fake CRM in its own process (a phone's
delete is kept before the CRM is asked; the restore creates a CRM record again).

Raw WBXML devices (libwbxml).  MS-ASCMD 2.2.3.42.2 (Sync Delete), 2.2.3.135 (Ping
Status 2: a watched folder changed)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import needs
import pytest
from easync_server import RunningServer, _env, free_port, wait_for
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


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
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


# -- easync-admin restoring into the CRM (issue #14 point 2, follow-up) ---------------------

@pytest.fixture
def crm_config_site(tmp_path: Path) -> Iterator[tuple[RunningServer, FakeCrmProcess, Path]]:
    """``twistd easync --config easync.toml`` with backend crm, as an admin runs it:
    the same file then tells easync-admin the database and the CRM."""
    crm = FakeCrmProcess(tmp_path)
    crm("add_user", name="lia", email="lia@example.org")
    (tmp_path / "crm.key").write_text("adminKEY123\n")
    metrics_port = free_port()
    config = tmp_path / "easync.toml"
    config.write_text(
        f'db = "sqlite:///{tmp_path / "easync.sqlite"}"\n'
        f'secret-key = "{tmp_path / "easync.key"}"\n'
        'backend = "crm"\n'
        f'crm-url = "{crm.url}"\n'
        'crm-user = "admin"\n'
        f'crm-access-key-file = "{tmp_path / "crm.key"}"\n'
        'crm-poll-interval = 0.3\n'
        'crm-timeout = 3\n'
        'heartbeat-min = 2\n'
        f'metrics-listen = "tcp:{metrics_port}:interface=127.0.0.1"\n', "utf-8")
    srv = RunningServer(tmp_path, ["--config", str(config)])
    srv.metrics_port = metrics_port  # type: ignore[attr-defined]
    srv.start()
    try:
        srv.add_user("lia", PASSWORD, email="lia@example.org")
        yield srv, crm, config
    finally:
        srv.stop()
        crm.stop()
    log = srv.log_text()
    assert "Traceback" not in log and "Unhandled" not in log, log[-3000:]


def admin_with_config(config: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``easync-admin --config FILE …`` run elsewhere, without --db: the database, the
    secret key and the CRM all come from the server's config file."""
    cwd.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "easync.admin", "--config", str(config),
                           *args], cwd=cwd, env=_env(), text=True, capture_output=True,
                          timeout=60, check=False)


def test_easync_admin_restores_crm_items_with_the_servers_config(
        crm_config_site: tuple[RunningServer, FakeCrmProcess, Path], tmp_path: Path) -> None:
    """``easync-admin --config FILE deleted restore`` logs in to the CRM the server's
    file names, re-creates the record through the CRM store's add path, marks the
    kept row restored, and the running server's held Ping (MS-ASCMD 2.2.3.135, Ping
    Status 2) wakes; the other device gets the item as an Add at its next Sync
    (MS-ASCMD 2.2.3.7.2).  Restoring it again makes no second CRM record."""
    srv, crm, config = crm_config_site
    a = RawDevice(srv.url, "lia", PASSWORD, "LIAPHONE")
    b = RawDevice(srv.url, "lia", PASSWORD, "LIATABLET")
    for dev in (a, b):
        dev.provision()
    coll = a.folders()["Contacts"]
    b.folders()
    ka, _h, _d, _ = a.pull(coll, a.initial(coll))
    ka, sids = fill(a, coll, ka, 3)
    kb, held, _gone, _ = b.pull(coll, b.initial(coll))
    assert len(held) == 3
    r = a.sync(coll, ka, commands(delete(sids["c1"])))
    ka = collection(r).text_of("AirSync:SyncKey") or ka
    owner = [f"{x['firstname']} {x['lastname']}"
             for x in crm("live", module="Contacts", owner="lia")]
    assert sorted(owner) == ["Name0 Family0", "Name2 Family2"]
    kb, _held, gone, _ = b.pull(coll, kb)
    assert gone == [sids["c1"]]
    elsewhere = tmp_path / "elsewhere"
    listed = admin_with_config(config, elsewhere, "deleted", "list", "lia")
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    # without the config easync-admin has no CRM: it refuses and says what to give
    bad = srv.admin("deleted", "restore", "lia", row, check=False)
    assert bad.returncode == 1 and "--config" in bad.stderr
    creates = crm("calls").get("create", 0)
    ping = PingThread(b, coll, 60)
    ping.start()
    wait_for(lambda: held_pings(srv) == 1, timeout=10)
    done = admin_with_config(config, elsewhere, "deleted", "restore", "lia", row)
    assert done.returncode == 0, done.stderr
    assert "1 item restored" in done.stdout
    assert crm("calls").get("create", 0) == creates + 1
    assert sorted(f"{x['firstname']} {x['lastname']}" for x in crm(
        "live", module="Contacts", owner="lia")) == [
        "Name0 Family0", "Name1 Family1", "Name2 Family2"]
    ping.join(15)
    assert ping.error is None and ping.result is not None
    assert ping.result.text_of("Ping:Status") == "2"
    kb, held, gone, _ = b.pull(coll, kb)
    assert gone == [] and names(held) == {"Name1 Family1"}
    ka, held, gone, _ = a.pull(coll, ka)
    assert gone == [] and names(held) == {"Name1 Family1"}
    # the kept row is marked: again, nothing more in the CRM
    again = admin_with_config(config, elsewhere, "deleted", "restore", "lia", row)
    assert again.returncode == 0 and f"{row} was restored already" in again.stdout
    assert crm("calls").get("create", 0) == creates + 1
    # a later poll of the server does not bring the record a second time
    time.sleep(1.0)
    kb, held, gone, _ = b.pull(coll, kb)
    assert held == {} and gone == []
