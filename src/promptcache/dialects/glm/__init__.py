"""The Zhipu GLM dialect (``POST /api/paas/v4/chat/completions``): :data:`GLM`.

GLM's chat API is OpenAI-shaped, so this dialect is the OpenAI one composed
with GLM's differences: Zhipu's request fields (read by the OpenAI parser,
:mod:`promptcache.dialects.openai.zhipu`, since ``zai-sdk`` sends them to
``/v1`` too), usage always at the end of a stream
(:mod:`~promptcache.dialects.glm.parse`), ``request_id`` and GLM's usage in
the body and GLM's error codes (:mod:`~promptcache.dialects.glm.render`).
"""

from __future__ import annotations

from promptcache.dialects.base import Dialect, FunctionDialect
from promptcache.dialects.glm.parse import parse_request
from promptcache.dialects.glm.render import (
    render_error,
    render_response,
    render_stream,
    render_usage,
    stream_error_frame,
)
from promptcache.dialects.openai.render import render_models

GLM: Dialect = FunctionDialect(
    name="glm",
    chat_path="/api/paas/v4/chat/completions",
    client_header=None,
    parse_request=parse_request,
    render_response=render_response,
    render_stream=render_stream,
    stream_error_frame=stream_error_frame,
    render_error=render_error,
    render_models=render_models,
)

__all__ = [
    "GLM",
    "parse_request",
    "render_error",
    "render_response",
    "render_stream",
    "render_usage",
    "stream_error_frame",
]
