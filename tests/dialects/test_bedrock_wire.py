"""The Bedrock dialect's wire pieces, checked against botocore's own code.

The event-stream frames are read by ``botocore.eventstream.EventStreamBuffer``
(not by our encoder's inverse), SigV4 signatures made by botocore's
``SigV4Auth`` are verified by ours, and the Converse parser's cache points,
inference config and refusals are checked on the canonical request.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from promptcache.dialects.bedrock import OPERATIONS, eventstream
from promptcache.dialects.bedrock.converse_parse import parse_converse
from promptcache.dialects.bedrock.converse_render import render_converse_stream
from promptcache.dialects.bedrock.errors import BedrockAuthError, error_code
from promptcache.dialects.bedrock.invoke import parse_invoke, render_invoke_stream
from promptcache.dialects.bedrock.sigv4 import matching_secret
from promptcache.dialects.replay import replay_events
from promptcache.errors import (
    ModelNotFoundError,
    OverloadedError,
    RequestError,
    RequestTimeoutError,
)
from promptcache.request import CacheControl, ToolResultBlock, ToolUseBlock
from promptcache.result import Choice, Result, StreamEvent, TextDelta, Usage

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def test_botocore_reads_every_frame() -> None:
    frames = eventstream.event("messageStart", {"role": "assistant"})
    frames += eventstream.event(
        "contentBlockDelta", {"delta": {"text": "héllo ✓"}, "contentBlockIndex": 0}
    )
    frames += eventstream.exception("throttlingException", "slow down")
    buffer = EventStreamBuffer()
    buffer.add_data(frames[:7])
    assert list(buffer) == []
    buffer.add_data(frames[7:])
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages[:2]] == ["messageStart", "contentBlockDelta"]
    assert messages[0].headers[":message-type"] == "event"
    assert messages[0].headers[":content-type"] == "application/json"
    assert json.loads(messages[1].payload)["delta"]["text"] == "héllo ✓"
    assert messages[2].headers[":exception-type"] == "throttlingException"
    assert messages[2].to_response_dict()["status_code"] == 400


def _signed(secret: str, body: bytes, *, when: datetime | None = None) -> AWSRequest:
    url = "http://127.0.0.1:8000/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse"
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
    )
    auth = SigV4Auth(Credentials("AKIDEXAMPLE", secret), "bedrock", "us-east-1")
    if when is None:
        auth.add_auth(request)
    else:
        request.context["timestamp"] = when.strftime("%Y%m%dT%H%M%SZ")
        auth._modify_request_before_signing(request)
        canonical = auth.canonical_request(request)
        string_to_sign = auth.string_to_sign(request, canonical)
        signature = auth.signature(string_to_sign, request)
        auth._inject_signature_to_request(request, signature)
    return request


def _verify(request: AWSRequest, secrets: list[str], body: bytes) -> str:
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:8000"
    return matching_secret(
        secrets,
        method="POST",
        raw_path="/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse",
        query="",
        headers=headers,
        body=body,
    )


def test_sigv4_signed_by_botocore_is_verified_with_the_right_secret() -> None:
    body = b'{"messages": []}'
    request = _signed("pc-key-2", body)
    assert _verify(request, ["pc-key-1", "pc-key-2"], body) == "pc-key-2"
    with pytest.raises(BedrockAuthError) as wrong:
        _verify(request, ["pc-key-1"], body)
    assert wrong.value.code == "InvalidSignatureException"
    with pytest.raises(BedrockAuthError):
        _verify(request, ["pc-key-2"], body + b" ")  # the body is signed


def test_sigv4_outside_five_minutes_is_expired() -> None:
    body = b"{}"
    request = _signed("k", body, when=datetime.now(UTC) - timedelta(minutes=6))
    with pytest.raises(BedrockAuthError, match="Signature expired") as expired:
        _verify(request, ["k"], body)
    assert expired.value.code == "InvalidSignatureException"


def test_sigv4_missing_is_unrecognized_client() -> None:
    with pytest.raises(BedrockAuthError) as missing:
        matching_secret(["k"], method="POST", raw_path="/", query="", headers={}, body=b"")
    assert missing.value.code == "UnrecognizedClientException"
    assert error_code(missing.value) == ("UnrecognizedClientException", 403)


def test_error_codes() -> None:
    assert error_code(RequestError("x")) == ("ValidationException", 400)
    assert error_code(ModelNotFoundError("x")) == ("ResourceNotFoundException", 404)
    assert error_code(OverloadedError("x")) == ("ThrottlingException", 429)


def _body(**extra: Any) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": [{"text": "hi"}, {"cachePoint": {"type": "default"}}]}
        ],
        **extra,
    }


def test_cache_points_mark_the_block_before_them() -> None:
    body = _body(
        system=[{"text": "sys"}, {"cachePoint": {"type": "default", "ttl": "1h"}}],
        toolConfig={
            "tools": [
                {"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object"}}}},
                {"cachePoint": {"type": "default", "ttl": "1h"}},
            ]
        },
        inferenceConfig={"maxTokens": 9, "temperature": 0, "topP": 0.5, "stopSequences": ["\n"]},
    )
    request = parse_converse(body, model=MODEL, stream=False)
    assert request.tools[0].cache_control == CacheControl(ttl="1h")
    assert request.system[0].cache_control == CacheControl(ttl="1h")
    assert request.messages[0].content[0].cache_control == CacheControl(ttl="5m")
    assert [p.section for p in request.breakpoints()] == ["tools", "system", "messages"]
    assert request.sampling.max_tokens == 9 and request.sampling.stop == ("\n",)
    assert request.sampling.top_p == 0.5 and request.model == MODEL
    with_top_k = parse_converse(
        _body(additionalModelRequestFields={"top_k": 5}), model=MODEL, stream=False
    )
    assert with_top_k.sampling.top_k == 5


@pytest.mark.parametrize(
    ("body", "names"),
    [
        (_body(guardrailConfig={}), "guardrailConfig"),
        (
            _body(additionalModelRequestFields={"thinking": {}}),
            "additionalModelRequestFields.thinking",
        ),
        (_body(inferenceConfig={"topK": 3}), "inferenceConfig.topK"),
        (_body(inferenceConfig={"maxTokens": 0}), "inferenceConfig.maxTokens"),
        (
            {"messages": [{"role": "user", "content": [{"cachePoint": {"type": "default"}}]}]},
            "messages.0.content.0",
        ),
        (
            _body(
                system=[{"text": "a"}, {"cachePoint": {"type": "default", "ttl": "5m"}}],
                toolConfig={
                    "tools": [
                        {"toolSpec": {"name": "w", "inputSchema": {"json": {}}}},
                        {"cachePoint": {"type": "default", "ttl": "5m"}},
                    ]
                },
            )
            | {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"text": "x"},
                            {"cachePoint": {"type": "default", "ttl": "1h"}},
                        ],
                    }
                ]
            },
            "cachePoint",
        ),
        (
            {"messages": [{"role": "user", "content": [{"video": {}}]}]},
            "messages.0.content.0.video",
        ),
    ],
)
def test_refused_bodies_name_the_field(body: dict[str, Any], names: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_converse(body, model=MODEL, stream=False)
    assert names in str(refused.value) or refused.value.param == names


def test_more_than_four_cache_points_are_refused() -> None:
    content: list[dict[str, Any]] = []
    for i in range(5):
        content += [{"text": f"part {i}"}, {"cachePoint": {"type": "default"}}]
    with pytest.raises(RequestError, match="maximum of 4 cachePoint blocks"):
        parse_converse(
            {"messages": [{"role": "user", "content": content}]}, model=MODEL, stream=False
        )


def test_tool_use_and_tool_result_both_ways() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"text": "weather?"}]},
            {
                "role": "assistant",
                "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "w", "input": {"city": "Miami"}}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "t1",
                            "content": [{"json": {"temp": 30}}],
                            "status": "error",
                        }
                    }
                ],
            },
        ]
    }
    request = parse_converse(body, model=MODEL, stream=True)
    use = request.messages[1].content[0]
    result = request.messages[2].content[0]
    assert isinstance(use, ToolUseBlock) and use.input == {"city": "Miami"}
    assert isinstance(result, ToolResultBlock) and result.is_error
    assert request.transport.stream


def test_invoke_body_is_anthropic_with_the_version_and_no_model() -> None:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    }
    request = parse_invoke(body, model=MODEL, stream=True)
    assert request.model == MODEL and request.transport.stream
    with pytest.raises(RequestError, match="anthropic_version"):
        parse_invoke({**body, "anthropic_version": "2023-06-01"}, model=MODEL, stream=False)
    with pytest.raises(RequestError, match="model"):
        parse_invoke({**body, "model": "x"}, model=MODEL, stream=False)


def test_four_operations_at_their_paths() -> None:
    assert [op.path.rsplit("/", 1)[1] for op in OPERATIONS] == [
        "converse",
        "converse-stream",
        "invoke",
        "invoke-with-response-stream",
    ]


def _frames(stream: Any) -> list[Any]:
    async def collect() -> bytes:
        return b"".join([frame async for frame in stream])

    buffer = EventStreamBuffer()
    buffer.add_data(asyncio.run(collect()))
    return list(buffer)


def _result() -> Result:
    return Result(
        id="r1",
        model="m",
        created=0,
        choices=(Choice(text="Paris is the capital.", finish_reason="length"),),
        usage=Usage(input_tokens=7, cache_read_input_tokens=1100, output_tokens=5),
    )


def test_a_replayed_result_streams_as_converse_events() -> None:
    messages = _frames(render_converse_stream(replay_events(_result()), started=0.0))
    kinds = [m.headers[":event-type"] for m in messages]
    assert kinds[0] == "messageStart" and kinds[-3:] == [
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    payloads = [json.loads(m.payload) for m in messages]
    text = "".join(
        p["delta"]["text"] for p, k in zip(payloads, kinds, strict=True) if k == "contentBlockDelta"
    )
    assert text == "Paris is the capital."
    assert payloads[-2] == {"stopReason": "max_tokens"}
    assert payloads[-1]["usage"] == {
        "inputTokens": 7,
        "outputTokens": 5,
        "totalTokens": 1112,
        "cacheReadInputTokens": 1100,
        "cacheWriteInputTokens": 0,
    }


def test_a_replayed_result_streams_as_invoke_chunks() -> None:
    request = parse_invoke(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        model=MODEL,
        stream=True,
    )
    messages = _frames(
        render_invoke_stream(replay_events(_result()), request, model=MODEL, started=0.0)
    )
    assert {m.headers[":event-type"] for m in messages} == {"chunk"}
    events = [json.loads(base64.b64decode(json.loads(m.payload)["bytes"])) for m in messages]
    assert events[0]["type"] == "message_start" and events[0]["message"]["model"] == MODEL
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["cacheReadInputTokenCount"] == 1100 and metrics["outputTokenCount"] == 5


def test_an_error_mid_stream_is_an_exception_frame_botocore_raises() -> None:
    async def failing() -> AsyncIterator[StreamEvent]:
        yield TextDelta(choice_index=0, text="Par")
        raise RequestTimeoutError("The request did not finish within the deadline.")

    messages = _frames(render_converse_stream(failing(), started=0.0))
    last = messages[-1]
    assert last.headers[":message-type"] == "exception"
    assert last.headers[":exception-type"] == "modelStreamErrorException"
    assert json.loads(last.payload)["message"].startswith("The request did not finish")
