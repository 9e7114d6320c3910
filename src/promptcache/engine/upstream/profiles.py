"""Upstream provider profiles: what each provider takes, and how it answers.

One frozen :class:`ProviderProfile` per provider decides the wire dialect,
which cache fields go out (Anthropic ``cache_control`` markers, OpenAI's
``prompt_cache_key`` / ``prompt_cache_retention``), which sampling parameters
the provider has no counterpart for (a 400 naming the parameter rather than an
answer that silently ignores it), how its usage report becomes
:class:`~promptcache.result.Usage`, and which pricing profile the cost ledger
applies to models the price table does not know.

``--upstream-provider`` picks one by name; :func:`detect_provider` recognises
the hosted APIs from their URL. Cache *hints* (``prompt_cache_key``,
``prompt_cache_retention``) only steer the provider's caching, so they are
dropped for providers without them; cache *markers* a provider cannot honour go
through :func:`unhonoured_markers` and the ``--unsupported-model-behavior``
policy of the engine.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

from promptcache.dialects.openai import wire_usage
from promptcache.request import ChatRequest, Message

ProviderName: TypeAlias = Literal[
    "openai",
    "openrouter",
    "anthropic",
    "glm",
    "deepseek",
    "vllm",
    "sglang",
    "llamacpp",
    "openai-compatible",
]
WireDialect: TypeAlias = Literal["openai", "anthropic"]

_ALL_MODELS = ("*",)


@dataclass(frozen=True, kw_only=True)
class ProviderProfile:
    """What one provider takes and reports (module docstring)."""

    name: ProviderName
    dialect: WireDialect
    hosts: tuple[str, ...] = ()
    """Host names (or their parent domains) that identify the provider in a URL."""
    marker_models: tuple[str, ...] = ()
    """Globs of the model ids that honour ``cache_control`` markers; empty: none do
    (the provider caches implicitly, by prefix)."""
    cache_hints: bool = False
    """Whether ``prompt_cache_key`` / ``prompt_cache_retention`` are sent."""
    lacking: frozenset[str] = frozenset()
    """Sampling parameters the provider has no counterpart for: a 400 names them."""
    renamed: Mapping[str, str] = field(default_factory=dict)
    """Body fields the provider spells differently (llama.cpp's ``repeat_penalty``)."""
    read_usage: wire_usage.UsageReader = wire_usage.openai_usage
    """Usage of an OpenAI-dialect response (the Anthropic dialect reads its own)."""
    pricing: str = "openai"
    """The cost ledger's pricing profile for models the price table does not list."""
    cached_tokens_note: str = ""
    """What the provider needs to report cached tokens at all (README, banner)."""

    def honours_markers(self, model: str) -> bool:
        """Whether ``model`` at this provider takes explicit ``cache_control`` markers
        (and so whether ``--auto-cache`` places them)."""
        name = model.lower()
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.marker_models)

    def matches_host(self, host: str) -> bool:
        host = host.lower()
        return any(host == h or host.endswith("." + h) for h in self.hosts)


# The sampling parameters of the canonical request that some providers lack.
_PENALTIES = frozenset({"frequency_penalty", "presence_penalty", "logit_bias"})
_LOCAL_SAMPLERS = frozenset({"top_k", "min_p", "repetition_penalty"})
_OPENAI_ONLY = frozenset({"reasoning_effort", "verbosity"})

OPENAI = ProviderProfile(
    name="openai",
    dialect="openai",
    hosts=("api.openai.com",),
    cache_hints=True,
    lacking=_LOCAL_SAMPLERS,
    pricing="openai",
)
OPENROUTER = ProviderProfile(
    name="openrouter",
    dialect="openai",
    hosts=("openrouter.ai",),
    # OpenRouter passes content-part cache_control on to Claude and Gemini (others
    # cache implicitly and would ignore it).
    marker_models=("anthropic/*", "google/gemini*"),
    read_usage=wire_usage.openrouter_usage,
    pricing="openai",
)
ANTHROPIC = ProviderProfile(
    name="anthropic",
    dialect="anthropic",
    hosts=("api.anthropic.com",),
    marker_models=_ALL_MODELS,
    pricing="anthropic",
)
GLM = ProviderProfile(
    name="glm",
    dialect="openai",
    hosts=("open.bigmodel.cn", "api.z.ai"),
    lacking=_LOCAL_SAMPLERS | _PENALTIES | _OPENAI_ONLY | {"seed"},
    pricing="glm",
)
DEEPSEEK = ProviderProfile(
    name="deepseek",
    dialect="openai",
    hosts=("api.deepseek.com",),
    lacking=_LOCAL_SAMPLERS | _OPENAI_ONLY | {"logit_bias", "seed"},
    read_usage=wire_usage.deepseek_usage,
    pricing="deepseek",
)
VLLM = ProviderProfile(
    name="vllm",
    dialect="openai",
    lacking=frozenset({"verbosity"}),
    pricing="local",
    cached_tokens_note="start vLLM with --enable-prompt-tokens-details",
)
SGLANG = ProviderProfile(
    name="sglang",
    dialect="openai",
    lacking=frozenset({"verbosity"}),
    pricing="local",
    cached_tokens_note="start SGLang with --enable-cache-report",
)
LLAMACPP = ProviderProfile(
    name="llamacpp",
    dialect="openai",
    lacking=_OPENAI_ONLY,
    renamed={"repetition_penalty": "repeat_penalty"},
    read_usage=wire_usage.llamacpp_usage,
    pricing="local",
)

OPENAI_COMPATIBLE = ProviderProfile(
    name="openai-compatible",
    dialect="openai",
    cache_hints=True,
    read_usage=wire_usage.compatible_usage,
    pricing="openai",
)
"""An OpenAI-compatible server of no known provider (no ``--upstream-provider``, a URL
that names none): every field is sent and every known cache field read, as before
profiles existed; markers are left out."""

PROFILES: Mapping[str, ProviderProfile] = {
    p.name: p for p in (OPENAI, OPENROUTER, ANTHROPIC, GLM, DEEPSEEK, VLLM, SGLANG, LLAMACPP)
}
PROVIDERS: tuple[str, ...] = tuple(PROFILES)


def profile_named(name: str) -> ProviderProfile:
    """The profile called ``name``; a ``ValueError`` listing the valid names otherwise."""
    if name == OPENAI_COMPATIBLE.name:  # not offered, but what a resolved config holds
        return OPENAI_COMPATIBLE
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown upstream provider {name!r}; valid: {', '.join(PROVIDERS)}"
        ) from None


def detect_provider(base_url: str) -> ProviderProfile | None:
    """The hosted provider ``base_url`` points at, or None when its host says nothing
    (a self-hosted engine, a private gateway)."""
    host = urlsplit(base_url).hostname or ""
    return next((p for p in PROFILES.values() if p.matches_host(host)), None)


def resolve_provider(
    base_url: str, provider: str | None, dialect: str | None = None
) -> ProviderProfile:
    """The profile for ``--upstream-provider`` (when given), else the one the URL names,
    else the plain profile of ``--upstream-dialect`` (:data:`OPENAI_COMPATIBLE`, or
    :data:`ANTHROPIC` toward a Messages API).

    An explicit provider whose dialect contradicts an explicit ``dialect`` is an error
    (the two options would disagree about the wire format)."""
    if provider:
        chosen = profile_named(provider)
        if dialect and dialect != chosen.dialect:
            raise ValueError(
                f"--upstream-provider {chosen.name} speaks the {chosen.dialect} API, but "
                f"--upstream-dialect {dialect} was given; leave --upstream-dialect out"
            )
        return chosen
    detected = detect_provider(base_url)
    if detected is not None and (not dialect or dialect == detected.dialect):
        return detected
    return ANTHROPIC if dialect == "anthropic" else OPENAI_COMPATIBLE


def unset_lacking(profile: ProviderProfile, request: ChatRequest) -> list[str]:
    """The parameters ``request`` sets that ``profile`` lacks, in a stable order."""
    sampling = request.sampling
    values = {f.name: getattr(sampling, f.name) for f in dataclasses.fields(sampling)}
    return sorted(name for name in profile.lacking if values.get(name) not in (None, ()))


def _keeps(profile: ProviderProfile, model: str) -> Callable[[str], bool]:
    """Whether a marker on a part of this kind ("top", "tool", "system", or a content
    block's type) reaches ``model`` at ``profile``."""
    honoured = profile.honours_markers(model)
    # An OpenAI-shaped body has no place for a marker on a tool definition or tool call.
    misplaced = ("tool", "tool_use") if profile.dialect == "openai" else ()
    return lambda kind: honoured and kind not in misplaced


def unhonoured_markers(profile: ProviderProfile, request: ChatRequest) -> list[str]:
    """Where ``request`` carries ``cache_control`` that ``profile`` cannot pass on for
    its model: every marker for a model without explicit caching, and toward an
    OpenAI-shaped API (OpenRouter) the markers on tool definitions and tool calls."""
    keeps = _keeps(profile, request.model)
    found: list[str] = []
    if request.cache_control is not None and not keeps("top"):
        found.append("cache_control")
    found += [
        f"tools[{i}].cache_control"
        for i, tool in enumerate(request.tools)
        if tool.cache_control is not None and not keeps("tool")
    ]
    found += [
        f"system[{i}].cache_control"
        for i, block in enumerate(request.system)
        if block.cache_control is not None and not keeps("system")
    ]
    found += [
        f"messages[{m}].content[{b}].cache_control"
        for m, message in enumerate(request.messages)
        for b, block in enumerate(message.content)
        if block.cache_control is not None and not keeps(block.type)
    ]
    return found


def without_markers(profile: ProviderProfile, request: ChatRequest) -> ChatRequest:
    """``request`` with the markers :func:`unhonoured_markers` lists removed."""
    keeps = _keeps(profile, request.model)

    def unmarked(message: Message) -> Message:
        content = tuple(
            b if keeps(b.type) else dataclasses.replace(b, cache_control=None)
            for b in message.content
        )
        return dataclasses.replace(message, content=content)

    return dataclasses.replace(
        request,
        tools=tuple(
            t if keeps("tool") else dataclasses.replace(t, cache_control=None)
            for t in request.tools
        ),
        system=tuple(
            b if keeps("system") else dataclasses.replace(b, cache_control=None)
            for b in request.system
        ),
        messages=tuple(unmarked(m) for m in request.messages),
        cache_control=request.cache_control if keeps("top") else None,
    )


__all__ = [
    "ANTHROPIC",
    "DEEPSEEK",
    "GLM",
    "LLAMACPP",
    "OPENAI",
    "OPENAI_COMPATIBLE",
    "OPENROUTER",
    "PROFILES",
    "PROVIDERS",
    "SGLANG",
    "VLLM",
    "ProviderName",
    "ProviderProfile",
    "detect_provider",
    "profile_named",
    "resolve_provider",
    "unhonoured_markers",
    "unset_lacking",
    "without_markers",
]
