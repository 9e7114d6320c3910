from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.fakes import FakeSyncEngine

ServerFactory = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, FastAPI]]]


@pytest.fixture
def fake_engine() -> FakeSyncEngine:
    return FakeSyncEngine()


@pytest.fixture
def serve(fake_engine: FakeSyncEngine) -> Iterator[ServerFactory]:
    """``async with serve(config=..., max_queue=...) as (client, app)``: in-process server."""

    @asynccontextmanager
    async def factory(
        config: ServerConfig | None = None,
        *,
        max_queue: int = 8,
        cache: bool = True,
        **app_options: Any,
    ) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
        engine = ThreadedEngine(fake_engine, max_queue=max_queue)
        response_cache = ResponseCache(open_store("memory://")) if cache else None
        app = create_app(
            config or ServerConfig(), engine=engine, cache=response_cache, **app_options
        )
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client, app
        finally:
            if fake_engine.gate is not None:
                fake_engine.gate.set()
            await engine.aclose()

    yield factory


def openai_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def anthropic_body(text: str = "hello world", **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


@pytest.fixture(scope="session")
def local_engine() -> Any:
    """The embedded SmolLM2 model, loaded once per test session (default prefix cache)."""
    from promptcache.engine.local import LocalEngine, LocalEngineConfig

    return LocalEngine.from_config(LocalEngineConfig())


@pytest.fixture(autouse=True)
def _fresh_prefix_cache(request: pytest.FixtureRequest) -> None:
    """Each test that uses the shared embedded-model engine starts with an empty KV cache.

    The engine is loaded once per session; without this, pins left by earlier tests
    (1 h breakpoints, 24 h retention) fill the pinned share of the budget and a later
    test's writes are refused -- its result would depend on which tests ran before it.
    """
    if "local_engine" in request.fixturenames:
        engine = request.getfixturevalue("local_engine")
        # Blocks held by a generation still finishing on a module-scoped server (a
        # stream the previous test's client closed) survive a clear; wait for them to be
        # let go, or they would hit for this test's first request.
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:
            stats = engine.prefix_stats()
            if stats is None or stats.blocks_referenced == 0:
                break
            time.sleep(0.05)
        engine.clear_prefix_cache()
