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
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.cred.checkers import ICredentialsChecker

from easync.auth.door import FrontDoor
from easync.auth.local import LocalChecker, Unavailable, split_username
from easync.deviceaccess import ACCESS

if TYPE_CHECKING:
    from easync.config import DirectoryConfig, ServerConfig

__all__ = ["AuthSetup", "FrontDoor", "LocalChecker", "PrimaryFactory", "Unavailable",
           "build_auth", "build_checker", "build_door", "read_secret_file",
           "split_username"]

# A login-password checker for ``--auth NAME`` made from (config, server, reactor).
PrimaryFactory = Callable[["ServerConfig", Any, Any], ICredentialsChecker]


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


def ldap_config(ldap: DirectoryConfig, read_files: bool = True) -> Any:
    """The checker's ``LdapConfig`` for the ``ldap-*`` options (ValueError if
    incomplete)."""
    from easync.auth.ldap import LdapConfig
    from easync.config import default

    if not ldap.url:
        raise ValueError("--auth ldap needs --ldap-url (ldap://HOST or ldaps://HOST)")
    password = None
    if ldap.service_password_file:
        password = read_secret_file(ldap.service_password_file,
                                    "ldap-service-password-file") if read_files \
            else "(not read)"
    config = LdapConfig(
        url=ldap.url, bind_dn_template=ldap.bind_dn_template or None,
        base=ldap.base or None,
        search_filter=ldap.search_filter or default("ldap-search-filter"),
        service_dn=ldap.service_dn or None, service_password=password,
        starttls=ldap.starttls, group=ldap.group or None, timeout=ldap.timeout,
        ca_file=ldap.ca_file or None)
    config.check()
    return config


def build_auth(config: ServerConfig, server: Any, auth_store: Any, reactor: Any,
               primaries: Mapping[str, PrimaryFactory] | None = None) -> AuthSetup:
    """Everything ``config`` (the resolved server options) asks for.  ``auth_store`` is
    the ``IAuthStore`` (``backends.sql.authstore.SqlAuthStore``); ``primaries`` adds
    ``--auth`` kinds beyond local and ldap (the composition root, ``easync.tap``, gives
    ``crm``).  ValueError for options that cannot work (the caller reports it as a
    usage error)."""
    from easync.auth.accounts import Accounts
    from easync.auth.aspassword import PolicyChecker
    from easync.auth.keys import SecretBox, SecretKeyError
    from easync.auth.throttle import ThrottleRules

    auth, smtp = config.auth, config.smtp
    kind = auth.method.lower()
    try:
        box = SecretBox.from_file(auth.secret_key)
    except SecretKeyError as e:
        raise ValueError(str(e)) from None
    rules = ThrottleRules(
        delay=auth.login_delay,
        max_delay=max(16.0, auth.login_delay),
        user_limit=auth.lockout_after,
        addr_limit=5 * auth.lockout_after,
        code_limit=5,
        lockout=auth.lockout_time,
        window=max(900.0, auth.lockout_time))
    mailer = None
    if smtp.host:
        from easync.auth.mail import SmtpMailer

        password = None
        if smtp.password_file:
            password = read_secret_file(smtp.password_file, "smtp-password-file")
        sender = smtp.sender
        if not sender:
            import socket

            sender = f"easync@{socket.getfqdn()}"
        mailer = SmtpMailer(reactor, smtp.host, smtp.port,
                            sender=sender, starttls=smtp.starttls,
                            username=smtp.user or None, password=password,
                            timeout=smtp.timeout, ca_file=smtp.ca_file or None)
    accounts = Accounts(server.users, server.state, auth_store, reactor, mailer=mailer,
                        box=box, rules=rules)
    # a device blocked or quarantined here: the user's held Pings look at their device
    # again at once (easync.commands.ping; other nodes hear it through the hub too)
    notifier = getattr(server, "notifier", None)
    if notifier is not None:
        accounts.on_device_access(lambda uid: notifier.publish(uid, ACCESS))
    services: list[IService] = []
    if kind == "local":
        primary: Any = LocalChecker(server.users, reactor)
    elif kind == "ldap":
        from easync.auth.ldap import LdapChecker, LdapService

        service = LdapService()
        service.setName("ldap")
        services.append(service)
        primary = LdapChecker(ldap_config(config.ldap), server.users, reactor,
                              service=service, audit=accounts.audit_raw)
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
