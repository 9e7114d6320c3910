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
import dataclasses
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from promptcache.dialects._common import iter_sse
from promptcache.dialects.anthropic import wire as anthropic_wire
from promptcache.dialects.openai import wire as openai_wire
from promptcache.engine.base import Engine, ModelInfo
from promptcache.errors import (
    AuthenticationError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    PromptCacheError,
    RequestError,
    UpstreamError,
)
from promptcache.request import ChatRequest
from promptcache.result import Result, StreamEvent
from promptcache.store import redact_url

Dialect = Literal["openai", "anthropic"]
DIALECTS: tuple[Dialect, ...] = ("openai", "anthropic")
REDACTED = "***"
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)

_STATUS_ERRORS: Mapping[int, Callable[[str], PromptCacheError]] = {
    400: RequestError,
    422: RequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: ModelNotFoundError,
    413: PayloadTooLargeError,
    429: OverloadedError,
    529: OverloadedError,
}


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
    dialect: str = "openai"
    """"openai" (any OpenAI-compatible API) or "anthropic"; validated, as it comes from users."""
    models: Sequence[str] | None = None
    timeout: float = 600.0
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
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, got {self.dialect!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout!r}")
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
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 10.0)),
            transport=transport,
        )

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

    @property
    def accepts_any_model(self) -> bool:
        """True when no model list was configured: every model id is passed through."""
        return self.config.models is None

    def models(self) -> list[ModelInfo]:
        if self.config.models is None:
            return list(self._discovered)
        return [ModelInfo(id=m, owned_by=self._owner) for m in self.config.models]

    async def discover_models(self) -> list[ModelInfo]:
        """Ask the upstream's ``GET /models`` and remember the answer for :meth:`models`."""
        response = await self._send("GET", self._models_path)
        data = response.json().get("data") or []
        self._discovered = [
            ModelInfo(id=str(m["id"]), owned_by=str(m.get("owned_by") or self._owner))
            for m in data
            if isinstance(m, dict) and m.get("id")
        ]
        return self.models()

    def _body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        if self.config.dialect == "anthropic":
            return anthropic_wire.to_wire_request(
                request, stream=stream, default_max_tokens=self.config.default_max_tokens
            )
        return openai_wire.to_wire_request(request, stream=stream)

    async def complete(self, request: ChatRequest) -> Result:
        response = await self._send("POST", self._chat_path, json=self._body(request, stream=False))
        try:
            body = response.json()
        except ValueError as error:
            raise UpstreamError("The upstream returned a body that is not JSON.") from error
        if self.config.dialect == "anthropic":
            return anthropic_wire.result_from_wire(body)
        return openai_wire.result_from_wire(body)

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        body = self._body(request, stream=True)
        decode = (
            anthropic_wire.events_from_sse
            if self.config.dialect == "anthropic"
            else openai_wire.events_from_sse
        )
        try:
            # Leaving this block -- normally, on error, or because the consumer
            # closed the generator -- closes the upstream response.
            async with self._client.stream("POST", self._chat_path, json=body) as response:
                if response.is_error:
                    await response.aread()
                    raise error_from_response(response, secrets=self._secrets)
                async for event in decode(iter_sse(response.aiter_lines())):
                    yield event
        except (httpx.HTTPError, json.JSONDecodeError) as error:
            raise self._transport_error(error) from error

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise self._transport_error(error) from error
        if response.is_error:
            raise error_from_response(response, secrets=self._secrets)
        return response

    def _transport_error(self, error: Exception) -> UpstreamError:
        if isinstance(error, httpx.TimeoutException):
            what = "The upstream timed out"
        elif isinstance(error, json.JSONDecodeError):
            what = "The upstream sent an event that is not JSON"
        else:
            what = "The upstream could not be reached"
        return UpstreamError(scrub(f"{what}: {error}", self._secrets))

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return response.text.strip() or response.reason_phrase


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def error_from_response(
    response: httpx.Response, *, secrets: Iterable[str] = ()
) -> PromptCacheError:
    """The promptcache exception for an upstream error response, its message kept but
    scrubbed of ``secrets``: a provider may quote the key it refused ("Incorrect API
    key provided: sk-...")."""
    status = response.status_code
    message = scrub(_error_message(response), secrets)
    make = _STATUS_ERRORS.get(status)
    if make is not None:
        return make(message)
    return UpstreamError(f"The upstream answered {status}: {message}", upstream_status=status)
