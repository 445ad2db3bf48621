"""Push for writes made by another process to a SQLite database (backends.sql.poller).

Two ``SqlStore`` on one file stand for the server and ``easync-admin``; the last test
runs the real thing: ``twistd easync`` on SQLite, a device holding a Ping, and an
``easync-admin import`` in another process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import needs
import pytest
import pytest_twisted
from hubtest import Heard
from twisted.internet.task import deferLater

from backends.sql.poller import SqlitePoller
from backends.sql.store import SqlStore
from easync.model import Op, User
from easync.notify import LocalNotifier


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await deferLater(_reactor(), 0.01)


class Env:
    def __init__(self, server: SqlStore, cli: SqlStore, hub: LocalNotifier,
                 poller: SqlitePoller, users: dict[str, User],
                 folders: dict[str, dict[str, str]]) -> None:
        self.server, self.cli, self.hub, self.poller = server, cli, hub, poller
        self.users, self.folders = users, folders


@pytest_twisted.async_yield_fixture()
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    url = f"sqlite:///{tmp_path / 'easync.sqlite'}"
    server, cli = SqlStore(_reactor(), url), SqlStore(_reactor(), url)
    await server.open()
    await cli.open()
    users = {name: await server.add_user(name, None, None, True) for name in ("alice", "bob")}
    folders = {name: {f.name: f.server_id for f in await server.list_folders(u)}
               for name, u in users.items()}
    hub = LocalNotifier(_reactor())
    poller = SqlitePoller(_reactor(), server, hub)
    try:
        yield Env(server, cli, hub, poller, users, folders)
    finally:
        await cli.close()
        await server.close()


async def add_contact(store: SqlStore, user: User, folder: str) -> None:
    [r] = await store.apply(user, folder, [Op("add", data={"FirstName": "X"}, cls="Contacts")])
    assert r.ok


@pytest_twisted.ensureDeferred
async def test_outside_write_wakes_only_that_folder_of_that_user(env: Env) -> None:
    alice, bob = env.users["alice"], env.users["bob"]
    a_contacts, a_calendar = env.folders["alice"]["Contacts"], env.folders["alice"]["Calendar"]
    assert await env.poller.poll_once() == 0           # nobody waits
    target = Heard(env.hub, alice.id, [a_contacts, "hierarchy"])
    other_folder = Heard(env.hub, alice.id, [a_calendar])
    other_user = Heard(env.hub, bob.id, [env.folders["bob"]["Contacts"]])
    assert await env.poller.poll_once() == 0           # new waiters, nothing written
    await add_contact(env.cli, alice, a_contacts)      # "easync-admin import"
    assert await env.poller.poll_once() == 1
    assert target.folders == [a_contacts]
    assert not other_folder.called and not other_user.called
    assert await env.poller.poll_once() == 0           # reported once
    other_folder.stop()
    other_user.stop()


@pytest_twisted.ensureDeferred
async def test_own_writes_cost_one_pragma(env: Env) -> None:
    alice = env.users["alice"]
    contacts = env.folders["alice"]["Contacts"]
    await env.poller.poll_once()
    d = Heard(env.hub, alice.id, [contacts])
    await env.poller.poll_once()
    queries: list[str] = []
    real = env.server.raw_query

    async def counting(sql: str, params: Any = ()) -> Any:
        queries.append(sql)
        return await real(sql, params)

    env.server.raw_query = counting  # type: ignore[method-assign]
    await add_contact(env.server, alice, contacts)     # the server's own write: the
    assert await env.poller.poll_once() == 0           # protocol side published it
    assert queries == ["PRAGMA data_version"]
    assert not d.called
    d.stop()


@pytest_twisted.ensureDeferred
async def test_new_waiter_after_an_outside_write_is_woken_to_look(env: Env) -> None:
    alice = env.users["alice"]
    contacts = env.folders["alice"]["Contacts"]
    await env.poller.poll_once()
    # The waiter comes, then another process writes, then the poll: the poller has no
    # earlier values for alice, so it cannot tell whether the write was hers.
    d = Heard(env.hub, alice.id, [contacts, "hierarchy"])
    await add_contact(env.cli, env.users["bob"], env.folders["bob"]["Contacts"])
    assert await env.poller.poll_once() == 1
    assert d.folders == [contacts]                     # not "hierarchy": no Status 7


@pytest_twisted.ensureDeferred
async def test_hierarchy_and_moves_seen(env: Env) -> None:
    alice = env.users["alice"]
    contacts = env.folders["alice"]["Contacts"]
    await env.poller.poll_once()
    hier = Heard(env.hub, alice.id, ["hierarchy"])
    await env.poller.poll_once()
    await env.cli.create_folder(alice, "0", "Friends", 14)
    assert await env.poller.poll_once() == 1
    assert hier.folders == ["hierarchy"]
    folders = {f.name: f.server_id for f in await env.server.list_folders(alice)}
    await add_contact(env.cli, alice, contacts)
    [item] = (await env.server.changes_since(alice, contacts, 0, 10)).changes
    src = Heard(env.hub, alice.id, [contacts])
    dst = Heard(env.hub, alice.id, [folders["Friends"]])
    await env.poller.poll_once()                      # (alice known: the add is seen)
    assert src.called
    dst.stop()
    src = Heard(env.hub, alice.id, [contacts])
    dst = Heard(env.hub, alice.id, [folders["Friends"]])
    await env.cli.move_item(alice, item.server_id, folders["Friends"])
    assert await env.poller.poll_once() == 2
    assert src.called and dst.called


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
@pytest_twisted.ensureDeferred
async def test_the_service_polls_every_interval(env: Env) -> None:
    alice = env.users["alice"]
    contacts = env.folders["alice"]["Contacts"]
    env.poller.interval = 0.05
    env.poller.startService()
    try:
        await until(lambda: env.poller.polls >= 1)
        d = Heard(env.hub, alice.id, [contacts])
        await until(lambda: env.poller.polls >= 3)
        assert not d.called
        start = time.monotonic()
        await add_contact(env.cli, alice, contacts)
        await until(lambda: d.called, timeout=2)
        assert time.monotonic() - start < 1
    finally:
        env.poller.stopService()


# ------------------------------------------------------------------ end to end

VCARD = ("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:poller-e2e-1\r\nN:Verdi;Anna;;;\r\n"
         "FN:Anna Verdi\r\nEMAIL:anna@example.org\r\nEND:VCARD\r\n")


@pytest.mark.solo  # measures wall-clock time (tests/conftest.py)
def test_admin_import_wakes_a_held_ping(tmp_path: Path) -> None:
    """twistd easync on SQLite; a device holds a Ping on Contacts; ``easync-admin
    import`` (another process) adds a contact: the Ping answers within ~1 s."""
    needs.importable("pyactivesync")
    from easync_server import RunningServer
    from pyactivesync import Client

    srv = RunningServer(tmp_path).start()
    try:
        srv.add_user("dora", "pw-dora-1")
        os.environ["REQUESTS_CA_BUNDLE"] = str(srv.workdir / "easync.pem")
        try:
            c = Client(srv.host, "dora", "pw-dora-1", device_id="pollerdev", timeout=30)
            folder = {f.name: f.id for f in c.list_folders()}["Contacts"]
            key = c.sync_folder(folder, "0").sync_key
            key = c.sync_folder(folder, key).sync_key
            result: dict[str, Any] = {}

            def ping() -> None:
                result["ping"] = c.ping([folder], folder_class="Contacts", heartbeat=120,
                                        timeout=60)
                result["at"] = time.monotonic()

            t = threading.Thread(target=ping)
            t.start()
            time.sleep(1.5)                    # the Ping is held (and polled once)
            assert t.is_alive()
            vcf = tmp_path / "one.vcf"
            vcf.write_text(VCARD)
            srv.admin("import", "dora", str(vcf))
            written = time.monotonic()
            t.join(10)
            assert not t.is_alive()
            assert result["ping"].status == "2"
            assert result["ping"].changed_folder_ids == [folder]
            assert result["at"] - written < 1.5   # poll interval 1 s, plus the answer
            got = c.sync_folder(folder, key)
            assert [it.fields.get("Contacts.LastName") for it in got.added] == ["Verdi"]
        finally:
            os.environ.pop("REQUESTS_CA_BUNDLE", None)
    finally:
        srv.stop()
