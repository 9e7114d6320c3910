"""Canonical request -> prompt text, token ids and cache-breakpoint token positions.

The canonical order is **tools -> system -> messages**. Every template message
gets a plain string ``content`` so any Hugging Face chat template works:

* **Tools** are rendered as text at the start of the system section (this
  format is stable: changing it changes every cached prefix)::

      # Tools

      You may call the following tools. Each line is one tool as JSON ...
      <tools>
      {"name": "...", "description": "...", "input_schema": {...}}
      </tools>

      To call a tool, reply with one line per call:
      <tool_call>{"name": <tool-name>, "arguments": <arguments-object>}</tool_call>

  followed by a blank line and the system blocks. With tools and no system
  blocks the system message holds only the tools section; with neither, no
  system message is sent and the template may add its default one (SmolLM2
  does), which is deterministic.
* **tool_use** blocks become assistant text
  ``<tool_call>{"id": ..., "name": ..., "arguments": {...}}</tool_call>``;
  **tool_result** blocks become ``<tool_response tool_use_id="...">text
  </tool_response>`` in the (user) turn that carries them.
* Blocks of one message (and system blocks) are joined with ``"\\n"``; the
  separator belongs to the *following* block, so a block's end does not move
  when more blocks are appended.
* Images raise :class:`~promptcache.errors.RequestError`: the local models are
  text-only.
* A final assistant message is continued (Anthropic-style prefill) instead of
  opening a new assistant turn.
* The same tool-call format is read back from the output
  (``tool_calls.py``): :class:`~promptcache.engine.local.tool_calls.ToolCallCapture`
  withholds ``<tool_call>...`` text from the stream and parses it into
  ``ToolUseBlock`` s (finish reason ``tool_calls``).

Tools are always rendered as text, also for templates with native tool
support: one format for every model keeps rendering and the output parser in
step (a native-format path would need a parser per model family).

**Breakpoint positions.** A breakpoint maps to the token position where its
block ends in the rendered prompt. The character offset of that end is found
without sentinels: the template is rendered twice with one different character
inserted at the block's end, and the first differing character is the offset.
Characters map to tokens through the fast tokenizer's offsets. **Straddling
rule:** the position is the number of leading tokens that lie entirely at or
before the block's end; a token that straddles the boundary (starts before it
and ends after it) belongs *after* the breakpoint, so the cached prefix never
contains text past the block.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from promptcache.engine.local.tool_calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from promptcache.errors import RequestError
from promptcache.request import (
    Breakpoint,
    BreakpointPosition,
    ChatRequest,
    ContentBlock,
    ImageBlock,
    Message,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
)

logger = logging.getLogger(__name__)

TOOLS_HEADER = (
    "# Tools\n\n"
    "You may call the following tools. Each line is one tool as JSON "
    "(name, description and the JSON Schema of its input):\n"
    "<tools>\n"
)
TOOLS_FOOTER = (
    "\n</tools>\n\n"
    "To call a tool, reply with one line per call:\n"
    '<tool_call>{"name": <tool-name>, "arguments": <arguments-object>}</tool_call>'
)
SECTION_SEPARATOR = "\n\n"
BLOCK_SEPARATOR = "\n"


class ChatTokenizer(Protocol):
    """The part of a Hugging Face fast tokenizer the renderer uses."""

    is_fast: bool

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __call__(self, text: str, **kwargs: Any) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class RenderedPrompt:
    """A rendered request: the text, its token ids, and each breakpoint's position."""

    text: str
    token_ids: tuple[int, ...]
    breakpoint_positions: tuple[BreakpointPosition, ...]
    section_ends: Callable[[], tuple[int, int]] = field(
        default=lambda: (0, 0), compare=False, repr=False
    )
    """Token positions where the tools section and the system section end (0 when absent),
    by the breakpoint rule; computed on demand (only a prefix-miss diagnosis needs it)."""


@dataclass(frozen=True)
class _Content:
    """A template message's content string and the end offset of each source block."""

    role: str
    text: str
    block_ends: tuple[int, ...]


class ChatRenderer:
    """Renders canonical requests with one tokenizer's chat template."""

    def __init__(self, tokenizer: ChatTokenizer) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                "promptcache needs a fast tokenizer (tokenizer.json) for breakpoint "
                "offsets; this model only provides a slow one"
            )
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; promptcache needs one")
        self._tokenizer = tokenizer
        self.tokenizer_lock = threading.Lock()
        """Serialises calls into the Rust tokenizer: one thread changing its
        truncation/padding state while another uses it fails with "Already
        borrowed". Share it with every other user of this tokenizer."""

    def render(self, request: ChatRequest) -> RenderedPrompt:
        """Render ``request``; raises RequestError for content the model cannot take."""
        thinking = request.sampling.thinking
        if thinking is not None and thinking.mode != "disabled":
            # The served models have no thinking mode: an answer without it would pass
            # for one with it ("disabled" is what they do anyway).
            raise RequestError(
                f"model '{request.model}' does not support extended thinking (thinking "
                f'type \'{thinking.mode}\'); send {{"type": "disabled"}} or omit it',
                param="thinking",
            )
        breakpoints = request.breakpoints()
        if not request.messages:
            raise RequestError("messages must contain at least one message", param="messages")
        contents, system_count = self._contents(request)
        continue_final = request.messages[-1].role == "assistant"
        text = self._template(contents, continue_final)
        with self.tokenizer_lock:
            encoding = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        token_ids = tuple(int(t) for t in encoding["input_ids"])
        offsets: list[tuple[int, int]] = [(int(s), int(e)) for s, e in encoding["offset_mapping"]]
        positions: list[BreakpointPosition] = []
        for point in breakpoints:
            index, block_end = _locate_block(point, contents, system_count, len(request.tools))
            char_end = self._char_offset(contents, index, block_end, text, continue_final)
            if char_end is None:
                logger.warning("could not locate breakpoint %s in the rendered prompt", point)
                continue
            positions.append(BreakpointPosition(tokens_ending_by(offsets, char_end), point.ttl))
        tool_count = len(request.tools)

        def section_ends() -> tuple[int, int]:
            if system_count == 0:
                return 0, 0
            system = contents[0]
            ends = []
            for offset in (
                system.block_ends[tool_count - 1] + len(TOOLS_FOOTER) if tool_count else 0,
                len(system.text),
            ):
                char_end = self._char_offset(contents, 0, offset, text, continue_final)
                ends.append(0 if char_end is None else tokens_ending_by(offsets, char_end))
            return ends[0] if tool_count else 0, ends[1]

        return RenderedPrompt(
            text=text,
            token_ids=token_ids,
            breakpoint_positions=tuple(positions),
            section_ends=section_ends,
        )

    def _contents(self, request: ChatRequest) -> tuple[list[_Content], int]:
        contents: list[_Content] = []
        system = _system_content(request.tools, request.system)
        if system is not None:
            contents.append(system)
        for m, message in enumerate(request.messages):
            contents.append(_message_content(message, m))
        return contents, 1 if system is not None else 0

    def _template(self, contents: Sequence[_Content], continue_final: bool) -> str:
        conversation = [{"role": c.role, "content": c.text} for c in contents]
        rendered = self._tokenizer.apply_chat_template(
            conversation,
            tokenize=False,
            add_generation_prompt=not continue_final,
            continue_final_message=continue_final,
        )
        if not isinstance(rendered, str):
            raise TypeError(f"chat template returned {type(rendered).__name__}, expected str")
        return rendered

    def _char_offset(
        self,
        contents: list[_Content],
        index: int,
        offset: int,
        full_text: str,
        continue_final: bool,
    ) -> int | None:
        # Two renderings that differ only by one character inserted at the
        # block's end: everything before the first difference is shared, so
        # the difference is where the block ends. This works whatever the
        # template adds around or before the content (headers, default system
        # prompts) and needs no sentinel that could collide with user text.
        probes = []
        for marker in ("a", "b"):
            changed = list(contents)
            original = changed[index]
            text = original.text[:offset] + marker + original.text[offset:]
            changed[index] = _Content(original.role, text, original.block_ends)
            probes.append(self._template(changed, continue_final))
        first, second = probes
        end = _common_prefix_length(first, second)
        if end == min(len(first), len(second)) or full_text[:end] != first[:end]:
            return None
        return end


def tokens_ending_by(offsets: Sequence[tuple[int, int]], char_end: int) -> int:
    """How many leading tokens lie entirely at or before character ``char_end``.

    A token straddling ``char_end`` counts after it. Zero-width tokens at the
    boundary (some tokenizers trim whitespace out of offsets) also count after.
    """
    count = 0
    for start, end in offsets:
        if end > char_end or start >= char_end:
            break
        count += 1
    return count


def _common_prefix_length(a: str, b: str) -> int:
    limit = min(len(a), len(b))
    for i in range(limit):
        if a[i] != b[i]:
            return i
    return limit


def _locate_block(
    point: Breakpoint, contents: list[_Content], system_count: int, tool_count: int
) -> tuple[int, int]:
    """(template message index, end offset in its content) of a breakpoint's block."""
    if point.section == "tools":
        return 0, contents[0].block_ends[point.block]
    if point.section == "system":
        return 0, contents[0].block_ends[tool_count + point.block]
    if point.message is None:
        raise ValueError(f"message breakpoint without a message index: {point}")
    index = system_count + point.message
    return index, contents[index].block_ends[point.block]


def _system_content(tools: Sequence[Tool], system: Sequence[TextBlock]) -> _Content | None:
    """The system section: the tools text, then the system blocks.

    ``block_ends`` lists one end per tool, then one per system block.
    """
    if not tools and not system:
        return None
    text = ""
    ends: list[int] = []
    if tools:
        text = TOOLS_HEADER
        for i, tool in enumerate(tools):
            if i:
                text += BLOCK_SEPARATOR
            text += json.dumps(
                {
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": dict(tool.input_schema),
                },
                ensure_ascii=False,
            )
            ends.append(len(text))
        text += TOOLS_FOOTER
    for i, block in enumerate(system):
        if i:
            text += BLOCK_SEPARATOR
        elif tools:
            text += SECTION_SEPARATOR
        text += block.text
        ends.append(len(text))
    return _Content("system", text, tuple(ends))


def _message_content(message: Message, index: int) -> _Content:
    text = ""
    ends: list[int] = []
    for i, block in enumerate(message.content):
        if i:
            text += BLOCK_SEPARATOR
        text += _block_text(block, f"messages.{index}.content.{i}")
        ends.append(len(text))
    return _Content(message.role, text, tuple(ends))


def _block_text(block: ContentBlock, param: str) -> str:
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, ImageBlock):
        raise _image_error(param)
    if isinstance(block, ToolUseBlock):
        call = {"id": block.id, "name": block.name, "arguments": dict(block.input)}
        return f"{TOOL_CALL_OPEN}{json.dumps(call, ensure_ascii=False)}{TOOL_CALL_CLOSE}"
    if isinstance(block, ToolResultBlock):
        parts: list[str] = []
        for j, inner in enumerate(block.content):
            if isinstance(inner, ImageBlock):
                raise _image_error(f"{param}.content.{j}")
            parts.append(inner.text)
        error = ' is_error="true"' if block.is_error else ""
        body = BLOCK_SEPARATOR.join(parts)
        return f'<tool_response tool_use_id="{block.tool_use_id}"{error}>{body}</tool_response>'
    raise RequestError(f"unsupported content block {type(block).__name__}", param=param)


def _image_error(param: str) -> RequestError:
    return RequestError(
        "This model is text-only: image content is not supported. "
        "Send text, or use an upstream engine with a vision model.",
        param=param,
    )
