"""The CRM store's write journal (issue #9, point 12): a device's Add is written down
before the CRM is asked to create it, so that a failure between the CRM accepting the
record and the mirror recording it (a crash, an answer lost to a timeout) does not
make a second record when the device repeats the Add.  The failure is injected
between the two: the mirror's commit raises, or the CRM's answer comes too late."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from crmtest import make_env, reactor
from twisted.internet.task import deferLater

from backends.crm import mirror
from backends.crm.store import CrmStore
from easync.errors import Unavailable
from easync.model import Op, StateWrite

PHONE = "PHONE1"


def adds(*people: tuple[str, str]) -> list[Op]:
    return [Op("add", data={"FirstName": first, "LastName": last, "Categories": ["Phone"]},
               ref=f"c{n}", cls="Contacts") for n, (first, last) in enumerate(people)]


def state_of(folder: str) -> StateWrite:
    return StateWrite(PHONE, "sync:" + folder, {},
                      build=lambda res: {"ids": [r.server_id for r in res]})


async def journal_rows(env: Any) -> int:
    ((n,),) = await env.sql.raw_query("SELECT count(*) FROM crm_journal")
    return int(n)


async def live(env: Any, folder: str) -> dict[str, Any]:
    b = await env.store.changes_since(env.users["dana"], folder, 0, 1000)
    return {c.server_id: c.item.data for c in b.changes if c.item is not None}


def crash_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next commit of a device write fails after the CRM accepted its records (as
    a crash of the process there would)."""
    real = mirror.commit_device_write

    def crash(*args: Any, **kw: Any) -> Any:
        monkeypatch.setattr(mirror, "commit_device_write", real)
        raise RuntimeError("crashed before the mirror recorded the CRM's answer")

    monkeypatch.setattr(mirror, "commit_device_write", crash)


@pytest.mark.parametrize("flavour", ["vtiger", "vtenext"])
@pytest.mark.parametrize("restart", [False, True])
@pytest_twisted.ensureDeferred
async def test_crash_after_the_crm_accepted_an_add_makes_no_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str,
        restart: bool) -> None:
    env = await make_env(tmp_path, flavour=flavour)
    try:
        u = env.users["dana"]
        f = (await env.folders("dana"))["Contacts"]
        ops = adds(("Jo", "Once"), ("Jo", "Once"), ("Al", "Twice"))   # two alike
        crash_once(monkeypatch)
        with pytest.raises(RuntimeError):
            await env.store.apply(u, f, ops, state_of(f))
        assert len(env.crm.live("Contacts", "dana")) == 3      # the CRM has them
        assert await live(env, f) == {} and await journal_rows(env) == 3
        store = env.store
        if restart:
            # a new process on the same database: the journal is read at start
            store = CrmStore(reactor(), env.sql, env.client, notifier=env.hub,
                             poll_interval=60)
            await store.open()
            store.startService()
            for _ in range(100):
                if not await journal_rows(env):
                    break
                await deferLater(reactor(), 0.05, lambda: None)
            assert await journal_rows(env) == 0
        # the phone repeats the request
        res = await store.apply(u, f, ops, state_of(f))
        assert all(r.ok for r in res) and len({r.server_id for r in res}) == 3
        assert len(env.crm.live("Contacts", "dana")) == 3
        items = await live(env, f)
        assert sorted(items) == sorted(r.server_id for r in res)
        assert sorted((d["FirstName"], d["LastName"]) for d in items.values()) == [
            ("Al", "Twice"), ("Jo", "Once"), ("Jo", "Once")]
        assert all(d["Categories"] == ["Phone"] for d in items.values())   # the overlay
        assert await env.sql.get_state(u, PHONE, "sync:" + f) == {
            "ids": [r.server_id for r in res]}
        await store.poll_once()
        assert sorted(await live(env, f)) == sorted(items)
        if store is not env.store:
            store.stopService()
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_an_answer_lost_to_a_timeout_makes_no_duplicate(tmp_path: Path) -> None:
    env = await make_env(tmp_path, flavour="vtiger", timeout=0.3)
    try:
        u = env.users["dana"]
        f = (await env.folders("dana"))["Contacts"]
        ops = adds(("Late", "Answer"))
        env.crm.delay = 1.0                     # the CRM creates it, answers too late
        with pytest.raises(Unavailable, match="within"):
            await env.store.apply(u, f, ops, state_of(f))
        env.crm.delay = 0.0
        await deferLater(reactor(), 1.0, lambda: None)
        assert len(env.crm.live("Contacts", "dana")) == 1
        (res,) = await env.store.apply(u, f, ops, state_of(f))
        assert res.ok and len(env.crm.live("Contacts", "dana")) == 1
        assert list(await live(env, f)) == [res.server_id]
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_the_poller_mirroring_the_record_first_still_makes_one_item(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = await make_env(tmp_path, flavour="vtiger")
    try:
        u = env.users["dana"]
        f = (await env.folders("dana"))["Contacts"]
        await env.store.poll_once()
        ops = adds(("Seen", "First"))
        crash_once(monkeypatch)
        with pytest.raises(RuntimeError):
            await env.store.apply(u, f, ops, state_of(f))
        # (another process's poller would see it now: the journal row is not in flight)
        env.store.reconcile = _nothing  # type: ignore[method-assign]
        await env.store.poll_once()
        (sid,) = await live(env, f)
        del env.store.reconcile
        (res,) = await env.store.apply(u, f, ops, state_of(f))
        assert res.ok and res.server_id == sid
        assert len(env.crm.live("Contacts", "dana")) == 1
        assert list(await live(env, f)) == [sid]
        assert (await live(env, f))[sid]["Categories"] == ["Phone"]
    finally:
        await env.close()


async def _nothing(*_args: Any) -> list[Any]:
    return []


@pytest_twisted.ensureDeferred
async def test_the_journal_row_is_written_before_the_create(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        u = env.users["dana"]
        f = (await env.folders("dana"))["Contacts"]
        seen: list[int] = []
        real = env.client.create

        async def create(module: str, element: dict[str, Any], **kw: Any) -> Any:
            seen.append(await journal_rows(env))
            return await real(module, element, **kw)

        env.client.create = create  # type: ignore[method-assign]
        res = await env.store.apply(u, f, adds(("A", "B")), state_of(f))
        assert seen == [1] and res[0].ok
        assert await journal_rows(env) == 0     # dropped with the commit
        # a record the CRM refuses: no row left behind
        env.crm.fail_next = [("MANDATORY_FIELDS_MISSING", "lastname does not have a value")]
        env.crm.fail_ops = {"create"}
        (r,) = await env.store.apply(u, f, adds(("C", "D")), state_of(f))
        assert not r.ok and await journal_rows(env) == 0
    finally:
        await env.close()


@pytest_twisted.ensureDeferred
async def test_a_create_that_never_reached_the_crm_is_sent_again(tmp_path: Path) -> None:
    env = await make_env(tmp_path, timeout=1.0)
    try:
        u = env.users["dana"]
        f = (await env.folders("dana"))["Contacts"]
        env.crm.down = True
        with pytest.raises(Unavailable):
            await env.store.apply(u, f, adds(("Never", "Sent")), state_of(f))
        assert await journal_rows(env) == 1 and env.crm.live("Contacts", "dana") == []
        env.crm.down = False
        (res,) = await env.store.apply(u, f, adds(("Never", "Sent")), state_of(f))
        assert res.ok and [r["lastname"] for r in env.crm.live("Contacts", "dana")] == [
            "Sent"]
        assert await journal_rows(env) == 0 and list(await live(env, f)) == [res.server_id]
    finally:
        await env.close()
