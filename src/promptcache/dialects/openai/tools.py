"""OpenAI ``tools``, ``tool_choice`` and ``response_format`` -> their canonical forms.

A tool's ``parameters`` must be an object schema (as OpenAI answers);
``tool_choice`` becomes Anthropic's shape (``required`` -> ``any``, a named
function -> ``{"type": "tool", "name"}``, ``parallel_tool_calls: false`` ->
``disable_parallel_tool_use``); ``response_format`` keeps OpenAI's shape.
"""

from __future__ import annotations

import json
from typing import Any

from promptcache.dialects._fields import (
    TOOL_NAME_PATTERN,
    Fields,
    check_json,
    parse_cache_control,
    shown,
)
from promptcache.dialects.openai.style import STYLE
from promptcache.request import Tool


def parse_response_format(top: Fields) -> dict[str, Any] | None:
    fmt = top.obj("response_format")
    if fmt is None:
        return None
    kind = fmt.choice("type", ("text", "json_object", "json_schema"), required=True)
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = fmt.required_obj("json_schema")
    schema.reject_unknown({"name", "description", "schema", "strict"})
    schema.required_string("name")
    schema.string("description")
    schema.obj("schema")
    schema.boolean("strict")
    check_json(STYLE, fmt.at("json_schema"), schema.data)
    return {"type": "json_schema", "json_schema": dict(schema.data)}


def parse_tools(top: Fields) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, raw in enumerate(top.array("tools") or []):
        entry = Fields(STYLE, raw, ("tools", i))
        entry.reject_unknown({"type", "function", "cache_control"})
        entry.choice("type", ("function",), required=True)
        function = entry.required_obj("function")
        function.reject_unknown({"name", "description", "parameters", "strict"})
        name = function.required_string("name")
        if not TOOL_NAME_PATTERN.match(name):
            raise STYLE.invalid(
                function.at("name"),
                f"Invalid '{STYLE.path(function.at('name'))}': string does not match pattern. "
                f"Expected a string that matches the pattern '^[a-zA-Z0-9_-]{{1,64}}$'.",
            )
        if any(t.name == name for t in tools):
            raise STYLE.invalid(function.at("name"), f"Tool names must be unique: '{name}'.")
        parameters = function.obj("parameters")
        function.json_value("parameters")
        kind = parameters.data.get("type") if parameters is not None else None
        if parameters is not None and kind is not None and kind != "object":
            # As OpenAI answers (and as the Anthropic dialect requires of input_schema).
            raise STYLE.invalid(
                function.at("parameters"),
                f"Invalid schema for function '{name}': schema must be a JSON Schema of "
                f"'type: \"object\"', got 'type: {json.dumps(kind)[:40]}'.",
            )
        function.boolean("strict")
        tools.append(
            Tool(
                name=name,
                description=function.string("description") or "",
                input_schema=(
                    dict(parameters.data)
                    if parameters is not None
                    else {"type": "object", "properties": {}}
                ),
                cache_control=parse_cache_control(entry),
            )
        )
    return tuple(tools)


def parse_tool_choice(top: Fields, tools: tuple[Tool, ...]) -> dict[str, Any] | None:
    raw = top.data.get("tool_choice")
    parallel = top.boolean("parallel_tool_calls")
    if raw is None and (parallel is None or not tools):
        return None
    if raw is not None and not tools:
        raise STYLE.invalid(
            ("tool_choice",),
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
        )
    choice: dict[str, Any]
    if raw is None:
        choice = {"type": "auto"}
    elif isinstance(raw, str):
        if raw not in ("none", "auto", "required"):
            raise STYLE.not_one_of(("tool_choice",), raw, ("none", "auto", "required"))
        choice = {"type": {"required": "any"}.get(raw, raw)}
    else:
        named = Fields(STYLE, raw, ("tool_choice",))
        named.choice("type", ("function",), required=True)
        function = named.required_obj("function")
        name = function.required_string("name")
        if all(t.name != name for t in tools):
            raise STYLE.invalid(
                ("tool_choice",),
                f"Invalid 'tool_choice': no tool named '{shown(name)}' was given.",
            )
        choice = {"type": "tool", "name": name}
    if parallel is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice
