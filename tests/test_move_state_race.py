"""MoveItems and a Sync of the same device at once (iOS sends them on two
connections): the move marks its own Delete and Add in the device's sync states so
they are not echoed back (``record_own_move``).  That mark was a read, then a plain
save: a Sync that replaced the state in between (a new SyncKey) was overwritten by the
older state, and the device's next Sync, with the key it had just been given, got
Status 3 (MS-ASCMD 2.2.3.177.17, invalid SyncKey) and a full resync.  The mark now
replaces only the state it read (``StateWrite.replaces``), and is made again on the
newer one when a Sync came first."""

from __future__ import annotations

from typing import Any

import pytest_twisted
from sqlserver import memory_server

from easync.model import Op, StateWrite
from easync.syncengine import record_own_move, state_name


class SyncInBetween:
    """The server's state store, with a Sync of the device that saves a newer state
    (the next key) right after the move's first read of ``name``."""

    def __init__(self, real: Any, user: Any, name: str) -> None:
        self.real = real
        self.user = user
        self.name = name
        self.done = False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.real, attr)

    async def get_state(self, user: Any, device_id: str, name: str) -> Any:
        st = await self.real.get_state(user, device_id, name)
        if name == self.name and not self.done:
            self.done = True
            newer = dict(st, key=st["key"] + 1, cursor=st["cursor"] + 5)
            await self.real.save_state(user, StateWrite(
                device_id, name, newer, replaces=(st["epoch"], st["key"])))
        return st


@pytest_twisted.ensureDeferred
async def test_a_sync_between_the_moves_read_and_write_keeps_its_key(tmp_path: Any
                                                                     ) -> None:
    async with memory_server(tmp_path) as (server, user, _store):
        folders = {f.name: f.server_id for f in await server.items.list_folders(user)}
        src = folders["Contacts"]
        dst = (await server.items.create_folder(user, "0", "Clients", 14)).server_id
        [res] = await server.items.apply(user, src, [Op(kind="add", data={
            "LastName": "Moved"}, ref="r", cls="Contacts")])
        assert res.server_id
        for fid in (src, dst):
            await server.state.save_state(user, StateWrite("dev1", state_name(fid), {
                "epoch": "e1", "key": 3, "cursor": 0}))
        new_id = await server.items.move_item(user, res.server_id, dst)
        real = server.state
        server.state = SyncInBetween(real, user, state_name(src))
        try:
            await record_own_move(server, user, "dev1", src, res.server_id, dst, new_id)
        finally:
            server.state = real
        st = await real.get_state(user, "dev1", state_name(src))
        assert (st["epoch"], st["key"], st["cursor"]) == ("e1", 4, 5), st   # the Sync's
        assert res.server_id in st.get("own", {}), st                       # and the mark
        dst_state = await real.get_state(user, "dev1", state_name(dst))
        assert new_id in dst_state.get("own", {}), dst_state
