"""Issue #10, point 10: client text in the request log line is escaped, through twistd.

A DeviceId, User and DeviceType with a newline and ESC (sent URL-encoded in the
MS-ASHTTP 2.2.1.1.1 query) must give one log line with ``\\n`` and ``\\x1b`` written
out, not a split line or a raw terminal escape.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from easync_server import RunningServer

PASSWORD = "log-escape-pass-1"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    srv = RunningServer(tmp_path_factory.mktemp("logesc")).start()
    srv.add_user("lena", PASSWORD, email="lena@example.org")
    yield srv
    srv.stop()


def test_hostile_query_fields_give_one_escaped_line(server: RunningServer) -> None:
    params = {"Cmd": "FolderSync", "User": "lena\nFAKE\x1b[31m",
              "DeviceId": "dev\nINJECTED line\x1b[2J", "DeviceType": "Ph\none"}
    requests.post(server.url, params=params, auth=("lena", PASSWORD), verify=False,
                  headers={"MS-ASProtocolVersion": "14.1",
                           "Content-Type": "application/vnd.ms-sync.wbxml"},
                  data=b"", timeout=30)
    text = server.log_text()
    assert "\x1b" not in text
    lines = [ln for ln in text.splitlines() if "INJECTED" in ln]
    assert len(lines) == 1, text[-2000:]
    assert "dev\\nINJECTED line\\x1b[2J" in lines[0]
    assert not any(ln.startswith("FAKE") or ln.lstrip().startswith("INJECTED")
                   for ln in text.splitlines())


def test_log_safe_unit() -> None:
    from easync.http.resource import log_safe
    assert log_safe("dev-1 Ünïcode") == "dev-1 Ünïcode"
    assert log_safe("a\nb\rc\td\x1be\x00\x7f\u2028") == "a\\nb\\rc\\td\\x1be\\x00\\x7f\\u2028"


def test_braces_in_client_text_are_logged_as_sent(server: RunningServer) -> None:
    # The request line is formatted once and handed to the log as a format without
    # fields (issue #12 point 1): a "{...}" in client text must come out as it is, not be
    # taken for a field (Twisted would then write "Unable to format event" instead).
    params = {"Cmd": "FolderSync", "User": "lena", "DeviceId": "dev{user}{0}}{BRACE",
              "DeviceType": "Ph{x"}
    requests.post(server.url, params=params, auth=("lena", PASSWORD), verify=False,
                  headers={"MS-ASProtocolVersion": "14.1",
                           "Content-Type": "application/vnd.ms-sync.wbxml"},
                  data=b"", timeout=30)
    text = server.log_text()
    lines = [ln for ln in text.splitlines() if "BRACE" in ln]
    assert len(lines) == 1, text[-2000:]
    assert " lena dev{user}{0}}{BRACE FolderSync http=" in lines[0], lines[0]
    assert "Unable to format" not in text
