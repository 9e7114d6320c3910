"""What ``prompt_cache_retention: "24h"`` pinned, as the OpenAI dialect reports it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from promptcache.dialects.openai.render import render_response, render_stream
from promptcache.request import ChatRequest, Message, TextBlock, Transport
from promptcache.result import Choice, Result, RetentionReport, StreamEvent, Usage

RESULT = Result(
    id="pc-1",
    model="m",
    created=1,
    choices=(Choice(text="hi"),),
    usage=Usage(input_tokens=2048, output_tokens=1),
    retention=RetentionReport(status="refused", tokens=2048),
)
REPORT = {"ttl": "24h", "status": "refused", "tokens": 2048}


def request(*, stream: bool = False, include_usage: bool = False) -> ChatRequest:
    return ChatRequest(
        model="m",
        messages=(Message(role="user", content=(TextBlock(text="x"),)),),
        transport=Transport(
            stream=stream, include_usage=include_usage, prompt_cache_retention="24h"
        ),
    )


async def events() -> AsyncIterator[StreamEvent]:
    yield RESULT


async def chunks(include_usage: bool) -> list[dict[str, object]]:
    frames = [
        f async for f in render_stream(events(), request(stream=True, include_usage=include_usage))
    ]
    data = [f.decode().removeprefix("data: ").strip() for f in frames]
    return [json.loads(d) for d in data if d != "[DONE]"]


def test_the_body_reports_it() -> None:
    assert render_response(RESULT, request())["promptcache_retention"] == REPORT
    plain = Result(id="pc-2", model="m", created=1, choices=(Choice(),), usage=Usage())
    assert "promptcache_retention" not in render_response(plain, request())


@pytest.mark.parametrize("include_usage", [False, True])
async def test_the_last_chunk_reports_it(include_usage: bool) -> None:
    got = await chunks(include_usage)
    assert got[-1]["promptcache_retention"] == REPORT
    assert all("promptcache_retention" not in c for c in got[:-1])
    assert ("usage" in got[-1]) is include_usage


def test_a_cached_result_does_not_carry_it() -> None:
    assert Result.from_json(RESULT.to_json()).retention is None
