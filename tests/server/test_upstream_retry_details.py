"""Upstream resilience and key details, through the gateway on loopback with the official
SDKs: a provider's long Retry-After passed on to the client, retries and attempts counted
in /metrics and /v1/cache/stats, a stream that dies before its first event retried, and a
caller's key and betas sent to an Anthropic upstream the way the caller sent them."""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator

import anthropic
import httpx
import openai
import pytest

from promptcache.engine.upstream import RetryPolicy, UpstreamCall, UpstreamConfig, UpstreamEngine
from promptcache.engine.upstream.attempts import AttemptCounts
from promptcache.engine.upstream.replicas import ReplicaEngine
from promptcache.errors import UpstreamUnavailableError
from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.result import Result
from tests.server.fake_provider import FakeProvider, Step
from tests.server.upstream_gateway import gateway

KEY = "sk-caller-key-7777"
OAUTH = "sk-ant-oat01-caller-oauth-token-8888"
BETAS = "oauth-2025-04-20,interleaved-thinking-2025-05-14"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ANTHROPIC_MESSAGES: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]


def figure(metrics: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text (0 when absent)."""
    shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(f"{name}{{{shown}}}" if labels else name) + r" ([0-9.e+]+)"
    found = re.search(pattern, metrics)
    return float(found.group(1)) if found else 0.0


# -- 1. the provider's Retry-After reaches the client ---------------------------------


def test_a_long_retry_after_is_passed_on_in_each_dialect() -> None:
    provider = FakeProvider()
    provider.script.extend(
        [
            Step(status=429, headers={"retry-after": "120"}),
            Step(status=429, headers={"retry-after": "120"}),
            Step(status=503, headers={"retry-after-ms": "90500"}),
        ]
    )
    with gateway(provider) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="m-1", messages=MESSAGES)
        claude = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
        with pytest.raises(anthropic.RateLimitError) as claude_limited:
            claude.messages.create(model="m-1", max_tokens=8, messages=ANTHROPIC_MESSAGES)
        with pytest.raises(openai.APIStatusError) as unavailable:
            client.chat.completions.create(model="m-1", messages=MESSAGES, temperature=0.5)
    # Not waited for (over a minute): one call each (both routes reach this OpenAI-style
    # provider), the provider's wait passed on.
    assert len(provider.calls("/v1/chat/completions")) == 3
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"] == "120"
    assert claude_limited.value.status_code == 429
    assert claude_limited.value.response.headers["retry-after"] == "120"
    # A provider's 503 is the gateway's 502 (the upstream failed); its wait, rounded up.
    assert unavailable.value.status_code == 502
    assert unavailable.value.response.headers["retry-after"] == "91"


def test_a_retry_after_past_the_deadline_is_passed_on_and_the_own_429_keeps_one_second() -> None:
    provider = FakeProvider()
    provider.script.extend(
        [Step(status=429, headers={"retry-after": "30"}), *[Step(status=429)] * 3]
    )
    with gateway(provider, request_timeout=5.0) as url:
        limited = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "m-1", "messages": MESSAGES},
            headers={"authorization": f"Bearer {KEY}"},
        )
        plain = httpx.post(  # 429s with no Retry-After: retried, then the gateway's own 1 s
            f"{url}/v1/chat/completions",
            json={"model": "m-1", "messages": MESSAGES, "temperature": 0.7},
            headers={"authorization": f"Bearer {KEY}"},
        )
    assert limited.status_code == 429 and limited.headers["retry-after"] == "30"
    assert plain.status_code == 429 and plain.headers["retry-after"] == "1"
    assert len(provider.calls("/v1/chat/completions")) == 4


# -- 2. retries and attempts counted --------------------------------------------------


def test_retries_and_attempts_are_counted_in_metrics_and_stats() -> None:
    provider = FakeProvider()
    provider.script.extend(
        [Step(status=503), Step(status=429, headers={"retry-after": "0.01"}), Step()]
    )
    with gateway(provider) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        answer = client.chat.completions.create(model="m-1", messages=MESSAGES)
        provider.script.extend([Step(status=400)])
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m-1", messages=MESSAGES, temperature=0.5)
        metrics = httpx.get(f"{url}/metrics").text
        stats = httpx.get(f"{url}/v1/cache/stats", headers={"x-api-key": KEY}).json()
    assert answer.choices[0].message.content == "echo: hi"
    assert figure(metrics, "promptcache_upstream_retries_total", reason="503") == 1
    assert figure(metrics, "promptcache_upstream_retries_total", reason="429") == 1
    assert figure(metrics, "promptcache_upstream_attempts_total", outcome="retried") == 2
    assert figure(metrics, "promptcache_upstream_attempts_total", outcome="ok") == 1
    assert figure(metrics, "promptcache_upstream_attempts_total", outcome="failed") == 1
    assert stats["engine"]["upstream"] == {
        "attempts": {"retried": 2, "ok": 1, "failed": 1},
        "retries": {"503": 1, "429": 1},
    }


def test_connect_failures_are_counted_by_reason() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with gateway(None, upstream_url=f"http://127.0.0.1:{port}", retries=2) as url:
        refused = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "m-1", "messages": MESSAGES},
            headers={"authorization": f"Bearer {KEY}"},
        )
        metrics = httpx.get(f"{url}/metrics").text
    assert refused.status_code == 502
    assert figure(metrics, "promptcache_upstream_retries_total", reason="connect") == 2
    assert figure(metrics, "promptcache_upstream_attempts_total", outcome="failed") == 1
    assert figure(metrics, "promptcache_upstream_attempts_total", outcome="ok") == 0


# -- 4. a stream that dies before its first event is retried -------------------------


@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
def test_a_stream_dying_before_its_first_event_is_retried_in_each_dialect(upstream: str) -> None:
    provider = FakeProvider()
    provider.script.extend(
        [Step(die_before_events=True), Step(), Step(die_before_events=True), Step()]
    )
    with gateway(provider, dialect=upstream) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(model="m-1", messages=MESSAGES, stream=True)
        text = "".join(c.delta.content or "" for chunk in stream for c in chunk.choices)
        claude = anthropic.Anthropic(base_url=url, api_key=KEY, max_retries=0)
        with claude.messages.stream(
            model="m-1", max_tokens=8, messages=ANTHROPIC_MESSAGES
        ) as claude_stream:
            claude_text = "".join(claude_stream.text_stream)
        metrics = httpx.get(f"{url}/metrics").text
    assert text == "echo: hi" and claude_text == "echo: hi"
    path = "/v1/chat/completions" if upstream == "openai" else "/v1/messages"
    assert len(provider.calls(path)) == 4  # both client routes: one retry each
    assert figure(metrics, "promptcache_upstream_retries_total", reason="dropped") == 2


def test_a_stream_that_keeps_dying_before_any_event_is_a_502_with_no_bytes_sent() -> None:
    provider = FakeProvider()
    provider.script.extend([Step(die_before_events=True)] * 3)
    with gateway(provider, retries=2) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="m-1", messages=MESSAGES, stream=True)
    # Nothing was sent before the engine's first event, so it is still an HTTP status.
    assert caught.value.status_code == 502
    assert "closed the connection" in caught.value.message
    assert "(3 attempts)" in caught.value.message
    assert len(provider.calls("/v1/chat/completions")) == 3


# -- 3. the caller's credential and betas toward Anthropic ---------------------------


def test_an_oauth_token_goes_to_anthropic_as_bearer_with_the_callers_betas() -> None:
    provider = FakeProvider(keys=(OAUTH, KEY))
    with gateway(provider, dialect="anthropic") as url:
        claude_code = anthropic.Anthropic(
            base_url=url,
            auth_token=OAUTH,
            default_headers={"anthropic-beta": BETAS},
            max_retries=0,
        )
        message = claude_code.messages.create(
            model="m-1", max_tokens=8, messages=ANTHROPIC_MESSAGES
        )
        with claude_code.messages.stream(
            model="m-1", max_tokens=8, messages=[{"role": "user", "content": "streamed"}]
        ) as stream:
            streamed = "".join(stream.text_stream)
        plain = httpx.post(  # another caller, x-api-key and no betas
            f"{url}/v1/messages",
            json={"model": "m-1", "max_tokens": 8, "messages": ANTHROPIC_MESSAGES},
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
        )
    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert streamed == "echo: streamed" and plain.status_code == 200
    oauth_call, stream_call, plain_call = provider.calls("/v1/messages")
    for call in (oauth_call, stream_call):
        assert call.authorization == f"Bearer {OAUTH}" and call.api_key is None
        assert call.headers["anthropic-beta"] == BETAS
        # The engine reads the answer itself: it speaks its own API version.
        assert call.headers["anthropic-version"] == "2023-06-01"
    # x-api-key stays x-api-key; the first caller's betas stayed on its requests.
    assert plain_call.api_key == KEY and plain_call.authorization is None
    assert "anthropic-beta" not in plain_call.headers


def test_toward_openai_style_upstreams_the_key_is_bearer_and_no_betas_go() -> None:
    provider = FakeProvider(keys=(KEY,))
    with gateway(provider) as url:
        answer = httpx.post(
            f"{url}/v1/messages",
            json={"model": "m-1", "max_tokens": 8, "messages": ANTHROPIC_MESSAGES},
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": BETAS},
        )
    assert answer.status_code == 200
    (call,) = provider.calls("/v1/chat/completions")
    assert call.authorization == f"Bearer {KEY}" and call.api_key is None
    assert "anthropic-beta" not in call.headers


class _DiesAfterHeaders(httpx.AsyncByteStream):
    """A 200 body that sends a keep-alive comment, then loses its connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b": keep-alive\n\n"
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


async def test_the_engine_retries_a_stream_whose_2xx_body_dies_before_any_event() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, stream=_DiesAfterHeaders())
        chunks = (
            'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m-1",'
            '"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\n'
            "data: [DONE]\n\n"
        )
        return httpx.Response(200, content=chunks.encode())

    engine = UpstreamEngine(
        UpstreamConfig(base_url="http://api.example.test/v1", retry=RetryPolicy(max_delay=0.0)),
        transport=httpx.MockTransport(answer),
    )
    request = ChatRequest(
        model="m-1", messages=(Message(role="user", content=(TextBlock(text="hi"),)),)
    )
    events = [event async for event in engine.stream(request)]
    await engine.aclose()
    assert len(calls) == 2
    assert isinstance(events[-1], Result) and events[-1].choices[0].text == "ok"
    assert engine.upstream_attempts() == AttemptCounts(
        attempts={"retried": 1, "ok": 1}, retries={"dropped": 1}
    )


async def test_replicas_pass_the_last_retry_after_on_and_sum_their_attempts() -> None:
    def unavailable(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, headers={"retry-after": "75"}, json={"error": "loading"})

    urls = ["http://10.9.0.1:8000/v1", "http://10.9.0.2:8000/v1"]
    replicas = [
        (
            url,
            UpstreamEngine(
                UpstreamConfig(base_url=url), transport=httpx.MockTransport(unavailable)
            ),
        )
        for url in urls
    ]
    fleet = ReplicaEngine(replicas)
    request = ChatRequest(
        model="m-1", messages=(Message(role="user", content=(TextBlock(text="hi"),)),)
    )
    with pytest.raises(UpstreamUnavailableError) as caught:
        await fleet.complete(request)
    await fleet.aclose()
    assert caught.value.retry_after == 75.0  # over a minute: not waited for, passed on
    assert fleet.upstream_attempts() == AttemptCounts(attempts={"failed": 2}, retries={})


def test_betas_are_part_of_the_cache_key_within_a_tenant() -> None:
    provider = FakeProvider()
    with gateway(provider, dialect="anthropic") as url:

        def ask(betas: str | None) -> httpx.Response:
            headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
            if betas is not None:
                headers["anthropic-beta"] = betas
            body = {"model": "m-1", "max_tokens": 8, "messages": ANTHROPIC_MESSAGES}
            return httpx.post(f"{url}/v1/messages", json=body, headers=headers)

        without, first = ask(None), ask(BETAS)
        reordered = ask("interleaved-thinking-2025-05-14, oauth-2025-04-20,oauth-2025-04-20")
        again = ask(None)
    assert [r.headers["x-promptcache"] for r in (without, first, reordered, again)] == [
        "MISS",
        "MISS",
        "HIT",
        "HIT",
    ]
    assert without.headers["x-promptcache-key"] != first.headers["x-promptcache-key"]
    assert len(provider.calls("/v1/messages")) == 2


async def test_a_callers_betas_join_the_configured_ones_on_its_request_only() -> None:
    seen: list[httpx.Headers] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(
            200,
            json={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m-1",
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 1, "output_tokens": 1},
            },
        )

    config = UpstreamConfig(
        base_url="http://api.example.test",
        dialect="anthropic",
        extra_headers={"anthropic-beta": "context-1m-2025-08-07"},
    )
    engine = UpstreamEngine(config, transport=httpx.MockTransport(answer))
    request = ChatRequest(
        model="m-1", messages=(Message(role="user", content=(TextBlock(text="hi"),)),)
    )
    call = UpstreamCall(api_key=OAUTH, key_header="authorization", anthropic_beta=BETAS)
    await engine.bind(call).complete(request)
    await engine.complete(request)
    await engine.aclose()
    assert seen[0]["anthropic-beta"] == f"context-1m-2025-08-07,{BETAS}"
    assert seen[0]["authorization"] == f"Bearer {OAUTH}" and "x-api-key" not in seen[0]
    assert seen[1]["anthropic-beta"] == "context-1m-2025-08-07"
    assert "authorization" not in seen[1]
