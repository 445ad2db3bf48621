"""The server's options: one table shared by the command line and the config file.

The config file is TOML, with the command-line option names as keys::

    listen = ["ssl:8443:interface=0.0.0.0"]
    db = "postgresql://easync@localhost/easync"
    max-window = 256
    provisioning = "on"            # or true

Precedence: command line, then config file, then the defaults below (which are the
``easync.settings.Settings`` defaults for the tunables).
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
    coerce.coerceDoc = f"A whole number >= {minimum}."  # type: ignore[attr-defined]
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


size.coerceDoc = "Bytes, or with a K/M/G suffix (16M)."  # type: ignore[attr-defined]


def _show_size(n: int) -> str:
    for suffix, unit in (("G", 1024 ** 3), ("M", 1024 ** 2), ("K", 1024)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)

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


on_off.coerceDoc = "on or off."  # type: ignore[attr-defined]


def choice(*names: str) -> Callable[[Any], str]:
    def coerce(value: Any) -> str:
        v = str(value).strip()
        if v not in names:
            raise ValueError(f"expected one of {', '.join(names)}, got {value!r}")
        return v
    coerce.coerceDoc = f"One of: {', '.join(names)}."  # type: ignore[attr-defined]
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
    setting: str | None = None      # the Settings field it fills

    def help_text(self) -> str:
        default = self.default
        if isinstance(default, bool):
            default = "on" if default else "off"
        elif self.coerce is size:
            default = _show_size(default)
        return f"{self.help} [default: {default}]"


_S = Settings()


def _tunable(name: str, field: str, coerce: Callable[[Any], Any], help: str) -> Option:
    return Option(name, getattr(_S, field), coerce, help, field)


OPTIONS: tuple[Option, ...] = (
    Option("db", "sqlite:///easync.sqlite", db_url,
           "Database URL: sqlite:///FILE (relative to the working directory) or "
           "postgresql://USER:PASSWORD@HOST/DB."),
    Option("node-name", "auto", node_name,
           "This process's name among several on one PostgreSQL database, in logs and "
           "easync-admin device list; auto: host name:process id."),
    Option("backend", "sql", choice(*BACKENDS),
           "Item store: sql (easync's database) or crm (a vtenext/vtiger CRM at "
           "--crm-url; users, devices and sync state stay in --db)."),
    Option("auth", "local", choice(*AUTHS),
           "Login password check: local (bcrypt in easync's database), ldap (a bind to "
           "--ldap-url) or crm (vtenext login_pwd at --crm-url)."),
    Option("tls-cert", "easync.pem", path,
           "PEM file with key and certificate for ssl: endpoints without privateKey=; "
           "a self-signed one is created there if missing."),
    Option("idle-timeout", 600.0, positive_float,
           "Seconds an HTTP connection may stay idle (or send nothing) before it is closed;"
           " a held Ping or Sync is not idle. With --header-timeout: only how long a "
           "response may take to reach a slow reader."),
    Option("header-timeout", 10.0, seconds0,
           "Seconds a connection has to send a whole request head (from its opening or "
           "its previous response; idle keep-alive connections are closed then), and "
           "longest pause inside a request body; a held Ping or Sync is not cut. "
           "0: off (--idle-timeout applies)."),
    Option("max-connections-per-address", 256, _int(0),
           "Connections one client address may hold open on the --listen ports (per "
           "process); more are closed at once. 0: no cap (set it behind a reverse "
           "proxy, whose address all connections have)."),
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
    _tunable("max-devices-per-user", "max_devices_per_user", _int(0),
             "Devices (DeviceIds) one user may have; a new one beyond is refused "
             "(Status 177). 0: no cap."),
    _tunable("provisioning", "provisioning", on_off,
             "Require devices to provision (Provision command) first."),
    _tunable("max-picture-size", "max_picture_bytes", size,
             "Largest contact picture stored."),
    _tunable("fileas-order", "fileas_order", choice(*FILEAS_ORDERS),
             "How a contact sent without FileAs is filed on the other devices: "
             "last-first (Last, First), first-last (First Last), last-first-nocomma "
             "(Last First) or company-first; without names: the company, else the "
             "e-mail address."),
    _tunable("server-version", "server_version", choice(*VERSIONS),
             "Highest EAS protocol version offered."),
    _tunable("public-url", "public_url", public_url,
             "The https://host[:port] phones reach this server at, given to them by "
             "Autodiscover (default: the Host the phone asked)."),
    Option("account-listen", "same", lambda v: account_listen(v),
           "Where the account page (/account/) is served: same (on the --listen ports), "
           "off, or an endpoint of its own such as ssl:8444 (then only there)."),
    Option("metrics-listen", "off", lambda v: metrics_listen(v),
           "Endpoint serving GET /metrics (Prometheus text format), e.g. "
           "tcp:9108:interface=127.0.0.1; off: none."),
    Option("workers", 1, _int(1),
           "Processes serving the --listen ports together (Linux SO_REUSEPORT); more "
           "than 1 needs a postgresql:// --db."),
    # -- who may sync (easync.auth): README "ActiveSync password and two-factor
    # authentication" and "LDAP"
    Option("secret-key", "easync-secret.key", path,
           "File with the server's secret key (created if missing, mode 0600): encrypts "
           "TOTP secrets; easync-admin must use the same file."),
    Option("login-delay", 1.0, seconds0,
           "Seconds a refused login waits after the first failure, doubling with each "
           "further one (at most 16 s); 0: no delay."),
    Option("lockout-after", 10, _int(1),
           "Failed logins of one user name within 15 minutes before a lockout (an "
           "address: five times as many)."),
    Option("lockout-time", 900.0, positive_float,
           "The longest lockout in seconds (the first lasts 60 s, doubling with each "
           "further one of the same counter within a day)."),
    Option("ldap-url", "", text, "ldap://HOST[:PORT] or ldaps://HOST[:PORT] for --auth ldap."),
    Option("ldap-bind-dn-template", "", text,
           "Bind directly as this DN, {user} replaced by the escaped user name, e.g. "
           "uid={user},ou=people,dc=example,dc=org."),
    Option("ldap-base", "", text,
           "Search base for users (instead of a DN template; needs --ldap-service-dn)."),
    Option("ldap-search-filter", "(uid={user})", text,
           "Filter finding a user under --ldap-base; {user} is replaced escaped."),
    Option("ldap-service-dn", "", text, "DN the user search binds as."),
    Option("ldap-service-password-file", "", text,
           "File whose first line is the --ldap-service-dn password."),
    Option("ldap-starttls", False, on_off, "Upgrade ldap:// connections with StartTLS."),
    Option("ldap-ca-file", "", text,
           "PEM CA bundle that verifies the directory's certificate (default: the "
           "system's)."),
    Option("ldap-group", "", text,
           "DN of a group whose members get ActiveSync (member, uniqueMember or "
           "memberUid); without it an administrator switches ActiveSync per user."),
    Option("ldap-timeout", 5.0, positive_float,
           "Seconds to connect to and to wait for the directory (then 503)."),
    Option("smtp-host", "", text,
           "Mail relay for one-time codes by e-mail; none: e-mail codes cannot be sent."),
    Option("smtp-port", 25, _int(1), "Port of the mail relay."),
    Option("smtp-from", "", text, "Sender address of code e-mails (default: easync@HOST)."),
    Option("smtp-starttls", False, on_off, "Require STARTTLS with the relay."),
    Option("smtp-ca-file", "", text,
           "PEM CA bundle that verifies the relay's certificate (default: the system's)."),
    Option("smtp-user", "", text, "User name at the relay (needs --smtp-starttls)."),
    Option("smtp-password-file", "", text, "File whose first line is the relay password."),
    Option("smtp-timeout", 20.0, positive_float, "Seconds to wait for the relay."),
    # -- --backend crm (backends/crm): README "A vtenext or vtiger CRM as the store"
    Option("crm-url", "", text,
           "The CRM's web-service endpoint, https://HOST/PATH/webservice.php."),
    Option("crm-user", "", text, "The CRM service user easync logs in as (an admin)."),
    Option("crm-access-key-file", "", text,
           "File whose first line is the service user's access key (CRM: My Preferences)."),
    Option("crm-poll-interval", 15.0, positive_float,
           "Seconds between polls for changes made in the CRM (one poll for all users)."),
    Option("crm-timeout", 30.0, positive_float,
           "Seconds to wait for the CRM before giving up (devices then get 503)."),
    Option("crm-timezone", "auto", text,
           "Zone the CRM server stores times in (IANA name); auto: UTC for vtiger, the "
           "service user's zone for vtenext."),
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


def check_crm(out: Mapping[str, Any]) -> None:
    """The --crm-* options --backend crm and --auth crm need."""
    url = out["crm-url"]
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?/webservice\.php", url or ""):
        raise ConfigError(f"crm-url: expected http(s)://HOST/…/webservice.php, got {url!r}")
    # (workers > 1 needs a postgresql:// db, checked below; with --backend crm one of
    # the processes polls the CRM: the one holding the poller's advisory lock)
    if out["backend"] == "crm" and (not out["crm-user"] or not out["crm-access-key-file"]):
        raise ConfigError("backend crm needs crm-user and crm-access-key-file")
    if out["crm-timezone"] != "auto":
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(out["crm-timezone"])
        except (KeyError, ValueError):
            raise ConfigError(f"crm-timezone: unknown zone {out['crm-timezone']!r}") from None


# Config-file keys that are lists (repeatable on the command line), not OPTIONS.
_LIST_KEYS = ("listen", "trusted-proxy")


def load_file(filename: str) -> dict[str, Any]:
    """Read a TOML config file: ``{option name: value}``, ``listen`` as a list."""
    try:
        with open(filename, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {filename}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {filename} is not valid TOML: {e}") from None
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in _LIST_KEYS:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(f"{filename}: {key} must be a string or a list of strings")
            check = check_listen if key == "listen" else trusted_proxy
            out[key] = [check(v) for v in values]
        elif key in BY_NAME:
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{filename}: {key} must be a single value")
            out[key] = value
        else:
            hint = key.replace("_", "-")
            extra = (f" (did you mean {hint}?)" if hint in BY_NAME or hint in _LIST_KEYS
                     else "")
            raise ConfigError(f"{filename}: unknown option {key!r}{extra}")
    return out


def resolve(given: Mapping[str, Any], from_file: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's value: ``given`` (already coerced; None when not given), else the
    file's (coerced here), else the default.  Checks the values together."""
    out: dict[str, Any] = {}
    for opt in OPTIONS:
        value = given.get(opt.name)
        if value is None and opt.name in from_file:
            try:
                value = opt.coerce(from_file[opt.name])
            except (ValueError, TypeError) as e:
                raise ConfigError(f"config file: {opt.name}: {e}") from None
        out[opt.name] = opt.default if value is None else value
    if out["backend"] not in BACKENDS_IMPLEMENTED:
        raise ConfigError(f"backend {out['backend']!r} is not implemented yet; "
                          f"use {' or '.join(BACKENDS_IMPLEMENTED)}")
    if out["backend"] == "crm" or out["auth"] == "crm":
        check_crm(out)
    if out["auth"] not in AUTHS_IMPLEMENTED:
        raise ConfigError(f"auth {out['auth']!r} is not implemented yet; "
                          f"use {' or '.join(AUTHS_IMPLEMENTED)}")
    if out["auth"] == "ldap":
        from easync.auth import ldap_config

        try:
            ldap_config(out, read_files=False)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if out["smtp-user"] and not out["smtp-starttls"]:
        raise ConfigError("smtp-user needs smtp-starttls on: the relay password is never "
                          "sent unencrypted")
    if out["workers"] > 1 and out["db"].split(":", 1)[0].lower() == "sqlite":
        raise ConfigError("workers > 1 needs a postgresql:// database: the processes "
                          "wake each other's Pings through it")
    if out["heartbeat-min"] > out["heartbeat-max"]:
        raise ConfigError(f"heartbeat-min ({out['heartbeat-min']}) is more than "
                          f"heartbeat-max ({out['heartbeat-max']})")
    if given.get("default-window") is None and "default-window" not in from_file:
        out["default-window"] = min(out["default-window"], out["max-window"])
    if out["default-window"] > out["max-window"]:
        raise ConfigError(f"default-window ({out['default-window']}) is more than "
                          f"max-window ({out['max-window']})")
    return out


def settings_from(values: Mapping[str, Any]) -> Settings:
    """The ``Settings`` for resolved option values."""
    return Settings(**{o.setting: values[o.name] for o in OPTIONS if o.setting})
