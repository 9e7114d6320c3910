"""Anthropic ``system`` and ``messages`` and their content blocks -> canonical blocks.

Owns every content-block type of the Messages API: ``text``, ``image``,
``tool_use`` (assistant turns only) and ``tool_result`` (user turns only, each
answering an earlier ``tool_use``) map onto their canonical blocks;
``document`` blocks with ``text``/``content`` sources and ``search_result``
blocks are rendered as text; signed ``thinking`` / ``redacted_thinking`` blocks of
earlier assistant turns go to :attr:`Message.reasoning` (sent on to an Anthropic
upstream only: every other engine drops them, as Anthropic does); server-tool
blocks are a 400. ``cache_control`` is accepted on every block.
"""

from __future__ import annotations

from typing import Any

from promptcache.dialects._common import IMAGE_MEDIA_TYPES
from promptcache.dialects._fields import (
    Fields,
    check_text,
    parse_cache_control,
    shown,
)
from promptcache.dialects.anthropic.style import STYLE
from promptcache.request import (
    ContentBlock,
    ImageBlock,
    Message,
    ReasoningBlock,
    TextBlock,
    ToolResultBlock,
    ToolUseBlock,
)

_SERVER_BLOCKS = (
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
)
_THINKING_BLOCKS = ("thinking", "redacted_thinking")
_BLOCK_TYPES = (
    "text",
    "image",
    "tool_use",
    "tool_result",
    "document",
    "search_result",
    *_THINKING_BLOCKS,
    *_SERVER_BLOCKS,
)


def parse_system(top: Fields) -> tuple[TextBlock, ...]:
    system = top.data.get("system")
    if system is None:
        return ()
    if isinstance(system, str):
        return (TextBlock(text=check_text(STYLE, ("system",), system)),) if system else ()
    if not isinstance(system, list):
        raise STYLE.wrong_type(("system",), "array", system)
    blocks = []
    for i, raw in enumerate(system):
        block = Fields(STYLE, raw, ("system", i))
        block.choice("type", ("text",), required=True)
        blocks.append(_text_block(block))
    return tuple(blocks)


def parse_messages(raw_messages: list[Any]) -> tuple[Message, ...]:
    messages: list[Message] = []
    tool_use_ids: set[str] = set()
    for i, raw in enumerate(raw_messages):
        entry = Fields(STYLE, raw, ("messages", i))
        entry.reject_unknown({"role", "content"})
        role = entry.data.get("role")
        if role == "system":
            raise STYLE.invalid(
                entry.at("role"),
                'Unexpected role "system". The Messages API accepts a top-level `system` '
                'parameter, not "system" as an input message role.',
            )
        if entry.choice("role", ("user", "assistant"), required=True) == "user":
            content = _content(entry, "user", tool_use_ids)
            messages.append(Message(role="user", content=content))
        else:
            reasoning: list[ReasoningBlock] = []
            content = _content(entry, "assistant", tool_use_ids, reasoning)
            tool_use_ids.update(b.id for b in content if isinstance(b, ToolUseBlock))
            messages.append(Message(role="assistant", content=content, reasoning=tuple(reasoning)))
    return tuple(messages)


def _content(
    entry: Fields,
    role: str,
    tool_use_ids: set[str],
    reasoning: list[ReasoningBlock] | None = None,
) -> tuple[ContentBlock, ...]:
    content = entry.data.get("content")
    if content is None:
        raise STYLE.missing(entry.at("content"))
    if isinstance(content, str):
        return (TextBlock(text=check_text(STYLE, entry.at("content"), content)),)
    if not isinstance(content, list):
        raise STYLE.wrong_type(entry.at("content"), "array", content)
    blocks: list[ContentBlock] = []
    for j, raw in enumerate(content):
        block = Fields(STYLE, raw, (*entry.at("content"), j))
        kind = block.choice("type", _BLOCK_TYPES, required=True)
        if kind in _SERVER_BLOCKS:
            raise STYLE.invalid(
                block.at("type"),
                f"'{kind}' blocks cannot apply here: this server runs no server tools",
            )
        if kind in _THINKING_BLOCKS:
            if role != "assistant":
                raise STYLE.invalid(block.path, f"{kind} blocks may only appear in assistant turns")
            kept = _reasoning_block(block, kind)
            if kept is not None and reasoning is not None:
                reasoning.append(kept)
            continue
        if kind == "text":
            blocks.append(_text_block(block))
        elif kind == "document":
            blocks.append(_document_block(block))
        elif kind == "search_result":
            blocks.append(_search_result_block(block))
        elif kind == "image":
            blocks.append(_image_block(block))
        elif kind == "tool_use":
            if role != "assistant":
                raise STYLE.invalid(
                    block.path, "tool_use blocks may only appear in assistant turns"
                )
            blocks.append(_tool_use_block(block))
        else:
            if role != "user":
                raise STYLE.invalid(block.path, "tool_result blocks may only appear in user turns")
            blocks.append(_tool_result_block(block, tool_use_ids))
    return tuple(blocks)


def _reasoning_block(block: Fields, kind: str) -> ReasoningBlock | None:
    """A thinking block sent back in an assistant turn: kept, signed, for an Anthropic
    upstream (which verifies it and requires it with tool use in extended thinking);
    every other engine leaves it out, as Anthropic drops earlier turns' thinking. An
    unsigned one (reasoning promptcache relayed from another provider) can be verified
    by no one, so it is dropped here."""
    if kind == "redacted_thinking":
        block.reject_unknown({"type", "data"})
        return ReasoningBlock(redacted_data=block.required_string("data"))
    block.reject_unknown({"type", "thinking", "signature"})
    thinking = block.required_string("thinking")
    signature = block.required_string("signature")
    return ReasoningBlock(thinking=thinking, signature=signature) if signature else None


def _text_block(block: Fields) -> TextBlock:
    block.reject_unknown({"type", "text", "cache_control", "citations"})
    text = block.required_string("text")
    if not text:
        raise STYLE.invalid(block.path, "text content blocks must be non-empty")
    return TextBlock(text=text, cache_control=parse_cache_control(block))


def _no_citations(block: Fields) -> None:
    citations = block.obj("citations")
    if citations is not None and citations.boolean("enabled"):
        raise STYLE.invalid(
            citations.at("enabled"), "citations cannot apply: this server does not cite sources"
        )


def _document_block(block: Fields) -> TextBlock:
    """A ``document`` with a plain-text or content source, rendered as one text block
    (title, context, then the document's text, separated by blank lines)."""
    block.reject_unknown({"type", "source", "title", "context", "citations", "cache_control"})
    _no_citations(block)
    source = block.required_obj("source")
    kind = source.choice("type", ("text", "content", "base64", "url", "file"), required=True)
    if kind == "text":
        source.reject_unknown({"type", "media_type", "data"})
        source.choice("media_type", ("text/plain",), required=True)
        body = source.required_string("data")
    elif kind == "content":
        source.reject_unknown({"type", "content"})
        body = _inner_text(source)
    else:
        raise STYLE.invalid(
            source.at("type"),
            f"'{kind}' document sources (PDF or files) cannot apply here: the local models "
            "read text only; send a 'text' or 'content' source",
        )
    parts = [block.string("title") or "", block.string("context") or "", body]
    text = "\n\n".join(p for p in parts if p)
    if not text:
        raise STYLE.invalid(block.path, "document blocks must be non-empty")
    return TextBlock(text=text, cache_control=parse_cache_control(block))


def _search_result_block(block: Fields) -> TextBlock:
    """A ``search_result`` rendered as text: its title, source, then its text blocks."""
    block.reject_unknown({"type", "source", "title", "content", "citations", "cache_control"})
    _no_citations(block)
    parts = [block.required_string("title"), block.required_string("source"), _inner_text(block)]
    text = "\n\n".join(p for p in parts if p)
    return TextBlock(text=text, cache_control=parse_cache_control(block))


def _inner_text(fields: Fields) -> str:
    """The ``content`` of a document source or search result: a string or text blocks."""
    content = fields.data.get("content")
    if isinstance(content, str):
        return check_text(STYLE, fields.at("content"), content)
    texts = []
    for k, raw in enumerate(fields.array("content", required=True) or []):
        part = Fields(STYLE, raw, (*fields.at("content"), k))
        part.choice("type", ("text",), required=True)
        part.reject_unknown({"type", "text", "citations", "cache_control"})
        if part.has("cache_control"):
            raise STYLE.invalid(
                part.at("cache_control"), "put cache_control on the enclosing block"
            )
        texts.append(part.required_string("text"))
    return "\n".join(texts)


def _image_block(block: Fields) -> ImageBlock:
    block.reject_unknown({"type", "source", "cache_control"})
    source = block.required_obj("source")
    kind = source.choice("type", ("base64", "url"), required=True)
    if kind == "base64":
        source.reject_unknown({"type", "media_type", "data"})
        media_type = source.choice("media_type", IMAGE_MEDIA_TYPES, required=True)
        canonical = {
            "type": "base64",
            "media_type": media_type,
            "data": source.required_string("data"),
        }
    else:
        source.reject_unknown({"type", "url"})
        canonical = {"type": "url", "url": source.required_string("url")}
    return ImageBlock(source=canonical, cache_control=parse_cache_control(block))


def _tool_use_block(block: Fields) -> ToolUseBlock:
    block.reject_unknown({"type", "id", "name", "input", "cache_control"})
    block.json_value("input")
    return ToolUseBlock(
        id=block.required_string("id"),
        name=block.required_string("name"),
        input=dict(block.required_obj("input").data),
        cache_control=parse_cache_control(block),
    )


def _tool_result_block(block: Fields, tool_use_ids: set[str]) -> ToolResultBlock:
    block.reject_unknown({"type", "tool_use_id", "content", "is_error", "cache_control"})
    tool_use_id = block.required_string("tool_use_id")
    if tool_use_id not in tool_use_ids:
        raise STYLE.invalid(
            block.path,
            f"unexpected `tool_use_id` found in `tool_result` blocks: {shown(tool_use_id)}. Each "
            "`tool_result` block must have a corresponding `tool_use` block in a previous message.",
        )
    content = block.data.get("content")
    parts: list[TextBlock | ImageBlock] = []
    if isinstance(content, str):
        parts.append(TextBlock(text=check_text(STYLE, block.at("content"), content)))
    elif isinstance(content, list):
        for k, raw in enumerate(content):
            part = Fields(STYLE, raw, (*block.at("content"), k))
            kind = part.choice("type", ("text", "image"), required=True)
            parts.append(_text_block(part) if kind == "text" else _image_block(part))
    elif content is not None:
        raise STYLE.wrong_type(block.at("content"), "array", content)
    return ToolResultBlock(
        tool_use_id=tool_use_id,
        content=tuple(parts),
        is_error=bool(block.boolean("is_error")),
        cache_control=parse_cache_control(block),
    )
