"""LDAP accounts (``--auth ldap``): the login password is checked by binding to a
directory with ``ldap3``.

Two ways to find the user's entry:

- **direct bind**: ``--ldap-bind-dn-template "uid={user},ou=people,dc=example,dc=org"``
  (the name is escaped as a DN value);
- **search then bind**: ``--ldap-base`` + ``--ldap-search-filter "(uid={user})"`` (the
  name is escaped with ``escape_filter_chars``), searched as ``--ldap-service-dn`` with
  the password in ``--ldap-service-password-file``; exactly one entry must match.

``ldaps://`` URLs speak TLS from the start; ``--ldap-starttls`` upgrades ``ldap://``.
Certificates are verified (``--ldap-ca-file`` names the CA bundle, else the system's).

Safety rules: an empty password is refused before any bind (an LDAP simple bind with an
empty password is an "unauthenticated bind" that many servers accept); anonymous binds
are never made; user names with characters outside letters, digits and ``. _ - @`` are
refused with a clear message (``BadUserName``) before reaching the directory, and the
name is escaped anyway.  The bind runs in a bounded thread pool owned by
``LdapService`` (never on the reactor, never in the reactor's shared pool), with
connect and receive timeouts and an overall deadline; a directory that is down, slow or
misconfigured gives ``Unavailable`` (HTTP 503 + Retry-After), never a 401.

**Local records and the group.**  The first successful login of a directory user makes
a local user record (no local password; ``origin = "ldap"``, ``mail`` as e-mail) that
holds what the directory does not: ActiveSync on/off, devices, 2FA, the ActiveSync
password.  Without ``--ldap-group`` an administrator turns ActiveSync on per user, as
for local users (off by default; the user may log in to the account page meanwhile).
With ``--ldap-group DN`` membership *grants* ActiveSync: it is checked at every login
that is not answered from the cache; joining the group turns ActiveSync on, leaving it
turns it off (both audited), and an administrator may still turn it off for a member
(it stays off until the membership changes).  A member is a ``member`` or
``uniqueMember`` (DN) or a ``memberUid`` (name) of the group entry.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from easync.auth.local import BadUserName, HandsOverUser, split_username, text_credentials
from easync.errors import Unavailable, unavailable_on_failure
from easync.i18n import msg
from easync.model import User

__all__ = ["BadUserName", "LdapChecker", "LdapConfig", "LdapService", "check_name"]

log = Logger()

_ALLOWED = re.compile(r"[A-Za-z0-9._@-]{1,128}")
#: characters with a meaning in LDAP filters or DNs
_SPECIAL = set('*()\\\x00,=+<>#;"/ ')


def check_name(name: str) -> str:
    """The name if fit for the directory, else ``BadUserName`` saying why."""
    if _ALLOWED.fullmatch(name):   # (match with "$" also took "lara\n")
        return name
    bad = sorted({c for c in name if c in _SPECIAL or not c.isprintable()
                  or not (c.isalnum() or c in "._@-")})
    shown = " ".join(repr(c)[1:-1] or "?" for c in bad[:8])
    if not name:
        raise BadUserName(msg("empty user name"))
    if len(name) > 128:
        raise BadUserName(msg("user name too long (at most 128 characters)"))
    raise BadUserName(msg("user name refused: characters not allowed in directory user "
                          "names: {shown} (letters, digits and . _ - @ only)", shown=shown))


@dataclass(frozen=True)
class LdapConfig:
    url: str
    bind_dn_template: str | None = None
    base: str | None = None
    search_filter: str = "(uid={user})"
    service_dn: str | None = None
    service_password: str | None = None
    starttls: bool = False
    group: str | None = None
    timeout: float = 5.0
    ca_file: str | None = None
    mail_attribute: str = "mail"

    def check(self) -> None:
        """ValueError for a configuration that cannot work."""
        if not self.url.lower().startswith(("ldap://", "ldaps://")):
            raise ValueError(f"ldap-url must start with ldap:// or ldaps://, got {self.url!r}")
        if self.url.lower().startswith("ldaps://") and self.starttls:
            raise ValueError("ldap-starttls is for ldap:// URLs (ldaps:// is TLS already)")
        if self.bind_dn_template:
            if "{user}" not in self.bind_dn_template:
                raise ValueError("ldap-bind-dn-template must contain {user}")
        else:
            if not self.base:
                raise ValueError("give ldap-bind-dn-template, or ldap-base (with "
                                 "ldap-service-dn) to search for users")
            if "{user}" not in self.search_filter:
                raise ValueError("ldap-search-filter must contain {user}")
            if not self.service_dn or not self.service_password:
                raise ValueError("searching for users needs ldap-service-dn and "
                                 "ldap-service-password-file (anonymous binds are never "
                                 "made)")
        if self.timeout <= 0:
            raise ValueError("ldap-timeout must be more than 0")


@dataclass(frozen=True)
class DirectoryUser:
    name: str                 # the name the entry was found under (lower-case)
    dn: str
    mail: str | None
    member: bool | None       # None: no group configured


class _WrongCredentials(Exception):
    pass


def _server(config: LdapConfig) -> Any:
    import ldap3

    tls = None
    if config.url.lower().startswith("ldaps://") or config.starttls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file,
                        version=ssl.PROTOCOL_TLS_CLIENT)
    return ldap3.Server(config.url, connect_timeout=_seconds(config), get_info=ldap3.NONE,
                        tls=tls)


def _seconds(config: LdapConfig) -> int:
    # ldap3 packs the socket timeouts as whole seconds
    return max(1, math.ceil(config.timeout))


def _connect(config: LdapConfig, server: Any, dn: str, password: str) -> Any:
    """A bound connection, ``_WrongCredentials``, or an ldap3 exception."""
    import ldap3
    from ldap3.core import exceptions as lx

    if not password or not dn:
        raise _WrongCredentials()       # never an unauthenticated or anonymous bind
    conn = ldap3.Connection(server, user=dn, password=password,
                            receive_timeout=_seconds(config), raise_exceptions=False,
                            auto_referrals=False, read_only=True)
    try:
        conn.open()
        if config.starttls and not conn.start_tls():
            raise lx.LDAPStartTLSError(f"StartTLS refused: {conn.result.get('description')}")
        if conn.bind():
            return conn
        result = conn.result or {}
        code = result.get("result")
    except BaseException:
        conn.unbind()
        raise
    conn.unbind()
    if code in (49, 50, 53):   # invalidCredentials, insufficientAccess, unwillingToPerform
        raise _WrongCredentials()
    raise Unavailable(f"directory refused the bind: {result.get('description')} ({code})")


def _authenticate(config: LdapConfig, candidates: list[str], password: str
                  ) -> DirectoryUser | None:
    """Blocking: bind as the user (run in the LDAP pool).  None for wrong credentials
    or an unknown user; ``Unavailable`` when the directory cannot answer."""
    import ldap3
    from ldap3.core import exceptions as lx
    from ldap3.utils.conv import escape_filter_chars
    from ldap3.utils.dn import escape_rdn

    try:
        server = _server(config)
        service = None
        if not config.bind_dn_template:
            try:
                service = _connect(config, server, config.service_dn or "",
                                   config.service_password or "")
            except _WrongCredentials:
                raise Unavailable("the directory refused the service account "
                                  "(ldap-service-dn / ldap-service-password-file)") from None
        try:
            for name in candidates:
                if config.bind_dn_template:
                    dn = config.bind_dn_template.replace("{user}", escape_rdn(name))
                else:
                    assert service is not None
                    flt = config.search_filter.replace("{user}", escape_filter_chars(name))
                    service.search(config.base, flt, ldap3.SUBTREE,
                                   attributes=[config.mail_attribute], size_limit=2,
                                   time_limit=_seconds(config))
                    _check_result(service, ok_codes=(0, 4, 32))
                    entries = [e for e in service.response or [] if e.get("type") ==
                               "searchResEntry"]
                    if len(entries) != 1:
                        continue          # unknown (or ambiguous: never guess)
                    dn = entries[0]["dn"]
                try:
                    conn = _connect(config, server, dn, password)
                except _WrongCredentials:
                    continue
                try:
                    mail = _read_mail(config, conn, dn)
                    member = None
                    if config.group:
                        member = _is_member(config, service or conn, dn, name)
                finally:
                    conn.unbind()
                if not config.bind_dn_template:
                    name = _rdn_name(dn, name)
                return DirectoryUser(name=name.lower(), dn=dn, mail=mail, member=member)
            return None
        finally:
            if service is not None:
                service.unbind()
    except lx.LDAPPasswordIsMandatoryError:
        return None
    except lx.LDAPException as e:
        raise Unavailable(f"directory {config.url} unavailable: {type(e).__name__}: "
                          f"{_short(e)}") from None
    except OSError as e:
        raise Unavailable(f"directory {config.url} unavailable: {e.strerror or e}") from None


def _rdn_name(dn: str, fallback: str) -> str:
    """The local name of an entry found by a search: its RDN value (``uid=lara,...`` →
    ``lara``), so that logging in as ``lara`` or ``lara@example.org`` is one user."""
    from ldap3.utils.dn import parse_dn

    try:
        value = parse_dn(dn)[0][1]
        return check_name(value)
    except Exception:  # noqa: BLE001 - an odd DN: keep the name typed
        return fallback


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else ""


def _check_result(conn: Any, ok_codes: tuple[int, ...] = (0,)) -> None:
    code = (conn.result or {}).get("result", 0)
    if code not in ok_codes:
        raise Unavailable(f"directory search failed: {(conn.result or {}).get('description')}"
                          f" ({code})")


def _read_mail(config: LdapConfig, conn: Any, dn: str) -> str | None:
    import ldap3

    if not conn.search(dn, "(objectClass=*)", ldap3.BASE, attributes=[config.mail_attribute]):
        return None
    for entry in conn.response or []:
        values = (entry.get("attributes") or {}).get(config.mail_attribute)
        if isinstance(values, list):
            values = values[0] if values else None
        if values:
            return str(values)
    return None


def _is_member(config: LdapConfig, conn: Any, dn: str, name: str) -> bool:
    import ldap3
    from ldap3.utils.conv import escape_filter_chars

    flt = (f"(|(member={escape_filter_chars(dn)})(uniqueMember={escape_filter_chars(dn)})"
           f"(memberUid={escape_filter_chars(name)}))")
    conn.search(config.group, flt, ldap3.BASE, attributes=["cn"])
    code = (conn.result or {}).get("result", 0)
    if code == 32:                              # noSuchObject: the group is missing
        log.warn("LDAP group {group} does not exist: nobody is a member",  # noqa: G010
                 group=config.group)
        return False
    _check_result(conn)
    return any(e.get("type") == "searchResEntry" for e in conn.response or [])


class LdapService(Service):
    """Owns the bounded thread pool binds run in (started and stopped with the server)."""

    def __init__(self, max_threads: int = 8) -> None:
        self.pool = ThreadPool(0, max_threads, name="easync-ldap")

    def startService(self) -> None:
        super().startService()
        self.pool.start()

    def stopService(self) -> None:  # type: ignore[override]
        super().stopService()
        self.pool.stop()


Audit = Callable[[str | None, str | None, str, str, str], Awaitable[None]]


@implementer(ICredentialsChecker)
class LdapChecker(HandsOverUser):
    """The login password checked against the directory (see the module docstring).

    ``run_in_thread(fn, *args)`` defaults to the ``LdapService``'s pool; ``audit``
    records ActiveSync grants and revocations by the group.
    """

    #: a directory password change cannot be seen: remembered logins live this long
    cache_seconds = 120.0

    def __init__(self, config: LdapConfig, users: Any, reactor: Any, *,
                 service: LdapService | None = None,
                 run_in_thread: Callable[..., Deferred[Any]] | None = None,
                 audit: Audit | None = None) -> None:
        config.check()
        super().__init__()
        self.config = config
        self.users = users
        self.reactor = reactor
        self.audit = audit
        if run_in_thread is None:
            if service is None:
                raise ValueError("LdapChecker needs an LdapService or run_in_thread")
            pool = service.pool

            def run_in_thread(fn: Callable[..., Any], *args: Any) -> Deferred[Any]:
                return deferToThreadPool(reactor, pool, fn, *args)
        self._in_thread = run_in_thread

    async def _check(self, credentials: IUsernamePassword) -> str:
        raw, password = text_credentials(credentials)
        stripped = raw.strip()
        if "\\" in stripped:
            stripped = stripped.rsplit("\\", 1)[1]
        check_name(stripped)
        candidates = [check_name(c) for c in split_username(raw)]
        d = self._in_thread(_authenticate, self.config, candidates, password)
        d.addTimeout(self.config.timeout * 3 + 1, self.reactor)
        try:
            found = await d
        except TimeoutError:
            raise Unavailable(f"directory {self.config.url} did not answer in time") from None
        if found is None:
            raise UnauthorizedLogin("wrong user name or password (directory)")
        user = await self._local_record(found)
        return self._accept(user)

    async def _local_record(self, found: DirectoryUser) -> User:
        users = self.users
        with unavailable_on_failure():
            user = await users.get_user(found.name)
            if user is None:
                grant = bool(found.member)
                try:
                    await users.add_user(found.name, None, found.mail, grant)
                except KeyError:
                    pass                           # made by a concurrent login
                user = await users.update_user(found.name, origin="ldap", ldap_dn=found.dn,
                                               ldap_member=found.member)
                await self._audit(user.name, "ldap-user",
                                  "local record made at the first directory login"
                                  + ("; ActiveSync on (group member)" if grant else ""))
                return user
            fields: dict[str, Any] = {}
            if user.extra.get("ldap_dn") != found.dn:
                fields["ldap_dn"] = found.dn
            if not user.email and found.mail:
                fields["email"] = found.mail
            if found.member is not None and user.extra.get("ldap_member") != found.member:
                fields["ldap_member"] = found.member
                fields["activesync"] = found.member
            if fields:
                user = await users.update_user(user.name, **fields)
                if "activesync" in fields:
                    await self._audit(user.name, "activesync", "ActiveSync " + (
                        "on (joined" if found.member else "off (left") + " the LDAP group)")
            return user

    async def _audit(self, user: str, action: str, detail: str) -> None:
        log.info("{user}: {detail}", user=user, detail=detail)
        if self.audit is not None:
            await self.audit("ldap", user, action, detail, "")
