"""Anthropic rendering, checked by the official SDK's own types and client."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from anthropic import AsyncAnthropic, BadRequestError
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types import ModelInfo as AnthropicModelInfo
from pydantic import TypeAdapter

from promptcache.dialects import anthropic
from promptcache.dialects.replay import replay_events
from promptcache.engine.base import ModelInfo
from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PromptCacheError,
    RequestError,
    UpstreamError,
)
from promptcache.request import ToolUseBlock
from promptcache.result import PromptUsage, StreamEvent, TextDelta, Usage

from .helpers import collect, make_result, sse_json, stream_of

EVENTS = TypeAdapter(RawMessageStreamEvent)
REQUEST = anthropic.parse_request(
    {
        "model": "smollm2",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
    }
)


def test_response_validates_as_message_with_cache_fields() -> None:
    message = Message.model_validate(anthropic.render_response(make_result(), REQUEST))
    assert message.id == "msg_abc123"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello there, how can I help?"
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    usage = message.usage
    assert usage.input_tokens == 12
    assert usage.cache_read_input_tokens == 1024
    assert usage.cache_creation_input_tokens == 64
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 48
    assert usage.cache_creation.ephemeral_1h_input_tokens == 16
    assert usage.output_tokens == 7


@pytest.mark.parametrize(
    ("finish", "stop_sequence", "expected"),
    [
        ("stop", None, "end_turn"),
        ("stop", "END", "stop_sequence"),
        ("length", None, "max_tokens"),
        ("tool_calls", None, "tool_use"),
        ("content_filter", None, "refusal"),
    ],
)
def test_stop_reasons(finish: Any, stop_sequence: str | None, expected: str) -> None:
    body = anthropic.render_response(
        make_result(finish_reason=finish, stop_sequence=stop_sequence), REQUEST
    )
    message = Message.model_validate(body)
    assert message.stop_reason == expected
    assert message.stop_sequence == stop_sequence


def test_tool_use_response() -> None:
    call = ToolUseBlock(id="toolu_1", name="get_weather", input={"location": "Paris"})
    body = anthropic.render_response(
        make_result("Checking.", finish_reason="tool_calls", tool_calls=(call,)), REQUEST
    )
    message = Message.model_validate(body)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    tool = message.content[1]
    assert tool.type == "tool_use"
    assert (tool.id, tool.name, tool.input) == ("toolu_1", "get_weather", {"location": "Paris"})


async def test_stream_has_the_api_event_sequence_and_usage() -> None:
    events: list[StreamEvent] = [
        PromptUsage(usage=Usage(input_tokens=12, cache_read_input_tokens=1024)),
        TextDelta(choice_index=0, text="Hello"),
        TextDelta(choice_index=0, text=" there"),
        make_result("Hello there"),
    ]
    frames = sse_json(await collect(anthropic.render_stream(stream_of(events), REQUEST)))
    assert [name for name, _ in frames] == [data["type"] for _, data in frames]
    parsed = [EVENTS.validate_python(data) for name, data in frames if name != "ping"]
    assert [name for name, _ in frames] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = parsed[0]
    assert start.type == "message_start"
    assert start.message.usage.input_tokens == 12
    assert start.message.usage.cache_read_input_tokens == 1024
    assert start.message.usage.output_tokens == 0
    delta = parsed[-2]
    assert delta.type == "message_delta"
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 7
    assert delta.usage.input_tokens == 12
    assert delta.usage.cache_read_input_tokens == 1024
    assert delta.usage.cache_creation_input_tokens == 64


async def test_without_prompt_usage_message_start_reports_zeros() -> None:
    events: list[StreamEvent] = [TextDelta(choice_index=0, text="Hi"), make_result("Hi")]
    frames = sse_json(await collect(anthropic.render_stream(stream_of(events), REQUEST)))
    assert frames[0][1]["message"]["usage"]["input_tokens"] == 0
    assert frames[-2][1]["usage"]["input_tokens"] == 12


async def test_tool_use_is_streamed_as_input_json_delta() -> None:
    call = ToolUseBlock(id="toolu_1", name="get_weather", input={"location": "Paris"})
    result = make_result("", finish_reason="tool_calls", tool_calls=(call,))
    frames = sse_json(await collect(anthropic.render_stream(stream_of([result]), REQUEST)))
    parsed = [EVENTS.validate_python(data) for name, data in frames if name != "ping"]
    assert [name for name, _ in frames] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert parsed[1].type == "content_block_start"
    assert parsed[1].content_block.type == "tool_use"
    assert parsed[2].type == "content_block_delta"
    assert parsed[2].delta.type == "input_json_delta"


def _client(content: bytes | dict[str, Any], status: int = 200) -> AsyncAnthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(content, bytes):
            return httpx2.Response(
                status, content=content, headers={"content-type": "text/event-stream"}
            )
        return httpx2.Response(status, json=content)

    return AsyncAnthropic(
        base_url="http://127.0.0.1:9",
        api_key="k",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )


async def test_official_client_accumulates_a_replayed_stream() -> None:
    call = ToolUseBlock(id="toolu_1", name="lookup", input={"q": "x"})
    result = make_result(
        "A fairly long answer that will be cut into several replay chunks " * 3,
        finish_reason="tool_calls",
        tool_calls=(call,),
    )
    raw = await collect(anthropic.render_stream(replay_events(result), REQUEST))
    client = _client(raw)
    async with client.messages.stream(
        model="smollm2", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join([t async for t in stream.text_stream])
        message = await stream.get_final_message()
    assert text == result.choices[0].text
    assert message.stop_reason == "tool_use"
    assert message.content[-1].type == "tool_use"
    assert message.content[-1].input == {"q": "x"}
    assert message.usage.input_tokens == 12
    assert message.usage.cache_read_input_tokens == 1024
    assert message.usage.cache_creation_input_tokens == 64
    assert message.usage.output_tokens == 7


async def test_official_client_raises_on_an_error_body_and_event() -> None:
    status, body = anthropic.render_error(RequestError("messages: Field required"))
    with pytest.raises(BadRequestError) as caught:
        await _client(body, status).messages.create(
            model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body == body

    async def failing_later() -> Any:
        yield TextDelta(choice_index=0, text="partial")
        raise OverloadedError("queue full")

    frames = sse_json(await collect(anthropic.render_stream(failing_later(), REQUEST)))
    assert frames[-1] == (
        "error",
        {"type": "error", "error": {"type": "rate_limit_error", "message": "queue full"}},
    )


async def test_error_before_first_event_propagates() -> None:
    async def failing_first() -> Any:
        raise RequestError("too long")
        yield  # pragma: no cover

    with pytest.raises(RequestError):
        await collect(anthropic.render_stream(failing_first(), REQUEST))


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (RequestError("x"), 400, "invalid_request_error"),
        (AuthenticationError("x"), 401, "authentication_error"),
        (ModelNotFoundError("x"), 404, "not_found_error"),
        (PayloadTooLargeError("x"), 413, "request_too_large"),
        (OverloadedError("x"), 429, "rate_limit_error"),
        (UpstreamError("x"), 502, "api_error"),
        (PromptCacheError("x"), 500, "api_error"),
    ],
)
def test_error_shapes(error: PromptCacheError, status: int, kind: str) -> None:
    assert anthropic.render_error(error) == (
        status,
        {"type": "error", "error": {"type": kind, "message": "x"}},
    )


def test_models_list_validates() -> None:
    body = anthropic.render_models([ModelInfo(id="smollm2", created=1_700_000_000)])
    assert body["has_more"] is False
    assert body["first_id"] == body["last_id"] == "smollm2"
    model = AnthropicModelInfo.model_validate(body["data"][0])
    assert model.created_at.year == 2023
