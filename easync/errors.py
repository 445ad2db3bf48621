"""Exceptions shared by the protocol side and the stores."""


class Unavailable(Exception):
    """A store, directory or CRM cannot answer now (→ HTTP 503 with Retry-After).

    Never a reason to answer 401: that makes a phone ask its user for the password.
    """


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
