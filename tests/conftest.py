"""The suite's one conftest: the hook of tests/needs.py (a test whose tool or service
is missing is skipped, or with CI=true fails), and the ``solo`` mark for runs spread
over several processes (pytest-xdist, ``-n``).

A test marked ``solo`` measures time on the wall clock (the reactor's longest turn,
a push latency, a heartbeat): with ``-n 4`` the other processes' tests would take the
CPU it measures.  So every test holds a lock on one file for its whole run (set-up,
call, tear-down): shared for the others, exclusive for a ``solo`` test, which
therefore runs alone — the other processes wait between two of their tests.  A second
file is the turnstile every test passes to take the first: a ``solo`` test waiting
for its turn stands in it, so the others' next tests cannot keep it waiting.  Without
xdist there is one process and no lock is taken.
"""

from __future__ import annotations

import compileall
import fcntl
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from needs import pytest_configure as _needs_configure
from needs import pytest_runtest_setup  # noqa: F401 - pytest hook

REPO = Path(__file__).resolve().parent.parent
_locks: tuple[IO[bytes], IO[bytes]] | None = None


def pytest_configure(config: pytest.Config) -> None:
    _needs_configure(config)
    _keep_bytecode(config)
    config.addinivalue_line(
        "markers", "solo: the test measures wall-clock time; with pytest-xdist it runs "
        "while no other test runs (tests/conftest.py)")


def _keep_bytecode(config: pytest.Config) -> None:
    """Let this run and the processes it starts keep compiled bytecode.

    The suite starts hundreds of Python processes (``twistd easync``, ``easync-admin``,
    the fake CRM) on this checkout's sources.  With PYTHONDONTWRITEBYTECODE set (some
    container images set it) each of them compiled every module again: an eighth of the
    CPU of the device-corpus tests.  The first process (not an xdist worker) compiles
    the checkout once; the ``__pycache__`` directories are ignored by git.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False
    if getattr(config, "workerinput", None) is None:
        for part in ("easync", "backends", "twisted", "tests"):
            compileall.compile_dir(str(REPO / part), quiet=2)


def _lock_files(config: pytest.Config) -> tuple[IO[bytes], IO[bytes]] | None:
    """(the turnstile, the lock) of this run's processes, or None without xdist.

    Only an xdist worker's own configuration counts, not the PYTEST_XDIST_* variables:
    a pytest a test starts in a subprocess (tests/test_needs.py) inherits those, and
    taking this run's lock there waited for the test that started it.
    """
    global _locks
    workerinput = getattr(config, "workerinput", None)
    run = workerinput.get("testrunuid") if isinstance(workerinput, dict) else None
    if not run:
        return None
    if _locks is None:
        base = os.path.join(tempfile.gettempdir(), f"easync-tests-{run}")
        # held for the process's life
        _locks = (open(base + ".gate", "ab"), open(base + ".lock", "ab"))  # noqa: SIM115
    return _locks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Iterator[None]:
    locks = _lock_files(item.config)
    if locks is None:
        yield
        return
    gate, lock = locks
    fcntl.flock(gate, fcntl.LOCK_EX)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX if item.get_closest_marker("solo") else fcntl.LOCK_SH)
    finally:
        fcntl.flock(gate, fcntl.LOCK_UN)
    try:
        yield
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
