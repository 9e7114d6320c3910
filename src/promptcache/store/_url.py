"""Store URLs: ``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``.

Query parameters configure the store (``?max_bytes=64MB&ttl=1h``). Sizes take
``KB``/``MB``/``GB`` suffixes (powers of 1024); durations take ``s``/``m``/
``h``/``d``. Unknown parameters are refused, listing the valid ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from promptcache.store.base import ResponseStore
from promptcache.store.memory import MemoryStore, MemoryStoreConfig

SCHEMES = ("memory", "sqlite", "redis", "rediss")
DEFAULT_STORE_URL = "sqlite:///.promptcache/responses.db"

_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}
_TIME_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER_WITH_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*$")


def open_store(url: str, *, create: bool = True) -> ResponseStore:
    """Open the store a URL names. ``create=False``: a missing SQLite file is an error."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "memory":
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
        from promptcache.store.redis import RedisStore, RedisStoreConfig

        ours = {"prefix", "ttl", "socket_timeout"}
        redis_params = {k: v for k, v in params.items() if k not in ours}
        client_url = urlunsplit(parts._replace(query=urlencode(redis_params)))
        config_redis = RedisStoreConfig(
            url=client_url,
            prefix=params.get("prefix", RedisStoreConfig.prefix),
            ttl=_duration(params, "ttl"),
            socket_timeout=_duration(params, "socket_timeout") or RedisStoreConfig.socket_timeout,
        )
        return RedisStore(config_redis, url=url)
    raise ValueError(
        f"Unknown store URL scheme {parts.scheme!r} in {url!r}; valid schemes: "
        "memory://, sqlite:///relative/path.db (sqlite:////absolute/path.db), "
        "redis://host:port/db"
    )


def sqlite_path(url: str) -> Path:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ValueError(
            f"{url!r}: a SQLite URL has no host; use sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ValueError(f"{url!r}: the SQLite URL names no file (e.g. sqlite:///cache.db)")
    return Path(path)


def _refuse_unknown(url: str, params: dict[str, str], valid: set[str]) -> None:
    unknown = set(params) - valid
    if unknown:
        raise ValueError(
            f"{url!r}: unknown parameter(s) {', '.join(sorted(unknown))}; "
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


def _duration(params: dict[str, str], name: str) -> float | None:
    raw = params.get(name)
    if raw is None or raw.strip().lower() in ("", "none"):
        return None
    match = _NUMBER_WITH_UNIT.match(raw)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _TIME_UNITS:
        raise ValueError(f"{name}={raw!r}: expected a duration such as 30, 90s, 5m, 1h or 7d")
    return float(match.group(1)) * _TIME_UNITS[unit]
