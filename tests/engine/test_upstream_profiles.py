"""Provider profiles against fakes that behave like each provider (fake_providers.py):
what arrives, how usage and reasoning come back, errors, and the marker policy."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import httpx
import pytest

from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.engine.upstream.profiles import (
    PROFILES,
    detect_provider,
    resolve_provider,
)
from promptcache.errors import RequestError
from promptcache.request import (
    CacheControl,
    ChatRequest,
    Message,
    SamplingParams,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    Transport,
)
from promptcache.result import Result, StreamEvent, TextDelta, Usage
from tests.engine.fake_providers import (
    ANSWER,
    COMPLETION_TOKENS,
    PROMPT_TOKENS,
    THOUGHT,
    FakeProvider,
    markers_in,
)

MODELS = {
    "openai": "gpt-4o",
    "openrouter": "anthropic/claude-sonnet-4.5",
    "anthropic": "claude-sonnet-4-5",
    "glm": "glm-4.6",
    "deepseek": "deepseek-reasoner",
    "vllm": "Qwen/Qwen3-8B",
    "sglang": "Qwen/Qwen3-8B",
    "llamacpp": "smollm2",
}
OPENAI_FAMILY = [p for p in MODELS if p != "anthropic"]


def marked_request(provider: str, **transport: Any) -> ChatRequest:
    return ChatRequest(
        model=MODELS[provider],
        system=(TextBlock(text="A long manual. " * 50, cache_control=CacheControl()),),
        messages=(Message(role="user", content=(TextBlock(text="Capital of France?"),)),),
        transport=Transport(**transport),
    )


def engine_for(fake: FakeProvider, **config: Any) -> UpstreamEngine:
    return UpstreamEngine(
        UpstreamConfig(base_url="http://provider.test/v1", provider=fake.name, **config),
        transport=httpx.ASGITransport(app=fake.app()),
    )


def complete(engine: UpstreamEngine, request: ChatRequest) -> Result:
    async def go() -> Result:
        try:
            return await engine.complete(request)
        finally:
            await engine.aclose()

    return asyncio.run(go())


def stream(engine: UpstreamEngine, request: ChatRequest) -> list[StreamEvent]:
    async def go() -> list[StreamEvent]:
        try:
            return [event async for event in engine.stream(request)]
        finally:
            await engine.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("url", "provider"),
    [
        ("https://api.openai.com/v1", "openai"),
        ("https://openrouter.ai/api/v1", "openrouter"),
        ("https://api.anthropic.com", "anthropic"),
        ("https://open.bigmodel.cn/api/paas/v4", "glm"),
        ("https://api.z.ai/api/paas/v4", "glm"),
        ("https://api.deepseek.com", "deepseek"),
    ],
)
def test_hosted_providers_are_detected_from_the_url(url: str, provider: str) -> None:
    detected = detect_provider(url)
    assert detected is not None and detected.name == provider
    assert UpstreamConfig(base_url=url).provider == provider
    assert UpstreamConfig(base_url=url).dialect == PROFILES[provider].dialect


def test_other_urls_keep_the_plain_dialect_and_an_explicit_provider_wins() -> None:
    assert detect_provider("http://127.0.0.1:8000/v1") is None
    plain = UpstreamConfig(base_url="http://127.0.0.1:8000/v1")
    assert (plain.provider, plain.dialect) == ("openai-compatible", "openai")
    messages = UpstreamConfig(base_url="http://gw.internal", dialect="anthropic")
    assert messages.provider == "anthropic"
    chosen = UpstreamConfig(base_url="http://gpu-1:8000/v1", provider="vllm")
    assert (chosen.provider, chosen.dialect) == ("vllm", "openai")
    # The URL's provider gives way to an explicit dialect it does not speak.
    assert resolve_provider("https://api.anthropic.com/v1", None, "openai").name == (
        "openai-compatible"
    )
    with pytest.raises(ValueError, match="valid: openai, openrouter"):
        UpstreamConfig(base_url="http://x.test", provider="bedrock")
    with pytest.raises(ValueError, match="speaks the anthropic API"):
        UpstreamConfig(base_url="http://x.test", provider="anthropic", dialect="openai")
    with pytest.raises(ValueError, match="unsupported_model_behavior"):
        UpstreamConfig(base_url="http://x.test", unsupported_model_behavior="shout")


@pytest.mark.parametrize("provider", OPENAI_FAMILY)
def test_what_each_openai_dialect_provider_receives(provider: str) -> None:
    fake = FakeProvider(provider)
    request = marked_request(provider, prompt_cache_key="tenant-a", user="u1")
    result = complete(engine_for(fake, unsupported_model_behavior="ignore"), request)
    assert result.choices[0].text == "".join(ANSWER)
    (body,) = fake.received
    # Claude through OpenRouter keeps its markers, on the content part; nobody else gets one.
    assert markers_in(body) == (1 if provider == "openrouter" else 0)
    if provider == "openrouter":
        part = body["messages"][0]["content"][0]
        assert part["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    # OpenAI's cache hints go to OpenAI only (they only steer caching: dropped elsewhere).
    assert ("prompt_cache_key" in body) == (provider == "openai")
    assert body["user"] == "u1"


def test_anthropic_receives_its_markers_on_the_blocks() -> None:
    fake = FakeProvider("anthropic")
    request = dataclasses.replace(marked_request("anthropic"), cache_control=CacheControl())
    complete(engine_for(fake), request)
    (body,) = fake.received
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "5m"}
    assert body["cache_control"] == {"type": "ephemeral", "ttl": "5m"}


def test_openrouter_markers_on_tool_results_and_assistant_text_and_not_on_other_models() -> None:
    request = ChatRequest(
        model="anthropic/claude-sonnet-4.5",
        messages=(
            Message(role="user", content=(TextBlock(text="Weather?"),)),
            Message(
                role="assistant",
                content=(
                    TextBlock(text="Looking.", cache_control=CacheControl()),
                    ToolUseBlock(id="c1", name="weather", input={}),
                ),
            ),
            Message(
                role="user",
                content=(
                    ToolResultBlock(
                        tool_use_id="c1",
                        content=(TextBlock(text="18C"),),
                        cache_control=CacheControl(ttl="5m"),
                    ),
                ),
            ),
        ),
    )
    fake = FakeProvider("openrouter")
    complete(engine_for(fake), request)
    assistant, tool = fake.received[0]["messages"][1:]
    assert assistant["content"][0]["cache_control"]["type"] == "ephemeral"
    assert assistant["tool_calls"][0]["id"] == "c1"
    assert tool["content"] == [
        {"type": "text", "text": "18C", "cache_control": {"type": "ephemeral", "ttl": "5m"}}
    ]
    other = FakeProvider("openrouter")
    complete(engine_for(other, unsupported_model_behavior="ignore"), replace_model(request))
    assert markers_in(other.received[0]) == 0


def replace_model(request: ChatRequest, model: str = "openai/gpt-4o") -> ChatRequest:
    return dataclasses.replace(request, model=model)


@pytest.mark.parametrize("provider", [*OPENAI_FAMILY, "anthropic"])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_cache_usage_as_each_provider_reports_it(provider: str, streamed: bool) -> None:
    written = 100 if provider in ("openrouter", "anthropic") else 0
    fake = FakeProvider(provider, cached=600, written=written)
    request = marked_request(provider, include_usage=True, stream=streamed)
    engine = engine_for(fake, unsupported_model_behavior="ignore")
    if streamed:
        events = stream(engine, request)
        result = events[-1]
        assert isinstance(result, Result)
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == "".join(ANSWER)
        assert fake.received[0]["stream"] is True
    else:
        result = complete(engine, request)
    usage = result.usage
    assert usage.cache_read_input_tokens == 600
    assert usage.prompt_tokens == PROMPT_TOKENS
    assert usage.output_tokens == COMPLETION_TOKENS
    if provider == "anthropic":  # the 1h write, from the cache_creation split
        assert usage.cache_creation_1h_input_tokens == 100
    elif provider == "openrouter":
        assert usage.cache_creation_5m_input_tokens == 100
    else:
        assert usage.cache_creation_input_tokens == 0


@pytest.mark.parametrize("provider", ["glm", "deepseek", "vllm", "openrouter", "anthropic"])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_reasoning_becomes_the_canonical_reasoning(provider: str, streamed: bool) -> None:
    fake = FakeProvider(provider, think=True)
    request = ChatRequest(
        model=MODELS[provider],
        messages=(Message(role="user", content=(TextBlock(text="Capital of France?"),)),),
    )
    if streamed:
        events = stream(engine_for(fake), request)
        pieces = [e.reasoning for e in events if isinstance(e, TextDelta) and e.reasoning]
        assert pieces == THOUGHT
        # Reasoning never leaks into the answer's text.
        text = "".join(e.text for e in events if isinstance(e, TextDelta))
        assert text == "".join(ANSWER)
        result = events[-1]
        assert isinstance(result, Result)
    else:
        result = complete(engine_for(fake), request)
    choice = result.choices[0]
    assert (choice.reasoning, choice.text) == ("".join(THOUGHT), "".join(ANSWER))
    # The response cache keeps it: a hit answers with the same reasoning.
    assert Result.from_json(result.to_json()).choices[0].reasoning == "".join(THOUGHT)


def test_an_entry_without_reasoning_is_stored_as_before() -> None:
    result = complete(engine_for(FakeProvider("glm")), marked_request("glm"))
    assert "reasoning" not in result.to_json()


@pytest.mark.parametrize(
    ("provider", "sampling", "name"),
    [
        ("openai", SamplingParams(top_k=40), "top_k"),
        ("openai", SamplingParams(min_p=0.1), "min_p"),
        ("deepseek", SamplingParams(seed=7), "seed"),
        ("glm", SamplingParams(frequency_penalty=0.5), "frequency_penalty"),
        ("vllm", SamplingParams(verbosity="low"), "verbosity"),
        ("llamacpp", SamplingParams(reasoning_effort="high"), "reasoning_effort"),
    ],
)
def test_a_parameter_the_provider_lacks_is_a_400_before_anything_is_sent(
    provider: str, sampling: SamplingParams, name: str
) -> None:
    fake = FakeProvider(provider)
    request = dataclasses.replace(marked_request(provider), sampling=sampling)
    with pytest.raises(RequestError, match=f"'{name}' cannot be sent to the {provider}") as err:
        complete(engine_for(fake, unsupported_model_behavior="ignore"), request)
    assert err.value.param == name
    assert fake.received == []


def test_engines_get_their_own_samplers_under_their_own_names() -> None:
    sampling = SamplingParams(top_k=40, min_p=0.05, repetition_penalty=1.1, seed=3)
    for provider, penalty in (("vllm", "repetition_penalty"), ("llamacpp", "repeat_penalty")):
        fake = FakeProvider(provider)
        request = dataclasses.replace(marked_request(provider), sampling=sampling)
        complete(engine_for(fake, unsupported_model_behavior="ignore"), request)
        body = fake.received[0]
        assert (body["top_k"], body["min_p"], body["seed"], body[penalty]) == (40, 0.05, 3, 1.1)


def test_unsupported_model_behavior_ignore_warn_once_per_model_and_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeProvider("openai")
    engine = engine_for(fake, unsupported_model_behavior="warn")

    async def three() -> None:
        try:
            for model in ("gpt-4o", "gpt-4o", "gpt-4.1"):
                await engine.complete(replace_model(marked_request("openai"), model))
        finally:
            await engine.aclose()

    with caplog.at_level(logging.WARNING, logger="promptcache.engine.upstream.shaping"):
        asyncio.run(three())
    warnings = [r.getMessage() for r in caplog.records if "cache_control" in r.getMessage()]
    assert len(warnings) == 2  # one per model, not one per request
    assert "openai upstream" in warnings[0] and "'gpt-4o'" in warnings[0]
    assert all(markers_in(body) == 0 for body in fake.received)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        complete(engine_for(FakeProvider("vllm"), unsupported_model_behavior="ignore"),
                 marked_request("vllm"))  # fmt: skip
    assert not caplog.records

    refused = FakeProvider("deepseek")
    with pytest.raises(RequestError, match=r"cache_control .*deepseek upstream") as err:
        complete(
            engine_for(refused, unsupported_model_behavior="raise"), marked_request("deepseek")
        )
    assert err.value.param == "cache_control"
    assert refused.received == []


def test_a_marker_on_a_tool_has_no_place_toward_openrouter() -> None:
    tool = Tool(name="weather", description="", input_schema={"type": "object"},
                cache_control=CacheControl())  # fmt: skip
    request = dataclasses.replace(marked_request("openrouter"), tools=(tool,))
    with pytest.raises(RequestError, match=r"tools\[0\].cache_control"):
        complete(engine_for(FakeProvider("openrouter"), unsupported_model_behavior="raise"),
                 request)  # fmt: skip
    fake = FakeProvider("openrouter")
    complete(engine_for(fake, unsupported_model_behavior="ignore"), request)
    body = fake.received[0]
    assert "cache_control" not in body["tools"][0]
    assert markers_in(body) == 1  # the system block's marker still goes


@pytest.mark.parametrize("provider", [*OPENAI_FAMILY, "anthropic"])
def test_each_providers_error_body_gives_its_message(provider: str) -> None:
    fake = FakeProvider(provider, error=(400, "max_tokens is too large: 99999999"))
    with pytest.raises(RequestError) as err:
        complete(engine_for(fake), ChatRequest(model=MODELS[provider], messages=(
            Message(role="user", content=(TextBlock(text="hi"),)),)))  # fmt: skip
    assert err.value.message == "max_tokens is too large: 99999999"


def test_strict_engines_would_refuse_what_the_profile_leaves_out() -> None:
    # The fake vLLM really refuses unknown fields: a body built with markers proves it.
    fake = FakeProvider("vllm")
    engine = engine_for(fake)
    from promptcache.dialects.openai import wire

    body = wire.to_wire_request(marked_request("vllm"), stream=False, cache_markers=True)

    async def raw() -> httpx.Response:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app()))
        async with client:
            return await client.post("http://provider.test/v1/chat/completions", json=body)

    refused = asyncio.run(raw())
    assert refused.status_code == 400
    assert "cache_control" in refused.json()["message"]
    asyncio.run(engine.aclose())


def test_usage_readers_leave_unreported_caches_at_zero() -> None:
    result = complete(engine_for(FakeProvider("sglang")), marked_request("sglang"))
    assert result.usage == Usage(input_tokens=PROMPT_TOKENS, output_tokens=COMPLETION_TOKENS)


@pytest.mark.parametrize("like", ["openai", "openrouter", "deepseek", "llamacpp", "vllm"])
@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_an_unnamed_openai_compatible_upstream_reads_every_known_cache_field(
    like: str, streamed: bool
) -> None:
    fake = FakeProvider(like, cached=600, written=50 if like == "openrouter" else 0)
    engine = UpstreamEngine(
        UpstreamConfig(base_url="http://gateway.internal/v1"),
        transport=httpx.ASGITransport(app=fake.app()),
    )
    assert engine.profile.name == "openai-compatible"
    request = ChatRequest(
        model="m", messages=(Message(role="user", content=(TextBlock(text="hi"),)),)
    )
    if streamed:
        result = stream(engine, request)[-1]
        assert isinstance(result, Result)
    else:
        result = complete(engine, request)
    assert result.usage.cache_read_input_tokens == 600
    assert result.usage.cache_creation_input_tokens == (50 if like == "openrouter" else 0)
    assert result.usage.prompt_tokens == PROMPT_TOKENS
