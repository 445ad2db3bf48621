"""Who may sync: twisted.cred checkers for EAS Basic credentials.

``build_checker`` returns the one ``ICredentialsChecker`` the HTTP layer uses.
Its avatar id is the user's canonical name (a ``str``).  Wrong credentials raise
``UnauthorizedLogin`` (HTTP 401); a directory or database that cannot answer
raises ``Unavailable`` (HTTP 503 with Retry-After, never a 401, which makes a
phone ask its user for the password again).
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker

from easync.auth.local import LocalChecker, Unavailable, split_username


def build_checker(config: dict[str, Any], server: Any, reactor: Any) -> ICredentialsChecker:
    """The checker for ``config['auth']`` (only "local" for now)."""
    kind = (config.get("auth") or "local").lower()
    if kind != "local":
        raise ValueError(f"--auth {kind} is not available yet (only 'local')")
    return LocalChecker(server.users, reactor)


__all__ = ["LocalChecker", "Unavailable", "build_checker", "split_username"]
