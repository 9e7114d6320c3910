"""Shared test helpers: canned results, event streams, and an SSE byte parser."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from promptcache.request import ToolUseBlock
from promptcache.result import Choice, Result, StreamEvent, Usage

USAGE = Usage(
    input_tokens=12,
    cache_read_input_tokens=1024,
    cache_creation_5m_input_tokens=48,
    cache_creation_1h_input_tokens=16,
    output_tokens=7,
)


def make_result(
    text: str = "Hello there, how can I help?",
    *,
    finish_reason: Any = "stop",
    stop_sequence: str | None = None,
    tool_calls: tuple[ToolUseBlock, ...] = (),
    usage: Usage = USAGE,
    choices: tuple[Choice, ...] | None = None,
) -> Result:
    return Result(
        id="chatcmpl-abc123",
        model="smollm2",
        created=1_700_000_000,
        choices=choices
        or (
            Choice(
                text=text,
                finish_reason=finish_reason,
                stop_sequence=stop_sequence,
                tool_calls=tool_calls,
            ),
        ),
        usage=usage,
    )


async def stream_of(events: Iterable[StreamEvent]) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


def parse_sse(raw: bytes) -> list[tuple[str, str]]:
    """``(event, data)`` per frame; every frame must end in a blank line."""
    text = raw.decode()
    assert text.endswith("\n\n")
    frames = []
    for block in text.split("\n\n")[:-1]:
        event, data = "", []
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "event":
                event = value
            else:
                assert name == "data", line
                data.append(value)
        frames.append((event, "\n".join(data)))
    return frames


def sse_json(raw: bytes) -> list[tuple[str, Any]]:
    return [(e, d if d == "[DONE]" else json.loads(d)) for e, d in parse_sse(raw)]
