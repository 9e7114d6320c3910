"""The reasoning switch: each dialect's ``thinking`` becomes one canonical
:class:`Thinking`, in the cache key only when sent, and each upstream provider gets it
in its own shape or refuses it by name."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from promptcache.dialects.anthropic.parse import parse_request as parse_anthropic
from promptcache.dialects.bedrock.converse_parse import parse_converse
from promptcache.dialects.openai.parse import parse_request as parse_openai
from promptcache.engine.upstream.profiles import OPENAI_COMPATIBLE, PROFILES, ProviderProfile
from promptcache.engine.upstream.shaping import wire_body
from promptcache.errors import RequestError
from promptcache.keys import canonical_request_dict, response_key
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock, Thinking

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
        ({"type": "sometimes"}, "thinking.type", "'enabled', 'disabled' or 'adaptive'"),
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
