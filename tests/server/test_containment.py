"""A fault stays with its request: no input can kill a worker, hang a request or a connection."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from promptcache.engine.base import ModelInfo, PrefixCacheSnapshot
from promptcache.engine.threaded import ThreadedEngine
from promptcache.request import ChatRequest
from promptcache.response_cache import ResponseCache
from promptcache.result import PromptUsage, StreamEvent, Usage
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.server.conftest import ServerFactory, anthropic_body, openai_body
from tests.server.fakes import FakeSyncEngine
from tests.server.live import live_server

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


class ForeignPanic(BaseException):
    """Stands in for pyo3's ``PanicException``: a BaseException that is not an Exception."""


class FaultyEngine(FakeSyncEngine):
    """The fake engine, but a last message of ``panic`` / ``bug`` / ``hang`` misbehaves."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        last = request.messages[-1].text() if request.messages else ""
        if last == "panic":
            raise ForeignPanic("end byte index 100 is not a char boundary")
        if last == "bug":
            raise RuntimeError("an engine bug")
        if last == "late panic":
            return self._late_panic()
        if last == "hang":
            return self._hang(cancel)
        return super().generate(request, cancel=cancel)

    def _late_panic(self) -> Iterator[StreamEvent]:
        yield PromptUsage(usage=Usage(input_tokens=3))
        raise ForeignPanic("panicked mid-generation")

    def _hang(self, cancel: threading.Event | None) -> Iterator[StreamEvent]:
        yield PromptUsage(usage=Usage(input_tokens=3))
        while not self.release.wait(0.01):
            if cancel is not None and cancel.is_set():
                self.cancelled += 1
                return


@pytest.fixture
def faulty() -> FaultyEngine:
    return FaultyEngine()


def assert_internal_error(response: httpx.Response, *, anthropic: bool = False) -> None:
    assert response.status_code == 500, response.text
    body = response.json()
    error = body["error"]
    if anthropic:
        assert body["type"] == "error"
        assert error["type"] == "api_error"
    else:
        assert error["type"] == "server_error"
    assert "request id req_" in error["message"]
    # The failure's own text (which may quote input) is logged, not echoed.
    assert "char boundary" not in error["message"]


async def test_a_foreign_panic_fails_its_request_alone_and_workers_live_on(
    faulty: FaultyEngine,
) -> None:
    engine = ThreadedEngine(faulty, max_queue=8, workers=2)
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(open_store("memory://")))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            # More panics than workers: each would have killed one before.
            for text in ("panic", "late panic", "bug", "panic", "panic"):
                assert_internal_error(await client.post(CHAT, json=openai_body(text)))
            assert_internal_error(
                await client.post(MESSAGES, json=anthropic_body("panic")), anthropic=True
            )
            ok = await client.post(CHAT, json=openai_body("still alive"))
            assert engine.health().workers_alive == 2
            assert app.state.cache.store.stats().entries == 1
    finally:
        await engine.aclose()
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"] == "echo: still alive"


async def test_identical_requests_coalesced_on_a_failing_leader_all_get_answers(
    faulty: FaultyEngine,
) -> None:
    engine = ThreadedEngine(faulty, max_queue=16, workers=1)
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(open_store("memory://")))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.wait_for(
                asyncio.gather(*(client.post(CHAT, json=openai_body("panic")) for _ in range(6))),
                timeout=30,
            )
    finally:
        await engine.aclose()
    for response in responses:
        assert_internal_error(response)


async def test_a_stream_whose_engine_panics_ends_with_an_in_band_error(
    faulty: FaultyEngine,
) -> None:
    engine = ThreadedEngine(faulty, max_queue=4)
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(open_store("memory://")))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            openai = await client.post(CHAT, json=openai_body("late panic", stream=True))
            anthropic = await client.post(MESSAGES, json=anthropic_body("late panic", stream=True))
            entries = app.state.cache.store.stats().entries
    finally:
        await engine.aclose()
    assert openai.status_code == 200
    assert '"type":"server_error"' in openai.text
    assert "request id req_" in openai.text
    assert "event: error" in anthropic.text
    assert '"type":"api_error"' in anthropic.text
    assert entries == 0


async def test_a_request_past_the_deadline_is_a_504_and_its_generation_is_cancelled(
    faulty: FaultyEngine,
) -> None:
    engine = ThreadedEngine(faulty, max_queue=4)
    config = ServerConfig(request_timeout=0.3)
    app = create_app(config, engine=engine, cache=ResponseCache(open_store("memory://")))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            plain = await client.post(CHAT, json=openai_body("hang"))
            anthropic = await client.post(MESSAGES, json=anthropic_body("hang"))
            stream = await client.post(CHAT, json=openai_body("hang", stream=True))
            for _ in range(500):
                if faulty.cancelled >= 3 and engine.running == 0:
                    break
                await asyncio.sleep(0.01)
            entries = app.state.cache.store.stats().entries
    finally:
        faulty.release.set()
        await engine.aclose()
    assert plain.status_code == 504
    assert "--request-timeout" in plain.json()["error"]["message"]
    assert anthropic.status_code == 504
    assert anthropic.json()["error"]["type"] == "timeout_error"
    assert stream.status_code == 200  # headers left before the deadline
    assert "--request-timeout" in stream.text
    assert faulty.cancelled == 3
    assert entries == 0


async def test_followers_of_a_hung_leader_are_released_by_their_deadline(
    faulty: FaultyEngine,
) -> None:
    engine = ThreadedEngine(faulty, max_queue=8)
    app = create_app(
        ServerConfig(request_timeout=0.3),
        engine=engine,
        cache=ResponseCache(open_store("memory://")),
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            responses = await asyncio.wait_for(
                asyncio.gather(*(client.post(CHAT, json=openai_body("hang")) for _ in range(4))),
                timeout=30,
            )
    finally:
        faulty.release.set()
        await engine.aclose()
    assert [r.status_code for r in responses] == [504] * 4


def test_a_dead_worker_is_replaced_and_health_tells_meanwhile() -> None:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=4, workers=2)
    try:
        # A worker that died the one way nothing contains: the interpreter's own exit.
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        engine._threads[0] = dead
        health = engine.health()
        assert (health.workers_alive, health.ok) == (1, False)
        result = asyncio.run(engine.complete(_request("after the death")))
        assert result.choices[0].text == "echo: after the death"
        assert engine.health().workers_alive == 2
        assert engine.workers_replaced == 1
    finally:
        asyncio.run(engine.aclose())


def _request(text: str) -> ChatRequest:
    from promptcache.dialects import openai

    return openai.parse_request(openai_body(text))


# -- input the server must refuse with a 4xx, in the caller's dialect ------------


LONE_SURROGATE = b'{"model": "fake-model", "max_tokens": 4, "messages": [{"role": "user", "content": "a\\ud800b"}]}'  # noqa: E501


async def test_lone_surrogates_are_400_in_each_dialect(serve: ServerFactory) -> None:
    key_surrogate = (
        b'{"model": "fake-model", "max_tokens": 4, "messages": [{"role": "user",'
        b' "content": "x"}], "metadata": {"\\udfff": 1}}'
    )
    async with serve() as (client, app):
        openai = await client.post(CHAT, content=LONE_SURROGATE)
        anthropic = await client.post(MESSAGES, content=LONE_SURROGATE)
        in_key = await client.post(CHAT, content=key_surrogate)
        paired = await client.post(
            CHAT, content=LONE_SURROGATE.replace(b"\\ud800", b"\\ud83d\\ude00")
        )
        entries = app.state.cache.store.stats().entries
    for response in (openai, anthropic, in_key):
        assert response.status_code == 400, response.text
        assert "surrogate" in response.text
        response.content.decode("utf-8")  # the body itself is valid UTF-8
    assert anthropic.json()["type"] == "error"
    assert openai.json()["error"]["param"] == "messages[0].content"
    assert paired.status_code == 200  # a proper pair is just an emoji
    assert entries == 1


async def test_deep_nesting_and_unreadable_numbers_are_400(serve: ServerFactory) -> None:
    deep = b'{"model": "fake-model", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    nested: dict[str, Any] = {"a": 1}
    for _ in range(70):
        nested = {"a": nested}
    too_deep = openai_body(metadata=nested)
    long_int = b'{"model": "fake-model", "max_tokens": ' + b"9" * 5000 + b', "messages": []}'
    infinite = (
        b'{"model": "fake-model", "max_tokens": 4, "messages": [{"role": "user",'
        b' "content": "x"}], "tools": [{"type": "function", "function": {"name": "f",'
        b' "parameters": {"type": "number", "maximum": 1e400}}}]}'
    )
    async with serve() as (client, _):
        responses = [
            await client.post(CHAT, content=deep),
            await client.post(MESSAGES, content=deep),
            await client.post(CHAT, json=too_deep),
            await client.post(CHAT, content=long_int),
            await client.post(CHAT, content=infinite),
        ]
    for response in responses:
        assert response.status_code == 400, response.text
    assert "nested more than 64" in responses[0].text
    assert responses[1].json()["type"] == "error"


async def test_a_body_that_is_not_json_by_content_type_is_415(serve: ServerFactory) -> None:
    body = httpx.Request("POST", "http://t", json=openai_body()).content
    async with serve() as (client, _):
        plain = await client.post(CHAT, content=body, headers={"content-type": "text/plain"})
        form = await client.post(
            MESSAGES, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
        )
        charset = await client.post(
            CHAT, content=body, headers={"content-type": "application/json; charset=utf-8"}
        )
        untyped = await client.post(CHAT, content=body, headers={"content-type": ""})
    assert plain.status_code == 415
    assert "application/json" in plain.json()["error"]["message"]
    assert form.status_code == 415
    assert form.json()["type"] == "error"
    assert charset.status_code == 200
    assert untyped.status_code == 200


async def test_a_wrong_method_is_405_invalid_request_in_each_dialect(
    serve: ServerFactory,
) -> None:
    async with serve() as (client, _):
        openai = await client.get(CHAT)
        anthropic = await client.get(MESSAGES)
    assert openai.status_code == 405
    assert openai.json()["error"]["type"] == "invalid_request_error"
    assert anthropic.status_code == 405
    assert anthropic.json()["error"]["type"] == "invalid_request_error"


# -- the keep-alive connection survives errors (real uvicorn, one socket) --------


def _exchange(sock: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    header, _, rest = data.partition(b"\r\n\r\n")
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert fields.get("connection", "").lower() != "close"
    length = int(fields["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        rest += chunk
    return status, rest[:length]


def test_errors_never_poison_the_keep_alive_connection() -> None:
    faulty = FaultyEngine()
    engine = ThreadedEngine(faulty, max_queue=4)
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(open_store("memory://")))

    async def flow_bug(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug outside the flow's own boundary")

    good = httpx.Request("POST", "http://t", json=openai_body("fine")).content
    try:
        with live_server(app) as base:
            port = int(base.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                assert _exchange(sock, "POST", CHAT, LONE_SURROGATE)[0] == 400
                assert _exchange(sock, "POST", CHAT, b"[" * 3000)[0] == 400
                bug = httpx.Request("POST", "http://t", json=openai_body("bug")).content
                assert _exchange(sock, "POST", CHAT, bug)[0] == 500
                assert _exchange(sock, "GET", CHAT)[0] == 405
                flow = app.state.flow
                flow.handle = flow_bug  # the routes look it up per request
                status, body = _exchange(sock, "POST", MESSAGES, good)
                del flow.handle
                assert status == 500
                assert b'"type":"error"' in body
                status, body = _exchange(sock, "POST", CHAT, good)
    finally:
        asyncio.run(engine.aclose())
    assert status == 200
    assert b"echo: fine" in body


def test_health_figures_of_an_idle_engine() -> None:
    class Idle(FakeSyncEngine):
        def models(self) -> list[ModelInfo]:
            return [ModelInfo(id="idle")]

        def prefix_stats(self) -> PrefixCacheSnapshot:
            return PrefixCacheSnapshot()

    engine = ThreadedEngine(Idle(), max_queue=2, workers=3)
    try:
        health = engine.health()
    finally:
        asyncio.run(engine.aclose())
    assert (health.workers, health.workers_alive, health.running) == (3, 3, 0)
    assert health.ok and not health.stalled


async def test_the_cjk_schema_that_killed_workers_is_a_400_every_time() -> None:
    """The reproduction from the hardening issue, on a real local engine (tiny model)."""
    from promptcache.engine.local import LocalEngine
    from tests.tiny_models import build_tiny_model

    local = LocalEngine(loaded=build_tiny_model())
    model = local.models()[0].id
    schema = {"type": "object", "required": {"s": "中" * 60}}
    messages = [{"role": "user", "content": "j"}]
    openai = {
        "model": model,
        "max_tokens": 2,
        "messages": messages,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    anthropic = {
        "model": model,
        "max_tokens": 2,
        "messages": messages,
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    forced = {
        "model": model,
        "max_tokens": 2,
        "messages": messages,
        "tools": [{"name": "f", "input_schema": schema}],
        "tool_choice": {"type": "any"},
    }
    engine = ThreadedEngine(local, max_queue=16, workers=2)
    app = create_app(ServerConfig(), engine=engine, cache=ResponseCache(open_store("memory://")))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            bad = await asyncio.wait_for(
                asyncio.gather(
                    *(client.post(CHAT, json=openai) for _ in range(4)),
                    *(client.post(MESSAGES, json=anthropic) for _ in range(3)),
                    *(client.post(MESSAGES, json=forced) for _ in range(3)),
                ),
                timeout=120,
            )
            fine = await client.post(
                CHAT, json={"model": model, "max_tokens": 2, "messages": messages}
            )
            health = engine.health()
    finally:
        await engine.aclose()
    for response in bad:
        assert response.status_code == 400, response.text
        assert "Invalid schema" in response.text
    assert fine.status_code == 200
    assert health.ok


async def test_surrogate_bytes_in_utf8_and_non_object_tool_schemas_are_400(
    serve: ServerFactory,
) -> None:
    raw_surrogate = (
        b'{"model": "fake-model", "max_tokens": 8, "temperature": 0.7,'
        b' "messages": [{"role": "user", "content": "he\xed\xa0\x80llo"}]}'
    )
    string_tool = openai_body(
        tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
        tool_choice="auto",
    )
    async with serve() as (client, _):
        surrogate = await client.post(CHAT, content=raw_surrogate)
        tool = await client.post(CHAT, json=string_tool)
    assert surrogate.status_code == 400
    assert "UTF-8" in surrogate.json()["error"]["message"]
    assert tool.status_code == 400
    assert "must be a JSON Schema of 'type: \"object\"'" in tool.json()["error"]["message"]
