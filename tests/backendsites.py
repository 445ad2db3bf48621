"""``twistd easync`` on the SQL store or on the CRM store (the fake CRM in its own
process), for the end-to-end suites that must hold on both backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from easync_server import RunningServer
from test_e2e_crm import FakeCrmProcess

BACKENDS = ["sql", "crm"]


@contextmanager
def started(tmp_path_factory: pytest.TempPathFactory, backend: str, name: str,
            users: Iterable[str] = (), password: str = "", args: Iterable[str] = (),
            poll: float = 0.3) -> Iterator[tuple[RunningServer, FakeCrmProcess | None]]:
    """A running server on ``backend`` ("sql" or "crm"; for "crm" a fake CRM process
    and the --crm-* options, the CRM polled every ``poll`` s), with ``users`` made on
    both sides (with ``password`` and ActiveSync on); both stopped at the end."""
    work: Path = tmp_path_factory.mktemp(f"{name}-{backend}")
    crm = None
    options = list(args)
    if backend == "crm":
        crm = FakeCrmProcess(tmp_path_factory.mktemp(f"{name}-fakecrm"))
        (work / "crm.key").write_text("adminKEY123\n")
        options += ["--backend", "crm", "--crm-url", crm.url, "--crm-user", "admin",
                    "--crm-access-key-file", str(work / "crm.key"),
                    "--crm-poll-interval", str(poll)]
    srv = RunningServer(work, options)
    try:
        srv.start()
        for user in users:
            add_user(srv, crm, user, password)
        yield srv, crm
    finally:
        srv.stop()
        if crm is not None:
            crm.stop()


def add_user(srv: RunningServer, crm: FakeCrmProcess | None, name: str, password: str
             ) -> None:
    """A user with ActiveSync on, in the CRM too when there is one."""
    if crm is not None:
        crm("add_user", name=name, email=f"{name}@example.org")
    srv.add_user(name, password, email=f"{name}@example.org")
