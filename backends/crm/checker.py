"""CRM accounts (``--auth crm``): the login password is checked by the CRM.

vtenext's web service has ``login_pwd`` (POST ``username``, ``password``): it answers
the user's access key for the right CRM password and ``INVALID_USER_CREDENTIALS``
otherwise.  This checker asks it once per login attempt and never again in a loop
(vtenext locks an account after repeated failures; easync's own throttling and lockout
in ``easync.auth.aspassword`` come first).  vtiger has no ``login_pwd``: with it, use
``--auth local``.

It is the *primary* checker: ``easync.auth.aspassword.PolicyChecker`` wraps it with the
ActiveSync-password and 2FA rules, exactly as for local and LDAP accounts.  As with
LDAP, the first successful login of a CRM user makes a local record (no local
password, ``origin = "crm"``, ActiveSync off until an administrator turns it on) that
holds devices, 2FA and the ActiveSync password.

A CRM that is down, slow or answering something else raises ``Unavailable`` (HTTP 503
with Retry-After), never a 401.  Only the HTTP request is made here (treq, injected);
this module does not import ``backends``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.logger import Logger
from zope.interface import implementer

from backends.crm.call import envelope
from easync.auth.local import BadUserName, HandsOverUser, split_username, text_credentials
from easync.errors import Unavailable, unavailable_on_failure
from easync.model import User

if TYPE_CHECKING:
    from easync.config import CrmConfig

log = Logger()

__all__ = ["CrmChecker", "crm_checker"]

_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
REFUSED = frozenset({"INVALID_USER_CREDENTIALS", "AUTHENTICATION_REQUIRED", "LOGIN_LOCKED",
                     "IP_BANNED"})


@implementer(ICredentialsChecker)
class CrmChecker(HandsOverUser):
    """``CrmChecker(reactor, http, "https://crm/webservice.php", users, timeout=10)``;
    ``http`` is a ``treq.client.HTTPClient`` (``StubTreq`` in tests)."""

    #: a CRM password change cannot be seen: remembered logins live this long
    cache_seconds = 120.0

    def __init__(self, reactor: Any, http: Any, url: str, users: Any, *,
                 timeout: float = 10.0) -> None:
        super().__init__()
        self.reactor = reactor
        self.http = http
        self.url = url
        self.users = users
        self.timeout = timeout

    async def _check(self, credentials: IUsernamePassword) -> str:
        raw, password = text_credentials(credentials)
        candidates = split_username(raw)
        if not candidates or not all(_NAME.match(c) for c in candidates):
            raise BadUserName("user name with control characters")
        # one CRM question per attempt: the name a local record has, else the plain one
        name = candidates[-1]
        for candidate in candidates:
            if await self._local(candidate) is not None:
                name = candidate
                break
        if not await self._login_pwd(name, password):
            raise UnauthorizedLogin("wrong user name or password (CRM)")
        user = await self._local_record(name)
        return self._accept(user)

    async def _local(self, name: str) -> User | None:
        with unavailable_on_failure():
            found: User | None = await self.users.get_user(name)
            return found

    async def _login_pwd(self, name: str, password: str) -> bool:
        d = self.http.post(self.url, data={"operation": "login_pwd", "username": name,
                                           "password": password})
        # unreachable: any other failure (connection refused or lost, DNS, TLS, …)
        answer = await envelope(self.reactor, d, self.timeout, _login_check_failed,
                                (Exception,))
        if answer["success"]:
            return True
        err = answer.get("error") or {}
        code_name = str(err.get("code") or "")
        if code_name in REFUSED:
            return False
        # UNKNOWN_OPERATION (vtiger), errors of the CRM itself: it cannot say
        log.error("the CRM cannot check passwords: {code} {message}", code=code_name,
                  message=err.get("message"))
        raise Unavailable(f"CRM cannot check passwords ({code_name})")

    async def _local_record(self, name: str) -> User:
        users = self.users
        with unavailable_on_failure():
            user = await users.get_user(name)
            if user is None:
                try:
                    await users.add_user(name, None, None, False)
                except KeyError:
                    pass                            # made by a concurrent login
                user = await users.update_user(name, origin="crm")
                log.info("{user}: local record made at the first CRM login (ActiveSync "
                         "off until an administrator turns it on)", user=name)
            return user


def _login_check_failed(kind: str, detail: Any) -> Unavailable:
    if kind == "timeout":
        return Unavailable(f"CRM did not answer a login check in {detail:g} s")
    if kind == "unreachable":
        return Unavailable(f"CRM unreachable for a login check: {detail}")
    if kind == "http":
        return Unavailable(f"CRM answered HTTP {detail} to a login check")
    if kind == "json":
        return Unavailable("CRM answered a login check with something not JSON")
    return Unavailable("CRM answered a login check without an envelope")


def crm_checker(crm: CrmConfig, server: Any, reactor: Any) -> CrmChecker:
    """The ``--auth crm`` primary checker for the ``crm-*`` options."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent

    from backends.crm.call import quiet_pool

    url = crm.url
    if not url:
        raise ValueError("--auth crm needs --crm-url")
    http = HTTPClient(Agent(reactor, pool=quiet_pool(reactor)))
    return CrmChecker(reactor, http, url, server.users,
                      timeout=crm.timeout)
