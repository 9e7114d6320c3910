"""Which model names the server answers to, and the served model each resolves to.

The local engine serves one model under its id (``SmolLM2-135M-Instruct``)
and a few built-in aliases; names are matched case-insensitively. An engine
that lists no models (an upstream proxy that cannot enumerate them) accepts
any name and leaves it unchanged.

**Model aliases** (``promptcache serve --model-alias NAME=SERVED``, the
``PROMPTCACHE_MODEL_ALIASES`` variable, ``--model-alias-file``) add names of
the operator's choosing, so code written for a provider keeps its model name
(``gpt-3.5-turbo``, ``glm-4.6``, ``anthropic/claude-3.7-sonnet``); the name
``*`` answers every name no other entry matches. :meth:`ModelCatalog.resolve`
gives the *served* name, which goes into the cache keys (so every alias of
one model shares its response-cache entries and its KV blocks) and to the
engine; the response reports the name the client asked for, as vLLM's
``--served-model-name`` does.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from promptcache.dialects.base import Dialect
from promptcache.engine.base import Engine
from promptcache.engine.upstream.credentials import UpstreamCall, bind_call
from promptcache.errors import ModelNotFoundError, PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent

WILDCARD = "*"
"""The alias name that answers every otherwise unknown model name."""
ALIASES_ENV = "PROMPTCACHE_MODEL_ALIASES"
"""Comma-separated ``NAME=SERVED`` pairs, read by ``promptcache serve``."""


class ModelCatalog:
    """The served models, their built-in aliases and the operator's ``aliases``.

    ``aliases`` maps a name (or ``*``) to a served model's id or built-in
    alias; a target the engine does not serve is a ``ValueError`` here, so a
    typo fails at startup rather than on the first request. With an engine
    that lists no models every target is accepted as given (the upstream
    decides whether it exists).
    """

    def __init__(self, models: list[ModelInfo], aliases: Mapping[str, str] | None = None) -> None:
        self._open = not models
        self._by_name: dict[str, str] = {}
        for info in models:
            for name in (info.id, *info.aliases):
                self._by_name.setdefault(name.lower(), info.id)
        self._served = dict(self._by_name)
        self._wildcard: str | None = None
        added: dict[str, list[str]] = {}
        for name, target in (aliases or {}).items():
            served = self._target(name, target)
            if name.strip() == WILDCARD:
                self._wildcard = served
                continue
            existing = self._served.get(name.lower())
            if existing is not None:
                if existing != served:
                    raise ValueError(
                        f"model alias {name}={target}: {name!r} is served here already"
                    )
                continue  # a served name or built-in alias: it already answers
            self._by_name[name.lower()] = served
            added.setdefault(served, []).append(name)
        self.models = [
            replace(info, aliases=(*info.aliases, *added.get(info.id, ()))) for info in models
        ]
        # An open catalog (upstream) lists its aliases' targets as models of their own.
        self.models += [
            ModelInfo(id=target, aliases=tuple(names))
            for target, names in added.items()
            if self._open
        ]
        self.aliases: dict[str, str] = {
            name: self._by_name[name.lower()] for names in added.values() for name in names
        }
        """The operator's aliases that took effect, name -> served model (no ``*``)."""
        self.wildcard = self._wildcard
        """The served model every unknown name resolves to (``*=SERVED``), or None."""

    def _target(self, name: str, target: str) -> str:
        name, target = name.strip(), target.strip()
        if not name or not target:
            raise ValueError(f"model alias {name!r}={target!r}: both sides must be non-empty")
        if self._open:
            return target
        served = self._served.get(target.lower())
        if served is None:
            known = ", ".join(sorted({*self._served.values()}))
            raise ValueError(
                f"model alias {name}={target}: {target!r} is not served here (serving: {known})"
            )
        return served

    def listing(self, discovered: Iterable[ModelInfo]) -> list[ModelInfo]:
        """What ``GET /v1/models`` lists for an open catalog whose engine discovered
        ``discovered``: those models, each with the aliases that target it, then the
        alias targets it did not list."""
        by_target = {info.id: info.aliases for info in self.models}
        listed = [replace(m, aliases=(*m.aliases, *by_target.pop(m.id, ()))) for m in discovered]
        return listed + [info for info in self.models if info.id in by_target]

    def resolve(self, name: str) -> str:
        """The served model for ``name``, or :class:`ModelNotFoundError` (404)."""
        model_id = self._by_name.get(name.lower())
        if model_id is not None:
            return model_id
        if self._wildcard is not None:
            return self._wildcard
        if self._open:
            return name
        served = ", ".join(info.id for info in self.models)
        raise ModelNotFoundError(
            f"The model {name!r} does not exist on this server (serving: {served}; "
            "promptcache serve --model-alias NAME=SERVED answers to other names).",
            param="model",
        )


async def listed_models(
    catalog: ModelCatalog, engine: Engine, call: UpstreamCall
) -> list[ModelInfo]:
    """The models ``GET /v1/models`` lists: the catalog's, or -- for an engine that
    accepts any model and can ask its upstream (``discover_models``) -- the upstream's
    own list, asked with the caller's key when keys are forwarded, plus the aliases."""
    bound = bind_call(engine, call)
    discover = getattr(bound, "discover_models", None)
    if discover is None or not getattr(bound, "accepts_any_model", False):
        return catalog.models
    return catalog.listing(await discover())


def parse_alias(spec: str) -> tuple[str, str]:
    """``"gpt-3.5-turbo=SmolLM2-135M-Instruct"`` -> ``("gpt-3.5-turbo", "SmolLM2-...")``.

    The first ``=`` separates (model names never contain one); ``*=SERVED`` is
    the wildcard.
    """
    name, sep, target = spec.partition("=")
    name, target = name.strip(), target.strip()
    if not sep or not name or not target:
        raise ValueError(
            f"model alias {spec!r} is not NAME=SERVED (e.g. gpt-4o=SmolLM2-135M-Instruct)"
        )
    return name, target


def parse_aliases(specs: Iterable[str]) -> dict[str, str]:
    """Several ``NAME=SERVED`` specs, later ones winning; blanks are skipped."""
    aliases: dict[str, str] = {}
    for spec in specs:
        if spec.strip():
            name, target = parse_alias(spec)
            aliases[name] = target
    return aliases


def aliases_from_env(value: str | None) -> dict[str, str]:
    """``PROMPTCACHE_MODEL_ALIASES``: comma-separated ``NAME=SERVED`` pairs."""
    return parse_aliases((value or "").split(","))


def load_alias_file(path: Path) -> dict[str, str]:
    """A TOML or JSON file (by its suffix; ``.toml`` or else JSON) of the form
    ``{"aliases": {"gpt-3.5-turbo": "SmolLM2-135M-Instruct", "*": "..."}}``
    (TOML: an ``[aliases]`` table, names with ``/``, ``.`` or ``*`` quoted)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {exc}") from exc
    aliases = data.get("aliases") if isinstance(data, dict) else None
    if not isinstance(aliases, dict) or set(data) - {"aliases"}:
        raise ValueError(
            f'{path}: expected {{"aliases": {{"NAME": "SERVED", ...}}}} and nothing else'
        )
    for name, target in aliases.items():
        if not isinstance(target, str):
            raise ValueError(f"{path}: alias {name!r} must map to a model name, got {target!r}")
    return {str(name): target for name, target in aliases.items()}


class AsAsked:
    """A dialect that renders the model name the client asked for (an alias), not the
    served one: every body and stream frame says ``model: <asked>``. The route label
    (``name``) and the paths are the wrapped dialect's."""

    def __init__(self, dialect: Dialect, asked: str) -> None:
        self.dialect = dialect
        self.asked = asked

    @property
    def name(self) -> str:
        return self.dialect.name

    @property
    def chat_path(self) -> str:
        return self.dialect.chat_path

    @property
    def client_header(self) -> str | None:
        return self.dialect.client_header

    def parse_request(self, body: Any, *, tenant: str = "", namespace: str = "") -> ChatRequest:
        return self.dialect.parse_request(body, tenant=tenant, namespace=namespace)

    def render_response(self, result: Result, request: ChatRequest) -> dict[str, Any]:
        shown = replace(request, model=self.asked)
        return self.dialect.render_response(replace(result, model=self.asked), shown)

    def render_stream(
        self, events: AsyncIterator[StreamEvent], request: ChatRequest
    ) -> AsyncIterator[bytes]:
        return self.dialect.render_stream(events, replace(request, model=self.asked))

    def stream_error_frame(self, error: PromptCacheError) -> bytes:
        return self.dialect.stream_error_frame(error)

    def render_error(self, error: PromptCacheError) -> tuple[int, dict[str, Any]]:
        return self.dialect.render_error(error)

    def render_models(self, models: list[ModelInfo]) -> dict[str, Any]:
        return self.dialect.render_models(models)

    def __getattr__(self, name: str) -> Any:
        # Anything else a dialect offers (e.g. Bedrock's media type) is the wrapped one's.
        return getattr(self.dialect, name)
