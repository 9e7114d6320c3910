"""The chat routes: each registered dialect serves its chat path through the one flow.

:data:`DIALECTS` is the list of the dialects this server speaks; adding one
(Bedrock, GLM) is adding its subpackage under ``promptcache.dialects`` and its
object here. The same list tells the rest of the server which dialect a path
or a request belongs to, so even an error raised outside the flow (no route,
wrong method, a bug) is answered in the body format the client's SDK expects.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from promptcache.dialects.anthropic import ANTHROPIC
from promptcache.dialects.base import Dialect
from promptcache.dialects.bedrock import BEDROCK_ERRORS, OPERATIONS, PATH_PREFIX, BedrockOperation
from promptcache.dialects.glm import GLM
from promptcache.dialects.openai import OPENAI
from promptcache.server.flow import ChatFlow

DIALECTS: tuple[Dialect, ...] = (OPENAI, ANTHROPIC, GLM)
"""Every dialect the server speaks, each at its ``chat_path``."""
DEFAULT_DIALECT: Dialect = OPENAI
"""The body format of a path or request that belongs to no other dialect."""


def register(app: Starlette, flow: ChatFlow) -> None:
    """``POST <chat_path>`` for every dialect, each served by ``flow``."""
    for dialect in DIALECTS:
        app.add_route(dialect.chat_path, _chat_endpoint(flow, dialect), methods=["POST"])
    # Bedrock's model id is in the path: each request gets the operation bound to it.
    for operation in OPERATIONS:
        app.add_route(operation.path, _bedrock_endpoint(flow, operation), methods=["POST"])


def _bedrock_endpoint(
    flow: ChatFlow, operation: BedrockOperation
) -> Callable[[Request], Awaitable[Response]]:
    async def chat(request: Request) -> Response:
        return await flow.handle(request, operation.bind(request.path_params["modelId"]))

    chat.__name__ = f"bedrock_{operation.suffix.replace('-', '_')}"
    return chat


def _chat_endpoint(flow: ChatFlow, dialect: Dialect) -> Callable[[Request], Awaitable[Response]]:
    async def chat(request: Request) -> Response:
        return await flow.handle(request, dialect)  # looked up per request

    chat.__name__ = f"chat_{dialect.name}"
    return chat


def dialect_for_path(path: str) -> Dialect:
    """The dialect whose chat path ``path`` is (or lies under); else the default."""
    if path.startswith(PATH_PREFIX):
        return BEDROCK_ERRORS
    for dialect in DIALECTS:
        if path.startswith(dialect.chat_path):
            return dialect
    return DEFAULT_DIALECT


def dialect_for_headers(headers: Mapping[str, str]) -> Dialect:
    """The dialect whose SDK sent these headers (its ``client_header``); else the default."""
    for dialect in DIALECTS:
        if dialect.client_header is not None and dialect.client_header in headers:
            return dialect
    return DEFAULT_DIALECT
