"""Anthropic ``tools``, ``tool_choice`` and ``output_config`` -> their canonical forms.

Only custom tools apply (server tools are a 400 naming their type); tool names
follow Anthropic's pattern and are unique, each ``input_schema`` an object
schema. ``tool_choice`` is already the canonical shape (a named tool must be
among ``tools``). ``output_config.format`` (or the deprecated top-level
``output_format``) becomes a strict, nameless ``json_schema`` response format;
``effort`` and ``task_budget`` are refused.
"""

from __future__ import annotations

from typing import Any

from promptcache.dialects._fields import (
    TOOL_NAME_PATTERN,
    Fields,
    parse_cache_control,
    shown,
)
from promptcache.dialects.anthropic.style import STYLE
from promptcache.request import Tool


def parse_tools(top: Fields) -> tuple[Tool, ...]:
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


def parse_tool_choice(top: Fields, tools: tuple[Tool, ...]) -> dict[str, Any] | None:
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


def parse_output_config(top: Fields) -> dict[str, Any] | None:
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
