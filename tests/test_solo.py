"""The ``solo`` mark of tests/conftest.py: under pytest-xdist (``-n 4``, the README's
test command) a test that measures wall-clock time runs while no other test runs, and
the others still run side by side.  Checked on a sample suite run in two processes,
each test writing down when it ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SAMPLE = '''
import os
import time

import pytest

LOG = os.environ["SOLO_LOG"]


def ran(kind):
    start = time.monotonic()
    time.sleep(0.25)
    with open(LOG, "a") as f:
        f.write(f"{kind} {start} {time.monotonic()}\\n")


@pytest.mark.parametrize("i", range(10))
def test_plain(i):
    ran("plain")


@pytest.mark.solo
@pytest.mark.parametrize("i", range(3))
def test_alone(i):
    ran("solo")
'''


def test_solo_tests_run_alone_and_the_others_together(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    log = tmp_path / "ran.log"
    env = dict(os.environ, SOLO_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p",
                          "no:cacheprovider", "-c", os.devnull, "--rootdir", str(tmp_path),
                          "test_sample.py"],
                         check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = [(kind, float(a), float(b)) for kind, a, b in
            (line.split() for line in log.read_text().splitlines())]
    assert sorted(k for k, _, _ in rows) == ["plain"] * 10 + ["solo"] * 3

    def overlap(x: tuple[str, float, float], y: tuple[str, float, float]) -> bool:
        return x[1] < y[2] and y[1] < x[2]

    solos = [r for r in rows if r[0] == "solo"]
    plains = [r for r in rows if r[0] == "plain"]
    assert not [(s, o) for s in solos for o in rows if o is not s and overlap(s, o)]
    # and the lock does not serialise the rest: two processes ran plain tests at once
    assert any(overlap(a, b) for i, a in enumerate(plains) for b in plains[i + 1:])


def test_a_pytest_started_by_a_test_takes_no_lock_of_the_run(tmp_path: Path) -> None:
    """A pytest a test runs in a subprocess (tests/test_needs.py does) inherits the
    worker's PYTEST_XDIST_* variables.  It must not take the run's turnstile: a solo test
    standing in it waits for the shared lock of the very test that started that pytest,
    so the two waited on each other until the subprocess's timeout (CI, stop 21)."""
    import fcntl
    import tempfile

    run_id = "lockcheck" + os.urandom(4).hex()
    base = os.path.join(tempfile.gettempdir(), f"easync-tests-{run_id}")
    (tmp_path / "conftest.py").write_text((HERE / "conftest.py").read_text())
    (tmp_path / "test_sample.py").write_text("def test_one():\n    pass\n")
    env = dict(os.environ, PYTEST_XDIST_WORKER="gw0", PYTEST_XDIST_TESTRUNUID=run_id,
               PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    with open(base + ".gate", "ab") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)          # a solo test waiting for its turn
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p",
                                  "no:cacheprovider", "-c", os.devnull, "--rootdir",
                                  str(tmp_path), "test_sample.py"],
                                 check=False, cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=60)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
            for suffix in (".gate", ".lock"):
                if os.path.exists(base + suffix):
                    os.unlink(base + suffix)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed" in run.stdout
