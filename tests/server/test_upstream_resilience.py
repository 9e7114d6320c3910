"""The gateway in front of a provider that fails: retried answers, honest 502/504s that
name the upstream, a stream that dies after its first event, the request's deadline."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest

from tests.server.fake_provider import FakeProvider, Step
from tests.server.upstream_gateway import gateway

KEY = "sk-caller-key-5555"
BODY = {"model": "m-1", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
AUTH = {"authorization": f"Bearer {KEY}"}


def chat(url: str, **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={**BODY, **extra}, headers=AUTH)


def test_429_with_retry_after_then_success_reaches_the_client_as_a_success() -> None:
    provider = FakeProvider()
    provider.script.extend([Step(status=429, headers={"retry-after": "0.05"}), Step()])
    with gateway(provider) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(
            model="m-1", messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices[0].message.content == "echo: hi"
    assert len(provider.calls("/v1/chat/completions")) == 2


def test_a_503_then_success_and_retries_exhausted() -> None:
    provider = FakeProvider()
    provider.script.extend([Step(status=503), Step(), *[Step(status=503)] * 3])
    with gateway(provider) as url:
        recovered = chat(url)
        exhausted = chat(url, temperature=0.5)  # sampled: not answered from the cache
    assert recovered.status_code == 200
    assert exhausted.status_code == 502
    message = exhausted.json()["error"]["message"]
    assert message.startswith("The upstream 127.0.0.1:")
    assert message.endswith("answered 503: scripted 503 (3 attempts)")
    assert len(provider.calls("/v1/chat/completions")) == 5


def test_a_stream_that_dies_after_its_first_event_is_an_in_band_error_not_a_retry() -> None:
    provider = FakeProvider()
    provider.script.extend([Step(die_midway=True), Step()])
    with gateway(provider) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="m-1", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="closed the connection"):
            for chunk in stream:
                received.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(received) == "Half"
    assert len(provider.calls("/v1/chat/completions")) == 1


def test_connect_refused_is_a_502_naming_the_host() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with gateway(None, upstream_url=f"http://127.0.0.1:{port}", retries=1) as url:
        refused = chat(url)
        anthropic_refused = httpx.post(
            f"{url}/v1/messages", json=BODY, headers={"x-api-key": KEY, "anthropic-version": "1"}
        )
    assert refused.status_code == 502
    assert refused.json()["error"]["message"] == (
        f"The upstream 127.0.0.1:{port} could not be reached: connection refused (2 attempts)"
    )
    assert anthropic_refused.status_code == 502
    assert anthropic_refused.json()["error"]["type"] == "api_error"
    assert KEY not in refused.text + anthropic_refused.text


def test_a_read_timeout_is_a_504_naming_the_host() -> None:
    provider = FakeProvider()
    provider.script.append(Step(sleep=1.5))
    with gateway(provider, read_timeout=0.2, retries=0) as url:
        slow = chat(url)
    assert slow.status_code == 504
    message = slow.json()["error"]["message"]
    assert message.startswith("The upstream 127.0.0.1:")
    assert message.endswith("timed out reading the response (read timeout 0.2 s)")


def test_a_retry_after_past_the_deadline_is_answered_at_once() -> None:
    provider = FakeProvider()
    provider.script.extend([Step(status=429, headers={"retry-after": "30"}), Step()])
    with gateway(provider, request_timeout=5.0) as url:
        limited = chat(url)
    # The provider's 429, not the deadline's 504 half a minute later, and no second call.
    assert limited.status_code == 429
    assert limited.json()["error"]["message"] == "scripted 429"
    assert len(provider.calls("/v1/chat/completions")) == 1
