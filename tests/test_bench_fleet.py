"""bench/bench_fleet.py in its smallest form, so the benchmark cannot rot: 20 devices
(iPhone, Android and Outlook shapes of tests/corpus/devices/) on a real
``twistd easync --workers 2`` over PostgreSQL, a day of a few seconds in which every
user changes a contact about every 4 s — by import (the importer and a NOTIFY, as
``easync-admin import``) or by a Sync with an Add from a second device — and each
woken device answers with a Sync and a new Ping (MS-ASCMD 2.2.3.134 Ping, 2.2.3.177.12
Status 2).  It must have measured pushes and Syncs of both kinds, without an error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pgtest import fresh_database, unreachable

REPO = Path(__file__).resolve().parent.parent


def test_quickest_day_measures_pushes_and_syncs(tmp_path: Path) -> None:
    why = unreachable()
    if why:
        pytest.skip(why)
    with fresh_database("fleet") as url:
        out = tmp_path / "day.json"
        run = subprocess.run(
            [sys.executable, str(REPO / "bench" / "bench_fleet.py"), "--devices", "20",
             "--duration", "5", "--grace", "5", "--change-interval", "4", "--second", "1",
             "--db", url, "--json", str(out), "--source-net", "230"],
            check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    [day] = json.loads(out.read_text())
    assert day["devices"] == 20
    assert day["errors"] == 0 and day["server_log_errors"] == 0, run.stdout[-3000:]
    assert day["missed"] == 0, run.stdout[-3000:]
    assert day["pushes"] >= 5, run.stdout[-3000:]
    assert day["syncs"] >= 5 and day["adds"] >= 1 and day["imports"] >= 1, run.stdout[-3000:]
    assert day["push_p99_ms"] < 5000 and day["sync_p99_ms"] < 5000
    assert "| push latency ms, p50 / p99 / max |" in run.stdout
