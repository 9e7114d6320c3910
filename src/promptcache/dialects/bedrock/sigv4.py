"""AWS Signature Version 4, checked on the server side.

A Bedrock client signs each request with its secret access key; promptcache
verifies that signature with each configured API key as the secret (the access
key id is not a secret and decides nothing), so the key whose signature
matches is the caller's tenant. The canonical request follows the AWS
specification as botocore builds it for bedrock-runtime: the path as sent,
percent-encoded once more (``%3A`` -> ``%253A``), the query sorted, the signed
headers lower-cased with their values' whitespace folded, and the SHA-256 of
the body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote

from promptcache.dialects.bedrock.errors import BedrockAuthError

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_SECONDS = 300


@dataclass(frozen=True)
class Signed:
    """The parts of an ``Authorization: AWS4-HMAC-SHA256 ...`` header."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(value: str | None) -> Signed:
    if not value:
        raise BedrockAuthError(
            "Missing Authentication Token: sign the request with SigV4 "
            "(any access key id, a promptcache API key as the secret access key).",
            code="UnrecognizedClientException",
        )
    scheme, _, rest = value.strip().partition(" ")
    if scheme != ALGORITHM:
        raise BedrockAuthError(
            f"Authorization header requires the {ALGORITHM} algorithm.",
            code="IncompleteSignatureException",
        )
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, _, val = item.strip().partition("=")
        parts[key] = val
    try:
        scope = parts["Credential"].split("/")
        signed_headers = tuple(parts["SignedHeaders"].split(";"))
        signature = parts["Signature"]
        key_id, date, region, service, terminator = scope
    except (KeyError, ValueError):
        raise BedrockAuthError(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'.",
            code="IncompleteSignatureException",
        ) from None
    if terminator != "aws4_request" or "host" not in signed_headers:
        raise BedrockAuthError(
            "The credential scope or the signed headers are malformed.",
            code="IncompleteSignatureException",
        )
    return Signed(key_id, date, region, service, signed_headers, signature)


def check_date(amz_date: str | None, signed: Signed, *, now: datetime | None = None) -> None:
    """Refuse a request dated more than 5 minutes from the server's clock."""
    if not amz_date:
        raise BedrockAuthError(
            "Missing the X-Amz-Date header.", code="IncompleteSignatureException"
        )
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise BedrockAuthError(
            "X-Amz-Date must be in the ISO 8601 basic format (20240101T000000Z).",
            code="IncompleteSignatureException",
        ) from None
    if not amz_date.startswith(signed.date):
        raise BedrockAuthError(
            "The credential scope's date does not match X-Amz-Date.",
            code="InvalidSignatureException",
        )
    now = now or datetime.now(UTC)
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise BedrockAuthError(
            f"Signature expired: {amz_date} is now earlier or later than "
            f"{now:%Y%m%dT%H%M%SZ} by more than 5 minutes.",
            code="InvalidSignatureException",
        )


def canonical_request(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: Iterable[str],
    body: bytes,
) -> str:
    uri = quote(raw_path or "/", safe="/~")
    pairs = sorted(
        (quote(k, safe="-_.~"), quote(v, safe="-_.~"))
        for k, v in parse_qsl(query, keep_blank_values=True)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    names = list(signed_headers)
    canonical_headers = "".join(
        f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in names
    )
    payload_hash = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    return "\n".join(
        [method, uri, canonical_query, canonical_headers, ";".join(names), payload_hash]
    )


def signature(secret: str, signed: Signed, amz_date: str, canonical: str) -> str:
    scope = f"{signed.date}/{signed.region}/{signed.service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (signed.date, signed.region, signed.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def matching_secret(
    secrets: Iterable[str],
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime | None = None,
) -> str:
    """The secret (an API key) that signed this request; else ``BedrockAuthError`` (403)."""
    signed = parse_authorization(headers.get("authorization"))
    amz_date = headers.get("x-amz-date")
    check_date(amz_date, signed, now=now)
    assert amz_date is not None
    canonical = canonical_request(method, raw_path, query, headers, signed.signed_headers, body)
    for secret in secrets:
        if hmac.compare_digest(signature(secret, signed, amz_date, canonical), signed.signature):
            return secret
    raise BedrockAuthError(
        "The request signature we calculated does not match the signature you provided. "
        "Check your AWS Secret Access Key (a promptcache API key) and signing method.",
        code="InvalidSignatureException",
    )
