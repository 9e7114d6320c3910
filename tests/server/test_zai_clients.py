"""Zhipu's own context-caching examples, run by ``zai-sdk`` against the embedded model.

The four Python examples of Zhipu's context-caching guide (docs.z.ai, "Context
Caching": the two questions on one system prompt, several questions on one
long document, a multi-turn conversation, a batch code review), as written
there, with only ``base_url`` changed -- GLM's ``.../api/paas/v4`` and an
OpenAI-style ``.../v1`` -- and the server answering ``glm-4.6`` with the
embedded model (``--model-alias glm-4.6=SmolLM2-135M-Instruct``). The guide's
prompts are a few dozen to a few hundred tokens, so this server caches
prefixes from 16 tokens (``--min-cache-tokens 16``; the default 1,024 is
Anthropic's minimum). Each example must report
``usage.prompt_tokens_details.cached_tokens`` > 0 on every request after its
first.

The examples set no ``max_tokens`` and the local engine's default (1,024) would
take minutes on a CPU, so the server's default answer length is cut to 16
tokens here; the response cache is off so that every request reaches the
model, and the KV cache is emptied before each run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from zai import ZhipuAiClient

from promptcache.engine.threaded import ThreadedEngine
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.live import live_server

pytestmark = pytest.mark.model

SERVED = "SmolLM2-135M-Instruct"
BASE_PATHS = ["/api/paas/v4", "/v1"]


@pytest.fixture(scope="module")
def engine() -> Iterator[ThreadedEngine]:
    from promptcache.engine.local import LocalEngine, LocalEngineConfig
    from promptcache.prefix.config import PrefixCacheConfig

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("promptcache.engine.local.engine.DEFAULT_MAX_TOKENS", 16)
        local = LocalEngine.from_config(
            LocalEngineConfig(prefix_cache=PrefixCacheConfig(min_cache_tokens=16))
        )
        threaded = ThreadedEngine(local, max_queue=8, workers=1)
        yield threaded
        asyncio.run(threaded.aclose())


@pytest.fixture(scope="module")
def server(engine: ThreadedEngine) -> Iterator[str]:
    config = ServerConfig(model_aliases={"glm-4.6": SERVED})
    with live_server(create_app(config, engine=engine, cache=None)) as url:
        yield url


@pytest.fixture(params=BASE_PATHS)
def client(request: pytest.FixtureRequest, server: str, engine: ThreadedEngine) -> ZhipuAiClient:
    engine.clear_prefix_cache()  # each example starts cold, on either path
    return ZhipuAiClient(api_key="your-api-key", base_url=server + request.param)


def cached(response: Any) -> int:
    assert response.model == "glm-4.6"
    details = response.usage.prompt_tokens_details
    return int(details.cached_tokens) if details is not None else 0


def test_two_questions_on_one_system_prompt(client: Any) -> None:
    # First request: establishes the cache.
    response1 = client.chat.completions.create(
        model="glm-4.6",
        messages=[
            {
                "role": "system",
                "content": "You are a professional data analyst, skilled at explaining data "
                "trends and providing business insights.",
            },
            {"role": "user", "content": "How to analyze user retention rate?"},
        ],
    )
    print(f"Cached tokens: {response1.usage.prompt_tokens_details.cached_tokens}")
    # Second request: reuses the cached system prompt.
    response2 = client.chat.completions.create(
        model="glm-4.6",
        messages=[
            {
                "role": "system",
                "content": "You are a professional data analyst, skilled at explaining data "
                "trends and providing business insights.",
            },
            {"role": "user", "content": "What is funnel analysis?"},
        ],
    )
    print(f"Cached tokens: {response2.usage.prompt_tokens_details.cached_tokens}")
    assert cached(response1) == 0
    assert cached(response2) > 0


LONG_DOCUMENT = "\n".join(
    f"Section {i}: The ingestion service batches incoming events every {i + 2} seconds, "
    f"compresses them with zstd level {i % 9 + 1}, and writes them to shard {i * 7 % 13}; "
    f"a checkpoint records offset {1000 + i * 37} so that a restart resumes exactly there."
    for i in range(12)
)
"""The guide's ``long_document`` is a placeholder; this one is ~500 tokens."""


def test_questions_on_one_long_document(client: Any) -> None:
    long_document = LONG_DOCUMENT
    questions = [
        "What are the core viewpoints of this document?",
        "What technical solutions are mentioned in the document?",
        "What are the limitations of these solutions?",
    ]
    results = []
    for i, question in enumerate(questions):
        response = client.chat.completions.create(
            model="glm-4.6",
            messages=[
                {
                    "role": "system",
                    "content": "You are a professional document analyst. Answer questions "
                    "based on the provided document content.",
                },
                {"role": "user", "content": f"Document content:\n{long_document}\n\n{question}"},
            ],
        )
        print(f"Question {i + 1}: {question}")
        print(f"Cached tokens: {response.usage.prompt_tokens_details.cached_tokens}")
        results.append(response)
    assert cached(results[0]) == 0
    assert all(cached(r) > 400 for r in results[1:])  # the whole document, read from KV


def test_multi_turn_conversation_history(client: Any) -> None:
    conversation_history = [
        {"role": "system", "content": "You are a helpful programming assistant."}
    ]
    responses = []

    def chat_with_cache(user_message: str) -> str:
        conversation_history.append({"role": "user", "content": user_message})
        response = client.chat.completions.create(model="glm-4.6", messages=conversation_history)
        assistant_message = response.choices[0].message.content
        conversation_history.append({"role": "assistant", "content": assistant_message})
        print(f"Cached tokens: {response.usage.prompt_tokens_details.cached_tokens}")
        responses.append(response)
        return str(assistant_message)

    chat_with_cache("How do I implement quicksort in Python?")
    chat_with_cache("Can you optimize this algorithm?")
    chat_with_cache("What is its time complexity?")
    assert cached(responses[0]) == 0
    assert all(cached(r) > 0 for r in responses[1:])
    # Each turn reads at least the whole of the previous turn's prompt from cache.
    assert cached(responses[2]) >= cached(responses[1]) + 16


def test_batch_code_review(client: Any) -> None:
    def batch_code_review(code_snippets: list[str]) -> list[dict[str, Any]]:
        system_prompt = """You are a code review expert. Review the code in these aspects:
1. Code quality and readability
2. Performance optimization suggestions
3. Potential bugs and security issues
4. Best-practice recommendations
5. Maintainability assessment

Give specific suggestions for improvement."""
        results = []
        for code in code_snippets:
            response = client.chat.completions.create(
                model="glm-4.6",
                messages=[
                    {"role": "system", "content": system_prompt},
                    {
                        "role": "user",
                        "content": f"Please review the following code:\n```python\n{code}\n```",
                    },
                ],
            )
            results.append(
                {
                    "code": code,
                    "review": response.choices[0].message.content,
                    "cached_tokens": response.usage.prompt_tokens_details.cached_tokens,
                    "model": response.model,
                }
            )
        return results

    reviews = batch_code_review(
        [
            "def add(a, b):\n    return a + b",
            "def read(path):\n    return open(path).read()",
            "items = []\nfor i in range(10):\n    items.append(i * i)",
        ]
    )
    assert [r["model"] for r in reviews] == ["glm-4.6"] * 3
    assert all(r["review"] for r in reviews)
    assert reviews[0]["cached_tokens"] == 0
    assert all(r["cached_tokens"] > 0 for r in reviews[1:])
