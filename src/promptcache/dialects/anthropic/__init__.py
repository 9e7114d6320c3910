"""The Anthropic Messages dialect: parse requests, render responses, SSE, errors, models.

Parsing lives in :mod:`promptcache.dialects.anthropic.parse`, rendering in
:mod:`promptcache.dialects.anthropic.render`, and the reverse direction used
by the upstream engine in :mod:`promptcache.dialects.anthropic.wire`; this
module is the one import the server needs.
"""

from __future__ import annotations

from promptcache.dialects.anthropic.parse import parse_request
from promptcache.dialects.anthropic.render import (
    render_error,
    render_models,
    render_response,
    render_stream,
    render_usage,
)

__all__ = [
    "parse_request",
    "render_error",
    "render_models",
    "render_response",
    "render_stream",
    "render_usage",
]
