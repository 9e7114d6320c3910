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
from promptcache.request import ChatRequest, Thinking

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


def thinking_fields(profile: ProviderProfile, thinking: Thinking) -> dict[str, Any]:
    """The body fields that carry the reasoning switch to an OpenAI-shaped ``profile``
    (the Anthropic dialect sends its own ``thinking``), or a 400 naming ``thinking``
    and the provider where it has no way to take it -- sent anyway, it would be
    ignored (vLLM and SGLang drop unknown fields; ``chat_template_kwargs`` switches
    differ per model template) and the answer would not say so."""
    takes = _THINKING_TAKES.get(profile.name)
    if takes is None:
        hint = " (OpenAI's own switch is reasoning_effort)" if profile.name == "openai" else ""
        raise RequestError(
            f"'thinking' cannot be sent to the {profile.name} upstream: it takes no "
            f"reasoning switch in this shape{hint}, and would answer as if it were not "
            "set. Leave it out.",
            param="thinking",
        )
    lacking = [
        part
        for part, present in (
            (f"type '{thinking.mode}'", thinking.mode in ("adaptive", "between_tools")),
            ("budget_tokens", thinking.budget_tokens is not None and profile.name == "glm"),
            ("display", thinking.display is not None),
        )
        if present
    ]
    if lacking:
        raise RequestError(
            f"'thinking' ({', '.join(lacking)}) cannot be sent to the {profile.name} "
            f"upstream: it has no such setting. {takes}",
            param="thinking",
        )
    if profile.name == "glm":
        return {"thinking": {"type": thinking.mode}}
    # OpenRouter's unified switch: a token budget (Anthropic-style) or on/off.
    if thinking.budget_tokens is not None:
        return {"reasoning": {"max_tokens": thinking.budget_tokens}}
    return {"reasoning": {"enabled": thinking.mode == "enabled"}}


_THINKING_TAKES = {
    "glm": 'GLM takes {"type": "enabled"} or {"type": "disabled"} only.',
    "openrouter": "OpenRouter takes enabled (with or without budget_tokens) or disabled.",
}


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
    if request.sampling.thinking is not None:
        body.update(thinking_fields(profile, request.sampling.thinking))
    for name, spelled in profile.renamed.items():
        if name in body:
            body[spelled] = body.pop(name)
    return body
