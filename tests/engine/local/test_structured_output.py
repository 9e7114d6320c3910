"""Structured outputs: response_format and forced tool choices hold whatever the model wants.

A random tiny model wants nothing in particular, which makes it the hardest
case: every output below is shaped by the grammar alone. Schemas use enums and
booleans so outputs stay short and ``finish_reason`` is always "stop".
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from promptcache.engine.local import LocalEngine
from promptcache.engine.local.structured_output import output_grammar_source
from promptcache.errors import RequestError
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock, Tool
from promptcache.result import Choice, Result, TextDelta

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "color": {"enum": ["red", "green", "blue"]},
        "size": {"enum": [1, 2, 3]},
    },
    "required": ["ok", "color", "size"],
    "additionalProperties": False,
}
WEATHER = Tool(
    name="get_weather",
    description="Weather for a city",
    input_schema={
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Oslo"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)
CLOCK = Tool(
    name="get_time",
    description="Time in a zone",
    input_schema={
        "type": "object",
        "properties": {"utc": {"type": "boolean"}},
        "required": ["utc"],
        "additionalProperties": False,
    },
)


@pytest.fixture(scope="module")
def engine() -> LocalEngine:
    from tests.tiny_models import build_tiny_model

    return LocalEngine(loaded=build_tiny_model())


def request(seed: int = 0, **fields: Any) -> ChatRequest:
    return ChatRequest(
        model="tiny",
        messages=(Message(role="user", content=(TextBlock(text="Answer, please."),)),),
        sampling=SamplingParams(temperature=1.0, seed=seed, max_tokens=200),
        **fields,
    )


def complete(engine: LocalEngine, req: ChatRequest) -> tuple[Result, str]:
    events = list(engine.generate(req))
    result = events[-1]
    assert isinstance(result, Result)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    return result, streamed


def calls_in(choice: Choice, streamed: str) -> list[tuple[str, dict[str, Any]]]:
    """The tool calls of a choice that must consist of calls, as (name, arguments)."""
    if choice.finish_reason == "tool_calls":
        assert choice.text == "" and streamed == ""
        return [(call.name, dict(call.input)) for call in choice.tool_calls]
    # A random model may chain calls past max_tokens: the complete ones must hold.
    assert choice.finish_reason == "length"
    assert choice.text.startswith("<tool_call>")
    bodies = re.findall(r"<tool_call>(.*?)</tool_call>", choice.text)
    return [(body["name"], body["arguments"]) for body in map(json.loads, bodies)]


@pytest.mark.parametrize("seed", range(6))
def test_json_schema_output_is_valid_against_the_schema(engine: LocalEngine, seed: int) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "pick", "schema": SCHEMA}}
    result, streamed = complete(engine, request(seed, response_format=fmt))
    choice = result.choices[0]
    assert choice.finish_reason == "stop"
    value = json.loads(choice.text)
    assert set(value) == {"ok", "color", "size"}
    assert isinstance(value["ok"], bool)
    assert value["color"] in ("red", "green", "blue")
    assert value["size"] in (1, 2, 3)
    assert streamed == choice.text
    # Laid out as json.dumps lays it out: no stray whitespace to wander into.
    assert choice.text == json.dumps(value)


def test_without_a_format_the_same_seed_is_free_text(engine: LocalEngine) -> None:
    result, _ = complete(engine, request(0))
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.choices[0].text)


@pytest.mark.parametrize("seed", range(4))
def test_required_tool_choice_yields_calls_of_offered_tools(engine: LocalEngine, seed: int) -> None:
    req = request(seed, tools=(WEATHER, CLOCK), tool_choice={"type": "any"})
    result, streamed = complete(engine, req)
    calls = calls_in(result.choices[0], streamed)
    assert calls
    for name, arguments in calls:
        if name == "get_weather":
            assert arguments in ({"city": "Paris"}, {"city": "Oslo"})
        else:
            assert name == "get_time"
            assert isinstance(arguments["utc"], bool) and set(arguments) == {"utc"}


@pytest.mark.parametrize("seed", range(4))
def test_named_tool_choice_yields_one_call_of_that_tool(engine: LocalEngine, seed: int) -> None:
    req = request(seed, tools=(WEATHER, CLOCK), tool_choice={"type": "tool", "name": "get_time"})
    choice = complete(engine, req)[0].choices[0]
    assert choice.finish_reason == "tool_calls"
    assert [call.name for call in choice.tool_calls] == ["get_time"]


def test_no_parallel_calls_means_exactly_one(engine: LocalEngine) -> None:
    choice = {"type": "any", "disable_parallel_tool_use": True}
    for seed in range(4):
        req = request(seed, tools=(WEATHER, CLOCK), tool_choice=choice)
        assert len(complete(engine, req)[0].choices[0].tool_calls) == 1


def test_format_with_auto_tools_allows_either_answer(engine: LocalEngine) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "pick", "schema": SCHEMA}}
    kinds = set()
    for seed in range(8):
        req = request(seed, tools=(WEATHER,), tool_choice={"type": "auto"}, response_format=fmt)
        result, streamed = complete(engine, req)
        choice = result.choices[0]
        if choice.text.startswith("{"):
            assert choice.finish_reason == "stop"
            assert set(json.loads(choice.text)) == {"ok", "color", "size"}
            kinds.add("json")
        else:
            calls = calls_in(choice, streamed)
            assert calls and {name for name, _ in calls} == {"get_weather"}
            kinds.add("tool")
    assert kinds == {"json", "tool"}, "both shapes are open to the model"


def test_every_choice_of_n_is_constrained(engine: LocalEngine) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "pick", "schema": SCHEMA}}
    req = ChatRequest(
        model="tiny",
        messages=(Message(role="user", content=(TextBlock(text="Three answers."),)),),
        sampling=SamplingParams(temperature=1.0, seed=3, max_tokens=200, n=3),
        response_format=fmt,
    )
    result, _ = complete(engine, req)
    assert len(result.choices) == 3
    for choice in result.choices:
        assert set(json.loads(choice.text)) == {"ok", "color", "size"}


def test_max_tokens_cuts_constrained_output_with_length(engine: LocalEngine) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "pick", "schema": SCHEMA}}
    req = ChatRequest(
        model="tiny",
        messages=(Message(role="user", content=(TextBlock(text="Answer."),)),),
        sampling=SamplingParams(max_tokens=5),
        response_format=fmt,
    )
    choice = complete(engine, req)[0].choices[0]
    assert choice.finish_reason == "length"
    assert choice.text == '{"ok"'  # byte-level tokens: the forced prefix, five bytes of it


def test_invalid_schema_is_a_request_error_before_anything_runs(engine: LocalEngine) -> None:
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}
    queried = engine.prefix_stats().tokens_queried
    stream = engine.generate(request(response_format=bad))
    with pytest.raises(RequestError, match="nonsense") as caught:
        next(stream)
    assert caught.value.param == "response_format"
    assert engine.prefix_stats().tokens_queried == queried, "the prompt never reached the cache"


def test_strict_schema_refuses_keywords_the_matcher_cannot_enforce(engine: LocalEngine) -> None:
    schema = {"not": {"type": "string"}}
    lax = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    strict = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert output_grammar_source(request(response_format=lax)) is not None
    engine._grammars.for_request(request(response_format=lax))  # lenient: compiles
    with pytest.raises(RequestError, match="not"):
        engine._grammars.for_request(request(response_format=strict))


def test_unconstrained_requests_have_no_grammar() -> None:
    assert output_grammar_source(request()) is None
    assert output_grammar_source(request(tools=(WEATHER,), tool_choice={"type": "auto"})) is None
    assert output_grammar_source(request(tools=(WEATHER,), tool_choice={"type": "none"})) is None


def test_unknown_forced_tool_is_a_request_error() -> None:
    req = request(tools=(WEATHER,), tool_choice={"type": "tool", "name": "nope"})
    with pytest.raises(RequestError, match="nope"):
        output_grammar_source(req)


# A schema llguidance panics on (a byte slice cut inside a CJK character while it
# builds its error message): pyo3 raises PanicException, a BaseException.
CJK_REQUIRED: dict[str, Any] = {"type": "object", "required": {"s": "中" * 60}}
HUGE_INTEGER: dict[str, Any] = {"type": "integer", "maximum": 2**70}


def test_schemas_llguidance_fails_on_are_the_callers_400(engine: LocalEngine) -> None:
    forced = Tool(name="f", description="", input_schema=CJK_REQUIRED)
    cases = [
        (request(response_format=json_schema(CJK_REQUIRED)), "response_format"),
        (request(response_format=json_schema(HUGE_INTEGER)), "response_format"),
        (request(tools=(forced,), tool_choice={"type": "any"}), "tool_choice"),
        (request(tools=(forced,), tool_choice={"type": "tool", "name": "f"}), "tool_choice"),
    ]
    for req, param in cases:
        with pytest.raises(RequestError, match="Invalid schema") as caught:
            next(engine.generate(req))
        assert caught.value.param == param
        assert len(caught.value.message) < 500
        caught.value.message.encode("utf-8")
    # The engine is unharmed: a valid schema still constrains the next answer.
    result, _ = complete(engine, request(response_format=json_schema(SCHEMA)))
    assert set(json.loads(result.choices[0].text)) == {"ok", "color", "size"}


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
