"""Hypothesis strategies: request bodies for each dialect, valid and hostile.

* :func:`openai_bodies` / :func:`anthropic_bodies` -- bodies the dialect's
  parser must accept: every message role and content-part kind, tool calls
  with matching results, tools with JSON schemas, tool choices, structured
  output, sampling and transport fields, ``cache_control`` markers (at most
  four per request, one TTL per request, so the breakpoint rules hold).
* :func:`mutated` -- a valid body with one to three hostile edits: a field
  dropped, a value swapped for one of another type or a hostile one (huge
  integers, 1e308, NaN, lone surrogates, deep nesting, very long strings,
  negative numbers), an unknown field, an emptied container.
* :func:`raw_requests` -- bytes for the HTTP pass: the above serialised, plus
  what only bytes can say (truncated JSON, invalid UTF-8, lone-surrogate
  escapes, nesting thousands deep, numbers of thousands of digits, ``NaN``
  tokens, the wrong content type).

Everything is plain JSON data (dicts with string keys), as ``json.loads``
would give it.
"""

from __future__ import annotations

import base64
import copy
import json
import string
from dataclasses import dataclass
from typing import Any, Literal

from hypothesis import strategies as st
from hypothesis.strategies import DrawFn

JSON = Any
Body = dict[str, Any]
Dialect = Literal["openai", "anthropic"]
Draw = DrawFn

MODELS = ("fake-model", "fake")
"""Model names the test server serves (its fake engine's id and alias)."""
SERVED_MODELS = st.sampled_from(MODELS)

# -- leaves ---------------------------------------------------------------------

# Any Unicode scalar value that UTF-8 can carry (no lone surrogates: those are hostile).
TEXT = st.text(st.characters(codec="utf-8"), max_size=24)
NONEMPTY_TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)
KEY = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
IDENT = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
URLS = st.sampled_from(
    ["https://example.com/cat.png", "http://127.0.0.1:9/a.jpg", "https://x.test/i?q=1&r=%20"]
)
MEDIA_TYPES = st.sampled_from(["image/jpeg", "image/png", "image/gif", "image/webp"])
BASE64 = st.binary(max_size=24).map(lambda raw: base64.b64encode(raw).decode())

FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_SCALARS: st.SearchStrategy[JSON] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), FINITE, TEXT
)
JSON_VALUES: st.SearchStrategy[JSON] = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEY, inner, max_size=3),
    max_leaves=8,
)
JSON_OBJECTS: st.SearchStrategy[dict[str, JSON]] = st.dictionaries(KEY, JSON_VALUES, max_size=4)

_PROPERTY_SCHEMAS: st.SearchStrategy[dict[str, JSON]] = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer", "minimum": 0},
        {"type": "number", "maximum": 1e6},
        {"type": "boolean"},
        {"enum": ["red", "green", 3, None]},
        {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        {"type": "object", "properties": {"x": {"type": "number"}}},
        {"anyOf": [{"type": "string"}, {"type": "null"}]},
    ]
)


@st.composite
def object_schemas(draw: Draw) -> dict[str, JSON]:
    """A JSON schema of ``"type": "object"`` (what tools and structured outputs take)."""
    properties: dict[str, JSON] = draw(st.dictionaries(IDENT, _PROPERTY_SCHEMAS, max_size=4))
    schema: dict[str, JSON] = {"type": "object", "properties": properties}
    if len(properties) > 0 and draw(st.booleans()):
        schema["required"] = draw(st.lists(st.sampled_from(sorted(properties)), unique=True))
    if draw(st.booleans()):
        schema["additionalProperties"] = draw(st.booleans())
    if draw(st.booleans()):
        schema["description"] = draw(TEXT)
    return schema


# -- cache_control -------------------------------------------------------------


class _Markers:
    """Hands out ``cache_control`` markers within the breakpoint rules: four at
    most (counted per marker given, so folding two onto one block stays within
    bounds) and one TTL for the whole request (so 1h never follows 5m)."""

    def __init__(self, draw: Draw) -> None:
        self._draw = draw
        self.ttl: str | None = draw(st.sampled_from([None, "5m", "1h"]))
        self.left = 4

    def maybe(self) -> dict[str, str] | None:
        if self.ttl is None or self.left == 0 or not self._draw(st.booleans()):
            return None
        self.left -= 1
        if self.ttl == "5m" and self._draw(st.booleans()):
            return {"type": "ephemeral"}  # 5m is the default
        return {"type": "ephemeral", "ttl": self.ttl}


def _marked(block: dict[str, JSON], markers: _Markers) -> dict[str, JSON]:
    marker = markers.maybe()
    if marker is not None:
        block["cache_control"] = marker
    return block


def _maybe(draw: Draw, body: Body, key: str, strategy: st.SearchStrategy[Any]) -> None:
    """Set ``body[key]`` from ``strategy`` half the time."""
    if draw(st.booleans()):
        body[key] = draw(strategy)


# -- OpenAI Chat Completions ---------------------------------------------------


def _openai_text_parts(draw: Draw, markers: _Markers, *, refusal: bool = False) -> list[JSON]:
    parts: list[JSON] = []
    for _ in range(draw(st.integers(1, 3))):
        if refusal and draw(st.booleans()):
            parts.append({"type": "refusal", "refusal": draw(TEXT)})
        else:
            parts.append(_marked({"type": "text", "text": draw(TEXT)}, markers))
    return parts


def _openai_user_content(draw: Draw, markers: _Markers) -> JSON:
    if draw(st.booleans()):
        return draw(TEXT)
    parts: list[JSON] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:
            url = draw(URLS)
            if draw(st.booleans()):
                url = f"data:{draw(MEDIA_TYPES)};base64,{draw(BASE64)}"
            image: dict[str, JSON] = {"url": url}
            _maybe(draw, image, "detail", st.sampled_from(["auto", "low", "high"]))
            parts.append(_marked({"type": "image_url", "image_url": image}, markers))
        else:
            parts.append(_marked({"type": "text", "text": draw(TEXT)}, markers))
    return parts


def _openai_message(draw: Draw, markers: _Markers, call_ids: list[str]) -> dict[str, JSON]:
    roles = ["system", "developer", "user", "user", "assistant"] + (
        ["tool"] * 2 if call_ids else []
    )
    role = draw(st.sampled_from(roles))
    message: dict[str, JSON] = {"role": role}
    if role in ("system", "developer"):
        message["content"] = (
            draw(TEXT) if draw(st.booleans()) else _openai_text_parts(draw, markers)
        )
    elif role == "user":
        message["content"] = _openai_user_content(draw, markers)
    elif role == "assistant":
        calls: list[JSON] = []
        for _ in range(draw(st.integers(0, 2))):
            call_id = f"call_{draw(IDENT)}"
            call_ids.append(call_id)
            arguments = json.dumps(draw(JSON_OBJECTS), ensure_ascii=draw(st.booleans()))
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": draw(IDENT), "arguments": arguments},
            }
            calls.append(_marked(call, markers))
        if calls:
            message["tool_calls"] = calls
        kind = draw(st.sampled_from(["text", "parts", "none"] if calls else ["text", "parts"]))
        if kind == "text":
            message["content"] = draw(TEXT)
        elif kind == "parts":
            message["content"] = _openai_text_parts(draw, markers, refusal=True)
        elif draw(st.booleans()):
            message["content"] = None
        _maybe(draw, message, "refusal", st.none())
    else:
        message["tool_call_id"] = draw(st.sampled_from(call_ids))
        message["content"] = (
            draw(TEXT) if draw(st.booleans()) else _openai_text_parts(draw, markers)
        )
    if role != "tool":
        _maybe(draw, message, "name", IDENT)
    return _marked(message, markers)


def _openai_tools(draw: Draw, markers: _Markers) -> list[JSON]:
    tools: list[JSON] = []
    for name in draw(st.lists(IDENT, max_size=3, unique=True)):
        function: dict[str, JSON] = {"name": name}
        _maybe(draw, function, "description", TEXT)
        _maybe(draw, function, "parameters", object_schemas())
        _maybe(draw, function, "strict", st.booleans())
        tools.append(_marked({"type": "function", "function": function}, markers))
    return tools


def _openai_response_format(draw: Draw) -> JSON:
    kind = draw(st.sampled_from(["text", "json_object", "json_schema"]))
    if kind != "json_schema":
        return {"type": kind}
    spec: dict[str, JSON] = {"name": draw(IDENT)}
    _maybe(draw, spec, "description", TEXT)
    _maybe(draw, spec, "schema", object_schemas())
    _maybe(draw, spec, "strict", st.booleans())
    return {"type": "json_schema", "json_schema": spec}


@st.composite
def openai_bodies(draw: Draw, models: st.SearchStrategy[str] = SERVED_MODELS) -> Body:
    """A ``POST /v1/chat/completions`` body the OpenAI parser must accept."""
    markers = _Markers(draw)
    call_ids: list[str] = []
    body: Body = {"model": draw(models)}
    # Tools come first in the canonical order: give them markers first.
    tools = _openai_tools(draw, markers) if draw(st.booleans()) else []
    body["messages"] = [
        _openai_message(draw, markers, call_ids) for _ in range(draw(st.integers(1, 5)))
    ]
    if tools:
        body["tools"] = tools
        names = [tool["function"]["name"] for tool in tools]
        choices = st.sampled_from(["none", "auto", "required"]) | st.sampled_from(names).map(
            lambda name: {"type": "function", "function": {"name": name}}
        )
        _maybe(draw, body, "tool_choice", choices)
    _maybe(draw, body, "parallel_tool_calls", st.booleans())
    _maybe(draw, body, "temperature", st.floats(0, 2) | st.integers(0, 2))
    _maybe(draw, body, "top_p", st.floats(0, 1))
    limit = draw(st.integers(1, 64))
    which = draw(st.sampled_from(["max_tokens", "max_completion_tokens", "both", "neither"]))
    if which in ("max_tokens", "both"):
        body["max_tokens"] = limit
    if which in ("max_completion_tokens", "both"):
        body["max_completion_tokens"] = limit
    _maybe(draw, body, "n", st.integers(1, 128))
    _maybe(draw, body, "stop", TEXT | st.lists(TEXT, max_size=4))
    _maybe(draw, body, "seed", st.integers(-(2**63), 2**63 - 1))
    _maybe(draw, body, "stream", st.booleans())
    if body.get("stream") and draw(st.booleans()):
        options: dict[str, JSON] = {}
        _maybe(draw, options, "include_usage", st.booleans())
        _maybe(draw, options, "include_obfuscation", st.booleans())
        body["stream_options"] = options
    _maybe(draw, body, "user", TEXT)
    _maybe(draw, body, "metadata", st.dictionaries(KEY, TEXT, max_size=3))
    if draw(st.booleans()):
        body["response_format"] = _openai_response_format(draw)
    if draw(st.integers(0, 3)) == 0:
        _maybe(draw, body, "frequency_penalty", st.floats(-2, 2))
        _maybe(draw, body, "presence_penalty", st.floats(-2, 2))
        _maybe(
            draw,
            body,
            "logit_bias",
            st.dictionaries(st.integers(0, 50_000).map(str), st.integers(-100, 100), max_size=3),
        )
        _maybe(draw, body, "store", st.booleans())
        _maybe(draw, body, "logprobs", st.just(False))
        _maybe(draw, body, "top_logprobs", st.just(0))  # no logprobs here: 0 only
        _maybe(draw, body, "modalities", st.just(["text"]))
        _maybe(draw, body, "service_tier", st.sampled_from(["auto", "default", "flex"]))
        _maybe(draw, body, "reasoning_effort", st.sampled_from(["low", "medium", "high"]))
        _maybe(draw, body, "prompt_cache_key", TEXT)
        _maybe(draw, body, "safety_identifier", TEXT)
    return body


# -- Anthropic Messages ----------------------------------------------------------


def _anthropic_image(draw: Draw, markers: _Markers) -> dict[str, JSON]:
    source: dict[str, JSON]
    if draw(st.booleans()):
        source = {"type": "base64", "media_type": draw(MEDIA_TYPES), "data": draw(BASE64)}
    else:
        source = {"type": "url", "url": draw(URLS)}
    return _marked({"type": "image", "source": source}, markers)


def _anthropic_text(draw: Draw, markers: _Markers) -> dict[str, JSON]:
    return _marked({"type": "text", "text": draw(NONEMPTY_TEXT)}, markers)


def _anthropic_message(draw: Draw, markers: _Markers, tool_ids: list[str]) -> dict[str, JSON]:
    role = draw(st.sampled_from(["user", "assistant"]))
    if draw(st.integers(0, 2)) == 0:
        return {"role": role, "content": draw(TEXT)}
    blocks: list[JSON] = []
    for _ in range(draw(st.integers(0, 3))):
        if role == "assistant":
            if draw(st.booleans()):
                tool_id = f"toolu_{draw(IDENT)}"
                tool_ids.append(tool_id)
                use: dict[str, JSON] = {"type": "tool_use", "id": tool_id, "name": draw(IDENT)}
                use["input"] = draw(JSON_OBJECTS)
                blocks.append(_marked(use, markers))
            else:
                blocks.append(_anthropic_text(draw, markers))
            continue
        kind = draw(st.sampled_from(["text", "image", *(["tool_result"] * 2 if tool_ids else [])]))
        if kind == "text":
            blocks.append(_anthropic_text(draw, markers))
        elif kind == "image":
            blocks.append(_anthropic_image(draw, markers))
        else:
            result: dict[str, JSON] = {
                "type": "tool_result",
                "tool_use_id": draw(st.sampled_from(tool_ids)),
            }
            content = draw(st.sampled_from(["absent", "text", "blocks"]))
            if content == "text":
                result["content"] = draw(TEXT)
            elif content == "blocks":
                result["content"] = [
                    _anthropic_text(draw, markers)
                    if draw(st.booleans())
                    else _anthropic_image(draw, markers)
                    for _ in range(draw(st.integers(0, 2)))
                ]
            _maybe(draw, result, "is_error", st.booleans())
            blocks.append(_marked(result, markers))
    return {"role": role, "content": blocks}


def _anthropic_tools(draw: Draw, markers: _Markers) -> list[JSON]:
    tools: list[JSON] = []
    for name in draw(st.lists(IDENT, max_size=3, unique=True)):
        tool: dict[str, JSON] = {"name": name, "input_schema": draw(object_schemas())}
        _maybe(draw, tool, "description", TEXT)
        _maybe(draw, tool, "type", st.just("custom"))
        tools.append(_marked(tool, markers))
    return tools


@st.composite
def anthropic_bodies(draw: Draw, models: st.SearchStrategy[str] = SERVED_MODELS) -> Body:
    """A ``POST /v1/messages`` body the Anthropic parser must accept."""
    markers = _Markers(draw)
    tool_ids: list[str] = []
    body: Body = {"model": draw(models), "max_tokens": draw(st.integers(1, 64))}
    tools = _anthropic_tools(draw, markers) if draw(st.booleans()) else []
    if draw(st.booleans()):  # system before messages: canonical order for the markers
        if draw(st.booleans()):
            body["system"] = draw(TEXT)
        else:
            body["system"] = [
                _anthropic_text(draw, markers) for _ in range(draw(st.integers(0, 3)))
            ]
    body["messages"] = [
        _anthropic_message(draw, markers, tool_ids) for _ in range(draw(st.integers(1, 5)))
    ]
    if tools:
        body["tools"] = tools
    kinds = ["auto", "any", "none", *(["tool"] if tools else [])]
    if draw(st.booleans()):
        choice: dict[str, JSON] = {"type": draw(st.sampled_from(kinds))}
        if choice["type"] == "tool":
            choice["name"] = draw(st.sampled_from([tool["name"] for tool in tools]))
        _maybe(draw, choice, "disable_parallel_tool_use", st.booleans())
        body["tool_choice"] = choice
    _maybe(draw, body, "temperature", st.floats(0, 1) | st.integers(0, 1))
    _maybe(draw, body, "top_p", st.floats(0, 1))
    _maybe(draw, body, "top_k", st.integers(0, 500))
    _maybe(draw, body, "stop_sequences", st.lists(TEXT, max_size=4))
    _maybe(draw, body, "stream", st.booleans())
    _maybe(draw, body, "metadata", st.just({}) | st.builds(lambda u: {"user_id": u}, TEXT))
    _maybe(draw, body, "thinking", st.just({"type": "disabled"}))
    _maybe(draw, body, "service_tier", st.sampled_from(["auto", "standard_only"]))
    if draw(st.integers(0, 3)) == 0:
        schema = draw(object_schemas())
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return body


def bodies(
    dialect: Dialect, models: st.SearchStrategy[str] = SERVED_MODELS
) -> st.SearchStrategy[Body]:
    return openai_bodies(models) if dialect == "openai" else anthropic_bodies(models)


# -- hostile values and mutations ------------------------------------------------

SURROGATES = ("\ud800", "\udfff", "a\udc00b", "\ud83d")  # lone halves (valid: "\ud83d\ude00")
HUGE_INTS = (2**63, 2**64, 2**64 + 1, 2**70, -(2**70), 10**30, 10**300, -1, 0)
ODD_FLOATS = (1e308, -1e308, 5e-324, -0.0, float("nan"), float("inf"), float("-inf"))


def nested(depth: int, leaf: JSON = 0, *, kind: str = "list") -> JSON:
    """``leaf`` inside ``depth`` lists (``[[[0]]]``) or objects (``{"a": {"a": 0}}``)."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


HOSTILE: st.SearchStrategy[JSON] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(),
    st.sampled_from(ODD_FLOATS),
    st.text(max_size=8),
    st.sampled_from(["", " ", *SURROGATES, "中" * 60, "\x00", "fake-model"]),
    st.integers(1_000, 20_000).map(lambda n: "x" * n),
    st.lists(st.integers() | TEXT, max_size=3),
    st.dictionaries(TEXT, st.integers() | TEXT, max_size=3),
    st.builds(
        nested,
        st.integers(2, 120),
        st.sampled_from([0, "x", None, {}]),
        kind=st.sampled_from(["list", "dict"]),
    ),
)
"""Values of every JSON type and then some: what a mutation swaps in."""

UNKNOWN_KEYS = st.sampled_from(["x", "", "\ud800", "__proto__", "model ", "MODEL", "cache_control"])


def _containers(value: JSON) -> list[dict[str, JSON] | list[JSON]]:
    """Every dict and list inside ``value`` (itself included), outermost first."""
    found: list[dict[str, JSON] | list[JSON]] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            found.append(item)
            stack.extend(item)
    return found


def _mangle_string(draw: Draw, text: str) -> str:
    how = draw(st.sampled_from(["surrogate", "empty", "long", "whitespace"]))
    if how == "surrogate":
        at = draw(st.integers(0, len(text)))
        return text[:at] + draw(st.sampled_from(SURROGATES)) + text[at:]
    if how == "empty":
        return ""
    if how == "long":
        return text + "y" * draw(st.integers(1_000, 50_000))
    return f"  {text}\n"


def _hostile(draw: Draw) -> JSON:
    """A fresh hostile value (never an object shared with other examples)."""
    return copy.deepcopy(draw(HOSTILE))


def _mutate_once(draw: Draw, body: JSON) -> None:
    node = draw(st.sampled_from(_containers(body)))
    slots: list[Any] = sorted(node) if isinstance(node, dict) else list(range(len(node)))
    op = draw(st.sampled_from(["drop", "swap", "swap", "add", "mangle", "negate", "empty", "nest"]))
    if op == "add" or not slots:
        if isinstance(node, dict):
            node[draw(UNKNOWN_KEYS)] = _hostile(draw)
        else:
            node.append(_hostile(draw))
        return
    slot = draw(st.sampled_from(slots))
    current = node[slot]
    if op == "drop":
        del node[slot]
    elif op == "mangle" and isinstance(current, str):
        node[slot] = _mangle_string(draw, current)
    elif op == "negate" and isinstance(current, int | float) and not isinstance(current, bool):
        node[slot] = -current if current else -1
    elif op == "empty" and isinstance(current, dict | list | str):
        node[slot] = type(current)()
    elif op == "nest":
        node[slot] = nested(draw(st.integers(1, 120)), current)
    else:
        node[slot] = _hostile(draw)


@st.composite
def mutated(draw: Draw, valid: st.SearchStrategy[Body]) -> JSON:
    """A body from ``valid`` with one to three hostile edits (occasionally not an object)."""
    if draw(st.integers(0, 19)) == 0:
        return _hostile(draw)
    # A copy: drawn values may share objects with the strategies' constants.
    body = copy.deepcopy(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        _mutate_once(draw, body)
    return body


# -- raw bytes (HTTP) -------------------------------------------------------------


@dataclass(frozen=True)
class RawRequest:
    """One HTTP request body as bytes, and what it is meant to test."""

    body: bytes
    content_type: str | None = "application/json"
    kind: str = "json"
    """``json`` (a serialised body), ``valid`` (one the parser accepts), or the hostile kind."""
    expect: int | None = None
    """The status it must get, when the tests know it (else: any 4xx, or 200 if valid)."""

    def __repr__(self) -> str:  # falsifying examples stay readable
        shown = self.body if len(self.body) <= 400 else self.body[:400] + b"..."
        return f"RawRequest(kind={self.kind!r}, content_type={self.content_type!r}, body={shown!r})"


def encode(body: JSON, *, ascii_only: bool = True) -> bytes:
    """A body as a client would send it; a lone surrogate becomes a ``\\ud800`` escape.

    ``allow_nan`` keeps NaN/Infinity as the non-JSON tokens Python writes.
    """
    text = json.dumps(body, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


_PLACEHOLDER = "__hostile__"


def _spliced(draw: Draw, valid: Body, raw: bytes) -> bytes:
    """``valid`` as JSON with ``raw`` (any bytes) as the value of one of its fields."""
    body = dict(valid)
    where = draw(
        st.sampled_from(
            ["metadata", "temperature", "max_tokens", "model", "messages", "tools", "seed"]
        )
    )
    body[where] = _PLACEHOLDER
    return encode(body).replace(f'"{_PLACEHOLDER}"'.encode(), raw, 1)


@st.composite
def raw_requests(draw: Draw, dialect: Dialect) -> RawRequest:
    """A request body as bytes: valid, mutated, or broken in a way only bytes can be."""
    valid = draw(bodies(dialect))
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "mutated",
                "truncated",
                "utf8",
                "surrogate",
                "deep",
                "digits",
                "tokens",
                "content_type",
                "empty",
            ]
        )
    )
    if kind == "valid":
        return RawRequest(encode(valid, ascii_only=draw(st.booleans())), kind="valid", expect=200)
    if kind == "mutated":
        return RawRequest(encode(draw(mutated(st.just(valid)))), kind="mutated")
    if kind == "truncated":
        data = encode(valid)
        return RawRequest(data[: draw(st.integers(0, len(data) - 1))], kind=kind, expect=400)
    if kind == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xe2\x82", b"\x80"]))
        data = encode(valid, ascii_only=False)
        at = data.index(b'"model"') + len(b'"model": "')
        return RawRequest(data[:at] + bad + data[at:], kind=kind, expect=400)
    if kind == "surrogate":
        escape = draw(st.sampled_from([b"\\ud800", b"\\udfff", b"x\\udc00y", b"\\ud83d"]))
        data = encode(valid)
        # Into the model name, or into the last message's text.
        target = b'"model": "' if draw(st.booleans()) else b'"content": "'
        at = data.rfind(target)
        at = at + len(target) if at >= 0 else data.index(b'"model": "') + len(b'"model": "')
        return RawRequest(data[:at] + escape + data[at:], kind=kind, expect=400)
    if kind == "deep":
        depth = draw(st.integers(1_000, 20_000))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        deep = opener * depth + b"0" + closer * depth
        data = deep if draw(st.integers(0, 4)) == 0 else _spliced(draw, valid, deep)
        return RawRequest(data, kind=kind, expect=400)
    if kind == "digits":
        digits = draw(st.integers(4_301, 20_000))
        number = (b"-" if draw(st.booleans()) else b"") + b"9" * digits
        return RawRequest(_spliced(draw, valid, number), kind=kind, expect=400)
    if kind == "tokens":
        # Python's json reads these (1e400 as infinity); no field may hold them.
        token = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e999"]))
        return RawRequest(_spliced(draw, valid, token), kind=kind, expect=400)
    if kind == "content_type":
        content_type = draw(
            st.sampled_from(
                [
                    "text/plain",
                    "text/plain; charset=utf-8",
                    "application/x-www-form-urlencoded",
                    "multipart/form-data; boundary=x",
                    "application/xml",
                    "text/html",
                ]
            )
        )
        expect = 415 if content_type.startswith("text/plain") else None
        return RawRequest(encode(valid), content_type=content_type, kind=kind, expect=expect)
    return RawRequest(b"", kind=kind, expect=400)
