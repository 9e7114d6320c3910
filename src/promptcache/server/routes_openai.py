"""OpenAI Chat Completions: ``POST /v1/chat/completions``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects import openai
from promptcache.server.flow import ChatFlow

ROUTE = "openai"


def register(app: Starlette, flow: ChatFlow) -> None:
    async def chat_completions(request: Request) -> Response:
        return await flow.handle(request, openai, ROUTE)

    app.add_route("/v1/chat/completions", chat_completions, methods=["POST"])
