"""The dialect registry: chat routes, the dialect of a path or request, statuses, stream errors."""

from __future__ import annotations

import json

import pytest
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects.anthropic import ANTHROPIC
from promptcache.dialects.base import ERROR_STATUS, Dialect, HTTPStatusError, error_status
from promptcache.dialects.glm import GLM
from promptcache.dialects.openai import OPENAI
from promptcache.errors import (
    InternalError,
    OverloadedError,
    PromptCacheError,
    RequestError,
    StoreError,
    UpstreamError,
)
from promptcache.server.routes import (
    DEFAULT_DIALECT,
    DIALECTS,
    dialect_for_headers,
    dialect_for_path,
)
from tests.server.conftest import ServerFactory


def test_each_dialect_has_its_name_and_chat_path() -> None:
    assert [(d.name, d.chat_path) for d in DIALECTS] == [
        ("openai", "/v1/chat/completions"),
        ("anthropic", "/v1/messages"),
        ("glm", "/api/paas/v4/chat/completions"),
    ]
    assert DEFAULT_DIALECT is OPENAI


@pytest.mark.parametrize(
    ("path", "dialect"),
    [
        ("/v1/messages", ANTHROPIC),
        ("/v1/messages/count_tokens", ANTHROPIC),
        ("/v1/chat/completions", OPENAI),
        ("/v1/models", OPENAI),
        ("/nowhere", OPENAI),
        ("/api/paas/v4/chat/completions", GLM),
    ],
)
def test_dialect_for_path(path: str, dialect: Dialect) -> None:
    assert dialect_for_path(path) is dialect


def test_dialect_for_headers() -> None:
    assert dialect_for_headers({"anthropic-version": "2023-06-01"}) is ANTHROPIC
    assert dialect_for_headers({"authorization": "Bearer k"}) is OPENAI


async def test_every_dialect_is_routed_to_the_flow(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def handle(http: Request, dialect: Dialect) -> Response:
        seen.append(dialect.name)
        return Response(b"ok")

    async with serve() as (client, app):
        monkeypatch.setattr(app.state.flow, "handle", handle)
        for dialect in DIALECTS:
            assert (await client.post(dialect.chat_path, content=b"{}")).content == b"ok"
    assert seen == [d.name for d in DIALECTS]


def test_status_table() -> None:
    class Narrower(RequestError):
        pass

    assert error_status(Narrower("x")) == 400
    assert error_status(OverloadedError("x")) == 429
    assert error_status(UpstreamError("x", upstream_status=503)) == 502
    assert error_status(InternalError("req_1")) == 500
    assert error_status(StoreError("x")) == 500
    assert error_status(PromptCacheError("x")) == 500
    assert error_status(HTTPStatusError("no route", status=405)) == 405
    assert all(400 <= status < 600 for status in ERROR_STATUS.values())


def test_stream_error_frames_are_each_dialects_own() -> None:
    error = OverloadedError("busy \udc80")
    openai_frame = OPENAI.stream_error_frame(error).decode()
    anthropic_frame = ANTHROPIC.stream_error_frame(error).decode()
    assert openai_frame.startswith("data: ") and openai_frame.endswith("\n\n")
    assert json.loads(openai_frame.removeprefix("data: "))["error"]["type"] == "rate_limit_exceeded"
    event, data = anthropic_frame.strip().split("\n")
    assert event == "event: error"
    body = json.loads(data.removeprefix("data: "))
    assert body["error"] == {"type": "rate_limit_error", "message": "busy \udc80"}
