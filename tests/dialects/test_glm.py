"""The GLM dialect and Zhipu's request fields: parsing (on both paths), bodies, errors."""

from __future__ import annotations

from typing import Any

import pytest
from zai.types.chat.chat_completion import Completion
from zai.types.chat.chat_completion_chunk import ChatCompletionChunk

from promptcache.dialects import glm, openai
from promptcache.dialects.base import HTTPStatusError
from promptcache.errors import (
    AuthenticationError,
    InternalError,
    ModelNotFoundError,
    OverloadedError,
    PromptCacheError,
    RequestError,
    UpstreamError,
)
from promptcache.keys import response_key
from promptcache.request import ChatRequest
from promptcache.result import Result, TextDelta

from .helpers import USAGE, collect, make_result, sse_json, stream_of

# What zai-sdk 0.2.3 sends for create(model=..., messages=...) with nothing else.
SDK_BODY: dict[str, Any] = {
    "model": "glm-4.6",
    "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
    "response_format": None,
    "thinking": None,
}


def body(**fields: Any) -> dict[str, Any]:
    return {**SDK_BODY, **fields}


@pytest.mark.parametrize("parse", [openai.parse_request, glm.parse_request])
def test_what_the_sdk_sends_parses_on_both_paths(parse: Any) -> None:
    request = parse(SDK_BODY)
    assert request.model == "glm-4.6"
    assert request.response_format is None and request.sampling.greedy
    plain = openai.parse_request({"model": "glm-4.6", "messages": SDK_BODY["messages"]})
    assert response_key(request) == response_key(plain)


@pytest.mark.parametrize("parse", [openai.parse_request, glm.parse_request])
def test_null_means_absent_for_every_optional_field(parse: Any) -> None:
    nulls = {
        key: None
        for key in [
            "temperature",
            "top_p",
            "max_tokens",
            "seed",
            "stop",
            "stream",
            "stream_options",
            "tools",
            "tool_choice",
            "user",
            "metadata",
            "do_sample",
            "request_id",
            "user_id",
            "tool_stream",
            "n",
        ]
    }
    request = parse(body(**nulls))
    assert request.sampling.greedy and not request.transport.stream
    with pytest.raises(RequestError, match="Missing required parameter: 'model'"):
        parse(body(model=None))


def test_do_sample_false_is_greedy_whatever_the_temperature() -> None:
    # zai-sdk turns temperature=0 into temperature 0.01 with do_sample false.
    sdk_zero = openai.parse_request(body(temperature=0.01, do_sample=False, top_p=0.7))
    assert sdk_zero.sampling.greedy
    assert sdk_zero.sampling.temperature == 0.0 and sdk_zero.sampling.top_p is None
    explicit = openai.parse_request(body(temperature=0))
    assert response_key(sdk_zero) == response_key(explicit)


def test_do_sample_true_samples() -> None:
    given = glm.parse_request(body(do_sample=True, temperature=0.6, top_p=0.9))
    assert given.sampling.temperature == 0.6 and given.sampling.top_p == 0.9
    default = glm.parse_request(body(do_sample=True))
    assert default.sampling.temperature == 1.0 and not default.sampling.greedy
    absent = glm.parse_request(body(temperature=0.6))
    assert absent.sampling.temperature == 0.6


def test_thinking_is_validated_and_carried_in_the_key() -> None:
    # Sent on to a GLM upstream (where it changes the answer), so part of the key.
    plain = glm.parse_request(SDK_BODY)
    keys = {response_key(plain)}
    for thinking in ({"type": "enabled"}, {"type": "disabled", "clear_thinking": True}):
        parsed = glm.parse_request(body(thinking=thinking))
        assert parsed.sampling.thinking is not None
        assert parsed.sampling.thinking.mode == thinking["type"]
        keys.add(response_key(parsed))
    assert len(keys) == 3
    with pytest.raises(RequestError) as caught:
        glm.parse_request(body(thinking={"type": "maybe"}))
    assert caught.value.param == "thinking.type"
    with pytest.raises(RequestError, match="Unrecognized request argument"):
        glm.parse_request(body(thinking={"type": "enabled", "budget": 3}))


def test_request_id_and_user_id_are_transport_only() -> None:
    plain = glm.parse_request(SDK_BODY)
    tagged = glm.parse_request(
        body(request_id="req-123456", user_id="user-42abc", tool_stream=True)
    )
    assert tagged.transport.request_id == "req-123456"
    assert tagged.transport.user == "user-42abc"
    assert response_key(tagged) == response_key(plain)
    both = openai.parse_request(body(user="openai-user", user_id="user-42abc"))
    assert both.transport.user == "openai-user"
    for field, value in (("request_id", "abc"), ("user_id", "x" * 129), ("tool_stream", "yes")):
        with pytest.raises(RequestError) as caught:
            glm.parse_request(body(**{field: value}))
        assert caught.value.param == field


def test_fields_zai_sdk_has_but_promptcache_does_not_are_refused_by_name() -> None:
    for field, value in (("sensitive_word_check", {"type": "ALL"}), ("meta", {"a": "b"})):
        with pytest.raises(RequestError) as caught:
            glm.parse_request(body(**{field: value}))
        assert caught.value.param == field


def test_glm_streams_always_end_with_usage() -> None:
    assert glm.parse_request(body(stream=True)).transport.include_usage
    assert not openai.parse_request(body(stream=True)).transport.include_usage


def test_response_is_glm_shaped_and_validates_as_the_sdk_completion() -> None:
    request = glm.parse_request(body(request_id="req-123456"))
    rendered = glm.render_response(make_result(), request)
    assert rendered["request_id"] == "req-123456"
    assert rendered["usage"] == {
        "prompt_tokens": USAGE.prompt_tokens,
        "completion_tokens": 7,
        "total_tokens": USAGE.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 1024},
    }
    assert "service_tier" not in rendered and "refusal" not in rendered["choices"][0]["message"]
    completion = Completion.model_validate(rendered)
    assert completion.choices[0].message.content == "Hello there, how can I help?"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024  # type: ignore[union-attr]
    no_id = glm.render_response(make_result(), glm.parse_request(SDK_BODY))
    assert no_id["request_id"] == no_id["id"]


async def test_stream_validates_as_sdk_chunks_with_usage_last() -> None:
    request = glm.parse_request(body(stream=True))
    result = make_result("Hi")
    raw = await collect(
        glm.render_stream(stream_of([TextDelta(choice_index=0, text="Hi"), result]), request)
    )
    frames = [data for _, data in sse_json(raw)]
    assert frames[-1] == "[DONE]"
    # extra_json is required by the model, filled by the SDK (not sent by GLM either)
    chunks = [ChatCompletionChunk.model_validate({**f, "extra_json": {}}) for f in frames[:-1]]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"
    last = chunks[-1].usage
    assert last is not None and last.prompt_tokens_details is not None
    assert last.prompt_tokens_details.cached_tokens == 1024


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (RequestError("bad", param="temperature"), 400, "1214"),
        (RequestError("bad"), 400, "1210"),
        (AuthenticationError("bad"), 401, "1000"),
        (ModelNotFoundError("bad", param="model"), 404, "1211"),
        (HTTPStatusError("bad", status=404), 404, "1222"),
        (OverloadedError("bad"), 429, "1302"),
        (InternalError("req_1"), 500, "500"),
        (UpstreamError("bad", upstream_status=503), 502, "1230"),
    ],
)
def test_errors_have_glm_codes(error: PromptCacheError, status: int, code: str) -> None:
    got, rendered = glm.render_error(error)
    assert got == status
    assert rendered == {"error": {"code": code, "message": error.message}}
    frame = glm.stream_error_frame(error)
    assert frame.startswith(b"data: {") and b'"code":"' + code.encode() in frame.replace(b" ", b"")


def test_the_dialect_object() -> None:
    assert glm.GLM.name == "glm" and glm.GLM.chat_path == "/api/paas/v4/chat/completions"
    request: ChatRequest = glm.GLM.parse_request(SDK_BODY)
    result: Result = make_result()
    assert glm.GLM.render_response(result, request)["model"] == "smollm2"
