"""Reading a chat request off the wire: who sent it, its body, what it asks for.

The first steps of :class:`~promptcache.server.flow.ChatFlow`: the caller's
tenant (a key the key ring knows, or a dialect's own signature over the body),
the body within its size limit, the content type, the JSON checks, the
dialect's parser and the model's resolution through the catalog. Parsed
requests are memoised by (route, tenant, namespace, body), so a repeated
request -- the hit path -- is parsed once.
"""

from __future__ import annotations

from dataclasses import replace

from starlette.requests import Request

from promptcache.dialects.base import Dialect
from promptcache.server.auth import KeyRing
from promptcache.server.cache_policy import namespace_of
from promptcache.server.json_body import check_content_type, decode_json_body
from promptcache.server.limits import read_body
from promptcache.server.models import ModelCatalog
from promptcache.server.parse_memo import ParsedRequest, ParseMemo


class RequestReader:
    """Turns an HTTP request into a :class:`ParsedRequest` (or a 4xx error)."""

    def __init__(self, *, max_body_bytes: int, keyring: KeyRing, catalog: ModelCatalog) -> None:
        self.max_body_bytes = max_body_bytes
        self.keyring = keyring
        self.catalog = catalog
        self._memo = ParseMemo()

    async def read(self, http: Request, dialect: Dialect) -> ParsedRequest:
        """The request ``http`` carries, as ``dialect`` reads it, for its caller's tenant."""
        # A dialect that signs its requests (Bedrock's SigV4) checks the signature
        # itself, over the body; the others carry a key the key ring looks up.
        signed = getattr(dialect, "authenticate", None)
        tenant = "" if signed is not None else self.keyring.tenant(http.headers)
        namespace = namespace_of(http.headers)
        body = await read_body(http, limit=self.max_body_bytes)
        if signed is not None:
            raw_path = http.scope.get("raw_path", b"").decode("latin-1") or http.url.path
            tenant = self.keyring.signed_tenant(
                lambda keys: signed(
                    keys,
                    method=http.method,
                    raw_path=raw_path,
                    query=http.url.query,
                    headers=http.headers,
                    body=body,
                )
            )
        check_content_type(http.headers.get("content-type"))
        # A dialect whose path carries part of the request (a model id) scopes the memo.
        scope = getattr(dialect, "parse_scope", "")
        memo_key = (dialect.name + scope, tenant, namespace, body)
        parsed = self._memo.get(memo_key)
        if parsed is None:
            parsed = self._parse_body(body, dialect, tenant, namespace)
            self._memo.put(memo_key, parsed)
        return parsed

    def _parse_body(
        self, body: bytes, dialect: Dialect, tenant: str, namespace: str
    ) -> ParsedRequest:
        data = decode_json_body(body)
        request = dialect.parse_request(data, tenant=tenant, namespace=namespace)
        asked = request.model
        model = self.catalog.resolve(asked)
        if model == asked:
            return ParsedRequest(request=request)
        # Keys and the engine see the served model; the client sees the name it asked for.
        return ParsedRequest(request=replace(request, model=model), asked_model=asked)


__all__ = ["RequestReader"]
