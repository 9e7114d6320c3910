"""The OpenAI Chat Completions dialect (``POST /v1/chat/completions``): :data:`OPENAI`.

Parsing lives in :mod:`promptcache.dialects.openai.parse` (with
:mod:`~promptcache.dialects.openai.messages`, :mod:`~promptcache.dialects.openai.tools`
and the error wording in :mod:`~promptcache.dialects.openai.style`), rendering in
:mod:`promptcache.dialects.openai.render`, and the reverse direction used by
the upstream engine (canonical -> wire request, wire response -> result) in
:mod:`promptcache.dialects.openai.wire`. The server needs only :data:`OPENAI`.
"""

from __future__ import annotations

from promptcache.dialects.base import Dialect, FunctionDialect
from promptcache.dialects.openai.parse import parse_request
from promptcache.dialects.openai.render import (
    render_error,
    render_models,
    render_response,
    render_stream,
    render_usage,
    stream_error_frame,
)

OPENAI: Dialect = FunctionDialect(
    name="openai",
    chat_path="/v1/chat/completions",
    client_header=None,
    parse_request=parse_request,
    render_response=render_response,
    render_stream=render_stream,
    stream_error_frame=stream_error_frame,
    render_error=render_error,
    render_models=render_models,
)

__all__ = [
    "OPENAI",
    "parse_request",
    "render_error",
    "render_models",
    "render_response",
    "render_stream",
    "render_usage",
    "stream_error_frame",
]
