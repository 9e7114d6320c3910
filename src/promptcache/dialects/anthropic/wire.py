"""The Anthropic dialect in reverse, for the upstream engine: canonical request -> wire body,
wire response or SSE -> canonical events.

Anthropic's cache fields map one to one onto :class:`Usage` and thinking blocks
onto :attr:`Choice.reasoning`; when an older
API version sends ``cache_creation_input_tokens`` without the per-TTL
``cache_creation`` split, the writes are counted at the 5-minute rate (the
default TTL).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from promptcache.dialects._common import render_cache_control
from promptcache.errors import OverloadedError, RequestError, UpstreamError
from promptcache.request import (
    ChatRequest,
    ContentBlock,
    ImageBlock,
    ReasoningBlock,
    TextBlock,
    Thinking,
    ToolUseBlock,
)
from promptcache.result import (
    Choice,
    FinishReason,
    PromptUsage,
    Result,
    StreamEvent,
    TextDelta,
    Usage,
)

DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` is required by the Messages API; used when the client gave none."""

_FINISH: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _with_marker(block: dict[str, Any], source: ContentBlock | Any) -> dict[str, Any]:
    marker = render_cache_control(getattr(source, "cache_control", None))
    if marker is not None:
        block["cache_control"] = marker
    return block


def _wire_block(block: ContentBlock) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return _with_marker({"type": "text", "text": block.text}, block)
    if isinstance(block, ImageBlock):
        source = {k: v for k, v in block.source.items() if k != "detail"}
        return _with_marker({"type": "image", "source": source}, block)
    if isinstance(block, ToolUseBlock):
        call = {"type": "tool_use", "id": block.id, "name": block.name, "input": dict(block.input)}
        return _with_marker(call, block)
    wire: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": block.tool_use_id,
        "content": [_wire_block(b) for b in block.content],
    }
    if block.is_error:
        wire["is_error"] = True
    return _with_marker(wire, block)


def reasoning_block_json(block: ReasoningBlock) -> dict[str, Any]:
    if block.redacted_data is not None:
        return {"type": "redacted_thinking", "data": block.redacted_data}
    return {"type": "thinking", "thinking": block.thinking, "signature": block.signature}


def _reasoning_blocks(content: list[Any]) -> tuple[ReasoningBlock, ...]:
    """The thinking and redacted_thinking blocks of a response, whole (in order)."""
    blocks: list[ReasoningBlock] = []
    for b in content:
        if b.get("type") == "thinking":
            blocks.append(
                ReasoningBlock(
                    thinking=str(b.get("thinking") or ""), signature=str(b.get("signature") or "")
                )
            )
        elif b.get("type") == "redacted_thinking":
            blocks.append(ReasoningBlock(redacted_data=str(b.get("data") or "")))
    return tuple(blocks)


def to_wire_request(
    request: ChatRequest, *, stream: bool, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages body for ``request``, ``cache_control`` markers included."""
    if request.sampling.n != 1:
        raise RequestError("An Anthropic upstream cannot return n > 1 choices.", param="n")
    _refuse_what_messages_lacks(request)
    output_format = _wire_output_format(request.response_format)
    sampling = request.sampling
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": sampling.max_tokens or default_max_tokens,
        "messages": [
            {
                "role": m.role,
                # Signed thinking first, as Anthropic returned it (it verifies them).
                "content": [*map(reasoning_block_json, m.reasoning), *map(_wire_block, m.content)],
            }
            for m in request.messages
        ],
    }
    if request.system:
        body["system"] = [_wire_block(b) for b in request.system]
    if request.tools:
        body["tools"] = [
            _with_marker(
                {
                    "name": t.name,
                    "description": t.description,
                    "input_schema": dict(t.input_schema),
                },
                t,
            )
            for t in request.tools
        ]
        if request.tool_choice:
            body["tool_choice"] = dict(request.tool_choice)
    if output_format is not None:
        body["output_config"] = {"format": output_format}
    optional = {
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "stop_sequences": list(sampling.stop) or None,
        "metadata": {"user_id": request.transport.user} if request.transport.user else None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if sampling.thinking is not None:
        body["thinking"] = wire_thinking(sampling.thinking)
    automatic = render_cache_control(request.cache_control)
    if automatic is not None:
        body["cache_control"] = automatic  # automatic caching, forwarded as sent
    if stream:
        body["stream"] = True
    return body


def wire_thinking(thinking: Thinking) -> dict[str, Any]:
    """The Messages API's ``thinking`` object (as the client sent it: the budget's bounds
    are Anthropic's to check, and its 400 comes back)."""
    wire: dict[str, Any] = {"type": thinking.mode}
    if thinking.budget_tokens is not None:
        wire["budget_tokens"] = thinking.budget_tokens
    if thinking.display is not None:
        wire["display"] = thinking.display
    return wire


def _refuse_what_messages_lacks(request: ChatRequest) -> None:
    """A 400 naming each set parameter the Messages API has no counterpart for (dropping
    it would change the answer, or break a promise, without saying so)."""
    sampling, transport = request.sampling, request.transport
    lacking = {
        "seed": sampling.seed is not None,
        "frequency_penalty": sampling.frequency_penalty is not None,
        "presence_penalty": sampling.presence_penalty is not None,
        "logit_bias": bool(sampling.logit_bias),
        "min_p": sampling.min_p is not None,
        "repetition_penalty": sampling.repetition_penalty is not None,
        "reasoning_effort": sampling.reasoning_effort is not None,
        "verbosity": sampling.verbosity is not None,
        "prompt_cache_key": transport.prompt_cache_key is not None,
        "prompt_cache_retention": transport.prompt_cache_retention == "24h",
    }
    for name, is_set in lacking.items():
        if is_set:
            raise RequestError(
                f"'{name}' cannot be sent to an Anthropic upstream: the Messages API has "
                "no such parameter. Leave it out, or use an OpenAI-compatible upstream.",
                param=name,
            )


def usage_from_wire(usage: Mapping[str, Any] | None, base: Usage | None = None) -> Usage:
    """An Anthropic usage object (or a ``message_delta``'s cumulative counts over ``base``)."""
    base = base or Usage()
    if not usage:
        return base

    def count(key: str, default: int) -> int:
        value = usage.get(key)
        return default if value is None else int(value)

    split = usage.get("cache_creation")
    if isinstance(split, Mapping):
        write_5m = int(split.get("ephemeral_5m_input_tokens") or 0)
        write_1h = int(split.get("ephemeral_1h_input_tokens") or 0)
    elif usage.get("cache_creation_input_tokens") is not None:
        total = int(usage["cache_creation_input_tokens"])
        if total == base.cache_creation_input_tokens:
            # A message_delta repeats the total without the split: keep message_start's split.
            write_5m = base.cache_creation_5m_input_tokens
            write_1h = base.cache_creation_1h_input_tokens
        else:
            write_5m, write_1h = total, 0
    else:
        write_5m, write_1h = (
            base.cache_creation_5m_input_tokens,
            base.cache_creation_1h_input_tokens,
        )
    return Usage(
        input_tokens=count("input_tokens", base.input_tokens),
        cache_read_input_tokens=count("cache_read_input_tokens", base.cache_read_input_tokens),
        cache_creation_5m_input_tokens=write_5m,
        cache_creation_1h_input_tokens=write_1h,
        output_tokens=count("output_tokens", base.output_tokens),
    )


def _choice(content: list[Any], stop_reason: str | None, stop_sequence: str | None) -> Choice:
    text = "".join(b.get("text") or "" for b in content if b.get("type") == "text")
    # Thinking blocks become the canonical reasoning (readable text for every dialect)
    # and are kept whole -- signatures, redacted_thinking's encrypted data -- for
    # Anthropic clients, which must send them back with tool use.
    reasoning = "".join(b.get("thinking") or "" for b in content if b.get("type") == "thinking")
    calls = tuple(
        ToolUseBlock(id=str(b["id"]), name=str(b["name"]), input=dict(b.get("input") or {}))
        for b in content
        if b.get("type") == "tool_use"
    )
    return Choice(
        text=text,
        tool_calls=calls,
        finish_reason=_FINISH.get(stop_reason or "end_turn", "stop"),
        stop_sequence=stop_sequence if stop_reason == "stop_sequence" else None,
        reasoning=reasoning,
        reasoning_blocks=_reasoning_blocks(content),
    )


def result_from_wire(body: Any) -> Result:
    """A ``message`` body from upstream as a canonical :class:`Result`."""
    try:
        return Result(
            id=str(body.get("id") or ""),
            model=str(body.get("model") or ""),
            created=int(time.time()),
            choices=(_choice(body["content"], body.get("stop_reason"), body.get("stop_sequence")),),
            usage=usage_from_wire(body.get("usage")),
        )
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise UpstreamError(f"The upstream returned an unexpected body: {error!r}") from error


def stream_error(payload: Mapping[str, Any]) -> UpstreamError | OverloadedError:
    error = payload.get("error") or {}
    message = str(error.get("message") or error)
    if error.get("type") in ("overloaded_error", "rate_limit_error"):
        return OverloadedError(message)
    return UpstreamError(message)


async def events_from_sse(pairs: AsyncIterator[tuple[str, str]]) -> AsyncIterator[StreamEvent]:
    """Decode an upstream Messages event stream into PromptUsage, deltas and one Result."""
    message: dict[str, Any] = {}
    usage = Usage()
    blocks: dict[int, dict[str, Any]] = {}
    partial_json: dict[int, list[str]] = {}
    stop_reason: str | None = None
    stop_sequence: str | None = None
    async for _, data in pairs:
        event = json.loads(data)
        kind = event.get("type")
        if kind == "error":
            raise stream_error(event)
        if kind == "message_start":
            message = event.get("message") or {}
            usage = usage_from_wire(message.get("usage"))
            yield PromptUsage(usage=usage)
        elif kind == "content_block_start":
            index = int(event["index"])
            blocks[index] = dict(event.get("content_block") or {})
            if blocks[index].get("text"):
                yield TextDelta(choice_index=0, text=blocks[index]["text"])
            if blocks[index].get("type") == "thinking" and blocks[index].get("thinking"):
                yield TextDelta(choice_index=0, text="", reasoning=blocks[index]["thinking"])
            if blocks[index].get("type") == "redacted_thinking":
                data = str(blocks[index].get("data") or "")
                yield TextDelta(choice_index=0, text="", redacted_data=data)
        elif kind == "content_block_delta":
            index = int(event["index"])
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                block = blocks.setdefault(index, {"type": "text", "text": ""})
                block["text"] = (block.get("text") or "") + delta["text"]
                yield TextDelta(choice_index=0, text=delta["text"])
            elif delta.get("type") == "thinking_delta" and delta.get("thinking"):
                block = blocks.setdefault(index, {"type": "thinking", "thinking": ""})
                block["thinking"] = (block.get("thinking") or "") + delta["thinking"]
                yield TextDelta(choice_index=0, text="", reasoning=delta["thinking"])
            elif delta.get("type") == "signature_delta" and delta.get("signature"):
                block = blocks.setdefault(index, {"type": "thinking", "thinking": ""})
                block["signature"] = (block.get("signature") or "") + delta["signature"]
                yield TextDelta(choice_index=0, text="", signature=delta["signature"])
            elif delta.get("type") == "input_json_delta":
                partial_json.setdefault(index, []).append(delta.get("partial_json") or "")
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            stop_reason = delta.get("stop_reason") or stop_reason
            stop_sequence = delta.get("stop_sequence") or stop_sequence
            usage = usage_from_wire(event.get("usage"), base=usage)
        elif kind == "message_stop":
            for index, pieces in partial_json.items():
                raw = "".join(pieces)
                blocks[index]["input"] = json.loads(raw) if raw.strip() else {}
            content = [blocks[i] for i in sorted(blocks)]
            yield Result(
                id=str(message.get("id") or ""),
                model=str(message.get("model") or ""),
                created=int(time.time()),
                choices=(_choice(content, stop_reason, stop_sequence),),
                usage=usage,
            )
            return
    # A stream cut short must never look complete (it would be cached as a result).
    raise UpstreamError("The upstream stream ended before message_stop.")


def _wire_output_format(response_format: Any) -> dict[str, Any] | None:
    """Anthropic's ``output_config.format`` for a canonical response_format."""
    if response_format is None:
        return None
    spec = response_format.get("json_schema")
    if response_format.get("type") != "json_schema" or not isinstance(spec, dict):
        raise RequestError(
            "An Anthropic upstream takes only a json_schema response_format "
            "(structured outputs), not a bare json_object.",
            param="response_format",
        )
    return {"type": "json_schema", "schema": dict(spec.get("schema") or {})}
