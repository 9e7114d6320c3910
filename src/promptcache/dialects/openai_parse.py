"""OpenAI Chat Completions request body -> canonical :class:`ChatRequest`.

Validation follows the real API's schema and wording (``Missing required
parameter: 'model'.``, ``param`` like ``messages.[0].role``). Folding rules:
system and developer messages are hoisted, in order, into
``ChatRequest.system``; assistant ``tool_calls`` become ``ToolUseBlock``s;
consecutive ``role: "tool"`` messages become one user message of
``ToolResultBlock``s. ``cache_control`` is accepted on content parts, and as
extensions on a tool and on a whole message (marking its last block).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from promptcache.dialects._common import (
    TOOL_NAME_PATTERN,
    DialectRequestError,
    ErrorStyle,
    Fields,
    Path,
    check_json,
    check_text,
    image_source_from_url,
    is_kind,
    loads_json_object,
    parse_cache_control,
    shown,
    shown_bound,
)
from promptcache.errors import RequestError
from promptcache.request import (
    CacheControl,
    ChatRequest,
    ContentBlock,
    ImageBlock,
    Message,
    SamplingParams,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    Transport,
)

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
_KIND_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}
# Accepted for compatibility, validated for type, but with no effect here.
_IGNORED_PARAMS = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "reasoning_effort",
        "verbosity",
        "modalities",
    }
)
_PARAMS = _IGNORED_PARAMS | {
    "model",
    "messages",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "seed",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "logprobs",
    "top_logprobs",
    "functions",
    "function_call",
    "audio",
    "prediction",
    "web_search_options",
}


def _json_kind(value: Any) -> str:
    for kind in ("boolean", "integer", "number", "string", "array", "object"):
        if is_kind(value, kind):
            return _KIND_WORDS[kind]
    return "null"


class OpenAIErrorStyle(ErrorStyle):
    def path(self, path: Path) -> str:
        return ".".join(f"[{p}]" if isinstance(p, int) else p for p in path)

    def missing(self, path: Path) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Missing required parameter: '{p}'.", param=p, code="missing_required_parameter"
        )

    def wrong_type(self, path: Path, kind: str, value: Any) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Invalid type for '{p}': expected {_KIND_WORDS[kind]}, "
            f"but got {_json_kind(value)} instead.",
            param=p,
            code="invalid_type",
        )

    def not_one_of(self, path: Path, value: Any, allowed: Sequence[str]) -> RequestError:
        options = ", ".join(f"'{a}'" for a in allowed)
        return DialectRequestError(
            f"Invalid value: '{shown(value)}'. Supported values are: {options}.",
            param=self.path(path),
            code="invalid_value",
        )

    def out_of_range(
        self, path: Path, value: float, *, minimum: float | None, maximum: float | None
    ) -> RequestError:
        p = self.path(path)
        word = "integer" if isinstance(value, int) else "decimal"
        if minimum is not None and value < minimum:
            return DialectRequestError(
                f"Invalid '{p}': {word} below minimum value. "
                f"Expected a value >= {shown_bound(minimum)}, but got {shown(value)} instead.",
                param=p,
                code=f"{word}_below_min_value",
            )
        return DialectRequestError(
            f"Invalid '{p}': {word} above maximum value. Expected a value <= "
            f"{shown_bound(math.inf if maximum is None else maximum)}, "
            f"but got {shown(value)} instead.",
            param=p,
            code=f"{word}_above_max_value",
        )

    def not_text(self, path: Path, value: str) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Invalid '{p}': string with a lone UTF-16 surrogate ('{shown(value)}'); "
            "strings must be valid Unicode.",
            param=p,
            code="invalid_value",
        )

    def not_finite(self, path: Path, value: Any) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Invalid '{p}': expected a finite number, but got {shown(value)} instead.",
            param=p,
            code="invalid_value",
        )

    def unknown_field(self, path: Path) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Unrecognized request argument supplied: {p}", param=p, code="unknown_parameter"
        )

    def invalid(self, path: Path, message: str) -> RequestError:
        return DialectRequestError(message, param=self.path(path) or None, code="invalid_value")


STYLE = OpenAIErrorStyle()


def parse_request(
    body: Any, *, tenant: str = "", namespace: str = "", request_id: str | None = None
) -> ChatRequest:
    """Validate an OpenAI ``POST /v1/chat/completions`` body and build the canonical request."""
    top = Fields(STYLE, body)
    top.reject_unknown(_PARAMS)
    _reject_unsupported(top)
    model = top.required_string("model")
    raw_messages = top.array("messages", required=True) or []
    if not raw_messages:
        raise STYLE.invalid(
            ("messages",),
            "Invalid 'messages': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
        )
    system, messages = _parse_messages(raw_messages)
    tools = _parse_tools(top)
    request = ChatRequest(
        model=model,
        messages=tuple(messages),
        system=tuple(system),
        tools=tools,
        sampling=_parse_sampling(top),
        response_format=_parse_response_format(top),
        tool_choice=_parse_tool_choice(top, tools),
        tenant=tenant,
        namespace=namespace,
        transport=_parse_transport(top, request_id),
    )
    request.breakpoints()
    return request


def _reject_unsupported(top: Fields) -> None:
    for key in ("frequency_penalty", "presence_penalty"):
        top.number(key, minimum=-2, maximum=2)
    top.obj("logit_bias")
    top.boolean("store")
    if top.boolean("logprobs"):
        raise STYLE.invalid(("logprobs",), "logprobs are not supported by this server.")
    top.integer("top_logprobs", minimum=0, maximum=20)
    for legacy in ("functions", "function_call"):
        if top.has(legacy):
            raise STYLE.invalid(
                (legacy,), f"'{legacy}' is deprecated and not supported here: use 'tools'."
            )
    for unsupported in ("audio", "prediction", "web_search_options"):
        if top.has(unsupported):
            raise STYLE.invalid((unsupported,), f"'{unsupported}' is not supported by this server.")
    modalities = top.array("modalities") or []
    for i, modality in enumerate(modalities):
        if modality != "text":
            raise STYLE.not_one_of(("modalities", i), modality, ("text",))


def _parse_sampling(top: Fields) -> SamplingParams:
    max_tokens = top.integer("max_tokens", minimum=1)
    max_completion = top.integer("max_completion_tokens", minimum=1)
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise STYLE.invalid(
            ("max_tokens",),
            "max_tokens and max_completion_tokens cannot both be set to different values; "
            "use max_completion_tokens.",
        )
    return SamplingParams(
        temperature=top.number("temperature", minimum=0, maximum=2),
        top_p=top.number("top_p", minimum=0, maximum=1),
        max_tokens=max_completion if max_completion is not None else max_tokens,
        stop=_parse_stop(top),
        seed=top.integer("seed"),
        n=top.integer("n", minimum=1, maximum=128) or 1,
    )


def _parse_stop(top: Fields) -> tuple[str, ...]:
    stop = top.data.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (check_text(STYLE, ("stop",), stop),)
    if not isinstance(stop, list):
        raise STYLE.wrong_type(("stop",), "array", stop)
    if len(stop) > 4:
        raise STYLE.invalid(
            ("stop",),
            f"Invalid 'stop': array too long. Expected an array with maximum length 4, "
            f"but got an array with length {len(stop)} instead.",
        )
    for i, item in enumerate(stop):
        if not isinstance(item, str):
            raise STYLE.wrong_type(("stop", i), "string", item)
        check_text(STYLE, ("stop", i), item)
    return tuple(stop)


def _parse_transport(top: Fields, request_id: str | None) -> Transport:
    stream = bool(top.boolean("stream"))
    options = top.obj("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise STYLE.invalid(
                ("stream_options",),
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        options.reject_unknown({"include_usage", "include_obfuscation"})
        include_usage = bool(options.boolean("include_usage"))
        options.boolean("include_obfuscation")
    metadata = top.obj("metadata")
    if metadata is not None:
        check_json(STYLE, ("metadata",), metadata.data)
        for key in metadata.data:
            metadata.string(key)
    return Transport(
        stream=stream,
        include_usage=include_usage,
        request_id=request_id,
        user=top.string("user"),
        metadata=None if metadata is None else dict(metadata.data),
    )


def _parse_response_format(top: Fields) -> dict[str, Any] | None:
    fmt = top.obj("response_format")
    if fmt is None:
        return None
    kind = fmt.choice("type", ("text", "json_object", "json_schema"), required=True)
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = fmt.required_obj("json_schema")
    schema.reject_unknown({"name", "description", "schema", "strict"})
    schema.required_string("name")
    schema.string("description")
    schema.obj("schema")
    schema.boolean("strict")
    check_json(STYLE, fmt.at("json_schema"), schema.data)
    return {"type": "json_schema", "json_schema": dict(schema.data)}


def _parse_tools(top: Fields) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, raw in enumerate(top.array("tools") or []):
        entry = Fields(STYLE, raw, ("tools", i))
        entry.reject_unknown({"type", "function", "cache_control"})
        entry.choice("type", ("function",), required=True)
        function = entry.required_obj("function")
        function.reject_unknown({"name", "description", "parameters", "strict"})
        name = function.required_string("name")
        if not TOOL_NAME_PATTERN.match(name):
            raise STYLE.invalid(
                function.at("name"),
                f"Invalid '{STYLE.path(function.at('name'))}': string does not match pattern. "
                f"Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'.",
            )
        if any(t.name == name for t in tools):
            raise STYLE.invalid(function.at("name"), f"Tool names must be unique: '{name}'.")
        parameters = function.obj("parameters")
        function.json_value("parameters")
        kind = parameters.data.get("type") if parameters is not None else None
        if parameters is not None and kind is not None and kind != "object":
            # As OpenAI answers (and as the Anthropic dialect requires of input_schema).
            raise STYLE.invalid(
                function.at("parameters"),
                f"Invalid schema for function '{name}': schema must be a JSON Schema of "
                f"'type: \"object\"', got 'type: {json.dumps(kind)[:40]}'.",
            )
        function.boolean("strict")
        tools.append(
            Tool(
                name=name,
                description=function.string("description") or "",
                input_schema=(
                    dict(parameters.data)
                    if parameters is not None
                    else {"type": "object", "properties": {}}
                ),
                cache_control=parse_cache_control(entry),
            )
        )
    return tuple(tools)


def _parse_tool_choice(top: Fields, tools: tuple[Tool, ...]) -> dict[str, Any] | None:
    raw = top.data.get("tool_choice")
    parallel = top.boolean("parallel_tool_calls")
    if raw is None and (parallel is None or not tools):
        return None
    if raw is not None and not tools:
        raise STYLE.invalid(
            ("tool_choice",),
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
        )
    choice: dict[str, Any]
    if raw is None:
        choice = {"type": "auto"}
    elif isinstance(raw, str):
        if raw not in ("none", "auto", "required"):
            raise STYLE.not_one_of(("tool_choice",), raw, ("none", "auto", "required"))
        choice = {"type": {"required": "any"}.get(raw, raw)}
    else:
        named = Fields(STYLE, raw, ("tool_choice",))
        named.choice("type", ("function",), required=True)
        function = named.required_obj("function")
        name = function.required_string("name")
        if all(t.name != name for t in tools):
            raise STYLE.invalid(
                ("tool_choice",),
                f"Invalid 'tool_choice': no tool named '{shown(name)}' was given.",
            )
        choice = {"type": "tool", "name": name}
    if parallel is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _parse_messages(raw_messages: list[Any]) -> tuple[list[TextBlock], list[Message]]:
    system: list[TextBlock] = []
    messages: list[Message] = []
    known_call_ids: set[str] = set()
    for i, raw in enumerate(raw_messages):
        entry = Fields(STYLE, raw, ("messages", i))
        role = entry.choice("role", _ROLES, required=True)
        marker = parse_cache_control(entry)
        if role in ("system", "developer"):
            entry.reject_unknown({"role", "content", "name", "cache_control"})
            blocks = _mark_last(_text_parts(entry, allow_refusal=False), marker)
            system.extend(b for b in blocks if isinstance(b, TextBlock))
        elif role == "user":
            entry.reject_unknown({"role", "content", "name", "cache_control"})
            messages.append(Message(role="user", content=_mark_last(_user_parts(entry), marker)))
        elif role == "assistant":
            blocks = _mark_last(_assistant_blocks(entry), marker)
            known_call_ids.update(b.id for b in blocks if isinstance(b, ToolUseBlock))
            messages.append(Message(role="assistant", content=blocks))
        elif role == "tool":
            result = _tool_result(entry, known_call_ids, marker)
            previous = messages[-1] if messages else None
            if previous is not None and _only_tool_results(previous):
                messages[-1] = Message(role="user", content=(*previous.content, result))
            else:
                messages.append(Message(role="user", content=(result,)))
        else:
            raise STYLE.invalid(
                entry.at("role"), "The 'function' role is deprecated and not supported: use 'tool'."
            )
    return system, messages


def _only_tool_results(message: Message) -> bool:
    return message.role == "user" and all(isinstance(b, ToolResultBlock) for b in message.content)


def _mark_last(
    blocks: tuple[ContentBlock, ...], marker: CacheControl | None
) -> tuple[ContentBlock, ...]:
    """A message-level ``cache_control`` (extension) marks the message's last block."""
    if marker is None or not blocks:
        return blocks
    last = blocks[-1]
    if last.cache_control is None:
        last = _with_marker(last, marker)
    return (*blocks[:-1], last)


def _with_marker(block: ContentBlock, marker: CacheControl) -> ContentBlock:
    return replace(block, cache_control=marker)


def _content(entry: Fields, *, required: bool = True) -> str | list[Any] | None:
    content = entry.data.get("content")
    if content is None:
        if required:
            raise STYLE.missing(entry.at("content"))
        return None
    if isinstance(content, str):
        return check_text(STYLE, entry.at("content"), content)
    if not isinstance(content, list):
        raise STYLE.wrong_type(entry.at("content"), "string", content)
    if not content:
        p = STYLE.path(entry.at("content"))
        raise STYLE.invalid(
            entry.at("content"),
            f"Invalid '{p}': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
        )
    return content


def _text_parts(entry: Fields, *, allow_refusal: bool) -> tuple[ContentBlock, ...]:
    content = _content(entry)
    if isinstance(content, str):
        return (TextBlock(text=content),)
    allowed = ("text", "refusal") if allow_refusal else ("text",)
    blocks: list[ContentBlock] = []
    for j, raw in enumerate(content or []):
        part = Fields(STYLE, raw, (*entry.at("content"), j))
        kind = part.choice("type", allowed, required=True)
        part.reject_unknown({"type", kind or "text", "cache_control"})
        text = part.required_string(kind or "text")
        blocks.append(TextBlock(text=text, cache_control=parse_cache_control(part)))
    return tuple(blocks)


def _user_parts(entry: Fields) -> tuple[ContentBlock, ...]:
    content = _content(entry)
    if isinstance(content, str):
        return (TextBlock(text=content),)
    blocks: list[ContentBlock] = []
    for j, raw in enumerate(content or []):
        part = Fields(STYLE, raw, (*entry.at("content"), j))
        kind = part.choice("type", ("text", "image_url", "input_audio", "file"), required=True)
        if kind in ("input_audio", "file"):
            message = f"Content parts of type '{kind}' are not supported."
            raise STYLE.invalid(part.at("type"), message)
        marker = parse_cache_control(part)
        if kind == "text":
            part.reject_unknown({"type", "text", "cache_control"})
            blocks.append(TextBlock(text=part.required_string("text"), cache_control=marker))
            continue
        part.reject_unknown({"type", "image_url", "cache_control"})
        image = part.required_obj("image_url")
        image.reject_unknown({"url", "detail"})
        source = image_source_from_url(
            image.required_string("url"), image.choice("detail", ("auto", "low", "high"))
        )
        blocks.append(ImageBlock(source=source, cache_control=marker))
    return tuple(blocks)


def _assistant_blocks(entry: Fields) -> tuple[ContentBlock, ...]:
    entry.reject_unknown(
        {"role", "content", "name", "tool_calls", "refusal", "audio", "cache_control"}
    )
    calls = entry.array("tool_calls") or []
    blocks: list[ContentBlock] = []
    if entry.data.get("content") is not None or not calls:
        texts = _text_parts(entry, allow_refusal=True)
        # content "" next to tool_calls is how many clients say "no text": drop it.
        blocks.extend(b for b in texts if not (calls and isinstance(b, TextBlock) and not b.text))
    for k, raw in enumerate(calls):
        call = Fields(STYLE, raw, (*entry.at("tool_calls"), k))
        call.reject_unknown({"id", "type", "function", "cache_control"})
        call.choice("type", ("function",), required=True)
        function = call.required_obj("function")
        function.reject_unknown({"name", "arguments"})
        arguments = function.required_string("arguments")
        parsed = loads_json_object(arguments)
        if parsed is None:
            raise STYLE.invalid(
                function.at("arguments"),
                f"Invalid '{STYLE.path(function.at('arguments'))}': expected a JSON object "
                "encoded as a string.",
            )
        check_json(STYLE, function.at("arguments"), parsed)
        blocks.append(
            ToolUseBlock(
                id=call.required_string("id"),
                name=function.required_string("name"),
                input=parsed,
                cache_control=parse_cache_control(call),
            )
        )
    return tuple(blocks)


def _tool_result(
    entry: Fields, known_call_ids: set[str], marker: CacheControl | None
) -> ToolResultBlock:
    entry.reject_unknown({"role", "content", "tool_call_id", "name", "cache_control"})
    call_id = entry.required_string("tool_call_id")
    if call_id not in known_call_ids:
        raise STYLE.invalid(
            entry.at("tool_call_id"),
            "Invalid parameter: messages with role 'tool' must be a response to a preceding "
            f"message with 'tool_calls' (no tool call has id '{shown(call_id)}').",
        )
    texts = tuple(b for b in _text_parts(entry, allow_refusal=False) if isinstance(b, TextBlock))
    if marker is None:
        # A cache_control on the result's only text part marks the whole result.
        marker = next((b.cache_control for b in reversed(texts) if b.cache_control), None)
        texts = tuple(TextBlock(text=b.text) for b in texts)
    return ToolResultBlock(tool_use_id=call_id, content=texts, cache_control=marker)
