"""Canonical results, streams, errors and model lists -> OpenAI Chat Completions bodies.

The shapes are the real API's: ``chat.completion``, ``chat.completion.chunk``
SSE frames ending in ``data: [DONE]``, ``{"error": {...}}`` and the ``list`` of
``model`` objects, so the official SDK and LangChain read them unchanged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from promptcache.dialects._common import dialect_id, dumps, encodable_dumps, new_id, sse_data
from promptcache.dialects.base import HTTPStatusError, error_status
from promptcache.errors import PromptCacheError, UpstreamError
from promptcache.request import ChatRequest, ToolUseBlock
from promptcache.result import Choice, ModelInfo, PromptUsage, Result, StreamEvent, TextDelta, Usage

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_ERROR_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def render_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_input_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call(call: ToolUseBlock) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": dumps(dict(call.input))},
    }


def _choice(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text if choice.text or not choice.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if choice.reasoning:
        # The field GLM, DeepSeek and vLLM answer with (the OpenAI SDK keeps it as an extra).
        message["reasoning_content"] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call(c) for c in choice.tool_calls]
    return {
        "index": choice.index,
        "message": message,
        "logprobs": None,
        "finish_reason": choice.finish_reason,
    }


def render_response(result: Result, request: ChatRequest) -> dict[str, Any]:
    """The ``chat.completion`` body for a complete result (with ``promptcache_retention``,
    an extension, when the engine reports what ``prompt_cache_retention: "24h"`` pinned)."""
    body: dict[str, Any] = {
        "id": dialect_id(result.id, "chatcmpl-"),
        "object": "chat.completion",
        "created": result.created,
        "model": result.model or request.model,
        "choices": [_choice(c) for c in result.choices],
        "usage": render_usage(result.usage),
        "service_tier": "default",
        "system_fingerprint": None,
    }
    body.update(_retention(result))
    return body


def _retention(result: Result) -> dict[str, Any]:
    """``{"promptcache_retention": {...}}`` when the engine reported a 24h pin, else ``{}``."""
    report = result.retention
    if report is None:
        return {}
    return {
        "promptcache_retention": {
            "ttl": report.ttl,
            "status": report.status,
            "tokens": report.tokens,
        }
    }


class _ChunkWriter:
    """Builds ``chat.completion.chunk`` frames that share one id, time and model."""

    def __init__(self, request: ChatRequest) -> None:
        self.id = new_id("chatcmpl-")
        self.created = int(time.time())
        self.model = request.model
        self.include_usage = request.transport.include_usage
        self.started: set[int] = set()

    def frame(
        self,
        choices: list[dict[str, Any]],
        usage: Usage | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None if usage is None else render_usage(usage)
        chunk.update(extra or {})
        return sse_data(chunk)

    def delta(
        self,
        index: int,
        delta: dict[str, Any],
        finish: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bytes:
        return self.frame(
            [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
            extra=extra,
        )

    def open(self, index: int) -> list[bytes]:
        """The role-only first chunk of a choice, once."""
        if index in self.started:
            return []
        self.started.add(index)
        return [self.delta(index, {"role": "assistant", "content": "", "refusal": None})]

    def finish(self, result: Result) -> list[bytes]:
        frames: list[bytes] = []
        last = len(result.choices) - 1
        # The retention report rides on the last chunk: the usage chunk when there is one.
        extra = _retention(result) if not self.include_usage else None
        for i, choice in enumerate(result.choices):
            frames += self.open(choice.index)
            if choice.tool_calls:
                calls = [{"index": k, **_tool_call(c)} for k, c in enumerate(choice.tool_calls)]
                frames.append(self.delta(choice.index, {"tool_calls": calls}))
            frames.append(
                self.delta(choice.index, {}, choice.finish_reason, extra if i == last else None)
            )
        if self.include_usage:
            frames.append(self.frame([], result.usage, extra=_retention(result)))
        return frames


def error_body(error: PromptCacheError) -> dict[str, Any]:
    status = error_status(error)
    code = getattr(error, "code", None) or _ERROR_CODES.get(status)
    if isinstance(error, HTTPStatusError):
        code = None  # no such route (or method): OpenAI's "Invalid URL", not a model error
    return {
        "error": {
            "message": error.message,
            "type": _ERROR_TYPES.get(
                status, "invalid_request_error" if status < 500 else "server_error"
            ),
            "param": error.param,
            "code": code,
        }
    }


def render_error(error: PromptCacheError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and OpenAI's ``{"error": {...}}`` body."""
    return error_status(error), error_body(error)


def stream_error_frame(error: PromptCacheError) -> bytes:
    """The error as OpenAI reports it mid-stream: a ``data:`` frame of its error body."""
    return sse_data(encodable_dumps(error_body(error)))


async def render_stream(
    events: AsyncIterator[StreamEvent], request: ChatRequest
) -> AsyncIterator[bytes]:
    """OpenAI's SSE byte stream for an engine's events.

    Nothing is yielded before the engine's first event, so an error raised
    before generation starts propagates while the server can still answer
    with a status; an error after that becomes an ``{"error": ...}`` frame.
    Closing this iterator closes ``events`` (cancelling the generation).
    """
    writer = _ChunkWriter(request)
    try:
        first = await anext(events, None)
        pending = [] if first is None else [first]
        while True:
            event = pending.pop() if pending else await anext(events, None)
            if event is None:
                raise UpstreamError("The model stream ended without a final result.")
            if isinstance(event, PromptUsage):
                continue
            if isinstance(event, TextDelta):
                for frame in writer.open(event.choice_index):
                    yield frame
                if event.reasoning:
                    yield writer.delta(event.choice_index, {"reasoning_content": event.reasoning})
                if event.text:
                    yield writer.delta(event.choice_index, {"content": event.text})
                continue
            for frame in writer.finish(event):
                yield frame
            yield sse_data("[DONE]")
            return
    except PromptCacheError as error:
        if not writer.started:
            raise
        yield sse_data(error_body(error))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def render_models(models: list[ModelInfo]) -> dict[str, Any]:
    """``GET /v1/models``: every model and alias as a ``model`` object."""
    data = [
        {"id": name, "object": "model", "created": m.created, "owned_by": m.owned_by}
        for m in models
        for name in (m.id, *m.aliases)
    ]
    return {"object": "list", "data": data}
