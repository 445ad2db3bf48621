"""Exceptions shared by the protocol side and the stores."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet.defer import CancelledError


class Unavailable(Exception):
    """A store, directory or CRM cannot answer now (→ HTTP 503 with Retry-After).

    Never a reason to answer 401: that makes a phone ask its user for the password.
    """

    @classmethod
    def because(cls, e: BaseException) -> Unavailable:
        """An ``Unavailable`` for the failure ``e`` of a lookup, with a reason the log
        line can give: ``e``'s message, or what it is when it has none (a process out
        of file descriptors raised an ``OSError`` with an empty message, logged as
        "directory unavailable: ")."""
        if isinstance(e, OSError) and e.errno in (errno.EMFILE, errno.ENFILE):
            return cls("this process is out of file descriptors (ulimit -n)")
        text = one_line(e)
        return cls(text or f"{type(e).__name__} (no message)")


@contextmanager
def unavailable_on_failure() -> Iterator[None]:
    """Around a lookup of a store or directory: any failure in it is ``Unavailable``
    (``Unavailable.because``: 503, never a 401), except an ``Unavailable`` already and a
    cancellation (the client went away: the request is logged "client gone")."""
    try:
        yield
    except (Unavailable, CancelledError):
        raise
    except Exception as e:
        raise Unavailable.because(e) from e


class StateExpired(Exception):
    """A sync state write refused: a tombstone the state needed was purged since the
    request read it (its ``StateWrite.feed_from`` is below the folder's purged mark);
    nothing was written (→ Sync Status 3, MS-ASCMD 2.2.3.177.17)."""


class StateConflict(Exception):
    """A sync state write refused: the state it replaces (``StateWrite.replaces``) is
    no longer the one stored — another request of the same device (a resend arriving
    while the first is answered) replaced it first; nothing was written (the Sync
    engine reads the state again and answers as to a resend, MS-ASCMD 3.1.5.3)."""


class TooManyDevices(Exception):
    """A new device would exceed the user's device cap (``--max-devices-per-user``);
    nothing was stored (→ Status 177 MaximumDevicesReached, MS-ASCMD 2.2.2)."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} devices, at most {limit}")
        self.count = count
        self.limit = limit


def one_line(text: object) -> str:
    """``text`` on one line: a driver's or the system's message may span several."""
    return " ".join(str(text).split())


class StartupError(Exception):
    """What stops ``twistd easync`` while its services start (a port in use, a database
    that cannot be opened): one line for the admin, no traceback (``easync.tap``)."""
