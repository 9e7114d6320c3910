"""OpenAI request bodies (from the API reference) -> canonical requests, and every rejection."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.dialects import openai
from promptcache.errors import RequestError
from promptcache.request import (
    CacheControl,
    ImageBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
    base.update(overrides)
    return base


def test_default_example_hoists_developer_message_into_system() -> None:
    request = openai.parse_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "developer", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Hello!"},
            ],
        },
        tenant="t1",
        namespace="ns",
    )
    assert request.model == "gpt-4o"
    assert request.system == (TextBlock(text="You are a helpful assistant."),)
    assert [m.role for m in request.messages] == ["user"]
    assert request.messages[0].text() == "Hello!"
    assert (request.tenant, request.namespace) == ("t1", "ns")
    assert request.sampling.n == 1
    assert not request.transport.stream


def test_image_input_example() -> None:
    url = "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg"
    request = openai.parse_request(
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What's in this image?"},
                        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                    ],
                }
            ],
            max_tokens=300,
        )
    )
    text, image, inline = request.messages[0].content
    assert text == TextBlock(text="What's in this image?")
    assert image == ImageBlock(source={"type": "url", "url": url, "detail": "high"})
    assert inline == ImageBlock(
        source={"type": "base64", "media_type": "image/png", "data": "iVBO"}
    )
    assert request.sampling.max_tokens == 300


def test_function_calling_conversation() -> None:
    request = openai.parse_request(
        body(
            messages=[
                {"role": "system", "content": "Use tools."},
                {"role": "user", "content": "What's the weather like in Boston and Paris?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {
                                "name": "get_current_weather",
                                "arguments": '{"location": "Boston, MA"}',
                            },
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {
                                "name": "get_current_weather",
                                "arguments": '{"location": "Paris"}',
                            },
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "18"}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            tools=[WEATHER_TOOL],
            tool_choice="auto",
            parallel_tool_calls=False,
        )
    )
    assert request.tools[0].name == "get_current_weather"
    assert request.tools[0].input_schema["required"] == ["location"]
    assert request.tool_choice == {"type": "auto", "disable_parallel_tool_use": True}
    _user, assistant, results, thanks = request.messages
    assert assistant.role == "assistant"
    assert assistant.content == (
        ToolUseBlock(id="call_1", name="get_current_weather", input={"location": "Boston, MA"}),
        ToolUseBlock(id="call_2", name="get_current_weather", input={"location": "Paris"}),
    )
    # Consecutive tool messages fold into one user message of tool results.
    assert results.role == "user"
    assert results.content == (
        ToolResultBlock(tool_use_id="call_1", content=(TextBlock(text="22 degrees"),)),
        ToolResultBlock(tool_use_id="call_2", content=(TextBlock(text="18"),)),
    )
    assert thanks.text() == "Thanks"


@pytest.mark.parametrize(
    ("choice", "canonical"),
    [
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_current_weather"}},
            {"type": "tool", "name": "get_current_weather"},
        ),
    ],
)
def test_tool_choice_is_canonicalised(choice: Any, canonical: dict[str, Any]) -> None:
    request = openai.parse_request(body(tools=[WEATHER_TOOL], tool_choice=choice))
    assert request.tool_choice == canonical


def test_stream_options_and_transport_fields() -> None:
    request = openai.parse_request(
        body(
            stream=True,
            stream_options={"include_usage": True},
            user="user-1234",
            metadata={"run": "7"},
            temperature=0.2,
            top_p=0.9,
            seed=42,
            n=2,
            stop=["\n\n", "END"],
            max_completion_tokens=64,
        ),
        request_id="req-9",
    )
    t = request.transport
    assert (t.stream, t.include_usage, t.user, t.request_id) == (True, True, "user-1234", "req-9")
    assert t.metadata == {"run": "7"}
    s = request.sampling
    assert (s.temperature, s.top_p, s.seed, s.n, s.max_tokens) == (0.2, 0.9, 42, 2, 64)
    assert s.stop == ("\n\n", "END")
    assert openai.parse_request(body(stop="END")).sampling.stop == ("END",)


def test_response_format() -> None:
    schema = {
        "type": "json_schema",
        "json_schema": {"name": "math", "schema": {"type": "object"}, "strict": True},
    }
    assert openai.parse_request(body(response_format=schema)).response_format == schema
    assert openai.parse_request(body(response_format={"type": "text"})).response_format is None
    json_mode = openai.parse_request(body(response_format={"type": "json_object"}))
    assert json_mode.response_format == {"type": "json_object"}


def test_cache_control_on_parts_tools_and_messages() -> None:
    one_hour = {"type": "ephemeral", "ttl": "1h"}
    request = openai.parse_request(
        body(
            tools=[{**WEATHER_TOOL, "cache_control": one_hour}],
            messages=[
                {
                    "role": "system",
                    "content": [{"type": "text", "text": "long manual", "cache_control": one_hour}],
                },
                {"role": "user", "content": "question", "cache_control": {"type": "ephemeral"}},
            ],
        )
    )
    assert request.tools[0].cache_control == CacheControl(ttl="1h")
    assert request.system[0].cache_control == CacheControl(ttl="1h")
    assert request.messages[0].content[0].cache_control == CacheControl(ttl="5m")
    assert [(b.section, b.ttl) for b in request.breakpoints()] == [
        ("tools", "1h"),
        ("system", "1h"),
        ("messages", "5m"),
    ]


def _marked(n: int, ttl: str = "5m") -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": f"part {i}", "cache_control": {"type": "ephemeral", "ttl": ttl}}
        for i in range(n)
    ]


INVALID: list[tuple[dict[str, Any], str | None, str]] = [
    ({"messages": [{"role": "user", "content": "x"}]}, "model", "Missing required parameter"),
    ({"model": "m"}, "messages", "Missing required parameter: 'messages'."),
    (body(model=3), "model", "expected a string, but got an integer"),
    (body(messages=[]), "messages", "empty array"),
    (body(messages="hi"), "messages", "expected an array"),
    (body(messages=[{"role": "robot", "content": "x"}]), "messages.[0].role", "Invalid value"),
    (body(messages=[{"content": "x"}]), "messages.[0].role", "Missing required"),
    (body(messages=[{"role": "user"}]), "messages.[0].content", "Missing required"),
    (body(messages=[{"role": "user", "content": 5}]), "messages.[0].content", "Invalid type"),
    (body(messages=[{"role": "user", "content": []}]), "messages.[0].content", "empty array"),
    (
        body(messages=[{"role": "user", "content": [{"type": "video", "url": "x"}]}]),
        "messages.[0].content.[0].type",
        "Invalid value: 'video'",
    ),
    (
        body(messages=[{"role": "user", "content": [{"type": "input_audio"}]}]),
        "messages.[0].content.[0].type",
        "not supported",
    ),
    (
        body(messages=[{"role": "tool", "tool_call_id": "nope", "content": "x"}]),
        "messages.[0].tool_call_id",
        "must be a response to a preceding message with 'tool_calls'",
    ),
    (
        body(messages=[{"role": "function", "name": "f", "content": "x"}]),
        "messages.[0].role",
        "use 'tool'",
    ),
    (
        body(
            messages=[
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                }
            ]
        ),
        "messages.[0].tool_calls.[0].function.arguments",
        "JSON object",
    ),
    (body(temperature=2.5), "temperature", "decimal above maximum value"),
    (body(temperature=-1), "temperature", "decimal below minimum value"),
    (body(temperature="hot"), "temperature", "expected a decimal, but got a string"),
    (body(top_p=1.5), "top_p", "Expected a value <= 1"),
    (body(max_tokens=0), "max_tokens", "integer below minimum value"),
    (body(max_tokens=1.5), "max_tokens", "expected an integer"),
    (body(max_completion_tokens=0), "max_completion_tokens", "Expected a value >= 1"),
    (body(max_tokens=5, max_completion_tokens=6), "max_tokens", "cannot both be set"),
    (body(n=0), "n", "integer below minimum value"),
    (body(n=True), "n", "expected an integer, but got a boolean"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop", "maximum length 4"),
    (body(stop=[1]), "stop.[0]", "expected a string"),
    (body(stream_options={"include_usage": True}), "stream_options", "only allowed when"),
    (body(frobnicate=True), "frobnicate", "Unrecognized request argument supplied: frobnicate"),
    (body(logprobs=True), "logprobs", "not supported"),
    (body(functions=[]), "functions", "use 'tools'"),
    (body(presence_penalty=3), "presence_penalty", "above maximum"),
    (body(tools=[{"type": "function"}]), "tools.[0].function", "Missing required"),
    (body(tools=[{"type": "custom", "function": {}}]), "tools.[0].type", "Invalid value"),
    (
        body(tools=[{"type": "function", "function": {"name": "bad name"}}]),
        "tools.[0].function.name",
        "does not match pattern",
    ),
    (body(tools=[WEATHER_TOOL, WEATHER_TOOL]), "tools.[1].function.name", "unique"),
    (body(tool_choice="auto"), "tool_choice", "only allowed when 'tools' are specified"),
    (body(tools=[WEATHER_TOOL], tool_choice="sometimes"), "tool_choice", "Invalid value"),
    (
        body(tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "x"}}),
        "tool_choice",
        "no tool named 'x'",
    ),
    (body(response_format={"type": "yaml"}), "response_format.type", "Invalid value"),
    (body(response_format={"type": "json_schema"}), "response_format.json_schema", "Missing"),
    (body(metadata={"k": 1}), "metadata.k", "expected a string"),
    (
        body(messages=[{"role": "user", "content": _marked(5)}]),
        "cache_control",
        "A maximum of 4 blocks with cache_control",
    ),
    (
        body(messages=[{"role": "user", "content": _marked(1) + _marked(1, "1h")}]),
        "cache_control",
        "must not come after",
    ),
    (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "x", "cache_control": {"type": "x"}}],
                }
            ]
        ),
        "messages.[0].content.[0].cache_control.type",
        "Invalid value: 'x'",
    ),
    (
        body(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "x",
                            "cache_control": {"type": "ephemeral", "ttl": "2h"},
                        }
                    ],
                }
            ]
        ),
        "messages.[0].content.[0].cache_control.ttl",
        "Supported values are: '5m', '1h'",
    ),
]


@pytest.mark.parametrize(("payload", "param", "fragment"), INVALID)
def test_invalid_requests_get_a_400_in_openai_shape(
    payload: Any, param: str | None, fragment: str
) -> None:
    with pytest.raises(RequestError) as caught:
        openai.parse_request(payload)
    status, error_body = openai.render_error(caught.value)
    assert status == 400
    assert set(error_body) == {"error"}
    error = error_body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert fragment in error["message"]


def test_body_must_be_an_object() -> None:
    with pytest.raises(RequestError, match="expected an object"):
        openai.parse_request(["not", "an", "object"])
