"""The Anthropic Messages dialect (``POST /v1/messages``): :data:`ANTHROPIC`.

Parsing lives in :mod:`promptcache.dialects.anthropic.parse`, rendering in
:mod:`promptcache.dialects.anthropic.render`, and the reverse direction used
by the upstream engine in :mod:`promptcache.dialects.anthropic.wire`. The
server needs only :data:`ANTHROPIC`.
"""

from __future__ import annotations

from promptcache.dialects.anthropic.parse import parse_request
from promptcache.dialects.anthropic.render import (
    render_error,
    render_models,
    render_response,
    render_stream,
    render_usage,
    stream_error_frame,
)
from promptcache.dialects.base import Dialect, FunctionDialect

# The Anthropic SDK always sends anthropic-version; GET /v1/models then answers in this format.
ANTHROPIC: Dialect = FunctionDialect(
    name="anthropic",
    chat_path="/v1/messages",
    client_header="anthropic-version",
    parse_request=parse_request,
    render_response=render_response,
    render_stream=render_stream,
    stream_error_frame=stream_error_frame,
    render_error=render_error,
    render_models=render_models,
)

__all__ = [
    "ANTHROPIC",
    "parse_request",
    "render_error",
    "render_models",
    "render_response",
    "render_stream",
    "render_usage",
    "stream_error_frame",
]
