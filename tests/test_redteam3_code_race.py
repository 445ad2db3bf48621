"""Red team 3: one-time codes guessed in parallel on the account page of ``twistd
easync``.

README "Brute force": "five wrong one-time codes lock out codes for that user".  The
lockout was checked before each code and counted after it, so codes sent together all
passed the check: 60 wrong authenticator codes at once got 7 (or more) of them
compared before the lockout, not 5.  Each user's codes are now checked one at a time
(in a process), so the sixth wrong code is always refused unchecked (HTTP 429).
"""

from __future__ import annotations

import collections
import http.client
import json
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from easync_server import RunningServer

PASSWORD = "code-Race-pw1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("rt3code")).start()
    try:
        srv.add_user("anna", PASSWORD, email="anna@example.it")
        srv.admin("user", "2fa", "anna", "totp")
        yield srv
    finally:
        srv.stop()


def test_parallel_wrong_codes_are_counted_one_by_one(server: RunningServer) -> None:
    cookie: dict[str, str] = {}
    lock = threading.Lock()

    def call(method: str, path: str, body: Any = None, csrf: str = "") -> tuple[int, Any]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx,
                                           timeout=120)
        headers = {"Content-Type": "application/json", "X-CSRF-Token": csrf}
        with lock:
            if cookie:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookie.items())
        conn.request(method, "/account/api/" + path,
                     json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        raw = resp.read()
        with lock:
            for value in resp.headers.get_all("Set-Cookie") or []:
                name, _, rest = value.partition("=")
                cookie[name] = rest.split(";")[0]
        return resp.status, json.loads(raw)

    csrf = call("GET", "session")[1]["csrf_token"]
    status, answer = call("POST", "login", {"username": "anna", "password": PASSWORD}, csrf)
    assert status == 200 and answer["code_required"]["method"] == "totp", answer
    csrf = call("GET", "session")[1]["csrf_token"]

    outcomes: collections.Counter[tuple[int, str]] = collections.Counter()
    barrier = threading.Barrier(40)

    def guess(n: int) -> None:
        barrier.wait()
        # a guess could be a valid code by chance (3 in a million): it would answer
        # 200, and the first assertion below would say so
        status, answer = call("POST", "login/code", {"code": f"{100000 + n:06d}"}, csrf)
        code = answer["error"]["code"] if "error" in answer else "ok"
        with lock:
            outcomes[(status, code)] += 1

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ("ok" not in {c for _s, c in outcomes}), outcomes
    assert outcomes[(403, "wrong-code")] == 5, outcomes          # compared: exactly 5
    assert outcomes[(429, "too-many-attempts")] == 35, outcomes  # the rest: refused
