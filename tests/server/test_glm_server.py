"""The GLM path and Zhipu's SDK on the fake engine: both base URLs, errors, 404s."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import zai
from zai import ZhipuAiClient

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.conftest import ServerFactory, openai_body
from tests.server.fakes import FAKE_MODEL, FakeSyncEngine
from tests.server.live import live_server

GLM_CHAT = "/api/paas/v4/chat/completions"


@pytest.fixture
def base_url(fake_engine: FakeSyncEngine) -> Iterator[str]:
    engine = ThreadedEngine(fake_engine, max_queue=8)
    config = ServerConfig(model_aliases={"glm-4.6": FAKE_MODEL})
    app = create_app(config, engine=engine, cache=ResponseCache(open_store("memory://")))
    try:
        with live_server(app) as url:
            yield url
    finally:
        asyncio.run(engine.aclose())


@pytest.mark.parametrize("path", ["/api/paas/v4", "/v1"])
def test_zai_sdk_on_both_base_urls(base_url: str, path: str, fake_engine: FakeSyncEngine) -> None:
    client: Any = ZhipuAiClient(api_key="unused", base_url=base_url + path)
    messages: Any = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi there"}]
    first = client.chat.completions.create(model="glm-4.6", messages=messages, temperature=0)
    again = client.chat.completions.create(
        model="glm-4.6", messages=messages, temperature=0, thinking={"type": "disabled"}
    )
    openai_zero = httpx.post(
        base_url + "/v1/chat/completions",
        json={"model": "glm-4.6", "messages": messages, "temperature": 0},
    )
    assert first.model == "glm-4.6"
    assert first.choices[0].message.content == "echo: hi there"
    assert first.usage is not None and first.usage.prompt_tokens > 0
    assert first.usage.prompt_tokens_details is not None
    # temperature=0 arrives as 0.01 + do_sample=false: greedy, the same entry as an
    # OpenAI client's temperature 0; thinking (sent on upstream) is part of the key.
    assert again.choices[0].message.content == first.choices[0].message.content
    assert openai_zero.headers["x-promptcache"] == "HIT"
    assert fake_engine.calls == 2
    streamed = client.chat.completions.create(
        model="glm-4.6", messages=messages, stream=True, request_id="req-000001"
    )
    chunks = list(streamed)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi there"
    if path == "/api/paas/v4":
        assert chunks[-1].usage is not None  # GLM's streams always end with the usage


def test_zai_sdk_errors_are_glm_shaped_on_the_glm_path(base_url: str) -> None:
    client = ZhipuAiClient(api_key="unused", base_url=base_url + "/api/paas/v4", max_retries=0)
    with pytest.raises(zai.core.APIRequestFailedError) as caught:
        client.chat.completions.create(model="glm-4.6", messages=[], temperature=0.5)
    assert caught.value.status_code == 400
    assert caught.value.response.json()["error"]["code"] == "1214"
    with pytest.raises(zai.core.APIStatusError) as missing:
        client.chat.completions.create(model="glm-5", messages=[{"role": "user", "content": "x"}])
    assert missing.value.status_code == 404
    error = missing.value.response.json()["error"]
    assert error["code"] == "1211" and "glm-5" in error["message"]


def test_the_glm_body_echoes_request_id_and_reports_cached_tokens(base_url: str) -> None:
    body = {**openai_body(model="glm-4.6"), "request_id": "req-abcdef", "do_sample": False}
    response = httpx.post(base_url + GLM_CHAT, json=body).json()
    assert response["request_id"] == "req-abcdef"
    assert response["model"] == "glm-4.6"
    assert set(response["usage"]) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "prompt_tokens_details",
    }


async def test_a_route_404_is_a_plain_not_found_not_a_model_error(serve: ServerFactory) -> None:
    async with serve() as (client, _):
        openai_404 = await client.post("/v1/nowhere", json={})
        glm_404 = await client.get(GLM_CHAT)
        model_404 = await client.post(GLM_CHAT, json=openai_body(model="glm-4.6"))
    assert openai_404.status_code == 404
    assert openai_404.json()["error"]["code"] is None
    assert "No route for POST /v1/nowhere" in openai_404.json()["error"]["message"]
    assert glm_404.status_code == 405
    assert glm_404.json() == {
        "error": {"code": "1222", "message": f"Method GET is not allowed on {GLM_CHAT}."}
    }
    assert model_404.status_code == 404 and model_404.json()["error"]["code"] == "1211"
