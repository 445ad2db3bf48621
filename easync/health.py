"""``GET /healthz`` on the metrics listener: is this process able to serve?

Two parts are asked, each cheaply:

* the database: one small query (``database``, given by the composition root,
  ``easync.tap``: ``SELECT 1 FROM users LIMIT 1``) in the store's pool thread, never
  in the reactor; an answer later than ``timeout`` seconds counts as a failure
  ("no answer within 2 s": a server gone from the network, a table locked by a
  migration).  One query at a time: a check asked while one is under way waits for
  it (a monitor polling every second during an outage starts no pile of queries,
  and holds at most one pool thread);
* the change hub (``hub``: a plain function, no I/O): on PostgreSQL whether the
  LISTEN connection is up (without it Pings are not woken by other nodes' changes);
  on SQLite whether its poller runs.

``200`` with ``ok`` when both answer, else ``503`` with one line per failing part
(``database: …``, ``change hub: …``).  A change of state (failing, or up again) gives
one log line; a check that finds nothing new gives none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request

__all__ = ["HealthCheck"]

log = Logger()

#: how long the database may take to answer the check's query
TIMEOUT = 2.0


def _reason(f: Failure) -> str:
    """The first line of a failure's message, without the "database unavailable:"
    that the store puts before it, at most 200 characters."""
    text = (f.getErrorMessage() or f.type.__name__).strip().splitlines()
    line = text[0] if text else f.type.__name__
    line = line.removeprefix("database unavailable: ")
    return line[:200]


class HealthCheck:
    """``check()`` fires with the failing parts (``[(part, why)]``, empty when all is
    well); ``render(request)`` answers ``GET /healthz``."""

    def __init__(self, reactor: Any, database: Callable[[], Any],
                 hub: Callable[[], str | None], timeout: float = TIMEOUT) -> None:
        self._reactor = reactor
        self._database = database
        self._hub = hub
        self.timeout = timeout
        self._probe: Deferred[str | None] | None = None     # the query under way
        self._started = 0.0
        self._waiters: list[Deferred[str | None]] = []
        self._failing: tuple[str, ...] = ()                  # for the log lines
        #: database queries started (tests: a check during one starts none)
        self.queries = 0

    # -- the parts ------------------------------------------------------------------------

    def _database_problem(self) -> Deferred[str | None]:
        now = self._reactor.seconds()
        start = self._probe is None
        if start:
            self._started = now
        left = self._started + self.timeout - now
        if left <= 0:
            return succeed(f"no answer for {now - self._started:.0f} s")
        waiter: Deferred[str | None] = Deferred()
        self._waiters.append(waiter)
        waiter.addTimeout(left, self._reactor, onTimeoutCancel=lambda _r, _t: (
            f"no answer within {self.timeout:g} s"))
        if start:
            # (after the waiter is in the list: the query may answer at once)
            self.queries += 1
            probe: Deferred[str | None] = maybeDeferred(self._database).addCallbacks(
                lambda _: None, _reason)
            self._probe = probe
            probe.addCallback(self._answered)
        return waiter

    def _answered(self, problem: str | None) -> None:
        self._probe = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.called:
                waiter.callback(problem)

    def _hub_problem(self) -> str | None:
        try:
            return self._hub()
        except Exception as e:  # noqa: BLE001 - a check must answer, not raise
            return f"cannot tell ({type(e).__name__})"

    # -- the check -------------------------------------------------------------------------

    def check(self) -> Deferred[list[tuple[str, str]]]:
        """The failing parts, ``[("database", why), ("change hub", why)]`` or fewer."""

        def collect(db_problem: str | None) -> list[tuple[str, str]]:
            failing = []
            if db_problem:
                failing.append(("database", db_problem))
            hub_problem = self._hub_problem()
            if hub_problem:
                failing.append(("change hub", hub_problem))
            self._note(failing)
            return failing

        return self._database_problem().addCallback(collect)

    def _note(self, failing: list[tuple[str, str]]) -> None:
        parts = tuple(part for part, _ in failing)
        if parts == self._failing:
            return
        self._failing = parts
        if failing:
            log.warn("healthz: failing: {why}",  # noqa: G010 - Logger has warn
                     why="; ".join(f"{part}: {why}" for part, why in failing))
        else:
            log.info("healthz: database and change hub up again")

    # -- HTTP ------------------------------------------------------------------------------

    def render(self, request: Request) -> Any:
        """Answer ``GET /healthz`` (``HEAD`` too) when the check is done; the reactor is
        not held meanwhile."""
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))

        def answer(failing: list[tuple[str, str]]) -> None:
            if gone:
                return
            request.setResponseCode(503 if failing else 200)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-store")
            body = "".join(f"{part}: {why}\n" for part, why in failing) or (
                "ok: database and change hub up\n")
            if request.method != b"HEAD":
                request.write(body.encode())
            request.finish()

        def broken(f: Failure) -> None:
            log.failure("healthz: the check failed", f)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        self.check().addCallbacks(answer, broken)
        return NOT_DONE_YET
