"""Converse and ConverseStream answers: a result as the Converse body, a stream as
ConverseStream's event-stream frames, and Bedrock's ``TokenUsage``.

The request side is ``converse_parse.py``. ``stopReason`` is Bedrock's
(``end_turn``, ``max_tokens``, ``stop_sequence``, ``tool_use``,
``content_filtered``); ``metrics.latencyMs`` counts from when the request started.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from promptcache.dialects.bedrock import eventstream
from promptcache.dialects.bedrock.errors import stream_member
from promptcache.errors import PromptCacheError, UpstreamError
from promptcache.result import Choice, PromptUsage, Result, StreamEvent, TextDelta, Usage

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "content_filtered",
}


def stop_reason(choice: Choice) -> str:
    if choice.finish_reason == "stop" and choice.stop_sequence is not None:
        return "stop_sequence"
    return _STOP_REASONS[choice.finish_reason]


def render_usage(usage: Usage) -> dict[str, Any]:
    """Bedrock's ``TokenUsage``: ``inputTokens`` excludes the cache reads and writes."""
    rendered: dict[str, Any] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
        "cacheReadInputTokens": usage.cache_read_input_tokens,
        "cacheWriteInputTokens": usage.cache_creation_input_tokens,
    }
    details = [
        {"ttl": ttl, "inputTokens": tokens}
        for ttl, tokens in (
            ("5m", usage.cache_creation_5m_input_tokens),
            ("1h", usage.cache_creation_1h_input_tokens),
        )
        if tokens
    ]
    if details:
        rendered["cacheDetails"] = details
    return rendered


def _first_choice(result: Result) -> Choice:
    return next((c for c in result.choices if c.index == 0), Choice())


def _content(choice: Choice) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    signed = [b for b in choice.reasoning_blocks if b.redacted_data is None]
    for block in signed:  # Claude's, with the signature it verifies when sent back
        text = {"text": block.thinking, "signature": block.signature}
        content.append({"reasoningContent": {"reasoningText": text}})
    if choice.reasoning and not signed:  # another upstream's (no signature to verify)
        content.append({"reasoningContent": {"reasoningText": {"text": choice.reasoning}}})
    if choice.text or not choice.tool_calls:
        content.append({"text": choice.text})
    content += [
        {"toolUse": {"toolUseId": c.id, "name": c.name, "input": dict(c.input)}}
        for c in choice.tool_calls
    ]
    return content


def latency_ms(started: float) -> int:
    return max(0, round((time.perf_counter() - started) * 1000))


def render_converse(result: Result, *, started: float) -> dict[str, Any]:
    choice = _first_choice(result)
    return {
        "output": {"message": {"role": "assistant", "content": _content(choice)}},
        "stopReason": stop_reason(choice),
        "usage": render_usage(result.usage),
        "metrics": {"latencyMs": latency_ms(started)},
    }


def error_frame(error: PromptCacheError) -> bytes:
    return eventstream.exception(stream_member(error), error.message)


async def render_converse_stream(
    events: AsyncIterator[StreamEvent], *, started: float
) -> AsyncIterator[bytes]:
    """ConverseStream's event-stream frames; an error before the first frame propagates."""
    emitted = False
    try:
        first = await anext(events, None)
        if first is None:
            raise UpstreamError("The model stream ended without a final result.")
        emitted = True
        yield eventstream.event("messageStart", {"role": "assistant"})
        index = 0
        text_open = reasoning_open = False
        event: StreamEvent | None = first
        while event is not None:
            if isinstance(event, TextDelta):
                if event.choice_index == 0 and event.reasoning and not text_open:
                    reasoning_open = True
                    yield eventstream.event(
                        "contentBlockDelta",
                        {
                            "delta": {"reasoningContent": {"text": event.reasoning}},
                            "contentBlockIndex": index,
                        },
                    )
                if event.choice_index == 0 and event.signature and reasoning_open:
                    # Claude's signature ends its reasoning block (as Bedrock streams it).
                    reasoning_open = False
                    signed = {"reasoningContent": {"signature": event.signature}}
                    yield eventstream.event(
                        "contentBlockDelta", {"delta": signed, "contentBlockIndex": index}
                    )
                    yield eventstream.event("contentBlockStop", {"contentBlockIndex": index})
                    index += 1
                if event.choice_index == 0 and event.text:
                    if reasoning_open:  # the reasoning block ends where the text begins
                        reasoning_open = False
                        yield eventstream.event("contentBlockStop", {"contentBlockIndex": index})
                        index += 1
                    text_open = True
                    yield eventstream.event(
                        "contentBlockDelta",
                        {"delta": {"text": event.text}, "contentBlockIndex": index},
                    )
            elif isinstance(event, Result):
                choice = _first_choice(event)
                if reasoning_open:
                    yield eventstream.event("contentBlockStop", {"contentBlockIndex": index})
                    index += 1
                if text_open or not choice.tool_calls:
                    if not text_open:
                        yield eventstream.event(
                            "contentBlockDelta",
                            {"delta": {"text": ""}, "contentBlockIndex": index},
                        )
                    yield eventstream.event("contentBlockStop", {"contentBlockIndex": index})
                    index += 1
                for call in choice.tool_calls:
                    yield eventstream.event(
                        "contentBlockStart",
                        {
                            "start": {"toolUse": {"toolUseId": call.id, "name": call.name}},
                            "contentBlockIndex": index,
                        },
                    )
                    yield eventstream.event(
                        "contentBlockDelta",
                        {
                            "delta": {"toolUse": {"input": json.dumps(dict(call.input))}},
                            "contentBlockIndex": index,
                        },
                    )
                    yield eventstream.event("contentBlockStop", {"contentBlockIndex": index})
                    index += 1
                yield eventstream.event("messageStop", {"stopReason": stop_reason(choice)})
                yield eventstream.event(
                    "metadata",
                    {
                        "usage": render_usage(event.usage),
                        "metrics": {"latencyMs": latency_ms(started)},
                    },
                )
                return
            elif isinstance(event, PromptUsage):
                pass
            event = await anext(events, None)
        raise UpstreamError("The model stream ended without a final result.")
    except PromptCacheError as error:
        if not emitted:
            raise
        yield error_frame(error)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
