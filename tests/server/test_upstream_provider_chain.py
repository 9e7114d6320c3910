"""The whole chain on loopback: the official SDKs -> a promptcache gateway -> a fake
provider (tests/engine/fake_providers.py). The provider's cache counts and reasoning
reach each SDK in its own dialect, and the response cache keeps them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anthropic
import openai
import pytest

from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.engine.fake_providers import ANSWER, PROMPT_TOKENS, THOUGHT, FakeProvider, markers_in
from tests.server.live import live_server


@contextmanager
def gateway(fake: FakeProvider, **server: Any) -> Iterator[str]:
    """A promptcache server in front of ``fake``; yields the gateway's base URL."""
    with live_server(fake.app()) as provider_url:  # type: ignore[arg-type]
        engine = UpstreamEngine(UpstreamConfig(base_url=f"{provider_url}/v1", provider=fake.name))
        app = create_app(
            ServerConfig(model_supports_caching=engine.honours_cache_markers, **server),
            engine=engine,
            cache=ResponseCache(open_store("memory://")),
        )
        try:
            with live_server(app) as url:
                yield url
        finally:
            asyncio.run(engine.aclose())


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def anthropic_client(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)


QUESTION: Any = [{"role": "user", "content": "Capital of France?"}]


@pytest.mark.parametrize("provider", ["deepseek", "glm", "vllm", "llamacpp", "openai"])
def test_openai_sdk_sees_the_providers_cached_tokens(provider: str) -> None:
    fake = FakeProvider(provider, cached=640)
    with gateway(fake) as url:
        client = openai_client(url)
        raw = client.chat.completions.with_raw_response.create(model="m", messages=QUESTION)
        again = client.chat.completions.with_raw_response.create(model="m", messages=QUESTION)
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "Streamed?"}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    completion = raw.parse()
    assert completion.choices[0].message.content == "".join(ANSWER)
    assert completion.usage is not None and completion.usage.prompt_tokens == PROMPT_TOKENS
    details = completion.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 640
    assert (raw.headers["x-promptcache"], again.headers["x-promptcache"]) == ("MISS", "HIT")
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 640
    assert len(fake.received) == 2  # the hit never reached the provider


def test_openai_sdk_receives_glm_reasoning_as_reasoning_content_also_from_the_cache() -> None:
    fake = FakeProvider("glm", think=True)
    with gateway(fake) as url:
        client = openai_client(url)
        first = client.chat.completions.with_raw_response.create(model="glm-4.6", messages=QUESTION)
        hit = client.chat.completions.with_raw_response.create(model="glm-4.6", messages=QUESTION)
        stream = client.chat.completions.create(
            model="glm-4.6", messages=[{"role": "user", "content": "Think aloud"}], stream=True
        )
        deltas = [c.choices[0].delta for c in stream if c.choices]
    assert hit.headers["x-promptcache"] == "HIT"
    for raw in (first, hit):
        message = raw.parse().choices[0].message
        assert message.content == "".join(ANSWER)
        assert getattr(message, "reasoning_content", None) == "".join(THOUGHT)
    streamed = [getattr(d, "reasoning_content", None) for d in deltas]
    assert [r for r in streamed if r] == THOUGHT
    assert "".join(d.content or "" for d in deltas) == "".join(ANSWER)


def test_anthropic_sdk_sees_cache_reads_writes_and_thinking_from_anthropic() -> None:
    fake = FakeProvider("anthropic", cached=600, written=100, think=True)
    with gateway(fake) as url:
        client = anthropic_client(url)
        message = client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=64,
            system=[{"type": "text", "text": "Manual", "cache_control": {"type": "ephemeral"}}],
            messages=QUESTION,
        )
        with client.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "Streamed?"}],
        ) as stream:
            thinking = [e.thinking for e in stream if e.type == "thinking"]
            final = stream.get_final_message()
    assert message.usage.cache_read_input_tokens == 600
    assert message.usage.cache_creation_input_tokens == 100
    assert message.content[0].type == "thinking"
    assert message.content[0].thinking == "".join(THOUGHT)
    assert message.content[1].type == "text" and message.content[1].text == "".join(ANSWER)
    assert fake.received[0]["system"][0]["cache_control"]["type"] == "ephemeral"
    assert thinking == THOUGHT
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.cache_read_input_tokens == 600


def test_claude_through_openrouter_keeps_its_markers_and_reports_its_cache() -> None:
    fake = FakeProvider("openrouter", cached=500, written=200)
    with gateway(fake) as url:
        message = anthropic_client(url).messages.create(
            model="anthropic/claude-sonnet-4.5",
            max_tokens=64,
            system=[{"type": "text", "text": "Manual", "cache_control": {"type": "ephemeral"}}],
            messages=QUESTION,
        )
    (body,) = fake.received
    assert body["messages"][0]["content"][0]["cache_control"]["type"] == "ephemeral"
    assert markers_in(body) == 1
    assert message.usage.cache_read_input_tokens == 500
    assert message.usage.cache_creation_input_tokens == 200


def test_auto_cache_places_markers_only_where_the_provider_takes_them() -> None:
    from promptcache.checkpoints import AutoCacheConfig

    auto = AutoCacheConfig(unsupported_model_behavior="ignore")
    fake = FakeProvider("openrouter")
    with gateway(fake, auto_cache=auto) as url:
        client = openai_client(url)
        for model in ("anthropic/claude-sonnet-4.5", "openai/gpt-4o"):
            client.chat.completions.create(
                model=model, messages=[{"role": "system", "content": "Manual"}, *QUESTION]
            )
    claude, gpt = fake.received
    assert markers_in(claude) >= 1
    assert markers_in(gpt) == 0


def test_raise_is_a_400_in_the_callers_dialect_naming_cache_control() -> None:
    fake = FakeProvider("deepseek")
    with live_server(fake.app()) as provider_url:  # type: ignore[arg-type]
        config = UpstreamConfig(
            base_url=f"{provider_url}/v1", provider="deepseek", unsupported_model_behavior="raise"
        )
        engine = UpstreamEngine(config)
        app = create_app(ServerConfig(), engine=engine, cache=None)
        with live_server(app) as url, pytest.raises(anthropic.BadRequestError) as err:
            anthropic_client(url).messages.create(
                model="deepseek-chat",
                max_tokens=16,
                system=[{"type": "text", "text": "M", "cache_control": {"type": "ephemeral"}}],
                messages=QUESTION,
            )
        asyncio.run(engine.aclose())
    assert err.value.status_code == 400
    assert "cache_control" in err.value.message and "deepseek" in err.value.message
    assert fake.received == []


def test_anthropic_sdk_streaming_from_an_openai_dialect_provider_gets_its_cache_reads() -> None:
    fake = FakeProvider("deepseek", cached=640, think=True)
    with (
        gateway(fake) as url,
        anthropic_client(url).messages.stream(
            model="deepseek-reasoner", max_tokens=64, messages=QUESTION
        ) as stream,
    ):
        thinking = [e.thinking for e in stream if e.type == "thinking"]
        final = stream.get_final_message()
    assert thinking == THOUGHT
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.cache_read_input_tokens == 640
    assert final.usage.input_tokens == PROMPT_TOKENS - 640


def test_reasoning_echoed_back_in_the_next_turn_is_accepted_and_not_sent_on() -> None:
    fake = FakeProvider("deepseek", think=True)  # DeepSeek refuses reasoning sent back
    with gateway(fake) as url:
        client = openai_client(url)
        first = client.chat.completions.create(model="deepseek-reasoner", messages=QUESTION)
        answer = first.choices[0].message
        assert getattr(answer, "reasoning_content", None) == "".join(THOUGHT)
        # What clients of reasoning models do: keep the whole assistant message.
        echoed = {"role": "assistant", "content": answer.content}
        echoed["reasoning_content"] = answer.reasoning_content  # type: ignore[attr-defined]
        turn = [*QUESTION, echoed, {"role": "user", "content": "Why?"}]
        again = client.chat.completions.create(model="deepseek-reasoner", messages=turn)
        with pytest.raises(openai.BadRequestError, match="reasoning_content"):
            bad = [*QUESTION, {"role": "assistant", "content": "x", "reasoning_content": 5}]
            client.chat.completions.create(model="deepseek-reasoner", messages=bad)
    assert again.choices[0].message.content == "".join(ANSWER)
    sent = fake.received[1]["messages"][1]
    assert sent == {"role": "assistant", "content": "".join(ANSWER)}
