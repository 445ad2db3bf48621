"""``twistd easync``: options, config file, the service tree, the self-signed certificate."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import textwrap

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.python.usage import UsageError

from easync import tap, tls
from easync.settings import Settings


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


# ------------------------------------------------------------------ plugin

# test_plugin_is_found_and_lazy is in tests/test_packaging.py (a scan in a fresh process)


def test_no_init_in_twisted_plugins() -> None:
    """An __init__.py in twisted/ or twisted/plugins/ would shadow Twisted's own."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert os.path.exists(os.path.join(root, "twisted", "plugins", "easync_plugin.py"))
    assert not os.path.exists(os.path.join(root, "twisted", "__init__.py"))
    assert not os.path.exists(os.path.join(root, "twisted", "plugins", "__init__.py"))


# ------------------------------------------------------------------ options

def test_defaults() -> None:
    o = parse()
    assert o["db"] == "sqlite:///easync.sqlite"
    assert o["listen"] == ["ssl:8443:interface=127.0.0.1"]
    assert o["backend"] == "sql"
    assert o["auth"] == "local"
    assert o["tls-cert"] == "easync.pem"
    assert o["config"] is None
    assert o.settings() == Settings()


def test_overrides() -> None:
    o = parse("--db", "postgresql://u@localhost/easync", "--max-window", "50",
              "--default-window", "20", "--heartbeat-min", "120", "--heartbeat-max", "900",
              "--max-request-size", "2M", "--request-timeout", "30",
              "--provisioning", "off", "--max-picture-size", "64K",
              "--server-version", "14.1", "--max-ping-folders", "10",
              "--max-sync-collections", "5", "--idle-timeout", "90",
              "--fileas-order", "first-last")
    assert o["db"] == "postgresql://u@localhost/easync"
    s = o.settings()
    assert s.max_window == 50
    assert s.default_window == 20
    assert (s.heartbeat_min, s.heartbeat_max) == (120, 900)
    assert s.max_request_bytes == 2 * 1024 * 1024
    assert s.request_timeout == 30.0
    assert s.provisioning is False
    assert s.max_picture_bytes == 64 * 1024
    assert s.server_version == "14.1"
    assert s.max_ping_folders == 10
    assert s.max_sync_collections == 5
    assert o["idle-timeout"] == 90.0
    assert s.fileas_order == "first-last"


def test_listen_is_repeatable() -> None:
    o = parse("--listen", "tcp:8080:interface=127.0.0.1", "--listen", "ssl:443")
    assert o["listen"] == ["tcp:8080:interface=127.0.0.1", "ssl:443"]


@pytest.mark.parametrize("argv, message", [
    (["--max-window", "0"], "at least 1"),
    (["--max-window", "lots"], "whole number"),
    (["--heartbeat-min", "600", "--heartbeat-max", "300"], "heartbeat-min"),
    (["--default-window", "600", "--max-window", "300"], "default-window"),
    (["--max-request-size", "huge"], "size"),
    (["--request-timeout", "-1"], "more than 0"),
    (["--provisioning", "maybe"], "on or off"),
    (["--server-version", "9.9"], "one of"),
    (["--fileas-order", "by-mood"], "one of"),
    (["--backend", "crm"], "crm-url"),
    (["--backend", "mysql"], "one of"),
    (["--auth", "ldap"], "needs --ldap-url"),
    (["--auth", "ldap", "--ldap-url", "http://x"], "ldap:// or ldaps://"),
    (["--auth", "ldap", "--ldap-url", "ldap://x"], "ldap-bind-dn-template"),
    (["--auth", "ldap", "--ldap-url", "ldap://x", "--ldap-bind-dn-template", "uid=x"],
     "{user}"),
    (["--auth", "ldap", "--ldap-url", "ldap://x", "--ldap-base", "dc=x"],
     "ldap-service-dn"),
    (["--auth", "ldap", "--ldap-url", "ldaps://x", "--ldap-starttls", "on",
      "--ldap-bind-dn-template", "uid={user}"], "ldap://"),
    (["--smtp-user", "me"], "smtp-starttls"),
    (["--login-delay", "-1"], "0 or more"),
    (["--db", "mysql://x/y"], "sqlite:///"),
    (["--db", "sqlite://relative"], "sqlite:///"),
    (["--listen", "tcp:notaport"], "listen"),
    (["--listen", "carrier-pigeon:1"], "Unknown endpoint"),
    (["--no-such-option"], "no-such-option"),
])
def test_invalid_values(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse(*argv)
    assert message in str(e.value)


def write(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def test_config_file(tmp_path: os.PathLike[str]) -> None:
    conf = write(os.path.join(tmp_path, "easync.toml"), """
        db = "sqlite:////var/lib/easync/easync.sqlite"
        listen = ["tcp:8080:interface=127.0.0.1", "ssl:8443"]
        max-window = 64
        heartbeat-max = 1800
        provisioning = false
        max-request-size = "4M"
    """)
    o = parse("--config", conf)
    assert o["db"] == "sqlite:////var/lib/easync/easync.sqlite"
    assert o["listen"] == ["tcp:8080:interface=127.0.0.1", "ssl:8443"]
    s = o.settings()
    assert s.max_window == 64
    assert s.heartbeat_max == 1800
    assert s.provisioning is False
    assert s.max_request_bytes == 4 * 1024 * 1024
    assert s.heartbeat_min == Settings().heartbeat_min


def test_command_line_wins_over_config_file(tmp_path: os.PathLike[str]) -> None:
    conf = write(os.path.join(tmp_path, "easync.toml"), """
        db = "sqlite:///from-file.sqlite"
        listen = "tcp:8080"
        max-window = 64
        default-window = 10
    """)
    o = parse("--config", conf, "--max-window", "32", "--listen", "tcp:9090",
              "--db", "sqlite:///cli.sqlite")
    assert o["db"] == "sqlite:///cli.sqlite"
    assert o["listen"] == ["tcp:9090"]
    assert o.settings().max_window == 32
    assert o.settings().default_window == 10       # from the file
    # A single listen string in the file is a list of one.
    assert parse("--config", conf)["listen"] == ["tcp:8080"]


@pytest.mark.parametrize("text, message", [
    ("max-windw = 3\n", "unknown option 'max-windw'"),
    ("max_window = 3\n", "did you mean max-window"),
    ("max-window = 0\n", "max-window: must be at least 1"),
    ("max-window = [1, 2]\n", "single value"),
    ("listen = 8443\n", "listen must be"),
    ("listen = ['tcp:nope']\n", "listen"),
    ("db = 'oracle://x'\n", "db:"),
    ("auth = 'crm'\n", "crm-url"),
    ("this is not toml\n", "not valid TOML"),
])
def test_bad_config_file(tmp_path: os.PathLike[str], text: str, message: str) -> None:
    conf = write(os.path.join(tmp_path, "bad.toml"), text)
    with pytest.raises(UsageError) as e:
        parse("--config", conf)
    assert message in str(e.value)


def test_missing_config_file(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(UsageError, match="cannot read config file"):
        parse("--config", os.path.join(tmp_path, "nope.toml"))


def test_help_lists_defaults() -> None:
    text = str(tap.Options())
    for name in ("--config", "--listen", "--db", "--backend", "--auth", "--max-window",
                 "--heartbeat-min", "--heartbeat-max", "--max-request-size", "--tls-cert"):
        assert name in text
    assert "sqlite:///easync.sqlite" in text


# ------------------------------------------------------------------ endpoints

def test_ssl_endpoint_gets_the_default_certificate() -> None:
    desc, own = tap.endpoint_description("ssl:8443:interface=127.0.0.1", "/srv/e:sync/c=1.pem")
    assert own is True
    assert desc == "ssl:8443:interface=127.0.0.1:privateKey=/srv/e\\:sync/c\\=1.pem"
    desc, own = tap.endpoint_description("ssl:443:privateKey=/etc/k.pem", "/x.pem")
    assert (desc, own) == ("ssl:443:privateKey=/etc/k.pem", False)
    assert tap.endpoint_description("tcp:8080", "/x.pem") == ("tcp:8080", False)


# ------------------------------------------------------------------ service tree

def _service_tree(tmp_path: os.PathLike[str], *argv: str):  # type: ignore[no-untyped-def]
    pytest.importorskip("backends.sql.store")
    pytest.importorskip("easync.http.resource")
    from twisted.internet import reactor

    cert = os.path.join(tmp_path, "easync.pem")
    o = parse("--db", f"sqlite:///{tmp_path}/t.sqlite", "--tls-cert", cert, *argv)
    return tap.makeService(o, reactor), cert


def test_make_service_default(tmp_path: os.PathLike[str]) -> None:
    """No --listen: one HTTPS listener on 127.0.0.1:8443 with the new certificate."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    top, cert = _service_tree(tmp_path)
    names = [s.name for s in top]
    # the store first, the listener last; between them the push services
    assert names[0] == "store" and names[-1] == "listen-0" and "held-requests" in names
    endpoint = top.getServiceNamed("listen-0").endpoint
    assert isinstance(endpoint, SSL4ServerEndpoint)
    assert endpoint._port == 8443
    assert endpoint._interface == "127.0.0.1"
    assert os.path.exists(cert)
    assert not top.running            # nothing is bound until twistd starts it


def test_make_service_listeners(tmp_path: os.PathLike[str]) -> None:
    from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint

    top, _cert = _service_tree(tmp_path, "--listen", "tcp:8080:interface=127.0.0.1",
                              "--listen", "ssl:8444", "--max-window", "7")
    assert [s.name for s in top if s.name.startswith("listen")] == ["listen-0", "listen-1"]
    tcp = top.getServiceNamed("listen-0").endpoint
    assert isinstance(tcp, TCP4ServerEndpoint) and tcp._port == 8080
    ssl = top.getServiceNamed("listen-1").endpoint
    assert isinstance(ssl, SSL4ServerEndpoint) and ssl._port == 8444
    site = top.getServiceNamed("listen-0").factory
    assert site.displayTracebacks is False
    server = top.getServiceNamed("listen-0").factory.resource.eas.server
    assert server.settings.max_window == 7
    assert server.users is top.getServiceNamed("store")


def test_make_service_tcp_only_creates_no_certificate(tmp_path: os.PathLike[str]) -> None:
    _top, cert = _service_tree(tmp_path, "--listen", "tcp:8080")
    assert not os.path.exists(cert)


def test_make_service_bad_key_file(tmp_path: os.PathLike[str]) -> None:
    bad = os.path.join(tmp_path, "bad.pem")
    write(bad, "not a key\n")
    with pytest.raises(UsageError, match="--listen"):
        _service_tree(tmp_path, "--listen", f"ssl:8443:privateKey={bad}")


# ------------------------------------------------------------------ certificate

def test_certificate_created_once_and_reused(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "easync.pem")
    first = tls.ensure_certificate(path, ["localhost", "phone-gw.example.org"])
    assert first.created is True
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "rb") as f:
        data = f.read()
    assert b"PRIVATE KEY" in data and b"BEGIN CERTIFICATE" in data
    second = tls.ensure_certificate(path)
    assert second.created is False
    assert second.fingerprint == first.fingerprint
    with open(path, "rb") as f:
        assert f.read() == data
    assert len(first.fingerprint.split(":")) == 32


def test_certificate_contents(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "easync.pem")
    info = tls.ensure_certificate(path, ["localhost", "phone-gw.example.org"])
    cert = tls.load_certificate(path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "phone-gw.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days <= 825
    assert info.fingerprint == tls.fingerprint(cert)
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]


def test_default_hostnames_include_this_machine() -> None:
    import socket

    names = tls.default_hostnames()
    assert names[0] == "localhost"
    assert socket.gethostname().lower() in names


def test_unreadable_certificate_file(tmp_path: os.PathLike[str]) -> None:
    path = write(os.path.join(tmp_path, "easync.pem"), "garbage\n")
    with pytest.raises(ValueError, match="no PEM certificate"):
        tls.ensure_certificate(path)


def test_certificate_announced_once_with_fingerprint(tmp_path: os.PathLike[str]) -> None:
    """Two ssl: listeners share the certificate; it is created and logged once."""
    from twisted.logger import globalLogPublisher

    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        _top, cert = _service_tree(tmp_path, "--listen", "ssl:8443", "--listen", "ssl:9443")
    finally:
        globalLogPublisher.removeObserver(events.append)
    notes = [e for e in events if "fingerprint" in e]
    assert len(notes) == 1
    assert notes[0]["verb"] == "Created self-signed"
    assert notes[0]["fingerprint"] == tls.fingerprint(tls.load_certificate(cert))


def test_expired_certificate_is_reported(tmp_path: os.PathLike[str]) -> None:
    from twisted.logger import globalLogPublisher

    expired = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    info = tls.CertificateInfo(path="/x.pem", fingerprint="AA", created=False,
                               not_after=expired)
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        tap._announce(info, now=expired.timestamp() + 86400)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("has expired" in str(e.get("log_format")) for e in events)
