"""A scriptable fake provider (OpenAI Chat Completions and Anthropic Messages) for tests
of promptcache in front of an upstream: it records what arrives and answers each call
with the next scripted step."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse


@dataclass
class Step:
    """One scripted answer: ``status`` with ``headers`` (an error body when not 200), or
    ``sleep`` seconds first (a read timeout), or a stream that dies after one event."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    sleep: float = 0.0
    die_midway: bool = False
    die_before_events: bool = False
    """A 200 stream whose connection drops after a keep-alive comment, before any event."""


@dataclass
class Seen:
    path: str
    authorization: str | None
    api_key: str | None
    body: dict[str, Any] | None
    headers: dict[str, str] = field(default_factory=dict)


class FakeProvider:
    """``keys``: the provider keys it accepts (empty: any); a refused one is quoted back in
    the 401's message, as OpenAI's "Incorrect API key provided: sk-..." does."""

    def __init__(self, *, keys: tuple[str, ...] = (), models: tuple[str, ...] = ("m-1",)) -> None:
        self.keys = keys
        self.models = list(models)
        self.script: deque[Step] = deque()
        self.seen: list[Seen] = []
        self.app = FastAPI()
        self.app.add_route("/v1/chat/completions", self._chat, methods=["POST"])
        self.app.add_route("/v1/messages", self._messages, methods=["POST"])
        self.app.add_route("/v1/models", self._models, methods=["GET"])

    def calls(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    async def _record(self, request: Request) -> tuple[Seen, Response | None]:
        body = json.loads(await request.body()) if request.method == "POST" else None
        seen = Seen(
            path=request.url.path,
            authorization=request.headers.get("authorization"),
            api_key=request.headers.get("x-api-key"),
            body=body,
            headers=dict(request.headers),
        )
        self.seen.append(seen)
        key = seen.api_key or (seen.authorization or "").removeprefix("Bearer ")
        anthropic = request.url.path == "/v1/messages" or "anthropic-version" in request.headers
        if self.keys and key not in self.keys:
            message = f"Incorrect API key provided: {key}"
            return seen, _error(401, message, anthropic=anthropic, headers={})
        step = self.script.popleft() if self.script else Step()
        if step.sleep:
            await asyncio.sleep(step.sleep)
        if step.status != 200:
            message = f"scripted {step.status}"
            return seen, _error(step.status, message, anthropic=anthropic, headers=step.headers)
        if step.die_midway:
            return seen, StreamingResponse(_dying_stream(), media_type="text/event-stream")
        if step.die_before_events:
            return seen, StreamingResponse(_stillborn_stream(), media_type="text/event-stream")
        return seen, None

    async def _answer(
        self, request: Request, stream: Callable[[str], AsyncIterator[str]]
    ) -> Response | tuple[str, str]:
        """The refusal or event stream to send, else (model, text) for a JSON body."""
        seen, refusal = await self._record(request)
        if refusal is not None:
            return refusal
        assert seen.body is not None
        text = "echo: " + _last_text(seen.body)
        if seen.body.get("stream"):
            return StreamingResponse(stream(text), media_type="text/event-stream")
        return str(seen.body["model"]), text

    async def _chat(self, request: Request) -> Response:
        answer = await self._answer(request, _openai_stream)
        if isinstance(answer, Response):
            return answer
        model, text = answer
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 1700000000,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            }
        )

    async def _messages(self, request: Request) -> Response:
        answer = await self._answer(request, _anthropic_stream)
        if isinstance(answer, Response):
            return answer
        model, text = answer
        return JSONResponse(
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": 5, "output_tokens": 2},
            }
        )

    async def _models(self, request: Request) -> Response:
        _, refusal = await self._record(request)
        if refusal is not None:
            return refusal
        if "anthropic-version" in request.headers:
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.models
            ]
            return JSONResponse({"data": data, "has_more": False, "last_id": None})
        listed: list[dict[str, Any]] = [
            {"id": m, "object": "model", "created": 1, "owned_by": "fake"} for m in self.models
        ]
        return JSONResponse({"object": "list", "data": listed})


def _last_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def _error(status: int, message: str, *, anthropic: bool, headers: dict[str, str]) -> JSONResponse:
    if anthropic:
        body: dict[str, Any] = {"type": "error", "error": {"type": "x", "message": message}}
    else:
        body = {"error": {"message": message, "type": "x", "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    body = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000}
    return "data: " + json.dumps({**body, "model": "m", "choices": [choice]}) + "\n\n"


async def _openai_stream(text: str) -> AsyncIterator[str]:
    yield _chunk({"role": "assistant", "content": ""})
    yield _chunk({"content": text})
    yield _chunk({}, "stop")
    yield "data: [DONE]\n\n"


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


async def _anthropic_stream(text: str) -> AsyncIterator[str]:
    message: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "m-1",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 1},
    }
    yield _event("message_start", {"message": message})
    yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})
    yield _event("content_block_stop", {"index": 0})
    delta = {"stop_reason": "end_turn", "stop_sequence": None}
    yield _event("message_delta", {"delta": delta, "usage": {"output_tokens": 2}})
    yield _event("message_stop", {})


async def _dying_stream() -> AsyncIterator[str]:
    yield _chunk({"role": "assistant", "content": "Half"})
    await asyncio.sleep(0)
    raise RuntimeError("the fake provider dies mid-stream")  # uvicorn drops the connection


async def _stillborn_stream() -> AsyncIterator[str]:
    yield ": keep-alive\n\n"  # bytes after the 200, but no event
    await asyncio.sleep(0)
    raise RuntimeError("the fake provider dies before its first event")
