"""The OpenAI Chat Completions dialect (``POST /v1/chat/completions``): :data:`OPENAI`.

Parsing lives in :mod:`promptcache.dialects.openai.parse` (with
:mod:`~promptcache.dialects.openai.messages`, :mod:`~promptcache.dialects.openai.tools`
and the error wording in :mod:`~promptcache.dialects.openai.style`), rendering in
:mod:`promptcache.dialects.openai.render`, and the reverse direction used by
the upstream engine (canonical -> wire request, wire response -> result) in
:mod:`promptcache.dialects.openai.wire`. The server needs only :data:`OPENAI`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from promptcache.dialects.base import Dialect
from promptcache.dialects.openai.parse import parse_request
from promptcache.dialects.openai.render import (
    render_error,
    render_models,
    render_response,
    render_stream,
    render_usage,
    stream_error_frame,
)
from promptcache.errors import PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent


class OpenAIDialect:
    """OpenAI Chat Completions as a :class:`~promptcache.dialects.base.Dialect`."""

    name = "openai"
    chat_path = "/v1/chat/completions"
    client_header = None

    def parse_request(self, body: Any, *, tenant: str = "", namespace: str = "") -> ChatRequest:
        return parse_request(body, tenant=tenant, namespace=namespace)

    def render_response(self, result: Result, request: ChatRequest) -> dict[str, Any]:
        return render_response(result, request)

    def render_stream(
        self, events: AsyncIterator[StreamEvent], request: ChatRequest
    ) -> AsyncIterator[bytes]:
        return render_stream(events, request)

    def stream_error_frame(self, error: PromptCacheError) -> bytes:
        return stream_error_frame(error)

    def render_error(self, error: PromptCacheError) -> tuple[int, dict[str, Any]]:
        return render_error(error)

    def render_models(self, models: list[ModelInfo]) -> dict[str, Any]:
        return render_models(models)


OPENAI: Dialect = OpenAIDialect()

__all__ = [
    "OPENAI",
    "OpenAIDialect",
    "parse_request",
    "render_error",
    "render_models",
    "render_response",
    "render_stream",
    "render_usage",
    "stream_error_frame",
]
