"""The Anthropic Messages dialect (``POST /v1/messages``): :data:`ANTHROPIC`.

Parsing lives in :mod:`promptcache.dialects.anthropic.parse`, rendering in
:mod:`promptcache.dialects.anthropic.render`, and the reverse direction used
by the upstream engine in :mod:`promptcache.dialects.anthropic.wire`. The
server needs only :data:`ANTHROPIC`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from promptcache.dialects.anthropic.parse import parse_request
from promptcache.dialects.anthropic.render import (
    render_error,
    render_models,
    render_response,
    render_stream,
    render_usage,
    stream_error_frame,
)
from promptcache.dialects.base import Dialect
from promptcache.errors import PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent


class AnthropicDialect:
    """Anthropic Messages as a :class:`~promptcache.dialects.base.Dialect`."""

    name = "anthropic"
    chat_path = "/v1/messages"
    client_header = "anthropic-version"
    """The Anthropic SDK always sends it; ``GET /v1/models`` then answers in this format."""

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


ANTHROPIC: Dialect = AnthropicDialect()

__all__ = [
    "ANTHROPIC",
    "AnthropicDialect",
    "parse_request",
    "render_error",
    "render_models",
    "render_response",
    "render_stream",
    "render_usage",
    "stream_error_frame",
]
