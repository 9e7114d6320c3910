"""The Amazon Bedrock Runtime dialect: Converse, ConverseStream, InvokeModel and
InvokeModelWithResponseStream at ``POST /model/{modelId}/<operation>``.

Unlike the other dialects, one Bedrock route carries part of the request in
its path (the model id, percent-decoded: ``us.anthropic...-v1:0``) and signs
the request with SigV4. :data:`OPERATIONS` lists the four operations; the
server binds one to each request (:meth:`BedrockOperation.bind`), giving a
:class:`BedrockDialect` that knows the model id and when the request started.
Besides the :class:`~promptcache.dialects.base.Dialect` protocol it offers
the flow's optional hooks: ``parse_scope`` (parses are memoized per model id
and operation), ``authenticate`` (SigV4 against the server's API keys),
``finish_response`` (the event-stream media type, InvokeModel's token-count headers)
and ``error_headers`` (``x-amzn-ErrorType``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response, StreamingResponse

from promptcache.dialects.bedrock import eventstream
from promptcache.dialects.bedrock.converse_parse import parse_converse
from promptcache.dialects.bedrock.converse_render import (
    error_frame,
    render_converse,
    render_converse_stream,
)
from promptcache.dialects.bedrock.errors import error_headers, render_error
from promptcache.dialects.bedrock.invoke import (
    invoke_headers,
    parse_invoke,
    render_invoke,
    render_invoke_stream,
)
from promptcache.dialects.bedrock.sigv4 import matching_secret
from promptcache.errors import PromptCacheError
from promptcache.request import ChatRequest
from promptcache.result import ModelInfo, Result, StreamEvent


@dataclass(frozen=True)
class BedrockOperation:
    """One of the four operations: its path suffix, body format and whether it streams."""

    operation: str
    suffix: str
    converse: bool
    stream: bool

    @property
    def path(self) -> str:
        return "/model/{modelId:path}/" + self.suffix

    def bind(self, model_id: str) -> BedrockDialect:
        return BedrockDialect(self, model_id)


OPERATIONS: tuple[BedrockOperation, ...] = (
    BedrockOperation("Converse", "converse", converse=True, stream=False),
    BedrockOperation("ConverseStream", "converse-stream", converse=True, stream=True),
    BedrockOperation("InvokeModel", "invoke", converse=False, stream=False),
    BedrockOperation(
        "InvokeModelWithResponseStream", "invoke-with-response-stream", converse=False, stream=True
    ),
)
PATH_PREFIX = "/model/"


class BedrockDialect:
    """One Bedrock request's dialect: the operation, the model id from the path."""

    chat_path = PATH_PREFIX
    client_header = None

    def __init__(self, operation: BedrockOperation, model_id: str) -> None:
        self.operation = operation
        self.model_id = model_id
        self.started = time.perf_counter()

    @property
    def name(self) -> str:
        """The route label: ``bedrock-converse`` or ``bedrock-invoke``, one per body
        format, since the server memoizes a rendered hit under its dialect's name
        (the same request by Converse and by InvokeModel shares a cache entry)."""
        return "bedrock-converse" if self.operation.converse else "bedrock-invoke"

    @property
    def parse_scope(self) -> str:
        return f"{self.operation.suffix}\x00{self.model_id}"

    def authenticate(
        self,
        secrets: Iterable[str],
        *,
        method: str,
        raw_path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> str:
        """The API key that signed this request (``BedrockAuthError`` if none did)."""
        return matching_secret(
            secrets, method=method, raw_path=raw_path, query=query, headers=headers, body=body
        )

    def parse_request(self, body: Any, *, tenant: str = "", namespace: str = "") -> ChatRequest:
        parse = parse_converse if self.operation.converse else parse_invoke
        return parse(
            body,
            model=self.model_id,
            stream=self.operation.stream,
            tenant=tenant,
            namespace=namespace,
        )

    def render_response(self, result: Result, request: ChatRequest) -> dict[str, Any]:
        if self.operation.converse:
            return render_converse(result, started=self.started)
        return render_invoke(result, request, model=self.model_id)

    def render_stream(
        self, events: AsyncIterator[StreamEvent], request: ChatRequest
    ) -> AsyncIterator[bytes]:
        if self.operation.converse:
            return render_converse_stream(events, started=self.started)
        return render_invoke_stream(events, request, model=self.model_id, started=self.started)

    def stream_error_frame(self, error: PromptCacheError) -> bytes:
        return error_frame(error)

    def render_error(self, error: PromptCacheError) -> tuple[int, dict[str, Any]]:
        return render_error(error)

    def error_headers(self, error: PromptCacheError) -> dict[str, str]:
        return error_headers(error)

    def finish_response(self, response: Response) -> None:
        """A stream's media type; InvokeModel's ``x-amzn-bedrock-*-token-count`` headers,
        where Bedrock reports an InvokeModel's usage (and langchain-aws reads it)."""
        if isinstance(response, StreamingResponse):
            response.headers["content-type"] = eventstream.MEDIA_TYPE
        elif not self.operation.converse and response.status_code == 200:
            response.headers.update(invoke_headers(bytes(response.body), started=self.started))

    def render_models(self, models: list[ModelInfo]) -> dict[str, Any]:
        return {
            "modelSummaries": [
                {"modelId": name, "modelName": name, "providerName": m.owned_by}
                for m in models
                for name in (m.id, *m.aliases)
            ]
        }


BEDROCK_ERRORS = OPERATIONS[0].bind("")
"""A dialect for errors on Bedrock paths outside the flow (no route, wrong method)."""

__all__ = ["BEDROCK_ERRORS", "OPERATIONS", "PATH_PREFIX", "BedrockDialect", "BedrockOperation"]
