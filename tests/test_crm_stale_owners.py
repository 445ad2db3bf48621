"""``--workers`` on the CRM store: one process polls the CRM while another loads a
user's records for the first time.  The poll reads who is mapped to which CRM user
before its query; a user whose first load another process began after that read was
missing from it, and their records read as "reassigned to no easync user": the
mirror's row was tombstoned while the item stayed, and the next poll added the record
again — a duplicate event on the phone, and a Ping answered Status 2 for nothing
(seen as a flake of test_crm_shares_workers: Status 2 where 7 was due).

Here the poll's stale view is given to the mirror's write as it is in that race (an
empty owners map), after the load; the record must stay one item, unchanged, and the
next poll must find nothing to do.  MS-ASCMD 2.2.3.177.17: a Sync reports only what
changed; a duplicate Add of an unchanged record is data the user did not make."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from crmtest import make_env
from fakecrm import FakeCrm
from test_crm_store import event_fields, feed

from backends.crm import mirror


@pytest_twisted.ensureDeferred
async def test_a_poll_that_read_the_owners_before_a_load_changes_nothing(
        tmp_path: Path) -> None:
    crm = FakeCrm("vtiger")
    crm.add_user("anna")
    crm.add_record("Events", event_fields("AnnaOwn"), owner="anna")
    env = await make_env(tmp_path, crm=crm, users=("anna",))
    try:
        anna = env.users["anna"]
        cal = (await env.folders("anna"))["Calendar"]
        loaded = await feed(env, "anna", cal)             # the first load (process A)
        assert [d["Subject"] for d in loaded.values()] == ["AnnaOwn"]
        folder = next(f for f in await env.store.list_folders(anna)
                      if f.server_id == cal)
        high = folder.modseq
        # process B's poll: owners and folders read before A mapped anna
        rows = await env.client.query("SELECT * FROM Events;")
        ctx = await env.store.context()
        batch = mirror.Incoming("Events", records=rows, path="query")
        await env.store._run(mirror.apply_incoming, batch, {}, {}, ctx, write=True)
        await env.store.poll_once()
        await env.store.poll_once()
        assert await feed(env, "anna", cal, high) == {}, "a change for nothing"
        now = await feed(env, "anna", cal)
        assert [d["Subject"] for d in now.values() if d] == ["AnnaOwn"]
        assert list(now) == list(loaded)
    finally:
        await env.close()
