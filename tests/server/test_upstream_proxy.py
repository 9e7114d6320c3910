"""The server in front of an upstream engine: another promptcache server, over HTTP."""

from __future__ import annotations

import asyncio

import httpx

from promptcache.engine.threaded import ThreadedEngine
from promptcache.engine.upstream import UpstreamConfig, UpstreamEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.conftest import anthropic_body
from tests.server.fakes import FakeSyncEngine
from tests.server.live import live_server


def test_anthropic_client_through_an_openai_upstream_with_the_cache_in_front() -> None:
    fake = FakeSyncEngine()
    inner_engine = ThreadedEngine(fake, max_queue=4)
    inner = create_app(ServerConfig(), engine=inner_engine, cache=None)
    try:
        with live_server(inner) as inner_url:
            upstream = UpstreamEngine(
                UpstreamConfig(base_url=f"{inner_url}/v1", dialect="openai", models=["fake-model"])
            )
            outer = create_app(
                ServerConfig(model_supports_caching=False),
                engine=upstream,
                cache=ResponseCache(open_store("memory://")),
            )

            async def exercise() -> list[httpx.Response]:
                transport = httpx.ASGITransport(app=outer)
                async with httpx.AsyncClient(transport=transport, base_url="http://outer") as c:
                    first = await c.post("/v1/messages", json=anthropic_body("via upstream"))
                    again = await c.post("/v1/messages", json=anthropic_body("via upstream"))
                    unknown = await c.post("/v1/messages", json=anthropic_body(model="other"))
                await upstream.aclose()
                return [first, again, unknown]

            first, again, unknown = asyncio.run(exercise())
    finally:
        asyncio.run(inner_engine.aclose())
    assert first.status_code == 200, first.text
    assert first.json()["content"][0]["text"] == "echo: via upstream"
    assert first.headers["x-promptcache"] == "MISS"
    assert again.headers["x-promptcache"] == "HIT"
    assert unknown.status_code == 404
    assert fake.calls == 1
