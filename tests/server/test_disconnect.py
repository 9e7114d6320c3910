"""A client that leaves mid-stream cancels its generation and stores nothing (real uvicorn)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.conftest import anthropic_body, openai_body
from tests.server.fakes import FakeSyncEngine
from tests.server.live import live_server


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", openai_body("a long answer", stream=True)),
        ("/v1/messages", anthropic_body("a long answer", stream=True)),
    ],
)
def test_disconnect_mid_stream_cancels_generation_and_stores_nothing(
    path: str, body: dict[str, object]
) -> None:
    fake = FakeSyncEngine()
    fake.gate = threading.Event()  # generation holds after its first token
    engine = ThreadedEngine(fake, max_queue=4)
    cache = ResponseCache(open_store("memory://"))
    app = create_app(ServerConfig(), engine=engine, cache=cache)
    try:
        with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as client:
            with client.stream("POST", path, json=body) as response:
                assert response.status_code == 200
                assert response.headers["x-promptcache"] == "MISS"
                first = next(response.iter_bytes())
                assert first.startswith((b"data:", b"event:"))
            # Leaving the block closed the connection mid-stream.
            assert wait_until(lambda: fake.cancelled == 1)
            assert wait_until(lambda: engine.running == 0)
            assert fake.completed == 0
            assert cache.store.stats().entries == 0
            # The server is fine afterwards, and the same request now completes.
            fake.gate.set()
            again = client.post(path, json={**body, "stream": False})
            assert again.status_code == 200
            assert again.headers["x-promptcache"] == "MISS"
            assert cache.store.stats().entries == 1
    finally:
        fake.gate.set()
        asyncio.run(engine.aclose())
