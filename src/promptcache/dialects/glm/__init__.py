"""The Zhipu GLM dialect (``POST /api/paas/v4/chat/completions``): :data:`GLM`.

GLM's chat API is OpenAI-shaped, so this dialect is the OpenAI one composed
with GLM's differences: Zhipu's request fields (read by the OpenAI parser,
:mod:`promptcache.dialects.openai.zhipu`, since ``zai-sdk`` sends them to
``/v1`` too), usage always at the end of a stream
(:mod:`~promptcache.dialects.glm.parse`), ``request_id`` and GLM's usage in
the body and GLM's error codes (:mod:`~promptcache.dialects.glm.render`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from promptcache.dialects.base import Dialect
from promptcache.dialects.glm.parse import parse_request
from promptcache.dialects.glm.render import (
    render_error,
    render_response,
    render_stream,
    render_usage,
    stream_error_frame,
)
from promptcache.dialects.openai.render import render_models
from promptcache.errors import PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent


class GLMDialect:
    """Zhipu's GLM chat completions as a :class:`~promptcache.dialects.base.Dialect`."""

    name = "glm"
    chat_path = "/api/paas/v4/chat/completions"
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


GLM: Dialect = GLMDialect()

__all__ = [
    "GLM",
    "GLMDialect",
    "parse_request",
    "render_error",
    "render_response",
    "render_stream",
    "render_usage",
    "stream_error_frame",
]
