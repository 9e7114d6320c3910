"""The HTTP fuzz pass: hostile bytes at both chat routes, zero 5xx.

The strategies of :mod:`tests.fuzz.strategies`, sent as raw bytes to the
in-process app (fake engine, memory response cache): every answer is a 200
for a valid body and a 4xx otherwise, never a 5xx; every 4xx is in the
route's dialect and labelled a client error; a rejected request leaves no
entry in the response cache. On a real uvicorn server, a bad request does
not poison its keep-alive connection: the next good request on the same
connection succeeds.
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.fuzz.strategies import (
    Dialect,
    RawRequest,
    bodies,
    encode,
    mutated,
    nested,
    raw_requests,
)
from tests.server.fakes import FakeSyncEngine
from tests.server.live import live_server

ROUTES: dict[Dialect, str] = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
# What a 4xx must never be labelled: these name the server's fault.
SERVER_ERROR_TYPES = {"openai": "server_error", "anthropic": "api_error"}
MAX_BODY_BYTES = 256 * 1024


def good_body(text: str = "hello there") -> dict[str, Any]:
    return {"model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": text}]}


def assert_dialect_error(dialect: Dialect, response: httpx.Response | _Answer) -> None:
    """A 4xx in the route's dialect, with a type that does not blame the server."""
    assert response.headers.get("content-type", "").startswith("application/json"), response
    body = json.loads(response.content)  # the body must be UTF-8 JSON
    if dialect == "openai":
        assert set(body) == {"error"}, body
        error = body["error"]
        assert {"message", "type", "param", "code"} <= set(error), body
    else:
        assert body["type"] == "error", body
        error = body["error"]
        assert {"type", "message"} <= set(error), body
    assert isinstance(error["message"], str) and error["message"], body
    assert isinstance(error["type"], str), body
    assert error["type"] != SERVER_ERROR_TYPES[dialect], (response.status_code, body)


def assert_success(dialect: Dialect, response: httpx.Response, *, stream: bool) -> None:
    assert response.status_code == 200, (response.status_code, response.text)
    assert response.headers.get("x-promptcache") in ("HIT", "MISS", "BYPASS")
    if not stream:
        body = response.json()
        assert body["object" if dialect == "openai" else "type"] in ("chat.completion", "message")
        return
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.content.decode("utf-8")
    assert "event: error" not in text
    for line in text.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            assert "error" not in json.loads(line[len("data: ") :]), line


# -- the in-process app ----------------------------------------------------------


@dataclass
class App:
    """The in-process server, driven from synchronous Hypothesis tests on one loop."""

    runner: asyncio.Runner
    client: httpx.AsyncClient
    app: FastAPI
    engine: FakeSyncEngine

    def post(self, dialect: Dialect, raw: RawRequest) -> httpx.Response:
        headers = {} if raw.content_type is None else {"content-type": raw.content_type}
        request = self.client.post(ROUTES[dialect], content=raw.body, headers=headers)
        return self.runner.run(request)

    def entries(self) -> int:
        cache: ResponseCache = self.app.state.cache
        return cache.store.stats().entries


@asynccontextmanager
async def _serving(engine: FakeSyncEngine) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    threaded = ThreadedEngine(engine, max_queue=8)
    app = create_app(
        ServerConfig(max_body_bytes=MAX_BODY_BYTES),
        engine=threaded,
        cache=ResponseCache(open_store("memory://")),
    )
    # A 500 comes back as a response to assert on, not as the app's exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, app
    finally:
        await threaded.aclose()


@pytest.fixture(scope="module")
def served() -> Iterator[App]:
    """One app for the module (Hypothesis examples share it; each checks its own effect)."""
    engine = FakeSyncEngine()
    with asyncio.Runner() as runner:
        context = _serving(engine)
        client, app = runner.run(context.__aenter__())
        try:
            yield App(runner=runner, client=client, app=app, engine=engine)
        finally:
            runner.run(context.__aexit__(None, None, None))


def check_answer(served: App, dialect: Dialect, raw: RawRequest) -> httpx.Response:
    """Send ``raw``; no 5xx, the right status when known, and no entry for a rejection."""
    before = served.entries()
    response = served.post(dialect, raw)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if raw.expect is not None:
        assert response.status_code == raw.expect, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        assert_dialect_error(dialect, response)
        assert served.entries() == before, "a rejected request left a response-cache entry"
    else:
        stream = response.headers.get("content-type", "").startswith("text/event-stream")
        assert_success(dialect, response, stream=stream)
    return response


@pytest.mark.parametrize("dialect", list(ROUTES))
@given(data=st.data())
def test_raw_requests_never_get_a_5xx(served: App, dialect: Dialect, data: st.DataObject) -> None:
    check_answer(served, dialect, data.draw(raw_requests(dialect), label="request"))


@pytest.mark.parametrize("dialect", list(ROUTES))
@given(data=st.data())
def test_valid_bodies_are_served(served: App, dialect: Dialect, data: st.DataObject) -> None:
    body = data.draw(bodies(dialect), label="body")
    response = check_answer(served, dialect, RawRequest(encode(body), kind="valid", expect=200))
    assert_success(dialect, response, stream=bool(body.get("stream")))


@pytest.mark.parametrize("dialect", list(ROUTES))
@given(data=st.data())
def test_mutated_bodies_never_get_a_5xx(served: App, dialect: Dialect, data: st.DataObject) -> None:
    body = data.draw(mutated(bodies(dialect)), label="body")
    check_answer(served, dialect, RawRequest(encode(body), kind="mutated"))


# Each known fault, every run.
DEEP = b"[" * 5_000 + b"]" * 5_000
KNOWN_RAW: list[tuple[str, RawRequest]] = [
    ("surrogate-escape", RawRequest(encode(good_body("a\ud800")), expect=400)),
    ("surrogate-key", RawRequest(encode({**good_body(), "\udfff": 1}), expect=400)),
    ("surrogate-utf8-bytes", RawRequest(
        encode(good_body(), ascii_only=False).replace(b"hello", b"he\xed\xa0\x80llo"),
        expect=400)),
    ("surrogate-utf8-bytes-uncached", RawRequest(
        encode({**good_body(), "temperature": 0.7}, ascii_only=False).replace(
            b"hello", b"he\xed\xa0\x80llo"), expect=400)),
    ("surrogate-utf8-bytes-model", RawRequest(
        encode(good_body(), ascii_only=False).replace(b"fake-model", b"\xed\xb0\x80"),
        expect=400)),
    ("deep-body", RawRequest(DEEP, expect=400)),
    ("deep-field", RawRequest(
        encode(good_body())[:-1] + b', "metadata": ' + DEEP + b"}", expect=400)),
    ("deep-objects", RawRequest(b'{"a":' * 3_000 + b"1" + b"}" * 3_000, expect=400)),
    ("nested-100", RawRequest(encode({**good_body(), "metadata": nested(100)}), expect=400)),
    ("digits", RawRequest(
        encode(good_body())[:-1] + b', "seed": ' + b"7" * 5_000 + b"}", expect=400)),
    ("nan-token", RawRequest(encode({**good_body(), "temperature": float("nan")}),
                             expect=400)),
    ("1e400-seed", RawRequest(encode(good_body())[:-1] + b', "seed": 1e400}', expect=400)),
    ("2**70-seed", RawRequest(encode({**good_body(), "seed": 2**70}), expect=400)),
    ("text/plain", RawRequest(encode(good_body()), content_type="text/plain", expect=415)),
    ("text/plain-charset", RawRequest(
        encode(good_body()), content_type="text/plain;charset=UTF-8", expect=415)),
    ("form", RawRequest(encode(good_body()),
                        content_type="application/x-www-form-urlencoded")),
    ("no-content-type", RawRequest(encode(good_body()), content_type=None)),
    ("truncated", RawRequest(encode(good_body())[:-3], expect=400)),
    ("invalid-utf8", RawRequest(b'{"model": "\xff"}', expect=400)),
    ("empty", RawRequest(b"", expect=400)),
    ("not-an-object", RawRequest(b"[]", expect=400)),
    ("too-large", RawRequest(encode(good_body("x" * MAX_BODY_BYTES)), expect=413)),
]  # fmt: skip


@pytest.mark.parametrize("dialect", list(ROUTES))
@pytest.mark.parametrize("raw", [r for _, r in KNOWN_RAW], ids=[n for n, _ in KNOWN_RAW])
def test_known_hostile_requests(served: App, dialect: Dialect, raw: RawRequest) -> None:
    check_answer(served, dialect, raw)


@pytest.mark.parametrize("dialect", list(ROUTES))
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_wrong_method_is_a_405_in_the_dialect(served: App, dialect: Dialect, method: str) -> None:
    response = served.runner.run(served.client.request(method, ROUTES[dialect]))
    assert response.status_code == 405, response.text
    assert_dialect_error(dialect, response)


# -- a real server, one keep-alive connection -------------------------------------


@dataclass
class _Answer:
    status_code: int
    headers: dict[str, str]
    content: bytes


class Connection:
    """One HTTP/1.1 keep-alive connection (``http.client``), which it checks is kept."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self._conn.connect()
        self._sock = self._conn.sock

    def send(self, method: str, path: str, body: bytes, content_type: str | None) -> _Answer:
        headers = {"content-type": content_type} if content_type is not None else {}
        self._conn.request(method, path, body=body, headers=headers)
        response = self._conn.getresponse()
        content = response.read()
        return _Answer(
            status_code=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            content=content,
        )

    @property
    def reused(self) -> bool:
        """Still the socket it opened (http.client reconnects silently when closed)."""
        return self._conn.sock is not None and self._conn.sock is self._sock

    def close(self) -> None:
        self._conn.close()


@pytest.fixture(scope="module")
def live() -> Iterator[str]:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=8)
    app = create_app(
        ServerConfig(max_body_bytes=MAX_BODY_BYTES),
        engine=engine,
        cache=ResponseCache(open_store("memory://")),
    )
    try:
        with live_server(app) as base_url:
            yield base_url
    finally:
        asyncio.run(engine.aclose())


def bad_then_good(base_url: str, dialect: Dialect, method: str, path: str, raw: RawRequest) -> None:
    connection = Connection(base_url)
    try:
        good = json.dumps(good_body()).encode()
        first = connection.send("POST", ROUTES[dialect], good, "application/json")
        assert first.status_code == 200, first.content
        bad = connection.send(method, path, raw.body, raw.content_type)
        assert 400 <= bad.status_code < 500, (bad.status_code, bad.content[:2000])
        assert_dialect_error(dialect, bad)
        assert bad.headers.get("connection", "").lower() != "close", bad.headers
        again = connection.send("POST", ROUTES[dialect], good, "application/json")
        assert connection.reused, "the server closed the keep-alive connection"
        assert again.status_code == 200, again.content
    finally:
        connection.close()


LIVE_CASES: list[tuple[str, str, str, RawRequest]] = [
    ("surrogate", "POST", "", RawRequest(encode(good_body("\ud800")))),
    ("deep", "POST", "", RawRequest(DEEP)),
    ("digits", "POST", "", RawRequest(b'{"model": "fake-model", "seed": ' + b"1" * 5000 + b"}")),
    ("truncated", "POST", "", RawRequest(b'{"model": "fake-mo')),
    ("invalid-utf8", "POST", "", RawRequest(b'{"model": "\xc3\x28"}')),
    ("text/plain", "POST", "", RawRequest(encode(good_body()), content_type="text/plain")),
    ("unknown-model", "POST", "", RawRequest(encode({**good_body(), "model": "nope"}))),
    ("engine-refuses", "POST", "", RawRequest(encode(good_body("fail")))),
    ("wrong-method", "GET", "", RawRequest(b"")),
    ("no-route", "POST", "{route}/nowhere", RawRequest(b"{}")),
    ("too-large", "POST", "", RawRequest(encode(good_body("x" * MAX_BODY_BYTES)))),
]  # fmt: skip


@pytest.mark.parametrize("dialect", list(ROUTES))
@pytest.mark.parametrize(
    ("method", "path", "raw"), [c[1:] for c in LIVE_CASES], ids=[c[0] for c in LIVE_CASES]
)
def test_a_bad_request_keeps_the_connection_usable(
    live: str, dialect: Dialect, method: str, path: str, raw: RawRequest
) -> None:
    # An unknown path under a dialect's route still answers in that dialect.
    bad_then_good(live, dialect, method, (path or "{route}").format(route=ROUTES[dialect]), raw)


@pytest.mark.parametrize("dialect", list(ROUTES))
@given(data=st.data())
def test_fuzzed_requests_keep_the_connection_usable(
    live: str, dialect: Dialect, data: st.DataObject
) -> None:
    raw = data.draw(raw_requests(dialect).filter(lambda r: r.kind != "valid"), label="request")
    connection = Connection(live)
    try:
        bad = connection.send("POST", ROUTES[dialect], raw.body, raw.content_type)
        assert bad.status_code < 500, (bad.status_code, bad.content[:2000])
        good = json.dumps(good_body()).encode()
        again = connection.send("POST", ROUTES[dialect], good, "application/json")
        assert connection.reused, "the server closed the keep-alive connection"
        assert again.status_code == 200, again.content
    finally:
        connection.close()
