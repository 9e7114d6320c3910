"""Keys and tenants, and the admin routes: models, stats, clear, health, metrics."""

from __future__ import annotations

from promptcache.server.auth import tenant_id
from promptcache.server.config import ServerConfig
from promptcache.server.observers import CompletedRequest
from tests.server.conftest import ServerFactory, anthropic_body, openai_body
from tests.server.fakes import FakeSyncEngine

CHAT = "/v1/chat/completions"
KEYS = ServerConfig(api_keys=("key-alice", "key-bob"), admin_keys=("key-admin",))


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_missing_or_wrong_key_is_401(serve: ServerFactory) -> None:
    async with serve(KEYS) as (client, _):
        missing = await client.post(CHAT, json=openai_body())
        wrong = await client.post(CHAT, json=openai_body(), headers=bearer("nope"))
        wrong_a = await client.post(
            "/v1/messages", json=anthropic_body(), headers={"x-api-key": "nope"}
        )
        models = await client.get("/v1/models")
        ok_bearer = await client.post(CHAT, json=openai_body(), headers=bearer("key-alice"))
        ok_x_api = await client.post(
            "/v1/messages", json=anthropic_body(), headers={"x-api-key": "key-bob"}
        )
        health = await client.get("/healthz")
    assert missing.status_code == wrong.status_code == wrong_a.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    assert wrong_a.json()["error"]["type"] == "authentication_error"
    assert models.status_code == 401
    assert ok_bearer.status_code == ok_x_api.status_code == 200
    assert health.status_code == 200


async def test_each_key_is_its_own_tenant(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve(KEYS) as (client, _):
        alice = await client.post(CHAT, json=openai_body(), headers=bearer("key-alice"))
        alice_again = await client.post(CHAT, json=openai_body(), headers=bearer("key-alice"))
        bob = await client.post(CHAT, json=openai_body(), headers=bearer("key-bob"))
    assert alice.headers["x-promptcache"] == "MISS"
    assert alice_again.headers["x-promptcache"] == "HIT"
    assert bob.headers["x-promptcache"] == "MISS"
    assert alice.headers["x-promptcache-key"] != bob.headers["x-promptcache-key"]
    tenants = [request.tenant for request in fake_engine.requests]
    assert tenants == [tenant_id("key-alice"), tenant_id("key-bob")]
    assert all("key-" not in tenant for tenant in tenants)


async def test_clearing_needs_an_admin_key(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve(KEYS) as (client, _):
        await client.post(CHAT, json=openai_body(), headers=bearer("key-alice"))
        refused = await client.delete("/v1/cache", headers=bearer("key-alice"))
        cleared = await client.delete("/v1/cache", headers=bearer("key-admin"))
        after = await client.post(CHAT, json=openai_body(), headers=bearer("key-alice"))
    assert refused.status_code == 401
    assert cleared.status_code == 200
    assert cleared.json() == {"cleared": {"responses": 1, "prefix_cache": True}}
    assert fake_engine.cleared == 1
    assert after.headers["x-promptcache"] == "MISS"


async def test_clearing_with_tenant_keys_but_no_admin_key_is_refused(
    serve: ServerFactory,
) -> None:
    async with serve(ServerConfig(api_keys=("key-alice",))) as (client, _):
        refused = await client.delete("/v1/cache", headers=bearer("key-alice"))
    assert refused.status_code == 401
    assert "--admin-key" in refused.json()["error"]["message"]


async def test_models_in_both_formats(serve: ServerFactory) -> None:
    async with serve() as (client, _):
        openai = await client.get("/v1/models")
        anthropic = await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    assert [m["id"] for m in openai.json()["data"]] == ["fake-model", "fake"]
    assert openai.json()["object"] == "list"
    assert anthropic.json()["data"][0]["type"] == "model"


async def test_stats_report_cache_outcomes_and_prefix_cache(serve: ServerFactory) -> None:
    async with serve(stats_sections={"costs": lambda tenant: {"saved": "0", "tenant": tenant}}) as (
        client,
        _,
    ):
        await client.post(CHAT, json=openai_body())
        await client.post(CHAT, json=openai_body())
        await client.post(CHAT, json=openai_body(temperature=1.0))
        stats = (await client.get("/v1/cache/stats")).json()
    assert stats["requests"] == {"hit": 1, "miss": 1, "bypass": 1, "hit_ratio": 0.5}
    assert stats["response_cache"]["entries"] == 1
    assert stats["response_cache"]["url"] == "memory://"
    assert stats["prefix_cache"]["tokens_queried"] == 100
    assert stats["prefix_cache"]["token_hit_ratio"] == 0.4
    assert stats["engine"]["queue_depth"] == 0
    assert stats["costs"] == {"saved": "0", "tenant": None}
    assert stats["scope"] == "all"


async def test_metrics_expose_requests_cache_prefix_and_ttft(serve: ServerFactory) -> None:
    async with serve() as (client, _):
        await client.post(CHAT, json=openai_body())
        await client.post(CHAT, json=openai_body())
        await client.post("/v1/messages", json=anthropic_body(model="nope"))
        text = (await client.get("/metrics")).text
    assert 'promptcache_requests_total{route="openai",status="200"} 2.0' in text
    assert 'promptcache_requests_total{route="anthropic",status="404"} 1.0' in text
    assert 'promptcache_response_cache_total{result="hit"} 1.0' in text
    assert 'promptcache_response_cache_total{result="miss"} 1.0' in text
    assert "promptcache_prefix_tokens_queried_total 100.0" in text
    assert "promptcache_prefix_tokens_hit_total 40.0" in text
    assert "promptcache_kv_bytes_used 4096.0" in text
    assert "promptcache_kv_bytes_pinned 0.0" in text
    assert 'promptcache_time_to_first_token_seconds_count{route="openai"} 1.0' in text
    assert "promptcache_engine_queue_depth 0.0" in text


async def test_observers_see_every_completed_request_and_add_headers(
    serve: ServerFactory,
) -> None:
    seen: list[CompletedRequest] = []

    class Recorder:
        def on_complete(self, record: CompletedRequest) -> dict[str, str]:
            seen.append(record)
            return {"x-promptcache-cost": "0.001"}

    async with serve(observers=[Recorder()]) as (client, _):
        miss = await client.post(CHAT, json=openai_body())
        hit = await client.post(CHAT, json=openai_body(stream=True))
        streamed_miss = await client.post("/v1/messages", json=anthropic_body("new", stream=True))
        await client.post(CHAT, json=openai_body(model="unknown"))
    assert miss.headers["x-promptcache-cost"] == "0.001"
    assert hit.headers["x-promptcache-cost"] == "0.001"
    assert "x-promptcache-cost" not in streamed_miss.headers  # headers left before the usage
    assert [(r.route, r.cache, r.stream) for r in seen] == [
        ("openai", "MISS", False),
        ("openai", "HIT", True),
        ("anthropic", "MISS", True),
    ]
    assert seen[0].model == "fake-model"
    assert seen[0].usage.output_tokens == 3
