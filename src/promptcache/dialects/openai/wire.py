"""The OpenAI dialect in reverse, for the upstream engine: canonical request -> wire body,
wire response or SSE -> canonical events.

Provider cache fields are normalised here: OpenAI's and GLM's
``prompt_tokens_details.cached_tokens`` and DeepSeek's
``prompt_cache_hit_tokens`` all become ``Usage.cache_read_input_tokens``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptcache.dialects._common import dumps, image_source_to_url
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
from promptcache.result import Choice, FinishReason, Result, StreamEvent, TextDelta, Usage

_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def to_wire_request(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The Chat Completions body for ``request`` (``cache_control`` dropped: OpenAI-style
    providers cache implicitly and some reject unknown fields)."""
    messages: list[dict[str, Any]] = []
    if request.system:
        texts = [b.text for b in request.system]
        content: Any = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
        messages.append({"role": "system", "content": content})
    for message in request.messages:
        messages += _wire_messages(message)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
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
        "prompt_cache_key": request.transport.prompt_cache_key,
        "prompt_cache_retention": request.transport.prompt_cache_retention,
    }
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


def _wire_part(block: ContentBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ImageBlock):
        image: dict[str, Any] = {"url": image_source_to_url(block.source)}
        if "detail" in block.source:
            image["detail"] = block.source["detail"]
        return {"type": "image_url", "image_url": image}
    raise RequestError(f"A {block.type} block cannot be sent as an OpenAI content part.")


def _wire_messages(message: Message) -> list[dict[str, Any]]:
    if message.role == "assistant":
        calls = [b for b in message.content if isinstance(b, ToolUseBlock)]
        wire: dict[str, Any] = {"role": "assistant", "content": message.text() or None}
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
            out.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": _tool_text(block)}
            )
        else:
            parts.append(_wire_part(block))
    if parts:
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if only_text else parts})
    return out


def _tool_text(block: ToolResultBlock) -> str:
    if any(isinstance(b, ImageBlock) for b in block.content):
        raise RequestError(
            "Images inside tool results cannot be sent to an OpenAI-compatible upstream.",
            param="messages",
        )
    return "".join(b.text for b in block.content if isinstance(b, TextBlock))


def usage_from_wire(usage: Mapping[str, Any] | None) -> Usage:
    """Normalise an OpenAI-compatible usage object (OpenAI, GLM, DeepSeek cache fields)."""
    if not usage:
        return Usage()
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0)
    cached = min(cached, prompt)
    return Usage(
        input_tokens=prompt - cached,
        cache_read_input_tokens=cached,
        output_tokens=int(usage.get("completion_tokens") or 0),
    )


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


def result_from_wire(body: Any) -> Result:
    """A ``chat.completion`` body from upstream as a canonical :class:`Result`."""
    try:
        choices = tuple(
            Choice(
                index=int(c.get("index", i)),
                text=(c.get("message") or {}).get("content") or "",
                tool_calls=_tool_calls((c.get("message") or {}).get("tool_calls")),
                finish_reason=_FINISH.get(c.get("finish_reason") or "stop", "stop"),
            )
            for i, c in enumerate(body["choices"])
        )
        return Result(
            id=str(body.get("id") or ""),
            model=str(body.get("model") or ""),
            created=int(body.get("created") or time.time()),
            choices=choices,
            usage=usage_from_wire(body.get("usage")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise UpstreamError(f"The upstream returned an unexpected body: {error!r}") from error


@dataclass
class _ChoiceState:
    text: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish: str | None = None


async def events_from_sse(pairs: AsyncIterator[tuple[str, str]]) -> AsyncIterator[StreamEvent]:
    """Decode an upstream ``chat.completion.chunk`` stream into deltas and one Result."""
    header: dict[str, Any] = {}
    states: dict[int, _ChoiceState] = {}
    usage: Mapping[str, Any] | None = None
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
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            state = states.setdefault(index, _ChoiceState())
            delta = choice.get("delta") or {}
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
            )
            for index, state in sorted(states.items())
        )
        or (Choice(),),
        usage=usage_from_wire(usage),
    )


def _wire_response_format(response_format: Any) -> Any:
    """OpenAI requires a json_schema name; one from an Anthropic client has none."""
    spec = response_format.get("json_schema") if response_format else None
    if isinstance(spec, dict) and "name" not in spec:
        return {**response_format, "json_schema": {"name": "output", **spec}}
    return response_format
