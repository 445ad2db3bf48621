"""The CRM client's HTTP connections do not fill the log (issue #9, point 16): a CRM
whose web server closes every connection made treq's pool log "Starting factory" and
"Stopping factory" for each request (456 of 563 log lines in 11 minutes)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest_twisted
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web import server
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource

from backends.crm import make_http
from backends.crm.client import CrmClient, quiet_pool


class Closing(Resource):
    """A web service that answers every request and closes the connection after it
    (``Connection: close``), as the real CRM's server did."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        # the channels themselves, kept alive: an id() of a freed one can be reused
        self.channels: list[Any] = []

    @property
    def connections(self) -> set[int]:
        return {id(c) for c in self.channels}

    def render(self, request: server.Request) -> bytes:
        if not any(c is request.channel for c in self.channels):
            self.channels.append(request.channel)
        request.setHeader(b"connection", b"close")
        request.setHeader(b"content-type", b"application/json")
        op = request.args.get(b"operation", [b""])[0].decode()
        result: Any = {"token": "t", "serverTime": 1, "expireTime": 301} \
            if op == "getchallenge" else \
            {"sessionName": "s", "userId": "19x1", "vtigerVersion": "8.2.0"} \
            if op == "login" else {"types": []}
        return json.dumps({"success": True, "result": result}).encode()


async def run_requests(pool: HTTPConnectionPool, n: int) -> tuple[list[str], int]:
    from twisted.internet import reactor

    resource = Closing()
    site = server.Site(resource)
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    lines: list[str] = []

    here = f"127.0.0.1:{port.getHost().port}>"

    def observe(event: dict[str, Any]) -> None:
        # only this pool's connections (to this port): a connection of an earlier test
        # (treq's global, noisy pool) may close during the run and log its own line
        line = formatEvent(event)
        if "factory" not in line or here in line:
            lines.append(line)

    globalLogPublisher.addObserver(observe)
    try:
        client = CrmClient(reactor, HTTPClient(Agent(reactor, pool=pool)),
                           f"http://127.0.0.1:{port.getHost().port}/webservice.php",
                           "admin", "key", timeout=5)
        for _ in range(n):
            await client.call("listtypes")
        await pool.closeCachedConnections()
        d: Deferred[None] = Deferred()
        reactor.callLater(0.1, d.callback, None)
        await d
    finally:
        globalLogPublisher.removeObserver(observe)
        await port.stopListening()
    return lines, len(resource.connections)


@pytest_twisted.ensureDeferred
async def test_quiet_pool_logs_no_factory_lines() -> None:
    from twisted.internet import reactor

    lines, connections = await run_requests(quiet_pool(reactor), 20)
    assert connections >= 20                  # every request on a new connection
    assert not [x for x in lines if "Starting factory" in x or "Stopping factory" in x]


@pytest_twisted.ensureDeferred
async def test_the_plain_pool_would_have_logged_them() -> None:
    """What the quiet pool is for: twisted's own pool logs two lines a connection."""
    from twisted.internet import reactor

    lines, _connections = await run_requests(HTTPConnectionPool(reactor, persistent=True), 5)
    assert len([x for x in lines if "Starting factory" in x]) >= 5


def test_the_store_uses_the_quiet_pool() -> None:
    from twisted.internet import reactor

    http = make_http(reactor)
    assert http._agent._pool._factory.noisy is False


def test_the_crm_login_check_uses_the_quiet_pool() -> None:
    """--auth crm asks the CRM too: its pool must not log each connection either."""
    from types import SimpleNamespace

    from twisted.internet import reactor

    from backends.crm.checker import crm_checker
    from easync.config import defaults

    crm = replace(defaults().crm, url="http://127.0.0.1:9/webservice.php")
    checker = crm_checker(crm, SimpleNamespace(users=None), reactor)
    assert checker.http._agent._pool._factory.noisy is False
