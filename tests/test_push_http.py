"""Held Pings and Sync-Waits over real HTTP: the server's own Site on a real socket in
this process (so the test can look inside: the hub, the held requests), raw HTTP/1.1
bytes on a TCP client, the heartbeat on a ``Clock``.

Covers: a disconnect while held frees the waiter and no response is attempted; Sync
with Wait/HeartbeatInterval (statuses, held, woken, heartbeat); a newer long poll
ends the older; /metrics; X-Forwarded-For in the request log."""

from __future__ import annotations

import base64
import urllib.request
from typing import Any

import bcrypt
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher

from backends.sql.store import SqlStore
from easync.auth import build_door
from easync.handler import EasServer
from easync.http.resource import make_site
from easync.metrics import metrics_site, watch
from easync.model import Op
from easync.notify import LocalNotifier
from easync.settings import Settings
from easync.wbxml import E, Element, decode, encode

PASSWORD = "push-test-password"


class Raw(Protocol):
    """A TCP client that collects every byte the server sends."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(None)

    def response(self) -> tuple[int, dict[str, str], bytes] | None:
        """(HTTP code, headers, body) once a whole response is in, else None."""
        head, sep, rest = self.data.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (ln.partition(":") for ln in lines[1:])}
        length = int(headers.get("content-length", "0"))
        if len(rest) < length:
            return None
        return int(lines[0].split()[1]), headers, rest[:length]


class Web:
    def __init__(self, server: EasServer, user: Any, folders: dict[str, str], port: int,
                 metrics_port: int, site: Any) -> None:
        self.site = site
        self.server = server
        self.user = user
        self.folders = folders
        self.port = port
        self.metrics_port = metrics_port
        self.clients: list[Raw] = []

    @property
    def clock(self) -> Clock:
        return self.server.clock

    def request(self, cmd: str, body: Element | None, device: str = "devA",
                headers: dict[str, str] | None = None) -> bytes:
        data = encode(body) if body is not None else b""
        auth = base64.b64encode(f"zoe:{PASSWORD}".encode()).decode()
        head = [(f"POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User=zoe&DeviceId={device}"
                "&DeviceType=iPhone HTTP/1.1"), "Host: localhost",
                f"Authorization: Basic {auth}", "MS-ASProtocolVersion: 14.1",
                "Content-Type: application/vnd.ms-sync.wbxml", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + data

    async def send(self, cmd: str, body: Element | None, device: str = "devA",
                   headers: dict[str, str] | None = None) -> Raw:
        proto = Raw()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), proto)
        proto.transport.write(self.request(cmd, body, device, headers))
        self.clients.append(proto)
        return proto

    async def answer(self, proto: Raw, timeout: float = 5.0
                     ) -> tuple[int, dict[str, str], Element | None]:
        await until(lambda: proto.response() is not None, timeout)
        code, headers, body = proto.response()
        return code, headers, decode(body) if body else None

    async def call(self, cmd: str, body: Element | None, device: str = "devA"
                   ) -> tuple[int, dict[str, str], Element | None]:
        return await self.answer(await self.send(cmd, body, device))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as r:
            return r.read().decode()

    async def get_metrics(self) -> str:
        from twisted.internet.threads import deferToThread

        return await deferToThread(self.metrics)

    def nothing_held(self) -> bool:
        return (len(self.server.holds) == 0 and self.server.notifier.waiting == 0
                and not self.clock.getDelayedCalls())


async def until(cond: Any, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not reached")


@pytest.fixture
def log_events() -> Any:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.async_yield_fixture()
async def web(tmp_path):
    store = SqlStore(reactor, f"sqlite:///{tmp_path / 'push.sqlite'}")
    await store.open()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    user = await store.add_user("zoe", hashed, "zoe@example.org", True)
    clock = Clock()
    clock.advance(reactor.seconds())
    settings = Settings(provisioning=False, heartbeat_min=30, heartbeat_max=600,
                        trusted_proxies=("127.0.0.1",))
    server = EasServer(users=store, items=store, state=store, notifier=LocalNotifier(clock),
                       clock=clock, settings=settings)
    watch(server.metrics, server)
    site = make_site(server, build_door({"auth": "local"}, server, reactor))
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    mport = reactor.listenTCP(0, metrics_site(server.metrics), interface="127.0.0.1")
    folders = {f.name: f.server_id for f in await store.list_folders(user)}
    w = Web(server, user, folders, port.getHost().port, mport.getHost().port, site)
    yield w
    for c in w.clients:
        if c.transport is not None and c.transport.connected:
            c.transport.abortConnection()
    await port.stopListening()
    await mport.stopListening()
    await store.close()


def ping_body(heartbeat: int, *folder_ids: str) -> Element:
    return E("Ping:Ping", E("Ping:HeartbeatInterval", str(heartbeat)), E(
        "Ping:Folders", *[E("Ping:Folder", E("Ping:Id", f), E("Ping:Class", "Contacts"))
                          for f in folder_ids]))


def sync_body(cid: str, key: str, *top: Element) -> Element:
    return E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid))),
        *top)


async def prime(web: Web, cid: str, device: str = "devA") -> str:
    _c, _h, body = await web.call("Sync", sync_body(cid, "0"), device)
    key = body.find("AirSync:Collections").find("AirSync:Collection").findtext(
        "AirSync:SyncKey")
    while True:
        _c, _h, body = await web.call("Sync", sync_body(cid, key), device)
        if body is None:
            return key
        key = body.find("AirSync:Collections").find("AirSync:Collection").findtext(
            "AirSync:SyncKey")


async def add_contact(web: Web, cid: str, name: str = "New") -> None:
    await web.server.items.apply(web.user, cid, [Op(kind="add", data={"FirstName": name},
                                                    cls="Contacts")])
    web.server.notifier.publish(web.user.id, cid)


def held(web: Web, command: str = "Ping", n: int = 1) -> Any:
    return until(lambda: web.server.holds.counts[command] == n)


# -- disconnects --------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close", "reset"])
@pytest_twisted.ensureDeferred
async def test_disconnect_while_held_frees_the_waiter(web: Web, log_events: list, how: str
                                                      ) -> None:
    cid = web.folders["Contacts"]
    await prime(web, cid)
    proto = await web.send("Ping", ping_body(300, cid))
    await held(web)
    assert web.server.notifier.waiting == 1
    if how == "close":
        proto.transport.loseConnection()
    else:
        proto.transport.abortConnection()
    await proto.closed
    await until(web.nothing_held)
    assert not web.server.holds.by_device
    # later events find nothing to answer, and nothing was written to a dead request
    await add_contact(web, cid)
    web.clock.advance(600)
    await deferLater(reactor, 0.1, lambda: None)
    bad = [e for e in log_events if e.get("log_failure") is not None
           or e.get("log_level") is not None and e["log_level"].name in ("error", "critical")]
    assert bad == [], bad
    # the request's one line says the client went (http=499, nothing was sent)
    gone = [e for e in log_events if e.get("cmd") == "Ping" and e.get("code") == 499]
    assert len(gone) == 1 and "client gone" in gone[0]["note"], gone


@pytest_twisted.ensureDeferred
async def test_disconnect_before_the_ping_is_held(web: Web, log_events: list) -> None:
    """A client gone while the request is still authenticated / looked up."""
    cid = web.folders["Contacts"]
    await prime(web, cid)
    for _ in range(5):
        proto = await web.send("Ping", ping_body(300, cid))
        proto.transport.abortConnection()
        await proto.closed
    await deferLater(reactor, 0.5, lambda: None)
    await until(web.nothing_held)
    assert not [e for e in log_events if e.get("log_failure") is not None]


# -- Ping over HTTP ------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_ping_woken_over_http_and_metrics(web: Web) -> None:
    cid = web.folders["Contacts"]
    await prime(web, cid)
    proto = await web.send("Ping", ping_body(300, cid))
    await held(web)
    text = await web.get_metrics()
    assert 'easync_held_requests{command="Ping"} 1' in text
    assert "easync_hub_subscriptions 1" in text
    await add_contact(web, cid)
    code, headers, body = await web.answer(proto)
    assert code == 200 and headers["content-type"] == "application/vnd.ms-sync.wbxml"
    assert body.findtext("Ping:Status") == "2"
    assert [f.text for f in body.find("Ping:Folders").children] == [cid]
    text = await web.get_metrics()
    assert 'easync_held_requests{command="Ping"} 0' in text
    assert 'easync_requests_total{command="Ping",http="200",status="2"} 1' in text
    assert 'easync_requests_total{command="Sync",http="200",status="1"}' in text
    assert "easync_push_latency_seconds_count 1" in text
    assert 'easync_push_latency_seconds_bucket{le="+Inf"} 1' in text
    assert "process_resident_memory_bytes " in text
    assert 'python_gc_collections_total{generation="2"} ' in text
    assert 'python_gc_pause_seconds_max{generation="2"} ' in text


@pytest_twisted.ensureDeferred
async def test_ping_heartbeat_over_http(web: Web) -> None:
    cid = web.folders["Contacts"]
    await prime(web, cid)
    proto = await web.send("Ping", ping_body(30, cid))
    await held(web)
    web.clock.advance(30)
    code, _h, body = await web.answer(proto)
    assert code == 200 and body.findtext("Ping:Status") == "1"
    assert web.nothing_held()


@pytest.mark.parametrize(("body", "want"), [
    (ping_body(10, "1"), ("5", "HeartbeatInterval", "30")),
    (ping_body(3600, "1"), ("5", "HeartbeatInterval", "600")),
    (E("Ping:Ping", E("Ping:HeartbeatInterval", "x")), ("4", None, None)),
    (ping_body(60, "424242"), ("7", None, None)),
], ids=["low", "high", "malformed", "unknown-folder"])
@pytest_twisted.ensureDeferred
async def test_ping_statuses_over_http(web: Web, body: Element, want: tuple) -> None:
    code, _h, resp = await web.call("Ping", body)
    assert code == 200
    status, tag, value = want
    assert resp.findtext("Ping:Status") == status
    if tag:
        assert resp.findtext(f"Ping:{tag}") == value


@pytest_twisted.ensureDeferred
async def test_ping_with_bad_wbxml_is_400(web: Web) -> None:
    proto = Raw()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", web.port), proto)
    raw = web.request("Ping", None).replace(b"Content-Length: 0", b"Content-Length: 5")
    proto.transport.write(raw + b"\x03\x01\x6a\x00\x45")
    web.clients.append(proto)
    code, _h, _b = await web.answer(proto)
    assert code == 400


# -- Sync with Wait / HeartbeatInterval ----------------------------------------------------

def top_status(body: Element) -> tuple[str | None, str | None]:
    return body.findtext("AirSync:Status"), body.findtext("AirSync:Limit")


@pytest.mark.parametrize(("extra", "want"), [
    ([E("AirSync:Wait", "5"), E("AirSync:HeartbeatInterval", "300")], ("4", None)),
    ([E("AirSync:Wait", "0")], ("14", "1")),
    ([E("AirSync:Wait", "11")], ("14", "10")),       # heartbeat-max 600 s = 10 minutes
    ([E("AirSync:Wait", "many")], ("4", None)),
    ([E("AirSync:HeartbeatInterval", "29")], ("14", "30")),
    ([E("AirSync:HeartbeatInterval", "601")], ("14", "600")),
], ids=["both", "wait-low", "wait-high", "wait-text", "hb-low", "hb-high"])
@pytest_twisted.ensureDeferred
async def test_sync_wait_statuses(web: Web, extra: list[Element], want: tuple) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    code, _h, body = await web.call("Sync", sync_body(cid, key, *extra))
    assert code == 200 and top_status(body) == want
    assert web.nothing_held()


@pytest_twisted.ensureDeferred
async def test_sync_heartbeat_held_then_empty(web: Web) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    proto = await web.send("Sync", sync_body(cid, key, E("AirSync:HeartbeatInterval", "120")))
    await held(web, "Sync")
    web.clock.advance(119)
    await deferLater(reactor, 0.1, lambda: None)
    assert proto.response() is None
    web.clock.advance(1)
    code, _h, body = await web.answer(proto)
    assert code == 200 and body is None                 # nothing new: an empty 200
    assert web.nothing_held()


@pytest_twisted.ensureDeferred
async def test_sync_wait_woken_by_a_change(web: Web) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    proto = await web.send("Sync", sync_body(cid, key, E("AirSync:Wait", "5")))
    await held(web, "Sync")
    assert web.server.holds.by_device[(web.user.id, "devA")].deadline == \
        web.clock.seconds() + 300
    await add_contact(web, cid, "Woken")
    _code, _h, body = await web.answer(proto)
    coll = body.find("AirSync:Collections").find("AirSync:Collection")
    assert coll.findtext("AirSync:Status") == "1" and coll.findtext("AirSync:SyncKey") != key
    adds = coll.find("AirSync:Commands").findall("AirSync:Add")
    assert [a.find("AirSync:ApplicationData").findtext("Contacts:FirstName")
            for a in adds] == ["Woken"]
    assert web.nothing_held()
    assert web.server.metrics.push_latency.count == 1


@pytest_twisted.ensureDeferred
async def test_sync_wait_answers_at_once_when_changes_are_pending(web: Web) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    await add_contact(web, cid)
    _code, _h, body = await web.call("Sync", sync_body(cid, key, E("AirSync:Wait", "5")))
    assert body.find("AirSync:Collections") is not None
    assert web.nothing_held()


@pytest_twisted.ensureDeferred
async def test_sync_wait_disconnect_frees_the_waiter(web: Web) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    proto = await web.send("Sync", sync_body(cid, key, E("AirSync:Wait", "5")))
    await held(web, "Sync")
    proto.transport.abortConnection()
    await until(web.nothing_held)


@pytest_twisted.ensureDeferred
async def test_ping_ends_a_held_sync_of_the_same_device(web: Web) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    sync_proto = await web.send("Sync", sync_body(cid, key, E("AirSync:Wait", "5")))
    await held(web, "Sync")
    ping_proto = await web.send("Ping", ping_body(300, cid))
    code, _h, body = await web.answer(sync_proto)
    assert code == 200 and body is None
    await held(web, "Ping")
    assert web.server.holds.counts["Sync"] == 0
    await add_contact(web, cid)
    _c, _h, body = await web.answer(ping_proto)
    assert body.findtext("Ping:Status") == "2"


@pytest_twisted.ensureDeferred
async def test_empty_sync_reuses_the_cached_wait(web: Web) -> None:
    cid = web.folders["Contacts"]
    key = await prime(web, cid)
    proto = await web.send("Sync", sync_body(cid, key, E("AirSync:HeartbeatInterval", "90")))
    await held(web, "Sync")
    web.clock.advance(90)
    assert (await web.answer(proto))[2] is None
    proto = await web.send("Sync", None)                 # empty body: the cached request
    await held(web, "Sync")
    assert web.server.holds.by_device[(web.user.id, "devA")].deadline == \
        web.clock.seconds() + 90
    await add_contact(web, cid)
    _c, _h, body = await web.answer(proto)
    assert body.find("AirSync:Collections") is not None


# -- X-Forwarded-For ------------------------------------------------------------------------

def request_lines(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events if e.get("log_namespace") == "easync.request"
            and "http=" in e.get("log_format", "")]


@pytest_twisted.ensureDeferred
async def test_forwarded_for_from_a_trusted_proxy(web: Web, log_events: list) -> None:
    cid = web.folders["Contacts"]
    proto = await web.send("Ping", ping_body(10, cid),
                           headers={"X-Forwarded-For": "198.51.100.7, 203.0.113.9"})
    await web.answer(proto)
    (line,) = request_lines(log_events)
    assert line.endswith("203.0.113.9 via 127.0.0.1"), line


@pytest_twisted.ensureDeferred
async def test_forwarded_for_ignored_from_others(web: Web, log_events: list) -> None:
    web.site.resource.eas.trusted = ()           # as with no --trusted-proxy
    proto = await web.send("Ping", ping_body(10, web.folders["Contacts"]),
                           headers={"X-Forwarded-For": "203.0.113.9"})
    await web.answer(proto)
    (line,) = request_lines(log_events)
    assert line.endswith(" 127.0.0.1"), line
