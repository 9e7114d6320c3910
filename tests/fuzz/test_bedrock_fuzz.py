"""The HTTP fuzz pass at the Bedrock paths: hostile bytes, zero 5xx.

Converse bodies (a valid one mutated by the shared hostile edits, or any JSON
value) at ``/converse`` and ``/converse-stream``, and the Anthropic strategies'
raw requests turned into InvokeModel bodies at ``/invoke`` and
``/invoke-with-response-stream``, all against the in-process app (fake engine,
``*`` aliased to it): every answer is a 200 or a 4xx in Bedrock's shape (an
``x-amzn-ErrorType`` header and a ``{"message"}`` body), never a 5xx.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptcache.engine.threaded import ThreadedEngine
from promptcache.response_cache import ResponseCache
from promptcache.server.app import create_app
from promptcache.server.config import ServerConfig
from promptcache.store import open_store
from tests.fuzz.strategies import RawRequest, encode, mutated, nested, raw_requests
from tests.server.fakes import FAKE_MODEL, FakeSyncEngine

MODEL_PATH = "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0"
OPERATIONS = ("converse", "converse-stream", "invoke", "invoke-with-response-stream")
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_CONVERSE = st.fixed_dictionaries(
    {
        "messages": st.just(
            [
                {"role": "user", "content": [{"text": "hi"}, {"cachePoint": {"type": "default"}}]},
                {
                    "role": "assistant",
                    "content": [{"toolUse": {"toolUseId": "t", "name": "w", "input": {}}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"toolResult": {"toolUseId": "t", "content": [{"json": {"a": 1}}]}}
                    ],
                },
            ]
        ),
        "system": st.just([{"text": "be brief"}, {"cachePoint": {"type": "default", "ttl": "5m"}}]),
        "toolConfig": st.just(
            {"tools": [{"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object"}}}}]}
        ),
        "inferenceConfig": st.just({"maxTokens": 4, "temperature": 0, "stopSequences": ["x"]}),
    }
)


class Served:
    def __init__(self, runner: asyncio.Runner, client: httpx.AsyncClient) -> None:
        self.runner = runner
        self.client = client

    def post(self, operation: str, body: bytes, content_type: str | None) -> httpx.Response:
        headers = {} if content_type is None else {"content-type": content_type}
        request = self.client.post(f"{MODEL_PATH}/{operation}", content=body, headers=headers)
        return self.runner.run(request)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    engine = ThreadedEngine(FakeSyncEngine(), max_queue=8)
    app = create_app(
        ServerConfig(max_body_bytes=256 * 1024, model_aliases={"*": FAKE_MODEL}),
        engine=engine,
        cache=ResponseCache(open_store("memory://")),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with asyncio.Runner() as runner:
        client = httpx.AsyncClient(transport=transport, base_url="http://test")
        try:
            yield Served(runner, client)
        finally:
            runner.run(client.aclose())
            runner.run(engine.aclose())


def check(served: Served, operation: str, body: bytes, content_type: str | None) -> None:
    response = served.post(operation, body, content_type)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.status_code >= 400:
        assert response.headers.get("x-amzn-errortype"), response.headers
        assert response.headers["x-amzn-errortype"] != "InternalServerException"
        message = json.loads(response.content)["message"]
        assert isinstance(message, str) and message
    elif operation.endswith("stream"):
        assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
        assert b"exception" not in response.content


@pytest.mark.parametrize("operation", OPERATIONS[:2])
@given(data=st.data())
def test_converse_bodies_never_get_a_5xx(
    served: Served, operation: str, data: st.DataObject
) -> None:
    body: Any = data.draw(mutated(_CONVERSE) | _JSON, label="body")
    check(served, operation, encode(body), "application/json")


def _as_invoke(raw: RawRequest) -> bytes:
    """A JSON body with ``model``/``stream`` moved out and the Bedrock version in;
    the byte-level hostile kinds (deep, broken UTF-8...) as they are."""
    if raw.kind not in ("valid", "json"):
        return raw.body
    try:
        body = json.loads(raw.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return raw.body
    if isinstance(body, dict):
        body.pop("model", None)
        body.pop("stream", None)
        body["anthropic_version"] = "bedrock-2023-05-31"
    return encode(body)


@pytest.mark.parametrize("operation", OPERATIONS[2:])
@given(data=st.data())
def test_invoke_requests_never_get_a_5xx(
    served: Served, operation: str, data: st.DataObject
) -> None:
    raw = data.draw(raw_requests("anthropic"), label="request")
    check(served, operation, _as_invoke(raw), raw.content_type)


@pytest.mark.parametrize("operation", OPERATIONS)
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{}", "text/plain"),
        (b"{}", "application/x-www-form-urlencoded"),
        (b"[" * 10_000 + b"]" * 10_000, "application/json"),
        (encode({"messages": nested(200, kind="object")}), "application/json"),
        (b'{"messages": [{"role": "user", "content": [{"text": "\\ud800"}]}]}', "application/json"),
        (b"\xff\xfe", None),
        (b"", None),
    ],
)
def test_known_hostile_requests(
    served: Served, operation: str, body: bytes, content_type: str | None
) -> None:
    check(served, operation, body, content_type)
    if content_type is not None and "json" not in content_type:
        assert served.post(operation, body, content_type).status_code == 415


def test_wrong_method_and_unknown_operation_in_bedrock_shape(served: Served) -> None:
    wrong = served.runner.run(served.client.get(f"{MODEL_PATH}/converse"))
    assert wrong.status_code == 405 and wrong.headers["x-amzn-errortype"]
    unknown = served.runner.run(served.client.post(f"{MODEL_PATH}/summon", json={}))
    assert unknown.status_code == 404 and "message" in unknown.json()
