"""Canonical results, streams, errors and model lists -> Anthropic Messages bodies.

The stream is the real API's event sequence: ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta``...,
``content_block_stop``, ``message_delta`` (stop reason, and like the current
API the cumulative input and cache counts next to ``output_tokens``),
``message_stop``. Prompt-side usage in ``message_start`` comes from the
engine's :class:`~promptcache.result.PromptUsage` event (zeros without one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from promptcache.dialects._common import dialect_id, dumps, encodable_dumps, new_id, sse_event
from promptcache.dialects.anthropic.wire import reasoning_block_json
from promptcache.dialects.base import error_status
from promptcache.errors import PromptCacheError, UpstreamError
from promptcache.request import ChatRequest
from promptcache.result import Choice, ModelInfo, PromptUsage, Result, StreamEvent, TextDelta, Usage

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}


def render_usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_creation_5m_input_tokens,
            "ephemeral_1h_input_tokens": usage.cache_creation_1h_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "service_tier": "standard",
    }


def stop_reason(choice: Choice) -> str:
    if choice.finish_reason == "stop" and choice.stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS[choice.finish_reason]


def _first_choice(result: Result) -> Choice:
    return next((c for c in result.choices if c.index == 0), Choice())


def _content(choice: Choice) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    if choice.reasoning_blocks:  # an Anthropic upstream's, whole: the client sends them back
        content += [reasoning_block_json(b) for b in choice.reasoning_blocks]
    elif choice.reasoning:
        # No signature: the reasoning came from another provider, so there is none
        # Anthropic would verify; the SDKs read it as a string.
        content.append({"type": "thinking", "thinking": choice.reasoning, "signature": ""})
    if choice.text or not choice.tool_calls:
        content.append({"type": "text", "text": choice.text})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": dict(c.input)}
        for c in choice.tool_calls
    ]
    return content


def render_response(result: Result, request: ChatRequest) -> dict[str, Any]:
    """The ``message`` body for a complete result (its first choice: the API has no ``n``)."""
    choice = _first_choice(result)
    return {
        "id": dialect_id(result.id, "msg_"),
        "type": "message",
        "role": "assistant",
        "model": result.model or request.model,
        "content": _content(choice),
        "stop_reason": stop_reason(choice),
        "stop_sequence": choice.stop_sequence,
        "usage": render_usage(result.usage),
    }


def error_body(error: PromptCacheError) -> dict[str, Any]:
    status = error_status(error)
    error_type = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": error_type, "message": error.message}}


def render_error(error: PromptCacheError) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Anthropic's ``{"type": "error", "error": {...}}`` body."""
    return error_status(error), error_body(error)


def stream_error_frame(error: PromptCacheError) -> bytes:
    """The error as Anthropic reports it mid-stream: an ``event: error`` frame."""
    return f"event: error\ndata: {encodable_dumps(error_body(error))}\n\n".encode()


class _EventWriter:
    """Numbers content blocks and remembers which one is open."""

    def __init__(self, request: ChatRequest) -> None:
        self.request = request
        self.started = False
        self.text_open = False
        self.thinking_open = False
        self.pinged = False
        self.next_index = 0

    def start(self, usage: Usage) -> bytes:
        self.started = True
        message: dict[str, Any] = {
            "id": new_id("msg_"),
            "type": "message",
            "role": "assistant",
            "model": self.request.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": render_usage(replace(usage, output_tokens=0)),
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _block_start(self, block: dict[str, Any]) -> list[bytes]:
        frames = [
            sse_event(
                "content_block_start",
                {"type": "content_block_start", "index": self.next_index, "content_block": block},
            )
        ]
        if not self.pinged:
            self.pinged = True
            frames.append(sse_event("ping", {"type": "ping"}))
        return frames

    def _block_stop(self) -> bytes:
        frame = sse_event(
            "content_block_stop", {"type": "content_block_stop", "index": self.next_index}
        )
        self.next_index += 1
        return frame

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return sse_event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self.next_index, "delta": delta},
        )

    def thinking(self, text: str) -> list[bytes]:
        """A thinking block before the text (reasoning streams first)."""
        if self.text_open:
            return []  # reasoning after the answer began has no place in Anthropic's order
        frames: list[bytes] = []
        if not self.thinking_open:
            self.thinking_open = True
            frames += self._block_start({"type": "thinking", "thinking": "", "signature": ""})
        frames.append(self._delta({"type": "thinking_delta", "thinking": text}))
        return frames

    def _close_thinking(self, signature: str = "") -> list[bytes]:
        if not self.thinking_open:
            return []
        self.thinking_open = False
        signed = self._delta({"type": "signature_delta", "signature": signature})
        return [signed, self._block_stop()]

    def signed(self, event: TextDelta) -> list[bytes]:
        """An Anthropic upstream's signature (it ends the thinking block streamed so far)
        or a whole redacted_thinking block, passed on as they came."""
        if self.text_open:
            return []
        if event.signature:
            frames: list[bytes] = []
            if not self.thinking_open:  # a block with no text shown (display "omitted")
                self.thinking_open = True
                frames += self._block_start({"type": "thinking", "thinking": "", "signature": ""})
            return frames + self._close_thinking(event.signature)
        frames = self._close_thinking()
        frames += self._block_start({"type": "redacted_thinking", "data": event.redacted_data})
        frames.append(self._block_stop())
        return frames

    def text(self, text: str) -> list[bytes]:
        frames = self._close_thinking()
        if not self.text_open:
            self.text_open = True
            frames += self._block_start({"type": "text", "text": ""})
        frames.append(self._delta({"type": "text_delta", "text": text}))
        return frames

    def finish(self, result: Result) -> list[bytes]:
        choice = _first_choice(result)
        frames = self._close_thinking()
        if self.text_open:
            frames.append(self._block_stop())
        for call in choice.tool_calls:
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            frames += self._block_start(block)
            frames.append(
                self._delta({"type": "input_json_delta", "partial_json": dumps(call.input)})
            )
            frames.append(self._block_stop())
        if not self.pinged:
            self.pinged = True
            frames.append(sse_event("ping", {"type": "ping"}))
        usage = render_usage(result.usage)
        del usage["service_tier"], usage["cache_creation"]
        delta = {"stop_reason": stop_reason(choice), "stop_sequence": choice.stop_sequence}
        frames.append(
            sse_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        )
        frames.append(sse_event("message_stop", {"type": "message_stop"}))
        return frames


async def render_stream(
    events: AsyncIterator[StreamEvent], request: ChatRequest
) -> AsyncIterator[bytes]:
    """Anthropic's SSE byte stream for an engine's events.

    Nothing is yielded before the engine's first event, so an error raised
    before generation starts propagates while the server can still answer
    with a status; an error after that becomes an ``event: error`` frame.
    Closing this iterator closes ``events`` (cancelling the generation).
    """
    writer = _EventWriter(request)
    try:
        first = await anext(events, None)
        if first is None:
            raise UpstreamError("The model stream ended without a final result.")
        prompt_usage = first.usage if isinstance(first, PromptUsage | Result) else Usage()
        yield writer.start(prompt_usage)
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, TextDelta):
                if event.choice_index == 0 and event.reasoning:
                    for frame in writer.thinking(event.reasoning):
                        yield frame
                if event.choice_index == 0 and (event.signature or event.redacted_data):
                    for frame in writer.signed(event):
                        yield frame
                if event.choice_index == 0 and event.text:
                    for frame in writer.text(event.text):
                        yield frame
            elif isinstance(event, Result):
                for frame in writer.finish(event):
                    yield frame
                return
            event = await anext(events, None)
        raise UpstreamError("The model stream ended without a final result.")
    except PromptCacheError as error:
        if not writer.started:
            raise
        yield sse_event("error", error_body(error))
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def render_models(models: list[ModelInfo]) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's paginated shape (one page: every model and alias)."""
    data = [
        {
            "type": "model",
            "id": name,
            "display_name": name,
            "lifecycle": "active",
            "created_at": datetime.fromtimestamp(m.created, UTC).isoformat().replace("+00:00", "Z"),
        }
        for m in models
        for name in (m.id, *m.aliases)
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
