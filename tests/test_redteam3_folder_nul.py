"""Red team 3: a folder name with a NUL character (sent as WBXML OPAQUE data, which
may hold any byte, MS-ASWBXML) through ``twistd easync`` on SQLite and on PostgreSQL
(skipped, with the reason, when PostgreSQL is not reachable; CI=true: failed).

PostgreSQL cannot store a NUL in text: FolderCreate and FolderUpdate with such a
DisplayName were answered HTTP 500 with a traceback in the log.  MS-ASCMD
2.2.3.177.3 (FolderCreate) / 2.2.3.177.6 (FolderUpdate): Status 10, "incorrectly formatted request"; nothing is
created or renamed (the brief: bad input changes no stored data).
"""

from __future__ import annotations

from collections.abc import Iterator

import needs
import pytest
from easync_server import RunningServer
from pgtest import started_pg_server
from rawclient import RawDevice, parse_xml, wbxml_to_xml

from easync.wbxml.codec import encode
from easync.wbxml.element import Element

pytestmark = needs.mark(needs.libwbxml())

PASSWORD = "folder-Nul-pw1"
NS = "FolderHierarchy:"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningServer]:
    if request.param == "sqlite":
        srv = RunningServer(tmp_path_factory.mktemp("rt3fnul")).start()
        try:
            srv.add_user("anna", PASSWORD)
            yield srv
        finally:
            srv.stop()
    else:
        with started_pg_server(tmp_path_factory, "rt3fnul") as srv:
            srv.add_user("anna", PASSWORD)
            yield srv


def _folder_sync(d: RawDevice) -> tuple[str, dict[str, str]]:
    r = d.call("FolderSync", f'<FolderSync xmlns="{NS}"><SyncKey>0</SyncKey></FolderSync>')
    assert r is not None
    return r.text_of(NS + "SyncKey"), {a.text_of(NS + "DisplayName"): a.text_of(NS + "ServerId")
                                       for a in r.iter(NS + "Add")}


def _post(d: RawDevice, cmd: str, root: Element) -> str:
    r = d.post(cmd, encode(root))
    assert r.status_code == 200, (cmd, r.status_code)
    return parse_xml(wbxml_to_xml(r.content)).text_of(NS + "Status")


def test_a_nul_in_a_folder_name_is_status_10(server: RunningServer) -> None:
    d = RawDevice(server.url, "anna", PASSWORD, "fnul1")
    d.provision()
    key, folders = _folder_sync(d)
    before = len(server.log_text())

    create = Element(NS + "FolderCreate")
    create.add(NS + "SyncKey", key)
    create.add(NS + "ParentId", "0")
    create.add(NS + "DisplayName").opaque = b"Work\x00Contacts"
    create.add(NS + "Type", "14")
    assert _post(d, "FolderCreate", create) == "10"

    update = Element(NS + "FolderUpdate")
    update.add(NS + "SyncKey", key)
    update.add(NS + "ServerId", folders["Contacts"])
    update.add(NS + "ParentId", "0")
    update.add(NS + "DisplayName").opaque = b"Cont\x00acts"
    assert _post(d, "FolderUpdate", update) == "10"

    log = server.log_text()[before:]
    assert "Traceback" not in log and "unexpected error" not in log
    key, after = _folder_sync(d)
    assert after == folders                        # nothing created, nothing renamed

    # a name without the NUL is created
    create = Element(NS + "FolderCreate")
    create.add(NS + "SyncKey", key)
    create.add(NS + "ParentId", "0")
    create.add(NS + "DisplayName").opaque = b"Work Contacts"
    create.add(NS + "Type", "14")
    assert _post(d, "FolderCreate", create) == "1"


def _sync_status(d: RawDevice, key: str, collection: bytes) -> tuple[str, str | None]:
    """(collection Status, top-level Status) of a Sync naming ``collection`` (OPAQUE)."""
    root = Element("AirSync:Sync")
    col = root.add("AirSync:Collections").add("AirSync:Collection")
    col.add("AirSync:SyncKey", key)
    col.add("AirSync:CollectionId").opaque = collection
    r = d.post("Sync", encode(root))
    assert r.status_code == 200, r.status_code
    doc = parse_xml(wbxml_to_xml(r.content))
    return (doc.text_of("AirSync:Collections/AirSync:Collection/AirSync:Status"),
            doc.text_of("AirSync:Status"))


def _ping_status(d: RawDevice, folder: bytes) -> str:
    root = Element("Ping:Ping")
    root.add("Ping:HeartbeatInterval", "60")
    f = root.add("Ping:Folders").add("Ping:Folder")
    f.add("Ping:Id").opaque = folder
    f.add("Ping:Class", "Contacts")
    r = d.post("Ping", encode(root))
    assert r.status_code == 200, r.status_code
    return parse_xml(wbxml_to_xml(r.content)).text_of("Ping:Status")


def test_a_nul_in_a_collection_id_is_an_unknown_collection(server: RunningServer) -> None:
    """A Sync or Ping naming a CollectionId with a NUL: the same answer as for any
    folder the user does not have (MS-ASCMD 2.2.3.177.17 Sync Status 12, 2.2.3.177.12
    Ping Status 7: sync the hierarchy again), never HTTP 500 (PostgreSQL: the request's
    read of the sync states failed on the NUL)."""
    d = RawDevice(server.url, "anna", PASSWORD, "fnul2")
    d.provision()
    _key, folders = _folder_sync(d)
    contacts = folders["Contacts"]
    r = d.call("Sync", f'<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>0</SyncKey>'
                       f'<CollectionId>{contacts}</CollectionId></Collection></Collections></Sync>')
    assert r is not None
    skey = r.text_of("AirSync:Collections/AirSync:Collection/AirSync:SyncKey")
    before = len(server.log_text())
    unknown = _sync_status(d, skey, b"999999")
    assert _sync_status(d, skey, b"99\x009999") == unknown
    assert _sync_status(d, skey, contacts.encode() + b"\x00") == unknown
    assert _ping_status(d, b"99\x00") == _ping_status(d, b"999999")
    log = server.log_text()[before:]
    assert "Traceback" not in log and "unexpected error" not in log
