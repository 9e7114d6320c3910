"""Every bad input gets the dialect's own error body and status; never a 500 or an entry."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from promptcache.server.config import ServerConfig
from tests.server.conftest import ServerFactory, anthropic_body, openai_body
from tests.server.fakes import FakeSyncEngine

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def assert_openai_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == error_type
    assert error["message"]
    return error


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]


def marked(ttl: str) -> dict[str, Any]:
    return {"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": ttl}}


async def test_invalid_json_and_schema_are_400_in_each_dialect(serve: ServerFactory) -> None:
    async with serve() as (client, app):
        bad_json = await client.post(
            CHAT, content=b"{not json", headers={"content-type": "application/json"}
        )
        bad_json_a = await client.post(
            MESSAGES, content=b"[1,", headers={"content-type": "application/json"}
        )
        no_messages = await client.post(CHAT, json={"model": "fake-model"})
        bad_type = await client.post(MESSAGES, json=anthropic_body(max_tokens="ten"))
        entries = app.state.cache.store.stats().entries
    assert_openai_error(bad_json, 400, "invalid_request_error")
    assert_anthropic_error(bad_json_a, 400, "invalid_request_error")
    assert_openai_error(no_messages, 400, "invalid_request_error")
    assert_anthropic_error(bad_type, 400, "invalid_request_error")
    assert entries == 0


async def test_breakpoint_rules_are_400(serve: ServerFactory) -> None:
    five = [marked("5m") for _ in range(5)]
    late_1h = [marked("5m"), marked("1h")]
    async with serve() as (client, _):
        too_many = await client.post(
            MESSAGES, json=anthropic_body(messages=[{"role": "user", "content": five}])
        )
        misordered = await client.post(
            MESSAGES, json=anthropic_body(messages=[{"role": "user", "content": late_1h}])
        )
        too_many_openai = await client.post(
            CHAT, json=openai_body(messages=[{"role": "user", "content": five}])
        )
    assert_anthropic_error(too_many, 400, "invalid_request_error")
    assert "maximum of 4" in too_many.json()["error"]["message"]
    assert_anthropic_error(misordered, 400, "invalid_request_error")
    assert_openai_error(too_many_openai, 400, "invalid_request_error")


async def test_unknown_model_is_404(serve: ServerFactory, fake_engine: FakeSyncEngine) -> None:
    async with serve() as (client, _):
        openai = await client.post(CHAT, json=openai_body(model="gpt-9"))
        anthropic = await client.post(MESSAGES, json=anthropic_body(model="claude-9"))
    error = assert_openai_error(openai, 404, "invalid_request_error")
    assert "gpt-9" in error["message"]
    assert_anthropic_error(anthropic, 404, "not_found_error")
    assert fake_engine.calls == 0


async def test_body_over_the_limit_is_413_by_header_and_by_stream(serve: ServerFactory) -> None:
    big = openai_body("word " * 400)

    async def chunked() -> Any:
        payload = httpx.Request("POST", "http://x", json=big).content
        for start in range(0, len(payload), 256):
            yield payload[start : start + 256]

    async with serve(ServerConfig(max_body_bytes=1024)) as (client, _):
        declared = await client.post(CHAT, json=big)
        streamed = await client.post(MESSAGES, content=chunked())
        small = await client.post(CHAT, json=openai_body())
    assert_openai_error(declared, 413, "invalid_request_error")
    assert "1024" in declared.json()["error"]["message"]
    assert_anthropic_error(streamed, 413, "request_too_large")
    assert small.status_code == 200


async def test_full_queue_is_429(serve: ServerFactory, fake_engine: FakeSyncEngine) -> None:
    fake_engine.gate = threading.Event()
    async with serve(max_queue=1) as (client, app):
        running = asyncio.create_task(client.post(CHAT, json=openai_body("one")))
        await asyncio.to_thread(fake_engine.started.wait, 5)
        queued = asyncio.create_task(client.post(MESSAGES, json=anthropic_body("two")))
        for _ in range(500):
            if app.state.engine.queue_depth == 1:
                break
            await asyncio.sleep(0.01)
        refused = await client.post(CHAT, json=openai_body("three"))
        refused_a = await client.post(MESSAGES, json=anthropic_body("three", stream=True))
        fake_engine.gate.set()
        done = await asyncio.gather(running, queued)
        entries = app.state.cache.store.stats().entries
    error = assert_openai_error(refused, 429, "rate_limit_exceeded")
    assert "queue is full" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert_anthropic_error(refused_a, 429, "rate_limit_error")
    assert [r.status_code for r in done] == [200, 200]
    assert entries == 2  # the refused requests stored nothing


@pytest.mark.parametrize(
    ("method", "path", "status", "body_type"),
    [
        ("GET", "/v1/nothing-here", 404, "openai"),
        ("GET", "/v1/messages", 405, "anthropic"),
        ("PUT", "/v1/chat/completions", 405, "openai"),
    ],
)
async def test_framework_errors_use_the_dialect_of_the_path(
    serve: ServerFactory, method: str, path: str, status: int, body_type: str
) -> None:
    async with serve() as (client, _):
        response = await client.request(method, path)
    assert response.status_code == status
    if body_type == "openai":
        assert response.json()["error"]["message"]
    else:
        assert response.json()["type"] == "error"


async def test_bad_cache_headers_are_400(serve: ServerFactory) -> None:
    async with serve() as (client, _):
        max_age = await client.post(
            CHAT, json=openai_body(), headers={"cache-control": "max-age=soon"}
        )
        namespace = await client.post(
            CHAT, json=openai_body(), headers={"x-promptcache-namespace": "has spaces"}
        )
    assert_openai_error(max_age, 400, "invalid_request_error")
    assert_openai_error(namespace, 400, "invalid_request_error")
