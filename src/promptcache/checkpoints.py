"""Automatic cache checkpoints: placing ``cache_control`` breakpoints for the client.

Like LangChain's Anthropic/Bedrock prompt-caching middleware, but over the
canonical request so it works for both dialects. When enabled, breakpoints go
at the end of the three levels of the canonical prefix (tools -> system ->
messages):

1. on the last content block of the **last message** (covers the whole prompt,
   so the next turn of the conversation reads everything before it);
2. on the last **system** block (survives a change of conversation);
3. on the last **tool** (survives a change of system prompt).

Explicit breakpoints the client set are never moved or removed; automatic ones
only fill the free slots of the 4-breakpoint limit, in the priority above, and
never break Anthropic's rule that 1h breakpoints precede 5m ones: a 1h
checkpoint that would follow an explicit 5m one is placed as 5m, and a 5m
checkpoint that would precede an explicit 1h one is not placed (the explicit
one already caches that prefix for longer).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from promptcache.errors import RequestError
from promptcache.request import (
    MAX_BREAKPOINTS,
    Breakpoint,
    CacheControl,
    CacheTTL,
    ChatRequest,
    Message,
    TextBlock,
    Tool,
)

logger = logging.getLogger(__name__)

UnsupportedModelBehavior: TypeAlias = Literal["ignore", "warn", "raise"]
_BEHAVIORS = ("ignore", "warn", "raise")
_TTLS = ("5m", "1h")
_WARNED_MODELS_MAX = 1024
_warned_models: set[str] = set()
"""Models already warned about; bounded, so a client cycling model ids cannot grow it."""


@dataclass(frozen=True, kw_only=True)
class AutoCacheConfig:
    """Options of the automatic checkpoint planner (``promptcache serve --auto-cache``).

    ``min_messages_to_cache``: requests with fewer messages get no automatic
    checkpoint (short exchanges rarely repeat). ``unsupported_model_behavior``:
    what to do when the engine serving the model cannot honour breakpoints.
    """

    ttl: CacheTTL = "5m"
    min_messages_to_cache: int = 0
    unsupported_model_behavior: UnsupportedModelBehavior = "warn"

    def __post_init__(self) -> None:
        if self.ttl not in _TTLS:
            raise ValueError(f"ttl must be one of {', '.join(_TTLS)}; got {self.ttl!r}")
        if self.min_messages_to_cache < 0:
            raise ValueError(
                f"min_messages_to_cache must be >= 0, got {self.min_messages_to_cache}"
            )
        if self.unsupported_model_behavior not in _BEHAVIORS:
            raise ValueError(
                "unsupported_model_behavior must be one of "
                f"{', '.join(_BEHAVIORS)}; got {self.unsupported_model_behavior!r}"
            )


def plan_checkpoints(
    request: ChatRequest,
    config: AutoCacheConfig,
    *,
    model_supports_caching: bool | Callable[[str], bool] = True,
) -> ChatRequest:
    """Return ``request`` with automatic breakpoints added (or unchanged).

    ``model_supports_caching``: for every model, or asked per model name. Raises
    :class:`RequestError` when the model does not support prompt caching and
    ``unsupported_model_behavior`` is ``"raise"``.
    """
    supported = model_supports_caching
    if callable(supported):
        supported = supported(request.model)
    if not supported:
        return _unsupported(request, config)
    if len(request.messages) < config.min_messages_to_cache:
        return request
    explicit = request.breakpoints()
    planned = list(explicit)
    for candidate in _candidates(request, config.ttl):
        if len(planned) >= MAX_BREAKPOINTS:
            break
        if any(_same_place(candidate, p) for p in planned):
            continue
        fitted = _fit_ttl(candidate, planned)
        if fitted is not None:
            planned.append(fitted)
    added = [p for p in planned if p not in explicit]
    if not added:
        return request
    result = request
    for point in added:
        # Each step is validated as it is built (a subset of a valid plan is valid).
        result = _mark(result, point)
    return result


def _unsupported(request: ChatRequest, config: AutoCacheConfig) -> ChatRequest:
    message = (
        f"Model {request.model!r} does not support prompt caching with cache_control "
        "markers; no checkpoints added (an upstream that caches implicitly still does)."
    )
    if config.unsupported_model_behavior == "raise":
        raise RequestError(message, param="model")
    if config.unsupported_model_behavior == "warn" and request.model not in _warned_models:
        # Once per model, not per request (LangChain's middleware warns each call).
        if len(_warned_models) < _WARNED_MODELS_MAX:
            _warned_models.add(request.model)
        logger.warning(message)
    return request


def _candidates(request: ChatRequest, ttl: CacheTTL) -> list[Breakpoint]:
    points: list[Breakpoint] = []
    if request.messages and request.messages[-1].content:
        last = len(request.messages) - 1
        block = len(request.messages[last].content) - 1
        points.append(Breakpoint(section="messages", message=last, block=block, ttl=ttl))
    if request.system:
        points.append(
            Breakpoint(section="system", message=None, block=len(request.system) - 1, ttl=ttl)
        )
    if request.tools:
        points.append(
            Breakpoint(section="tools", message=None, block=len(request.tools) - 1, ttl=ttl)
        )
    return points


def _order(point: Breakpoint) -> tuple[int, int, int]:
    section = ("tools", "system", "messages").index(point.section)
    return (section, point.message if point.message is not None else -1, point.block)


def _same_place(a: Breakpoint, b: Breakpoint) -> bool:
    return _order(a) == _order(b)


def _fit_ttl(candidate: Breakpoint, planned: list[Breakpoint]) -> Breakpoint | None:
    """The candidate with a TTL that keeps 1h-before-5m order, or None if it can't fit."""
    before = [p for p in planned if _order(p) < _order(candidate)]
    after = [p for p in planned if _order(p) > _order(candidate)]
    if candidate.ttl == "1h" and any(p.ttl == "5m" for p in before):
        candidate = dataclasses.replace(candidate, ttl="5m")
    if candidate.ttl == "5m" and any(p.ttl == "1h" for p in after):
        return None
    return candidate


def _mark(request: ChatRequest, point: Breakpoint) -> ChatRequest:
    control = CacheControl(ttl=point.ttl)
    if point.section == "tools":
        tools: list[Tool] = list(request.tools)
        tools[point.block] = dataclasses.replace(tools[point.block], cache_control=control)
        return dataclasses.replace(request, tools=tuple(tools))
    if point.section == "system":
        system: list[TextBlock] = list(request.system)
        system[point.block] = dataclasses.replace(system[point.block], cache_control=control)
        return dataclasses.replace(request, system=tuple(system))
    if point.message is None:
        raise ValueError("a messages breakpoint must carry its message index")
    messages: list[Message] = list(request.messages)
    message = messages[point.message]
    content = list(message.content)
    content[point.block] = dataclasses.replace(content[point.block], cache_control=control)
    messages[point.message] = dataclasses.replace(message, content=tuple(content))
    return dataclasses.replace(request, messages=tuple(messages))
