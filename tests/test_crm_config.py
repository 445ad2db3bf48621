"""``--backend crm`` / ``--auth crm`` options: command line, TOML file, checks, wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from easync.tap import Options, makeService

URL = "https://crm.example.org/vte/webservice.php"


def parse(*args: str) -> Options:
    o = Options()
    o.parseOptions(list(args))
    return o


def test_crm_options_from_the_command_line_and_defaults(tmp_path: Path) -> None:
    o = parse("--backend", "crm", "--crm-url", URL, "--crm-user", "easync",
              "--crm-access-key-file", str(tmp_path / "k"), "--crm-poll-interval", "2.5")
    assert (o["backend"], o["crm-url"], o["crm-user"], o["crm-poll-interval"],
            o["crm-timeout"], o["crm-timezone"]) == ("crm", URL, "easync", 2.5, 30.0, "auto")
    assert parse()["crm-poll-interval"] == 15.0


def test_crm_options_from_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "easync.toml"
    conf.write_text(f'backend = "crm"\ncrm-url = "{URL}"\ncrm-user = "easync"\n'
                    f'crm-access-key-file = "/etc/easync/crm-key"\ncrm-poll-interval = 5\n'
                    'crm-timezone = "Europe/Rome"\n')
    o = parse("--config", str(conf), "--crm-poll-interval", "7")
    assert (o["backend"], o["crm-url"], o["crm-poll-interval"], o["crm-timezone"]) == (
        "crm", URL, 7.0, "Europe/Rome")


@pytest.mark.parametrize("args,message", [
    (["--backend", "crm"], "crm-url"),
    (["--backend", "crm", "--crm-url", "https://crm.example.org/index.php"], "crm-url"),
    (["--backend", "crm", "--crm-url", URL], "crm-user and crm-access-key-file"),
    (["--auth", "crm"], "crm-url"),
    (["--backend", "crm", "--crm-url", URL, "--crm-user", "u", "--crm-access-key-file", "k",
      "--crm-timezone", "Mars/Olympus"], "unknown zone"),
    (["--crm-poll-interval", "0"], "more than 0"),
])
def test_bad_crm_options_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message):
        parse(*args)


def test_workers_with_the_crm_backend_need_postgresql_only() -> None:
    """--workers N with --backend crm: one process polls the CRM (the one holding the
    poller's advisory lock, tests/test_e2e_crm_workers.py); like any --workers N it
    needs a PostgreSQL database."""
    crm = ["--backend", "crm", "--crm-url", URL, "--crm-user", "u",
           "--crm-access-key-file", "k", "--workers", "2"]
    o = parse(*crm, "--db", "postgresql://x@127.0.0.1/db")
    assert (o["workers"], o["backend"]) == (2, "crm")
    with pytest.raises(usage.UsageError, match="postgresql"):
        parse(*crm, "--db", "sqlite:///e.sqlite")


def test_make_service_builds_the_crm_store(tmp_path: Path) -> None:
    key = tmp_path / "crm-key"
    key.write_text("the-key\n")
    args = ["--backend", "crm", "--crm-url", URL, "--crm-user", "easync",
            "--crm-access-key-file", str(key), "--db", f"sqlite:///{tmp_path}/e.sqlite",
            "--listen", "tcp:0:interface=127.0.0.1", "--secret-key", str(tmp_path / "s.key")]
    top = makeService(parse(*args), MemoryReactorClock())
    crm = top.getServiceNamed("crm")
    assert crm.client.url == URL and crm.client.username == "easync"
    assert crm.client._access_key == "the-key" and crm.poll_interval == 15.0
    key.write_text("")
    with pytest.raises(usage.UsageError, match="empty"):
        makeService(parse(*args), MemoryReactorClock())
    with pytest.raises(usage.UsageError, match="crm-access-key-file"):
        makeService(parse(*[a if a != str(key) else str(tmp_path / "missing")
                            for a in args]), MemoryReactorClock())
