"""Tool calls in the output: withheld from the stream, parsed; when to look for them."""

from __future__ import annotations

from typing import Any

from promptcache.engine.local.tool_calls import (
    ToolCallCapture,
    parse_tool_calls,
    tool_calls_allowed,
)
from promptcache.request import ChatRequest, Message, TextBlock, Tool


def user(*blocks: TextBlock) -> Message:
    return Message(role="user", content=blocks)


def text(value: str) -> TextBlock:
    return TextBlock(text=value)


def feed_all(capture: ToolCallCapture, pieces: list[str]) -> tuple[str, str, tuple[Any, ...]]:
    streamed = "".join(capture.feed(p) for p in pieces)
    tail, final, calls = capture.finish()
    return streamed + tail, final, calls


def test_tool_calls_in_the_output_are_parsed_not_streamed() -> None:
    pieces = ["Let me check.", "\n<tool", '_call>{"name": "weather", ', '"arguments": {"city": ']
    pieces += ['"Paris"}}</tool_call>']
    streamed, final, calls = feed_all(ToolCallCapture(), pieces)
    assert streamed == final == "Let me check.\n"
    (call,) = calls
    assert call.name == "weather"
    assert dict(call.input) == {"city": "Paris"}
    assert call.id.startswith("call_")


def test_unparseable_tool_call_is_released_as_text() -> None:
    pieces = ["a <tool_call>not json", " at all"]
    streamed, final, calls = feed_all(ToolCallCapture(), pieces)
    assert calls == ()
    assert streamed == final == "a <tool_call>not json at all"


def test_text_resembling_the_tag_is_released() -> None:
    streamed, final, calls = feed_all(ToolCallCapture(), ["x <tool", "box> y"])
    assert streamed == final == "x <toolbox> y"
    assert calls == ()


def test_parse_tool_calls_formats() -> None:
    text = (
        '<tool_call>{"id": "c1", "name": "a", "arguments": {"x": 1}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": "{\\"y\\": 2}"}'
    )
    first, second = parse_tool_calls(text)
    assert (first.id, first.name, dict(first.input)) == ("c1", "a", {"x": 1})
    assert (second.name, dict(second.input)) == ("b", {"y": 2})
    assert parse_tool_calls('<tool_call>{"arguments": {}}</tool_call>') == ()
    assert parse_tool_calls("<tool_call>[1, 2]</tool_call>") == ()


def test_tool_calls_allowed() -> None:
    tool = Tool(name="t")
    message = (user(text("hi")),)
    assert not tool_calls_allowed(ChatRequest(model="m", messages=message))
    assert tool_calls_allowed(ChatRequest(model="m", messages=message, tools=(tool,)))
    for choice in ("none", {"type": "none"}):
        request = ChatRequest(model="m", messages=message, tools=(tool,), tool_choice=choice)
        assert not tool_calls_allowed(request)
