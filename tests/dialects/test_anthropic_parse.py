"""Anthropic request bodies (from the API docs) -> canonical requests, and every rejection."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.dialects import anthropic
from promptcache.errors import RequestError
from promptcache.request import CacheControl, ImageBlock, TextBlock, ToolResultBlock, ToolUseBlock

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather in a given location",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "Hello, world"}],
    }
    base.update(overrides)
    return base


def test_basic_example() -> None:
    request = anthropic.parse_request(body(), tenant="k1")
    assert request.model == "claude-sonnet-4-5"
    assert request.sampling.max_tokens == 1024
    assert request.messages[0].content == (TextBlock(text="Hello, world"),)
    assert request.system == ()
    assert request.tenant == "k1"


def test_prompt_caching_example_with_system_blocks() -> None:
    request = anthropic.parse_request(
        body(
            system=[
                {"type": "text", "text": "You are an AI assistant analysing literary works."},
                {
                    "type": "text",
                    "text": "<the entire contents of Pride and Prejudice>",
                    "cache_control": {"type": "ephemeral"},
                },
            ],
            messages=[{"role": "user", "content": "Analyze the major themes."}],
        )
    )
    assert request.system[0].cache_control is None
    assert request.system[1].cache_control == CacheControl(ttl="5m")
    (point,) = request.breakpoints()
    assert (point.section, point.block, point.ttl) == ("system", 1, "5m")


def test_tools_tool_use_tool_result_and_images() -> None:
    request = anthropic.parse_request(
        body(
            system="Be brief.",
            tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            tool_choice={"type": "any", "disable_parallel_tool_use": True},
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {
                                "type": "base64",
                                "media_type": "image/jpeg",
                                "data": "/9j/4AAQ",
                            },
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
                        {"type": "text", "text": "Weather where this photo was taken?"},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_01A",
                            "name": "get_weather",
                            "input": {"location": "San Francisco, CA"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_01A",
                            "content": "15 degrees",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
            ],
            temperature=0.5,
            top_p=0.9,
            top_k=5,
            stop_sequences=["\n\nHuman:"],
            stream=True,
            metadata={"user_id": "u-1"},
        )
    )
    assert request.system == (TextBlock(text="Be brief."),)
    assert request.tools[0].cache_control == CacheControl(ttl="1h")
    assert request.tool_choice == {"type": "any", "disable_parallel_tool_use": True}
    image, url_image, _ = request.messages[0].content
    assert image == ImageBlock(
        source={"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}
    )
    assert url_image == ImageBlock(source={"type": "url", "url": "https://x/y.png"})
    assert request.messages[1].content[1] == ToolUseBlock(
        id="toolu_01A", name="get_weather", input={"location": "San Francisco, CA"}
    )
    assert request.messages[2].content == (
        ToolResultBlock(
            tool_use_id="toolu_01A",
            content=(TextBlock(text="15 degrees"),),
            cache_control=CacheControl(ttl="5m"),
        ),
    )
    assert (request.sampling.temperature, request.sampling.top_p) == (0.5, 0.9)
    assert request.sampling.stop == ("\n\nHuman:",)
    assert request.transport.stream
    assert request.transport.user == "u-1"
    assert [(b.section, b.ttl) for b in request.breakpoints()] == [
        ("tools", "1h"),
        ("messages", "5m"),
    ]


def test_tool_result_with_blocks_and_error_flag() -> None:
    request = anthropic.parse_request(
        body(
            tools=[WEATHER_TOOL],
            tool_choice={"type": "tool", "name": "get_weather"},
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t1",
                            "is_error": True,
                            "content": [{"type": "text", "text": "missing location"}],
                        }
                    ],
                },
            ],
        )
    )
    assert request.tool_choice == {"type": "tool", "name": "get_weather"}
    result = request.messages[2].content[0]
    assert isinstance(result, ToolResultBlock)
    assert result.is_error
    assert result.content == (TextBlock(text="missing location"),)


def _marked(n: int, ttl: str = "5m") -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": f"p{i}", "cache_control": {"type": "ephemeral", "ttl": ttl}}
        for i in range(n)
    ]


INVALID: list[tuple[dict[str, Any], str | None, str]] = [
    (
        {k: v for k, v in body().items() if k != "max_tokens"},
        "max_tokens",
        "max_tokens: Field required",
    ),
    ({k: v for k, v in body().items() if k != "model"}, "model", "Field required"),
    ({k: v for k, v in body().items() if k != "messages"}, "messages", "Field required"),
    (body(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    (body(max_tokens="10"), "max_tokens", "Input should be a valid integer"),
    (body(temperature=1.5), "temperature", "less than or equal to 1"),
    (body(top_p=-0.1), "top_p", "greater than or equal to 0"),
    (body(top_k=-1), "top_k", "greater than or equal to 0"),
    (body(messages={}), "messages", "Input should be a valid list"),
    (
        body(messages=[{"role": "system", "content": "x"}]),
        "messages.0.role",
        "top-level `system` parameter",
    ),
    (body(messages=[{"role": "bot", "content": "x"}]), "messages.0.role", "'user' or 'assistant'"),
    (body(messages=[{"role": "user"}]), "messages.0.content", "Field required"),
    (body(messages=[{"role": "user", "content": 1}]), "messages.0.content", "valid list"),
    (
        body(messages=[{"role": "user", "content": [{"type": "text", "text": ""}]}]),
        "messages.0.content.0",
        "must be non-empty",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "audio"}]}]),
        "messages.0.content.0.type",
        "Input should be",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "document", "source": {}}]}]),
        "messages.0.content.0.source.type",
        "Field required",
    ),
    (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/bmp", "data": "x"},
                        }
                    ],
                }
            ]
        ),
        "messages.0.content.0.source.media_type",
        "'image/jpeg'",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x"}]}]),
        "messages.0.content.0",
        "unexpected `tool_use_id`",
    ),
    (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}],
                }
            ]
        ),
        "messages.0.content.0",
        "only appear in assistant turns",
    ),
    (
        body(messages=[{"role": "user", "content": "x", "name": "n"}]),
        "messages.0.name",
        "Extra inputs",
    ),
    (body(stop_sequences="END"), "stop_sequences", "valid list"),
    (body(stop_sequences=[1]), "stop_sequences.0", "valid string"),
    (body(system=5), "system", "valid list"),
    (body(system=[{"type": "image"}]), "system.0.type", "Input should be 'text'"),
    (body(n=2), "n", "Extra inputs are not permitted"),
    (body(tools=[{"name": "x"}]), "tools.0.input_schema", "Field required"),
    (
        body(tools=[{"name": "x", "input_schema": {"type": "array"}}]),
        "tools.0.input_schema.type",
        "'object'",
    ),
    (
        body(tools=[{"name": "bad name", "input_schema": {"type": "object"}}]),
        "tools.0.name",
        "pattern",
    ),
    (body(tools=[WEATHER_TOOL, WEATHER_TOOL]), "tools", "unique"),
    (
        body(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        "tools.0.type",
        "server tools",
    ),
    (
        body(tool_choice={"type": "sometimes"}),
        "tool_choice.type",
        "'auto', 'any', 'tool' or 'none'",
    ),
    (
        body(tools=[WEATHER_TOOL], tool_choice={"type": "tool"}),
        "tool_choice.name",
        "Field required",
    ),
    (body(tool_choice={"type": "tool", "name": "nope"}), "tool_choice.name", "not found"),
    (body(thinking={"type": "enabled"}), "thinking.budget_tokens", "Field required"),
    (body(output_config={"effort": "high"}), "output_config.effort", "cannot apply"),
    (body(output_config={"format": {"type": "yaml"}}), "output_config.format.type", "json_schema"),
    (
        body(output_config={"format": {"type": "json_schema"}}),
        "output_config.format.schema",
        "Field required",
    ),
    (body(output_config={"style": 1}), "output_config.style", "Extra inputs"),
    (body(metadata={"user_id": "u", "other": 1}), "metadata.other", "Extra inputs"),
    (body(system=_marked(5)), "cache_control", "A maximum of 4 blocks with cache_control"),
    (body(system=_marked(1) + _marked(1, "1h")), "cache_control", "must not come after"),
    (
        body(system=[{"type": "text", "text": "x", "cache_control": {"type": "persistent"}}]),
        "system.0.cache_control.type",
        "Input should be 'ephemeral'",
    ),
    (
        body(
            system=[
                {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1d"}}
            ]
        ),
        "system.0.cache_control.ttl",
        "Input should be '5m' or '1h'",
    ),
]


def test_output_format_is_a_strict_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    request = anthropic.parse_request(
        body(output_config={"format": {"type": "json_schema", "schema": schema}})
    )
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"schema": schema, "strict": True},
    }
    assert anthropic.parse_request(body(output_config={})).response_format is None


@pytest.mark.parametrize(("payload", "param", "fragment"), INVALID)
def test_invalid_requests_get_a_400_in_anthropic_shape(
    payload: Any, param: str | None, fragment: str
) -> None:
    with pytest.raises(RequestError) as caught:
        anthropic.parse_request(payload)
    assert caught.value.param == param
    status, error_body = anthropic.render_error(caught.value)
    assert status == 400
    assert error_body["type"] == "error"
    assert error_body["error"]["type"] == "invalid_request_error"
    assert fragment in error_body["error"]["message"]


def test_one_hour_before_five_minutes_across_sections_is_valid() -> None:
    request = anthropic.parse_request(
        body(
            tools=[{**WEATHER_TOOL, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            system=_marked(2),
        )
    )
    assert [b.ttl for b in request.breakpoints()] == ["1h", "5m", "5m"]
