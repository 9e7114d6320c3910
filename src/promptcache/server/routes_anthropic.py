"""Anthropic Messages: ``POST /v1/messages``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects import anthropic
from promptcache.server.flow import ChatFlow

ROUTE = "anthropic"


def register(app: Starlette, flow: ChatFlow) -> None:
    async def messages(request: Request) -> Response:
        return await flow.handle(request, anthropic, ROUTE)

    app.add_route("/v1/messages", messages, methods=["POST"])
