"""Named, pinned prefixes over HTTP: ``/v1/cache/prefixes`` (Gemini's cached contents).

* ``POST /v1/cache/prefixes`` -- a prompt prefix in either dialect's shape,
  prefilled and pinned for ``ttl``: OpenAI's ``{"model", "messages", "tools"?}``
  or Anthropic's ``{"model", "system"?, "messages", "tools"?}``, plus ``"ttl"``
  (seconds, or ``"90s"``/``"5m"``/``"1h"``/``"24h"``/``"7d"``; default 1h, at
  most 7d), an optional ``"name"`` (a label shown back) and an optional
  ``"format": "openai" | "anthropic"``. Without ``format`` the shape decides: a
  top-level ``system`` member, or the ``anthropic-version`` header the
  Anthropic SDK sends, means Anthropic; anything else is OpenAI. Errors come
  in the chosen dialect's body.
* ``GET /v1/cache/prefixes`` -- the calling tenant's prefixes;
  ``GET``/``PATCH {"ttl"}``/``DELETE /v1/cache/prefixes/{id}`` -- one of them
  (an id of another tenant's prefix is a 404, as an unknown one is). Errors in
  the dialect of the SDK's headers (``anthropic-version``: Anthropic; else OpenAI).

Any other member is a 400 naming it: a prefix has no sampling parameters, and
``cache_control`` inside it is refused (the whole prefix is pinned). The pinned
tokens are the chat-template rendering up to the end of the last block, so a
chat request that continues the same messages reads them
(``engine/local/named_prefixes.py``). Engines without a KV cache (upstream) answer 400.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects.anthropic import ANTHROPIC
from promptcache.dialects.base import Dialect, HTTPStatusError
from promptcache.dialects.openai import OPENAI
from promptcache.engine.base import Engine, no_named_prefixes
from promptcache.errors import PromptCacheError, RequestError, RequestTimeoutError
from promptcache.request import ChatRequest
from promptcache.result import PinnedPrefix
from promptcache.server.flow import ChatFlow
from promptcache.server.json_body import check_content_type, decode_json_body
from promptcache.server.limits import read_body
from promptcache.server.models import ModelCatalog
from promptcache.server.responses import error_response, json_response
from promptcache.server.routes import dialect_for_headers

if TYPE_CHECKING:  # the prefix package needs torch; a proxy server runs without it
    from promptcache.prefix.named import NamedPrefixes

PATH = "/v1/cache/prefixes"
ROUTE = "cache_prefixes"
"""The route label in ``promptcache_requests_total``."""
FORMATS: Mapping[str, Dialect] = {"openai": OPENAI, "anthropic": ANTHROPIC}
_OWN_MEMBERS = frozenset({"ttl", "format", "name"})
_CHAT_MEMBERS = {
    "openai": frozenset({"model", "messages", "tools"}),
    "anthropic": frozenset({"model", "system", "messages", "tools"}),
}
MAX_NAME_CHARS = 256
DEFAULT_TTL_SECONDS = 3600.0
"""A prefix created without a ``ttl`` is pinned for an hour (Gemini's default)."""
MAX_TTL_SECONDS = 7 * 86400.0
"""The longest ``ttl`` accepted: a pin is a share of the cache taken from every other prompt."""
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_ttl(value: object) -> float:
    """``ttl`` as seconds: a number of seconds or ``"<number><s|m|h|d>"`` (``"90s"``,
    ``"5m"``, ``"1h"``, ``"24h"``, ``"7d"``), above 0 and at most :data:`MAX_TTL_SECONDS`.
    Raises ValueError saying what is accepted."""
    if isinstance(value, bool):
        seconds = math.nan
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (found := _DURATION.match(value)):
        seconds = float(found.group(1)) * _UNITS[found.group(2)]
    else:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TTL_SECONDS):
        raise ValueError(
            f"ttl must be a number of seconds or a duration such as '300s', '5m', '1h' or "
            f"'24h', above 0 and at most {MAX_TTL_SECONDS:g} seconds (7d); got {value!r}"
        )
    return seconds


@dataclass(frozen=True, kw_only=True)
class PrefixSpec:
    """A parsed ``POST`` body (or ``--warm`` line): what to pin, for whom, for how long."""

    request: ChatRequest
    """Canonical, its model the served one, its tenant the caller's."""
    model: str
    """The model name as asked (an alias stays an alias in what is shown)."""
    ttl_seconds: float
    name: str | None
    dialect: Dialect


def choose_dialect(data: Any, headers: Mapping[str, str]) -> Dialect:
    """The body's dialect: ``format`` if given, else its shape, else the SDK's headers."""
    if isinstance(data, dict):
        asked = data.get("format")
        if asked is not None:
            if isinstance(asked, str) and asked in FORMATS:
                return FORMATS[asked]
            raise RequestError(
                f"format must be one of {', '.join(map(repr, FORMATS))}; got {asked!r}",
                param="format",
            )
        if "system" in data:
            return ANTHROPIC
    return dialect_for_headers(headers)


def parse_prefix_body(
    data: Any, *, tenant: str, catalog: ModelCatalog, dialect: Dialect
) -> PrefixSpec:
    """A prefix body in ``dialect``'s shape (see the module docs) as a :class:`PrefixSpec`;
    raises RequestError (400) or ModelNotFoundError (404) in that dialect's terms."""
    if not isinstance(data, dict):
        raise RequestError("The body must be a JSON object.")
    allowed = _CHAT_MEMBERS[dialect.name] | _OWN_MEMBERS
    for member in data:
        if member not in allowed:
            raise RequestError(
                f"{member!r} is not accepted in a prefix (accepted: "
                f"{', '.join(sorted(allowed))}): a prefix is only prompt content, pinned "
                "whole; send sampling parameters with the chat requests that use it.",
                param=str(member),
            )
    ttl = data.get("ttl")
    try:
        ttl_seconds = DEFAULT_TTL_SECONDS if ttl is None else parse_ttl(ttl)
    except ValueError as exc:
        raise RequestError(str(exc), param="ttl") from None
    name = data.get("name")
    if name is not None and not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS):
        raise RequestError(
            f"name must be a string of 1 to {MAX_NAME_CHARS} characters", param="name"
        )
    chat = {key: value for key, value in data.items() if key not in _OWN_MEMBERS}
    if dialect.name == "anthropic":
        chat["max_tokens"] = 1  # required by the Messages shape; nothing is generated
        if "messages" not in chat and ("system" in chat or "tools" in chat):
            chat["messages"] = []
    request = dialect.parse_request(chat, tenant=tenant)
    served = catalog.resolve(request.model)
    return PrefixSpec(
        request=replace(request, model=served),
        model=request.model,
        ttl_seconds=ttl_seconds,
        name=name,
        dialect=dialect,
    )


def prefix_json(prefix: PinnedPrefix) -> dict[str, Any]:
    ttl = prefix.ttl_seconds
    return {
        "id": prefix.id,
        "object": "cache.prefix",
        "model": prefix.model,
        "name": prefix.name,
        "tokens": prefix.tokens,
        "cached_tokens": prefix.cached_tokens,
        "ttl": int(ttl) if ttl == int(ttl) else ttl,
        "created_at": int(prefix.created_at),
        "expires_at": int(prefix.expires_at),
    }


async def pin(engine: Engine, spec: PrefixSpec, *, timeout: float | None) -> PinnedPrefix:
    """Prefill and pin ``spec`` (a 504 past ``timeout`` seconds, nothing left pinned)."""
    try:
        async with asyncio.timeout(timeout):
            return await engine.pin_prefix(
                spec.request, ttl_seconds=spec.ttl_seconds, name=spec.name, model=spec.model
            )
    except TimeoutError:
        raise RequestTimeoutError(
            f"Pinning the prefix did not finish within the server's {timeout:g} s deadline "
            "(promptcache serve --request-timeout)."
        ) from None


def register(app: Starlette, flow: ChatFlow) -> None:
    """The prefix routes, served with ``flow``'s engine, keys, models and limits."""

    def registry() -> NamedPrefixes:
        found = flow.engine.named_prefixes
        if found is None:
            raise no_named_prefixes(flow.engine)
        return found

    async def create(http: Request) -> Response:
        dialect = dialect_for_headers(http.headers)
        try:
            tenant = flow.keyring.tenant(http.headers)
            registry()  # an engine without a KV cache says so before any work
            body = await read_body(http, limit=flow.config.max_body_bytes)
            check_content_type(http.headers.get("content-type"))
            data = decode_json_body(body)
            dialect = choose_dialect(data, http.headers)
            spec = parse_prefix_body(data, tenant=tenant, catalog=flow.catalog, dialect=dialect)
            prefix = await pin(flow.engine, spec, timeout=flow.config.request_timeout)
        except PromptCacheError as error:
            return error_response(dialect, error)
        return json_response(prefix_json(prefix))

    async def listing(http: Request) -> Response:
        def answer(tenant: str) -> Response:
            data = [prefix_json(prefix) for prefix in registry().list(tenant)]
            return json_response({"object": "list", "data": data})

        return _answer(http, answer)

    async def one(http: Request) -> Response:
        prefix_id = http.path_params["prefix_id"]
        return _answer(http, lambda tenant: _found(registry().get(tenant, prefix_id), prefix_id))

    async def retime(http: Request) -> Response:
        prefix_id = http.path_params["prefix_id"]
        dialect = dialect_for_headers(http.headers)
        try:
            tenant = flow.keyring.tenant(http.headers)
            body = await read_body(http, limit=flow.config.max_body_bytes)
            check_content_type(http.headers.get("content-type"))
            ttl_seconds = _patch_ttl(decode_json_body(body))
            prefix = registry().retime(tenant, prefix_id, ttl_seconds)
            return _found(prefix, prefix_id)
        except PromptCacheError as error:
            return error_response(dialect, error)

    async def delete(http: Request) -> Response:
        prefix_id = http.path_params["prefix_id"]

        def answer(tenant: str) -> Response:
            if registry().remove(tenant, prefix_id) is None:
                raise _not_found(prefix_id)
            return json_response(
                {"id": prefix_id, "object": "cache.prefix.deleted", "deleted": True}
            )

        return _answer(http, answer)

    def _answer(http: Request, answer: Callable[[str], Response]) -> Response:
        dialect = dialect_for_headers(http.headers)
        try:
            return answer(flow.keyring.tenant(http.headers))
        except PromptCacheError as error:
            return error_response(dialect, error)

    for path, endpoint, methods in (
        (PATH, create, ["POST"]),
        (PATH, listing, ["GET"]),
        (PATH + "/{prefix_id}", one, ["GET"]),
        (PATH + "/{prefix_id}", retime, ["PATCH"]),
        (PATH + "/{prefix_id}", delete, ["DELETE"]),
    ):
        app.add_route(path, _counted(flow, endpoint), methods=methods)


def _counted(
    flow: ChatFlow, endpoint: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def counted(http: Request) -> Response:
        response = await endpoint(http)
        flow.metrics.count_request(ROUTE, response.status_code)
        return response

    counted.__name__ = f"prefixes_{endpoint.__name__}"
    return counted


def _patch_ttl(data: Any) -> float:
    if not isinstance(data, dict) or "ttl" not in data:
        raise RequestError("A PATCH body is {\"ttl\": <seconds or '5m'/'1h'/...>}.", param="ttl")
    for member in data:
        if member != "ttl":
            raise RequestError(
                f"{member!r} cannot be changed: only a prefix's ttl can (delete and create "
                "the prefix again to change its content).",
                param=str(member),
            )
    try:
        return parse_ttl(data["ttl"])
    except ValueError as exc:
        raise RequestError(str(exc), param="ttl") from None


def _not_found(prefix_id: str) -> HTTPStatusError:
    return HTTPStatusError(f"No such prefix: {prefix_id!r}.", status=404)


def _found(prefix: PinnedPrefix | None, prefix_id: str) -> Response:
    if prefix is None:
        raise _not_found(prefix_id)
    return json_response(prefix_json(prefix))
