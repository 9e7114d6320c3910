"""A canonical request shaped for one provider (its :class:`ProviderProfile`): the
parameters it lacks refused, the cache markers it cannot take handled by the
``unsupported_model_behavior`` policy, and the wire body built."""

from __future__ import annotations

import logging
from typing import Any

from promptcache.dialects.anthropic import wire as anthropic_wire
from promptcache.dialects.openai import wire as openai_wire
from promptcache.engine.upstream.profiles import (
    ProviderProfile,
    unhonoured_markers,
    unset_lacking,
    without_markers,
)
from promptcache.errors import RequestError
from promptcache.request import ChatRequest

BEHAVIORS = ("ignore", "warn", "raise")
_WARNED_MODELS_MAX = 1024
"""Models remembered as warned about (so a client cycling model ids cannot grow it)."""
logger = logging.getLogger(__name__)


def refuse_lacking(profile: ProviderProfile, request: ChatRequest) -> ChatRequest:
    """``request``, or a 400 naming the first parameter it sets that ``profile`` lacks
    (sent anyway, it would be ignored and the answer would differ without a word)."""
    for name in unset_lacking(profile, request):
        raise RequestError(
            f"'{name}' cannot be sent to the {profile.name} upstream: it has no such "
            "parameter and would answer as if it were not set. Leave it out.",
            param=name,
        )
    return request


class MarkerPolicy:
    """``unsupported_model_behavior`` for ``cache_control`` a provider cannot take:
    "ignore" drops it, "warn" drops it with one warning per model, "raise" refuses
    the request. Markers only steer caching: dropping them never changes an answer."""

    def __init__(self, behavior: str) -> None:
        if behavior not in BEHAVIORS:
            raise ValueError(
                f"unsupported_model_behavior must be one of {', '.join(BEHAVIORS)}, "
                f"got {behavior!r}"
            )
        self.behavior = behavior
        self._warned: set[str] = set()

    def apply(self, profile: ProviderProfile, request: ChatRequest) -> ChatRequest:
        found = unhonoured_markers(profile, request)
        if not found:
            return request
        what = (
            f"the {profile.name} upstream takes no cache_control for model "
            f"{request.model!r} (it caches prompts implicitly, or has no place for it)"
        )
        if self.behavior == "raise":
            raise RequestError(
                f"cache_control ({', '.join(found[:3])}) cannot be honoured: {what}. "
                "Remove the markers, or start the server with "
                "--unsupported-model-behavior ignore or warn.",
                param="cache_control",
            )
        if self.behavior == "warn" and request.model not in self._warned:
            if len(self._warned) < _WARNED_MODELS_MAX:
                self._warned.add(request.model)
            logger.warning("cache_control dropped: %s (warned once per model).", what)
        return without_markers(profile, request)


def wire_body(
    profile: ProviderProfile, request: ChatRequest, *, stream: bool, default_max_tokens: int
) -> dict[str, Any]:
    """The body ``profile``'s API takes for ``request`` (already refused / unmarked)."""
    if profile.dialect == "anthropic":
        return anthropic_wire.to_wire_request(
            request, stream=stream, default_max_tokens=default_max_tokens
        )
    body = openai_wire.to_wire_request(
        request,
        stream=stream,
        cache_markers=profile.honours_markers(request.model),
        cache_hints=profile.cache_hints,
    )
    for name, spelled in profile.renamed.items():
        if name in body:
            body[spelled] = body.pop(name)
    return body
