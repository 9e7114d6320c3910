"""The shape of a dialect module, as the server uses it.

``promptcache.dialects.openai`` and ``promptcache.dialects.anthropic`` are
plain modules with the same functions; this protocol lets the server (and
mypy) treat them interchangeably, and picks a dialect for a URL path so that
even routing errors come back in the body format the client's SDK expects.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from promptcache.dialects import anthropic, openai
from promptcache.errors import PromptCacheError
from promptcache.request import ChatRequest, ModelInfo, Result, StreamEvent


class Dialect(Protocol):
    def parse_request(self, body: Any, *, tenant: str = "", namespace: str = "") -> ChatRequest:
        """A JSON body as a canonical request; raises ``RequestError``."""
        ...

    def render_response(self, result: Result, request: ChatRequest) -> dict[str, Any]: ...

    def render_stream(
        self, events: AsyncIterator[StreamEvent], request: ChatRequest
    ) -> AsyncIterator[bytes]:
        """SSE frames for ``events`` (an async generator function)."""
        ...

    def render_error(self, error: PromptCacheError) -> tuple[int, dict[str, Any]]: ...

    def render_models(self, models: list[ModelInfo]) -> dict[str, Any]: ...


def dialect_for_path(path: str) -> Dialect:
    """Anthropic's body format under ``/v1/messages``, OpenAI's everywhere else."""
    if path.startswith("/v1/messages"):
        return anthropic
    return openai
