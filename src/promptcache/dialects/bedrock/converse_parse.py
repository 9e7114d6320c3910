"""Converse and ConverseStream requests: the Converse body as a canonical request.

A ``cachePoint`` block (``{"cachePoint": {"type": "default", "ttl": "5m"|"1h"}}``)
in ``toolConfig.tools``, ``system`` or a message's ``content`` is a cache
breakpoint at the end of the block before it: canonically that block's
``cache_control``, so the request's breakpoint rules (at most 4, TTLs
non-increasing in the order tools -> system -> messages) apply as in the other
dialects. Every field accepted has its effect; any other is a
``ValidationException`` naming it. The answers are rendered by
``converse_render.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from promptcache.dialects._fields import (
    TOOL_NAME_PATTERN,
    DialectRequestError,
    Fields,
    Path,
    check_json,
    check_text,
    shown,
)
from promptcache.dialects.anthropic.parse import parse_thinking
from promptcache.dialects.bedrock.style import STYLE
from promptcache.errors import RequestError
from promptcache.request import (
    MAX_BREAKPOINTS,
    CacheControl,
    ChatRequest,
    ContentBlock,
    ImageBlock,
    Message,
    ReasoningBlock,
    SamplingParams,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    Transport,
)

_TOP = frozenset(
    {
        "modelId",
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "requestMetadata",
        "additionalModelRequestFields",
    }
)
_NOT_SUPPORTED = frozenset(
    {
        "guardrailConfig",
        "additionalModelResponseFieldPaths",
        "promptVariables",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
        "projectIdentifier",
    }
)
_MESSAGE_BLOCKS = ("text", "image", "toolUse", "toolResult", "cachePoint", "reasoningContent")
_IMAGE_FORMATS = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}

B = TypeVar("B", TextBlock, Tool, TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock)


def _one_key(entry: Fields, allowed: Sequence[str]) -> str:
    keys = [k for k, v in entry.data.items() if v is not None]
    if len(keys) != 1:
        raise STYLE.invalid(
            entry.path, "failed to satisfy constraint: Member must have exactly one member set"
        )
    key = keys[0]
    if key not in allowed:
        raise STYLE.invalid(
            entry.at(key), f"is not supported by this server (supported: {', '.join(allowed)})"
        )
    return key


def _cache_point(entry: Fields) -> CacheControl:
    point = entry.required_obj("cachePoint")
    point.reject_unknown({"type", "ttl"})
    point.choice("type", ("default",), required=True)
    ttl = point.choice("ttl", ("5m", "1h"))
    return CacheControl(ttl="1h" if ttl == "1h" else "5m")


def _mark_last(blocks: list[B], marker: CacheControl, path: Path) -> None:
    if not blocks:
        raise STYLE.invalid(path, "a cachePoint must follow a block it applies to")
    last = blocks[-1]
    if last.cache_control is not None:
        raise STYLE.invalid(path, "two cachePoint blocks in a row")
    blocks[-1] = replace(last, cache_control=marker)


def _text(entry: Fields, key: str = "text") -> TextBlock:
    text = entry.required_string(key)
    if not text:
        raise STYLE.invalid(entry.at(key), "failed to satisfy constraint: Member must not be blank")
    return TextBlock(text=text)


def _parse_system(top: Fields) -> tuple[TextBlock, ...]:
    blocks: list[TextBlock] = []
    for i, raw in enumerate(top.array("system") or []):
        entry = Fields(STYLE, raw, ("system", i))
        if _one_key(entry, ("text", "cachePoint")) == "cachePoint":
            _mark_last(blocks, _cache_point(entry), entry.path)
        else:
            blocks.append(_text(entry))
    return tuple(blocks)


def _parse_tools(top: Fields) -> tuple[tuple[Tool, ...], dict[str, Any] | None]:
    config = top.obj("toolConfig")
    if config is None:
        return (), None
    config.reject_unknown({"tools", "toolChoice"})
    tools: list[Tool] = []
    for i, raw in enumerate(config.array("tools", required=True) or []):
        entry = Fields(STYLE, raw, (*config.path, "tools", i))
        if _one_key(entry, ("toolSpec", "cachePoint")) == "cachePoint":
            _mark_last(tools, _cache_point(entry), entry.path)
            continue
        spec = entry.required_obj("toolSpec")
        spec.reject_unknown({"name", "description", "inputSchema", "strict"})
        if spec.boolean("strict"):
            raise STYLE.invalid(spec.at("strict"), "strict tool schemas are not supported here")
        name = spec.required_string("name")
        if not TOOL_NAME_PATTERN.match(name):
            raise STYLE.invalid(
                spec.at("name"),
                "failed to satisfy constraint: Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9_-]{1,64}",
            )
        if any(t.name == name for t in tools):
            raise STYLE.invalid(spec.at("name"), f"The tool name {name} is not unique")
        schema = spec.required_obj("inputSchema")
        schema.reject_unknown({"json"})
        document = schema.required_obj("json")
        schema.json_value("json")
        tools.append(
            Tool(
                name=name,
                description=spec.string("description") or "",
                input_schema=dict(document.data),
            )
        )
    return tuple(tools), _parse_tool_choice(config, tools)


def _parse_tool_choice(config: Fields, tools: list[Tool]) -> dict[str, Any] | None:
    choice = config.obj("toolChoice")
    if choice is None:
        return None
    kind = _one_key(choice, ("auto", "any", "tool"))
    if kind != "tool":
        choice.required_obj(kind).reject_unknown(set())
        return {"type": kind}
    spec = choice.required_obj("tool")
    spec.reject_unknown({"name"})
    name = spec.required_string("name")
    if all(t.name != name for t in tools):
        raise STYLE.invalid(spec.at("name"), f"the tool {shown(name)} is not in toolConfig.tools")
    return {"type": "tool", "name": name}


def _image(entry: Fields) -> ImageBlock:
    image = entry.required_obj("image")
    image.reject_unknown({"format", "source"})
    fmt = image.choice("format", tuple(_IMAGE_FORMATS), required=True)
    source = image.required_obj("source")
    source.reject_unknown({"bytes"})
    data = source.required_string("bytes")
    return ImageBlock(
        source={"type": "base64", "media_type": _IMAGE_FORMATS[fmt or "png"], "data": data}
    )


def _tool_use(entry: Fields) -> ToolUseBlock:
    use = entry.required_obj("toolUse")
    use.reject_unknown({"toolUseId", "name", "input", "type"})
    tool_input = use.get("input", "object", required=True)
    use.json_value("input")
    return ToolUseBlock(
        id=use.required_string("toolUseId"), name=use.required_string("name"), input=tool_input
    )


def _tool_result(entry: Fields, known_ids: set[str]) -> ToolResultBlock:
    result = entry.required_obj("toolResult")
    result.reject_unknown({"toolUseId", "content", "status", "type"})
    tool_use_id = result.required_string("toolUseId")
    if tool_use_id not in known_ids:
        raise STYLE.invalid(
            result.at("toolUseId"),
            f"the toolResult's toolUseId {shown(tool_use_id)} matches no earlier toolUse",
        )
    status = result.choice("status", ("success", "error"))
    parts: list[TextBlock | ImageBlock] = []
    for i, raw in enumerate(result.array("content", required=True) or []):
        part = Fields(STYLE, raw, (*result.path, "content", i))
        kind = _one_key(part, ("text", "json", "image"))
        if kind == "text":
            parts.append(TextBlock(text=part.required_string("text")))
        elif kind == "json":
            check_json(STYLE, part.at("json"), part.data["json"])
            parts.append(TextBlock(text=json.dumps(part.data["json"], ensure_ascii=False)))
        else:
            parts.append(_image(part))
    return ToolResultBlock(
        tool_use_id=tool_use_id, content=tuple(parts), is_error=status == "error"
    )


def _reasoning(block: Fields) -> list[ReasoningBlock]:
    """Claude's reasoning sent back (``reasoningText`` with its ``signature``): kept for an
    Anthropic upstream, dropped by every other engine (as the Anthropic dialect does);
    unsigned reasoning, which no one can verify, and encrypted ``redactedContent``
    (bytes promptcache never hands out here) are dropped."""
    content = block.required_obj("reasoningContent")
    content.reject_unknown({"reasoningText", "redactedContent"})
    text = content.obj("reasoningText")
    if text is None:
        return []
    text.reject_unknown({"text", "signature"})
    thinking, signature = text.required_string("text"), text.string("signature")
    return [ReasoningBlock(thinking=thinking, signature=signature)] if signature else []


def _parse_messages(top: Fields) -> tuple[Message, ...]:
    messages: list[Message] = []
    known_ids: set[str] = set()
    raw_messages = top.array("messages", required=True) or []
    if not raw_messages:
        raise STYLE.invalid(("messages",), "failed to satisfy constraint: Member must not be empty")
    for m, raw in enumerate(raw_messages):
        entry = Fields(STYLE, raw, ("messages", m))
        entry.reject_unknown({"role", "content"})
        role = entry.choice("role", ("user", "assistant"), required=True)
        blocks: list[ContentBlock] = []
        reasoning: list[ReasoningBlock] = []
        for i, raw_block in enumerate(entry.array("content", required=True) or []):
            block = Fields(STYLE, raw_block, (*entry.path, "content", i))
            kind = _one_key(block, _MESSAGE_BLOCKS)
            if kind == "reasoningContent":
                if role != "assistant":
                    raise STYLE.invalid(
                        block.path, "reasoningContent belongs to assistant messages"
                    )
                reasoning.extend(_reasoning(block))
            elif kind == "cachePoint":
                _mark_last(blocks, _cache_point(block), block.path)
            elif kind == "text":
                blocks.append(_text(block))
            elif kind == "image":
                blocks.append(_image(block))
            elif kind == "toolUse":
                if role != "assistant":
                    raise STYLE.invalid(block.path, "toolUse blocks belong to assistant messages")
                blocks.append(_tool_use(block))
            else:
                if role != "user":
                    raise STYLE.invalid(block.path, "toolResult blocks belong to user messages")
                blocks.append(_tool_result(block, known_ids))
        if not blocks and not reasoning:
            raise STYLE.invalid(entry.at("content"), "a message needs at least one content block")
        known_ids.update(b.id for b in blocks if isinstance(b, ToolUseBlock))
        messages.append(
            Message(
                role="user" if role == "user" else "assistant",
                content=tuple(blocks),
                reasoning=tuple(reasoning),
            )
        )
    return tuple(messages)


def _parse_sampling(top: Fields) -> SamplingParams:
    # The model's own fields (Anthropic's): only top_k has an effect here.
    extra = top.obj("additionalModelRequestFields")
    top_k = None
    thinking = None
    if extra is not None:
        # Claude's extended thinking rides here on Bedrock, in the Messages API's shape.
        extra.reject_unknown({"top_k", "thinking"})
        top_k = extra.integer("top_k", minimum=0)
        thinking = parse_thinking(extra)
    config = top.obj("inferenceConfig")
    if config is None:
        return SamplingParams(top_k=top_k, thinking=thinking)
    config.reject_unknown({"maxTokens", "temperature", "topP", "stopSequences"})
    stops = config.array("stopSequences") or []
    for i, stop in enumerate(stops):
        if not isinstance(stop, str):
            raise STYLE.wrong_type((*config.at("stopSequences"), i), "string", stop)
        check_text(STYLE, (*config.at("stopSequences"), i), stop)
        if not stop:
            raise STYLE.invalid((*config.at("stopSequences"), i), "must not be empty")
    return SamplingParams(
        top_k=top_k,
        thinking=thinking,
        max_tokens=config.integer("maxTokens", minimum=1),
        temperature=config.number("temperature", minimum=0, maximum=1),
        top_p=config.number("topP", minimum=0, maximum=1),
        stop=tuple(stops),
    )


def parse_converse(
    body: Any, *, model: str, stream: bool, tenant: str = "", namespace: str = ""
) -> ChatRequest:
    """Validate a Converse body (the model id comes from the path) into the canonical request."""
    top = Fields(STYLE, body)
    for key in top.data:
        if key in _NOT_SUPPORTED:
            raise STYLE.invalid((key,), "is not supported by this server")
    top.reject_unknown(_TOP)
    if top.has("modelId") and top.data["modelId"] != model:
        raise STYLE.invalid(("modelId",), "must match the model id in the path")
    metadata = top.obj("requestMetadata")
    if metadata is not None:
        for key in metadata.data:
            metadata.string(key)
    tools, tool_choice = _parse_tools(top)
    system = _parse_system(top)
    messages = _parse_messages(top)
    sampling = _parse_sampling(top)
    try:
        # Building the request validates its breakpoints (the cache points).
        return ChatRequest(
            model=model,
            tools=tools,
            system=system,
            messages=messages,
            sampling=sampling,
            tool_choice=tool_choice,
            tenant=tenant,
            namespace=namespace,
            transport=Transport(
                stream=stream, metadata=None if metadata is None else dict(metadata.data)
            ),
        )
    except RequestError as error:
        if error.param != "cache_control":
            raise
        points = sum(1 for _ in _cache_points(tools, system, messages))
        if points > MAX_BREAKPOINTS:
            message = (
                f"A maximum of {MAX_BREAKPOINTS} cachePoint blocks may be given. Found {points}."
            )
        else:
            message = (
                "A cachePoint with ttl '1h' must not come after one with ttl '5m' "
                "(the order is toolConfig.tools, system, messages)."
            )
        raise DialectRequestError(message, param="cachePoint") from None


def _cache_points(
    tools: tuple[Tool, ...], system: tuple[TextBlock, ...], messages: tuple[Message, ...]
) -> Iterator[CacheControl]:
    blocks: list[Tool | ContentBlock] = [*tools, *system]
    blocks += [b for m in messages for b in m.content]
    for block in blocks:
        if block.cache_control is not None:
            yield block.cache_control
