"""The upstream engine against in-process providers (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from promptcache.dialects import anthropic, openai
from promptcache.dialects.replay import replay_events
from promptcache.engine.upstream import RetryPolicy, UpstreamConfig, UpstreamEngine
from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PermissionDeniedError,
    PromptCacheError,
    RequestError,
    UpstreamError,
)
from promptcache.request import (
    CacheControl,
    ChatRequest,
    Message,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)
from promptcache.result import Choice, PromptUsage, Result, StreamEvent, TextDelta, Usage

Handler = Callable[[httpx.Request], httpx.Response]

TOOL = Tool(
    name="get_weather",
    description="Weather",
    input_schema={"type": "object", "properties": {"city": {"type": "string"}}},
)
REQUEST = ChatRequest(
    model="up-model",
    system=(TextBlock(text="Long manual", cache_control=CacheControl(ttl="1h")),),
    tools=(TOOL,),
    tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    messages=(
        Message(role="user", content=(TextBlock(text="Weather in Paris?"),)),
        Message(
            role="assistant",
            content=(ToolUseBlock(id="call_1", name="get_weather", input={"city": "Paris"}),),
        ),
        Message(
            role="user",
            content=(
                ToolResultBlock(tool_use_id="call_1", content=(TextBlock(text="18C"),)),
                TextBlock(text="And tomorrow?", cache_control=CacheControl()),
            ),
        ),
    ),
)


def engine(dialect: str, handler: Handler, **config: Any) -> UpstreamEngine:
    base = "https://api.example.test/v1" if dialect == "openai" else "https://api.example.test"
    # One attempt: these tests map single answers; retries are test_upstream_retries.py's.
    config.setdefault("retry", RetryPolicy(max_retries=0))
    return UpstreamEngine(
        UpstreamConfig(base_url=base, api_key="sk-test", dialect=dialect, **config),
        transport=httpx.MockTransport(handler),
    )


def sse(frames: list[str]) -> httpx.Response:
    return httpx.Response(
        200, content="".join(frames).encode(), headers={"content-type": "text/event-stream"}
    )


async def events_of(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in stream]


# --- OpenAI-compatible upstream -------------------------------------------------------------


async def test_openai_non_stream_request_and_cached_tokens() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["auth"] = request.headers["authorization"]
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 1700000000,
                "model": "up-model-2025",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Sunny."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": 2006,
                    "completion_tokens": 300,
                    "total_tokens": 2306,
                    "prompt_tokens_details": {"cached_tokens": 1920},
                },
            },
        )

    result = await engine("openai", handler).complete(REQUEST)
    assert seen["url"] == "https://api.example.test/v1/chat/completions"
    assert seen["auth"] == "Bearer sk-test"
    body = seen["body"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert body["messages"][0]["content"] == "Long manual"
    assert body["messages"][2]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
    assert body["tools"][0]["function"]["name"] == "get_weather"
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is False
    assert "stream" not in body
    assert "cache_control" not in json.dumps(body)
    assert result.model == "up-model-2025"
    assert result.choices == (Choice(text="Sunny.", finish_reason="stop"),)
    assert result.usage == Usage(input_tokens=86, cache_read_input_tokens=1920, output_tokens=300)


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Zhipu GLM: OpenAI's field.
        (
            {
                "prompt_tokens": 2000,
                "completion_tokens": 500,
                "prompt_tokens_details": {"cached_tokens": 1200},
            },
            Usage(input_tokens=800, cache_read_input_tokens=1200, output_tokens=500),
        ),
        # DeepSeek: hit/miss fields.
        (
            {
                "prompt_tokens": 1000,
                "completion_tokens": 10,
                "prompt_cache_hit_tokens": 640,
                "prompt_cache_miss_tokens": 360,
            },
            Usage(input_tokens=360, cache_read_input_tokens=640, output_tokens=10),
        ),
        ({"prompt_tokens": 50, "completion_tokens": 5}, Usage(input_tokens=50, output_tokens=5)),
    ],
)
async def test_provider_cache_fields_are_normalised(usage: dict[str, Any], expected: Usage) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "id": "x",
                "model": "glm",
                "created": 1,
                "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
                "usage": usage,
            },
        )

    assert (await engine("openai", handler).complete(REQUEST)).usage == expected


def oa_chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> str:
    chunk = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return f"data: {json.dumps({**chunk, 'choices': choices, 'usage': usage})}\n\n"


def oa_delta(delta: dict[str, Any], finish: str | None = None) -> str:
    return oa_chunk([{"index": 0, "delta": delta, "finish_reason": finish}])


def oa_call(**fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": 0, **fields}]}


OPENAI_STREAM = [
    oa_delta({"role": "assistant", "content": ""}),
    oa_delta({"content": "Let me"}),
    oa_delta({"content": " check."}),
    oa_delta(
        oa_call(id="call_7", type="function", function={"name": "get_weather", "arguments": ""})
    ),
    oa_delta(oa_call(function={"arguments": '{"city": '})),
    oa_delta(oa_call(function={"arguments": '"Oslo"}'})),
    oa_delta({}, "tool_calls"),
    oa_chunk(
        [],
        {
            "prompt_tokens": 1100,
            "completion_tokens": 20,
            "total_tokens": 1120,
            "prompt_tokens_details": {"cached_tokens": 1024},
        },
    ),
    "data: [DONE]\n\n",
]


async def test_openai_stream_decodes_text_tool_calls_and_usage() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["body"] = json.loads(request.content)
        return sse(OPENAI_STREAM)

    events = await events_of(engine("openai", handler).stream(REQUEST))
    assert seen["body"]["stream"] is True
    assert seen["body"]["stream_options"] == {"include_usage": True}
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Let me", " check."]
    result = events[-1]
    assert isinstance(result, Result)
    (choice,) = result.choices
    assert choice.text == "Let me check."
    assert choice.finish_reason == "tool_calls"
    assert choice.tool_calls == (
        ToolUseBlock(id="call_7", name="get_weather", input={"city": "Oslo"}),
    )
    assert result.usage == Usage(input_tokens=76, cache_read_input_tokens=1024, output_tokens=20)


async def test_openai_stream_cut_short_is_an_error_not_a_result() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return sse(OPENAI_STREAM[:3])

    with pytest.raises(UpstreamError, match="ended before"):
        await events_of(engine("openai", handler).stream(REQUEST))


# --- Anthropic upstream -----------------------------------------------------------------------


async def test_anthropic_non_stream_request_and_cache_split() -> None:
    seen: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["url"] = str(request.url)
        seen["headers"] = request.headers
        seen["body"] = json.loads(request.content)
        return httpx.Response(
            200,
            json={
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_2",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    },
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 21,
                    "cache_creation_input_tokens": 188,
                    "cache_read_input_tokens": 1024,
                    "cache_creation": {
                        "ephemeral_5m_input_tokens": 60,
                        "ephemeral_1h_input_tokens": 128,
                    },
                    "output_tokens": 393,
                },
            },
        )

    result = await engine("anthropic", handler, default_max_tokens=77).complete(REQUEST)
    assert seen["url"] == "https://api.example.test/v1/messages"
    assert seen["headers"]["x-api-key"] == "sk-test"
    assert seen["headers"]["anthropic-version"] == "2023-06-01"
    body = seen["body"]
    assert body["max_tokens"] == 77
    assert body["system"] == [
        {"type": "text", "text": "Long manual", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    last = body["messages"][2]["content"]
    assert last[0]["type"] == "tool_result"
    assert last[1]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    (choice,) = result.choices
    assert choice.text == "Checking."
    assert choice.finish_reason == "tool_calls"
    assert choice.tool_calls == (
        ToolUseBlock(id="toolu_2", name="get_weather", input={"city": "Rome"}),
    )
    assert result.usage == Usage(
        input_tokens=21,
        cache_read_input_tokens=1024,
        cache_creation_5m_input_tokens=60,
        cache_creation_1h_input_tokens=128,
        output_tokens=393,
    )


def an_event(payload: dict[str, Any]) -> str:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


def an_delta(index: int, delta: dict[str, Any]) -> str:
    return an_event({"type": "content_block_delta", "index": index, "delta": delta})


ANTHROPIC_STREAM = [
    an_event(
        {
            "type": "message_start",
            "message": {
                "id": "msg_s",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "claude-x",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 25,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 2048,
                    "output_tokens": 1,
                },
            },
        }
    ),
    an_event(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    ),
    an_event({"type": "ping"}),
    an_delta(0, {"type": "text_delta", "text": "Hello"}),
    an_delta(0, {"type": "text_delta", "text": "!"}),
    an_event({"type": "content_block_stop", "index": 0}),
    an_event(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {
                "type": "tool_use",
                "id": "toolu_9",
                "name": "get_weather",
                "input": {},
            },
        }
    ),
    an_delta(1, {"type": "input_json_delta", "partial_json": '{"city": "San'}),
    an_delta(1, {"type": "input_json_delta", "partial_json": ' Francisco"}'}),
    an_event({"type": "content_block_stop", "index": 1}),
    an_event(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        }
    ),
    an_event({"type": "message_stop"}),
]


async def test_anthropic_stream_decodes_prompt_usage_text_tools_and_usage() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["stream"] is True
        return sse(ANTHROPIC_STREAM)

    events = await events_of(engine("anthropic", handler).stream(REQUEST))
    assert events[0] == PromptUsage(
        usage=Usage(input_tokens=25, cache_read_input_tokens=2048, output_tokens=1)
    )
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hello", "!"]
    result = events[-1]
    assert isinstance(result, Result)
    assert result.id == "msg_s"
    (choice,) = result.choices
    assert choice.text == "Hello!"
    assert choice.finish_reason == "tool_calls"
    assert choice.tool_calls[0].input == {"city": "San Francisco"}
    assert result.usage == Usage(input_tokens=25, cache_read_input_tokens=2048, output_tokens=15)


async def test_anthropic_stream_error_event_and_cut_short() -> None:
    overloaded = an_event(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return sse([*ANTHROPIC_STREAM[:4], overloaded])

    with pytest.raises(OverloadedError, match="Overloaded"):
        await events_of(engine("anthropic", handler).stream(REQUEST))

    def cut(request: httpx.Request) -> httpx.Response:
        return sse(ANTHROPIC_STREAM[:5])

    with pytest.raises(UpstreamError, match="message_stop"):
        await events_of(engine("anthropic", cut).stream(REQUEST))


async def test_proxying_to_our_own_anthropic_renderer_round_trips() -> None:
    original = Result(
        id="msg_rt",
        model="claude-x",
        created=1,
        choices=(
            Choice(
                text="Cached answer " * 10,
                finish_reason="tool_calls",
                tool_calls=(
                    ToolUseBlock(id="toolu_rt", name="get_weather", input={"city": "Oslo"}),
                ),
            ),
        ),
        usage=Usage(
            input_tokens=3,
            cache_read_input_tokens=1024,
            cache_creation_1h_input_tokens=64,
            output_tokens=9,
        ),
    )
    ours = anthropic.parse_request(
        {"model": "claude-x", "max_tokens": 9, "messages": [{"role": "user", "content": "q"}]}
    )

    async def body() -> AsyncIterator[bytes]:
        async for chunk in anthropic.render_stream(replay_events(original), ours):
            yield chunk

    raw = b"".join([c async for c in body()])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    events = await events_of(engine("anthropic", handler).stream(ours))
    result = events[-1]
    assert isinstance(result, Result)
    assert result.choices[0].text == original.choices[0].text
    assert result.choices[0].tool_calls == original.choices[0].tool_calls
    assert result.usage == original.usage


async def test_proxying_to_our_own_openai_renderer_round_trips() -> None:
    original = Result(
        id="chatcmpl-rt",
        model="m",
        created=1,
        choices=(Choice(text="Some text to stream back " * 5),),
        usage=Usage(input_tokens=10, cache_read_input_tokens=512, output_tokens=30),
    )
    ours = openai.parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "q"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    raw = b"".join([c async for c in openai.render_stream(replay_events(original), ours)])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})

    result = (await events_of(engine("openai", handler).stream(ours)))[-1]
    assert isinstance(result, Result)
    assert result.choices[0].text == original.choices[0].text
    assert result.usage == original.usage


# --- errors, early close, configuration -------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, RequestError),
        (422, RequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, ModelNotFoundError),
        (413, PayloadTooLargeError),
        (429, OverloadedError),
        (529, OverloadedError),
        (500, UpstreamError),
        (503, UpstreamError),
    ],
)
async def test_upstream_errors_are_mapped_keeping_the_message(
    dialect: str, status: int, error_type: type[PromptCacheError]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if dialect == "openai":
            body: dict[str, Any] = {
                "error": {"message": "upstream says no", "type": "x", "param": None, "code": None}
            }
        else:
            body = {"type": "error", "error": {"type": "x", "message": "upstream says no"}}
        return httpx.Response(status, json=body)

    up = engine(dialect, handler)
    with pytest.raises(error_type, match="upstream says no") as caught:
        await up.complete(REQUEST)
    if isinstance(caught.value, UpstreamError):
        assert caught.value.upstream_status == status
    with pytest.raises(error_type, match="upstream says no"):
        await events_of(up.stream(REQUEST))


async def test_unreachable_upstream_and_non_json_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(UpstreamError, match="could not be reached"):
        await engine("openai", refuse).complete(REQUEST)
    with pytest.raises(UpstreamError, match="could not be reached"):
        await events_of(engine("openai", refuse).stream(REQUEST))

    def html(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with pytest.raises(UpstreamError, match="Bad Gateway") as caught:
        await engine("anthropic", html).complete(REQUEST)
    assert caught.value.upstream_status == 502


class _EndlessBody(httpx.AsyncByteStream):
    def __init__(self) -> None:
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < 10_000:  # bounded: the test closes long before
            self.sent += 1
            yield OPENAI_STREAM[1].encode()

    async def aclose(self) -> None:
        self.closed = True


async def test_closing_the_stream_early_closes_the_upstream_response() -> None:
    body = _EndlessBody()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body, headers={"content-type": "text/event-stream"})

    stream = engine("openai", handler).stream(REQUEST)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()  # type: ignore[attr-defined]
    assert body.closed
    assert body.sent < 10_000


async def test_models_configured_or_discovered() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/models"
        return httpx.Response(
            200, json={"object": "list", "data": [{"id": "gpt-x", "owned_by": "acme"}]}
        )

    configured = engine("openai", handler, models=["a", "b"])
    assert [m.id for m in configured.models()] == ["a", "b"]
    assert not configured.accepts_any_model
    discovering = engine("openai", handler)
    assert discovering.accepts_any_model
    assert discovering.models() == []
    assert [(m.id, m.owned_by) for m in await discovering.discover_models()] == [("gpt-x", "acme")]
    assert [m.id for m in discovering.models()] == ["gpt-x"]
    await discovering.aclose()


def test_anthropic_upstream_rejects_what_it_cannot_express() -> None:
    from dataclasses import replace

    from promptcache.dialects.anthropic.wire import to_wire_request
    from promptcache.request import SamplingParams

    with pytest.raises(RequestError, match="n > 1"):
        to_wire_request(replace(REQUEST, sampling=SamplingParams(n=2)), stream=False)
    with pytest.raises(RequestError, match="json_object"):
        to_wire_request(replace(REQUEST, response_format={"type": "json_object"}), stream=False)


def test_json_schema_crosses_dialects_to_either_upstream() -> None:
    from dataclasses import replace

    from promptcache.dialects.anthropic import wire as anthropic_wire
    from promptcache.dialects.openai import wire as openai_wire

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    from_anthropic = {"type": "json_schema", "json_schema": {"schema": schema, "strict": True}}
    from_openai = {"type": "json_schema", "json_schema": {"name": "pick", "schema": schema}}
    to_anthropic = anthropic_wire.to_wire_request(
        replace(REQUEST, response_format=from_openai), stream=False
    )
    assert to_anthropic["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    to_openai = openai_wire.to_wire_request(
        replace(REQUEST, response_format=from_anthropic), stream=False
    )
    assert to_openai["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    kept = openai_wire.to_wire_request(replace(REQUEST, response_format=from_openai), stream=False)
    assert kept["response_format"] == from_openai


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"base_url": "api.openai.com"}, "base_url"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"dialect": "gemini"}, "dialect"),
        ({"timeout": 0}, "timeout"),
        ({"models": "gpt-4o"}, "models"),
        ({"models": [""]}, "models"),
        ({"default_max_tokens": 0}, "default_max_tokens"),
    ],
)
def test_config_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        UpstreamConfig(**{"base_url": "https://api.openai.com/v1", **kwargs})
