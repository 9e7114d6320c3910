"""The real server on the embedded model, driven by the real clients, usage asserted.

One uvicorn server for the module (local engine with two workers, so
concurrent requests really overlap); every scenario uses its own long prefix
so the shared KV cache never makes one test depend on another.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.globals import set_llm_cache
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from promptcache.engine.threaded import ThreadedEngine
from promptcache.integrations.langchain import PromptCacheLangChainCache
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.live import live_server

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"
SUBJECTS = ("river", "lantern", "orchard", "compass", "harbor", "meadow", "glacier", "forge")
VERBS = ("guards", "follows", "remembers", "measures", "carries", "answers", "crosses")


def long_prefix(topic: str, words: int = 650) -> str:
    """A system prompt of well over 1,024 tokens, distinct per ``topic``."""
    lines = [f"You are the archivist of the {topic} society. Keep these rules in mind."]
    i = 0
    while sum(len(line.split()) for line in lines) < words:
        subject = SUBJECTS[i % len(SUBJECTS)]
        verb = VERBS[(i * 3) % len(VERBS)]
        lines.append(f"Rule {i} of {topic}: the {subject} {verb} record number {i * 7 + 3}.")
        i += 1
    return "\n".join(lines)


@pytest.fixture(scope="module")
def base_url(local_engine: Any) -> Iterator[str]:
    engine = ThreadedEngine(local_engine, max_queue=16, workers=2)
    cache = ResponseCache(open_store("memory://"))
    app = create_app(ServerConfig(), engine=engine, cache=cache)
    try:
        with live_server(app) as url:
            yield url
    finally:
        asyncio.run(engine.aclose())


def test_openai_sdk_same_question_twice_is_a_hit(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": "What is the capital of France?"}]
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=8
    )
    second = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=8
    )
    assert first.headers["x-promptcache"] == "MISS"
    assert second.headers["x-promptcache"] == "HIT"
    one, two = first.parse(), second.parse()
    assert one.choices[0].message.content
    assert two.choices[0].message.content == one.choices[0].message.content
    assert one.usage is not None and two.usage is not None
    assert one.usage.prompt_tokens > 0 and one.usage.completion_tokens > 0
    assert two.usage.model_dump() == one.usage.model_dump()


def test_openai_sdk_stream_with_usage_then_hit(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages: Any = [{"role": "user", "content": "Name a colour of the sky."}]
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert text
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    again = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=8
    )
    assert again.headers["x-promptcache"] == "HIT"
    assert again.parse().choices[0].message.content == text


def test_anthropic_sdk_explicit_breakpoint_write_then_read(base_url: str) -> None:
    client = anthropic.Anthropic(base_url=base_url, api_key="unused")
    system: Any = [
        {"type": "text", "text": long_prefix("lighthouse"), "cache_control": {"type": "ephemeral"}}
    ]
    first = client.messages.create(
        model=MODEL,
        max_tokens=8,
        system=system,
        messages=[{"role": "user", "content": "Which rule mentions the river?"}],
    )
    with client.messages.stream(
        model=MODEL,
        max_tokens=8,
        system=system,
        messages=[{"role": "user", "content": "Summarise rule 3."}],
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert first.usage.cache_creation_input_tokens is not None
    assert first.usage.cache_creation_input_tokens > 1024
    assert not first.usage.cache_read_input_tokens
    assert streamed_text == second.content[0].text  # type: ignore[union-attr]
    assert second.usage.cache_read_input_tokens is not None
    assert second.usage.cache_read_input_tokens > 1024
    assert second.usage.input_tokens < 64
    assert second.usage.output_tokens > 0


def test_openai_sdk_structured_output_parses_into_the_schema(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            # Bounded: a 135M model left free repeats digits until max_tokens.
            "population": {"type": "integer", "minimum": 0, "maximum": 50_000_000},
        },
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model=MODEL,
        max_tokens=60,
        messages=[{"role": "user", "content": "Which is the largest city in France?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": schema, "strict": True},
        },
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    value = json.loads(choice.message.content or "")
    assert set(value) == {"city", "population"}
    assert isinstance(value["city"], str) and 0 <= value["population"] <= 50_000_000

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": "Hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "bad", "schema": {"type": "nonsense"}},
            },
        )
    assert caught.value.status_code == 400
    assert "nonsense" in caught.value.message


def test_anthropic_sdk_output_format_answers_in_the_schema(base_url: str) -> None:
    client = anthropic.Anthropic(base_url=base_url, api_key="unused")
    message = client.messages.create(
        model=MODEL,
        max_tokens=60,
        messages=[{"role": "user", "content": "Name a primary color and whether it is warm."}],
        output_config={
            "format": {
                "type": "json_schema",
                "schema": {
                    "type": "object",
                    "properties": {
                        "color": {"enum": ["red", "yellow", "blue"]},
                        "warm": {"type": "boolean"},
                    },
                    "required": ["color", "warm"],
                    "additionalProperties": False,
                },
            }
        },
    )
    assert message.stop_reason == "end_turn"
    text = message.content[0].text  # type: ignore[union-attr]
    value = json.loads(text)
    assert value["color"] in ("red", "yellow", "blue") and isinstance(value["warm"], bool)


def test_anthropic_sdk_forced_tool_choice_returns_a_tool_use_block(base_url: str) -> None:
    client = anthropic.Anthropic(base_url=base_url, api_key="unused")
    message = client.messages.create(
        model=MODEL,
        max_tokens=60,
        tools=[
            {
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            }
        ],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Is it raining in Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    blocks = [block for block in message.content if block.type == "tool_use"]
    assert [block.name for block in blocks] == ["get_weather"]
    assert isinstance(blocks[0].input, dict) and isinstance(blocks[0].input["city"], str)


def test_openai_conversation_growing_without_markers_caches_more_each_turn(
    base_url: str,
) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    messages: list[Any] = [{"role": "system", "content": long_prefix("observatory")}]
    cached: list[int] = []
    for question in ("Hello!", "Which rule comes first?", "And the next one?"):
        messages.append({"role": "user", "content": question})
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        cached.append(reply.usage.prompt_tokens_details.cached_tokens or 0)
        messages.append({"role": "assistant", "content": reply.choices[0].message.content})
    assert cached[0] == 0
    assert 1024 < cached[1] < cached[2]


def test_batch_sharing_a_long_system_prompt_reads_after_the_first(base_url: str) -> None:
    system = long_prefix("atlas")
    cached: list[int] = []
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for question in ("First question?", "Second question?", "Third question?"):
            response = client.post(
                "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "max_tokens": 8,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": question},
                    ],
                },
            )
            assert response.status_code == 200, response.text
            cached.append(response.json()["usage"]["prompt_tokens_details"]["cached_tokens"])
    assert cached[0] == 0
    assert all(tokens > 1024 for tokens in cached[1:])


def test_two_concurrent_requests_with_a_new_prefix_write_once_and_read_once(
    base_url: str,
) -> None:
    system = [
        {"type": "text", "text": long_prefix("foundry"), "cache_control": {"type": "ephemeral"}}
    ]

    def ask(question: str) -> dict[str, Any]:
        response = httpx.post(
            f"{base_url}/v1/messages",
            json={
                "model": MODEL,
                "max_tokens": 8,
                "system": system,
                "messages": [{"role": "user", "content": question}],
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        usage: dict[str, Any] = response.json()["usage"]
        return usage

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        usages = list(pool.map(ask, ["Question one?", "Question two?"]))
    writes = sorted(u["cache_creation_input_tokens"] for u in usages)
    reads = sorted(u["cache_read_input_tokens"] for u in usages)
    assert writes[0] == 0 and writes[1] > 1024
    assert reads[0] == 0 and reads[1] > 1024


def test_langchain_chat_models_against_the_server(base_url: str) -> None:
    chat_openai = ChatOpenAI(
        base_url=f"{base_url}/v1",
        api_key=SecretStr("unused"),
        model=MODEL,
        max_completion_tokens=8,
        temperature=0,
    )
    chat_anthropic = ChatAnthropic(
        base_url=base_url,
        api_key=SecretStr("unused"),
        model_name=MODEL,
        max_tokens_to_sample=8,
        temperature=0,
        timeout=120,
        stop=None,
    )
    answer = chat_openai.invoke("Say one word about the sea.")
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata is not None and answer.usage_metadata["output_tokens"] > 0
    reply = chat_anthropic.invoke("Say one word about the sky.")
    assert reply.content
    assert reply.usage_metadata is not None and reply.usage_metadata["input_tokens"] > 0

    stats_before = httpx.get(f"{base_url}/v1/cache/stats").json()["requests"]
    set_llm_cache(PromptCacheLangChainCache("memory://"))
    try:
        first = chat_openai.invoke("Say one word about mountains.")
        second = chat_openai.invoke("Say one word about mountains.")
        third = chat_anthropic.invoke("Say one word about mountains.")
        fourth = chat_anthropic.invoke("Say one word about mountains.")
    finally:
        set_llm_cache(None)
    stats_after = httpx.get(f"{base_url}/v1/cache/stats").json()["requests"]
    assert second.content == first.content
    assert fourth.content == third.content
    # The LangChain cache answered the repeats: only two requests reached the server.
    served = sum(stats_after[k] - stats_before[k] for k in ("hit", "miss", "bypass"))
    assert served == 2


def test_curl_style_raw_http_stream_and_models(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        models = client.get("/v1/models").json()
        assert models["data"][0]["id"] == MODEL
        with client.stream(
            "POST",
            "/v1/messages",
            json={
                "model": MODEL,
                "max_tokens": 8,
                "stream": True,
                "messages": [{"role": "user", "content": "Count to three."}],
            },
        ) as response:
            body = "".join(response.iter_text())
        stats = client.get("/v1/cache/stats").json()
    assert response.headers["x-promptcache"] == "MISS"
    events = [
        line.removeprefix("event: ") for line in body.splitlines() if line.startswith("event:")
    ]
    assert events[0] == "message_start"
    assert events[-2:] == ["message_delta", "message_stop"]
    assert stats["prefix_cache"]["tokens_queried"] > 0
