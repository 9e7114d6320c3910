"""API keys and tenants: who is calling, and which cache partition they may see.

With no keys configured the server is open and everything runs in the default
tenant ``""``. With keys, every API request must present one
(``Authorization: Bearer <key>`` as the OpenAI SDK sends, or ``x-api-key:
<key>`` as the Anthropic SDK sends) and each key is its own tenant. The tenant
id is a hash of the key, never the key itself, because it ends up in cache
keys, KV hash salts and per-tenant statistics.

**Forwarded keys** (``promptcache serve --upstream-key-mode forward``): the
caller's own provider key is the credential. Any key is accepted here (the
provider judges it; a refusal comes back as its 401/403), a request without
one is a 401, and each distinct key is its own tenant, so two callers never
share response-cache entries, KV salts or replica affinity. ``--api-key`` has
no meaning then (the caller's one key goes to the provider); admin keys still
guard the admin actions.

**Tenant ids are keyed.** With a tenant secret (``--tenant-secret``,
``PROMPTCACHE_TENANT_SECRET``, else one created once in
``./.promptcache/tenant-secret``, mode 0600: :func:`load_tenant_secret`) the
tenant is an HMAC-SHA256 of the key, so a tenant id seen in ``/metrics`` or the
stats cannot be checked against guessed keys offline. Gateways that share a
store (Redis) must share the secret, or each computes other tenants (no
shared entries; never a mix). Without a secret (the library's default) it is
the unkeyed SHA-256 of earlier versions.

The optional metrics key (:class:`MetricsGuard`) is separate from both: it
opens ``GET /metrics`` and nothing else, so a Prometheus scrape config never
holds a key that can read or spend a tenant's cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from promptcache.errors import AuthenticationError

TENANT_SECRET_ENV = "PROMPTCACHE_TENANT_SECRET"
DEFAULT_TENANT_SECRET_FILE = Path(".promptcache") / "tenant-secret"
_TENANT_LABEL = b"promptcache-tenant\x00"


def tenant_id(key: str, secret: str | None = None) -> str:
    """The stable, non-reversible tenant identity of an API key: an HMAC-SHA256 under
    ``secret``, or (no secret) the unkeyed SHA-256 earlier versions used."""
    if secret is None:
        return "t-" + hashlib.sha256(_TENANT_LABEL + key.encode()).hexdigest()[:24]
    digest = hmac.new(secret.encode(), _TENANT_LABEL + key.encode(), hashlib.sha256)
    return "t-" + digest.hexdigest()[:24]


def load_tenant_secret(path: Path = DEFAULT_TENANT_SECRET_FILE) -> str:
    """The tenant secret kept in ``path``, created there (32 random bytes, hex, mode
    0600) the first time, so a restart keeps every tenant's cache entries."""
    # Written whole to a temporary file and linked into place: os.link fails when the
    # name exists, so two gateways starting at once in one directory agree on one
    # secret, and neither can read a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tenant-secret-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(secrets.token_hex(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    secret = path.read_text(encoding="utf-8").strip()
    if len(secret) < 32:
        raise ValueError(
            f"{path} holds no usable tenant secret (32+ characters); delete it to have "
            f"a new one made, or set {TENANT_SECRET_ENV}"
        )
    return secret


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

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = (),
        admin_keys: Iterable[str] = (),
        forward: bool = False,
        secret: str | None = None,
    ) -> None:
        api_keys, admin_keys = tuple(api_keys), tuple(admin_keys)
        if forward and api_keys:
            raise ValueError(
                "--api-key has no effect with --upstream-key-mode forward: each caller's own "
                "provider key is its credential (and goes to the provider); drop --api-key"
            )
        self._secret = secret
        self._forward = forward
        # Kept for signature schemes (SigV4) where the key is an HMAC secret.
        self._keys = tuple(dict.fromkeys((*api_keys, *admin_keys)))
        self._tenants: dict[bytes, str] = {}
        self._admins: set[bytes] = set()
        for key in api_keys:
            self._tenants[_digest(key)] = tenant_id(key, secret)
        for key in admin_keys:
            self._tenants[_digest(key)] = tenant_id(key, secret)
            self._admins.add(_digest(key))
        # Forwarding makes every caller a tenant of its own, as configured keys do.
        self._has_api_keys = bool(self._tenants) or forward

    @property
    def required(self) -> bool:
        """Whether API requests must carry a key."""
        return self._has_api_keys

    @property
    def forwards(self) -> bool:
        """Whether callers' keys go to the upstream (``--upstream-key-mode forward``)."""
        return self._forward

    def tenant(self, headers: Mapping[str, str]) -> str:
        """The caller's tenant, or :class:`AuthenticationError` (401)."""
        if not self._has_api_keys:
            return ""
        keys = presented_keys(headers)
        if not keys:
            if self._forward:
                raise AuthenticationError(
                    "Missing API key: this server forwards your own provider key; send "
                    "'Authorization: Bearer <key>' or 'x-api-key: <key>'."
                )
            raise AuthenticationError(
                "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
            )
        if self._forward:
            return tenant_id(keys[0], self._secret)
        for key in keys:
            tenant = self._tenants.get(_digest(key))
            if tenant is not None:
                return tenant
        raise AuthenticationError("Invalid API key.")

    def forwarded_key(self, headers: Mapping[str, str]) -> str | None:
        """The caller's key to send to the upstream, when keys are forwarded (the one
        :meth:`tenant` named the tenant after); else None (the server's key goes)."""
        if not self._forward:
            return None
        keys = presented_keys(headers)
        return keys[0] if keys else None

    def signed_tenant(self, verify: Callable[[Iterable[str]], str]) -> str:
        """The tenant of the key that signed a request: ``verify`` gets the keys and
        returns the one whose signature matches (raising otherwise). Without keys
        configured any signature is accepted, as any key is by :meth:`tenant`."""
        if self._forward:
            # A SigV4 signature proves a secret this server does not hold, and carries
            # no key a provider would take.
            raise AuthenticationError(
                "This server forwards callers' provider keys (--upstream-key-mode forward), "
                "which a SigV4-signed request does not carry: use the OpenAI or Anthropic API."
            )
        if not self._has_api_keys:
            return ""
        return tenant_id(verify(self._keys), self._secret)

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
