"""An upstream's reasoning (Choice.reasoning, TextDelta.reasoning) rendered in every dialect:
OpenAI/GLM ``reasoning_content``, Anthropic thinking blocks, Bedrock reasoningContent."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from botocore.eventstream import EventStreamBuffer

from promptcache.dialects import anthropic, openai
from promptcache.dialects.bedrock.converse_render import render_converse, render_converse_stream
from promptcache.dialects.glm import render as glm_render
from promptcache.dialects.replay import replay_events
from promptcache.request import ChatRequest, Message, TextBlock, Transport
from promptcache.result import Choice, PromptUsage, StreamEvent, TextDelta
from tests.dialects.helpers import USAGE, collect, make_result, sse_json, stream_of

THOUGHT = "The user greets me; "
REQUEST = ChatRequest(model="m", messages=(Message(role="user", content=(TextBlock(text="Hi"),)),))
STREAMED = ChatRequest(
    model="m",
    messages=REQUEST.messages,
    transport=Transport(stream=True, include_usage=True),
)
RESULT = make_result("Hello!", choices=(Choice(text="Hello!", reasoning=THOUGHT + "greet back."),))
EVENTS: list[StreamEvent] = [
    PromptUsage(usage=USAGE),
    TextDelta(choice_index=0, text="", reasoning=THOUGHT),
    TextDelta(choice_index=0, text="", reasoning="greet back."),
    TextDelta(choice_index=0, text="Hello!"),
    RESULT,
]


def frames(render: Any, request: ChatRequest) -> list[tuple[str, Any]]:
    return sse_json(asyncio.run(collect(render(stream_of(EVENTS), request))))


def test_openai_and_glm_bodies_carry_reasoning_content() -> None:
    message = openai.render_response(RESULT, REQUEST)["choices"][0]["message"]
    assert (message["reasoning_content"], message["content"]) == (THOUGHT + "greet back.", "Hello!")
    glm = glm_render.render_response(RESULT, REQUEST)["choices"][0]["message"]
    assert glm["reasoning_content"] == THOUGHT + "greet back."
    plain = openai.render_response(make_result("Hi"), REQUEST)["choices"][0]["message"]
    assert "reasoning_content" not in plain


def test_openai_stream_sends_reasoning_deltas_before_the_content() -> None:
    deltas = [
        d["choices"][0]["delta"]
        for _, d in frames(openai.render_stream, STREAMED)
        if d != "[DONE]" and d["choices"]
    ]
    reasoning = [d["reasoning_content"] for d in deltas if "reasoning_content" in d]
    assert reasoning == [THOUGHT, "greet back."]
    kinds = [next(iter(k for k in d if k != "role"), None) for d in deltas]
    assert kinds.index("reasoning_content") < kinds.index("content", 1)
    assert "".join(d.get("content") or "" for d in deltas) == "Hello!"


def test_anthropic_body_and_stream_put_a_thinking_block_first() -> None:
    content = anthropic.render_response(RESULT, REQUEST)["content"]
    assert content == [
        {"type": "thinking", "thinking": THOUGHT + "greet back.", "signature": ""},
        {"type": "text", "text": "Hello!"},
    ]
    events = [d for _, d in frames(anthropic.render_stream, STREAMED)]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "thinking"),
        (1, "text"),
    ]
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    assert [d["thinking"] for d in deltas if d["type"] == "thinking_delta"] == [
        THOUGHT,
        "greet back.",
    ]
    assert {"type": "signature_delta", "signature": ""} in deltas
    stops = [e["index"] for e in events if e["type"] == "content_block_stop"]
    assert stops == [0, 1]


def test_a_replayed_hit_streams_the_reasoning_again() -> None:
    async def replay() -> list[StreamEvent]:
        return [e async for e in replay_events(RESULT)]

    events = asyncio.run(replay())
    reasoning = "".join(e.reasoning for e in events if isinstance(e, TextDelta))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert (reasoning, text) == (THOUGHT + "greet back.", "Hello!")


def test_bedrock_converse_carries_reasoning_content_blocks() -> None:
    body = render_converse(RESULT, started=0.0)
    assert body["output"]["message"]["content"][0] == {
        "reasoningContent": {"reasoningText": {"text": THOUGHT + "greet back."}}
    }

    async def stream() -> bytes:
        return await collect(render_converse_stream(stream_of(EVENTS), started=0.0))

    buffer = EventStreamBuffer()
    buffer.add_data(asyncio.run(stream()))
    events = [(m.headers[":event-type"], json.loads(m.payload)) for m in buffer]
    deltas = [p for kind, p in events if kind == "contentBlockDelta"]
    assert [d["contentBlockIndex"] for d in deltas] == [0, 0, 1]
    assert deltas[0]["delta"] == {"reasoningContent": {"text": THOUGHT}}
    assert deltas[2]["delta"] == {"text": "Hello!"}
    stops = [p["contentBlockIndex"] for kind, p in events if kind == "contentBlockStop"]
    assert stops == [0, 1]
