"""What one request costs in database round trips (issue #12 point 4): the server's own
Site, its real front door (``build_auth``: the ActiveSync-password policy, the
throttle, the SQL auth store) and a SQLite store, in this process, so the test can read
``Database.interactions`` around each request; real HTTP/1.1 on a TCP socket, with
provisioning on (the policy key is checked on every request, MS-ASPROV 3.2.5.1.1).

A Sync with nothing to send costs one transaction: the user's record (its credential
fields, so a password changed in another process is seen at once), the lockout rows of
the source, the device (wiped or re-provisioned elsewhere: refused at once), the folders
and the collection's state are read together.  An empty-body Sync (the request cache,
MS-ASCMD 2.2.2.20) likewise.  A changed password, a remote wipe and a lockout written
behind the process's back (as another process would) still take effect at once."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import bcrypt
import needs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from backends.sql.authstore import SqlAuthStore
from backends.sql.store import SqlStore
from easync import tap
from easync.auth import accounts as accounts_module
from easync.auth import aspassword, build_auth
from easync.handler import EasServer
from easync.http.resource import make_site
from easync.notify import LocalNotifier
from easync.settings import Settings
from easync.wbxml import E, Element, decode, encode

PASSWORD = "roundtrip-password-1"


class Web:
    def __init__(self, store: SqlStore, server: EasServer, port: int, user: Any) -> None:
        self.store = store
        self.server = server
        self.port = port
        self.user = user
        self.policy = ""
        self.password = PASSWORD

    async def call(self, cmd: str, body: Element | None, device: str = "devA"
                   ) -> tuple[int, Element | None]:
        from test_push_http import Raw, until

        data = encode(body) if body is not None else b""
        auth = base64.b64encode(f"rita:{self.password}".encode()).decode()
        head = [(f"POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User=rita&DeviceId={device}"
                "&DeviceType=iPhone HTTP/1.1"), "Host: localhost",
                f"Authorization: Basic {auth}", "MS-ASProtocolVersion: 14.1",
                "Content-Type: application/vnd.ms-sync.wbxml", f"Content-Length: {len(data)}"]
        if self.policy:
            head.append(f"X-MS-PolicyKey: {self.policy}")
        proto = Raw()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), proto)
        proto.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await until(lambda: proto.response() is not None)
        code, _headers, raw = proto.response()
        proto.transport.loseConnection()
        return code, decode(raw) if raw else None

    async def held_cost(self, body: Element | None, cmd: str = "Ping") -> int:
        """The transactions a Ping (or ``cmd``) makes before it holds (once held, the
        client goes away, which ends it)."""
        from test_push_http import Raw, until

        holds = self.server.holds
        before = self.store.db.interactions
        data = encode(body) if body is not None else b""
        auth = base64.b64encode(f"rita:{self.password}".encode()).decode()
        head = [(f"POST /Microsoft-Server-ActiveSync?Cmd={cmd}&User=rita&DeviceId=devA"
                 "&DeviceType=iPhone HTTP/1.1"), "Host: localhost",
                f"Authorization: Basic {auth}", "MS-ASProtocolVersion: 14.1",
                "Content-Type: application/vnd.ms-sync.wbxml",
                f"Content-Length: {len(data)}", f"X-MS-PolicyKey: {self.policy}"]
        proto = Raw()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), proto)
        proto.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await until(lambda: (self.user.id, "devA") in holds.by_device)
        await deferLater(reactor, 0.05, lambda: None)
        n = self.store.db.interactions - before
        assert proto.response() is None, "the Ping was answered, not held"
        proto.transport.loseConnection()
        await until(lambda: (self.user.id, "devA") not in holds.by_device)
        assert self.server.notifier.waiting == 0
        return n

    async def cost(self, cmd: str, body: Element | None) -> tuple[int, int, Element | None]:
        """(transactions, HTTP code, body) of one request, once the store's threads
        are quiet (a write the request started but did not wait for counts too)."""
        before = self.store.db.interactions
        code, answer = await self.call(cmd, body)
        await deferLater(reactor, 0.05, lambda: None)
        return self.store.db.interactions - before, code, answer


@asynccontextmanager
async def serving(tmp_path: Any, url: str, notifier: Any = None) -> AsyncIterator[Web]:
    """The server on the database at ``url`` (its change hub ``notifier``, else a
    ``LocalNotifier``), with a provisioned device."""
    store = SqlStore(reactor, url)
    await store.open()
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    user = await store.add_user("rita", hashed, "rita@example.org", True)
    server = EasServer(users=store, items=store, state=store,
                       notifier=notifier or LocalNotifier(reactor), clock=reactor,
                       settings=Settings(provisioning=True))
    options = tap.Options()
    options.parseOptions(["--secret-key", str(tmp_path / "key"), "--login-delay", "0"])
    auth = build_auth(options.config, server, SqlAuthStore(store), reactor)
    server.accounts = auth.accounts
    site = make_site(server, auth.door)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    w = Web(store, server, port.getHost().port, user)
    try:
        await provision(w)
        yield w
    finally:
        await port.stopListening()
        await store.close()


@pytest_twisted.async_yield_fixture()
async def web(tmp_path):
    async with serving(tmp_path, f"sqlite:///{tmp_path / 'rt.sqlite'}") as w:
        yield w


async def provision(w: Web) -> None:
    pol = E("Provision:Policies", E("Provision:Policy",
                                    E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML")))
    _c, r = await w.call("Provision", E("Provision:Provision", pol))
    temp = r.find("Provision:Policies").find("Provision:Policy").findtext("Provision:PolicyKey")
    ack = E("Provision:Policies", E("Provision:Policy",
                                    E("Provision:PolicyType", "MS-EAS-Provisioning-WBXML"),
                                    E("Provision:PolicyKey", temp), E("Provision:Status", "1")))
    w.policy = temp
    _c, r = await w.call("Provision", E("Provision:Provision", ack))
    w.policy = r.find("Provision:Policies").find("Provision:Policy").findtext(
        "Provision:PolicyKey")


def sync_body(cid: str, key: str) -> Element:
    return E("AirSync:Sync", E("AirSync:Collections", E(
        "AirSync:Collection", E("AirSync:SyncKey", key), E("AirSync:CollectionId", cid))))


def key_of(body: Element) -> str:
    return body.find("AirSync:Collections").find("AirSync:Collection").findtext(
        "AirSync:SyncKey")


async def synced(w: Web) -> tuple[str, str]:
    """(Contacts folder id, current SyncKey) of a device that has synced everything."""
    cid = {f.name: f.server_id for f in await w.store.list_folders(w.user)}["Contacts"]
    _c, r = await w.call("Sync", sync_body(cid, "0"))
    key = key_of(r)
    while True:
        code, r = await w.call("Sync", sync_body(cid, key))
        assert code == 200
        if r is None:
            return cid, key
        key = key_of(r)


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request as if the phone came back some seconds later: the lockout
    recheck of cached credentials and the 2FA-for-everyone setting are due again."""
    monkeypatch.setattr(aspassword, "LOCK_RECHECK", 0.0)
    monkeypatch.setattr(accounts_module, "SETTING_TTL", 0.0)


@pytest_twisted.ensureDeferred
async def test_empty_sync_is_one_transaction(web: Web) -> None:
    cid, key = await synced(web)
    for _ in range(3):
        n, code, body = await web.cost("Sync", sync_body(cid, key))
        assert (code, body) == (200, None)
        assert n == 1, f"an empty Sync cost {n} transactions"


@pytest_twisted.ensureDeferred
async def test_empty_sync_after_a_while_is_one_transaction(web: Web, later: None) -> None:
    cid, key = await synced(web)
    for _ in range(3):
        n, code, body = await web.cost("Sync", sync_body(cid, key))
        assert (code, body) == (200, None)
        assert n == 1, f"an empty Sync (lockout recheck due) cost {n} transactions"


@pytest_twisted.ensureDeferred
async def test_empty_body_sync_from_the_request_cache_is_one_transaction(web: Web) -> None:
    # MS-ASCMD 2.2.2.20: an empty Sync request repeats the cached one
    _cid, _key = await synced(web)
    for _ in range(3):
        n, code, body = await web.cost("Sync", None)
        assert (code, body) == (200, None)
        assert n == 1, f"an empty-body Sync cost {n} transactions"


@pytest_twisted.ensureDeferred
async def test_changes_behind_the_process_still_count_at_once(web: Web) -> None:
    """What another process writes is seen by the next request, though the one-read
    path trusts what it remembers: a new password (401), a lockout (429), a remote
    wipe (Status 140: go to Provision, MS-ASCMD 2.2.2, MS-ASPROV 3.2.5.1.2)."""
    cid, key = await synced(web)
    assert (await web.cost("Sync", sync_body(cid, key)))[1] == 200
    # the lockout of the counter of familiar sources, as another process writes it
    auth = SqlAuthStore(web.store)
    await auth.throttle_lock("user-known", "rita", reactor.seconds() + 600)
    await deferLater(reactor, aspassword.LOCK_RECHECK + 0.05, lambda: None)
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 429
    await auth.throttle_clear("user-known", "rita")
    await deferLater(reactor, aspassword.LOCK_RECHECK + 0.05, lambda: None)
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 200
    # a remote wipe ordered elsewhere (the admin CLI, the account page of another node)
    await web.store.save_device(web.user, "devA", wipe="pending")
    code, body = await web.call("Sync", sync_body(cid, key))
    assert (code, body.findtext("AirSync:Status")) == (200, "140")   # MS-ASCMD 2.2.2
    await web.store.save_device(web.user, "devA", wipe="none")
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 200
    # a new password set elsewhere: the remembered one is refused at once
    hashed = bcrypt.hashpw(b"another-password-2", bcrypt.gensalt(4)).decode()
    await web.store.update_user("rita", password_hash=hashed)
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 401
    web.password = "another-password-2"
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 200
    # 2FA turned on for everyone elsewhere: without an ActiveSync password, refused
    await auth.set_setting(accounts_module.TWO_FACTOR_ALL, "on")
    await deferLater(reactor, accounts_module.SETTING_TTL + 0.05, lambda: None)
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 401
    await auth.set_setting(accounts_module.TWO_FACTOR_ALL, None)
    await deferLater(reactor, accounts_module.SETTING_TTL + 0.05, lambda: None)
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 200
    # ActiveSync turned off for the user elsewhere
    await web.store.update_user("rita", activesync=False)
    assert (await web.call("Sync", sync_body(cid, key)))[0] == 403


@pytest_twisted.ensureDeferred
async def test_a_change_between_the_read_and_a_held_sync_still_answers(
        web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Sync with Wait (MS-ASCMD 2.2.3.194) subscribes before its first look, so that a
    change committed meanwhile answers it.  The folders read with the request are from
    before the subscription: a change committed just after that read must still answer
    the Sync at once, not at the heartbeat."""
    from easync.model import Op

    cid, key = await synced(web)
    store = web.store
    real = store.read_request

    async def then_a_change(read: Any) -> Any:
        snap = await real(read)
        if read.folders:
            await store.apply(web.user, cid, [Op(kind="add", data={"FirstName": "Late"},
                                                 cls="Contacts")])
            web.server.notifier.publish(web.user.id, cid)
        return snap

    monkeypatch.setattr(store, "read_request", then_a_change)
    body = sync_body(cid, key)
    body.add("AirSync:Wait", "1")
    code, answer = await web.call("Sync", body)
    assert code == 200 and answer is not None
    coll = answer.find("AirSync:Collections").find("AirSync:Collection")
    assert len(coll.find("AirSync:Commands").children) == 1


# -- Ping (MS-ASCMD 2.2.1.13) and FolderSync (MS-ASCMD 2.2.1.5) -------------------------

def ping_body(folders: list[str] | None, heartbeat: int = 480) -> Element:
    root = E("Ping:Ping", E("Ping:HeartbeatInterval", str(heartbeat)))
    if folders is not None:
        root.append(E("Ping:Folders", *(E("Ping:Folder", E("Ping:Id", f),
                                          E("Ping:Class", "Contacts")) for f in folders)))
    return root


async def folder_synced(w: Web) -> str:
    """A device that ran FolderSync and synced its Contacts: the folder id."""
    code, r = await w.call("FolderSync", E("FolderHierarchy:FolderSync",
                                           E("FolderHierarchy:SyncKey", "0")))
    assert code == 200 and r.findtext("FolderHierarchy:Status") == "1"
    w.hierarchy_key = r.findtext("FolderHierarchy:SyncKey")
    cid, _key = await synced(w)
    return cid


def ping_status(body: Element | None) -> str | None:
    return None if body is None else body.findtext("Ping:Status")


@pytest_twisted.ensureDeferred
async def test_ping_with_nothing_new_is_one_transaction_before_it_holds(web: Web) -> None:
    """A Ping whose folders hold nothing new for the device (MS-ASCMD 2.2.1.13) reads
    its parameter cache, the hierarchy the device holds, its folders' states and the
    folders with the request: one transaction, then it holds."""
    cid = await folder_synced(web)
    first = await web.held_cost(ping_body([cid]))     # the parameters are cached: a write
    assert first == 2, f"a first Ping cost {first} transactions before its hold"
    for _ in range(3):
        n = await web.held_cost(ping_body([cid]))
        assert n == 1, f"a Ping with nothing new cost {n} transactions before its hold"


@pytest_twisted.ensureDeferred
async def test_empty_ping_from_the_cache_is_one_transaction_before_it_holds(
        web: Web, later: None) -> None:
    """MS-ASCMD 2.2.3.x Ping: an empty Ping request uses the cached HeartbeatInterval
    and Folders; the states of the cached folders are read in the same transaction
    (with the lockout recheck due, too)."""
    cid = await folder_synced(web)
    await web.held_cost(ping_body([cid]))
    for _ in range(2):
        n = await web.held_cost(None)
        assert n == 1, f"an empty Ping cost {n} transactions before its hold"


@pytest_twisted.ensureDeferred
async def test_ping_answered_at_once_reads_only_what_it_needs(web: Web) -> None:
    """Status 2 (a change from elsewhere): the request's read, then the folder's
    changes after the device's cursor (one read); Status 7 (MS-ASCMD 2.2.1.13: the
    hierarchy changed since the device's FolderSync): the request's read only."""
    from easync.model import Op

    cid = await folder_synced(web)
    await web.held_cost(ping_body([cid]))
    await web.store.apply(web.user, cid, [Op(kind="add", data={"FirstName": "New"},
                                             cls="Contacts")])
    n, code, body = await web.cost("Ping", ping_body([cid]))
    assert (code, ping_status(body)) == (200, "2")
    assert n == 2, f"a Ping answered 2 at once cost {n} transactions"
    await web.store.create_folder(web.user, "0", "Friends", 14)
    n, code, body = await web.cost("Ping", ping_body([cid]))
    assert (code, ping_status(body)) == (200, "7")
    assert n == 1, f"a Ping answered 7 at once cost {n} transactions"
    n, code, body = await web.cost("Ping", ping_body([cid, "no-such-folder"]))
    assert (code, ping_status(body)) == (200, "7")
    assert n == 2       # (new Folders: the parameter cache written)


@pytest_twisted.ensureDeferred
async def test_folder_sync_with_no_change_is_one_transaction(web: Web) -> None:
    """FolderSync with the current key and nothing changed (MS-ASCMD 2.2.1.5): the
    hierarchy state and the folders are read with the request."""
    await folder_synced(web)
    body = E("FolderHierarchy:FolderSync", E("FolderHierarchy:SyncKey", web.hierarchy_key))
    for _ in range(3):
        n, code, answer = await web.cost("FolderSync", body)
        assert code == 200 and answer.findtext("FolderHierarchy:Status") == "1"
        assert answer.findtext("FolderHierarchy:SyncKey") == web.hierarchy_key
        assert answer.find("FolderHierarchy:Changes").findtext("FolderHierarchy:Count") == "0"
        assert n == 1, f"a FolderSync with no change cost {n} transactions"
    # a folder made elsewhere: the answer has it, under a new key (the state written)
    await web.store.create_folder(web.user, "0", "Friends", 14)
    n, code, answer = await web.cost("FolderSync", body)
    assert answer.find("FolderHierarchy:Changes").findtext("FolderHierarchy:Count") == "1"
    assert answer.findtext("FolderHierarchy:SyncKey") != web.hierarchy_key
    assert n == 2


def change_after_the_read(w: Web, monkeypatch: pytest.MonkeyPatch,
                          change: Any) -> list[bool]:
    """Make the Ping's request read run ``change`` once it has read (as if committed
    between the read and the hold); the list gets True once it ran."""
    real = w.store.read_request
    ran: list[bool] = []

    async def then_a_change(read: Any) -> Any:
        snap = await real(read)
        if "ping" in read.states and not ran:       # (Ping's parameter cache)
            ran.append(True)
            await change()
        return snap

    monkeypatch.setattr(w.store, "read_request", then_a_change)
    return ran


async def add_contact(store: SqlStore, user: Any, cid: str) -> Any:
    from easync.interfaces import ChangeHint
    from easync.model import Op

    results = await store.apply(user, cid, [Op(kind="add", data={"FirstName": "Late"},
                                               cls="Contacts")])
    return ChangeHint.of(results, None)


@pytest.mark.parametrize("body", ["folders", "cached"])
@pytest_twisted.ensureDeferred
async def test_a_change_between_the_read_and_the_ping_hold_answers_it(
        web: Web, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """A change committed and published in this process after the Ping's request read
    and before its hold listens answers the Ping at once (Status 2, MS-ASCMD
    2.2.1.13), not at its heartbeat: the lookout made before the read hands it over."""
    cid = await folder_synced(web)
    await web.held_cost(ping_body([cid]))

    async def change() -> None:
        web.server.notifier.publish(web.user.id, cid, await add_contact(
            web.store, web.user, cid))

    ran = change_after_the_read(web, monkeypatch, change)
    code, answer = await web.call("Ping", ping_body([cid]) if body == "folders" else None)
    assert ran and (code, ping_status(answer)) == (200, "2")
    assert [f.text for f in answer.find("Ping:Folders").children] == [cid]
    assert web.server.notifier.waiting == 0


@pytest_twisted.ensureDeferred
async def test_another_process_writing_between_the_read_and_the_hold_sqlite(
        web: Web, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite: ``easync-admin import`` writes through its own connection and the
    server's poller notices it.  A write committed after the Ping's request read, with
    the poller's look between that write and the hold, still answers the Ping."""
    from backends.sql.poller import SqlitePoller

    cid = await folder_synced(web)
    await web.held_cost(ping_body([cid]))
    poller = SqlitePoller(reactor, web.store, web.server.notifier)
    assert await poller.poll_once() == 0       # nobody waits
    other = SqlStore(reactor, f"sqlite:///{tmp_path / 'rt.sqlite'}")
    await other.open()

    async def change() -> None:
        await add_contact(other, web.user, cid)
        await poller.poll_once()                # (the lookout is this user's one waiter)

    try:
        ran = change_after_the_read(web, monkeypatch, change)
        code, answer = await web.call("Ping", ping_body([cid]))
    finally:
        await other.close()
    assert ran and (code, ping_status(answer)) == (200, "2")


@pytest.fixture(scope="module")
def pg() -> str:
    from pgtest import unreachable

    needs.require(unreachable())
    return "ok"


@pytest_twisted.ensureDeferred
async def test_another_node_writing_between_the_read_and_the_hold_postgresql(
        pg: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL: a write committed by another process after the Ping's request read,
    announced by NOTIFY (as ``easync-admin import`` does) and received before the hold
    listens, still answers the Ping (MS-ASCMD 2.2.1.13 Status 2)."""
    from pgtest import fresh_database
    from test_push_http import until

    from backends.sql.pgnotify import PgNotifier, announce

    with fresh_database("roundtrips") as url:
        hub = PgNotifier(reactor, url, "node-rt")
        hub.startService()
        await until(lambda: hub.connected)
        try:
            async with serving(tmp_path, url, hub) as w:
                cid = await folder_synced(w)
                n = await w.held_cost(ping_body([cid]))
                n = await w.held_cost(ping_body([cid]))
                assert n == 1, f"a Ping with nothing new cost {n} transactions (PostgreSQL)"
                other = SqlStore(reactor, url)
                await other.open()

                async def change() -> None:
                    received = hub.received
                    hint = await add_contact(other, w.user, cid)
                    assert await announce(other, w.user.id, [cid], modseqs={cid: hint.modseq})
                    await until(lambda: hub.received > received)

                try:
                    ran = change_after_the_read(w, monkeypatch, change)
                    code, answer = await w.call("Ping", ping_body([cid]))
                finally:
                    await other.close()
                assert ran and (code, ping_status(answer)) == (200, "2")
        finally:
            await hub.stopService()


@pytest_twisted.ensureDeferred
async def test_sync_with_wait_and_nothing_new_is_one_transaction_before_it_holds(
        web: Web) -> None:
    """A Sync with Wait (MS-ASCMD 2.2.3.194) that has nothing to send holds after the
    request's one read: the lookout made before it replaces a second look at the
    folders (the race it closes: the test above)."""
    cid, key = await synced(web)
    body = sync_body(cid, key)
    body.add("AirSync:Wait", "1")
    await web.held_cost(body, "Sync")           # (the request cache written: Wait is new)
    for _ in range(2):
        n = await web.held_cost(body, "Sync")
        assert n == 1, f"a Sync with Wait cost {n} transactions before its hold"


def test_the_lookout_hands_over_what_the_hold_watches() -> None:
    """``Lookout``: every change of the user is noted (a listener on ``ANY``), only
    those of the hold's folders are handed over (hints merged as a hold merges them),
    ``ANY`` published (the SQLite poller: anything may have changed) becomes each of
    the hold's folders, unhinted; once handed over or closed it leaves the hub."""
    from hubtest import Heard

    from easync.interfaces import ChangeHint
    from easync.notify import ANY, Lookout

    hub = LocalNotifier(reactor)
    look = Lookout(hub, 7)
    hub.publish(7, "10", ChangeHint(5, "devB"))
    hub.publish(7, "10", ChangeHint(6, "devC"))
    hub.publish(7, "11", ChangeHint(7))
    hub.publish(8, "10")                            # another user's
    assert hub.waiting == 1
    hold = Heard(hub, 7, ["10", "hierarchy"], once=False)
    look.hand_over(hold, ["10", "hierarchy"])
    assert list(zip(hold.folders, hold.hints, strict=True)) == [("10", ChangeHint(6, None))]
    assert hub.waiting == 1                         # the hold only
    hub.publish(7, "11")
    assert look.news == {}
    look.close()                                    # (idempotent)
    hold.stop()
    look = Lookout(hub, 7)
    hub.publish(7, ANY)
    hold = Heard(hub, 7, ["10", "hierarchy"], once=False)
    look.hand_over(hold, ["10", "hierarchy"])
    assert hold.folders == ["10", "hierarchy"] and hold.hints == [None, None]
    hold.stop()
    look = Lookout(hub, 7)
    look.finished(None)                             # the request ended without a hold
    assert hub.waiting == 0 and hub.users() == []
