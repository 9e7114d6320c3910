"""A named prefix pinned over HTTP, then read by the official SDKs (embedded model).

Each test pins its own long prefix (a distinct topic), so the only cached KV a
request can read is that prefix's: its usage reports exactly the pinned tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from promptcache.engine.threaded import ThreadedEngine
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.live import live_server

pytestmark = pytest.mark.model

MODEL = "SmolLM2-135M-Instruct"


def archive(topic: str, rules: int = 90) -> str:
    """A system prompt of well over 1,024 tokens, distinct per ``topic``."""
    return "\n".join(
        f"Rule {i} of the {topic} archive: record {i * 7 + 3} is kept in room {i % 11}."
        for i in range(rules)
    )


@pytest.fixture(scope="module")
def base_url(local_engine: Any) -> Iterator[str]:
    engine = ThreadedEngine(local_engine, max_queue=8, workers=2)
    app = create_app(ServerConfig(), engine=engine, cache=None)
    try:
        with live_server(app) as url:
            yield url
    finally:
        asyncio.run(engine.aclose())


def pin(base_url: str, body: dict[str, Any]) -> dict[str, Any]:
    created = httpx.post(f"{base_url}/v1/cache/prefixes", json=body, timeout=300)
    assert created.status_code == 200, created.text
    prefix: dict[str, Any] = created.json()
    assert prefix["cached_tokens"] > 1024
    return prefix


def test_openai_sdk_reads_a_pinned_prefix(base_url: str) -> None:
    system = archive("lighthouse")
    opening = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Here is the archive."},
    ]
    prefix = pin(base_url, {"model": MODEL, "messages": opening, "ttl": "10m"})
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    answer = client.chat.completions.create(
        model=MODEL,
        max_tokens=4,
        messages=[
            *opening,  # type: ignore[list-item]
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "Which room keeps record 10?"},
        ],
    )
    usage = answer.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == prefix["cached_tokens"]
    assert usage.prompt_tokens > prefix["tokens"]


def test_anthropic_sdk_reads_a_prefix_pinned_in_its_shape(base_url: str) -> None:
    system = archive("orchard")
    tools = [
        {
            "name": "find_record",
            "description": "Find a record of the archive.",
            "input_schema": {"type": "object", "properties": {"number": {"type": "integer"}}},
        }
    ]
    prefix = pin(base_url, {"model": MODEL, "system": system, "tools": tools, "ttl": 600})
    client = anthropic.Anthropic(base_url=base_url, api_key="unused")
    answer = client.messages.create(
        model=MODEL,
        max_tokens=4,
        system=system,
        tools=tools,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Which room keeps record 17?"}],
    )
    assert answer.usage.cache_read_input_tokens == prefix["cached_tokens"]
    assert not answer.usage.cache_creation_input_tokens  # no breakpoint: nothing written
    listed = httpx.get(f"{base_url}/v1/cache/prefixes").json()["data"]
    assert prefix["id"] in [entry["id"] for entry in listed]
    assert httpx.delete(f"{base_url}/v1/cache/prefixes/{prefix['id']}").status_code == 200
