"""The CRM store: a poll that runs while a device's write is still creating records
does not mirror those records a second time (issue 8: 520 events from one phone came
back to a second phone 700 times)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from crmtest import make_env, reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from easync.model import Op


def event(n: int) -> dict[str, Any]:
    return {"Subject": f"slot {n}", "StartTime": f"202712{n + 1:02d}T090000Z",
            "EndTime": f"202712{n + 1:02d}T100000Z", "UID": f"SLOT-{n}"}


@pytest_twisted.ensureDeferred
async def test_poll_during_a_device_write_makes_no_duplicates(tmp_path: Path) -> None:
    env = await make_env(tmp_path)
    try:
        user = env.users["dana"]
        cal = (await env.folders("dana"))["Calendar"]
        await env.store.poll_once()                 # the poller's cursor starts now
        await deferLater(reactor(), 1.1, lambda: None)
        env.crm.delay = 0.05                        # each CRM answer takes 50 ms
        write: Deferred[Any] = env.store.apply(
            user, cal, [Op("add", data=event(n), ref=f"c{n}", cls="Calendar")
                        for n in range(6)])
        for _ in range(200):                        # until the CRM has some of them
            if len(env.crm.live("Events")) >= 2:
                break
            await deferLater(reactor(), 0.01, lambda: None)
        assert not write.called and len(env.crm.live("Events")) < 6
        await env.store.poll_once()                 # sees records the write has not recorded
        results = await write
        assert all(r.ok for r in results)
        env.crm.delay = 0.0
        await env.store.poll_once()
        batch = await env.store.changes_since(user, cal, 0, 100)
        subjects = sorted(c.item.data["Subject"] for c in batch.changes if c.item)
        assert subjects == sorted(f"slot {n}" for n in range(6))
        assert sorted(r.server_id for r in results) == sorted(
            c.server_id for c in batch.changes if c.item)
    finally:
        await env.close()
