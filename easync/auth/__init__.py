"""Who may sync: twisted.cred checkers for EAS Basic credentials, and the account service.

``build_auth`` wires everything from the server options: the primary checker for the
login password (``LocalChecker``, ``LdapChecker`` with its thread-pool service, or a
checker the composition root hands in, such as the CRM's), the account service
``accounts.Accounts`` (ActiveSync password, 2FA, throttling, audit log, e-mail codes
through ``mail.SmtpMailer``), the one ``ICredentialsChecker`` for phones,
``aspassword.PolicyChecker``, and the ``door.FrontDoor`` around it (a ``Portal`` whose
avatar is the user) that the HTTP layer asks.  Wrong credentials raise
``UnauthorizedLogin`` (HTTP 401; a lockout is ``aspassword.LoginLockedOut``, HTTP 429);
a directory or database that cannot answer raises ``Unavailable`` (HTTP 503 with
Retry-After, never a 401, which makes a phone ask its user for the password again).

No backend is imported here: ``easync.tap`` passes the CRM checker's factory in
``primaries``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService
from twisted.cred.checkers import ICredentialsChecker

from easync.auth.door import FrontDoor
from easync.auth.local import LocalChecker, Unavailable, split_username

__all__ = ["AuthSetup", "FrontDoor", "LocalChecker", "PrimaryFactory", "Unavailable",
           "build_auth", "build_checker", "build_door", "read_secret_file",
           "split_username"]

# A login-password checker for ``--auth NAME`` made from (options, server, reactor).
PrimaryFactory = Callable[[dict[str, Any], Any, Any], ICredentialsChecker]


@dataclass
class AuthSetup:
    checker: ICredentialsChecker          # the policy checker (phones' credentials)
    accounts: Any                         # easync.auth.accounts.Accounts
    door: FrontDoor                       # for the HTTP layer: the Portal around checker
    services: list[IService] = field(default_factory=list)   # start with the server


def read_secret_file(path: str, what: str) -> str:
    """The first line of a password file (ValueError with a clear message)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = f.readline().rstrip("\r\n")
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror}") from None
    if not value:
        raise ValueError(f"{what}: {path} is empty")
    return value


def _opt(config: dict[str, Any], name: str, default: Any = None) -> Any:
    value = config.get(name)
    return default if value in (None, "") else value


def ldap_config(config: dict[str, Any], read_files: bool = True) -> Any:
    """The ``LdapConfig`` for the ``ldap-*`` options (ValueError if incomplete)."""
    from easync.auth.ldap import LdapConfig

    if not _opt(config, "ldap-url"):
        raise ValueError("--auth ldap needs --ldap-url (ldap://HOST or ldaps://HOST)")
    password = None
    pw_file = _opt(config, "ldap-service-password-file")
    if pw_file:
        password = read_secret_file(pw_file, "ldap-service-password-file") if read_files \
            else "(not read)"
    ldap = LdapConfig(
        url=config["ldap-url"], bind_dn_template=_opt(config, "ldap-bind-dn-template"),
        base=_opt(config, "ldap-base"),
        search_filter=_opt(config, "ldap-search-filter", "(uid={user})"),
        service_dn=_opt(config, "ldap-service-dn"), service_password=password,
        starttls=bool(_opt(config, "ldap-starttls", False)),
        group=_opt(config, "ldap-group"), timeout=float(_opt(config, "ldap-timeout", 5.0)),
        ca_file=_opt(config, "ldap-ca-file"))
    ldap.check()
    return ldap


def build_auth(config: dict[str, Any], server: Any, auth_store: Any, reactor: Any,
               primaries: Mapping[str, PrimaryFactory] | None = None) -> AuthSetup:
    """Everything ``config`` (resolved server options) asks for.  ``auth_store`` is the
    ``IAuthStore`` (``backends.sql.authstore.SqlAuthStore``); ``primaries`` adds
    ``--auth`` kinds beyond local and ldap (``{"crm": backends.crm.checker.crm_checker}``).
    ValueError for options that cannot work (the caller reports it as a usage error)."""
    from easync.auth.accounts import Accounts
    from easync.auth.aspassword import PolicyChecker
    from easync.auth.keys import DEFAULT_KEY_FILE, SecretBox, SecretKeyError
    from easync.auth.throttle import ThrottleRules

    kind = (config.get("auth") or "local").lower()
    try:
        box = SecretBox.from_file(_opt(config, "secret-key", DEFAULT_KEY_FILE))
    except SecretKeyError as e:
        raise ValueError(str(e)) from None
    rules = ThrottleRules(
        delay=float(_opt(config, "login-delay", 1.0)),
        max_delay=max(16.0, float(_opt(config, "login-delay", 1.0))),
        user_limit=int(_opt(config, "lockout-after", 10)),
        addr_limit=5 * int(_opt(config, "lockout-after", 10)),
        code_limit=5,
        lockout=float(_opt(config, "lockout-time", 900.0)),
        window=max(900.0, float(_opt(config, "lockout-time", 900.0))))
    mailer = None
    if _opt(config, "smtp-host"):
        from easync.auth.mail import SmtpMailer

        password = None
        if _opt(config, "smtp-password-file"):
            password = read_secret_file(config["smtp-password-file"], "smtp-password-file")
        sender = _opt(config, "smtp-from")
        if not sender:
            import socket

            sender = f"easync@{socket.getfqdn()}"
        mailer = SmtpMailer(reactor, config["smtp-host"], int(_opt(config, "smtp-port", 25)),
                            sender=sender, starttls=bool(_opt(config, "smtp-starttls", False)),
                            username=_opt(config, "smtp-user"), password=password,
                            timeout=float(_opt(config, "smtp-timeout", 20.0)),
                            ca_file=_opt(config, "smtp-ca-file"))
    accounts = Accounts(server.users, server.state, auth_store, reactor, mailer=mailer,
                        box=box, rules=rules)
    services: list[IService] = []
    if kind == "local":
        primary: Any = LocalChecker(server.users, reactor)
    elif kind == "ldap":
        from easync.auth.ldap import LdapChecker, LdapService

        service = LdapService()
        service.setName("ldap")
        services.append(service)
        primary = LdapChecker(ldap_config(config), server.users, reactor, service=service,
                              audit=accounts._audit_raw)
    elif kind in (primaries or {}):
        primary = (primaries or {})[kind](config, server, reactor)
    else:
        known = ", ".join(["local", "ldap", *(primaries or {})])
        raise ValueError(f"--auth {kind} is not available ({known})")
    accounts.primary = primary
    checker = PolicyChecker(primary, accounts, reactor)
    return AuthSetup(checker, accounts, FrontDoor(server.users, checker), services)


def build_checker(config: dict[str, Any], server: Any, reactor: Any) -> ICredentialsChecker:
    """The checker for a server built without ``build_auth`` (tests): the policy
    checker when ``server.accounts`` is set, else the bare local checker."""
    accounts = getattr(server, "accounts", None)
    if accounts is not None:
        from easync.auth.aspassword import PolicyChecker

        return PolicyChecker(accounts.primary or LocalChecker(server.users, reactor),
                             accounts, reactor)
    kind = (config.get("auth") or "local").lower()
    if kind != "local":
        raise ValueError(f"--auth {kind} needs build_auth")
    return LocalChecker(server.users, reactor)


def build_door(config: dict[str, Any], server: Any, reactor: Any) -> FrontDoor:
    """The front door over ``build_checker``'s checker (tests)."""
    return FrontDoor(server.users, build_checker(config, server, reactor))
