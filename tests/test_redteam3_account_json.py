"""Red team 3: a deeply nested JSON body to the account page's API, from anybody (the
body is read before the session and CSRF checks), against ``twistd easync``.

60,000 ``[`` (60 KB, under the page's 64 KB body limit) made Python's JSON decoder
raise RecursionError, which the API did not take for bad JSON: HTTP 500 with an HTML
page and a "critical" traceback in the log for every such request.  The brief's rule:
bad input gets its HTTP code (400 ``bad_request``, as any body that is not JSON) and a
log line, never a traceback.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator

import pytest
from easync_server import RunningServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("rt3json")).start()
    try:
        yield srv
    finally:
        srv.stop()


def _post(server: RunningServer, path: str, body: bytes) -> tuple[int, str, bytes]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=60)
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.headers.get("Content-Type", ""), resp.read()


@pytest.mark.parametrize("body", [b"[" * 60_000, b'{"a":' * 12_000, b"[" * 60_000 + b"]" * 3_000],
                         ids=["arrays", "objects", "unclosed"])
def test_a_deeply_nested_json_body_is_400(server: RunningServer, body: bytes) -> None:
    before = len(server.log_text())
    status, ctype, raw = _post(server, "/account/api/login", body)
    assert status == 400, (status, raw[:200])
    assert "json" in ctype
    assert json.loads(raw)["error"]["code"] == "bad_request"
    log = server.log_text()[before:]
    assert "Traceback" not in log and "unexpected error" not in log
    assert "POST /account/api/login http=400" in log
