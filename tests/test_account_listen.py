"""Where ``twistd easync`` serves the account page: ``--account-listen same|off|ENDPOINT``
(real processes, real HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from easync_server import RunningServer, free_port

from easync.tap import Options

pytestmark = pytest.mark.timeout(90)


def get(url: str) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=10)


def test_option_values() -> None:
    for given, expected in (([], "same"), (["--account-listen", "off"], "off"),
                            (["--account-listen", "tcp:8081:interface=127.0.0.1"],
                             "tcp:8081:interface=127.0.0.1")):
        o = Options()
        o.parseOptions(given)
        assert o["account-listen"] == expected
    with pytest.raises(Exception, match="same, off or an endpoint"):
        Options().parseOptions(["--account-listen", "nonsense:1"])


def test_same_listener_by_default_and_off(tmp_path: Path) -> None:
    srv = RunningServer(tmp_path / "a", tls=False)
    (tmp_path / "a").mkdir()
    try:
        srv.start()
        r = get(f"http://{srv.host}/account/login")
        assert r.status_code == 200 and 'name="csrf"' in r.text
        assert r.headers["X-Frame-Options"] == "DENY"
        assert "easync_account=" in r.headers["Set-Cookie"]
    finally:
        srv.stop()
    off = RunningServer(tmp_path / "b", args=["--account-listen", "off"], tls=False)
    (tmp_path / "b").mkdir()
    try:
        off.start()
        assert get(f"http://{off.host}/account/login").status_code == 404
    finally:
        off.stop()


def test_own_listener_only(tmp_path: Path) -> None:
    port = free_port()
    srv = RunningServer(tmp_path, args=["--account-listen", f"ssl:{port}:interface=127.0.0.1"],
                        tls=False)
    try:
        srv.start()
        assert get(f"http://{srv.host}/account/login").status_code == 404
        base = f"https://127.0.0.1:{port}"
        pem = str(tmp_path / "easync.pem")       # the self-signed certificate, made for it
        r = requests.get(base + "/", allow_redirects=False, timeout=10, verify=pem)
        assert r.status_code in (301, 302) and r.headers["Location"].endswith("/account/")
        r = requests.get(base + "/account/login", timeout=10, verify=pem)
        assert r.status_code == 200 and "Log in" in r.text
        assert "Strict-Transport-Security" in r.headers
        assert "account GET /account/login http=200" in srv.log_text()
    finally:
        srv.stop()
