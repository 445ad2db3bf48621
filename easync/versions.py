"""The ActiveSync protocol versions easync speaks, and how they compare."""

from __future__ import annotations

# Protocol versions we speak (MS-ASProtocolVersions order).
VERSIONS = ("2.5", "12.0", "12.1", "14.0", "14.1", "16.0", "16.1")


def version_tuple(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor or 0)
