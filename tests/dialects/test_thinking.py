"""The reasoning switch: each dialect's ``thinking`` becomes one canonical
:class:`Thinking`, in the cache key only when sent, and each upstream provider gets it
in its own shape or refuses it by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from promptcache.dialects.anthropic import render as anthropic_render
from promptcache.dialects.anthropic.parse import parse_request as parse_anthropic
from promptcache.dialects.anthropic.wire import events_from_sse, result_from_wire
from promptcache.dialects.bedrock.converse_parse import parse_converse
from promptcache.dialects.bedrock.converse_render import render_converse, render_converse_stream
from promptcache.dialects.openai import render as openai_render
from promptcache.dialects.openai import wire_usage
from promptcache.dialects.openai.parse import parse_request as parse_openai
from promptcache.dialects.replay import replay_events
from promptcache.engine.upstream.profiles import OPENAI_COMPATIBLE, PROFILES, ProviderProfile
from promptcache.engine.upstream.shaping import wire_body
from promptcache.errors import RequestError
from promptcache.keys import canonical_request_dict, response_key
from promptcache.request import (
    ChatRequest,
    Message,
    ReasoningBlock,
    SamplingParams,
    TextBlock,
    Thinking,
    Transport,
)
from promptcache.result import Result, Usage
from tests.dialects.helpers import collect, sse_json

USER: Any = [{"role": "user", "content": "hi"}]


def anthropic(**extra: Any) -> ChatRequest:
    return parse_anthropic({"model": "claude", "max_tokens": 4096, "messages": USER, **extra})


def openai(**extra: Any) -> ChatRequest:
    return parse_openai({"model": "glm-4.6", "messages": USER, **extra})


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        (
            {"type": "enabled", "budget_tokens": 2048},
            Thinking(mode="enabled", budget_tokens=2048),
        ),
        (
            {"type": "enabled", "budget_tokens": 1024, "display": "omitted"},
            Thinking(mode="enabled", budget_tokens=1024, display="omitted"),
        ),
        ({"type": "adaptive"}, Thinking(mode="adaptive")),
        (
            {"type": "adaptive", "display": "summarized"},
            Thinking(mode="adaptive", display="summarized"),
        ),
        ({"type": "disabled"}, Thinking(mode="disabled")),
        ({"type": "between_tools"}, Thinking(mode="between_tools")),
    ],
)
def test_anthropic_thinking_is_the_canonical_switch(thinking: Any, expected: Thinking) -> None:
    assert anthropic(thinking=thinking).sampling.thinking == expected


@pytest.mark.parametrize(
    ("thinking", "param", "words"),
    [
        ({"type": "enabled"}, "thinking.budget_tokens", "Field required"),
        ({"type": "enabled", "budget_tokens": "many"}, "thinking.budget_tokens", "integer"),
        ({"type": "disabled", "budget_tokens": 2048}, "thinking.budget_tokens", "Extra inputs"),
        ({"type": "adaptive", "budget_tokens": 2048}, "thinking.budget_tokens", "Extra inputs"),
        (
            {"type": "enabled", "budget_tokens": 2048, "display": "full"},
            "thinking.display",
            "'summarized'",
        ),
        ({"type": "sometimes"}, "thinking.type", "'adaptive' or 'between_tools'"),
        ({}, "thinking.type", "Field required"),
    ],
)
def test_anthropic_thinking_errors_name_the_field(thinking: Any, param: str, words: str) -> None:
    with pytest.raises(RequestError) as caught:
        anthropic(thinking=thinking)
    assert caught.value.param == param
    assert words in str(caught.value)


def test_glm_thinking_on_the_openai_paths() -> None:
    assert openai(thinking={"type": "enabled"}).sampling.thinking == Thinking(mode="enabled")
    disabled = openai(thinking={"type": "disabled", "clear_thinking": True})
    assert disabled.sampling.thinking == Thinking(mode="disabled")
    assert openai(thinking=None).sampling.thinking is None  # zai-sdk's "thinking": null
    with pytest.raises(RequestError) as caught:
        openai(thinking={"type": "enabled", "clear_thinking": False})
    assert caught.value.param is not None and "clear_thinking" in caught.value.param
    assert "preserved thinking" in str(caught.value)
    with pytest.raises(RequestError) as adaptive:
        openai(thinking={"type": "adaptive"})  # GLM has no adaptive mode
    assert adaptive.value.param is not None and "thinking" in adaptive.value.param


def test_bedrock_converse_takes_claudes_thinking_in_additional_fields() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"text": "hi"}]}],
        "additionalModelRequestFields": {"thinking": {"type": "enabled", "budget_tokens": 1500}},
    }
    request = parse_converse(body, model="anthropic.claude", stream=False)
    assert request.sampling.thinking == Thinking(mode="enabled", budget_tokens=1500)
    body["additionalModelRequestFields"] = {"thinking": {"type": "enabled"}}
    with pytest.raises(RequestError) as caught:
        parse_converse(body, model="anthropic.claude", stream=False)
    assert "additionalModelRequestFields.thinking.budget_tokens" in str(caught.value)


def test_thinking_is_in_the_key_only_when_sent() -> None:
    plain = anthropic()
    assert "thinking" not in canonical_request_dict(plain)["sampling"]  # pc1 keys unchanged
    keys = {
        response_key(plain),
        response_key(anthropic(thinking={"type": "disabled"})),
        response_key(anthropic(thinking={"type": "enabled", "budget_tokens": 2048})),
        response_key(anthropic(thinking={"type": "enabled", "budget_tokens": 4000})),
        response_key(anthropic(thinking={"type": "adaptive"})),
    }
    assert len(keys) == 5


# -- the outgoing shape, per provider -------------------------------------------------


def request_with(thinking: Thinking) -> ChatRequest:
    message = Message(role="user", content=(TextBlock(text="hi"),))
    sampling = SamplingParams(max_tokens=4096, thinking=thinking)
    return ChatRequest(model="m", messages=(message,), sampling=sampling)


def body_for(profile: ProviderProfile, thinking: Thinking) -> dict[str, Any]:
    return wire_body(profile, request_with(thinking), stream=False, default_max_tokens=1024)


ENABLED = Thinking(mode="enabled", budget_tokens=2048)


@pytest.mark.parametrize(
    ("thinking", "wire"),
    [
        (ENABLED, {"type": "enabled", "budget_tokens": 2048}),
        (Thinking(mode="adaptive", display="omitted"), {"type": "adaptive", "display": "omitted"}),
        (Thinking(mode="disabled"), {"type": "disabled"}),
    ],
)
def test_anthropic_upstream_gets_thinking_as_sent(thinking: Thinking, wire: Any) -> None:
    assert body_for(PROFILES["anthropic"], thinking)["thinking"] == wire


@pytest.mark.parametrize(
    ("provider", "thinking", "fields"),
    [
        ("glm", Thinking(mode="enabled"), {"thinking": {"type": "enabled"}}),
        ("glm", Thinking(mode="disabled"), {"thinking": {"type": "disabled"}}),
        ("openrouter", ENABLED, {"reasoning": {"max_tokens": 2048}}),
        ("openrouter", Thinking(mode="enabled"), {"reasoning": {"enabled": True}}),
        ("openrouter", Thinking(mode="disabled"), {"reasoning": {"enabled": False}}),
    ],
)
def test_openai_shaped_providers_get_their_own_switch(
    provider: str, thinking: Thinking, fields: dict[str, Any]
) -> None:
    body = body_for(PROFILES[provider], thinking)
    assert {k: body[k] for k in fields} == fields
    assert "thinking" not in body or provider == "glm"


@pytest.mark.parametrize(
    ("profile", "thinking", "words"),
    [
        (PROFILES["glm"], ENABLED, "budget_tokens"),
        (PROFILES["glm"], Thinking(mode="adaptive"), "adaptive"),
        (PROFILES["glm"], Thinking(mode="between_tools"), "between_tools"),
        (PROFILES["openrouter"], Thinking(mode="adaptive"), "adaptive"),
        (PROFILES["openrouter"], replace(ENABLED, display="omitted"), "display"),
        (PROFILES["openai"], ENABLED, "reasoning_effort"),
        (PROFILES["deepseek"], Thinking(mode="enabled"), "deepseek"),
        (PROFILES["vllm"], Thinking(mode="disabled"), "vllm"),
        (PROFILES["sglang"], Thinking(mode="enabled"), "sglang"),
        (PROFILES["llamacpp"], Thinking(mode="enabled"), "llamacpp"),
        (OPENAI_COMPATIBLE, Thinking(mode="disabled"), "openai-compatible"),
    ],
)
def test_providers_without_the_switch_refuse_it_by_name(
    profile: ProviderProfile, thinking: Thinking, words: str
) -> None:
    with pytest.raises(RequestError) as caught:
        body_for(profile, thinking)
    assert caught.value.param == "thinking"
    assert profile.name in str(caught.value) and words in str(caught.value)


# -- Anthropic's signed and redacted thinking, kept whole ------------------------------

WIRE_CONTENT: Any = [
    {"type": "thinking", "thinking": "Let me see.", "signature": "sig-1"},
    {"type": "redacted_thinking", "data": "ENCRYPTED"},
    {"type": "text", "text": "Paris."},
]
WIRE_MESSAGE: Any = {
    "id": "msg_1",
    "model": "claude",
    "content": WIRE_CONTENT,
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 5, "output_tokens": 3},
}


def test_signed_and_redacted_blocks_reach_an_anthropic_client_whole_also_from_the_cache() -> None:
    result = result_from_wire(WIRE_MESSAGE)
    choice = result.choices[0]
    assert choice.reasoning == "Let me see."  # what the other dialects render
    assert choice.reasoning_blocks == (
        ReasoningBlock(thinking="Let me see.", signature="sig-1"),
        ReasoningBlock(redacted_data="ENCRYPTED"),
    )
    cached = Result.from_json(result.to_json())
    assert cached == result
    assert anthropic_render.render_response(cached, anthropic())["content"] == WIRE_CONTENT


def test_a_streamed_signature_and_redacted_block_are_passed_on() -> None:
    async def pairs() -> AsyncIterator[tuple[str, str]]:
        start = {**WIRE_MESSAGE, "content": [], "stop_reason": None}
        events: list[Any] = [
            {"type": "message_start", "message": start},
            {"type": "content_block_start", "index": 0, "content_block": dict(EMPTY_THINKING)},
            {"type": "content_block_delta", "index": 0, "delta": THINKING_DELTA},
            {"type": "content_block_delta", "index": 0, "delta": SIGNATURE_DELTA},
            {"type": "content_block_stop", "index": 0},
            {"type": "content_block_start", "index": 1, "content_block": WIRE_CONTENT[1]},
            {"type": "content_block_stop", "index": 1},
            {"type": "content_block_start", "index": 2, "content_block": EMPTY_TEXT},
            {"type": "content_block_delta", "index": 2, "delta": TEXT_DELTA},
            {"type": "content_block_stop", "index": 2},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}},
            {"type": "message_stop"},
        ]
        for event in events:
            yield event["type"], json.dumps(event)

    async def render() -> bytes:
        request = replace(anthropic(), transport=Transport(stream=True))
        return await collect(anthropic_render.render_stream(events_from_sse(pairs()), request))

    frames = [d for _, d in sse_json(asyncio.run(render()))]
    starts = [f["content_block"] for f in frames if f["type"] == "content_block_start"]
    assert [s["type"] for s in starts] == ["thinking", "redacted_thinking", "text"]
    assert starts[1]["data"] == "ENCRYPTED"
    deltas = [f["delta"] for f in frames if f["type"] == "content_block_delta"]
    assert SIGNATURE_DELTA in deltas and THINKING_DELTA in deltas
    assert [f["index"] for f in frames if f["type"] == "content_block_stop"] == [0, 1, 2]


EMPTY_THINKING = {"type": "thinking", "thinking": "", "signature": ""}
EMPTY_TEXT = {"type": "text", "text": ""}
THINKING_DELTA = {"type": "thinking_delta", "thinking": "Let me see."}
SIGNATURE_DELTA = {"type": "signature_delta", "signature": "sig-1"}
TEXT_DELTA = {"type": "text_delta", "text": "Paris."}


def test_thinking_sent_back_goes_to_anthropic_only_and_unsigned_is_dropped() -> None:
    turn: Any = [
        *USER,
        {
            "role": "assistant",
            "content": [
                WIRE_CONTENT[0],
                WIRE_CONTENT[1],
                {"type": "thinking", "thinking": "relayed", "signature": ""},  # not Anthropic's
                {"type": "text", "text": "Paris."},
            ],
        },
        {"role": "user", "content": "Why?"},
    ]
    request = anthropic(messages=turn)
    assert request.messages[1].reasoning == (
        ReasoningBlock(thinking="Let me see.", signature="sig-1"),
        ReasoningBlock(redacted_data="ENCRYPTED"),
    )
    sent = body_for_request(PROFILES["anthropic"], request)["messages"][1]["content"]
    assert sent == WIRE_CONTENT
    elsewhere = body_for_request(PROFILES["glm"], request)["messages"][1]
    assert elsewhere == {"role": "assistant", "content": "Paris."}
    plain = anthropic(messages=[*USER, {"role": "assistant", "content": "Paris."}, turn[2]])
    assert "reasoning" not in canonical_request_dict(plain)["messages"][1]  # keys unchanged
    with pytest.raises(RequestError) as caught:
        bad = [*USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}]
        anthropic(messages=bad)
    assert caught.value.param == "messages.1.content.0.signature"


def body_for_request(profile: ProviderProfile, request: ChatRequest) -> dict[str, Any]:
    return wire_body(profile, request, stream=False, default_max_tokens=1024)


def test_reasoning_tokens_a_provider_reports_reach_openai_usage_also_from_the_cache() -> None:
    body = {
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 40,
            "completion_tokens_details": {"reasoning_tokens": 32},
        }
    }
    for reader in (wire_usage.openai_usage, wire_usage.deepseek_usage, wire_usage.compatible_usage):
        assert reader(body).reasoning_tokens == 32
    usage = wire_usage.openai_usage(body)
    assert Usage.from_dict(usage.to_dict()) == usage
    rendered = openai_render.render_usage(usage)["completion_tokens_details"]
    assert rendered["reasoning_tokens"] == 32
    unknown = wire_usage.openai_usage({"usage": {"prompt_tokens": 10, "completion_tokens": 4}})
    assert unknown.reasoning_tokens == 0 and "reasoning_tokens" not in unknown.to_dict()


def test_bedrock_converse_clients_get_claudes_signature_and_can_send_it_back() -> None:
    result = result_from_wire(WIRE_MESSAGE)
    content = render_converse(result, started=0.0)["output"]["message"]["content"]
    signed = {"reasoningText": {"text": "Let me see.", "signature": "sig-1"}}
    assert content[0] == {"reasoningContent": signed}
    assert content[1] == {"text": "Paris."}  # the redacted block has no Converse form here

    async def stream() -> bytes:
        return await collect(render_converse_stream(replay_events(result), started=0.0))

    buffer = EventStreamBuffer()
    buffer.add_data(asyncio.run(stream()))
    events = [(m.headers[":event-type"], json.loads(m.payload)) for m in buffer]
    deltas = [p["delta"] for kind, p in events if kind == "contentBlockDelta"]
    assert {"reasoningContent": {"signature": "sig-1"}} in deltas
    body = {
        "messages": [
            {"role": "user", "content": [{"text": "hi"}]},
            {"role": "assistant", "content": [{"reasoningContent": signed}, {"text": "Paris."}]},
            {"role": "user", "content": [{"text": "Why?"}]},
        ]
    }
    request = parse_converse(body, model="anthropic.claude", stream=False)
    assert request.messages[1].reasoning == (
        ReasoningBlock(thinking="Let me see.", signature="sig-1"),
    )
    sent = body_for_request(PROFILES["anthropic"], request)["messages"][1]["content"]
    assert sent[0] == WIRE_CONTENT[0]
