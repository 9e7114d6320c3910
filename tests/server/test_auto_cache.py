"""--auto-cache: the engine sees checkpoints the client did not send."""

from __future__ import annotations

from promptcache.checkpoints import AutoCacheConfig
from promptcache.server.config import ServerConfig
from tests.server.conftest import ServerFactory, anthropic_body
from tests.server.fakes import FakeSyncEngine


async def test_auto_cache_adds_breakpoints_before_the_engine(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    config = ServerConfig(auto_cache=AutoCacheConfig(ttl="1h"))
    async with serve(config) as (client, _):
        response = await client.post(
            "/v1/messages", json=anthropic_body("question", system="You are terse.")
        )
    assert response.status_code == 200
    points = fake_engine.requests[0].breakpoints()
    assert [(p.section, p.ttl) for p in points] == [("system", "1h"), ("messages", "1h")]


async def test_without_auto_cache_the_request_is_untouched(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    async with serve() as (client, _):
        await client.post("/v1/messages", json=anthropic_body("question", system="Be terse."))
    assert fake_engine.requests[0].breakpoints() == ()
