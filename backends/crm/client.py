"""The vtenext / vtiger web-service client: one session, reused, renewed when it dies.

Every call is one HTTP request to ``…/webservice.php`` through an injected
``treq.client.HTTPClient`` (``StubTreq`` in unit tests).  GET operations put their
parameters in the query string, POST operations in a form-encoded body (the CRM
reads each operation's parameters from one place only).

* Session: ``getchallenge`` then ``login`` with ``md5(token + access key)``; the
  session is reused by every call; an answer ``INVALID_SESSIONID``,
  ``SESSION_EXPIRED``, ``SESSION_LEFT_IDLE`` or ``AUTHENTICATION_REQUIRED`` logs in
  again and repeats the call once.  Concurrent calls share one login.
* A refused login (wrong key, locked or inactive user) is never retried in a loop:
  for ``login_retry`` seconds every call fails at once with ``LoginRefused`` (the
  CRM locks accounts after repeated failures).
* Errors: a CRM that cannot be reached, answers slower than ``timeout`` seconds,
  answers an HTTP error or something that is not the JSON envelope raises
  ``CrmUnavailable`` (an ``easync.errors.Unavailable``: HTTP 503 for devices); an
  error envelope raises ``CrmError`` with the CRM's code.
* A missing record: vtiger 8.2 answers ``ACCESS_DENIED`` to retrieve, revise and
  delete of a deleted or never-existing id (never ``RECORD_NOT_FOUND``, which
  vtenext answers); ``exists`` tells "gone" from "not allowed" with a query by id.
* The HTTP connection pool of ``quiet_pool`` does not log "Starting factory" /
  "Stopping factory" for every connection (a CRM whose server closes each one
  would fill the log with them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed

from backends.crm.call import QuietPool, envelope, quiet_pool  # noqa: F401 (re-exported)
from easync.errors import Unavailable

log = Logger()

GET_OPERATIONS = frozenset({"getchallenge", "describe", "query", "retrieve", "sync",
                            "listtypes"})
SESSION_CODES = frozenset({"INVALID_SESSIONID", "SESSION_EXPIRED", "SESSION_LEFT_IDLE",
                           "AUTHENTICATION_REQUIRED"})
REFUSED_CODES = frozenset({"INVALID_USER_CREDENTIALS", "ACCESSKEY_UNDEFINED", "LOGIN_LOCKED",
                           "IP_BANNED", "AUTHENTICATION_REQUIRED", "INVALID_AUTH_TOKEN"})
PAGE = 100                              # rows per query page (vtiger's cap)
MISSING_CODES = frozenset({"ACCESS_DENIED", "RECORD_NOT_FOUND", "INVALID_ID_ATTRIBUTE"})


class CrmError(Exception):
    """The CRM answered ``{"success": false, "error": {code, message}}``."""

    def __init__(self, code: str, message: str, operation: str = "") -> None:
        super().__init__(f"{operation}: {code}: {message}" if operation else
                         f"{code}: {message}")
        self.code = code
        self.message = message
        self.operation = operation


class CrmUnavailable(Unavailable):
    """The CRM cannot answer now (down, slow, broken): devices get HTTP 503."""


class LoginRefused(CrmUnavailable):
    """The CRM refused the service account's login; not retried for a while."""


@dataclass
class Session:
    name: str
    user_id: str                        # the service user's web-service id ("19x1")
    flavour: str                        # "vtenext" | "vtiger"
    timezone_diff: int                  # vtenext: user zone minus server zone, seconds
    version: str = ""
    profile: dict[str, Any] = field(default_factory=dict)   # the service user's record


def access_hash(token: str, access_key: str) -> str:
    return hashlib.md5((token + access_key).encode("utf-8")).hexdigest()


class CrmClient:
    """``CrmClient(reactor, treq_client, "https://crm/webservice.php", "easync", key)``."""

    def __init__(self, reactor: Any, http: Any, url: str, username: str, access_key: str, *,
                 timeout: float = 30.0, login_retry: float = 300.0) -> None:
        self.reactor = reactor
        self.http = http
        self.url = url
        self.username = username
        self._access_key = access_key
        self.timeout = timeout
        self.login_retry = login_retry
        self.session: Session | None = None
        self._waiters: list[Deferred[Session]] = []
        self._refused_until = 0.0
        self._refused_reason = ""
        self._describe: dict[str, dict[str, Any]] = {}
        self.requests = 0                       # HTTP requests made (benchmarks, tests)
        self.server_clock: tuple[int, float] | None = None
        self.logins = 0

    # -- one HTTP request ------------------------------------------------------------
    async def _request(self, operation: str, params: dict[str, Any]) -> Any:
        """Send one operation; the ``result`` of a success envelope, or raise."""
        self.requests += 1
        form = {"operation": operation, **{k: v for k, v in params.items() if v is not None}}
        if operation in GET_OPERATIONS:
            d = self.http.get(self.url, params=form)
        else:
            d = self.http.post(self.url, data=form)

        def failed(kind: str, detail: Any) -> CrmUnavailable:
            if kind == "timeout":
                return CrmUnavailable(f"CRM did not answer {operation} within {detail:g} s")
            if kind == "unreachable":
                return CrmUnavailable(f"CRM unreachable ({operation}): {detail}")
            if kind == "http":
                return CrmUnavailable(f"CRM answered HTTP {detail} to {operation}")
            if kind == "json":
                return CrmUnavailable(f"CRM answered {operation} with something not JSON: "
                                      f"{detail[:80]!r}")
            return CrmUnavailable(f"CRM answered {operation} without an envelope")

        answer = await envelope(self.reactor, d, self.timeout, failed, (
            ConnectError, DNSLookupError, ConnectionLost, ResponseFailed))
        if answer["success"]:
            return answer.get("result")
        err = answer.get("error") or {}
        raise CrmError(str(err.get("code") or "UNKNOWN"), str(err.get("message") or ""),
                       operation)

    # -- the session -----------------------------------------------------------------
    async def ensure_session(self) -> Session:
        if self.session is not None:
            return self.session
        now = self.reactor.seconds()
        if now < self._refused_until:
            raise LoginRefused(f"CRM login refused ({self._refused_reason}); not retried "
                               f"for {self._refused_until - now:.0f} s")
        waiter: Deferred[Session] = Deferred()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:         # the first caller logs in for everyone
            Deferred.fromCoroutine(self._do_login()).addBoth(self._logged_in)
        return await waiter

    def _logged_in(self, result: Session | Failure) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if isinstance(result, Failure):
                w.errback(result)
            else:
                w.callback(result)

    async def _do_login(self) -> Session:
        for attempt in (1, 2):
            challenge = await self._request("getchallenge", {"username": self.username})
            challenge = challenge if isinstance(challenge, dict) else {}
            token = str(challenge.get("token") or "")
            if challenge.get("serverTime"):
                # the CRM's clock (sync cursors are CRM seconds), as of our clock now
                self.server_clock = (int(challenge["serverTime"]), self.reactor.seconds())
            try:
                result = await self._request("login", {
                    "username": self.username,
                    "accessKey": access_hash(token, self._access_key)})
            except CrmError as e:
                # an expired challenge may be the network's fault: one fresh try
                if e.code == "INVALID_AUTH_TOKEN" and attempt == 1:
                    continue
                if e.code in REFUSED_CODES:
                    self._refused_until = self.reactor.seconds() + self.login_retry
                    self._refused_reason = e.code
                    log.error("CRM refused the login of {user}: {code} {message}; not "
                              "retried for {wait:.0f} s", user=self.username, code=e.code,
                              message=e.message, wait=self.login_retry)
                    raise LoginRefused(f"CRM login refused: {e.code}") from None
                raise CrmUnavailable(f"CRM login failed: {e}") from None
            break
        self.logins += 1
        result = result or {}
        session = Session(
            name=str(result.get("sessionName") or ""), user_id=str(result.get("userId") or ""),
            flavour="vtenext" if "vteVersion" in result else "vtiger",
            timezone_diff=int(result.get("timezone") or 0),
            version=str(result.get("vteVersion") or result.get("vtigerVersion") or ""))
        if not session.name:
            raise CrmUnavailable("CRM login answered no sessionName")
        try:
            profile = await self._request("retrieve", {"sessionName": session.name,
                                                       "id": session.user_id})
            session.profile = profile if isinstance(profile, dict) else {}
        except CrmError as e:
            log.warn("cannot read the CRM service user's settings: {err}", err=str(e))  # noqa: G010
        self.session = session
        return session

    def forget_session(self) -> None:
        self.session = None

    # -- calls -----------------------------------------------------------------------
    async def call(self, operation: str, **params: Any) -> Any:
        """Run an operation in the session (logging in first, and once more when the
        session has died)."""
        for attempt in (1, 2):
            session = await self.ensure_session()
            try:
                return await self._request(operation, {"sessionName": session.name,
                                                       **params})
            except CrmError as e:
                if e.code not in SESSION_CODES:
                    raise
                if self.session is session:
                    self.session = None
                if attempt == 2:
                    raise CrmUnavailable(f"CRM session lost twice in a row ({e.code})"
                                         ) from None
                log.info("CRM session ended ({code}); logging in again", code=e.code)
        raise AssertionError("unreachable")

    async def describe(self, module: str) -> dict[str, Any]:
        if module not in self._describe:
            self._describe[module] = await self.call("describe", elementType=module)
        return self._describe[module]

    async def id_prefix(self, module: str) -> str:
        return str((await self.describe(module))["idPrefix"])

    async def field_names(self, module: str) -> set[str]:
        return {f["name"] for f in (await self.describe(module)).get("fields", [])}

    async def query(self, vtql: str) -> list[dict[str, Any]]:
        rows = await self.call("query", query=vtql)
        if not isinstance(rows, list):
            # vtenext answers some VTQL errors as a "successful" error object
            raise CrmError("QUERY_SYNTAX_ERROR", str(rows), "query")
        return rows

    async def query_pages(self, module: str, where: str = "", columns: str = "*",
                          page: int = PAGE) -> Any:
        """Every matching row, by pages of ``page`` rows walked by id (``id > last``),
        so rows created or deleted meanwhile cannot shift a page; an async iterator of
        pages.  Stops after a short page."""
        last = f"{await self.id_prefix(module)}x0"
        while True:
            cond = f"id > '{last}'" + (f" AND {where}" if where else "")
            rows = await self.query(f"SELECT {columns} FROM {module} WHERE {cond}"
                                    f" ORDER BY id LIMIT {page};")
            if rows:
                yield rows
            if len(rows) < page:
                return
            last = max((str(r["id"]) for r in rows), key=lambda i: int(i.split("x")[1]))

    async def create(self, module: str, element: dict[str, Any], **extra: str
                     ) -> dict[str, Any]:
        """``extra``: more form fields the CRM's save reads from the request (vtiger's
        ``contactidlist``)."""
        return await self.call("create", elementType=module, element=json.dumps(element),
                               **extra)

    async def revise(self, element: dict[str, Any], **extra: str) -> dict[str, Any]:
        return await self.call("revise", element=json.dumps(element), **extra)

    async def exists(self, module: str, ws_id: str) -> bool:
        """Is there a live record with this id in ``module``?  (A query by id: what an
        administrator's query lists; ACCESS_DENIED from retrieve/revise/delete does
        not say whether the record is gone or only forbidden.)"""
        rows = await self.query(f"SELECT id FROM {module} WHERE id = '{ws_id}';")
        return any(str(r.get("id")) == ws_id for r in rows)

    async def module_of(self, ws_id: str) -> str | None:
        """The module (of those described so far, and Contacts, Events, Calendar)
        whose id prefix this id has."""
        prefix = ws_id.partition("x")[0]
        for module in ("Contacts", "Events", "Calendar", *self._describe):
            if await self.id_prefix(module) == prefix:
                return module
        return None

    async def delete(self, ws_id: str, module: str | None = None) -> None:
        """Delete a record; a record that is not there (any more) counts as deleted
        (vtenext answers success; vtiger RECORD_NOT_FOUND or, 8.2, ACCESS_DENIED,
        then a query tells it from a record the service user may not delete)."""
        try:
            await self.call("delete", id=ws_id)
        except CrmError as e:
            if e.code not in MISSING_CODES:
                raise
            module = module or await self.module_of(ws_id)
            if module is None or await self.exists(module, ws_id):
                raise

    async def retrieve(self, ws_id: str, module: str | None = None) -> dict[str, Any] | None:
        """A record, or None when the CRM has no such record (see ``delete``)."""
        try:
            return await self.call("retrieve", id=ws_id)
        except CrmError as e:
            if e.code not in MISSING_CODES:
                raise
            module = module or await self.module_of(ws_id)
            if module is None or await self.exists(module, ws_id):
                raise
            return None

    async def sync(self, module: str, since: int) -> dict[str, Any]:
        """The web service's ``sync`` (not used by the store: vtiger 8.2 answers HTTP
        500, and without a working ``syncType`` it lists only the service user's own
        records)."""
        params: dict[str, Any] = {"modifiedTime": str(int(since)), "elementType": module}
        result = await self.call("sync", **params)
        if not isinstance(result, dict):
            raise CrmUnavailable("CRM sync answered no object")
        return result

    async def login_pwd(self, username: str, password: str) -> bool:
        """vtenext ``login_pwd``: is this the user's CRM password?  No session needed.
        Raises ``CrmUnavailable`` when the CRM cannot say (down, or vtiger, which has
        no such operation)."""
        try:
            await self._request("login_pwd", {"username": username, "password": password})
        except CrmError as e:
            if e.code == "INVALID_USER_CREDENTIALS":
                return False
            if e.code in ("AUTHENTICATION_REQUIRED", "LOGIN_LOCKED", "IP_BANNED"):
                return False
            raise CrmUnavailable(f"CRM cannot check passwords: {e}") from None
        return True
