"""Ping's Status 2 answer as ready-made WBXML (issue #12 point 1).

MS-ASCMD 2.2.1.13: a Ping woken by a change answers ``Ping/Status`` 2 with the
``Folders/Folder`` that changed.  When one change wakes thousands of Pings on the same
folder list, the answer is encoded once per folder list, not once per Ping; its bytes
must be what the encoder (and libwbxml) make of the same tree.
"""

from __future__ import annotations

import needs
import pytest
import pytest_twisted
from sqlserver import memory_server
from test_ping import folders_of, held, ping_body, prime, start_ping, status
from test_push_fanout import sync_add
from wbxmltool import canonical, from_libwbxml_xml, libwbxml_decode

from easync.commands import ping
from easync.settings import Settings
from easync.wbxml import decode, encode

FOLDER_LISTS = [("1",), ("2", "3"), ("abc-123", "x" * 64, "7"), ()]


@pytest.mark.parametrize("folders", FOLDER_LISTS)
def test_ready_made_status_2_is_the_encoders_answer(folders: tuple[str, ...]) -> None:
    """Same tree, same bytes as the per-answer path (``_status`` then ``encode``)."""
    resp = ping._changed(list(folders))
    want = ping._status("2", folders=list(folders))
    assert resp.status == "2" and resp.http_status == 200
    assert resp.wbxml == encode(want.body)
    assert canonical(decode(resp.wbxml)) == canonical(want.body)


@needs.mark(needs.libwbxml())
def test_ready_made_status_2_reads_back_in_libwbxml() -> None:
    resp = ping._changed(["2", "3"])
    back = from_libwbxml_xml(libwbxml_decode(resp.wbxml))
    assert canonical(back) == canonical(ping._status("2", folders=["2", "3"]).body)


def test_the_encoder_runs_once_per_folder_list() -> None:
    ping._changed_answer.cache_clear()
    for _ in range(100):
        ping._changed(["9", "8"])
    ping._changed(["9"])
    info = ping._changed_answer.cache_info()
    assert (info.misses, info.hits) == (2, 99)
    assert ping._changed(["9", "8"]).wbxml is ping._changed(["9", "8"]).wbxml


@pytest_twisted.ensureDeferred
async def test_woken_pings_answer_with_the_ready_made_bytes(tmp_path) -> None:
    """Two devices' Pings woken by a third device's Sync (CMD 2.2.1.13 Status 2): both
    answers carry the same ready-made bytes, which decode to their body."""
    settings = Settings(heartbeat_min=30, heartbeat_max=600, max_ping_folders=3)
    async with memory_server(tmp_path, "", ("zoe", "zoe@example.org"), clocked=True,
                             settings=settings) as (server, user, store):
        cid = {f.name: f.server_id for f in await store.list_folders(user)}["Contacts"]
        for device in ("devA", "devB"):
            await prime(server, user, cid, device)
        key_c = await prime(server, user, cid, "devC")
        ping._changed_answer.cache_clear()
        a = start_ping(server, user, ping_body(300, [cid]), "devA")
        b = start_ping(server, user, ping_body(300, [cid]), "devB")
        await held(server, 2)
        await sync_add(server, user, cid, "devC", key_c)
        answers = [await a, await b]
        for resp in answers:
            assert status(resp) == "2" and folders_of(resp) == [cid]
            assert resp.wbxml == encode(resp.body)
        assert answers[0].wbxml is answers[1].wbxml
        assert ping._changed_answer.cache_info().misses == 1
