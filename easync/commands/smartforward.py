"""SmartForward: refused, see :mod:`easync.commands.mail`."""

from __future__ import annotations

from easync.commands.mail import refuse
from easync.handler import EasRequest, EasResponse, EasServer


async def handle(server: EasServer, req: EasRequest) -> EasResponse:
    return refuse(req)
