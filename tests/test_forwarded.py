"""X-Forwarded-For (``easync.http.forwarded``) and the options of push and operations:
``--trusted-proxy``, ``--metrics-listen``, ``--workers``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from twisted.python import usage

from easync import tap
from easync.http.forwarded import client_address, parse_networks

TRUSTED = parse_networks(["127.0.0.1", "10.0.0.0/8", "2001:db8:1::/48"])


@pytest.mark.parametrize(("peer", "header", "want"), [
    # a trusted proxy forwarding a phone
    ("127.0.0.1", [b"203.0.113.9"], ("203.0.113.9", "127.0.0.1")),
    # two proxies: the inner one trusted, the phone's own claim to the left ignored
    ("10.1.2.3", [b"198.51.100.1, 203.0.113.9, 10.9.9.9"], ("203.0.113.9", "10.1.2.3")),
    # the header split over two lines
    ("127.0.0.1", [b"203.0.113.9", b"10.0.0.7"], ("203.0.113.9", "127.0.0.1")),
    # ports and brackets, IPv6, IPv4-mapped IPv6
    ("127.0.0.1", [b"203.0.113.9:4711"], ("203.0.113.9", "127.0.0.1")),
    ("127.0.0.1", [b"[2001:db8:2::5]:443"], ("2001:db8:2::5", "127.0.0.1")),
    ("127.0.0.1", [b"::ffff:203.0.113.9"], ("203.0.113.9", "127.0.0.1")),
    ("2001:db8:1::1", [b"203.0.113.9"], ("203.0.113.9", "2001:db8:1::1")),
    # garbage stops the walk at the last address believed
    ("127.0.0.1", [b"203.0.113.9, unknown"], ("127.0.0.1", None)),
    ("127.0.0.1", [b"unknown, 10.0.0.5"], ("10.0.0.5", "127.0.0.1")),
    # every hop a trusted proxy: the leftmost
    ("127.0.0.1", [b"10.0.0.1, 10.0.0.2"], ("10.0.0.1", "127.0.0.1")),
    # a peer that is not trusted: the header is not believed
    ("192.0.2.1", [b"203.0.113.9"], ("192.0.2.1", None)),
    # no header
    ("127.0.0.1", None, ("127.0.0.1", None)),
    ("127.0.0.1", [b""], ("127.0.0.1", None)),
])
def test_client_address(peer: str, header: list[bytes] | None, want: tuple) -> None:
    assert client_address(peer, header, TRUSTED) == want


def test_nothing_trusted_ignores_the_header() -> None:
    assert client_address("127.0.0.1", [b"203.0.113.9"], ()) == ("127.0.0.1", None)


def test_parse_networks_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="10.0.0.0/8"):
        parse_networks(["proxy.example.org"])


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_options_from_the_command_line() -> None:
    o = parse("--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8",
              "--metrics-listen", "tcp:9108:interface=127.0.0.1")
    assert o.settings().trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert o["metrics-listen"] == "tcp:9108:interface=127.0.0.1"
    assert o["workers"] == 1
    assert parse()["metrics-listen"] == "off" and parse().settings().trusted_proxies == ()


def test_options_from_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "easync.toml"
    conf.write_text('trusted-proxy = ["127.0.0.1", "::1"]\nmetrics-listen = "tcp:9200"\n'
                    'workers = 2\ndb = "postgresql://u@localhost/easync"\n')
    o = parse("--config", str(conf))
    assert o.settings().trusted_proxies == ("127.0.0.1", "::1")
    assert o["metrics-listen"] == "tcp:9200" and o["workers"] == 2
    # the command line wins
    o = parse("--config", str(conf), "--trusted-proxy", "10.1.1.1")
    assert o.settings().trusted_proxies == ("10.1.1.1",)
    conf.write_text('trusted_proxy = "127.0.0.1"\n')
    with pytest.raises(usage.UsageError, match="did you mean trusted-proxy"):
        parse("--config", str(conf))


@pytest.mark.parametrize(("argv", "message"), [
    (["--trusted-proxy", "proxy.example.org"], "trusted-proxy"),
    (["--metrics-listen", "nonsense:1"], "metrics-listen 'nonsense:1'"),
    (["--workers", "0"], "at least 1"),
    (["--workers", "2"], "postgresql"),        # the default --db is SQLite
])
def test_bad_values(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message):
        parse(*argv)


def test_metrics_listener_in_the_service_tree(tmp_path: os.PathLike[str]) -> None:
    from twisted.internet import reactor

    o = parse("--db", f"sqlite:///{tmp_path}/t.sqlite", "--listen", "tcp:0",
              "--metrics-listen", "tcp:9108:interface=127.0.0.1")
    top = tap.makeService(o, reactor)
    metrics = top.getServiceNamed("metrics")
    assert metrics.endpoint._port == 9108
    assert b"easync_held_requests" in metrics.factory.resource.render_GET(
        _Get(b"/metrics"))
    assert "metrics" not in [s.name for s in tap.makeService(
        parse("--db", f"sqlite:///{tmp_path}/t.sqlite", "--listen", "tcp:0"), reactor)]


class _Get:
    def __init__(self, path: bytes) -> None:
        self.path = path
        self.headers: dict[bytes, bytes] = {}
        self.code = 200

    def setHeader(self, name: bytes, value: bytes) -> None:
        self.headers[name] = value

    def setResponseCode(self, code: int) -> None:
        self.code = code
