"""The upstream engine: canonical requests proxied to an OpenAI-compatible or Anthropic API.

The response cache sits in front of it like any engine. Requests go out in
the provider's dialect (``dialects/*_wire.py``), answers come back as
canonical events with the provider's cache fields normalised into
:class:`~promptcache.result.Usage`, and HTTP failures come back as
promptcache's own exceptions (status mapped, upstream message kept). Closing
the event stream early closes the upstream response.

The upstream key (and any password in ``base_url`` or secret-looking extra
header) never leaves this module in a message: provider error messages and
transport errors are scrubbed of them before they become promptcache errors,
which clients and logs see.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from promptcache.dialects._common import iter_sse
from promptcache.dialects.anthropic import wire as anthropic_wire
from promptcache.dialects.openai import wire as openai_wire
from promptcache.engine.base import Engine, ModelInfo
from promptcache.engine.upstream.attempts import AttemptCounts
from promptcache.engine.upstream.credentials import (
    UpstreamCall,
    auth_headers,
    merged_betas,
)
from promptcache.engine.upstream.discovery import ModelDirectory, fetch_models
from promptcache.engine.upstream.profiles import ProviderProfile, resolve_provider
from promptcache.engine.upstream.refusals import error_from_response
from promptcache.engine.upstream.shaping import MarkerPolicy, refuse_lacking, wire_body
from promptcache.engine.upstream.transport import (
    NoCookies,
    RetryPolicy,
    UpstreamSender,
    drain,
)
from promptcache.errors import (
    PromptCacheError,
    UpstreamError,
)
from promptcache.request import ChatRequest
from promptcache.result import Result, StreamEvent
from promptcache.store import redact_url

Dialect = Literal["openai", "anthropic"]
DIALECTS: tuple[Dialect, ...] = ("openai", "anthropic")
_Primed = tuple[AsyncIterator[str], AsyncIterator[StreamEvent], StreamEvent | None]
"""A stream opened: its lines, its events, and the first event (None: it had none)."""
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class UpstreamConfig:
    """Where and how to reach the provider.

    ``base_url`` is what the provider's own SDK takes: ``https://api.openai.com/v1``
    (or any OpenAI-compatible ``.../v1``, e.g. GLM's or DeepSeek's), or
    ``https://api.anthropic.com``. ``models`` lists the model ids served; None
    means whatever the upstream accepts (see :meth:`UpstreamEngine.discover_models`).
    """

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    dialect: str = ""
    """"openai" (any OpenAI-compatible API) or "anthropic"; validated, as it comes from users.
    Empty: the provider's (``provider``, or the one the URL names, else "openai")."""
    provider: str = ""
    """An upstream provider profile (``engine/upstream/profiles.py``): openai, openrouter,
    anthropic, glm, deepseek, vllm, sglang or llamacpp. Empty: the one ``base_url``
    names, else the plain profile of ``dialect``. Resolved once built: after
    construction ``provider`` and ``dialect`` hold what is used."""
    unsupported_model_behavior: str = "warn"
    """What explicit ``cache_control`` markers meet toward a provider or model that cannot
    honour them: "ignore" drops them, "warn" drops them with one warning per model,
    "raise" refuses the request (a 400 naming ``cache_control`` and the provider)."""
    models: Sequence[str] | None = None
    timeout: float = 600.0
    """Read timeout, in seconds: the longest wait for the upstream's next bytes."""
    connect_timeout: float = 5.0
    """Seconds to open a connection (the OpenAI and Anthropic SDKs' 5 s)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    models_refresh: float = 300.0
    """Seconds a discovered model list (``GET /models``) is served before it is asked again."""
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = anthropic_wire.DEFAULT_MAX_TOKENS
    extra_headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url must be an http(s) URL such as https://api.openai.com/v1, "
                f"got {redact_url(self.base_url)!r}"
            )
        if self.dialect and self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, got {self.dialect!r}")
        MarkerPolicy(self.unsupported_model_behavior)  # validates it
        profile = resolve_provider(self.base_url, self.provider or None, self.dialect or None)
        object.__setattr__(self, "provider", profile.name)
        object.__setattr__(self, "dialect", profile.dialect)
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
        if not self.connect_timeout > 0:
            raise ValueError(f"connect_timeout must be > 0 seconds, got {self.connect_timeout!r}")
        if not self.models_refresh > 0:
            raise ValueError(f"models_refresh must be > 0 seconds, got {self.models_refresh!r}")
        if self.default_max_tokens < 1:
            raise ValueError(f"default_max_tokens must be >= 1, got {self.default_max_tokens}")
        if self.models is not None and (
            isinstance(self.models, str) or not all(isinstance(m, str) and m for m in self.models)
        ):
            raise ValueError(f"models must be a list of non-empty model ids, got {self.models!r}")

    def __repr__(self) -> str:
        # The key and extra headers are left out (repr=False); base_url shows redacted.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        shown["base_url"] = redact_url(self.base_url)
        return f"UpstreamConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def secrets(self) -> tuple[str, ...]:
        """Every configured credential, longest first (so a key containing another
        is replaced whole): the API key, ``base_url``'s password (also as the Basic
        credential it is sent as), and the values of extra headers whose names say
        they carry one."""
        url = httpx.URL(self.base_url)
        # A user name beside a password names an account; alone, it is the token.
        found = {self.api_key, url.password or url.username}
        if url.userinfo:
            # The Basic credential they travel as, should a provider quote the header.
            found.add(base64.b64encode(f"{url.username}:{url.password}".encode()).decode())
        for name, value in self.extra_headers.items():
            if _SECRET_HEADER.search(name):
                found.add(value)
                found.add(value.partition(" ")[2])  # the token of "Bearer <token>"
        return tuple(sorted((s for s in found if s), key=len, reverse=True))


class UpstreamEngine(Engine):
    """An :class:`Engine` over HTTP. ``transport`` is the test seam (``httpx.MockTransport``)."""

    def __init__(
        self, config: UpstreamConfig, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.config = config
        self.profile: ProviderProfile = resolve_provider(
            config.base_url, config.provider, config.dialect
        )
        self._markers = MarkerPolicy(config.unsupported_model_behavior)
        base = config.base_url.rstrip("/")
        anthropic_v1 = config.dialect == "anthropic" and not base.endswith("/v1")
        prefix = "v1/" if anthropic_v1 else ""
        self._chat_path = prefix + (
            "chat/completions" if config.dialect == "openai" else "messages"
        )
        self._models_path = prefix + "models"
        self._owner = urlsplit(base).hostname or "upstream"
        self._secrets = config.secrets()
        self._discovered: list[ModelInfo] = []
        self._call = UpstreamCall()
        self._call_headers: dict[str, str] = {}
        # Credentials in the URL go as Basic auth, which is what httpx would send
        # for them anyway, but kept out of the URL that httpx logs every request at.
        base_url = httpx.URL(base + "/")
        auth = None
        if base_url.userinfo:
            auth = httpx.BasicAuth(base_url.username, base_url.password)
            base_url = base_url.copy_with(username=None, password=None)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            headers=self._headers(),
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            transport=transport,
            cookies=NoCookies(),
        )
        self.sender = UpstreamSender(self._client, policy=config.retry)
        self._urls: dict[str, httpx.URL] = {}  # joined once: httpx re-parses a relative one
        self._directory = ModelDirectory(refresh=config.models_refresh)

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": "application/json"}
        key = self.config.api_key
        if self.config.dialect == "anthropic":
            headers["anthropic-version"] = self.config.anthropic_version
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        headers.update(self.config.extra_headers)
        return headers

    def bind(self, call: UpstreamCall) -> UpstreamEngine:
        """This engine for one request (a shallow copy sharing the client): ``call``'s
        deadline bounds its retries, and ``call.api_key``, when given, is the key sent
        (in the header ``call.key_header`` allows) and scrubbed from every message that
        comes back. Toward Anthropic the caller's ``anthropic-beta`` goes too, after any
        configured one. All of it lives on this copy only, never on the shared client."""
        bound = copy.copy(self)
        bound._call = call
        headers: dict[str, str] = {}
        if call.api_key:
            headers = auth_headers(self.config.dialect, call.api_key, call.key_header)
            bound._secrets = (call.api_key, *self._secrets)
        if call.anthropic_beta and self.config.dialect == "anthropic":
            configured = self._client.headers.get("anthropic-beta")
            headers["anthropic-beta"] = merged_betas(configured, call.anthropic_beta) or ""
        bound._call_headers = headers
        return bound

    def upstream_attempts(self) -> AttemptCounts:
        """Attempts by outcome and retries by reason, of every request so far."""
        return self.sender.tally.snapshot()

    @property
    def accepts_any_model(self) -> bool:
        """True when no model list was configured: every model id is passed through."""
        return self.config.models is None

    def models(self) -> list[ModelInfo]:
        if self.config.models is None:
            return list(self._discovered)
        return [ModelInfo(id=m, owned_by=self._owner) for m in self.config.models]

    async def discover_models(self) -> list[ModelInfo]:
        """The upstream's models (``GET /models``), with this call's key when one is bound:
        kept for ``models_refresh`` seconds per key, the last good list served while the
        upstream fails (see :class:`~promptcache.engine.upstream.discovery.ModelDirectory`).
        With the server's own key the answer is also what :meth:`models` lists."""
        if self.config.models is not None:
            return self.models()
        found = await self._directory.get(self._call.api_key, self._fetch_models)
        if self._call.api_key is None:
            self._discovered[:] = found  # in place: bound copies share the list
        return list(found)

    async def _fetch_models(self) -> list[ModelInfo]:
        async def page(params: dict[str, str] | None) -> httpx.Response:
            return await self._send("GET", self._models_path, params=params)

        return await fetch_models(page, paged=self.config.dialect == "anthropic", owner=self._owner)

    def honours_cache_markers(self, model: str) -> bool:
        """Whether ``cache_control`` markers reach ``model`` at this provider (so whether
        ``--auto-cache`` places them)."""
        return self.profile.honours_markers(model)

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """The provider's body: what it lacks refused, markers it cannot take per policy."""
        request = self._markers.apply(self.profile, refuse_lacking(self.profile, request))
        limit = self.config.default_max_tokens
        return wire_body(self.profile, request, stream=stream, default_max_tokens=limit)

    async def complete(self, request: ChatRequest) -> Result:
        response = await self._send("POST", self._chat_path, json=self._body(request, stream=False))
        try:
            body = response.json()
        except ValueError as error:
            raise UpstreamError("The upstream returned a body that is not JSON.") from error
        if self.config.dialect == "anthropic":
            return anthropic_wire.result_from_wire(body)
        return openai_wire.result_from_wire(body, self.profile.read_usage)

    def _decode(self, pairs: AsyncIterator[tuple[str, str]]) -> AsyncIterator[StreamEvent]:
        if self.config.dialect == "anthropic":
            return anthropic_wire.events_from_sse(pairs)
        return openai_wire.events_from_sse(pairs, self.profile.read_usage)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        if self._call.whole:
            # The caller waits for the whole answer anyway: one JSON body costs the
            # upstream and this process less than an event stream (the server reads
            # every request as events; benchmarks/proxy_overhead.py).
            yield await self.complete(request)
            return
        body = self._body(request, stream=True)
        # Retried (by the sender) until the first event is read: the server sends its
        # client nothing before that event, and no event is ever sent twice after.
        try:
            response, (lines, events, event) = await self._send_primed(body)
        except json.JSONDecodeError as error:
            raise self._transport_error(error) from error
        try:
            # Leaving this block -- normally, on error, or because the consumer
            # closed the generator -- closes the upstream response.
            while event is not None:
                if isinstance(event, Result):
                    # The decoder stops at the end marker; the bytes after it are read
                    # too, or closing drops the connection instead of pooling it.
                    await drain(lines)
                yield event
                event = await anext(events, None)
        except (httpx.HTTPError, json.JSONDecodeError) as error:
            raise self._transport_error(error) from error
        finally:
            await response.aclose()

    async def _send_primed(self, body: dict[str, Any]) -> tuple[httpx.Response, _Primed]:
        async def first_event(response: httpx.Response) -> _Primed:
            lines = response.aiter_lines()
            events = self._decode(iter_sse(lines))
            return lines, events, await anext(events, None)

        request = self._request("POST", self._chat_path, json=body)
        return await self.sender.open(
            request,
            deadline=self._call.deadline,
            secrets=self._secrets,
            refuse=self._refusal,
            prime=first_event,
        )

    async def _send(
        self, method: str, path: str, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """The upstream's 2xx response, after the retries the policy allows; anything
        else raised as promptcache's error for it, naming the upstream."""
        return await self.sender.send(
            self._request(method, path, **kwargs),
            deadline=self._call.deadline,
            secrets=self._secrets,
            refuse=self._refusal,
            stream=stream,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Request:
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = self._client.base_url.join(path)
        return self._client.build_request(method, url, headers=self._call_headers, **kwargs)

    def _refusal(self, response: httpx.Response, attempts: int) -> PromptCacheError:
        return error_from_response(
            response, secrets=self._secrets, upstream=self.sender.upstream, attempts=attempts
        )

    def _transport_error(self, error: Exception) -> UpstreamError:
        if isinstance(error, json.JSONDecodeError):
            return UpstreamError(
                f"The upstream {self.sender.upstream} sent an event that is not JSON."
            )
        return self.sender.transport_error(error, secrets=self._secrets)

    async def aclose(self) -> None:
        await self._client.aclose()
