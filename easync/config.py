"""The server's configuration: one option table, resolved once into typed sections.

``OPTIONS`` is the one table of options shared by the command line (``twistd easync``,
``easync.tap.Options``) and the config file.  The config file is TOML, with the
command-line option names as keys::

    listen = ["ssl:8443:interface=0.0.0.0"]
    db = "postgresql://easync@localhost/easync"
    max-window = 256
    provisioning = "on"            # or true

Precedence: command line, then config file, then the option's default in ``OPTIONS``
(for the protocol tunables the table takes them from ``easync.settings.Settings``).
``resolve`` checks the values together and returns a ``ServerConfig``: one frozen
section per part of the server (``listen``, ``store``, ``auth``, ``ldap``, ``smtp``,
``crm``, and the protocol ``settings``), each field filled from exactly one option
(``Option.field``).  The sections have no defaults of their own: the table is the one
place where a default is written.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from easync.settings import FILEAS_ORDERS, Settings
from easync.versions import VERSIONS


class ConfigError(ValueError):
    """An invalid option value or config file."""


# Backends and authentication methods whose code exists.  The other names are part of
# the command-line contract and are refused with a clear message until implemented.
BACKENDS = ("sql", "crm")
BACKENDS_IMPLEMENTED = ("sql", "crm")
AUTHS = ("local", "ldap", "crm")
AUTHS_IMPLEMENTED = ("local", "ldap", "crm")


def _doc(coerce: Callable[..., Any], text: str) -> None:
    """Give a coerce function the ``coerceDoc`` that ``usage.Options`` shows in --help."""
    coerce.__dict__["coerceDoc"] = text


def _int(minimum: int) -> Callable[[Any], int]:
    def coerce(value: Any) -> int:
        if isinstance(value, bool):
            raise TypeError(f"expected a whole number, got {value!r}")
        try:
            n = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        if n < minimum:
            raise ValueError(f"must be at least {minimum}, got {n}")
        return n
    _doc(coerce, f"A whole number >= {minimum}.")
    return coerce


def _seconds(value: Any, ok: Callable[[float], bool], bound: str) -> float:
    """A number of seconds for which ``ok`` holds (never for NaN), else "must be
    {bound}"."""
    if isinstance(value, bool):
        raise TypeError(f"expected a number of seconds, got {value!r}")
    try:
        n = float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not ok(n):
        raise ValueError(f"must be {bound}, got {value!r}")
    return n


def positive_float(value: Any) -> float:
    return _seconds(value, lambda n: n > 0, "more than 0")


def share(value: Any) -> float:
    """A share between 0 and 1 (0.5), or a percentage (50%)."""
    if isinstance(value, bool):
        raise TypeError(f"expected a share such as 0.5, got {value!r}")
    raw = str(value).strip()
    try:
        n = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"expected a share such as 0.5 or 50%, got {value!r}") from None
    if not 0 <= n <= 1:
        raise ValueError(f"must be between 0 and 1, got {value!r}")
    return n


_doc(share, "A share from 0 to 1 (0.5), or a percentage (50%).")


_SIZE = re.compile(r"^\s*(\d+)\s*([kKmMgG]?)i?[bB]?\s*$")
_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def size(value: Any) -> int:
    """Bytes, with an optional K/M/G suffix (binary: 16M = 16 MiB)."""
    if isinstance(value, bool):
        raise TypeError(f"expected a size such as 16M, got {value!r}")
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"expected a size such as 16M, got {value!r}")
    n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 1024:
        raise ValueError(f"must be at least 1K, got {value!r}")
    return n


_doc(size, "Bytes, or with a K/M/G suffix (16M).")


def size_or_off(value: Any) -> int:
    """A ``size``, or ``off`` (0)."""
    if isinstance(value, str) and value.strip().lower() in _FALSE:
        return 0
    return size(value)


_doc(size_or_off, "Bytes, or with a K/M/G suffix (16M); off: never.")


def _show_size(n: int) -> str:
    for suffix, unit in (("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: Any) -> float:
    """Seconds, or with an s/m/h/d suffix (90d); 0 or more."""
    if isinstance(value, bool):
        raise TypeError(f"expected a duration such as 90d, got {value!r}")
    m = _DURATION.match(str(value).lower())
    if not m:
        raise ValueError(f"expected a duration such as 90d, 12h or 3600, got {value!r}")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


_doc(duration, "Seconds, or with a s/m/h/d suffix (90d).")


def _show_duration(n: float) -> str:
    for suffix, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        if n and n % unit == 0:
            return f"{int(n // unit)}{suffix}"
    return f"{n:g}"


_TRUE = {"on", "yes", "true", "1"}
_FALSE = {"off", "no", "false", "0"}


def on_off(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    v = str(value).strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"expected on or off, got {value!r}")


_doc(on_off, "on or off.")


def policy_settings(value: Any) -> tuple[tuple[str, str], ...]:
    """Device policy settings (``easync.policy``): ``Setting=value`` pairs separated
    by commas or spaces, or in the config file a ``[policy]`` table; each checked
    against its MS-ASPROV range."""
    from easync.policy import PolicyError, parse_policy

    if isinstance(value, tuple) and all(isinstance(p, tuple) for p in value):
        value = dict(value)
    try:
        return tuple(sorted(parse_policy(value).items()))
    except PolicyError as e:
        raise ValueError(str(e)) from None


_doc(policy_settings, "Setting=value pairs (EASProvisionDoc names), e.g. "
     "DevicePasswordEnabled=1,MinDevicePasswordLength=6.")

# options whose config-file value may be a TOML table
TABLE_OPTIONS = frozenset({"policy"})


def choice(*names: str) -> Callable[[Any], str]:
    def coerce(value: Any) -> str:
        v = str(value).strip()
        if v not in names:
            raise ValueError(f"expected one of {', '.join(names)}, got {value!r}")
        return v
    _doc(coerce, f"One of: {', '.join(names)}.")
    return coerce


def db_url(value: Any) -> str:
    v = str(value).strip()
    scheme = v.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if not v.startswith("sqlite:///") or len(v) <= len("sqlite:///"):
            raise ValueError(f"expected sqlite:///PATH (relative) or sqlite:////PATH "
                             f"(absolute), got {value!r}")
    elif scheme not in ("postgresql", "postgres") or "://" not in v:
        raise ValueError(f"expected sqlite:///PATH or postgresql://…, got {value!r}")
    return v


def text(value: Any) -> str:
    """Any one-line string (may be empty)."""
    v = str(value).strip()
    if "\n" in v:
        raise ValueError("expected one line")
    return v


def seconds0(value: Any) -> float:
    return _seconds(value, lambda n: n >= 0, "0 or more")


def path(value: Any) -> str:
    v = str(value).strip()
    if not v:
        raise ValueError("expected a file name")
    return v


def node_name(value: Any) -> str:
    v = str(value).strip()
    if not v or "\n" in v or len(v) > 200:
        raise ValueError(f"expected a name of one line (at most 200 characters), got {value!r}")
    return v


def public_url(value: Any) -> str:
    v = str(value).strip().rstrip("/")
    if v and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", v):
        raise ValueError(f"expected https://HOST[:PORT], got {value!r}")
    return v


@dataclass(frozen=True)
class Option:
    name: str                       # the long option and the config-file key
    default: Any
    coerce: Callable[[Any], Any]
    help: str
    field: str                      # "section.attribute" of ServerConfig it fills

    def help_text(self) -> str:
        default = self.default
        if isinstance(default, bool):
            default = "on" if default else "off"
        elif self.coerce is size:
            default = _show_size(default)
        elif self.coerce is duration:
            default = _show_duration(default)
        elif default == ():
            default = "none"
        return f"{self.help} [default: {default}]"


_S = Settings()


def _tunable(name: str, field: str, coerce: Callable[[Any], Any], help: str) -> Option:
    """An option filling the ``Settings`` field ``field``, whose default it is."""
    return Option(name, getattr(_S, field), coerce, help, f"settings.{field}")


OPTIONS: tuple[Option, ...] = (
    Option("db", "sqlite:///easync.sqlite", db_url,
           "Database URL: sqlite:///FILE (relative to the working directory) or "
           "postgresql://USER:PASSWORD@HOST/DB.",
           field="store.db"),
    Option("node-name", "auto", node_name,
           "This process's name among several on one PostgreSQL database, in logs and "
           "easync-admin device list; auto: host name:process id.",
           field="store.node_name"),
    # -- retention (easync.retention): README "Retention: tombstones and idle devices"
    Option("tombstone-max-age", 90 * 86400.0, duration,
           "Deleted items are remembered (as tombstones) until every device has synced "
           "past them, or at most this long: a device that has not synced a folder since "
           "then gets a full resync of it (Sync Status 3). 0: kept until synced past.",
           field="store.tombstone_max_age"),
    Option("device-max-idle", 180 * 86400.0, duration,
           "A device unseen this long is forgotten with its sync state (not a blocked "
           "one or one with a wipe pending); it starts over as a new device. 0: never.",
           field="store.device_max_idle"),
    Option("purge-interval", 600.0, positive_float,
           "Seconds between two retention passes (tombstones, idle devices).",
           field="store.purge_interval"),
    # -- deleted items kept (easync.deleted): README "Deleted items: nothing lost to a phone"
    Option("deleted-keep", 30 * 86400.0, duration,
           "What a device deletes (Sync Delete) is kept this long and can be listed and "
           "restored (easync-admin deleted, the account page). 0: kept for ever.",
           field="store.deleted_keep"),
    Option("backend", "sql", choice(*BACKENDS),
           "Item store: sql (easync's database) or crm (a vtenext/vtiger CRM at "
           "--crm-url; users, devices and sync state stay in --db).",
           field="store.backend"),
    Option("auth", "local", choice(*AUTHS),
           "Login password check: local (bcrypt in easync's database), ldap (a bind to "
           "--ldap-url) or crm (vtenext login_pwd at --crm-url).",
           field="auth.method"),
    Option("tls-cert", "easync.pem", path,
           "PEM file with key and certificate for ssl: endpoints without privateKey=; "
           "a self-signed one is created there if missing.",
           field="listen.tls_cert"),
    Option("idle-timeout", 600.0, positive_float,
           "Seconds an HTTP connection may stay idle (or send nothing) before it is closed;"
           " a held Ping or Sync is not idle. With --header-timeout: only how long a "
           "response may take to reach a slow reader.",
           field="listen.idle_timeout"),
    Option("header-timeout", 10.0, seconds0,
           "Seconds a connection has to send a whole request head (from its opening or "
           "its previous response; idle keep-alive connections are closed then), and "
           "longest pause inside a request body; a held Ping or Sync is not cut. "
           "0: off (--idle-timeout applies).",
           field="listen.header_timeout"),
    Option("max-connections-per-address", 256, _int(0),
           "Connections one client address may hold open on the --listen ports (per "
           "process); more are closed at once. 0: no cap (set it behind a reverse "
           "proxy, whose address all connections have).",
           field="listen.max_connections_per_address"),
    _tunable("max-window", "max_window", _int(1),
             "Most items in one Sync response, whatever WindowSize the device asks."),
    _tunable("default-window", "default_window", _int(1),
             "Items per Sync response when the device gives no WindowSize."),
    _tunable("max-request-size", "max_request_bytes", size,
             "Largest request body accepted."),
    _tunable("request-timeout", "request_timeout", positive_float,
             "Seconds a command other than Ping or Sync may take before it fails."),
    _tunable("heartbeat-min", "heartbeat_min", _int(1),
             "Shortest Ping/Sync heartbeat in seconds."),
    _tunable("heartbeat-max", "heartbeat_max", _int(1),
             "Longest Ping/Sync heartbeat in seconds."),
    _tunable("max-ping-folders", "max_ping_folders", _int(1),
             "Most folders one Ping may watch."),
    _tunable("max-sync-collections", "max_sync_collections", _int(1),
             "Most collections in one Sync request."),
    _tunable("max-sync-commands", "max_sync_commands", _int(1),
             "Most Add, Change, Delete and Fetch commands in one Sync request "
             "(more: Status 4)."),
    _tunable("max-devices-per-user", "max_devices_per_user", _int(0),
             "Devices (DeviceIds) one user may have; a new one beyond is refused "
             "(Status 177). 0: no cap."),
    _tunable("provisioning", "provisioning", on_off,
             "Require devices to provision (Provision command) first."),
    # -- the device policy (easync.policy): README "Device policy (passcode and lock)"
    _tunable("policy", "policy", policy_settings,
             "The device policy for every user (a user's own settings from "
             "easync-admin policy set win): Setting=value pairs such as "
             "DevicePasswordEnabled=1,MinDevicePasswordLength=6; in the config file a "
             "[policy] table. Unset settings ask for nothing."),
    _tunable("allow-non-provisionable", "allow_non_provisionable", on_off,
             "A device that answers that it did not (fully) apply the policy still "
             "syncs (logged); off: it is refused (Provision Status 139, or 145 for an "
             "externally managed one; HTTP 403 below EAS 14.0)."),
    _tunable("max-picture-size", "max_picture_bytes", size,
             "Largest contact picture stored."),
    _tunable("fileas-order", "fileas_order", choice(*FILEAS_ORDERS),
             "How a contact sent without FileAs is filed on the other devices: "
             "last-first (Last, First), first-last (First Last), last-first-nocomma "
             "(Last First) or company-first; without names: the company, else the "
             "e-mail address."),
    _tunable("mass-delete-share", "mass_delete_share", share,
             "A Sync that deletes more than this share of a folder's items (0..1) is "
             "logged as a warning, written to the audit log and counted on /metrics "
             "(easync_mass_deletes_total). 0: off."),
    _tunable("mass-delete-min", "mass_delete_min", _int(1),
             "...and deletes at least this many items (deleting 1 of 2 contacts is no "
             "alarm)."),
    _tunable("server-version", "server_version", choice(*VERSIONS),
             "Highest EAS protocol version offered."),
    _tunable("public-url", "public_url", public_url,
             "The https://host[:port] phones reach this server at, given to them by "
             "Autodiscover (default: the Host the phone asked)."),
    Option("account-listen", "same", lambda v: account_listen(v),
           "Where the account page (/account/) is served: same (on the --listen ports), "
           "off, or an endpoint of its own such as ssl:8444 (then only there).",
           field="listen.account_listen"),
    Option("metrics-listen", "off", lambda v: metrics_listen(v),
           "Endpoint serving GET /metrics (Prometheus text format), e.g. "
           "tcp:9108:interface=127.0.0.1; off: none.",
           field="listen.metrics_listen"),
    Option("gc-freeze", True, on_off,
           "Keep long-lived objects (held requests) out of Python's garbage collector "
           "(a collection and gc.freeze every half second), so that a collection "
           "pauses the process milliseconds, not seconds; off: Python's defaults.",
           field="listen.gc_freeze"),
    Option("log-rotate-size", 1_000_000, size_or_off,
           "Rotate twistd's --logfile FILE when it reaches this size (to FILE.1, "
           "FILE.2, ..., none ever deleted: twistd's rotation); off: only on SIGUSR1, "
           "for logrotate (contrib/easync.logrotate).",
           field="listen.log_rotate_size"),
    Option("workers", 1, _int(1),
           "Processes serving the --listen ports together (Linux SO_REUSEPORT); more "
           "than 1 needs a postgresql:// --db.",
           field="listen.workers"),
    # -- who may sync (easync.auth): README "ActiveSync password and two-factor
    # authentication" and "LDAP"
    Option("secret-key", "easync-secret.key", path,
           "File with the server's secret key (created if missing, mode 0600): encrypts "
           "TOTP secrets; easync-admin must use the same file.",
           field="auth.secret_key"),
    Option("login-delay", 1.0, seconds0,
           "Seconds a refused login waits after the first failure, doubling with each "
           "further one (at most 16 s); 0: no delay.",
           field="auth.login_delay"),
    Option("lockout-after", 10, _int(1),
           "Failed logins of one user name within 15 minutes before a lockout (an "
           "address: five times as many).",
           field="auth.lockout_after"),
    Option("lockout-time", 900.0, positive_float,
           "The longest lockout in seconds (the first lasts 60 s, doubling with each "
           "further one of the same counter within a day).",
           field="auth.lockout_time"),
    Option("ldap-url", "", text, "ldap://HOST[:PORT] or ldaps://HOST[:PORT] for --auth ldap.",
           field="ldap.url"),
    Option("ldap-bind-dn-template", "", text,
           "Bind directly as this DN, {user} replaced by the escaped user name, e.g. "
           "uid={user},ou=people,dc=example,dc=org.",
           field="ldap.bind_dn_template"),
    Option("ldap-base", "", text,
           "Search base for users (instead of a DN template; needs --ldap-service-dn).",
           field="ldap.base"),
    Option("ldap-search-filter", "(uid={user})", text,
           "Filter finding a user under --ldap-base; {user} is replaced escaped.",
           field="ldap.search_filter"),
    Option("ldap-service-dn", "", text, "DN the user search binds as.",
           field="ldap.service_dn"),
    Option("ldap-service-password-file", "", text,
           "File whose first line is the --ldap-service-dn password.",
           field="ldap.service_password_file"),
    Option("ldap-starttls", False, on_off, "Upgrade ldap:// connections with StartTLS.",
           field="ldap.starttls"),
    Option("ldap-ca-file", "", text,
           "PEM CA bundle that verifies the directory's certificate (default: the "
           "system's).",
           field="ldap.ca_file"),
    Option("ldap-group", "", text,
           "DN of a group whose members get ActiveSync (member, uniqueMember or "
           "memberUid); without it an administrator switches ActiveSync per user.",
           field="ldap.group"),
    Option("ldap-timeout", 5.0, positive_float,
           "Seconds to connect to and to wait for the directory (then 503).",
           field="ldap.timeout"),
    Option("smtp-host", "", text,
           "Mail relay for one-time codes by e-mail; none: e-mail codes cannot be sent.",
           field="smtp.host"),
    Option("smtp-port", 25, _int(1), "Port of the mail relay.",
           field="smtp.port"),
    Option("smtp-from", "", text, "Sender address of code e-mails (default: easync@HOST).",
           field="smtp.sender"),
    Option("smtp-starttls", False, on_off, "Require STARTTLS with the relay.",
           field="smtp.starttls"),
    Option("smtp-ca-file", "", text,
           "PEM CA bundle that verifies the relay's certificate (default: the system's).",
           field="smtp.ca_file"),
    Option("smtp-user", "", text, "User name at the relay (needs --smtp-starttls).",
           field="smtp.user"),
    Option("smtp-password-file", "", text, "File whose first line is the relay password.",
           field="smtp.password_file"),
    Option("smtp-timeout", 20.0, positive_float, "Seconds to wait for the relay.",
           field="smtp.timeout"),
    # -- --backend crm (backends/crm): README "A vtenext or vtiger CRM as the store"
    Option("crm-url", "", text,
           "The CRM's web-service endpoint, https://HOST/PATH/webservice.php.",
           field="crm.url"),
    Option("crm-user", "", text, "The CRM service user easync logs in as (an admin).",
           field="crm.user"),
    Option("crm-access-key-file", "", text,
           "File whose first line is the service user's access key (CRM: My Preferences).",
           field="crm.access_key_file"),
    Option("crm-poll-interval", 15.0, positive_float,
           "Seconds between polls for changes made in the CRM (one poll for all users).",
           field="crm.poll_interval"),
    Option("crm-timeout", 30.0, positive_float,
           "Seconds to wait for the CRM before giving up (devices then get 503).",
           field="crm.timeout"),
    Option("crm-timezone", "auto", text,
           "Zone the CRM server stores times in (IANA name); auto: UTC for vtiger, the "
           "service user's zone for vtenext.",
           field="crm.timezone"),
    Option("crm-shared-contacts", "none", choice("none", "all"),
           "Company address book (a read-only Contacts folder on every phone): all = every "
           "CRM contact not assigned to the user (say so only when the CRM's sharing of "
           "Contacts is public read); none = no such folder.",
           field="crm.shared_contacts"),
    Option("crm-shared-name", "Company address book", text,
           "The company address book's folder name on the phones.",
           field="crm.shared_name"),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def check_listen(value: Any) -> str:
    """An endpoint string, checked as far as possible without touching files: ssl:
    endpoints read their key file, so they are checked when the server starts."""
    from twisted.internet.endpoints import serverFromString

    v = str(value).strip()
    if not v:
        raise ConfigError("listen: empty endpoint")
    if v.split(":", 1)[0].lower() != "ssl":
        try:
            serverFromString(None, v)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ConfigError(f"listen {v!r}: {e}") from None
    return v


def metrics_listen(value: Any) -> str:
    v = str(value).strip()
    if v.lower() in ("off", ""):
        return "off"
    try:
        return check_listen(v)
    except ConfigError as e:
        raise ConfigError(f"metrics-{e}") from None     # "metrics-listen 'x': …"


def trusted_proxy(value: Any) -> str:
    """An address or network (``10.0.0.0/8``) whose X-Forwarded-For is believed."""
    from easync.http.forwarded import parse_networks

    v = str(value).strip()
    try:
        parse_networks([v])
    except ValueError as e:
        raise ConfigError(f"trusted-proxy: {e}") from None
    return v


def account_listen(value: Any) -> str:
    """same | off | an endpoint string (easync.account.serve)."""
    v = str(value).strip()
    if v.lower() in ("same", "", "on"):
        return "same"
    if v.lower() == "off":
        return "off"
    try:
        return check_listen(v)
    except ConfigError as e:
        raise ValueError(f"expected same, off or an endpoint such as ssl:8444 ({e})") from None


# -- the repeatable options: lists ---------------------------------------------------------

@dataclass(frozen=True)
class Repeatable:
    """An option given any number of times on the command line (``--listen A --listen
    B``); in the config file a string or a list of strings."""

    name: str
    default: tuple[str, ...]
    check: Callable[[Any], str]
    help: str
    field: str

    def help_text(self) -> str:
        return f"{self.help} Repeatable. [default: {', '.join(self.default) or 'none'}]"


REPEATABLE: tuple[Repeatable, ...] = (
    Repeatable("listen", ("ssl:8443:interface=127.0.0.1",), check_listen,
               "Twisted endpoint string to serve on, e.g. ssl:443 or "
               "tcp:8080:interface=127.0.0.1 (behind a TLS proxy). An ssl: endpoint "
               "without privateKey= uses the --tls-cert file (by default the self-signed "
               "certificate).",
               field="listen.endpoints"),
    Repeatable("trusted-proxy", (), trusted_proxy,
               "Address or network (10.0.0.0/8) of a reverse proxy whose X-Forwarded-For "
               "header names the client in the request log; without: the header is "
               "ignored.",
               field="settings.trusted_proxies"),
)
REPEATABLE_BY_NAME: dict[str, Repeatable] = {r.name: r for r in REPEATABLE}
#: every option, single and repeatable
ENTRIES: tuple[Option | Repeatable, ...] = (*OPTIONS, *REPEATABLE)


def _entry(name: str) -> Option | Repeatable:
    entry: Option | Repeatable | None = BY_NAME.get(name) or REPEATABLE_BY_NAME.get(name)
    if entry is None:
        raise KeyError(name)
    return entry


# -- the typed sections ------------------------------------------------------------------------
# Each field is filled by exactly one entry of OPTIONS or REPEATABLE (its ``field``);
# no field has a default here (tests/test_tap.py checks both).

@dataclass(frozen=True)
class ListenConfig:
    """Where and how HTTP(S) is served (``easync.http.listen``, ``easync.workers``)."""

    endpoints: tuple[str, ...]          # --listen
    tls_cert: str                       # the self-signed certificate's file
    idle_timeout: float
    header_timeout: float               # 0: off
    max_connections_per_address: int    # 0: no cap
    account_listen: str                 # same | off | an endpoint
    metrics_listen: str                 # off | an endpoint
    workers: int
    gc_freeze: bool                     # easync.gctune
    log_rotate_size: int                # easync.logfile; 0: off


@dataclass(frozen=True)
class StoreConfig:
    """easync's database and the item store (``backends``)."""

    db: str                             # sqlite:///… or postgresql://…
    node_name: str                      # auto: host:pid
    backend: str                        # sql | crm
    tombstone_max_age: float            # seconds; 0: by age never
    deleted_keep: float                 # seconds a device's delete is kept; 0: forever
    device_max_idle: float              # seconds; 0: never
    purge_interval: float               # seconds between retention passes


@dataclass(frozen=True)
class AuthConfig:
    """Who may sync: the login-password check and its throttling (``easync.auth``)."""

    method: str                         # --auth: local | ldap | crm
    secret_key: str                     # the key file
    login_delay: float
    lockout_after: int
    lockout_time: float


@dataclass(frozen=True)
class DirectoryConfig:
    """The ``ldap-*`` options (``--auth ldap``); ``easync.auth.ldap_config`` makes the
    checker's ``easync.auth.ldap.LdapConfig`` of them.  Empty strings: not given."""

    url: str
    bind_dn_template: str
    base: str
    search_filter: str
    service_dn: str
    service_password_file: str
    starttls: bool
    ca_file: str
    group: str
    timeout: float


@dataclass(frozen=True)
class SmtpConfig:
    """The mail relay for one-time codes (``easync.auth.mail``); host "": none."""

    host: str
    port: int
    sender: str                         # --smtp-from; "": easync@HOST
    starttls: bool
    ca_file: str
    user: str
    password_file: str
    timeout: float


@dataclass(frozen=True)
class CrmConfig:
    """The CRM (``--backend crm`` in ``backends.crm``, ``--auth crm``)."""

    url: str
    user: str
    access_key_file: str
    poll_interval: float
    timeout: float
    timezone: str                       # an IANA name, or auto
    shared_contacts: str                # the company address book: none | all
    shared_name: str


@dataclass(frozen=True)
class ServerConfig:
    """Every option, resolved once (``resolve``), one section per part of the server."""

    listen: ListenConfig
    store: StoreConfig
    auth: AuthConfig
    ldap: DirectoryConfig
    smtp: SmtpConfig
    crm: CrmConfig
    settings: Settings                  # the protocol tunables (easync.settings)

    def value(self, name: str) -> Any:
        """The value of the option ``name`` (a list for a repeatable one)."""
        entry = _entry(name)
        section, attribute = entry.field.split(".")
        value = getattr(getattr(self, section), attribute)
        return list(value) if isinstance(entry, Repeatable) else value

    def values(self) -> dict[str, Any]:
        """``{option name: value}`` for every option: the command line's view."""
        return {e.name: self.value(e.name) for e in ENTRIES}


SECTIONS: dict[str, type] = {
    "listen": ListenConfig, "store": StoreConfig, "auth": AuthConfig,
    "ldap": DirectoryConfig, "smtp": SmtpConfig, "crm": CrmConfig, "settings": Settings,
}


def build(values: Mapping[str, Any]) -> ServerConfig:
    """The sections for complete, coerced ``{option name: value}`` (no checks)."""
    parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for entry in ENTRIES:
        section, attribute = entry.field.split(".")
        value = values[entry.name]
        parts[section][attribute] = tuple(value) if isinstance(entry, Repeatable) else value
    made = {name: SECTIONS[name](**kwargs) for name, kwargs in parts.items()}
    return ServerConfig(**made)


def defaults() -> ServerConfig:
    """The configuration when nothing is given (unchecked: ``resolve({}, {})`` is)."""
    return build({e.name: e.default for e in ENTRIES})


def default(name: str) -> Any:
    """The default of the option ``name``, from the table."""
    return _entry(name).default


# -- reading and resolving -------------------------------------------------------------------

def check_crm(crm: CrmConfig, backend: str) -> None:
    """The --crm-* options --backend crm and --auth crm need."""
    url = crm.url
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?/webservice\.php", url or ""):
        raise ConfigError(f"crm-url: expected http(s)://HOST/…/webservice.php, got {url!r}")
    # (workers > 1 needs a postgresql:// db, checked in resolve; with --backend crm one
    # of the processes polls the CRM: the one holding the poller's advisory lock)
    if backend == "crm" and (not crm.user or not crm.access_key_file):
        raise ConfigError("backend crm needs crm-user and crm-access-key-file")
    if crm.timezone != "auto":
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(crm.timezone)
        except (KeyError, ValueError):
            raise ConfigError(f"crm-timezone: unknown zone {crm.timezone!r}") from None


def load_file(filename: str) -> dict[str, Any]:
    """Read a TOML config file: ``{option name: value}``, the repeatable ones as
    lists of checked strings, the others as written (``resolve`` coerces them)."""
    try:
        with open(filename, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {filename}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {filename} is not valid TOML: {e}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in REPEATABLE_BY_NAME:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{filename}: {key} must be a string or a list of strings")
            out[key] = [REPEATABLE_BY_NAME[key].check(v) for v in values]
        elif key in TABLE_OPTIONS:
            if not isinstance(value, (dict, str)):
                raise ConfigError(f"{filename}: {key} must be a table ([{key}]) or a "
                                  "string of Setting=value pairs")
            out[key] = value
        elif key in BY_NAME:
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{filename}: {key} must be a single value")
            out[key] = value
        else:
            hint = key.replace("_", "-")
            extra = (f" (did you mean {hint}?)"
                     if hint in BY_NAME or hint in REPEATABLE_BY_NAME else "")
            raise ConfigError(f"{filename}: unknown option {key!r}{extra}")
    return out


def resolve(given: Mapping[str, Any], from_file: Mapping[str, Any]) -> ServerConfig:
    """The configuration: each option from ``given`` (the command line, already coerced;
    None or an empty list when not given), else from the file (coerced here), else its
    default in the table.  Checks the values together (ConfigError)."""
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        value = given.get(opt.name)
        if value is None and opt.name in from_file:
            try:
                value = opt.coerce(from_file[opt.name])
            except (ValueError, TypeError) as e:
                raise ConfigError(f"config file: {opt.name}: {e}") from None
        out[opt.name] = opt.default if value is None else value
    for rep in REPEATABLE:
        out[rep.name] = list(given.get(rep.name) or from_file.get(rep.name) or rep.default)
    if given.get("default-window") is None and "default-window" not in from_file:
        out["default-window"] = min(out["default-window"], out["max-window"])
    config = build(out)
    check(config)
    return config


def check(config: ServerConfig) -> None:
    """ConfigError for values that cannot work together."""
    store, settings = config.store, config.settings
    if store.backend not in BACKENDS_IMPLEMENTED:
        raise ConfigError(f"backend {store.backend!r} is not implemented yet; "
                          f"use {' or '.join(BACKENDS_IMPLEMENTED)}")
    if store.backend == "crm" or config.auth.method == "crm":
        check_crm(config.crm, store.backend)
    if config.auth.method not in AUTHS_IMPLEMENTED:
        raise ConfigError(f"auth {config.auth.method!r} is not implemented yet; "
                          f"use {' or '.join(AUTHS_IMPLEMENTED)}")
    if config.auth.method == "ldap":
        from easync.auth import ldap_config

        try:
            ldap_config(config.ldap, read_files=False)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config.smtp.user and not config.smtp.starttls:
        raise ConfigError("smtp-user needs smtp-starttls on: the relay password is never "
                          "sent unencrypted")
    if config.listen.workers > 1 and store.db.split(":", 1)[0].lower() == "sqlite":
        raise ConfigError("workers > 1 needs a postgresql:// database: the processes "
                          "wake each other's Pings through it")
    if settings.heartbeat_min > settings.heartbeat_max:
        raise ConfigError(f"heartbeat-min ({settings.heartbeat_min}) is more than "
                          f"heartbeat-max ({settings.heartbeat_max})")
    if settings.default_window > settings.max_window:
        raise ConfigError(f"default-window ({settings.default_window}) is more than "
                          f"max-window ({settings.max_window})")
