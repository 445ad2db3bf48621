"""The front door: the static command table behind OPTIONS and dispatch, and the one
authentication step (a twisted.cred ``Portal`` whose avatar is the user) that
ActiveSync, OPTIONS and Autodiscover share.  Real SQLite, real HTTP on a socket."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from typing import Any

import pytest
import pytest_twisted
from sqlserver import listening_site
from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from backends.sql.store import SqlStore

PASSWORD = "door-test-password"

# What OPTIONS advertised before the table (importlib dispatch over these modules).
ADVERTISED_BEFORE = [
    "Sync", "FolderSync", "FolderCreate", "FolderUpdate", "FolderDelete",
    "GetItemEstimate", "ItemOperations", "MoveItems", "Settings", "Provision", "Ping",
    "SendMail", "SmartReply", "SmartForward", "MeetingResponse", "Search",
    "ResolveRecipients",
]


def test_the_table_covers_every_command_advertised_before() -> None:
    from easync.commands import COMMANDS

    # and Find (issue #14 point 5), advertised only where 16.1 is offered
    assert list(COMMANDS) == [*ADVERTISED_BEFORE, "Find"]
    assert {n for n, c in COMMANDS.items() if c.since > (0, 0)} == {"Find"}
    for name, command in COMMANDS.items():
        assert command.name == name
        assert command.root.endswith(":" + name)     # the root element of its body
        assert callable(command.handle)
    assert {n for n, c in COMMANDS.items() if c.long_poll} == {"Ping", "Sync"}
    assert {n for n, c in COMMANDS.items() if c.mime_body} == {
        "SendMail", "SmartReply", "SmartForward"}
    assert {n for n, c in COMMANDS.items() if c.empty_ok} == {
        "Sync", "Ping", "SendMail", "SmartReply", "SmartForward"}


BROKEN = """
import importlib.abc, sys

class Broken(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "easync.commands.search":
            raise ImportError("broken on purpose")
        return None

sys.meta_path.insert(0, Broken())
import easync.http.resource
"""


def test_a_broken_command_module_fails_loudly_at_import() -> None:
    """Before the table, an ImportError in a command module dropped the command from
    OPTIONS (and answered it 400) without a word; now the server does not start."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", BROKEN], check=False, capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode != 0
    assert "broken on purpose" in done.stderr


@pytest_twisted.async_yield_fixture
async def site(tmp_path: Any) -> Any:
    store = SqlStore(reactor, f"sqlite:///{tmp_path / 'door.sqlite'}")
    base, door, port = await listening_site(store, {"zoe": (PASSWORD, True),
                                                    "off": (PASSWORD, False)})
    yield base, door
    await port.stopListening()
    await store.close()


async def fetch(method: bytes, url: str, user: str, password: str, body: bytes = b""
                ) -> tuple[int, Headers, bytes]:
    from io import BytesIO

    from twisted.web.client import FileBodyProducer

    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = Headers({b"Authorization": [f"Basic {auth}".encode()],
                       b"Content-Type": [b"text/xml"]})
    producer = FileBodyProducer(BytesIO(body)) if body else None
    resp = await Agent(reactor).request(method, url.encode(), headers, producer)
    data = await readBody(resp)
    return resp.code, resp.headers, data


@pytest_twisted.ensureDeferred
async def test_options_lists_exactly_the_tables_commands(site: Any) -> None:
    from easync.commands import COMMANDS

    base, _door = site
    code, headers, _ = await fetch(b"OPTIONS", base + "/Microsoft-Server-ActiveSync",
                                   "zoe", PASSWORD)
    assert code == 200
    advertised = headers.getRawHeaders(b"ms-asprotocolcommands")[0].decode().split(",")
    assert advertised == list(COMMANDS)


AUTODISCOVER = (b'<?xml version="1.0"?><Autodiscover xmlns="http://schemas.microsoft.com/'
                b'exchange/autodiscover/mobilesync/requestschema/2006"><Request>'
                b'<EMailAddress>zoe@example.org</EMailAddress><AcceptableResponseSchema>'
                b'http://schemas.microsoft.com/exchange/autodiscover/mobilesync/'
                b'responseschema/2006</AcceptableResponseSchema></Request></Autodiscover>')


@pytest.mark.parametrize("path", ["/Microsoft-Server-ActiveSync",
                                  "/autodiscover/autodiscover.xml"])
@pytest_twisted.ensureDeferred
async def test_one_door_for_activesync_and_autodiscover(site: Any, path: str) -> None:
    """The same answers from the same step: 401 for a wrong password (with the Basic
    challenge), 403 for a user without ActiveSync, 200 for the right one."""
    base, _door = site
    method = b"OPTIONS" if "Server" in path else b"POST"
    code, headers, _ = await fetch(method, base + path, "zoe", "wrong", AUTODISCOVER)
    assert code == 401
    assert headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="easync"']
    code, _h, _ = await fetch(method, base + path, "off", PASSWORD, AUTODISCOVER)
    assert code == 403
    code, _h, data = await fetch(method, base + path, "zoe", PASSWORD, AUTODISCOVER)
    assert code == 200
    if method == b"POST":
        assert b"<Url>http://127.0.0.1:" in data


@pytest_twisted.ensureDeferred
async def test_the_portal_hands_out_the_user(site: Any) -> None:
    from twisted.cred.error import UnauthorizedLogin

    from easync.auth.aspassword import ClientCredentials
    from easync.auth.door import IUserAvatar
    from easync.model import User

    _base, door = site
    iface, avatar, logout = await door.portal.login(
        ClientCredentials("zoe", PASSWORD, "192.0.2.1", "dev1"), None, IUserAvatar)
    assert iface is IUserAvatar
    assert isinstance(avatar, User) and avatar.name == "zoe"
    logout()
    user = await door.authenticate(ClientCredentials("ZOE", PASSWORD))
    assert user.name == "zoe"
    with pytest.raises(UnauthorizedLogin):
        await door.authenticate(ClientCredentials("zoe", "wrong"))
    with pytest.raises(UnauthorizedLogin):
        await door.authenticate(ClientCredentials("nobody", PASSWORD))


@pytest_twisted.ensureDeferred
async def test_the_account_page_logs_in_through_the_door(tmp_path: Any) -> None:
    """The account page's login password takes the same step (``FrontDoor``), with its
    own checker (the login password, throttled, through the account service): the user
    is the Portal's avatar, a wrong password the service's refusal."""
    from account_http import PASSWORD as PAGE_PASSWORD
    from account_http import AccountServer

    from easync.account.adapter import ServiceOps
    from easync.auth import accounts as acc
    from easync.auth.door import AccountLogin, FrontDoor

    srv = await AccountServer(reactor, tmp_path).start()
    try:
        await srv.add_user("mario", email="mario@example.org")
        ops = ServiceOps(srv.service)
        assert isinstance(ops.door, FrontDoor)
        user = await ops.door.authenticate(AccountLogin("MARIO", PAGE_PASSWORD, "192.0.2.9"))
        assert user.name == "mario"
        login = await ops.check_password("mario", PAGE_PASSWORD, "192.0.2.9")
        assert (login.user, login.method) == ("mario", None)
        with pytest.raises(acc.AccountError) as refused:
            await ops.check_password("mario", "wrong", "192.0.2.9")
        assert refused.value.code == "bad-password"
        assert refused.value.message == "Wrong user name or password."
    finally:
        await srv.stop()
