"""The canonical request and its cache breakpoints (what an engine returns: ``result.py``).

Every entry point (Python API, OpenAI dialect, Anthropic dialect, LangChain)
builds one :class:`ChatRequest` before anything else happens; caches, engines
and pricing only ever see these plain, frozen dataclasses.

The canonical prefix order is **tools -> system -> messages** (as at
Anthropic): a change at one level invalidates that level and every later one.
OpenAI-style tool calls and tool results are folded into Anthropic-style
content blocks (``ToolUseBlock`` on the assistant message, ``ToolResultBlock``
on a user message) so both dialects share one form.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, TypeAlias

from promptcache.errors import RequestError

CacheTTL: TypeAlias = Literal["5m", "1h"]
TTL_SECONDS: Mapping[str, int] = {"5m": 300, "1h": 3600}
MAX_BREAKPOINTS = 4
PinTTL: TypeAlias = Literal["5m", "1h", "24h"]
"""How long the prefix cache may pin a prefix: a breakpoint's TTL, or ``24h`` for OpenAI's
``prompt_cache_retention`` (never a valid ``cache_control.ttl``)."""
PIN_TTL_SECONDS: Mapping[str, int] = {**TTL_SECONDS, "24h": 86400}

OMIT_WHEN_DEFAULT: Mapping[str, bool] = {"omit_when_default": True}
"""Dataclass field metadata: the field is left out of the cache key's canonical JSON
while it has its default value (fields added without changing existing keys)."""

JSONValue: TypeAlias = Any
"""A JSON-compatible value (dict/list/str/int/float/bool/None)."""


@dataclass(frozen=True, kw_only=True)
class CacheControl:
    """Anthropic's ``{"type": "ephemeral", "ttl": "5m"|"1h"}`` marker."""

    type: Literal["ephemeral"] = "ephemeral"
    ttl: CacheTTL = "5m"

    @property
    def ttl_seconds(self) -> int:
        return TTL_SECONDS[self.ttl]


@dataclass(frozen=True, kw_only=True)
class TextBlock:
    text: str
    cache_control: CacheControl | None = None
    type: Literal["text"] = "text"


@dataclass(frozen=True, kw_only=True)
class ImageBlock:
    """An image by URL or inline base64 data (``source`` as in either dialect)."""

    source: Mapping[str, JSONValue]
    cache_control: CacheControl | None = None
    type: Literal["image"] = "image"


@dataclass(frozen=True, kw_only=True)
class ToolUseBlock:
    """A tool call made by the assistant (OpenAI ``tool_calls[i]``)."""

    id: str
    name: str
    input: Mapping[str, JSONValue]
    cache_control: CacheControl | None = None
    type: Literal["tool_use"] = "tool_use"


@dataclass(frozen=True, kw_only=True)
class ToolResultBlock:
    """The result of a tool call (OpenAI ``role: "tool"`` message)."""

    tool_use_id: str
    content: tuple[TextBlock | ImageBlock, ...] = ()
    is_error: bool = False
    cache_control: CacheControl | None = None
    type: Literal["tool_result"] = "tool_result"


ContentBlock: TypeAlias = TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock


@dataclass(frozen=True, kw_only=True)
class ReasoningBlock:
    """One of Anthropic's thinking blocks, kept whole so it can go back to Anthropic
    verified: ``thinking`` text with its ``signature``, or a ``redacted_thinking``
    block's encrypted ``redacted_data`` (then ``thinking`` is empty)."""

    thinking: str = ""
    signature: str = ""
    redacted_data: str | None = None


@dataclass(frozen=True, kw_only=True)
class Message:
    role: Literal["user", "assistant"]
    content: tuple[ContentBlock, ...]
    reasoning: tuple[ReasoningBlock, ...] = field(default=(), metadata=OMIT_WHEN_DEFAULT)
    """An assistant turn's signed thinking blocks as the client sent them back (they
    precede its content). Only an Anthropic upstream reads them -- it requires them
    with tool use in extended thinking; every other engine leaves them out, as
    Anthropic drops earlier turns' thinking from the context. In the key only when set."""

    def text(self) -> str:
        """The concatenated text blocks (tool blocks and images excluded)."""
        return "".join(b.text for b in self.content if isinstance(b, TextBlock))


@dataclass(frozen=True, kw_only=True)
class Tool:
    name: str
    description: str = ""
    input_schema: Mapping[str, JSONValue] = field(default_factory=dict)
    cache_control: CacheControl | None = None


ThinkingMode: TypeAlias = Literal["enabled", "disabled", "adaptive", "between_tools"]


@dataclass(frozen=True, kw_only=True)
class Thinking:
    """The reasoning switch: Anthropic's and GLM's ``thinking`` (Bedrock Converse's
    ``additionalModelRequestFields.thinking``), one canonical form.

    ``enabled`` with ``budget_tokens`` (Anthropic's extended thinking; GLM takes no
    budget), ``adaptive`` (the model decides how much; Anthropic's), ``between_tools``
    (Anthropic's: thinking off, progress notes between tool calls as thinking blocks)
    or ``disabled``.
    Each upstream provider gets it in its own shape or refuses it by name
    (``engine/upstream/shaping.py``); the local engine's model has no thinking mode, so
    only ``disabled`` applies there. Provider limits (Anthropic's ``budget_tokens >=
    1024`` and ``< max_tokens``) are the provider's to enforce: its 400 comes back."""

    mode: ThinkingMode
    budget_tokens: int | None = None
    display: Literal["summarized", "omitted"] | None = None
    """Anthropic's: whether the thinking text is returned (summarised) or left out."""


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """Decoding parameters. ``temperature`` 0 (or None with ``top_p`` None) is greedy."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    n: int = 1
    # Added after the key format was fixed: each is left out of the cache key while it
    # has its neutral value (see keys.py), and normalised to it here when it has no effect.
    frequency_penalty: float | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """OpenAI's: ``logit -= count * frequency_penalty`` over the generated tokens."""
    presence_penalty: float | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """OpenAI's: ``logit -= presence_penalty`` for each token generated at least once."""
    logit_bias: tuple[tuple[int, float], ...] = field(default=(), metadata=OMIT_WHEN_DEFAULT)
    """``(token_id, bias)`` pairs added to the logits (-100..100), sorted by token id."""
    top_k: int | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """Sample from the ``top_k`` most likely tokens only (ties at the k-th kept)."""
    min_p: float | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """Drop tokens less likely than ``min_p`` times the most likely one."""
    repetition_penalty: float | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """CTRL's / vLLM's: logits of tokens in the prompt or output divided (if > 0) or
    multiplied (if < 0) by it."""
    reasoning_effort: str | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """OpenAI's, for models that reason: how much; a model that does not reason refuses it."""
    verbosity: str | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """OpenAI's (GPT-5 family): how long the answer is; refused by models without it."""
    thinking: Thinking | None = field(default=None, metadata=OMIT_WHEN_DEFAULT)
    """The reasoning switch (:class:`Thinking`); ``None``: the model's own default."""

    def __post_init__(self) -> None:
        # Neutral values mean "unset", so they share the unset request's key.
        if self.frequency_penalty == 0:
            object.__setattr__(self, "frequency_penalty", None)
        if self.presence_penalty == 0:
            object.__setattr__(self, "presence_penalty", None)
        if self.top_k is not None and self.top_k <= 0:  # 0 / -1: disabled (vLLM, HF)
            object.__setattr__(self, "top_k", None)
        if self.min_p == 0:
            object.__setattr__(self, "min_p", None)
        if self.repetition_penalty == 1:
            object.__setattr__(self, "repetition_penalty", None)
        bias = dict(self.logit_bias)  # the last of repeated token ids wins
        object.__setattr__(
            self,
            "logit_bias",
            tuple((int(t), float(b)) for t, b in sorted(bias.items()) if b != 0),
        )

    @property
    def processes_logits(self) -> bool:
        """True when a penalty or bias changes the logits (greedy decoding applies them too)."""
        return bool(
            self.frequency_penalty is not None
            or self.presence_penalty is not None
            or self.logit_bias
            or self.repetition_penalty is not None
        )

    @property
    def greedy(self) -> bool:
        """Temperature 0, or neither temperature nor top_p given (top_p alone samples)."""
        if self.temperature is not None:
            return self.temperature == 0.0
        return self.top_p is None


@dataclass(frozen=True, kw_only=True)
class Transport:
    """Fields that never affect caching: they are dropped from every cache key."""

    stream: bool = False
    include_usage: bool = False
    request_id: str | None = None
    user: str | None = None
    metadata: Mapping[str, JSONValue] | None = None
    diagnostics: bool = False
    """Anthropic's cache diagnostics asked for (a ``diagnostics`` object was sent)."""
    previous_message_id: str | None = None
    """``diagnostics.previous_message_id``: the response to compare this prompt against."""
    prompt_cache_key: str | None = None
    """OpenAI's routing hint: forwarded to an OpenAI-compatible upstream; it never changes
    an answer (the local engine's prefix cache matches by content anyway)."""
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    """OpenAI's: ``"24h"`` pins the prompt's cached prefix for 24 hours locally (under the
    pin cap) and is forwarded to an OpenAI-compatible upstream."""


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    system: tuple[TextBlock, ...] = ()
    tools: tuple[Tool, ...] = ()
    sampling: SamplingParams = field(default_factory=SamplingParams)
    response_format: Mapping[str, JSONValue] | None = None
    tool_choice: JSONValue = None
    tenant: str = ""
    """Isolation domain (an API key's identity); part of every cache key and the KV salt."""
    namespace: str = ""
    """User-chosen response-cache partition (``x-promptcache-namespace``)."""
    transport: Transport = field(default_factory=Transport)
    cache_control: CacheControl | None = field(default=None, metadata={"omit_when_default": True})
    """Automatic caching (Anthropic's top-level ``cache_control``): one breakpoint on the
    last cacheable block, which moves forward as the conversation grows. Counted with
    the explicit markers in :meth:`breakpoints`; left out of the cache key when None."""

    def __post_init__(self) -> None:
        # Validated once, when the request is built (by a dialect, the planner or
        # a library caller): a request that exists obeys the breakpoint rules. Kept
        # outside the dataclass fields, so neither equality nor cache keys see it.
        points = tuple(_iter_breakpoints(self))
        validate_breakpoints(points)
        object.__setattr__(self, "_breakpoints", points)

    def breakpoints(self) -> tuple[Breakpoint, ...]:
        """The ``cache_control`` breakpoints, in canonical order: the explicit markers,
        then the automatic one (top-level ``cache_control``) unless it falls on an
        explicitly marked block. Validated when the request was built: at most 4,
        every 1h one before any 5m one."""
        points: tuple[Breakpoint, ...] = self.__dict__["_breakpoints"]
        return points


@dataclass(frozen=True, kw_only=True)
class Breakpoint:
    """A cache breakpoint at the end of one block of the canonical prefix.

    ``message`` is the message index for ``section == "messages"`` (else None);
    ``block`` is the tool index, system block index, or content block index.
    """

    section: Literal["tools", "system", "messages"]
    message: int | None
    block: int
    ttl: CacheTTL

    @property
    def ttl_seconds(self) -> int:
        return TTL_SECONDS[self.ttl]


class BreakpointPosition(NamedTuple):
    """A breakpoint located in the rendered prompt: the cached prefix is the first
    ``position`` tokens, kept for ``ttl``. The one type every layer passes
    breakpoints on as once they have token positions (prompt rendering, the
    prefix cache's pins, usage accounting)."""

    position: int
    ttl: CacheTTL


def _iter_breakpoints(request: ChatRequest) -> Iterator[Breakpoint]:
    yield from _explicit_breakpoints(request)
    if request.cache_control is not None:
        automatic = automatic_breakpoint(request, request.cache_control.ttl)
        if automatic is not None:
            explicit = _block_marker(request, automatic)
            if explicit is None:
                yield automatic
            elif explicit.ttl != automatic.ttl:
                raise RequestError(
                    f"The top-level cache_control (ttl='{automatic.ttl}') falls on a block "
                    f"that already has cache_control with ttl='{explicit.ttl}'.",
                    param="cache_control",
                )


def automatic_breakpoint(request: ChatRequest, ttl: CacheTTL) -> Breakpoint | None:
    """Where automatic caching puts its breakpoint: the last cacheable block in
    tools -> system -> messages order (the last content block of the last message
    that has one, else the last system block, else the last tool), or None."""
    for m in range(len(request.messages) - 1, -1, -1):
        content = request.messages[m].content
        if content:
            return Breakpoint(section="messages", message=m, block=len(content) - 1, ttl=ttl)
    if request.system:
        return Breakpoint(section="system", message=None, block=len(request.system) - 1, ttl=ttl)
    if request.tools:
        return Breakpoint(section="tools", message=None, block=len(request.tools) - 1, ttl=ttl)
    return None


def _block_marker(request: ChatRequest, point: Breakpoint) -> CacheControl | None:
    if point.section == "tools":
        return request.tools[point.block].cache_control
    if point.section == "system":
        return request.system[point.block].cache_control
    assert point.message is not None
    return request.messages[point.message].content[point.block].cache_control


def _explicit_breakpoints(request: ChatRequest) -> Iterator[Breakpoint]:
    for i, tool in enumerate(request.tools):
        if tool.cache_control is not None:
            yield Breakpoint(section="tools", message=None, block=i, ttl=tool.cache_control.ttl)
    for i, sys_block in enumerate(request.system):
        if sys_block.cache_control is not None:
            yield Breakpoint(
                section="system", message=None, block=i, ttl=sys_block.cache_control.ttl
            )
    for m, message in enumerate(request.messages):
        for i, block in enumerate(message.content):
            if block.cache_control is not None:
                yield Breakpoint(
                    section="messages", message=m, block=i, ttl=block.cache_control.ttl
                )


def validate_breakpoints(points: tuple[Breakpoint, ...]) -> None:
    """Anthropic's rules: at most 4 breakpoints, and every 1h one before any 5m one."""
    if len(points) > MAX_BREAKPOINTS:
        raise RequestError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(points)}.",
            param="cache_control",
        )
    seen_short = False
    for point in points:
        if point.ttl == "5m":
            seen_short = True
        elif seen_short:
            raise RequestError(
                "A cache_control block with ttl='1h' must not come after one with "
                "ttl='5m' (order is tools, system, messages).",
                param="cache_control",
            )
