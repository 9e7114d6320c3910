"""Retries, timeouts and the errors that name the upstream (engine/upstream/transport.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from promptcache.engine.upstream import (
    RetryPolicy,
    UpstreamCall,
    UpstreamConfig,
    UpstreamEngine,
    UpstreamTimeoutError,
)
from promptcache.engine.upstream.transport import retry_after
from promptcache.errors import AuthenticationError, OverloadedError, RequestError, UpstreamError
from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.result import Result, TextDelta

REQUEST = ChatRequest(
    model="m-1", messages=(Message(role="user", content=(TextBlock(text="Hi"),)),)
)
KEY = "sk-server-secret-4242"
Handler = Callable[[httpx.Request], httpx.Response]


def ok_body() -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "m-1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


def sse(*frames: str) -> httpx.Response:
    return httpx.Response(
        200, content="".join(frames).encode(), headers={"content-type": "text/event-stream"}
    )


CHUNK = (
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m-1",'
    '"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
)
END = (
    'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m-1",'
    '"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
)


class Scripted:
    """A handler answering each call with the next response (or raising it)."""

    def __init__(self, *steps: httpx.Response | Exception) -> None:
        self.steps = list(steps)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        step = self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]
        if isinstance(step, Exception):
            raise step
        return step


def upstream(
    handler: Handler | None, *, retries: int = 2, base: str = "https://api.example.test/v1"
) -> tuple[UpstreamEngine, list[float]]:
    up = UpstreamEngine(
        UpstreamConfig(
            base_url=base, api_key=KEY, dialect="openai", retry=RetryPolicy(max_retries=retries)
        ),
        transport=None if handler is None else httpx.MockTransport(handler),
    )
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    up.sender.sleep = record
    return up, waits


def status(code: int, **headers: str) -> httpx.Response:
    body = {"error": {"message": f"busy {code}", "type": "x", "param": None, "code": None}}
    return httpx.Response(code, json=body, headers=headers)


# --- statuses worth another attempt --------------------------------------------------------


async def test_429_with_retry_after_then_success_waits_what_the_provider_asked() -> None:
    handler = Scripted(status(429, **{"retry-after": "2"}), httpx.Response(200, json=ok_body()))
    up, waits = upstream(handler)
    result = await up.complete(REQUEST)
    assert result.choices[0].text == "Hello"
    assert handler.calls == 2
    assert waits == [2.0]


async def test_retry_after_ms_wins_and_an_http_date_counts_down() -> None:
    handler = Scripted(
        status(429, **{"retry-after-ms": "250", "retry-after": "9"}),
        status(
            503,
            **{
                "retry-after": format_datetime(
                    datetime.now(UTC) + timedelta(seconds=5), usegmt=True
                )
            },
        ),
        httpx.Response(200, json=ok_body()),
    )
    up, waits = upstream(handler)
    await up.complete(REQUEST)
    assert waits[0] == 0.25
    assert 3.0 < waits[1] <= 5.0


@pytest.mark.parametrize("code", [500, 502, 503, 504, 529])
async def test_a_server_fault_then_success_backs_off_with_full_jitter(code: int) -> None:
    handler = Scripted(status(code), httpx.Response(200, json=ok_body()))
    up, waits = upstream(handler)
    await up.complete(REQUEST)
    assert handler.calls == 2
    assert len(waits) == 1 and 0.0 <= waits[0] <= 0.5  # the first retry's cap


async def test_retries_exhausted_name_the_upstream_status_and_attempts() -> None:
    handler = Scripted(status(503))
    up, waits = upstream(handler)
    with pytest.raises(UpstreamError) as caught:
        await up.complete(REQUEST)
    assert handler.calls == 3  # the first attempt and max_retries=2
    assert len(waits) == 2 and waits[1] <= 1.0  # the second retry's cap: 0.5 * 2
    message = caught.value.message
    assert "api.example.test answered 503: busy 503 (3 attempts)" in message
    assert caught.value.upstream_status == 503


async def test_no_retry_for_a_request_error_or_when_the_provider_says_so() -> None:
    for response in (status(400), status(503, **{"x-should-retry": "false"})):
        handler = Scripted(response)
        up, waits = upstream(handler)
        with pytest.raises((RequestError, UpstreamError), match="busy"):
            await up.complete(REQUEST)
        assert handler.calls == 1 and waits == []
    handler = Scripted(
        status(409, **{"x-should-retry": "true"}), httpx.Response(200, json=ok_body())
    )
    up, _ = upstream(handler)
    await up.complete(REQUEST)
    assert handler.calls == 2


async def test_max_retries_zero_is_one_attempt() -> None:
    handler = Scripted(status(429))
    up, waits = upstream(handler, retries=0)
    with pytest.raises(OverloadedError, match="busy 429"):
        await up.complete(REQUEST)
    assert handler.calls == 1 and waits == []


# --- the deadline and long waits -----------------------------------------------------------


async def test_a_retry_after_past_the_deadline_is_answered_at_once() -> None:
    handler = Scripted(status(429, **{"retry-after": "30"}), httpx.Response(200, json=ok_body()))
    up, waits = upstream(handler)
    deadline = asyncio.get_running_loop().time() + 5.0
    with pytest.raises(OverloadedError, match="busy 429"):
        await up.bind(UpstreamCall(deadline=deadline)).complete(REQUEST)
    assert handler.calls == 1 and waits == []
    # Without a deadline the same answer is waited for.
    handler = Scripted(status(429, **{"retry-after": "30"}), httpx.Response(200, json=ok_body()))
    up, waits = upstream(handler)
    await up.complete(REQUEST)
    assert waits == [30.0]


async def test_a_retry_after_over_a_minute_is_a_quota_not_waited_for() -> None:
    handler = Scripted(status(429, **{"retry-after": "3600"}), httpx.Response(200, json=ok_body()))
    up, waits = upstream(handler)
    with pytest.raises(OverloadedError):
        await up.complete(REQUEST)
    assert handler.calls == 1 and waits == []


# --- transport failures ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connect_refused_is_retried_then_a_502_naming_the_host() -> None:
    port = _closed_port()
    up, waits = upstream(None, base=f"http://user:hunter2-pass@127.0.0.1:{port}/v1")
    with pytest.raises(UpstreamError) as caught:
        await up.complete(REQUEST)
    assert not isinstance(caught.value, UpstreamTimeoutError)
    message = caught.value.message
    assert message == (
        f"The upstream 127.0.0.1:{port} could not be reached: connection refused (3 attempts)"
    )
    assert len(waits) == 2
    await up.aclose()


async def test_a_read_timeout_is_a_504_naming_the_host_and_the_timeout() -> None:
    handler = Scripted(httpx.ReadTimeout("timed out"))
    up, waits = upstream(handler, retries=1)
    with pytest.raises(UpstreamTimeoutError) as caught:
        await up.complete(REQUEST)
    assert caught.value.message == (
        "The upstream api.example.test timed out reading the response "
        "(read timeout 600 s) (2 attempts)"
    )
    assert handler.calls == 2 and len(waits) == 1


async def test_a_timeout_then_success_is_retried() -> None:
    handler = Scripted(httpx.ConnectTimeout("slow"), httpx.Response(200, json=ok_body()))
    up, _ = upstream(handler)
    assert (await up.complete(REQUEST)).choices[0].text == "Hello"
    assert handler.calls == 2


# --- streams ---------------------------------------------------------------------------------


async def test_a_stream_is_retried_while_opening() -> None:
    handler = Scripted(status(503), sse(CHUNK, END))
    up, waits = upstream(handler)
    events = [event async for event in up.stream(REQUEST)]
    assert isinstance(events[0], TextDelta) and isinstance(events[-1], Result)
    assert handler.calls == 2 and len(waits) == 1


async def test_a_stream_that_dies_after_its_first_event_is_never_retried() -> None:
    handler = Scripted(sse(CHUNK, 'data: {"id":"c","object":"chat.compl'), sse(CHUNK, END))
    up, waits = upstream(handler)
    stream = up.stream(REQUEST)
    first = await anext(stream)
    assert isinstance(first, TextDelta) and first.text == "Hel"
    with pytest.raises(UpstreamError, match=r"api\.example\.test"):
        async for _ in stream:
            pass
    assert handler.calls == 1 and waits == []


# --- what never shows: the key ---------------------------------------------------------------


async def test_a_provider_refusal_quoting_the_key_is_scrubbed() -> None:
    refused = httpx.Response(
        401, json={"error": {"message": f"Incorrect API key provided: {KEY}", "type": "x"}}
    )
    up, waits = upstream(Scripted(refused))
    with pytest.raises(AuthenticationError) as caught:
        await up.complete(REQUEST)
    assert KEY not in str(caught.value) and "***" in str(caught.value)
    assert waits == []  # a refusal is not retried
    caller = "sk-caller-own-7777"
    refused = httpx.Response(401, json={"error": {"message": f"bad key {caller}", "type": "x"}})
    up, _ = upstream(Scripted(refused))
    with pytest.raises(AuthenticationError) as caught:
        await up.bind(UpstreamCall(api_key=caller)).complete(REQUEST)
    assert caller not in str(caught.value)


async def test_a_bound_call_sends_the_callers_key_instead_of_the_servers() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json=ok_body())

    up, _ = upstream(handler)
    await up.bind(UpstreamCall(api_key="sk-alice")).complete(REQUEST)
    await up.complete(REQUEST)
    assert seen == ["Bearer sk-alice", f"Bearer {KEY}"]
    assert "sk-alice" not in repr(UpstreamCall(api_key="sk-alice"))


# --- the parts --------------------------------------------------------------------------------


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    clock = now.timestamp
    assert retry_after({"retry-after": "1.5"}) == 1.5
    assert retry_after({"retry-after-ms": "20"}) == 0.02
    assert retry_after({"retry-after": "Thu, 01 Jan 2026 00:00:07 GMT"}, clock) == 7.0
    assert retry_after({"retry-after": "Wed, 31 Dec 2025 00:00:00 GMT"}, clock) == 0.0
    for junk in ("-1", "nan", "inf", "soon", ""):
        assert retry_after({"retry-after": junk}) is None
    assert retry_after({}) is None


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy()
    assert [policy.backoff(n, lambda: 1.0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.backoff(3, lambda: 0.0) == 0.0
    assert policy.backoff(10_000, lambda: 1.0) == 8.0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"initial_delay": float("nan")}, "initial_delay"),
        ({"max_delay": -1.0}, "max_delay"),
    ],
)
def test_policy_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        RetryPolicy(**kwargs)


def test_connect_timeout_is_validated() -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        UpstreamConfig(base_url="https://api.example.test/v1", connect_timeout=0)


async def test_a_transport_failure_that_no_retry_can_fix_is_one_attempt() -> None:
    handler = Scripted(httpx.UnsupportedProtocol("no such scheme"))
    up, waits = upstream(handler)
    with pytest.raises(UpstreamError) as caught:
        await up.complete(REQUEST)
    assert caught.value.message == (
        "The upstream api.example.test could not be reached: UnsupportedProtocol: no such scheme"
    )
    assert handler.calls == 1 and waits == []
