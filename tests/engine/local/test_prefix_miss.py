"""``x-promptcache-prefix-miss``: the local engine says why a prompt was not read from
the prefix cache, and where it left the longest cached prefix, by section."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.threaded import ThreadedEngine
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock, Tool
from promptcache.response_cache import ResponseCache
from promptcache.result import Result
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store

BLOCK = 4
CONFIG = PrefixCacheConfig(block_size=BLOCK, min_cache_tokens=16, kv_cache_bytes=8 << 20)
SYSTEM = " ".join(f"fact {i} is about topic {i % 7}." for i in range(12))
TOOL = Tool(name="lookup", description="Look a fact up.", input_schema={"type": "object"})


@pytest.fixture
def engine(tiny_model: Any) -> LocalEngine:
    return LocalEngine(LocalEngineConfig(prefix_cache=CONFIG), loaded=tiny_model)


def ask(
    question: str, *, system: str = SYSTEM, tools: tuple[Tool, ...] = (TOOL,), tenant: str = ""
) -> ChatRequest:
    return ChatRequest(
        model="tiny",
        tools=tools,
        system=(TextBlock(text=system),),
        messages=(Message(role="user", content=(TextBlock(text=question),)),),
        sampling=SamplingParams(max_tokens=2),
        tenant=tenant,
    )


def miss(engine: LocalEngine, request: ChatRequest) -> str | None:
    result = list(engine.generate(request))[-1]
    assert isinstance(result, Result)
    return result.prefix_miss


def parts(header: str | None) -> tuple[str, int, int]:
    assert header is not None
    cause, block, token = header.split("; ")
    return cause, int(block.removeprefix("block=")), int(token.removeprefix("token="))


def test_cold_then_each_section_changed(engine: LocalEngine) -> None:
    assert parts(miss(engine, ask("What is fact 3?")))[0] == "cold"
    assert miss(engine, ask("What is fact 3?")) is None  # every full block read
    tools_end, system_end = engine.renderer.render(ask("q")).section_ends()
    assert 0 < tools_end < system_end

    cause, block, token = parts(miss(engine, ask("What is fact 11?")))
    assert cause == "messages_changed" and token >= system_end - BLOCK and token == block * BLOCK

    changed = SYSTEM.replace("fact 9 is", "fact nine was")
    cause, _, token = parts(miss(engine, ask("What is fact 3?", system=changed)))
    assert cause == "system_changed" and tools_end <= token < system_end

    other = Tool(name="lookup", description="Look a fact up, carefully.", input_schema={})
    cause, _, token = parts(miss(engine, ask("What is fact 3?", tools=(other,))))
    assert cause == "tools_changed" and token < tools_end


def test_tenant_and_below_minimum(engine: LocalEngine, tiny_model: Any) -> None:
    miss(engine, ask("What is fact 3?"))
    assert parts(miss(engine, ask("What is fact 3?", tenant="b")))[0] == "tenant"
    strict = PrefixCacheConfig(block_size=BLOCK, min_cache_tokens=4096, kv_cache_bytes=8 << 20)
    picky = LocalEngine(LocalEngineConfig(prefix_cache=strict), loaded=tiny_model)
    header = miss(picky, ask("What is fact 3?"))
    assert header is not None and header.startswith("below_minimum; tokens=")
    assert header.endswith("; minimum=4096")


def test_the_server_sends_the_header_on_a_miss_and_not_on_a_hit(engine: LocalEngine) -> None:
    async def scenario() -> None:
        threaded = ThreadedEngine(engine, max_queue=4)
        app = create_app(
            ServerConfig(), engine=threaded, cache=ResponseCache(open_store("memory://"))
        )
        body = {
            "model": engine.models()[0].id,
            "max_tokens": 2,
            "system": SYSTEM,
            "messages": [{"role": "user", "content": "What is fact 5?"}],
        }
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                first = await client.post("/v1/messages", json=body)
                again = await client.post("/v1/messages", json=body)
                stream = await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": body["model"],
                        "max_tokens": 2,
                        "stream": True,
                        "messages": [
                            {"role": "system", "content": SYSTEM},
                            {"role": "user", "content": "And fact 6?"},
                        ],
                    },
                )
        finally:
            await threaded.aclose()
        assert first.headers["x-promptcache"] == "MISS"
        assert first.headers["x-promptcache-prefix-miss"].startswith("cold; block=0; token=0")
        assert again.headers["x-promptcache"] == "HIT"
        assert "x-promptcache-prefix-miss" not in again.headers
        assert stream.headers["x-promptcache-prefix-miss"].startswith("messages_changed; ")

    asyncio.run(scenario())
