"""InvokeModel and InvokeModelWithResponseStream for Anthropic-format bodies.

The body is an Anthropic Messages body with ``"anthropic_version":
"bedrock-2023-05-31"`` and no ``model`` (it is in the path) or ``stream`` (the
operation says it): it is checked for those, then parsed by the Anthropic
dialect's own parser and rendered by its renderer, the requested model id put
back in the answer. The stream wraps each Anthropic stream event as a
``chunk`` event whose payload is ``{"bytes": <base64 of the event's JSON>}``;
``message_stop`` carries ``amazon-bedrock-invocationMetrics`` as on Bedrock.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from promptcache.dialects import anthropic
from promptcache.dialects.anthropic.parse import STYLE
from promptcache.dialects.bedrock import eventstream
from promptcache.dialects.bedrock.errors import stream_member
from promptcache.errors import PromptCacheError, RequestError
from promptcache.request import ChatRequest
from promptcache.result import Result, StreamEvent

ANTHROPIC_VERSION = "bedrock-2023-05-31"


def parse_invoke(
    body: Any, *, model: str, stream: bool, tenant: str = "", namespace: str = ""
) -> ChatRequest:
    if not isinstance(body, dict):
        raise STYLE.wrong_type((), "object", body)
    version = body.get("anthropic_version")
    if version != ANTHROPIC_VERSION:
        raise RequestError(
            f"anthropic_version: must be {ANTHROPIC_VERSION!r} "
            "(this server's InvokeModel takes Anthropic Messages bodies)",
            param="anthropic_version",
        )
    for key in ("model", "stream"):
        if key in body:
            raise RequestError(
                f"{key}: extraneous key [{key}] is not permitted (the operation gives it)",
                param=key,
            )
    fields = {k: v for k, v in body.items() if k != "anthropic_version"}
    fields["model"] = model
    if stream:
        fields["stream"] = True
    return anthropic.parse_request(fields, tenant=tenant, namespace=namespace)


def render_invoke(result: Result, request: ChatRequest, *, model: str) -> dict[str, Any]:
    body = anthropic.render_response(result, request)
    body["model"] = model
    return body


def invoke_headers(body: bytes, *, started: float) -> dict[str, str]:
    """InvokeModel's usage headers, from the rendered Anthropic body's ``usage``."""
    try:
        usage = json.loads(body).get("usage", {})
    except (ValueError, AttributeError):
        return {}
    return {
        "x-amzn-bedrock-input-token-count": str(usage.get("input_tokens", 0)),
        "x-amzn-bedrock-output-token-count": str(usage.get("output_tokens", 0)),
        "x-amzn-bedrock-cache-read-input-token-count": str(usage.get("cache_read_input_tokens", 0)),
        "x-amzn-bedrock-cache-write-input-token-count": str(
            usage.get("cache_creation_input_tokens", 0)
        ),
        "x-amzn-bedrock-invocation-latency": str(round((time.perf_counter() - started) * 1000)),
    }


def _chunk(payload: dict[str, Any]) -> bytes:
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )
    return eventstream.event("chunk", {"bytes": base64.b64encode(raw).decode()})


def error_frame(error: PromptCacheError) -> bytes:
    return eventstream.exception(stream_member(error), error.message)


async def render_invoke_stream(
    events: AsyncIterator[StreamEvent], request: ChatRequest, *, model: str, started: float
) -> AsyncIterator[bytes]:
    """Anthropic's stream events as Bedrock ``chunk`` events."""
    first_byte: float | None = None
    counts: dict[str, Any] = {"input_tokens": 0, "output_tokens": 0}
    frames = anthropic.render_stream(events, request)
    try:
        async for frame in frames:
            text = frame.decode()
            data = next((line[6:] for line in text.split("\n") if line.startswith("data: ")), None)
            if data is None:
                continue
            payload = json.loads(data)
            kind = payload.get("type")
            if kind == "ping":
                continue
            if kind == "error":
                error = payload.get("error", {})
                yield eventstream.exception(
                    _error_member(error.get("type")), str(error.get("message", ""))
                )
                return
            if first_byte is None:
                first_byte = time.perf_counter()
            if kind == "message_start":
                payload["message"]["model"] = model
                counts.update(payload["message"]["usage"])
            elif kind == "message_delta":
                counts.update(payload.get("usage", {}))
            elif kind == "message_stop":
                now = time.perf_counter()
                payload["amazon-bedrock-invocationMetrics"] = {
                    "inputTokenCount": counts.get("input_tokens", 0),
                    "outputTokenCount": counts.get("output_tokens", 0),
                    "cacheReadInputTokenCount": counts.get("cache_read_input_tokens", 0),
                    "cacheWriteInputTokenCount": counts.get("cache_creation_input_tokens", 0),
                    "invocationLatency": round((now - started) * 1000),
                    "firstByteLatency": round(((first_byte or now) - started) * 1000),
                }
            yield _chunk(payload)
    finally:
        await frames.aclose()  # type: ignore[attr-defined]


def _error_member(anthropic_type: Any) -> str:
    return {
        "invalid_request_error": "validationException",
        "overloaded_error": "throttlingException",
        "rate_limit_error": "throttlingException",
        "timeout_error": "modelTimeoutException",
        "api_error": "internalServerException",
    }.get(str(anthropic_type), "modelStreamErrorException")
