"""One request to a CRM's web service (``…/webservice.php``) up to its JSON envelope.

Shared by the item store's client (``backends.crm.client``) and the login check
(``backends.crm.checker``): an answer later than the timeout, an unreachable CRM, an HTTP
error or an answer that is not the ``{"success": …}`` envelope each raise the exception
the caller's ``failed(kind, detail)`` makes, with the caller's message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.python.failure import Failure
from twisted.web.client import HTTPConnectionPool


class QuietPool(HTTPConnectionPool):
    """An ``HTTPConnectionPool`` whose per-connection client factories are not noisy:
    twisted logs "Starting factory" and "Stopping factory" for each connection of a
    noisy one, and a CRM behind a server that closes every connection makes one per
    request (456 of 563 log lines in 11 minutes against a real vtiger)."""

    # HTTPConnectionPool._factory is a class attribute (a class), not a declared type:
    # mypy cannot subclass through it.
    class _factory(HTTPConnectionPool._factory):  # type: ignore[valid-type,misc]
        noisy = False


def quiet_pool(reactor: Any, persistent: bool = True) -> HTTPConnectionPool:
    """The connection pool for a CRM client or login check (see ``QuietPool``)."""
    return QuietPool(reactor, persistent=persistent)


#: ``failed(kind, detail)``: ``("timeout", seconds)``, ``("unreachable", error)``,
#: ``("http", status code)``, ``("json", body)`` or ``("envelope", None)``
Failed = Callable[[str, Any], Exception]


async def envelope(reactor: Any, request: Deferred[Any], timeout: float, failed: Failed,
                   unreachable: tuple[type[BaseException], ...]) -> dict[str, Any]:
    """The envelope ``request`` (a treq request's Deferred) answers within ``timeout``
    seconds; an exception of the ``unreachable`` types counts as an unreachable CRM."""

    async def whole() -> tuple[int, bytes]:
        response = await request
        body = await response.content()
        return response.code, body

    def timed_out(result: Any, timeout: float) -> Failure:
        # whatever the cancelled request failed with, it was our timeout
        return Failure(TimeoutError())

    wd = Deferred.fromCoroutine(whole())
    wd.addTimeout(timeout, reactor, onTimeoutCancel=timed_out)
    try:
        code, body = await wd
    except (TimeoutError, CancelledError):
        raise failed("timeout", timeout) from None
    except unreachable as e:
        raise failed("unreachable", e) from None
    if code != 200:
        raise failed("http", code)
    try:
        answer = json.loads(body)
    except ValueError:
        raise failed("json", body) from None
    if not isinstance(answer, dict) or "success" not in answer:
        raise failed("envelope", None)
    return answer
