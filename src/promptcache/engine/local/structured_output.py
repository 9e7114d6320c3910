"""Structured outputs for the local engine: generation constrained by a grammar.

What the OpenAI and Anthropic APIs promise about an answer's shape, enforced
by masking the logits at every decoding step with llguidance (the
constrained-decoding library behind llama.cpp's JSON-schema mode and one of
vLLM's structured-output backends):

* ``response_format`` ``json_schema`` -- the text is JSON valid against the
  schema; ``json_object`` -- any JSON object. With tools offered and the tool
  choice left to the model, a tool call is the other allowed answer.
* ``tool_choice`` ``any`` (OpenAI's ``required``) -- the answer is one or more
  tool calls, one per line, in the ``<tool_call>{"name": ..., "arguments":
  ...}</tool_call>`` form the renderer teaches the model, each naming an
  offered tool with arguments valid against its input schema (one call when
  ``disable_parallel_tool_use``); ``tool`` -- one call of that tool. ``auto``
  and ``none`` constrain nothing.

JSON is laid out as ``json.dumps`` does (``", "`` and ``": "``, no other
whitespace), the form the prompt shows tool calls in: free whitespace lets a
small model wander into newlines until ``max_tokens``. Keywords llguidance
does not implement are ignored unless the schema is ``strict``, where they are
an error (as at OpenAI, whose strict mode refuses unsupported keywords).

A schema llguidance cannot compile is the caller's 400, raised before any KV
is touched -- also when llguidance fails on it in other ways than by saying
so (a Rust panic surfaces as pyo3's ``PanicException``, a ``BaseException``;
a number JSON-in-Rust cannot hold is a ``ValueError``): such a failure is about
the schema, so it is the schema's 400, not a dead worker. llguidance's view
of the tokenizer is built on the first constrained request (~0.6 s for
SmolLM2's 49k tokens) and kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from llguidance import LLMatcher, LLTokenizer

from promptcache.engine.local.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from promptcache.errors import RequestError, is_interpreter_exit
from promptcache.request import ChatRequest, Tool

T = TypeVar("T")
_MAX_PROBLEM_CHARS = 300

_JSON_LAYOUT: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}


@dataclass(frozen=True)
class OutputGrammar:
    """A compiled llguidance grammar, and which request field asked for it."""

    grammar: str
    param: str


class TokenConstraint:
    """One choice's grammar state: which tokens may come next, fed the ones that did."""

    def __init__(self, matcher: LLMatcher, vocab_size: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size

    def restrict(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` with every token the grammar forbids next set to -inf (a copy)."""
        self._check()
        packed = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(packed, bitorder="little")[: logits.shape[-1]].astype(bool)
        if allowed.shape[0] < logits.shape[-1]:  # model rows past the tokenizer: never allowed
            allowed = np.pad(allowed, (0, logits.shape[-1] - allowed.shape[0]))
        return logits.masked_fill(~torch.from_numpy(allowed), float("-inf"))

    def accept(self, token: int) -> None:
        """Advance past ``token`` (one that :meth:`restrict` allowed)."""
        self._matcher.consume_token(token)
        self._check()

    def _check(self) -> None:
        if self._matcher.is_error():
            # Masking only ever offers tokens the grammar accepts: this is a bug.
            raise RuntimeError(f"Constrained decoding failed: {self._matcher.get_error()}")


class OutputGrammars:
    """Compiles requests' output constraints for one model's tokenizer."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, eos_ids: Iterable[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos_ids = sorted(eos_ids)
        self._ll_tokenizer: LLTokenizer | None = None
        self._lock = threading.Lock()

    def for_request(self, request: ChatRequest) -> OutputGrammar | None:
        """The grammar ``request``'s output must follow, or None; RequestError if invalid."""
        spec = output_grammar_source(request)
        if spec is None:
            return None
        source, param = spec
        tokenizer = self._llg_tokenizer()
        problem = _schema_call(param, lambda: LLMatcher.validate_grammar(source, tokenizer))
        if problem:
            raise _invalid_schema(param, problem)
        # Building the matcher once here moves every failure llguidance can have
        # on this grammar before the first byte of the answer.
        matcher = _schema_call(param, lambda: LLMatcher(tokenizer, source, log_level=0))
        if matcher.is_error():
            raise _invalid_schema(param, matcher.get_error())
        return OutputGrammar(grammar=source, param=param)

    def constraint(self, grammar: OutputGrammar) -> TokenConstraint:
        """A fresh grammar state for one choice."""
        matcher = LLMatcher(self._llg_tokenizer(), grammar.grammar, log_level=0)
        return TokenConstraint(matcher, self._vocab_size)

    def _llg_tokenizer(self) -> LLTokenizer:
        with self._lock:
            if self._ll_tokenizer is None:
                from llguidance.hf import from_tokenizer

                self._ll_tokenizer = from_tokenizer(
                    self._tokenizer, n_vocab=self._vocab_size, eos_token=self._eos_ids
                )
            return self._ll_tokenizer


def _invalid_schema(param: str, problem: str) -> RequestError:
    if len(problem) > _MAX_PROBLEM_CHARS:
        problem = problem[:_MAX_PROBLEM_CHARS] + "…"
    return RequestError(f"Invalid schema for '{param}': {problem}", param=param)


def _schema_call(param: str, call: Callable[[], T]) -> T:
    """``call()`` into llguidance, any failure of it reported as the schema's 400."""
    try:
        return call()
    except RequestError:
        raise
    except BaseException as exc:
        if is_interpreter_exit(exc):
            raise
        raise _invalid_schema(param, f"{type(exc).__name__}: {exc}") from None


def output_grammar_source(request: ChatRequest) -> tuple[str, str] | None:
    """(llguidance grammar, the request field it comes from) for ``request``, or None;
    RequestError when llguidance cannot take the schema."""
    param = "tool_choice" if _forces_tool_call(request) else "response_format"
    return _schema_call(param, lambda: _grammar_source(request))


def _forces_tool_call(request: ChatRequest) -> bool:
    choice = request.tool_choice if isinstance(request.tool_choice, Mapping) else {}
    return bool(request.tools) and choice.get("type") in ("any", "tool")


def _grammar_source(request: ChatRequest) -> tuple[str, str] | None:
    choice = request.tool_choice if isinstance(request.tool_choice, Mapping) else {}
    kind = choice.get("type") if isinstance(choice, Mapping) else None
    if request.tools and kind in ("any", "tool"):
        tools = request.tools
        if kind == "tool":
            tools = tuple(t for t in tools if t.name == choice.get("name"))
            if not tools:
                raise RequestError(
                    f"tool_choice names {choice.get('name')!r}, which is not among the tools.",
                    param="tool_choice",
                )
        single = kind == "tool" or bool(choice.get("disable_parallel_tool_use"))
        return LLMatcher.grammar_from_lark(_tool_calls_lark(tools, single=single)), "tool_choice"
    response = _response_schema(request.response_format)
    if response is None:
        return None
    schema = _with_layout(*response)
    if request.tools and kind != "none":  # the model may still answer with a tool call
        answer = json.dumps(schema)
        lark = f"start: answer | calls\nanswer: %json {answer}\n" + _calls_rules(
            request.tools, single=bool(choice.get("disable_parallel_tool_use"))
        )
        return LLMatcher.grammar_from_lark(lark), "response_format"
    return LLMatcher.grammar_from_json_schema(schema), "response_format"


def _with_layout(schema: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """``schema`` with llguidance's compile options; the schema's own ``x-guidance`` wins."""
    own = schema.get("x-guidance")
    options = {**_JSON_LAYOUT, "lenient": not strict, **(own if isinstance(own, Mapping) else {})}
    return {**schema, "x-guidance": options}


def _response_schema(
    response_format: Mapping[str, Any] | None,
) -> tuple[Mapping[str, Any], bool] | None:
    """The JSON schema ``response_format`` asks for, and whether it is strict."""
    if not response_format:
        return None
    if response_format.get("type") == "json_object":
        return {"type": "object"}, False
    if response_format.get("type") == "json_schema":
        spec = response_format.get("json_schema")
        spec = spec if isinstance(spec, Mapping) else {}
        schema = spec.get("schema")
        # OpenAI accepts a json_schema without "schema": any JSON value then.
        return (schema if isinstance(schema, Mapping) else {}), spec.get("strict") is True
    return None


def _tool_calls_lark(tools: tuple[Tool, ...], *, single: bool) -> str:
    return "start: calls\n" + _calls_rules(tools, single=single)


def _calls_rules(tools: tuple[Tool, ...], *, single: bool) -> str:
    """Lark rules for ``calls``: one tool call per line, each a ``call`` of an offered tool."""
    schemas = [_call_schema(tool) for tool in tools]
    body = _with_layout(schemas[0] if len(schemas) == 1 else {"anyOf": schemas}, strict=False)
    repeat = "" if single else ' ("\\n" call)*'
    return (
        f"calls: call{repeat}\n"
        f"call: {json.dumps(TOOL_CALL_OPEN)} body {json.dumps(TOOL_CALL_CLOSE)}\n"
        f"body: %json {json.dumps(body)}\n"
    )


def _call_schema(tool: Tool) -> dict[str, Any]:
    arguments = dict(tool.input_schema) if tool.input_schema else {"type": "object"}
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }
