"""Replaying a stored :class:`Result` as a stream, so a response-cache hit can be served as SSE.

The replay looks like a fast live generation: the prompt usage first, then
each choice's text in a handful of word-aligned chunks (not one event per
character, which would only cost bytes and syscalls), then the Result itself.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from promptcache.request import ReasoningBlock
from promptcache.result import PromptUsage, Result, StreamEvent, TextDelta

CHUNK_CHARS = 64
"""Target size of one replayed delta; chunks end at a word boundary when one is near."""

_WORD_END = re.compile(r"\s+")


def split_text(text: str, chunk_chars: int = CHUNK_CHARS) -> list[str]:
    """Split ``text`` into pieces of about ``chunk_chars`` that concatenate back to it."""
    if chunk_chars < 1:
        raise ValueError(f"chunk_chars must be >= 1, got {chunk_chars}")
    pieces: list[str] = []
    start = 0
    while len(text) - start > chunk_chars:
        end = start + chunk_chars
        # Prefer to cut after the last whitespace in the window; else cut hard.
        boundaries = [m.end() for m in _WORD_END.finditer(text, start + 1, end)]
        cut = boundaries[-1] if boundaries else end
        pieces.append(text[start:cut])
        start = cut
    if start < len(text):
        pieces.append(text[start:])
    return pieces


async def replay_events(result: Result) -> AsyncIterator[StreamEvent]:
    """``PromptUsage``, then every choice's reasoning and text as ``TextDelta``s, then
    ``result``."""
    yield PromptUsage(usage=result.usage)
    for choice in result.choices:
        if choice.reasoning_blocks:  # an Anthropic upstream's blocks, each with its signature
            for block in choice.reasoning_blocks:
                for event in _block_events(choice.index, block):
                    yield event
        else:
            for piece in split_text(choice.reasoning):
                yield TextDelta(choice_index=choice.index, text="", reasoning=piece)
        for piece in split_text(choice.text):
            yield TextDelta(choice_index=choice.index, text=piece)
    yield result


def _block_events(index: int, block: ReasoningBlock) -> list[TextDelta]:
    if block.redacted_data is not None:
        return [TextDelta(choice_index=index, text="", redacted_data=block.redacted_data)]
    events = [
        TextDelta(choice_index=index, text="", reasoning=piece)
        for piece in split_text(block.thinking)
    ]
    return [*events, TextDelta(choice_index=index, text="", signature=block.signature)]
