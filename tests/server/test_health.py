"""Liveness, readiness and the component gauge say which part is unwell, and only then."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from promptcache.store.base import ResponseStore, StoredEntry, StoreStats
from tests.conftest import RedisProcess
from tests.server.conftest import openai_body
from tests.server.fakes import FakeSyncEngine

CHAT = "/v1/chat/completions"


class SwitchableStore(ResponseStore):
    """A memory store that raises on every call while ``down`` is set."""

    def __init__(self) -> None:
        self.inner = open_store("memory://")
        self.url = "memory://switchable"
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("store is down")

    def get(self, key: str) -> StoredEntry | None:
        self._check()
        return self.inner.get(key)

    def put(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._check()
        self.inner.put(key, value, ttl=ttl)

    def delete(self, key: str) -> bool:
        self._check()
        return self.inner.delete(key)

    def clear(self) -> int:
        self._check()
        return self.inner.clear()

    def stats(self) -> StoreStats:
        return self.inner.stats()


@asynccontextmanager
async def running(
    engine: ThreadedEngine, store: ResponseStore
) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(store))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            yield client, app
    finally:
        await engine.aclose()


def component_up(metrics: str, component: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(f'promptcache_component_up{{component="{component}"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no promptcache_component_up for {component}")


async def test_a_healthy_server_is_live_and_ready() -> None:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=4, workers=2)
    async with running(engine, open_store("memory://")) as (client, _):
        live = await client.get("/healthz")
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    assert live.status_code == 200
    assert live.json()["status"] == "ok"
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ok"
    assert body["components"]["engine"]["up"] is True
    assert body["components"]["engine"]["workers_alive"] == 2
    assert body["components"]["store"]["up"] is True
    assert component_up(metrics, "engine") == 1.0
    assert component_up(metrics, "store") == 1.0


async def test_a_failing_store_is_degraded_not_unready_and_requests_still_succeed() -> None:
    store = SwitchableStore()
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=4)
    async with running(engine, store) as (client, _):
        store.down = True
        answer = await client.post(CHAT, json=openai_body("during the outage"))
        ready = await client.get("/readyz")
        down_metrics = (await client.get("/metrics")).text
        live = await client.get("/healthz")
        store.down = False
        recovered = await client.get("/readyz")
        up_metrics = (await client.get("/metrics")).text
    assert answer.status_code == 200
    assert answer.headers["x-promptcache"] == "MISS"
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert ready.json()["components"]["store"]["up"] is False
    assert ready.json()["components"]["store"]["failures"] >= 1
    assert component_up(down_metrics, "store") == 0.0
    assert live.status_code == 200
    assert recovered.json()["status"] == "ok"
    assert component_up(up_metrics, "store") == 1.0


@pytest.mark.redis
async def test_a_redis_outage_shows_as_degraded_then_recovers(
    redis_process: RedisProcess,
) -> None:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=4)
    async with running(engine, open_store(redis_process.url)) as (client, _):
        assert (await client.get("/readyz")).json()["status"] == "ok"
        redis_process.kill()
        answer = await client.post(CHAT, json=openai_body("redis is gone"))
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
        redis_process.start()
        status = ""
        for _ in range(100):
            status = (await client.get("/readyz")).json()["status"]
            if status == "ok":
                break
            await asyncio.sleep(0.05)
    assert answer.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["status"] == "degraded"
    assert component_up(metrics, "store") == 0.0
    assert status == "ok"


async def test_a_dead_worker_makes_the_server_unready() -> None:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=4, workers=2)
    async with running(engine, open_store("memory://")) as (client, _):
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        engine._threads[1] = dead
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
    assert ready.status_code == 503
    assert ready.json()["status"] == "unready"
    assert ready.json()["components"]["engine"]["workers_alive"] == 1
    assert component_up(metrics, "engine") == 0.0


async def test_a_stalled_engine_makes_the_server_unready() -> None:
    fake = FakeSyncEngine()
    fake.gate = threading.Event()  # holds every generation after its first token
    engine = ThreadedEngine(fake, max_queue=4, stall_seconds=0.2)
    try:
        async with running(engine, open_store("memory://")) as (client, _):
            stuck = asyncio.create_task(client.post(CHAT, json=openai_body("held here")))
            while not fake.started.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.4)
            ready = await client.get("/readyz")
            fake.gate.set()
            answer = await stuck
            after = await client.get("/readyz")
    finally:
        fake.gate.set()
    assert ready.status_code == 503
    assert ready.json()["components"]["engine"]["stalled"] is True
    assert answer.status_code == 200
    assert after.status_code == 200


async def test_a_draining_server_is_unready_but_live() -> None:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=4)
    async with running(engine, open_store("memory://")) as (client, app):
        app.state.draining = True
        ready = await client.get("/readyz")
        live = await client.get("/healthz")
    assert ready.status_code == 503
    assert ready.json()["status"] == "draining"
    assert live.status_code == 200
