"""Every sampling parameter reaches an upstream that can carry it, translated across
dialects, and is a 400 naming it where the upstream's dialect has no counterpart."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from promptcache.dialects.anthropic import parse as anthropic_parse
from promptcache.dialects.anthropic import wire as anthropic_wire
from promptcache.dialects.openai import parse as openai_parse
from promptcache.dialects.openai import wire as openai_wire
from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.errors import RequestError
from promptcache.request import ChatRequest, SamplingParams, Transport

OPENAI_BODY: dict[str, Any] = {
    "model": "up-model",
    "messages": [{"role": "user", "content": "Hi"}],
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "logit_bias": {"198": -100, "42": 3},
    "prompt_cache_key": "tenant-a",
    "prompt_cache_retention": "24h",
}
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "up-model",
    "max_tokens": 16,
    "top_k": 7,
    "messages": [{"role": "user", "content": "Hi"}],
}


async def forwarded(dialect: str, request: ChatRequest) -> dict[str, Any]:
    """The body an upstream of ``dialect`` receives for ``request``."""
    seen: dict[str, Any] = {}

    def handler(http: httpx.Request) -> httpx.Response:
        seen.update(json.loads(http.content))
        if dialect == "openai":
            return httpx.Response(
                200,
                json={
                    "id": "x",
                    "created": 1,
                    "model": "up-model",
                    "choices": [
                        {"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}
                    ],
                },
            )
        return httpx.Response(
            200,
            json={
                "id": "msg",
                "type": "message",
                "role": "assistant",
                "model": "up-model",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        )

    base = "https://api.example.test/v1" if dialect == "openai" else "https://api.example.test"
    engine = UpstreamEngine(
        UpstreamConfig(base_url=base, api_key="sk-test", dialect=dialect),
        transport=httpx.MockTransport(handler),
    )
    try:
        await engine.complete(request)
    finally:
        await engine.aclose()
    return seen


async def test_openai_upstream_gets_penalties_bias_and_prompt_cache_fields() -> None:
    body = await forwarded("openai", openai_parse.parse_request(OPENAI_BODY))
    assert body["frequency_penalty"] == 0.5
    assert body["presence_penalty"] == -0.25
    assert body["logit_bias"] == {"42": 3.0, "198": -100.0}
    assert body["prompt_cache_key"] == "tenant-a"
    assert body["prompt_cache_retention"] == "24h"
    for absent in ("top_k", "min_p", "repetition_penalty"):
        assert absent not in body  # unset: nothing an OpenAI upstream would refuse


async def test_vllm_style_extras_are_forwarded_to_an_openai_compatible_upstream() -> None:
    request = openai_parse.parse_request(
        {**OPENAI_BODY, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
    )
    body = await forwarded("openai", request)
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (20, 0.05, 1.1)


async def test_anthropic_top_k_crosses_to_both_upstream_dialects() -> None:
    request = anthropic_parse.parse_request(ANTHROPIC_BODY)
    assert (await forwarded("anthropic", request))["top_k"] == 7
    assert (await forwarded("openai", request))["top_k"] == 7


def test_nothing_new_is_sent_when_nothing_new_is_set() -> None:
    request = openai_parse.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    assert set(openai_wire.to_wire_request(request, stream=False)) == {"model", "messages"}
    assert set(anthropic_wire.to_wire_request(request, stream=False)) == {
        "model",
        "max_tokens",
        "messages",
    }


@pytest.mark.parametrize(
    ("sampling", "transport", "param"),
    [
        ({"frequency_penalty": 0.5}, {}, "frequency_penalty"),
        ({"presence_penalty": 0.5}, {}, "presence_penalty"),
        ({"logit_bias": ((1, 2.0),)}, {}, "logit_bias"),
        ({"min_p": 0.1}, {}, "min_p"),
        ({"repetition_penalty": 1.2}, {}, "repetition_penalty"),
        ({"seed": 3}, {}, "seed"),
        ({}, {"prompt_cache_key": "k"}, "prompt_cache_key"),
        ({}, {"prompt_cache_retention": "24h"}, "prompt_cache_retention"),
    ],
)
def test_anthropic_upstream_refuses_what_messages_cannot_carry(
    sampling: dict[str, Any], transport: dict[str, Any], param: str
) -> None:
    request = openai_parse.parse_request(
        {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    )
    request = replace(
        request, sampling=SamplingParams(**sampling), transport=Transport(**transport)
    )
    with pytest.raises(RequestError, match=param) as caught:
        anthropic_wire.to_wire_request(request, stream=False)
    assert caught.value.param == param


def test_in_memory_retention_is_the_default_anywhere() -> None:
    request = openai_parse.parse_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "prompt_cache_retention": "in_memory",
        }
    )
    assert "prompt_cache_retention" not in anthropic_wire.to_wire_request(request, stream=False)
    assert (
        openai_wire.to_wire_request(request, stream=False)["prompt_cache_retention"] == "in_memory"
    )
