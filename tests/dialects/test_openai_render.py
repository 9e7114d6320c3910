"""OpenAI rendering, checked by the official SDK's own types and client."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import pytest
from openai import AsyncOpenAI, BadRequestError
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from promptcache.dialects import openai
from promptcache.dialects.base import HTTPStatusError
from promptcache.dialects.replay import replay_events
from promptcache.engine.base import ModelInfo
from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    RequestError,
    UpstreamError,
)
from promptcache.request import ToolUseBlock
from promptcache.result import Choice, PromptUsage, StreamEvent, TextDelta

from .helpers import USAGE, collect, make_result, sse_json, stream_of

REQUEST = openai.parse_request(
    {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
)
REQUEST_WITH_USAGE = openai.parse_request(
    {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
)


def test_response_validates_as_chat_completion_with_cached_tokens() -> None:
    completion = ChatCompletion.model_validate(openai.render_response(make_result(), REQUEST))
    assert completion.id == "chatcmpl-abc123"
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello there, how can I help?"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens == 12 + 1024 + 48 + 16
    assert usage.completion_tokens == 7
    assert usage.total_tokens == usage.prompt_tokens + 7
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 1024


def test_tool_call_response() -> None:
    call = ToolUseBlock(id="call_9", name="get_weather", input={"location": "Paris"})
    body = openai.render_response(
        make_result("", finish_reason="tool_calls", tool_calls=(call,)), REQUEST
    )
    completion = ChatCompletion.model_validate(body)
    message = completion.choices[0].message
    assert message.content is None
    assert completion.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    (tool_call,) = message.tool_calls
    assert tool_call.id == "call_9"
    assert tool_call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(tool_call.function.arguments) == {"location": "Paris"}  # type: ignore[union-attr]


def test_result_ids_from_other_dialects_are_reprefixed() -> None:
    result = make_result()
    result = type(result)(**{**result.__dict__, "id": "msg_xyz"})
    assert openai.render_response(result, REQUEST)["id"] == "chatcmpl-xyz"


async def test_stream_chunks_validate_and_carry_usage() -> None:
    events: list[StreamEvent] = [
        PromptUsage(usage=USAGE),
        TextDelta(choice_index=0, text="Hello"),
        TextDelta(choice_index=0, text=" there"),
        make_result("Hello there"),
    ]
    frames = sse_json(await collect(openai.render_stream(stream_of(events), REQUEST_WITH_USAGE)))
    assert frames[-1] == ("", "[DONE]")
    chunks = [ChatCompletionChunk.model_validate(data) for _, data in frames[:-1]]
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello there"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    # Every chunk carries "usage": null except the last, which has no choices.
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == USAGE.prompt_tokens
    assert last.usage.prompt_tokens_details is not None
    assert last.usage.prompt_tokens_details.cached_tokens == 1024
    assert last.usage.completion_tokens == 7


async def test_stream_without_include_usage_has_no_usage_key() -> None:
    events: list[StreamEvent] = [TextDelta(choice_index=0, text="Hi"), make_result("Hi")]
    frames = sse_json(await collect(openai.render_stream(stream_of(events), REQUEST)))
    assert all("usage" not in data for _, data in frames[:-1])
    assert all(data["choices"] for _, data in frames[:-1])


async def test_stream_of_tool_calls_and_several_choices() -> None:
    call = ToolUseBlock(id="call_1", name="f", input={"a": 1})
    result = make_result(
        choices=(
            Choice(index=0, text="A", finish_reason="length"),
            Choice(index=1, finish_reason="tool_calls", tool_calls=(call,)),
        )
    )
    events: list[StreamEvent] = [TextDelta(choice_index=0, text="A"), result]
    frames = sse_json(await collect(openai.render_stream(stream_of(events), REQUEST)))
    chunks = [ChatCompletionChunk.model_validate(d) for _, d in frames[:-1]]
    by_choice: dict[int, list[Any]] = {0: [], 1: []}
    for chunk in chunks:
        by_choice[chunk.choices[0].index].append(chunk.choices[0])
    assert by_choice[0][0].delta.role == "assistant"
    assert by_choice[1][0].delta.role == "assistant"
    assert by_choice[0][-1].finish_reason == "length"
    assert by_choice[1][-1].finish_reason == "tool_calls"
    (tool_delta,) = [c.delta.tool_calls for c in by_choice[1] if c.delta.tool_calls]
    assert tool_delta[0].id == "call_1"
    assert json.loads(tool_delta[0].function.arguments) == {"a": 1}


async def _sdk(raw: bytes | dict[str, Any], status: int = 200) -> AsyncOpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if isinstance(raw, bytes):
            return httpx2.Response(
                status, content=raw, headers={"content-type": "text/event-stream"}
            )
        return httpx2.Response(status, json=raw)

    return AsyncOpenAI(
        base_url="http://127.0.0.1:9/v1",
        api_key="k",
        max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)),
    )


async def test_official_client_reads_a_replayed_stream_with_usage() -> None:
    result = make_result("The quick brown fox jumps over the lazy dog. " * 4)
    raw = await collect(openai.render_stream(replay_events(result), REQUEST_WITH_USAGE))
    client = await _sdk(raw)
    stream = await client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        result.choices[0].text
    )
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == USAGE.total_tokens


async def test_official_client_raises_on_an_error_body() -> None:
    status, body = openai.render_error(RequestError("bad temperature", param="temperature"))
    client = await _sdk(body, status)
    with pytest.raises(BadRequestError) as caught:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught.value.param == "temperature"
    assert caught.value.message.endswith("bad temperature")


async def test_error_before_first_event_propagates_and_mid_stream_error_is_a_frame() -> None:
    async def failing_first() -> Any:
        raise OverloadedError("queue full")
        yield  # pragma: no cover

    with pytest.raises(OverloadedError):
        await collect(openai.render_stream(failing_first(), REQUEST))

    async def failing_later() -> Any:
        yield TextDelta(choice_index=0, text="partial")
        raise UpstreamError("upstream reset", upstream_status=502)

    frames = sse_json(await collect(openai.render_stream(failing_later(), REQUEST)))
    assert frames[-1][1]["error"]["message"] == "upstream reset"
    assert all(data != "[DONE]" for _, data in frames)


async def test_closing_the_stream_closes_the_engine_events() -> None:
    closed = []

    async def engine() -> Any:
        try:
            for _ in range(100):
                yield TextDelta(choice_index=0, text="x")
        finally:
            closed.append(True)

    stream = openai.render_stream(engine(), REQUEST)
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed == [True]


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (RequestError("x", param="p"), 400, "invalid_request_error", None),
        (AuthenticationError("x"), 401, "invalid_request_error", "invalid_api_key"),
        (ModelNotFoundError("x"), 404, "invalid_request_error", "model_not_found"),
        (HTTPStatusError("x", status=404), 404, "invalid_request_error", None),  # no route
        (PayloadTooLargeError("x"), 413, "invalid_request_error", None),
        (OverloadedError("x"), 429, "rate_limit_exceeded", "rate_limit_exceeded"),
        (UpstreamError("x", upstream_status=500), 502, "server_error", None),
    ],
)
def test_error_shapes(error: Any, status: int, kind: str, code: str | None) -> None:
    got_status, body = openai.render_error(error)
    assert got_status == status
    assert body == {"error": {"message": "x", "type": kind, "param": error.param, "code": code}}


def test_models_list() -> None:
    body = openai.render_models([ModelInfo(id="smollm2", created=5, aliases=("default",))])
    assert body == {
        "object": "list",
        "data": [
            {"id": "smollm2", "object": "model", "created": 5, "owned_by": "promptcache"},
            {"id": "default", "object": "model", "created": 5, "owned_by": "promptcache"},
        ],
    }
