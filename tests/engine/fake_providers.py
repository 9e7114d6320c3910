"""In-process fakes of the upstream providers the profiles name.

Each answers the way its provider does: its usage fields (OpenAI's
``prompt_tokens_details.cached_tokens``, OpenRouter's ``cache_write_tokens``,
DeepSeek's ``prompt_cache_hit_tokens``, llama.cpp's ``timings``, Anthropic's
``cache_*``), its reasoning field, its stream events and its error body. The
self-hosted engines refuse bodies carrying fields they do not know (as a strict
OpenAI-compatible server does), so a test sees what really arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

PROMPT_TOKENS = 1000
COMPLETION_TOKENS = 7
ANSWER = ["Paris ", "is the ", "capital."]
THOUGHT = ["The user asks ", "about France."]
# Where each OpenAI-dialect provider puts its reasoning.
REASONING_FIELD = {
    "openrouter": "reasoning",
    "vllm": "reasoning",
    "glm": "reasoning_content",
    "deepseek": "reasoning_content",
    "sglang": "reasoning_content",
    "llamacpp": "reasoning_content",
}
STRICT = ("vllm", "sglang", "llamacpp")
_UNKNOWN_TO_ENGINES = ("cache_control", "prompt_cache_key", "prompt_cache_retention")


@dataclass
class FakeProvider:
    """One provider's API. ``cached``/``written``: prompt tokens it reports read from /
    written to its cache; ``error``: (status, message) to answer every chat with."""

    name: str
    cached: int = 0
    written: int = 0
    think: bool = False
    error: tuple[int, str] | None = None
    received: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
            ]
        )

    # -- OpenAI-compatible providers -------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(body)
        if self.error is not None:
            return JSONResponse(error_body(self.name, self.error[1]), status_code=self.error[0])
        if self.name in STRICT:
            unknown = _unknown_field(body)
            if unknown:
                refusal = f"Unrecognized request argument supplied: {unknown}"
                return JSONResponse(error_body(self.name, refusal), status_code=400)
        if body.get("stream"):
            usage = (body.get("stream_options") or {}).get("include_usage")
            return _sse(self._chunks(body["model"], bool(usage)))
        message: dict[str, Any] = {"role": "assistant", "content": "".join(ANSWER)}
        if self.think:
            message[REASONING_FIELD[self.name]] = "".join(THOUGHT)
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                **self._usage_fields(),
            }
        )

    def _usage_fields(self) -> dict[str, Any]:
        prompt, cached, written = PROMPT_TOKENS, self.cached, self.written
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": prompt + COMPLETION_TOKENS,
        }
        if self.name == "deepseek":
            usage["prompt_cache_hit_tokens"] = cached
            usage["prompt_cache_miss_tokens"] = prompt - cached
            return {"usage": usage}
        if self.name == "llamacpp":
            # llama.cpp reports what its slot's KV cache reused in timings.
            timings = {"cache_n": cached, "prompt_n": prompt - cached, "predicted_n": 7}
            return {"usage": usage, "timings": timings}
        details: dict[str, Any] = {"cached_tokens": cached}
        if self.name == "openrouter":
            details["cache_write_tokens"] = written
        usage["prompt_tokens_details"] = details
        return {"usage": usage}

    def _chunks(self, model: str, include_usage: bool) -> Iterator[dict[str, Any] | str]:
        head = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1}
        head["model"] = model

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        yield chunk({"role": "assistant", "content": ""})
        if self.think:
            for piece in THOUGHT:
                yield chunk({REASONING_FIELD[self.name]: piece})
        for piece in ANSWER:
            yield chunk({"content": piece})
        final = chunk({}, "stop")
        if self.name == "llamacpp":  # llama.cpp puts timings on the last chunk
            final["timings"] = self._usage_fields()["timings"]
        yield final
        if include_usage:  # (llama.cpp's timings came on the finish chunk above)
            yield {**head, "choices": [], "usage": self._usage_fields()["usage"]}
        yield "[DONE]"

    # -- Anthropic ---------------------------------------------------------------------

    async def _messages(self, request: Request) -> Response:
        body = await request.json()
        self.received.append(body)
        if self.error is not None:
            return JSONResponse(error_body(self.name, self.error[1]), status_code=self.error[0])
        usage = {
            "input_tokens": PROMPT_TOKENS - self.cached - self.written,
            "cache_read_input_tokens": self.cached,
            "cache_creation_input_tokens": self.written,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 0,
                "ephemeral_1h_input_tokens": self.written,
            },
            "output_tokens": COMPLETION_TOKENS,
        }
        content: list[dict[str, Any]] = []
        if self.think:
            content.append({"type": "thinking", "thinking": "".join(THOUGHT), "signature": "sig"})
        content.append({"type": "text", "text": "".join(ANSWER)})
        message = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("stream"):
            return _sse(self._events(message), named=True)
        return JSONResponse(message)

    def _events(self, message: dict[str, Any]) -> Iterator[dict[str, Any] | str]:
        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {**message["usage"], "output_tokens": 1}
        yield {"type": "message_start", "message": start}
        for index, block in enumerate(message["content"]):
            kind = block["type"]
            empty = {"type": "thinking", "thinking": "", "signature": ""}
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": empty if kind == "thinking" else {"type": "text", "text": ""},
            }
            pieces, delta = (THOUGHT, "thinking") if kind == "thinking" else (ANSWER, "text")
            for piece in pieces:
                part = {"type": f"{delta}_delta", delta: piece}
                yield {"type": "content_block_delta", "index": index, "delta": part}
            if kind == "thinking":
                signed = {"type": "signature_delta", "signature": "sig"}
                yield {"type": "content_block_delta", "index": index, "delta": signed}
            yield {"type": "content_block_stop", "index": index}
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": COMPLETION_TOKENS},
        }
        yield {"type": "message_stop"}


def error_body(provider: str, message: str) -> dict[str, Any]:
    """The error body each provider answers with."""
    if provider == "anthropic":
        return {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    if provider in ("vllm", "sglang"):
        return {"object": "error", "message": message, "type": "BadRequestError", "code": 400}
    if provider == "glm":
        return {"error": {"code": "1214", "message": message}}
    if provider in ("openrouter", "llamacpp"):
        return {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    return {"error": {"message": message, "type": "invalid_request_error", "param": None}}


def _unknown_field(value: Any, path: str = "") -> str | None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _UNKNOWN_TO_ENGINES:
                return f"{path}{key}"
            found = _unknown_field(item, f"{path}{key}.")
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _unknown_field(item, f"{path}{i}.")
            if found:
                return found
    return None


def _sse(events: Iterator[dict[str, Any] | str], *, named: bool = False) -> StreamingResponse:
    def frames() -> Iterator[str]:
        for event in events:
            data = event if isinstance(event, str) else json.dumps(event)
            name = f"event: {event['type']}\n" if named and isinstance(event, dict) else ""
            yield f"{name}data: {data}\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream")


def markers_in(body: Any) -> int:
    """How many ``cache_control`` objects a request body carries, anywhere."""
    if isinstance(body, dict):
        return ("cache_control" in body) + sum(markers_in(v) for v in body.values())
    if isinstance(body, list):
        return sum(markers_in(v) for v in body)
    return 0
