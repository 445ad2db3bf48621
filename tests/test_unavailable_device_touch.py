"""A database that stops answering while a request records its device (the device row
written after the login, ``ActiveSyncResource._touch_device``) is answered 503 with
Retry-After, as everywhere else (DESIGN: ``Unavailable`` → 503), with a log line naming
the request — not a 500 with a critical traceback.  Found by the fleet benchmark's
descriptor-exhaustion run (tests/test_bench_fleet.py), where a new database connection
failed exactly there.  MS-ASHTTP 2.2.2.1.1 lets HTTP 503 through to the device, which
retries later; a 500 reads as a server bug."""

from __future__ import annotations

import base64
from typing import Any

import pytest_twisted
from sqlserver import listening_site
from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from backends.sql.store import SqlStore
from easync.errors import Unavailable
from easync.handler import EasServer
from easync.notify import LocalNotifier
from easync.settings import Settings

PASSWORD = "touch-test-password"


class FailingAfterLogin(SqlStore):
    """A SQLite store whose device reads and writes fail as a database out of
    connections does (``broken`` names which)."""

    broken: frozenset[str] = frozenset()

    def save_device(self, *args: Any, **kwargs: Any) -> Any:
        if "save_device" in self.broken:
            return fail(Unavailable("database unavailable: this process is out of file "
                                    "descriptors (ulimit -n)"))
        return super().save_device(*args, **kwargs)


@pytest_twisted.async_yield_fixture
async def site(tmp_path: Any) -> Any:
    store = FailingAfterLogin(reactor, f"sqlite:///{tmp_path / 'touch.sqlite'}")
    base, _door, port = await listening_site(store, {"tess": (PASSWORD, True)})
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield base, store, events
    globalLogPublisher.removeObserver(events.append)
    await port.stopListening()
    await store.close()


async def folder_sync(base: str, device: str) -> tuple[int, Headers]:
    auth = base64.b64encode(f"tess:{PASSWORD}".encode()).decode()
    url = (f"{base}/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=tess&DeviceId={device}"
           "&DeviceType=iPhone")
    headers = Headers({b"Authorization": [f"Basic {auth}".encode()],
                       b"MS-ASProtocolVersion": [b"14.1"],
                       b"Content-Type": [b"application/vnd.ms-sync.wbxml"]})
    from io import BytesIO

    from twisted.web.client import FileBodyProducer

    # FolderSync, SyncKey 0 (MS-ASCMD 2.2.1.5), WBXML
    body = bytes.fromhex("03016a00000756520330000101")
    resp = await Agent(reactor).request(b"POST", url.encode(), headers,
                                        FileBodyProducer(BytesIO(body)))
    await readBody(resp)
    return resp.code, resp.headers


@pytest_twisted.ensureDeferred
async def test_a_device_write_that_cannot_be_made_is_503(site: Any) -> None:
    base, store, events = site
    store.broken = frozenset({"save_device"})
    code, headers = await folder_sync(base, "TOUCHDEV1")
    assert code == 503
    assert headers.getRawHeaders(b"retry-after") == [b"30"]
    critical = [e for e in events if e.get("log_level") is not None
                and e["log_level"].name == "critical"]
    assert not critical, critical
    lines = [e.get("log_format", "") for e in events]
    assert not any("unexpected error" in ln for ln in lines), lines
    # and once the database answers again, the same device is served
    store.broken = frozenset()
    code, _ = await folder_sync(base, "TOUCHDEV1")
    assert code == 200
    line = [e for e in events if "unavailable: database unavailable" in
            str(e.get("note", "")) + str(e.get("log_format", ""))]
    assert line, [e.get("log_format") for e in events][-10:]


def test_any_other_step_that_meets_an_unavailable_store_is_503_too() -> None:
    """The request's last resort (``_crash``, the errback of the whole POST): a store's
    ``Unavailable`` from a step with no answer of its own is 503 with Retry-After and a
    line, not "unexpected error" and 500."""
    import time

    from twisted.python.failure import Failure
    from twisted.web.test.requesthelper import DummyRequest

    from easync.http.resource import ActiveSyncResource

    server = EasServer(users=None, items=None, state=None,
                       notifier=LocalNotifier(reactor), clock=reactor, settings=Settings())
    resource = ActiveSyncResource(server, door=None)  # type: ignore[arg-type]
    request = DummyRequest([b""])
    request.channel = object()  # (a connection still open)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        resource._crash(Failure(Unavailable("database unavailable: connection lost")),
                        request, "Sync", time.monotonic())
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert request.responseCode == 503
    assert request.responseHeaders.getRawHeaders(b"retry-after") == [b"30"]
    assert request.finished
    assert not [e for e in events if "unexpected error" in str(e.get("log_format"))]
    assert [e for e in events if "unavailable: database unavailable: connection lost"
            in str(e.get("note", ""))]
