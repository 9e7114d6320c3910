"""The OpenAI Chat Completions dialect: parse requests, render responses, SSE, errors, models.

Parsing lives in :mod:`promptcache.dialects.openai.parse`, rendering in
:mod:`promptcache.dialects.openai.render`, and the reverse direction used by
the upstream engine (canonical -> wire request, wire response -> result) in
:mod:`promptcache.dialects.openai.wire`; this module is the one import the
server needs.
"""

from __future__ import annotations

from promptcache.dialects.openai.parse import parse_request
from promptcache.dialects.openai.render import (
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
