"""The upstream's model list: kept per key, refreshed, the last good list on failure."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from promptcache.engine.upstream import RetryPolicy, UpstreamCall, UpstreamConfig, UpstreamEngine
from promptcache.engine.upstream.discovery import ModelDirectory
from promptcache.errors import AuthenticationError, UpstreamError
from promptcache.result import ModelInfo


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Source:
    def __init__(self) -> None:
        self.calls = 0
        self.fail: Exception | None = None

    async def __call__(self) -> list[ModelInfo]:
        self.calls += 1
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [ModelInfo(id=f"m-{self.calls}")]


async def test_kept_for_the_refresh_interval_then_asked_again() -> None:
    clock, source = Clock(), Source()
    directory = ModelDirectory(refresh=60, clock=clock)
    assert [m.id for m in await directory.get(None, source)] == ["m-1"]
    clock.now = 59
    assert [m.id for m in await directory.get(None, source)] == ["m-1"]
    clock.now = 61
    assert [m.id for m in await directory.get(None, source)] == ["m-2"]
    assert [m.id for m in await directory.get("sk-other", source)] == ["m-3"]  # its own list


async def test_the_last_good_list_is_served_while_the_upstream_fails() -> None:
    clock, source = Clock(), Source()
    directory = ModelDirectory(refresh=60, retry_failed=10, clock=clock)
    await directory.get(None, source)
    source.fail = UpstreamError("down")
    clock.now = 61
    assert [m.id for m in await directory.get(None, source)] == ["m-1"]
    assert [m.id for m in await directory.get(None, source)] == ["m-1"]  # not asked again yet
    assert source.calls == 2
    clock.now = 72
    source.fail = None
    assert [m.id for m in await directory.get(None, source)] == ["m-3"]


async def test_no_list_yet_or_a_refused_key_is_the_callers_error() -> None:
    clock, source = Clock(), Source()
    directory = ModelDirectory(refresh=60, clock=clock)
    source.fail = UpstreamError("down")
    with pytest.raises(UpstreamError):
        await directory.get(None, source)
    source.fail = None
    await directory.get("sk-a", source)
    clock.now = 61
    source.fail = AuthenticationError("revoked")
    with pytest.raises(AuthenticationError):
        await directory.get("sk-a", source)
    source.fail = None
    assert [m.id for m in await directory.get("sk-a", source)] == ["m-4"]  # forgotten


async def test_concurrent_askers_share_one_fetch() -> None:
    source = Source()
    directory = ModelDirectory()
    lists = await asyncio.gather(*(directory.get(None, source) for _ in range(5)))
    assert source.calls == 1 and all(found == lists[0] for found in lists)


async def test_the_engine_lists_anthropic_pages_and_the_callers_key() -> None:
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("x-api-key"), request.url.params.get("after_id")))
        if request.url.params.get("after_id") is None:
            page = {"data": [{"id": "claude-a", "created_at": "2025-02-01T00:00:00Z"}]}
            return httpx.Response(200, json={**page, "has_more": True, "last_id": "claude-a"})
        return httpx.Response(200, json={"data": [{"id": "claude-b"}], "has_more": False})

    up = UpstreamEngine(
        UpstreamConfig(
            base_url="https://api.example.test",
            dialect="anthropic",
            api_key="sk-server",
            retry=RetryPolicy(max_retries=0),
        ),
        transport=httpx.MockTransport(handler),
    )
    found = await up.bind(UpstreamCall(api_key="sk-caller")).discover_models()
    assert [(m.id, m.created) for m in found] == [("claude-a", 1738368000), ("claude-b", 0)]
    assert seen == [("sk-caller", None), ("sk-caller", "claude-a")]
    assert up.models() == []  # a caller's list is not the server's
    await up.bind(UpstreamCall()).discover_models()
    assert [m.id for m in up.models()] == ["claude-a", "claude-b"]  # the server's is
