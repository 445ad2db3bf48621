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
from easync.http import listen
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
    (["--tombstone-max-age", "3 weeks"], "such as 90d"),
    (["--device-max-idle", "-1d"], "such as 90d"),
    (["--purge-interval", "0"], "more than 0"),
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


# ------------------------------------------------------------------ typed configuration

def test_every_default_is_written_once_and_reaches_its_typed_field() -> None:
    """The option table is the one place where a default is written: each option
    fills one field of one section, its default reaches that field, and the sections
    (the protocol Settings aside, whose defaults the table takes) have none of their
    own."""
    import dataclasses

    from easync import config as cfg

    conf = parse().config
    filled: list[str] = []
    for entry in cfg.ENTRIES:
        section, attribute = entry.field.split(".")
        value = getattr(getattr(conf, section), attribute)
        expected = (tuple(entry.default) if isinstance(entry, cfg.Repeatable)
                    else entry.default)
        assert value == expected and type(value) is type(expected), entry.name
        filled.append(entry.field)
    assert len(filled) == len(set(filled)), "two options fill one field"
    assert [f.name for f in dataclasses.fields(cfg.ServerConfig)] == list(cfg.SECTIONS)
    for name, section_type in cfg.SECTIONS.items():
        assert isinstance(getattr(conf, name), section_type)
        for f in dataclasses.fields(section_type):
            assert f"{name}.{f.name}" in filled, f"no option fills {name}.{f.name}"
            if section_type is not Settings:
                assert f.default is dataclasses.MISSING, f"{name}.{f.name} has a default"
                assert f.default_factory is dataclasses.MISSING
    # the protocol tunables' defaults are Settings' own, taken by the table
    assert conf.settings == Settings()
    # and the dict view twistd keeps is the same values
    o = parse()
    assert {k: o[k] for k in conf.values()} == conf.values()
    assert o["listen"] == ["ssl:8443:interface=127.0.0.1"]


# (option, in the file, on the command line, the command line's value, its field)
SAMPLES = [
    ("listen", '"tcp:8080"', "tcp:9090", ("tcp:9090",), "listen.endpoints"),
    ("idle-timeout", "90", "45", 45.0, "listen.idle_timeout"),
    ("max-connections-per-address", "10", "0", 0, "listen.max_connections_per_address"),
    ("account-listen", '"off"', "tcp:8081", "tcp:8081", "listen.account_listen"),
    ("db", '"sqlite:///file.sqlite"', "sqlite:///cli.sqlite", "sqlite:///cli.sqlite",
     "store.db"),
    ("node-name", '"from-file"', "from-cli", "from-cli", "store.node_name"),
    ("login-delay", "3", "0", 0.0, "auth.login_delay"),
    ("lockout-after", "4", "7", 7, "auth.lockout_after"),
    ("ldap-timeout", "2.5", "9", 9.0, "ldap.timeout"),
    ("ldap-starttls", "true", "off", False, "ldap.starttls"),
    ("smtp-port", "2525", "587", 587, "smtp.port"),
    ("smtp-from", '"file@example.org"', "cli@example.org", "cli@example.org", "smtp.sender"),
    ("crm-timeout", "12", "3", 3.0, "crm.timeout"),
    ("crm-timezone", '"Europe/Rome"', "Europe/Berlin", "Europe/Berlin", "crm.timezone"),
    ("max-window", "64", "32", 32, "settings.max_window"),
    ("provisioning", "false", "on", True, "settings.provisioning"),
    ("trusted-proxy", '["10.0.0.0/8"]', "127.0.0.1", ("127.0.0.1",),
     "settings.trusted_proxies"),
]


@pytest.mark.parametrize("name, in_file, given, expected, field", SAMPLES,
                         ids=[s[0] for s in SAMPLES])
def test_command_line_wins_in_every_section(tmp_path: os.PathLike[str], name: str,
                                            in_file: str, given: str, expected: object,
                                            field: str) -> None:
    """For a sample of each section: the command line's value reaches the typed field
    over the file's; without it the file's does."""
    conf_file = write(os.path.join(tmp_path, "easync.toml"), f"{name} = {in_file}\n")
    section, attribute = field.split(".")
    conf = parse("--config", conf_file, f"--{name}", given).config
    assert getattr(getattr(conf, section), attribute) == expected
    from_file = getattr(getattr(parse("--config", conf_file).config, section), attribute)
    assert from_file != expected
    assert from_file != getattr(getattr(parse().config, section), attribute)


# ------------------------------------------------------------------ endpoints

def test_ssl_endpoint_gets_the_default_certificate() -> None:
    desc, own = listen.endpoint_description("ssl:8443:interface=127.0.0.1:backlog=9",
                                            "/srv/e:sync/c=1.pem")
    assert own is True
    assert desc == "ssl:8443:interface=127.0.0.1:backlog=9:privateKey=/srv/e\\:sync/c\\=1.pem"
    desc, own = listen.endpoint_description("ssl:443:privateKey=/etc/k.pem:backlog=9", "/x.pem")
    assert (desc, own) == ("ssl:443:privateKey=/etc/k.pem:backlog=9", False)
    assert listen.endpoint_description("tcp:8080:backlog=9", "/x.pem") == (
        "tcp:8080:backlog=9", False)


def test_ports_listen_with_a_backlog_that_fits_a_burst() -> None:
    """Issue #12 point 3: Twisted's default listen() backlog (50) drops connects beyond
    it; a port whose endpoint string does not say backlog= gets DEFAULT_BACKLOG
    (tests/test_e2e_burst.py shows a burst of 1,000 served)."""
    big = listen.DEFAULT_BACKLOG
    assert big >= 1024
    for given in ("tcp:8080", "tcp6:8080:interface=\\:\\:1", "ssl:443:privateKey=/k.pem",
                  "unix:/run/easync.sock"):
        desc, _own = listen.endpoint_description(given, "/x.pem")
        assert desc.startswith(given) and f":backlog={big}" in desc, desc
    # a backlog given is kept
    assert listen.endpoint_description("tcp:8080:backlog=10", "/x.pem")[0] == \
        "tcp:8080:backlog=10"
    # other endpoint kinds are left alone
    assert listen.endpoint_description("systemd:domain=INET:index=0", "/x.pem")[0] == \
        "systemd:domain=INET:index=0"


# ------------------------------------------------------------------ service tree

def _service_tree(tmp_path: os.PathLike[str], *argv: str):  # type: ignore[no-untyped-def]
    from twisted.internet import reactor

    cert = os.path.join(tmp_path, "easync.pem")
    o = parse("--db", f"sqlite:///{tmp_path}/t.sqlite", "--tls-cert", cert, *argv)
    return tap.makeService(o, reactor), cert


def test_make_service_default(tmp_path: os.PathLike[str]) -> None:
    """No --listen: one HTTPS listener on 127.0.0.1:8443 with the new certificate."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    top, cert = _service_tree(tmp_path)
    names = [s.name for s in top]
    # the store first (opened at once by the database check: test_tap_errors), the
    # listener last; between them the push services
    assert names[:2] == ["database-check", "store"]
    assert names[-1] == "listen-0" and "held-requests" in names
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


@pytest.mark.parametrize("option", ["--account-listen", "--metrics-listen"])
def test_every_listener_reports_a_bad_key_file_under_its_option(
        tmp_path: os.PathLike[str], option: str) -> None:
    """All listeners are set up by easync.http.listen: a bad endpoint is a usage
    error naming the option it came from."""
    bad = write(os.path.join(tmp_path, "bad.pem"), "not a key\n")
    with pytest.raises(UsageError, match=f"^{option} ssl:0:privateKey="):
        _service_tree(tmp_path, "--listen", "tcp:0", option, f"ssl:0:privateKey={bad}")


def test_account_listener_shares_the_certificate(tmp_path: os.PathLike[str]) -> None:
    """--account-listen ssl: without privateKey= uses the --tls-cert file as --listen
    does: one certificate, created and announced once, then both TLS listeners."""
    from twisted.internet.endpoints import SSL4ServerEndpoint
    from twisted.logger import globalLogPublisher

    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        top, cert = _service_tree(tmp_path, "--listen", "ssl:8443",
                                  "--account-listen", "ssl:8444")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [s.name for s in top][-2:] == ["account-listen", "listen-0"]
    for name, port in (("account-listen", 8444), ("listen-0", 8443)):
        endpoint = top.getServiceNamed(name).endpoint
        assert isinstance(endpoint, SSL4ServerEndpoint) and endpoint._port == port
    notes = [e for e in events if "fingerprint" in e]
    assert len(notes) == 1 and notes[0]["path"] == cert
    account_site = top.getServiceNamed("account-listen").factory
    assert account_site.displayTracebacks is False
    assert account_site.resource.children[b"account"] is not None


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
        listen.announce(info, now=expired.timestamp() + 86400)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("has expired" in str(e.get("log_format")) for e in events)


def test_retention_options_take_durations_and_build_the_service(
        tmp_path: os.PathLike[str]) -> None:
    """Issue #13 point 6: --tombstone-max-age and --device-max-idle take s/m/h/d (a bare
    number: seconds), default 90 and 180 days; the service tree runs the passes."""
    o = parse()
    assert (o.config.store.tombstone_max_age, o.config.store.device_max_idle,
            o.config.store.purge_interval) == (90 * 86400, 180 * 86400, 600)
    o = parse("--tombstone-max-age", "30d", "--device-max-idle", "0",
              "--purge-interval", "60")
    assert (o.config.store.tombstone_max_age, o.config.store.device_max_idle,
            o.config.store.purge_interval) == (30 * 86400, 0, 60)
    assert parse("--tombstone-max-age", "36h").config.store.tombstone_max_age == 129600
    assert parse("--tombstone-max-age", "45").config.store.tombstone_max_age == 45
    top, _cert = _service_tree(tmp_path)
    retention = top.getServiceNamed("retention")
    assert retention.tombstone_max_age == 90 * 86400 and retention.interval == 600
