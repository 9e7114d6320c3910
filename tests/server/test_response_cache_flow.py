"""The response cache in front of the engine: HIT/MISS/BYPASS, headers, coalescing."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from promptcache.response_cache import cache as response_cache
from tests.server.conftest import ServerFactory, anthropic_body, openai_body
from tests.server.fakes import FakeSyncEngine

CHAT = "/v1/chat/completions"


async def test_second_identical_request_is_a_hit_with_identical_body(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        first = await client.post(CHAT, json=openai_body())
        second = await client.post(CHAT, json=openai_body())
    assert first.status_code == second.status_code == 200
    assert first.headers["x-promptcache"] == "MISS"
    assert second.headers["x-promptcache"] == "HIT"
    assert second.headers["x-promptcache-key"] == first.headers["x-promptcache-key"]
    assert second.headers["x-promptcache-key"].startswith("pc1:sha256:")
    assert second.headers["age"] == "0"
    assert "age" not in first.headers
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"] == first.json()["usage"]
    assert first.json()["choices"][0]["message"]["content"] == "echo: hello world"
    assert fake_engine.calls == 1


async def test_dialects_share_one_entry_and_model_aliases_resolve(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        openai = await client.post(CHAT, json=openai_body(model="fake"))
        anthropic = await client.post("/v1/messages", json=anthropic_body())
    assert openai.headers["x-promptcache"] == "MISS"
    assert anthropic.headers["x-promptcache"] == "HIT"
    assert anthropic.json()["content"][0]["text"] == "echo: hello world"
    assert anthropic.json()["type"] == "message"
    assert fake_engine.requests[0].model == "fake-model"


async def test_streamed_request_after_plain_one_is_replayed_as_sse(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        await client.post(CHAT, json=openai_body())
        streamed = await client.post(CHAT, json=openai_body(stream=True))
        messages = await client.post("/v1/messages", json=anthropic_body(stream=True))
    assert streamed.headers["x-promptcache"] == "HIT"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert "data: [DONE]" in streamed.text
    assert "echo:" in streamed.text
    assert messages.headers["x-promptcache"] == "HIT"
    assert "event: message_stop" in messages.text
    assert fake_engine.calls == 1


async def test_a_streamed_miss_is_stored_for_the_next_request(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        streamed = await client.post(CHAT, json=openai_body(stream=True))
        plain = await client.post(CHAT, json=openai_body())
    assert streamed.headers["x-promptcache"] == "MISS"
    assert "data: [DONE]" in streamed.text
    assert plain.headers["x-promptcache"] == "HIT"
    assert plain.json()["choices"][0]["message"]["content"] == "echo: hello world"
    assert fake_engine.calls == 1


async def test_no_cache_recomputes_and_stores(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        await client.post(CHAT, json=openai_body())
        fresh = await client.post(CHAT, json=openai_body(), headers={"cache-control": "no-cache"})
        again = await client.post(CHAT, json=openai_body())
    assert fresh.headers["x-promptcache"] == "BYPASS"
    assert again.headers["x-promptcache"] == "HIT"
    assert again.json()["id"] == fresh.json()["id"]  # the no-cache result replaced the entry
    assert fake_engine.calls == 2


async def test_no_store_serves_but_does_not_write(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        first = await client.post(CHAT, json=openai_body(), headers={"cache-control": "no-store"})
        second = await client.post(CHAT, json=openai_body())
        third = await client.post(CHAT, json=openai_body(), headers={"cache-control": "no-store"})
    assert first.headers["x-promptcache"] == "MISS"
    assert second.headers["x-promptcache"] == "MISS"
    assert third.headers["x-promptcache"] == "HIT"  # no-store still reads
    assert fake_engine.calls == 2


async def test_max_age_rejects_older_entries(
    serve: ServerFactory, fake_engine: FakeSyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve() as (client, _):
        await client.post(CHAT, json=openai_body())
        # Two minutes later, as the response cache sees it.
        later = SimpleNamespace(time=lambda: time.time() + 120)
        monkeypatch.setattr(response_cache, "time", later)
        fresh_enough = await client.post(
            CHAT, json=openai_body(), headers={"cache-control": "max-age=600"}
        )
        too_old = await client.post(
            CHAT, json=openai_body(), headers={"cache-control": "max-age=60"}
        )
    assert fresh_enough.headers["x-promptcache"] == "HIT"
    assert int(fresh_enough.headers["age"]) >= 119
    assert too_old.headers["x-promptcache"] == "MISS"
    assert fake_engine.calls == 2


async def test_namespaces_and_bypass_for_sampled_requests(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        await client.post(CHAT, json=openai_body())
        other_ns = await client.post(
            CHAT, json=openai_body(), headers={"x-promptcache-namespace": "eval-run-2"}
        )
        sampled = await client.post(CHAT, json=openai_body(temperature=0.8))
        sampled_again = await client.post(CHAT, json=openai_body(temperature=0.8))
        seeded = await client.post(CHAT, json=openai_body(temperature=0.8, seed=7))
        seeded_again = await client.post(CHAT, json=openai_body(temperature=0.8, seed=7))
    assert other_ns.headers["x-promptcache"] == "MISS"
    assert sampled.headers["x-promptcache"] == "BYPASS"
    assert sampled_again.headers["x-promptcache"] == "BYPASS"
    assert "x-promptcache-key" not in sampled.headers
    assert seeded.headers["x-promptcache"] == "MISS"
    assert seeded_again.headers["x-promptcache"] == "HIT"


async def test_concurrent_identical_misses_compute_once(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    fake_engine.token_delay = 0.02
    async with serve() as (client, _):
        responses = await asyncio.gather(*(client.post(CHAT, json=openai_body()) for _ in range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    outcomes = sorted(r.headers["x-promptcache"] for r in responses)
    assert outcomes == ["HIT"] * 7 + ["MISS"]
    assert len({r.json()["choices"][0]["message"]["content"] for r in responses}) == 1
    assert fake_engine.calls == 1


async def test_engine_errors_are_not_stored(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, app):
        first = await client.post(CHAT, json=openai_body("fail"))
        second = await client.post(CHAT, json=openai_body("fail"))
        streamed = await client.post("/v1/messages", json=anthropic_body("fail", stream=True))
        entries = app.state.cache.store.stats().entries
    assert first.status_code == second.status_code == streamed.status_code == 400
    assert first.json()["error"]["message"] == "the fake engine refuses this prompt"
    assert streamed.json()["type"] == "error"
    assert fake_engine.calls == 3
    assert entries == 0


async def test_without_a_response_cache_everything_bypasses(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve(cache=False) as (client, _):
        first = await client.post(CHAT, json=openai_body())
        second = await client.post(CHAT, json=openai_body())
    assert first.headers["x-promptcache"] == second.headers["x-promptcache"] == "BYPASS"
    assert fake_engine.calls == 2
