"""Canonical results, streams and errors -> GLM's chat bodies.

A GLM completion is OpenAI's ``chat.completion`` with a ``request_id`` (the
client's, else the completion id) and GLM's usage -- ``prompt_tokens``,
``completion_tokens``, ``total_tokens`` and ``prompt_tokens_details.cached_tokens``
(the tokens read from the KV prefix cache), without OpenAI's audio and
prediction counters. Stream chunks are OpenAI's (the last one carries the
usage). Errors are GLM's ``{"error": {"code": "1214", "message": ...}}`` with
Zhipu's business codes (``docs.z.ai/api-reference/api-code``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from promptcache.dialects._common import encodable_dumps, sse_data
from promptcache.dialects.base import HTTPStatusError, error_status
from promptcache.dialects.openai import render as openai_render
from promptcache.errors import ModelNotFoundError, PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import Result, StreamEvent, Usage

_CODES: Mapping[int, str] = {
    400: "1210",  # Incorrect API call parameters
    401: "1000",  # Authentication failed
    403: "1220",  # No permission to access the API
    404: "1222",  # The API does not exist (a model is 1211, below)
    405: "1222",
    413: "1210",
    415: "1210",
    429: "1302",  # Too many concurrent requests
    500: "500",  # Internal error
    502: "1230",  # API call process error
    504: "1230",
}
_INVALID_FIELD = "1214"
"""Invalid ``${field}`` parameter: a 400 that names its field."""
_MODEL_NOT_FOUND = "1211"


def render_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cache_read_input_tokens},
    }


def render_response(result: Result, request: ChatRequest) -> dict[str, Any]:
    """GLM's completion body: OpenAI's, with ``request_id`` and GLM's usage."""
    body = openai_render.render_response(result, request)
    for key in ("service_tier", "system_fingerprint"):
        body.pop(key, None)
    for choice in body["choices"]:
        choice.pop("logprobs", None)
        for key in ("refusal", "annotations"):
            choice["message"].pop(key, None)
    body["request_id"] = request.transport.request_id or body["id"]
    body["usage"] = render_usage(result.usage)
    return body


def render_stream(events: AsyncIterator[StreamEvent], request: ChatRequest) -> AsyncIterator[bytes]:
    """OpenAI's chunk stream (GLM's chunks are the same shape), ending ``data: [DONE]``."""
    return openai_render.render_stream(events, request)


def error_code(error: PromptCacheError) -> str:
    status = error_status(error)
    if isinstance(error, ModelNotFoundError):
        return _MODEL_NOT_FOUND
    if status == 400 and error.param and not isinstance(error, HTTPStatusError):
        return _INVALID_FIELD
    return _CODES.get(status, "500" if status >= 500 else "1210")


def error_body(error: PromptCacheError) -> dict[str, Any]:
    return {"error": {"code": error_code(error), "message": error.message}}


def render_error(error: PromptCacheError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and GLM's ``{"error": {"code", "message"}}`` body."""
    return error_status(error), error_body(error)


def stream_error_frame(error: PromptCacheError) -> bytes:
    """The error mid-stream: a ``data:`` frame of GLM's error body (zai-sdk raises it)."""
    return sse_data(encodable_dumps(error_body(error)))
