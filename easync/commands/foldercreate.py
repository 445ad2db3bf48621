"""FolderCreate: see :mod:`easync.commands.folders`."""

from __future__ import annotations

from easync.commands.folders import folder_create
from easync.handler import EasRequest, EasResponse, EasServer


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    return await folder_create(server, req)
