"""Every sampling parameter through the real OpenAI and Anthropic SDKs, against the real
server on the embedded model: logit_bias bans and forces tokens, penalties are in the
response-cache key, prompt_cache_key routes without changing it, and
prompt_cache_retention "24h" pins the prompt's prefix (and says so)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.live import live_server
from tests.server.test_model_clients import MODEL, long_prefix

pytestmark = pytest.mark.model

QUESTION: Any = [{"role": "user", "content": "Name one fruit."}]


@pytest.fixture(scope="module")
def base_url(local_engine: Any) -> Iterator[str]:
    engine = ThreadedEngine(local_engine, max_queue=16, workers=1)
    cache = ResponseCache(open_store("memory://"))
    app = create_app(ServerConfig(), engine=engine, cache=cache)
    try:
        with live_server(app) as url:
            yield url
    finally:
        asyncio.run(engine.aclose())


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")


@pytest.fixture(scope="module")
def tokenizer(local_engine: Any) -> Any:
    return local_engine.loaded.tokenizer


def ask(client: openai.OpenAI, **params: Any) -> tuple[str, str]:
    """(the answer's text, its x-promptcache-key)."""
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=params.pop("messages", QUESTION), temperature=0, **params
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-promptcache-key"]


def test_logit_bias_minus_100_keeps_the_greedy_token_out(
    client: openai.OpenAI, tokenizer: Any
) -> None:
    first, _ = ask(client, max_tokens=1)
    (token,) = tokenizer.encode(first, add_special_tokens=False)
    banned, _ = ask(client, max_tokens=1, logit_bias={str(token): -100})
    assert banned and banned != first
    longer, _ = ask(client, max_tokens=12, logit_bias={str(token): -100})
    assert token not in tokenizer.encode(longer, add_special_tokens=False)


def test_logit_bias_plus_100_forces_a_token(client: openai.OpenAI, tokenizer: Any) -> None:
    (token,) = tokenizer.encode(" ocean", add_special_tokens=False)
    forced, _ = ask(client, max_tokens=3, logit_bias={str(token): 100})
    assert forced.split() == ["ocean"] * 3


def test_a_penalty_alone_changes_the_response_key(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "List the days of the week, twice."}]
    _, plain = ask(client, messages=messages, max_tokens=24)
    _, neutral = ask(client, messages=messages, max_tokens=24, frequency_penalty=0)
    _, frequency = ask(client, messages=messages, max_tokens=24, frequency_penalty=1.5)
    _, presence = ask(client, messages=messages, max_tokens=24, presence_penalty=1.5)
    _, repetition = ask(
        client, messages=messages, max_tokens=24, extra_body={"repetition_penalty": 1.3}
    )
    _, top_k = ask(client, messages=messages, max_tokens=24, extra_body={"top_k": 5, "min_p": 0.1})
    assert neutral == plain
    assert len({plain, frequency, presence, repetition, top_k}) == 5
    again = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=24, temperature=0, frequency_penalty=1.5
    )
    assert again.headers["x-promptcache"] == "HIT"
    assert again.headers["x-promptcache-key"] == frequency


def test_penalties_change_a_repetitive_greedy_answer(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "Repeat the word 'cat' twenty times."}]
    plain, _ = ask(client, messages=messages, max_tokens=30)
    penalised, _ = ask(client, messages=messages, max_tokens=30, frequency_penalty=2.0)
    assert plain.lower().count("cat") > penalised.lower().count("cat")


def test_prompt_cache_key_routes_without_changing_the_answer_key(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "What colour is the sky?"}]
    first = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=6, prompt_cache_key="tenant-a"
    )
    second = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=6, prompt_cache_key="tenant-b"
    )
    assert second.headers["x-promptcache-key"] == first.headers["x-promptcache-key"]
    assert second.headers["x-promptcache"] == "HIT"


def test_prompt_cache_retention_24h_pins_the_prefix_and_says_so(client: openai.OpenAI) -> None:
    messages: Any = [
        {"role": "system", "content": long_prefix("retention")},
        {"role": "user", "content": "Which rule mentions record 10?"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=messages, max_tokens=4, prompt_cache_retention="24h"
    )
    report = raw.http_response.json()["promptcache_retention"]
    assert report["ttl"] == "24h" and report["status"] == "pinned"
    assert report["tokens"] >= 1024
    messages[-1] = {"role": "user", "content": "Which rule mentions record 17?"}
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4)
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    assert (again.usage.prompt_tokens_details.cached_tokens or 0) >= 1024
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=4,
        temperature=0.5,  # sampled without a seed: not a response-cache hit
        prompt_cache_retention="24h",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert (chunks[-1].model_extra or {})["promptcache_retention"]["status"] == "pinned"


def test_logprobs_are_refused_naming_them(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, logprobs=True)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model=MODEL, messages=QUESTION, top_logprobs=2)


def test_anthropic_top_k_is_part_of_the_key(base_url: str) -> None:
    client = anthropic.Anthropic(base_url=base_url, api_key="unused")
    messages: Any = [{"role": "user", "content": "Name one colour."}]
    plain = client.messages.with_raw_response.create(model=MODEL, max_tokens=4, messages=messages)
    top_k = client.messages.with_raw_response.create(
        model=MODEL, max_tokens=4, messages=messages, extra_body={"top_k": 3}
    )
    assert top_k.parse().content
    assert plain.headers["x-promptcache-key"] != top_k.headers["x-promptcache-key"]
