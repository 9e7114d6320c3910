"""``/v1/cache/prefixes`` on a tiny model, in process: create, list, get, PATCH, DELETE,
TTLs on an injected clock, the pin cap, tenants (two API keys) and bad bodies in each
dialect's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from promptcache.engine.local import LocalEngine, LocalEngineConfig
from promptcache.engine.threaded import ThreadedEngine
from promptcache.prefix.cache import PrefixCacheConfig
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from tests.server.fakes import FakeSyncEngine
from tests.tiny_models import build_tiny_model

MODEL = "tiny-llama"
CONFIG = PrefixCacheConfig(block_size=4, min_cache_tokens=16, kv_cache_bytes=8 << 20)
DOCUMENT = " ".join(f"Clause {i} says {i * 7 % 13}." for i in range(20))
KEY_A, KEY_B = "key-a", "key-b"
Serve = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


class WallClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def loaded() -> Any:
    return build_tiny_model()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def serve(loaded: Any, clock: WallClock) -> Serve:
    @asynccontextmanager
    async def factory(
        config: ServerConfig | None = None, prefix_cache: PrefixCacheConfig = CONFIG
    ) -> AsyncIterator[httpx.AsyncClient]:
        local = LocalEngine(
            LocalEngineConfig(prefix_cache=prefix_cache), loaded=loaded, prefix_clock=clock
        )
        engine = ThreadedEngine(local, max_queue=8)
        app = create_app(config or ServerConfig(), engine=engine, cache=None)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
        finally:
            await engine.aclose()

    return factory


def openai_prefix(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": DOCUMENT},
            {"role": "user", "content": "Read the clauses."},
        ],
        "ttl": "5m",
        **extra,
    }


def anthropic_prefix(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "system": DOCUMENT,
        "messages": [{"role": "user", "content": "Read the clauses."}],
        "ttl": 300,
        **extra,
    }


def follow_up(text: str = "What does clause 3 say?") -> dict[str, Any]:
    body = openai_prefix()
    del body["ttl"]
    body["messages"] += [
        {"role": "assistant", "content": "Done."},
        {"role": "user", "content": text},
    ]
    return {**body, "max_tokens": 2}


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_create_list_get_patch_delete(serve: Serve, clock: WallClock) -> None:
    async with serve() as client:
        created = await client.post("/v1/cache/prefixes", json=openai_prefix(name="clauses"))
        assert created.status_code == 200, created.text
        prefix = created.json()
        assert prefix["id"].startswith("pfx_") and prefix["object"] == "cache.prefix"
        assert prefix["model"] == MODEL and prefix["name"] == "clauses" and prefix["ttl"] == 300
        assert prefix["expires_at"] == int(clock.now) + 300
        assert 0 < prefix["cached_tokens"] <= prefix["tokens"] < prefix["cached_tokens"] + 4

        listed = (await client.get("/v1/cache/prefixes")).json()
        assert listed == {"object": "list", "data": [prefix]}
        assert (await client.get(f"/v1/cache/prefixes/{prefix['id']}")).json() == prefix

        clock.now += 100
        patched = await client.patch(f"/v1/cache/prefixes/{prefix['id']}", json={"ttl": "1h"})
        assert patched.status_code == 200
        assert patched.json()["expires_at"] == int(clock.now) + 3600
        assert patched.json()["ttl"] == 3600

        stats = (await client.get("/v1/cache/stats")).json()["prefix_cache"]
        assert stats["blocks_pinned"] == prefix["cached_tokens"] // 4
        assert stats["named_prefixes"] == 1

        deleted = await client.delete(f"/v1/cache/prefixes/{prefix['id']}")
        assert deleted.json() == {
            "id": prefix["id"],
            "object": "cache.prefix.deleted",
            "deleted": True,
        }
        assert (await client.get(f"/v1/cache/prefixes/{prefix['id']}")).status_code == 404
        assert (await client.delete(f"/v1/cache/prefixes/{prefix['id']}")).status_code == 404
        stats = (await client.get("/v1/cache/stats")).json()["prefix_cache"]
        assert stats["blocks_pinned"] == 0 and stats["named_prefixes"] == 0


async def test_a_later_request_reads_the_pinned_prefix(serve: Serve) -> None:
    async with serve() as client:
        prefix = (await client.post("/v1/cache/prefixes", json=anthropic_prefix())).json()
        # Pinned in Anthropic's shape, read in OpenAI's: one canonical prefix.
        answer = await client.post("/v1/chat/completions", json=follow_up())
        assert answer.status_code == 200, answer.text
        usage = answer.json()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] == prefix["cached_tokens"]


async def test_the_ttl_runs_out(serve: Serve, clock: WallClock) -> None:
    async with serve() as client:
        prefix = (await client.post("/v1/cache/prefixes", json=openai_prefix(ttl="90s"))).json()
        clock.now += 89
        assert (await client.get(f"/v1/cache/prefixes/{prefix['id']}")).status_code == 200
        clock.now += 1
        assert (await client.get(f"/v1/cache/prefixes/{prefix['id']}")).status_code == 404
        assert (await client.get("/v1/cache/prefixes")).json()["data"] == []
        stats = (await client.get("/v1/cache/stats")).json()["prefix_cache"]
        assert stats["blocks_pinned"] == 0


async def test_tenants_never_see_each_others_prefixes(serve: Serve) -> None:
    async with serve(ServerConfig(api_keys=(KEY_A, KEY_B))) as client:
        mine = await client.post("/v1/cache/prefixes", json=openai_prefix(), headers=bearer(KEY_A))
        prefix_id = mine.json()["id"]
        theirs = {"x-api-key": KEY_B, "anthropic-version": "2023-06-01"}
        assert (await client.get("/v1/cache/prefixes", headers=theirs)).json()["data"] == []
        for method in ("GET", "DELETE"):
            refused = await client.request(
                method, f"/v1/cache/prefixes/{prefix_id}", headers=theirs
            )
            assert refused.status_code == 404
            assert refused.json()["error"]["type"] == "not_found_error"  # Anthropic's shape
        patched = await client.patch(
            f"/v1/cache/prefixes/{prefix_id}", json={"ttl": 60}, headers=bearer(KEY_B)
        )
        assert patched.status_code == 404 and patched.json()["error"]["code"] is None
        other = await client.post("/v1/chat/completions", json=follow_up(), headers=bearer(KEY_B))
        assert other.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        assert (await client.get("/v1/cache/prefixes")).status_code == 401
        own = await client.get(f"/v1/cache/prefixes/{prefix_id}", headers=bearer(KEY_A))
        assert own.status_code == 200


async def test_the_pin_cap_refusal_names_the_cap(serve: Serve) -> None:
    capped = PrefixCacheConfig(
        block_size=4, min_cache_tokens=16, kv_cache_bytes=8 << 20, max_pinned_fraction=0.0005
    )
    async with serve(prefix_cache=capped) as client:
        refused = await client.post("/v1/cache/prefixes", json=anthropic_prefix())
        assert refused.status_code == 400
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "pin cap" in error["message"] and "max_pinned_fraction" in error["message"]
        assert (await client.get("/v1/cache/prefixes")).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (openai_prefix(temperature=0), "temperature", "not accepted in a prefix"),
        (openai_prefix(ttl="forever"), "ttl", "ttl must be"),
        (openai_prefix(ttl=0), "ttl", "ttl must be"),
        (openai_prefix(ttl=8 * 86400), "ttl", "at most"),
        (openai_prefix(ttl=True), "ttl", "ttl must be"),
        (openai_prefix(name=""), "name", "name must be"),
        (openai_prefix(format="gemini"), "format", "format must be"),
        ({**openai_prefix(), "messages": []}, "messages", "empty array"),
        (
            {
                **openai_prefix(),
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "text",
                                "text": DOCUMENT,
                                "cache_control": {"type": "ephemeral"},
                            }
                        ],
                    }
                ],
            },
            "cache_control",
            "cache_control is not accepted",
        ),
    ],
)
async def test_bad_openai_bodies_are_400s_in_openai_shape(
    serve: Serve, body: dict[str, Any], param: str, words: str
) -> None:
    async with serve() as client:
        refused = await client.post("/v1/cache/prefixes", json=body)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error" and words in error["message"]
        assert param in (error["param"] or "")
        assert (await client.get("/v1/cache/prefixes")).json()["data"] == []


async def test_bad_anthropic_bodies_are_400s_in_anthropic_shape(serve: Serve) -> None:
    async with serve() as client:
        for body, words in (
            (anthropic_prefix(max_tokens=5), "'max_tokens' is not accepted"),
            (anthropic_prefix(ttl="1w"), "ttl must be"),
            ({**anthropic_prefix(), "messages": [{"role": "system", "content": "x"}]}, "system"),
        ):
            refused = await client.post("/v1/cache/prefixes", json=body)
            assert refused.status_code == 400
            assert refused.json()["type"] == "error"
            assert words in refused.json()["error"]["message"]
        short = await client.post(
            "/v1/cache/prefixes",
            json={
                "model": MODEL,
                "format": "anthropic",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert short.status_code == 400 and "at least 16 tokens" in short.json()["error"]["message"]
        missing = await client.post("/v1/cache/prefixes", json=anthropic_prefix(model="nope"))
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        not_json = await client.post(
            "/v1/cache/prefixes", content=b"{", headers={"anthropic-version": "1"}
        )
        assert not_json.status_code == 400 and not_json.json()["type"] == "error"
        patch = await client.patch("/v1/cache/prefixes/pfx_x", json={"ttl": 5, "name": "y"})
        assert patch.status_code == 400 and patch.json()["error"]["param"] == "name"


async def test_system_and_tools_alone_make_a_prefix(serve: Serve) -> None:
    async with serve() as client:
        body = {
            "model": MODEL,
            "system": DOCUMENT,
            "tools": [
                {
                    "name": "lookup",
                    "description": "Find a clause.",
                    "input_schema": {"type": "object"},
                }
            ],
        }
        created = await client.post("/v1/cache/prefixes", json=body)
        assert created.status_code == 200, created.text
        prefix = created.json()
        chat = {**body, "max_tokens": 2, "messages": [{"role": "user", "content": "Clause 2?"}]}
        answer = await client.post("/v1/messages", json=chat)
        assert answer.json()["usage"]["cache_read_input_tokens"] == prefix["cached_tokens"]


async def test_an_engine_without_a_kv_cache_says_so(fake_engine: FakeSyncEngine) -> None:
    engine = ThreadedEngine(fake_engine, max_queue=4)
    app = create_app(ServerConfig(), engine=engine, cache=None)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            for method in ("POST", "GET"):
                refused = await client.request(
                    method, "/v1/cache/prefixes", json=anthropic_prefix(model="fake-model")
                )
                assert refused.status_code == 400
                assert "KV prefix cache" in refused.json()["error"]["message"]
    finally:
        await engine.aclose()
