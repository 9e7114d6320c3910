"""Store URLs: ``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``.

Query parameters configure the store (``?max_bytes=64MB&ttl=1h``). Sizes take
``KB``/``MB``/``GB`` suffixes (powers of 1024); durations take ``s``/``m``/
``h``/``d``. Unknown parameters are refused, listing the valid ones.

A URL may carry credentials (``redis://:password@host``,
``rediss://user:password@host``, ``?password=...``). :func:`redact_url` is the
one place that hides them: every store's displayed ``url`` (stats, logs, the
banner, CLI output) and every error message here goes through it; only the
connection itself sees the real URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from promptcache._extras import require
from promptcache.store.base import ResponseStore

SCHEMES = ("memory", "sqlite", "redis", "rediss")
DEFAULT_STORE_URL = "sqlite:///.promptcache/responses.db"

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_TIME_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")

REDACTED = "***"
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|credential|sig", re.IGNORECASE)
"""Query parameter names whose values are credentials (``password``, ``api_key``,
``access_token``, ``X-Amz-Signature``, ...); matching more than needed only hides
a harmless value, matching less would show a secret."""
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")


def redact_url(url: str) -> str:
    """``url`` with its credentials replaced by ``***``, safe to show or log.

    ``redis://:pw@host`` -> ``redis://:***@host``; ``redis://user:pw@host`` ->
    ``redis://user:***@host``; a user part without a password is hidden whole
    (``https://TOKEN@host`` puts a token there); the value of every credential-like
    query parameter (``?password=pw``) becomes ``***``. The rest of the URL is
    kept as written, so it still says which store or host is meant.
    """
    match = _USERINFO.match(url)
    if match is not None:
        scheme, userinfo = match.groups()
        # The greedy match ends the user part at the authority's last "@" and the
        # user name at its first ":", as urllib (and so redis-py and httpx) split it.
        user, has_password, _ = userinfo.partition(":")
        shown = f"{user}:{REDACTED}" if has_password else REDACTED
        url = scheme + shown + "@" + url[match.end() :]
    head, question, rest = url.partition("?")
    if not question:
        return url
    query, hash_sign, fragment = rest.partition("#")
    params = []
    for param in query.split("&"):
        name, equals, value = param.partition("=")
        if equals and value and _SECRET_PARAM.search(unquote_plus(name)):
            param = f"{name}={REDACTED}"
        params.append(param)
    return head + "?" + "&".join(params) + hash_sign + fragment


def open_store(url: str, *, create: bool = True) -> ResponseStore:
    """Open the store a URL names. ``create=False``: a missing SQLite file is an error."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
        # Imported here, as the other stores are: memory.py imports redact_url from here.
        from promptcache.store.memory import MemoryStore, MemoryStoreConfig

        _refuse_unknown(url, params, {"max_entries", "max_bytes", "ttl"})
        config = MemoryStoreConfig(
            max_entries=_size(params, "max_entries", MemoryStoreConfig.max_entries),
            max_bytes=_size(params, "max_bytes", MemoryStoreConfig.max_bytes),
            ttl=_duration(params, "ttl"),
        )
        return MemoryStore(config, url=url)
    if scheme == "sqlite":
        from promptcache.store.sqlite import SqliteStore, SqliteStoreConfig

        _refuse_unknown(url, params, {"max_bytes", "max_entries", "ttl", "busy_timeout"})
        config_sqlite = SqliteStoreConfig(
            path=sqlite_path(url),
            max_bytes=_size(params, "max_bytes", SqliteStoreConfig.max_bytes),
            max_entries=_size(params, "max_entries", None),
            ttl=_duration(params, "ttl"),
            busy_timeout=_duration(params, "busy_timeout") or SqliteStoreConfig.busy_timeout,
            create=create,
        )
        return SqliteStore(config_sqlite, url=url)
    if scheme in ("redis", "rediss"):
        require("redis", "redis")  # redis-py is the redis extra: say so, not "No module named"
        from promptcache.store.redis import RedisStore, RedisStoreConfig

        ours = {"prefix", "ttl", "socket_timeout", "lock_ttl", "lock_wait"}
        redis_params = {k: v for k, v in params.items() if k not in ours}
        client_url = urlunsplit(parts._replace(query=urlencode(redis_params)))
        config_redis = RedisStoreConfig(
            url=client_url,
            prefix=params.get("prefix", RedisStoreConfig.prefix),
            ttl=_duration(params, "ttl"),
            socket_timeout=_duration(params, "socket_timeout") or RedisStoreConfig.socket_timeout,
            lock_ttl=_or(_duration(params, "lock_ttl"), RedisStoreConfig.lock_ttl),
            lock_wait=_or(_duration(params, "lock_wait"), RedisStoreConfig.lock_wait),
        )
        return RedisStore(config_redis, url=url)
    raise ValueError(
        f"Unknown store URL scheme {parts.scheme!r} in {redact_url(url)!r}; valid schemes: "
        "memory://, sqlite:///relative/path.db (sqlite:////absolute/path.db), "
        "redis://host:port/db"
    )


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"{redact_url(url)!r}: a SQLite URL has no host; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(
            f"{redact_url(url)!r}: the SQLite URL names no file (e.g. sqlite:///cache.db)"
        )
    return Path(path)


def _refuse_unknown(url: str, params: dict[str, str], valid: set[str]) -> None:
    unknown = set(params) - valid
    if unknown:
        raise ValueError(
            f"{redact_url(url)!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(valid))}"
        )


def _size(params: dict[str, str], name: str, default: int | None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    if raw.strip().lower() in ("", "none", "0", "unlimited"):
        return None
    match = _NUMBER_WITH_UNIT.match(raw)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise ValueError(f"{name}={raw!r}: expected a size such as 1000, 64MB or 2GB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _or(value: float | None, default: float) -> float:
    """``value`` unless absent (0 is a value: lock_wait=0 never waits)."""
    return default if value is None else value


def _duration(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw.strip().lower() in ("", "none"):
        return None
    match = _NUMBER_WITH_UNIT.match(raw)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _TIME_UNITS:
        raise ValueError(f"{name}={raw!r}: expected a duration such as 30, 90s, 5m, 1h or 7d")
    return float(match.group(1)) * _TIME_UNITS[unit]
