"""API keys and tenants: who is calling, and which cache partition they may see.

With no keys configured the server is open and everything runs in the default
tenant ``""``. With keys, every API request must present one
(``Authorization: Bearer <key>`` as the OpenAI SDK sends, or ``x-api-key:
<key>`` as the Anthropic SDK sends) and each key is its own tenant. The tenant
id is a hash of the key, never the key itself, because it ends up in cache
keys, KV hash salts and per-tenant statistics.

The optional metrics key (:class:`MetricsGuard`) is separate from both: it
opens ``GET /metrics`` and nothing else, so a Prometheus scrape config never
holds a key that can read or spend a tenant's cache.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping

from promptcache.errors import AuthenticationError


def tenant_id(key: str) -> str:
    """The stable, non-reversible tenant identity of an API key."""
    return "t-" + hashlib.sha256(b"promptcache-tenant\x00" + key.encode()).hexdigest()[:24]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def presented_keys(headers: Mapping[str, str]) -> list[str]:
    """The keys a request carries, ``x-api-key`` first, then a Bearer token."""
    keys: list[str] = []
    api_key = headers.get("x-api-key")
    if api_key:
        keys.append(api_key.strip())
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            keys.append(token.strip())
    return keys


class KeyRing:
    """Resolves a request's key to its tenant, and checks admin rights.

    Keys are compared by their SHA-256 digest so lookups cost the same whatever
    the key; the plain keys are kept only as SigV4 secrets (Bedrock clients sign with one).
    """

    def __init__(self, *, api_keys: Iterable[str] = (), admin_keys: Iterable[str] = ()) -> None:
        api_keys, admin_keys = tuple(api_keys), tuple(admin_keys)
        # Kept for signature schemes (SigV4) where the key is an HMAC secret.
        self._keys = tuple(dict.fromkeys((*api_keys, *admin_keys)))
        self._tenants: dict[bytes, str] = {}
        self._admins: set[bytes] = set()
        for key in api_keys:
            self._tenants[_digest(key)] = tenant_id(key)
        for key in admin_keys:
            self._tenants[_digest(key)] = tenant_id(key)
            self._admins.add(_digest(key))
        self._has_api_keys = bool(self._tenants)

    @property
    def required(self) -> bool:
        """Whether API requests must carry a key."""
        return self._has_api_keys

    def tenant(self, headers: Mapping[str, str]) -> str:
        """The caller's tenant, or :class:`AuthenticationError` (401)."""
        if not self._has_api_keys:
            return ""
        keys = presented_keys(headers)
        if not keys:
            raise AuthenticationError(
                "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
        for key in keys:
            tenant = self._tenants.get(_digest(key))
            if tenant is not None:
                return tenant
        raise AuthenticationError("Invalid API key.")

    def signed_tenant(self, verify: Callable[[Iterable[str]], str]) -> str:
        """The tenant of the key that signed a request: ``verify`` gets the keys and
        returns the one whose signature matches (raising otherwise). Without keys
        configured any signature is accepted, as any key is by :meth:`tenant`."""
        if not self._has_api_keys:
            return ""
        return tenant_id(verify(self._keys))

    def sees_all_tenants(self, headers: Mapping[str, str]) -> bool:
        """Whether the caller may read every tenant's figures: an admin key, or a server
        without keys (one tenant). Call after :meth:`tenant` has accepted the key."""
        if not self._has_api_keys:
            return True
        return any(_digest(key) in self._admins for key in presented_keys(headers))

    def require_admin(self, headers: Mapping[str, str]) -> None:
        """Allow an admin action, or raise :class:`AuthenticationError` (401)."""
        if not self._has_api_keys:
            return
        if not self._admins:
            raise AuthenticationError(
                "Clearing the cache affects every tenant: start the server with "
                "--admin-key and send that key."
            )
        keys = presented_keys(headers)
        if not any(_digest(key) in self._admins for key in keys):
            raise AuthenticationError("This action needs an admin key (--admin-key).")


class MetricsGuard:
    """Whether a request may read ``GET /metrics``: anyone without a metrics key,
    else only ``Authorization: Bearer <key>`` (what Prometheus' ``authorization``
    scrape setting sends) or ``x-api-key: <key>``."""

    def __init__(self, key: str | None) -> None:
        # Only the digest is kept, and compared in constant time: the scrape
        # endpoint is reachable by anyone who can reach the port.
        self._digest = _digest(key) if key else None

    @property
    def required(self) -> bool:
        return self._digest is not None

    def check(self, headers: Mapping[str, str]) -> None:
        """Allow the scrape, or raise :class:`AuthenticationError` (401)."""
        if self._digest is None:
            return
        expected = self._digest
        if not any(hmac.compare_digest(_digest(key), expected) for key in presented_keys(headers)):
            raise AuthenticationError(
                "GET /metrics needs the metrics key: send 'Authorization: Bearer <key>'."
            )
