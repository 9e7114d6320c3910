"""Turning what the prefix cache did into Anthropic-style usage counts.

Anthropic's mixed-TTL rule, applied exactly: with A = the highest cache hit,
B = the last 1h breakpoint after A and C = the last breakpoint, a request
reads A tokens, writes B - A tokens at the 1h rate and C - B tokens at the
5m rate; everything else is plain input. Positions are token counts from the
start of the prompt (already block-aligned by the engine).
"""

from __future__ import annotations

from collections.abc import Sequence

from promptcache.request import BreakpointPosition
from promptcache.result import Usage


def account_prompt(
    *,
    prompt_tokens: int,
    cache_hit_tokens: int,
    breakpoints: Sequence[BreakpointPosition],
    output_tokens: int = 0,
) -> Usage:
    """Split ``prompt_tokens`` into read, 1h write, 5m write and plain input;
    ``breakpoints`` are those whose prefix was written or refreshed."""
    if not 0 <= cache_hit_tokens <= prompt_tokens:
        raise ValueError(
            f"cache_hit_tokens={cache_hit_tokens} must be within 0..prompt_tokens={prompt_tokens}"
        )
    hit = cache_hit_tokens
    after_hit = [bp for bp in breakpoints if hit < bp.position <= prompt_tokens]
    last_1h = max((bp.position for bp in after_hit if bp.ttl == "1h"), default=hit)
    last_any = max((bp.position for bp in after_hit), default=hit)
    write_1h = last_1h - hit
    write_5m = max(0, last_any - last_1h)
    return Usage(
        input_tokens=prompt_tokens - hit - write_1h - write_5m,
        cache_read_input_tokens=hit,
        cache_creation_1h_input_tokens=write_1h,
        cache_creation_5m_input_tokens=write_5m,
        output_tokens=output_tokens,
    )
