"""The device cap of the SQL store (issue #10 point 7), on SQLite and PostgreSQL:
``save_device(..., max_devices=N)`` counts and inserts in one write transaction.

The fixtures (``db_url``: SQLite, and PostgreSQL on 127.0.0.1:5432, see tests/needs.py) and
their parameters are test_store_contract's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from test_store_contract import (  # noqa: F401 - fixtures and their parameters
    _reactor,
    db_url,
    pg_database,
    pytest_generate_tests,
)
from twisted.internet.defer import DeferredList

from backends.sql.store import SqlStore
from easync.errors import TooManyDevices
from easync.model import StateWrite, User


@pytest_twisted.async_yield_fixture()
async def store(db_url: str) -> AsyncIterator[SqlStore]:  # noqa: F811 - the fixture
    s = SqlStore(_reactor(), db_url)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest_twisted.async_fixture()
async def user(store: SqlStore) -> User:
    return await store.add_user("Carla", "hash", None, True)


async def _ids(store: SqlStore, user: User) -> list[str]:
    return [d["device_id"] for d in await store.list_devices(user)]


@pytest_twisted.ensureDeferred
async def test_new_device_over_the_cap_is_refused(store: SqlStore, user: User) -> None:
    """Issue #10 point 7: with max_devices=2 a third DeviceId raises TooManyDevices
    and stores nothing; the two known ones still save; another user has a cap of his
    own; removing a device frees a slot; 0 is no cap."""
    await store.save_device(user, "D1", device_type="iPhone", max_devices=2)
    await store.save_device(user, "D2", device_type="iPhone", max_devices=2)
    with pytest.raises(TooManyDevices) as info:
        await store.save_device(user, "D3", device_type="iPhone", max_devices=2)
    assert info.value.count == 2 and info.value.limit == 2
    assert await store.get_device(user, "D3") is None
    # known devices keep saving (an update is not a new device)
    dev = await store.save_device(user, "D1", user_agent="iOS/18", max_devices=2)
    assert dev["user_agent"] == "iOS/18"
    other = await store.add_user("dario", None, None, True)
    await store.save_device(other, "D3", max_devices=2)
    await store.save_state(user, StateWrite("D1", "folders", {"k": 1}))
    await store.delete_device(user, "D1")
    await store.save_device(user, "D3", max_devices=2)
    assert await _ids(store, user) == ["D2", "D3"]
    for n in range(5):
        await store.save_device(user, f"X{n}")              # no cap given: none
    await store.save_device(user, "Y", max_devices=0)
    assert len(await _ids(store, user)) == 8


@pytest_twisted.ensureDeferred
async def test_twenty_new_devices_at_once_cap_five(store: SqlStore, user: User) -> None:
    """Issue #10 point 7: 20 new DeviceIds saved at the same time with a cap of 5:
    exactly 5 are stored, 15 refused (the count and the insert are one transaction,
    serialised per user on PostgreSQL's READ COMMITTED too)."""
    calls = [store.save_device(user, f"P{n:02}", device_type="Android", max_devices=5)
             for n in range(20)]
    results: list[tuple[bool, Any]] = await DeferredList(calls, consumeErrors=True)
    saved = [r for ok, r in results if ok]
    refused = [r for ok, r in results if not ok]
    assert len(saved) == 5, [r for ok, r in results]
    assert len(refused) == 15 and all(f.check(TooManyDevices) for f in refused)
    assert len(await _ids(store, user)) == 5


@pytest_twisted.ensureDeferred
async def test_same_new_device_twice_at_once(store: SqlStore, user: User) -> None:
    """Two first requests of one new device at the same time: one row, no error."""
    results = await DeferredList([store.save_device(user, "SAME", max_devices=5)
                                  for _ in range(6)], consumeErrors=True)
    assert all(ok for ok, _ in results), results
    assert await _ids(store, user) == ["SAME"]
