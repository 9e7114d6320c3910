"""The OpenAI dialect in reverse, for the upstream engine: canonical request -> wire body,
wire response or SSE -> canonical events.

Provider cache fields are normalised by a reader from ``wire_usage.py`` (the
upstream's provider profile picks one). Reasoning (``reasoning_content``, or vLLM's and
OpenRouter's ``reasoning``) becomes :attr:`Choice.reasoning`.

Toward an upstream that takes Anthropic's ``cache_control`` on OpenAI-shaped
content parts (OpenRouter), ``cache_markers=True`` places the markers there.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptcache.dialects._common import dumps, image_source_to_url, render_cache_control
from promptcache.dialects.openai.wire_usage import UsageReader, compatible_usage
from promptcache.errors import RequestError, UpstreamError
from promptcache.request import (
    ChatRequest,
    ContentBlock,
    ImageBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from promptcache.result import Choice, FinishReason, Result, StreamEvent, TextDelta

_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def to_wire_request(
    request: ChatRequest, *, stream: bool, cache_markers: bool = False, cache_hints: bool = True
) -> dict[str, Any]:
    """The Chat Completions body for ``request``.

    ``cache_markers``: Anthropic-style ``cache_control`` on the content parts that carry
    one (and the top-level one), for gateways that pass them on to Claude; otherwise
    they are left out (OpenAI-style providers cache implicitly, some reject unknown
    fields). ``cache_hints``: send ``prompt_cache_key`` / ``prompt_cache_retention``.
    Markers on tools and tool calls have no place in this shape: the caller deals
    with them first (see the upstream provider profiles).
    """
    messages: list[dict[str, Any]] = []
    if request.system:
        parts = [_wire_part(b, cache_markers) for b in request.system]
        messages.append({"role": "system", "content": _content(parts)})
    for message in request.messages:
        messages += _wire_messages(message, cache_markers)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    automatic = render_cache_control(request.cache_control) if cache_markers else None
    if automatic is not None:
        body["cache_control"] = automatic
    sampling = request.sampling
    optional = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_tokens,
        "seed": sampling.seed,
        "stop": list(sampling.stop) or None,
        "n": sampling.n if sampling.n != 1 else None,
        "response_format": _wire_response_format(request.response_format),
        "user": request.transport.user,
        # Penalties and bias as OpenAI names them; top_k / min_p / repetition_penalty
        # as vLLM-style servers do (OpenAI itself answers a 400 naming the one it lacks).
        "frequency_penalty": sampling.frequency_penalty,
        "presence_penalty": sampling.presence_penalty,
        "logit_bias": {str(t): b for t, b in sampling.logit_bias} or None,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "repetition_penalty": sampling.repetition_penalty,
        "reasoning_effort": sampling.reasoning_effort,
        "verbosity": sampling.verbosity,
    }
    if cache_hints:
        optional["prompt_cache_key"] = request.transport.prompt_cache_key
        optional["prompt_cache_retention"] = request.transport.prompt_cache_retention
    body.update({k: v for k, v in optional.items() if v is not None})
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": dict(t.input_schema),
                },
            }
            for t in request.tools
        ]
        body.update(_wire_tool_choice(request.tool_choice))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _wire_tool_choice(choice: Any) -> dict[str, Any]:
    if not choice:
        return {}
    kind = choice["type"]
    wire: dict[str, Any] = {}
    if kind == "tool":
        wire["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        wire["tool_choice"] = {"any": "required"}.get(kind, kind)
    if choice.get("disable_parallel_tool_use"):
        wire["parallel_tool_calls"] = False
    return wire


def _wire_part(block: ContentBlock, cache_markers: bool = False) -> dict[str, Any]:
    part: dict[str, Any]
    if isinstance(block, TextBlock):
        part = {"type": "text", "text": block.text}
    elif isinstance(block, ImageBlock):
        image: dict[str, Any] = {"url": image_source_to_url(block.source)}
        if "detail" in block.source:
            image["detail"] = block.source["detail"]
        part = {"type": "image_url", "image_url": image}
    else:
        raise RequestError(f"A {block.type} block cannot be sent as an OpenAI content part.")
    marker = render_cache_control(block.cache_control) if cache_markers else None
    if marker is not None:
        part["cache_control"] = marker
    return part


def _content(parts: list[dict[str, Any]]) -> Any:
    """A lone unmarked text part as a plain string (what every OpenAI-style server
    takes), anything else as the list of parts."""
    if len(parts) == 1 and parts[0]["type"] == "text" and "cache_control" not in parts[0]:
        return parts[0]["text"]
    return parts


def _wire_messages(message: Message, cache_markers: bool = False) -> list[dict[str, Any]]:
    if message.role == "assistant":
        calls = [b for b in message.content if isinstance(b, ToolUseBlock)]
        texts = [_wire_part(b, cache_markers) for b in message.content if isinstance(b, TextBlock)]
        marked = any("cache_control" in t for t in texts)
        content = texts if marked else (message.text() or None)
        wire: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            wire["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": dumps(dict(c.input))},
                }
                for c in calls
            ]
        return [wire]
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in message.content:
        if isinstance(block, ToolResultBlock):
            text: Any = _tool_text(block)
            marker = render_cache_control(block.cache_control) if cache_markers else None
            if marker is not None:
                text = [{"type": "text", "text": text, "cache_control": marker}]
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
        else:
            parts.append(_wire_part(block, cache_markers))
    if parts:
        out.append({"role": "user", "content": _content(parts)})
    return out


def _tool_text(block: ToolResultBlock) -> str:
    if any(isinstance(b, ImageBlock) for b in block.content):
        raise RequestError(
            "Images inside tool results cannot be sent to an OpenAI-compatible upstream.",
            param="messages",
        )
    return "".join(b.text for b in block.content if isinstance(b, TextBlock))


def _tool_calls(raw: Any) -> tuple[ToolUseBlock, ...]:
    calls = []
    for call in raw or []:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = {"_raw_arguments": arguments}
        calls.append(
            ToolUseBlock(
                id=str(call.get("id") or ""),
                name=str(function.get("name") or ""),
                input=parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments},
            )
        )
    return tuple(calls)


def _reasoning(message: Mapping[str, Any]) -> str:
    """``reasoning_content`` (GLM, DeepSeek, older vLLM) or ``reasoning`` (vLLM >= 0.10,
    OpenRouter), whichever a message or delta carries."""
    for name in ("reasoning_content", "reasoning"):
        value = message.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def result_from_wire(body: Any, read_usage: UsageReader = compatible_usage) -> Result:
    """A ``chat.completion`` body from upstream as a canonical :class:`Result`."""
    try:
        choices = tuple(
            Choice(
                index=int(c.get("index", i)),
                text=(c.get("message") or {}).get("content") or "",
                tool_calls=_tool_calls((c.get("message") or {}).get("tool_calls")),
                finish_reason=_FINISH.get(c.get("finish_reason") or "stop", "stop"),
                reasoning=_reasoning(c.get("message") or {}),
            )
            for i, c in enumerate(body["choices"])
        )
        return Result(
            id=str(body.get("id") or ""),
            model=str(body.get("model") or ""),
            created=int(body.get("created") or time.time()),
            choices=choices,
            usage=read_usage(body),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise UpstreamError(f"The upstream returned an unexpected body: {error!r}") from error


@dataclass
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None


async def events_from_sse(
    pairs: AsyncIterator[tuple[str, str]], read_usage: UsageReader = compatible_usage
) -> AsyncIterator[StreamEvent]:
    """Decode an upstream ``chat.completion.chunk`` stream into deltas and one Result."""
    header: dict[str, Any] = {}
    states: dict[int, _ChoiceState] = {}
    usage: Mapping[str, Any] = {}
    done = False
    async for _, data in pairs:
        if data.strip() == "[DONE]":
            done = True
            break
        chunk = json.loads(data)
        if "error" in chunk:
            error = chunk["error"] or {}
            raise UpstreamError(str(error.get("message") or error))
        header = header or chunk
        # Usage (and llama.cpp's timings, on the finish chunk) may come in different
        # chunks: the latest of each is kept for the reader.
        usage = {**usage, **{k: chunk[k] for k in ("usage", "timings") if chunk.get(k)}}
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            state = states.setdefault(index, _ChoiceState())
            delta = choice.get("delta") or {}
            reasoning = _reasoning(delta)
            if reasoning:
                state.reasoning.append(reasoning)
                yield TextDelta(choice_index=index, text="", reasoning=reasoning)
            if delta.get("content"):
                state.text.append(delta["content"])
                yield TextDelta(choice_index=index, text=delta["content"])
            for call in delta.get("tool_calls") or []:
                slot = state.calls.setdefault(
                    int(call.get("index", 0)), {"id": "", "function": {"name": "", "arguments": ""}}
                )
                slot["id"] = call.get("id") or slot["id"]
                function = call.get("function") or {}
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            state.finish = choice.get("finish_reason") or state.finish
    # A stream cut short must never look complete (it would be cached as a result).
    if not done and not (states and all(s.finish for s in states.values())):
        raise UpstreamError("The upstream stream ended before the response was complete.")
    yield Result(
        id=str(header.get("id") or ""),
        model=str(header.get("model") or ""),
        created=int(header.get("created") or time.time()),
        choices=tuple(
            Choice(
                index=index,
                text="".join(state.text),
                tool_calls=_tool_calls([state.calls[k] for k in sorted(state.calls)]),
                finish_reason=_FINISH.get(state.finish or "stop", "stop"),
                reasoning="".join(state.reasoning),
            )
            for index, state in sorted(states.items())
        )
        or (Choice(),),
        usage=read_usage(usage),
    )


def _wire_response_format(response_format: Any) -> Any:
    """OpenAI requires a json_schema name; one from an Anthropic client has none."""
    spec = response_format.get("json_schema") if response_format else None
    if isinstance(spec, dict) and "name" not in spec:
        return {**response_format, "json_schema": {"name": "output", **spec}}
    return response_format
