"""The admin switches of the app: the metrics key and turning cache clearing off."""

from __future__ import annotations

import pytest

from promptcache.server.config import ServerConfig
from tests.server.conftest import ServerFactory
from tests.server.fakes import FakeSyncEngine


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def test_metrics_key_is_required_when_set(serve: ServerFactory) -> None:
    config = ServerConfig(api_keys=("tenant",), admin_keys=("boss",), metrics_key="scrape")
    async with serve(config) as (client, _):
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers=bearer("nope"))
        tenant = await client.get("/metrics", headers=bearer("tenant"))
        admin = await client.get("/metrics", headers=bearer("boss"))
        basic = await client.get("/metrics", headers={"authorization": "Basic c2NyYXBl"})
        scraped = await client.get("/metrics", headers=bearer("scrape"))
    for refused in (missing, wrong, tenant, admin, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "metrics key" in refused.json()["error"]["message"]
    assert scraped.status_code == 200
    assert "promptcache_requests" in scraped.text


async def test_metrics_key_opens_only_metrics(serve: ServerFactory) -> None:
    config = ServerConfig(api_keys=("tenant",), metrics_key="scrape")
    async with serve(config) as (client, _):
        stats = await client.get("/v1/cache/stats", headers=bearer("scrape"))
        models = await client.get("/v1/models", headers=bearer("scrape"))
    assert stats.status_code == models.status_code == 401


async def test_metrics_stay_open_without_a_metrics_key(serve: ServerFactory) -> None:
    async with serve(ServerConfig(api_keys=("tenant",))) as (client, _):
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert "promptcache_requests" in scraped.text


async def test_admin_endpoints_off_refuses_clearing_even_to_an_admin(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    config = ServerConfig(admin_keys=("boss",), admin_endpoints=False)
    async with serve(config) as (client, _):
        refused = await client.delete("/v1/cache", headers=bearer("boss"))
        stats = await client.get("/v1/cache/stats", headers=bearer("boss"))
    assert refused.status_code == 403
    assert "promptcache clear --store URL" in refused.json()["error"]["message"]
    assert fake_engine.cleared == 0
    assert stats.status_code == 200  # reading stays allowed


@pytest.mark.parametrize("key", ["", " scrape", "scrape "])
def test_metrics_key_must_be_a_real_key(key: str) -> None:
    with pytest.raises(ValueError, match="metrics_key"):
        ServerConfig(metrics_key=key)


def test_config_repr_hides_the_keys() -> None:
    shown = repr(ServerConfig(api_keys=("tenant-1",), admin_keys=("boss-1",), metrics_key="m-1"))
    assert "tenant-1" not in shown and "boss-1" not in shown and "m-1" not in shown
