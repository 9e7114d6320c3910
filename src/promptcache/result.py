"""What an engine returns: usage, choices, results and the events of a stream.

The other half of the canonical form (``request.py`` holds what goes in): plain,
frozen dataclasses that the response cache stores (``Result.to_json``), the
dialects render, and pricing reads. ``ModelInfo`` and ``PrefixCacheSnapshot``
are the figures engines report about themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal, TypeAlias

from promptcache.request import ReasoningBlock, ToolUseBlock


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Exact token counts of one request (SPEC §5).

    ``input_tokens`` are prompt tokens neither read from nor written to the
    cache at an explicit breakpoint (Anthropic's meaning). Implicitly cached
    prompt tokens are counted in ``input_tokens`` when written and in
    ``cache_read_input_tokens`` when read.
    """

    input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m_input_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    """Of ``output_tokens``, those spent reasoning, when an upstream reports them
    (``completion_tokens_details.reasoning_tokens``); 0 when unknown."""

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_creation_5m_input_tokens + self.cache_creation_1h_input_tokens

    @property
    def prompt_tokens(self) -> int:
        """All prompt tokens (OpenAI's ``prompt_tokens``)."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_5m_input_tokens": self.cache_creation_5m_input_tokens,
            "cache_creation_1h_input_tokens": self.cache_creation_1h_input_tokens,
            "output_tokens": self.output_tokens,
            # Only when known: entries and reports without it stay as they were.
            **({"reasoning_tokens": self.reasoning_tokens} if self.reasoning_tokens else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, int]) -> Usage:
        return cls(**{k: int(data.get(k, 0)) for k in (*cls().to_dict(), "reasoning_tokens")})


FinishReason: TypeAlias = Literal["stop", "length", "tool_calls", "content_filter"]


@dataclass(frozen=True, kw_only=True)
class Choice:
    index: int = 0
    text: str = ""
    tool_calls: tuple[ToolUseBlock, ...] = ()
    finish_reason: FinishReason = "stop"
    stop_sequence: str | None = None
    """The stop string that ended generation, when one did (Anthropic reports it)."""
    reasoning: str = ""
    """What the model reasoned before answering, when an upstream returned it (GLM's,
    DeepSeek's, vLLM's ``reasoning_content``, Anthropic's thinking blocks); the OpenAI
    dialect renders it as ``reasoning_content``, Anthropic's as a thinking block."""
    reasoning_blocks: tuple[ReasoningBlock, ...] = ()
    """An Anthropic upstream's thinking blocks whole (signatures, redacted blocks), so an
    Anthropic client gets them back verifiable; empty for every other provider."""


@dataclass(frozen=True, kw_only=True)
class RetentionReport:
    """What ``prompt_cache_retention: "24h"`` did to the prompt's cached prefix."""

    status: Literal["pinned", "refused", "uncached"]
    """``pinned`` for 24 h; ``refused`` by the pin cap (``max_pinned_fraction``), so it
    stays cached only until evicted; ``uncached``: shorter than the caching minimum (or
    not stored for lack of room), so there was nothing to pin."""
    tokens: int
    """The prefix the pin covers (or would have covered): whole blocks of the prompt."""
    ttl: Literal["24h"] = "24h"


@dataclass(frozen=True, kw_only=True)
class Result:
    """A complete, successful generation: the only thing the response cache stores."""

    id: str
    model: str
    created: int
    choices: tuple[Choice, ...]
    usage: Usage
    retention: RetentionReport | None = field(default=None, compare=False)
    prefix_miss: str | None = field(default=None, compare=False)
    """Set by the local engine when the prompt's full blocks were not all read from the
    prefix cache: why, and where (``x-promptcache-prefix-miss``); not stored in the
    response cache (a hit reads no prefix)."""
    """Set by the local engine for ``prompt_cache_retention: "24h"``; not stored in the
    response cache (a hit pins nothing)."""

    def to_json(self) -> str:
        """Compact JSON for the response cache (inverse: :meth:`from_json`)."""
        return json.dumps(
            {
                "id": self.id,
                "model": self.model,
                "created": self.created,
                "usage": self.usage.to_dict(),
                "choices": [
                    {
                        "index": c.index,
                        "text": c.text,
                        "finish_reason": c.finish_reason,
                        "stop_sequence": c.stop_sequence,
                        # Only when present: entries without reasoning stay as they were.
                        **({"reasoning": c.reasoning} if c.reasoning else {}),
                        **(
                            {"reasoning_blocks": [asdict(b) for b in c.reasoning_blocks]}
                            if c.reasoning_blocks
                            else {}
                        ),
                        "tool_calls": [
                            {"id": t.id, "name": t.name, "input": dict(t.input)}
                            for t in c.tool_calls
                        ],
                    }
                    for c in self.choices
                ],
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Result:
        data = json.loads(text)
        return cls(
            id=data["id"],
            model=data["model"],
            created=int(data["created"]),
            usage=Usage.from_dict(data["usage"]),
            choices=tuple(
                Choice(
                    index=c["index"],
                    text=c["text"],
                    finish_reason=c["finish_reason"],
                    stop_sequence=c.get("stop_sequence"),
                    reasoning=c.get("reasoning", ""),
                    reasoning_blocks=tuple(
                        ReasoningBlock(**b) for b in c.get("reasoning_blocks", ())
                    ),
                    tool_calls=tuple(
                        ToolUseBlock(id=t["id"], name=t["name"], input=t["input"])
                        for t in c.get("tool_calls", [])
                    ),
                )
                for c in data["choices"]
            ),
        )


@dataclass(frozen=True, kw_only=True)
class TextDelta:
    """A streamed piece of one choice's text (or of its reasoning: ``text`` is then empty)."""

    choice_index: int
    text: str
    reasoning: str = ""
    """A piece of :attr:`Choice.reasoning`; consumers that only read ``text`` skip it."""
    signature: str = ""
    """An Anthropic thinking block's signature: the block streamed so far ends here."""
    redacted_data: str = ""
    """A whole ``redacted_thinking`` block (Anthropic's encrypted reasoning)."""


@dataclass(frozen=True, kw_only=True)
class PromptUsage:
    """The prompt-side usage, known right after prefill (``output_tokens`` is 0).

    Optional: an engine emits it at most once, before any ``TextDelta``, so the
    Anthropic dialect can report input and cache counts in ``message_start``
    (the ``Result`` carries the final, authoritative usage).
    """

    usage: Usage
    prefix_miss: str | None = None
    """As :attr:`Result.prefix_miss`, known after prefill (a stream's headers carry it)."""


StreamEvent: TypeAlias = TextDelta | PromptUsage | Result
"""What engines stream: an optional ``PromptUsage``, zero or more ``TextDelta``,
then exactly one ``Result``."""


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    id: str
    owned_by: str = "promptcache"
    created: int = 0
    aliases: tuple[str, ...] = field(default=())


@dataclass(frozen=True, kw_only=True)
class PrefixCacheSnapshot:
    """Prefix (KV) cache figures for /metrics and /v1/cache/stats."""

    tokens_queried: int = 0
    tokens_hit: int = 0
    kv_bytes_used: int = 0
    kv_bytes_pinned: int = 0
    kv_bytes_budget: int = 0
    blocks_used: int = 0
    blocks_pinned: int = 0
    blocks_referenced: int = 0
    """Cached blocks held by in-flight requests right now: 0 at rest, or a reference leaked."""
    evictions: int = 0
    tiers: tuple[KVTierSnapshot, ...] = ()
    """Per storage tier (``ram``, then ``disk`` when the disk tier is on)."""


@dataclass(frozen=True, kw_only=True)
class KVTierSnapshot:
    """One KV storage tier's figures (``tier``: ``ram`` or ``disk``), blocks and bytes.

    ``hits``: blocks a match read from this tier. ``promotions``: blocks copied up
    into RAM from disk (the same count on both tiers). ``demotions``: blocks the RAM
    tier evicted and queued for disk (ram), blocks written to disk (disk: evicted
    ones and the write-through copies of new blocks). ``write_queue_drops``: blocks
    not written because the disk writer's queue was full. ``corrupt_blocks``: disk
    files refused by their checksum or metadata, never served."""

    tier: str
    bytes_used: int = 0
    bytes_budget: int = 0
    blocks: int = 0
    hits: int = 0
    promotions: int = 0
    demotions: int = 0
    evictions: int = 0
    write_queue_drops: int = 0
    corrupt_blocks: int = 0
    bytes_read: int = 0
    read_seconds: float = 0.0
    read_bytes_per_second: float = 0.0


@dataclass(frozen=True, kw_only=True)
class PinnedPrefix:
    """One named, pinned prefix (``/v1/cache/prefixes``) as an engine reports it; times are
    Unix seconds on the engine's named-prefix clock."""

    id: str
    model: str
    """The model name the prefix was created with (an alias as asked)."""
    name: str | None
    tokens: int
    """Tokens in the prefix (its rendering up to the end of its last block)."""
    cached_tokens: int
    """The pinned part: whole blocks, what a later request starting with the prefix reads."""
    ttl_seconds: float
    created_at: float
    expires_at: float
