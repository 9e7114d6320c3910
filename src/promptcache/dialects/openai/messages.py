"""OpenAI ``messages`` and their content parts -> canonical system blocks and messages.

System and developer messages are hoisted, in order, into the system blocks;
assistant ``tool_calls`` become ``ToolUseBlock``s; consecutive ``role: "tool"``
messages become one user message of ``ToolResultBlock``s. ``cache_control``
is accepted on content parts and, as an extension, on a whole message
(marking its last block).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from promptcache.dialects._common import image_source_from_url
from promptcache.dialects._fields import (
    Fields,
    check_json,
    check_text,
    loads_json_object,
    parse_cache_control,
    shown,
)
from promptcache.dialects.openai.style import STYLE
from promptcache.request import (
    CacheControl,
    ContentBlock,
    ImageBlock,
    Message,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)

_ROLES = ("system", "assistant", "user", "function", "tool", "developer")


def parse_messages(raw_messages: list[Any]) -> tuple[list[TextBlock], list[Message]]:
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


_REASONING = {"reasoning_content", "reasoning"}
"""Reasoning of an earlier answer (as GLM, DeepSeek, vLLM and OpenRouter return it, and
promptcache renders it): clients that append the whole message send it back. Earlier
turns' reasoning is not part of the prompt (DeepSeek refuses it; Anthropic drops
earlier thinking blocks), so it is dropped."""


_OUTPUT_ONLY = {"annotations", "function_call", "audio"}
"""Members of the SDK's response message (``messages.append(completion.choices[0].message)``
sends them back, usually null / ``[]``): see :func:`_check_output_members`."""


def _assistant_blocks(entry: Fields) -> tuple[ContentBlock, ...]:
    entry.reject_unknown(
        {"role", "content", "name", "tool_calls", "refusal", "cache_control"}
        | _REASONING
        | _OUTPUT_ONLY
    )
    for name in _REASONING:  # an upstream's reasoning, echoed back: checked, then dropped
        entry.string(name)
    _check_output_members(entry)
    refusal = entry.string("refusal")
    calls = entry.array("tool_calls") or []
    blocks: list[ContentBlock] = []
    if entry.data.get("content") is not None or not (calls or refusal):
        texts = _text_parts(entry, allow_refusal=True)
        # content "" next to tool_calls is how many clients say "no text": drop it.
        blocks.extend(b for b in texts if not (calls and isinstance(b, TextBlock) and not b.text))
    if refusal:  # what the assistant said when it refused: part of the turn, as a refusal part
        blocks.append(TextBlock(text=refusal))
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


def _check_output_members(entry: Fields) -> None:
    """``annotations`` (url citations of a search model's answer) are output metadata
    about the text, not prompt: checked, then dropped, as the text they annotate stays.
    ``function_call`` and ``audio`` echoed as null are accepted; set, they would carry a
    legacy call or an audio answer this server has no place for, so they are a 400."""
    for k, raw in enumerate(entry.array("annotations") or []):
        Fields(STYLE, raw, (*entry.at("annotations"), k)).required_string("type")
    if entry.obj("function_call") is not None:
        raise STYLE.invalid(
            entry.at("function_call"),
            "The deprecated 'function_call' cannot be sent back here: send the call in "
            "'tool_calls' (with its id) and the result as a 'tool' message.",
        )
    if entry.obj("audio") is not None:
        raise STYLE.invalid(
            entry.at("audio"),
            "An assistant 'audio' reference cannot apply here: this server keeps no audio "
            "answers. Send the transcript as 'content' instead.",
        )


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
