"""Anthropic Messages request body -> canonical :class:`ChatRequest`.

The canonical request is Anthropic-shaped already, so this is mostly
validation, worded the way the Messages API words it (``max_tokens: Field
required``, ``messages.0.role: Input should be 'user' or 'assistant'``).
``cache_control`` is accepted on tools, system blocks and every message
content block, and at the top level (automatic caching: one breakpoint on the
last cacheable block); the breakpoint rules are checked when the request is built.

Every top-level field and content-block type of the Messages API reference
either has its documented effect here or is a 400 saying why it cannot apply:
``document`` blocks with ``text``/``content`` sources and ``search_result``
blocks are rendered as text; ``thinking`` blocks of earlier assistant turns are
dropped (Anthropic strips them from the context too); ``service_tier`` is
transport; server tools, MCP servers, containers, context management,
compaction, fallbacks and extended thinking are refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from promptcache.dialects._common import IMAGE_MEDIA_TYPES
from promptcache.dialects._fields import (
    TOOL_NAME_PATTERN,
    DialectRequestError,
    ErrorStyle,
    Fields,
    Path,
    check_text,
    parse_cache_control,
    shown,
    shown_bound,
)
from promptcache.errors import RequestError
from promptcache.request import (
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

_KIND_WORDS = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "array": "list",
    "object": "dictionary",
}
_PARAMS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "output_config",
        "output_format",
        "cache_control",
        "diagnostics",
        "inference_geo",
        "speed",
    }
)
# Documented top-level fields that cannot apply to this server, and why (a 400 naming them).
_REFUSED_PARAMS = {
    "container": "code-execution containers are not available on this server",
    "mcp_servers": "this server does not connect to MCP servers (the MCP connector)",
    "context_management": "context editing is not performed by this server; "
    "trim the conversation client-side",
    "compaction": "server-side compaction is not performed by this server",
    "fallbacks": "this server serves one model per name and does not retry on another",
    "fallback_credit_token": "this server has no refusal fallbacks",
    "thread": "this server keeps no server-side message threads",
}
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


class AnthropicErrorStyle(ErrorStyle):
    def path(self, path: Path) -> str:
        return ".".join(str(p) for p in path)

    def _error(self, path: Path, message: str) -> RequestError:
        where = self.path(path)
        return DialectRequestError(f"{where}: {message}" if where else message, param=where or None)

    def missing(self, path: Path) -> RequestError:
        return self._error(path, "Field required")

    def wrong_type(self, path: Path, kind: str, value: Any) -> RequestError:
        return self._error(path, f"Input should be a valid {_KIND_WORDS[kind]}")

    def not_one_of(self, path: Path, value: Any, allowed: Sequence[str]) -> RequestError:
        quoted = [f"'{a}'" for a in allowed]
        options = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        return self._error(path, f"Input should be {options}")

    def out_of_range(
        self, path: Path, value: float, *, minimum: float | None, maximum: float | None
    ) -> RequestError:
        if minimum is not None and value < minimum:
            return self._error(
                path, f"Input should be greater than or equal to {shown_bound(minimum)}"
            )
        bound = shown_bound(math.inf if maximum is None else maximum)
        return self._error(path, f"Input should be less than or equal to {bound}")

    def not_text(self, path: Path, value: str) -> RequestError:
        return self._error(
            path, "Input should be a valid string, unable to parse raw data as a unicode string"
        )

    def not_finite(self, path: Path, value: Any) -> RequestError:
        return self._error(path, "Input should be a finite number")

    def unknown_field(self, path: Path) -> RequestError:
        return self._error(path, "Extra inputs are not permitted")

    def invalid(self, path: Path, message: str) -> RequestError:
        return self._error(path, message)


STYLE = AnthropicErrorStyle()


def parse_request(
    body: Any, *, tenant: str = "", namespace: str = "", request_id: str | None = None
) -> ChatRequest:
    """Validate an Anthropic ``POST /v1/messages`` body and build the canonical request."""
    top = Fields(STYLE, body)
    for name, why in _REFUSED_PARAMS.items():
        if top.data.get(name) is not None:
            raise STYLE.invalid((name,), f"`{name}` cannot apply here: {why}")
    top.reject_unknown(_PARAMS | _REFUSED_PARAMS.keys())
    model = top.required_string("model")
    max_tokens = top.integer("max_tokens", required=True, minimum=1)
    _check_thinking(top, model)
    top.choice("service_tier", ("auto", "standard_only"))  # transport: one tier here
    if top.choice("speed", ("standard", "fast")) == "fast":
        raise STYLE.invalid(("speed",), "fast mode is not available for this server's models")
    geo = top.string("inference_geo")
    if geo not in (None, "global"):
        raise STYLE.invalid(
            ("inference_geo",),
            f"inference runs wherever this server runs; it cannot be pinned to "
            f"'{shown(geo)}' (only 'global' applies)",
        )
    tools = _parse_tools(top)
    # Building the request validates its breakpoints (a 400 on too many or misordered).
    return ChatRequest(
        model=model,
        messages=_parse_messages(top.array("messages", required=True) or []),
        system=_parse_system(top),
        tools=tools,
        sampling=SamplingParams(
            temperature=top.number("temperature", minimum=0, maximum=1),
            top_p=top.number("top_p", minimum=0, maximum=1),
            max_tokens=max_tokens,
            stop=_parse_stop_sequences(top),
            top_k=top.integer("top_k", minimum=0),
        ),
        tool_choice=_parse_tool_choice(top, tools),
        response_format=_parse_output_config(top),
        tenant=tenant,
        namespace=namespace,
        transport=_parse_transport(top, request_id),
        cache_control=parse_cache_control(top),
    )


def _check_thinking(top: Fields, model: str) -> None:
    thinking = top.obj("thinking")
    if thinking is None:
        return
    kind = thinking.choice("type", ("enabled", "disabled", "adaptive"), required=True)
    if kind == "disabled":
        thinking.reject_unknown({"type"})
        return
    raise STYLE.invalid(
        ("thinking",),
        f"model '{shown(model)}' does not support extended thinking "
        f'(thinking.type \'{kind}\'); send {{"type": "disabled"}} or omit it',
    )


def _parse_diagnostics(top: Fields) -> tuple[bool, str | None]:
    """``diagnostics: {"previous_message_id": str | null}`` (cache diagnostics): whether
    it was sent, and the id to compare against (transport: out of every cache key)."""
    diagnostics = top.obj("diagnostics")
    if diagnostics is None:
        return False, None
    diagnostics.reject_unknown({"previous_message_id"})
    return True, diagnostics.string("previous_message_id")


def _parse_stop_sequences(top: Fields) -> tuple[str, ...]:
    stops = top.array("stop_sequences") or []
    for i, stop in enumerate(stops):
        if not isinstance(stop, str):
            raise STYLE.wrong_type(("stop_sequences", i), "string", stop)
        check_text(STYLE, ("stop_sequences", i), stop)
    return tuple(stops)


def _parse_transport(top: Fields, request_id: str | None) -> Transport:
    metadata = top.obj("metadata")
    user = None
    if metadata is not None:
        metadata.reject_unknown({"user_id"})
        user = metadata.string("user_id")
    diagnostics, previous_message_id = _parse_diagnostics(top)
    return Transport(
        stream=bool(top.boolean("stream")),
        request_id=request_id,
        user=user,
        metadata=None if metadata is None else dict(metadata.data),
        diagnostics=diagnostics,
        previous_message_id=previous_message_id,
    )


def _parse_system(top: Fields) -> tuple[TextBlock, ...]:
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


def _text_block(block: Fields) -> TextBlock:
    block.reject_unknown({"type", "text", "cache_control", "citations"})
    text = block.required_string("text")
    if not text:
        raise STYLE.invalid(block.path, "text content blocks must be non-empty")
    return TextBlock(text=text, cache_control=parse_cache_control(block))


def _parse_tools(top: Fields) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, raw in enumerate(top.array("tools") or []):
        entry = Fields(STYLE, raw, ("tools", i))
        kind = entry.string("type")
        if kind not in (None, "custom"):
            message = f"server tools ('{shown(kind)}') are not supported by this server"
            raise STYLE.invalid(entry.at("type"), message)
        entry.reject_unknown({"type", "name", "description", "input_schema", "cache_control"})
        name = entry.required_string("name")
        if not TOOL_NAME_PATTERN.match(name):
            raise STYLE.invalid(
                entry.at("name"), "String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"
            )
        if any(t.name == name for t in tools):
            raise STYLE.invalid(("tools",), f"Tool names must be unique. Duplicate name: {name}")
        schema = entry.required_obj("input_schema")
        schema.choice("type", ("object",), required=True)
        entry.json_value("input_schema")
        tools.append(
            Tool(
                name=name,
                description=entry.string("description") or "",
                input_schema=dict(schema.data),
                cache_control=parse_cache_control(entry),
            )
        )
    return tuple(tools)


def _parse_output_config(top: Fields) -> dict[str, Any] | None:
    """``output_config.format`` (structured outputs) as the canonical response_format.

    Anthropic's JSON outputs always follow the schema exactly: canonically a
    strict ``json_schema`` (nameless: the Messages API has no name for it). The
    deprecated top-level ``output_format`` means the same as ``output_config.format``.
    """
    config = top.obj("output_config")
    legacy = top.obj("output_format")
    if config is None:
        return None if legacy is None else _parse_format(legacy)
    config.reject_unknown({"format", "effort", "task_budget"})
    if config.data.get("effort") is not None:
        raise STYLE.invalid(
            config.at("effort"), "effort cannot apply: this server's models do not think"
        )
    if config.data.get("task_budget") is not None:
        raise STYLE.invalid(config.at("task_budget"), "task budgets are not supported here")
    fmt = config.obj("format")
    if fmt is not None and legacy is not None:
        raise STYLE.invalid(
            ("output_format",), "give output_config.format or output_format, not both"
        )
    fmt = fmt if fmt is not None else legacy
    return None if fmt is None else _parse_format(fmt)


def _parse_format(fmt: Fields) -> dict[str, Any] | None:
    fmt.reject_unknown({"type", "schema"})
    fmt.choice("type", ("json_schema",), required=True)
    schema = fmt.required_obj("schema")
    fmt.json_value("schema")
    return {"type": "json_schema", "json_schema": {"schema": dict(schema.data), "strict": True}}


def _parse_tool_choice(top: Fields, tools: tuple[Tool, ...]) -> dict[str, Any] | None:
    choice = top.obj("tool_choice")
    if choice is None:
        return None
    kind = choice.choice("type", ("auto", "any", "tool", "none"), required=True)
    choice.reject_unknown({"type", "name", "disable_parallel_tool_use"})
    canonical: dict[str, Any] = {"type": kind}
    if kind == "tool":
        name = choice.required_string("name")
        if all(t.name != name for t in tools):
            raise STYLE.invalid(choice.at("name"), f"Tool '{shown(name)}' not found in tools")
        canonical["name"] = name
    if choice.boolean("disable_parallel_tool_use"):
        canonical["disable_parallel_tool_use"] = True
    return canonical


def _parse_messages(raw_messages: list[Any]) -> tuple[Message, ...]:
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
            content = _content(entry, "assistant", tool_use_ids)
            tool_use_ids.update(b.id for b in content if isinstance(b, ToolUseBlock))
            messages.append(Message(role="assistant", content=content))
    return tuple(messages)


def _content(entry: Fields, role: str, tool_use_ids: set[str]) -> tuple[ContentBlock, ...]:
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
            # Thinking from earlier turns is not part of the context (as at Anthropic).
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
