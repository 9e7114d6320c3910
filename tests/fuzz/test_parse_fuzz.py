"""Property tests of the dialect parsers: a body is a ChatRequest or a RequestError.

For every body, valid or hostile, ``parse_request`` returns a
:class:`ChatRequest` or raises :class:`RequestError` -- never any other
exception -- and the error renders as the dialect's own body, JSON that
encodes as UTF-8. What a parsed request feeds next must hold too: its
response-cache key and its structured-output grammar are computed or refused
with a RequestError, never a crash.

Examples are bounded by the Hypothesis profile (``tests/conftest.py``);
``--hypothesis-profile=soak`` runs many more.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptcache.dialects import anthropic, openai
from promptcache.engine.local.structured_output import output_grammar_source
from promptcache.errors import RequestError
from promptcache.keys import KEY_ALGORITHM, KEY_VERSION, response_key
from promptcache.request import ChatRequest
from tests.fuzz.strategies import (
    HOSTILE,
    JSON_VALUES,
    TEXT,
    Body,
    Dialect,
    bodies,
    mutated,
    nested,
)

DIALECTS: dict[Dialect, ModuleType] = {"openai": openai, "anthropic": anthropic}
ANY_MODEL = st.sampled_from(["fake-model", "gpt-4o", "claude-sonnet-4-5"]) | TEXT


def assert_error_body(dialect: Dialect, error: RequestError) -> dict[str, Any]:
    """The rendered error is a 400 in the dialect's own shape, writable as UTF-8 JSON."""
    status, body = DIALECTS[dialect].render_error(error)
    assert isinstance(body, dict)
    assert status == 400
    text = json.dumps(body, ensure_ascii=False)  # TypeError if not JSON data
    text.encode("utf-8")  # UnicodeEncodeError if a lone surrogate slipped through
    assert json.loads(text) == body
    if dialect == "openai":
        assert set(body) == {"error"}
        assert body["error"]["type"] == "invalid_request_error"
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        assert "param" in body["error"] and "code" in body["error"]
    else:
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body


def parse_or_reject(dialect: Dialect, body: Any) -> ChatRequest | None:
    """The parsed request, or None after checking the RequestError it raised.

    Any other exception propagates and fails the test.
    """
    try:
        request = DIALECTS[dialect].parse_request(body)
    except RequestError as error:
        assert_error_body(dialect, error)
        return None
    assert isinstance(request, ChatRequest)
    return request


def key_or_reject(dialect: Dialect, request: ChatRequest) -> str | None:
    try:
        key = response_key(request)
    except RequestError as error:
        assert_error_body(dialect, error)
        return None
    assert key.startswith(f"{KEY_VERSION}:{KEY_ALGORITHM}:")
    return key


def grammar_or_reject(dialect: Dialect, request: ChatRequest) -> None:
    """The structured-output grammar the local engine would compile, or a RequestError."""
    try:
        grammar = output_grammar_source(request)
    except RequestError as error:
        assert_error_body(dialect, error)
        return
    if grammar is not None:
        source, param = grammar
        assert isinstance(source, str) and param in ("response_format", "tool_choice")


@pytest.mark.parametrize("dialect", list(DIALECTS))
@given(data=st.data())
def test_valid_bodies_parse_and_have_a_key(dialect: Dialect, data: st.DataObject) -> None:
    body: Body = data.draw(bodies(dialect, models=ANY_MODEL), label="body")
    request = DIALECTS[dialect].parse_request(body)  # a valid body must not be refused
    assert request.model == body["model"]
    assert request.transport.stream == bool(body.get("stream"))
    assert len(request.tools) == len(body.get("tools", ()))
    assert len(request.breakpoints()) <= 4
    key = response_key(request)
    assert key.startswith(f"{KEY_VERSION}:{KEY_ALGORITHM}:")
    # Parsing is a function of the body: the same body, the same key.
    assert response_key(DIALECTS[dialect].parse_request(json.loads(json.dumps(body)))) == key
    grammar_or_reject(dialect, request)


@pytest.mark.parametrize("dialect", list(DIALECTS))
@given(data=st.data())
def test_mutated_bodies_parse_or_raise_request_error(dialect: Dialect, data: st.DataObject) -> None:
    body = data.draw(mutated(bodies(dialect, models=ANY_MODEL)), label="body")
    request = parse_or_reject(dialect, body)
    if request is not None:
        key_or_reject(dialect, request)
        grammar_or_reject(dialect, request)


@pytest.mark.parametrize("dialect", list(DIALECTS))
@given(body=HOSTILE | JSON_VALUES)
def test_any_json_value_parses_or_raises_request_error(dialect: Dialect, body: Any) -> None:
    parse_or_reject(dialect, body)


# -- the known reproductions, every time (not left to chance) ---------------------

USER = {"role": "user", "content": "hi"}


def _openai(**fields: Any) -> Body:
    return {"model": "fake-model", "messages": [USER], **fields}


def _anthropic(**fields: Any) -> Body:
    return {"model": "fake-model", "max_tokens": 8, "messages": [USER], **fields}


BIG_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**70}}}
OPENAI_TOOL = {"type": "function", "function": {"name": "f", "parameters": BIG_SCHEMA}}
ANTHROPIC_TOOL = {"name": "f", "input_schema": BIG_SCHEMA}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

KNOWN: list[tuple[Dialect, str, Any]] = [
    # Lone surrogates: in text (the key), in a quoted value, in a field name.
    ("openai", "surrogate-content", _openai(messages=[{"role": "user", "content": "a\ud800"}])),
    ("anthropic", "surrogate-content", _anthropic(messages=[
        {"role": "user", "content": "\udfff"}])),
    ("openai", "surrogate-system", _openai(messages=[
        {"role": "system", "content": "\ud800"}, USER])),
    ("anthropic", "surrogate-system", _anthropic(system="\ud800")),
    ("openai", "surrogate-tool-schema", _openai(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "description": "\ud800"}}}])),
    ("openai", "surrogate-role", _openai(messages=[{"role": "\ud800", "content": "x"}])),
    ("anthropic", "surrogate-role", _anthropic(messages=[{"role": "\ud800", "content": "x"}])),
    ("openai", "surrogate-field", _openai(**{"\ud800": 1})),
    ("anthropic", "surrogate-field", _anthropic(**{"\ud800": 1})),
    ("openai", "surrogate-tool-choice", _openai(tools=[OPENAI_TOOL], tool_choice="\ud800")),
    ("anthropic", "surrogate-tool-name", _anthropic(
        tools=[ANTHROPIC_TOOL], tool_choice={"type": "tool", "name": "\ud800"})),
    ("openai", "surrogate-call-id", _openai(messages=[
        USER, {"role": "tool", "tool_call_id": "\ud800", "content": "x"}])),
    # Integers past 64 bits in a JSON schema (the grammar compiler).
    ("openai", "2**70-response-format", _openai(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": BIG_SCHEMA}})),
    ("openai", "2**70-forced-tool", _openai(tools=[OPENAI_TOOL], tool_choice="required")),
    ("anthropic", "2**70-output-config", _anthropic(
        output_config={"format": {"type": "json_schema", "schema": BIG_SCHEMA}})),
    ("anthropic", "2**70-forced-tool", _anthropic(
        tools=[ANTHROPIC_TOOL], tool_choice={"type": "any"})),
    # Numbers no float or JSON text can hold.
    ("openai", "nan-temperature", _openai(temperature=float("nan"))),
    ("anthropic", "nan-temperature", _anthropic(temperature=float("nan"))),
    ("openai", "huge-temperature", _openai(temperature=10**400)),
    ("anthropic", "huge-top-p", _anthropic(top_p=-(10**400))),
    ("openai", "huge-seed", _openai(seed=10**5000)),
    ("anthropic", "huge-max-tokens", _anthropic(max_tokens=10**5000)),
    ("openai", "inf-in-schema", _openai(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "maximum": float("inf")}}}])),
    ("anthropic", "nan-in-tool-input", _anthropic(messages=[
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {"x": float("nan")}}]}])),
    ("anthropic", "huge-int-in-schema", _anthropic(output_config={
        "format": {"type": "json_schema", "schema": {"type": "object", "default": 10**5000}}})),
    # Tool-call arguments: nesting past the decoder's recursion limit, NaN, 1e999.
    ("openai", "deep-arguments", _openai(messages=[USER, {**CALL, "function": {
        "name": "f", "arguments": "[" * 100_000 + "]" * 100_000}, "role": "assistant"}])),
    ("openai", "nan-arguments", _openai(messages=[USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": '{"x": NaN}'}}]}])),
    ("openai", "1e999-arguments", _openai(messages=[USER, {"role": "assistant", "tool_calls": [
        {**CALL, "function": {"name": "f", "arguments": '{"x": 1e999}'}}]}])),
    # Nesting as Python data (the parser and key walk it without running out of stack).
    ("openai", "nested-schema", _openai(response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": nested(300, kind="dict")}})),
    ("anthropic", "nested-input", _anthropic(messages=[{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": nested(300, kind="dict")}]}])),
    # Very long values are refused with a short message.
    ("openai", "long-role", _openai(messages=[{"role": "x" * 1_000_000, "content": "x"}])),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dialect", "body"), [(d, b) for d, _, b in KNOWN], ids=[f"{d}-{n}" for d, n, _ in KNOWN]
)
def test_known_hostile_bodies(dialect: Dialect, body: Any) -> None:
    request = parse_or_reject(dialect, body)
    if request is not None:
        key_or_reject(dialect, request)
        grammar_or_reject(dialect, request)


def test_quoted_values_are_short_and_escaped() -> None:
    with pytest.raises(RequestError) as caught:
        openai.parse_request(_openai(messages=[{"role": "x\ud800" + "y" * 10_000, "content": ""}]))
    body = assert_error_body("openai", caught.value)
    message = body["error"]["message"]
    assert "x\\ud800y" in message
    assert len(message) < 300


NAMED: list[tuple[Dialect, Any, str, str]] = [
    ("openai", _openai(temperature=float("nan")), "temperature", "finite number"),
    ("anthropic", _anthropic(temperature=float("nan")), "temperature", "finite number"),
    ("openai", _openai(top_p=10**400), "top_p", "above maximum"),
    ("openai", _openai(seed=2**70), "seed", "above maximum"),
    ("anthropic", _anthropic(max_tokens=2**64), "max_tokens", "less than or equal"),
    ("openai", _openai(messages=[{"role": "user", "content": "\ud800"}]),
     "messages.[0].content", "lone UTF-16 surrogate"),
    ("anthropic", _anthropic(messages=[{"role": "user", "content": "x\udfff"}]),
     "messages.0.content", "unicode string"),
    ("anthropic", _anthropic(system=[{"type": "text", "text": "\ud800"}]),
     "system.0.text", "unicode string"),
    ("openai", _openai(tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "title": "\ud800"}}}]),
     "tools.[0].function.parameters.title", "lone UTF-16 surrogate"),
    ("openai", _openai(tools=[OPENAI_TOOL], response_format={"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"enum": [float("-inf")]}}}),
     "response_format.json_schema.schema.enum.[0]", "finite number"),
    ("anthropic", _anthropic(output_config={"format": {"type": "json_schema", "schema": {
        "type": "object", "default": 10**5000}}}), "output_config.format.schema.default",
     "finite number"),
    ("openai", _openai(messages=[USER, {"role": "assistant", "tool_calls": [{**CALL, "function": {
        "name": "f", "arguments": '{"x": 1e999}'}}]}]),
     "messages.[1].tool_calls.[0].function.arguments.x", "finite number"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("dialect", "body", "param", "words"),
    NAMED,
    ids=[f"{d}-{p}" for d, _, p, _ in NAMED],
)
def test_hostile_values_are_refused_naming_the_field(
    dialect: Dialect, body: Any, param: str, words: str
) -> None:
    with pytest.raises(RequestError) as caught:
        DIALECTS[dialect].parse_request(body)
    assert caught.value.param == param
    assert words in caught.value.message
    assert_error_body(dialect, caught.value)
