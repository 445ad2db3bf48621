"""Red team 3: a NUL character in what the account page is sent (JSON API fields,
HTML form fields), against ``twistd easync`` on SQLite and on PostgreSQL (skipped,
with the reason, when PostgreSQL is not reachable; CI=true: failed).

PostgreSQL cannot hold a NUL in text: an admin API call naming the user "b\\x00"
reached the database and was answered HTTP 500 with an HTML page (to a JSON client),
and a traceback in the log.  The brief's rule: bad input gets its HTTP code (400, the
account API's ``bad_request``) and a log line, never a traceback, and changes nothing.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from easync_server import RunningServer
from pgtest import started_pg_server

PASSWORD = "nul-Test-pw1"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[RunningServer]:
    def prepare(srv: RunningServer) -> None:
        srv.add_user("anna", PASSWORD, email="anna@example.it")
        srv.add_user("bob", PASSWORD)
        srv.admin("user", "admin", "anna", "on")

    if request.param == "sqlite":
        srv = RunningServer(tmp_path_factory.mktemp("rt3nul")).start()
        try:
            prepare(srv)
            yield srv
        finally:
            srv.stop()
    else:
        with started_pg_server(tmp_path_factory, "rt3nul") as srv:
            prepare(srv)
            yield srv


class Session:
    """anna (an administrator) logged in to the account page."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.cookie: dict[str, str] = {}
        self.csrf = self.call("GET", "api/session")[1]["csrf_token"]
        status, _ = self.call("POST", "api/login", {"username": "anna", "password": PASSWORD})
        assert status == 200
        self.csrf = self.call("GET", "api/session")[1]["csrf_token"]

    def call(self, method: str, path: str, body: Any = None, form: bool = False
             ) -> tuple[int, Any]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=ctx,
                                           timeout=60)
        headers = {"X-CSRF-Token": getattr(self, "csrf", "")}
        if self.cookie:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookie.items())
        data = None
        if body is not None and form:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            data = urlencode({"csrf": self.csrf, **body}).encode()
        elif body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(body).encode()
        conn.request(method, "/account/" + path, data, headers)
        resp = conn.getresponse()
        raw = resp.read()
        for value in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = value.partition("=")
            self.cookie[name] = rest.split(";")[0]
        ctype = resp.headers.get("Content-Type", "")
        return resp.status, (json.loads(raw) if "json" in ctype else raw.decode())


CALLS = [
    ("api/admin/activesync", {"user": "bob\x00", "on": False}),
    ("api/admin/2fa", {"user": "b\x00ob", "method": "off"}),
    ("api/admin/device-access", {"user": "bob\x00", "device_id": "d1", "access": "allow"}),
    ("api/shares/add", {"folder_id": "1", "to": "bob\x00", "write": False}),
    ("api/shares/remove", {"folder_id": "1", "to": "bob\x00"}),
]


@pytest.mark.parametrize(("path", "body"), CALLS, ids=[c[0] for c in CALLS])
def test_a_nul_in_a_json_field_is_400(server: RunningServer, path: str,
                                      body: dict[str, Any]) -> None:
    s = Session(server)
    before = len(server.log_text())
    status, answer = s.call("POST", path, body)
    assert status == 400, (status, answer)
    assert answer["error"]["code"] == "bad_request", answer
    log = server.log_text()[before:]
    assert "Traceback" not in log and "unexpected error" not in log
    assert f"POST /account/{path} http=400" in log
    # nothing changed: bob still has ActiveSync, and no share was made
    users = {u["name"]: u for u in s.call("GET", "api/admin/users")[1]["users"]}
    assert users["bob"]["activesync"] is True
    assert s.call("GET", "api/shares")[1]["mine"] == []


def test_a_nul_in_a_form_field_is_400(server: RunningServer) -> None:
    s = Session(server)
    before = len(server.log_text())
    status, page = s.call("POST", "admin/activesync", {"user": "bob\x00", "on": "off"},
                          form=True)
    assert status == 400, (status, page[:300])
    assert "NUL" in page
    log = server.log_text()[before:]
    assert "Traceback" not in log and "unexpected error" not in log
    users = {u["name"]: u for u in s.call("GET", "api/admin/users")[1]["users"]}
    assert users["bob"]["activesync"] is True


def test_the_same_calls_without_the_nul_still_work(server: RunningServer) -> None:
    s = Session(server)
    status, _ = s.call("POST", "api/shares/add", {"folder_id": "1", "to": "bob",
                                                  "write": False})
    assert status == 200
    status, _ = s.call("POST", "api/shares/remove", {"folder_id": "1", "to": "bob"})
    assert status == 200
