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
compaction and fallbacks are refused by name; ``thinking`` becomes the canonical
:class:`~promptcache.request.Thinking` (the engine decides whether it can apply).

This module reads the top level (parameters, refused and transport-only
fields, thinking, sampling, stop, metadata and diagnostics); ``system`` and
``messages`` with their content blocks are read in :mod:`.messages`,
``tools`` / ``tool_choice`` / ``output_config`` in :mod:`.tools`, and
:mod:`.style` words the errors.
"""

from __future__ import annotations

from typing import Any, Literal

from promptcache.dialects._fields import Fields, check_text, parse_cache_control, shown
from promptcache.dialects.anthropic.messages import parse_messages, parse_system
from promptcache.dialects.anthropic.style import STYLE
from promptcache.dialects.anthropic.tools import (
    parse_output_config,
    parse_tool_choice,
    parse_tools,
)
from promptcache.request import ChatRequest, SamplingParams, Thinking, Transport

# STYLE is re-exported: Bedrock's InvokeModel words its errors the same way.
__all__ = ["STYLE", "parse_request", "parse_thinking"]

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
    tools = parse_tools(top)
    # Building the request validates its breakpoints (a 400 on too many or misordered).
    return ChatRequest(
        model=model,
        messages=parse_messages(top.array("messages", required=True) or []),
        system=parse_system(top),
        tools=tools,
        sampling=SamplingParams(
            temperature=top.number("temperature", minimum=0, maximum=1),
            top_p=top.number("top_p", minimum=0, maximum=1),
            max_tokens=max_tokens,
            stop=_parse_stop_sequences(top),
            top_k=top.integer("top_k", minimum=0),
            thinking=parse_thinking(top),
        ),
        tool_choice=parse_tool_choice(top, tools),
        response_format=parse_output_config(top),
        tenant=tenant,
        namespace=namespace,
        transport=_parse_transport(top, request_id),
        cache_control=parse_cache_control(top),
    )


def parse_thinking(top: Fields) -> Thinking | None:
    """Anthropic's ``thinking`` (also Bedrock Converse's, in
    ``additionalModelRequestFields``): ``{"type": "enabled", "budget_tokens": N}``,
    ``{"type": "adaptive"}`` (either with an optional ``display``), ``{"type":
    "between_tools"}`` or ``{"type": "disabled"}``. Whether the served model can think
    is the engine's to say (the local model cannot; an upstream provider gets it in its
    shape or refuses it)."""
    thinking = top.obj("thinking")
    if thinking is None:
        return None
    mode = thinking.choice(
        "type", ("enabled", "disabled", "adaptive", "between_tools"), required=True
    )
    if mode in ("disabled", "between_tools"):
        thinking.reject_unknown({"type"})
        return Thinking(mode="disabled" if mode == "disabled" else "between_tools")
    display = thinking.choice("display", ("summarized", "omitted"))
    if mode == "adaptive":
        thinking.reject_unknown({"type", "display"})
        return Thinking(mode="adaptive", display=_display(display))
    thinking.reject_unknown({"type", "budget_tokens", "display"})
    # The bounds (>= 1024, < max_tokens) are the provider's: its own 400 comes back.
    budget = thinking.integer("budget_tokens", required=True)
    return Thinking(mode="enabled", budget_tokens=budget, display=_display(display))


def _display(value: str | None) -> Literal["summarized", "omitted"] | None:
    return "summarized" if value == "summarized" else "omitted" if value == "omitted" else None


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
