"""Tool calls in the generated text: withheld from the stream, parsed into ``ToolUseBlock`` s.

The inverse of the tool-call format ``prompt.py`` renders into the prompt::

    <tool_call>{"name": <tool-name>, "arguments": <arguments-object>}</tool_call>
"""

from __future__ import annotations

import json
import uuid

from promptcache.request import ChatRequest, ToolUseBlock

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


class ToolCallCapture:
    """Streams generated text but withholds tool calls, parsed at the end.

    The inverse of the tool-call format in the prompt: text from the first
    ``<tool_call>`` on is not streamed; :meth:`finish` parses it into
    ``ToolUseBlock`` s. If it does not parse (the model wrote the tag but no
    valid call), the withheld text is released as ordinary text instead, so
    the streamed deltas always add up to the final text.
    """

    def __init__(self) -> None:
        self._text = ""
        self._emitted = 0
        self._capturing = False

    def feed(self, delta: str) -> str:
        """Add streamed text; return the part that is plain text and safe to emit."""
        self._text += delta
        if self._capturing:
            return ""
        start = self._text.find(TOOL_CALL_OPEN, self._emitted)
        if start != -1:
            self._capturing = True
            return self._release(start)
        return self._release(len(self._text) - _partial_suffix(self._text, TOOL_CALL_OPEN))

    def finish(self) -> tuple[str, str, tuple[ToolUseBlock, ...]]:
        """(remaining text to emit, final text, parsed tool calls)."""
        if self._capturing:
            calls = parse_tool_calls(self._text[self._emitted :])
            if calls:
                return "", self._text[: self._emitted], calls
        tail = self._release(len(self._text))
        return tail, self._text, ()

    def _release(self, end: int) -> str:
        delta = self._text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta


def parse_tool_calls(text: str) -> tuple[ToolUseBlock, ...]:
    """Every ``<tool_call>{json}</tool_call>`` in ``text`` (the last may be unclosed).

    Returns () unless each call is a JSON object with a string ``name`` and an
    object (or JSON-encoded object) of ``arguments``.
    """
    calls: list[ToolUseBlock] = []
    for chunk in text.split(TOOL_CALL_OPEN)[1:]:
        body = chunk.split(TOOL_CALL_CLOSE, 1)[0].strip()
        try:
            data = json.loads(body)
        except json.JSONDecodeError:
            return ()
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return ()
        arguments = data.get("arguments", data.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return ()
        if not isinstance(arguments, dict):
            return ()
        call_id = data.get("id")
        if not isinstance(call_id, str) or not call_id:
            call_id = f"call_{uuid.uuid4().hex[:24]}"
        calls.append(ToolUseBlock(id=call_id, name=data["name"], input=arguments))
    return tuple(calls)


def tool_calls_allowed(request: ChatRequest) -> bool:
    """Whether to look for tool calls in the output (tools given, tool_choice not "none")."""
    if not request.tools:
        return False
    choice = request.tool_choice
    declined = choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none")
    return not declined


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0
