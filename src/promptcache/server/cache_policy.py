"""What a request asks of the response cache, from its HTTP headers (SPEC §3).

``Cache-Control: no-cache`` -> don't read, do write; ``no-store`` -> don't
write; ``max-age=N`` -> accept only entries younger than N seconds;
``x-promptcache-namespace: NAME`` -> a separate partition of the cache.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from promptcache.errors import RequestError

_NAMESPACE = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    read: bool = True
    write: bool = True
    max_age: float | None = None


_DEFAULT = CacheDirectives()


def parse_cache_control(value: str | None) -> CacheDirectives:
    """Parse a request's ``Cache-Control``; unknown directives are ignored, as in HTTP."""
    if not value:
        return _DEFAULT
    read = write = True
    max_age: float | None = None
    for part in value.split(","):
        name, _, argument = part.strip().partition("=")
        name = name.strip().lower()
        if name == "no-cache":
            read = False
        elif name == "no-store":
            write = False
        elif name == "max-age":
            try:
                max_age = float(int(argument.strip().strip('"')))
            except ValueError:
                raise RequestError(
                    f"Cache-Control max-age must be a whole number of seconds, got {argument!r}.",
                    param="Cache-Control",
                ) from None
            if max_age < 0:
                raise RequestError("Cache-Control max-age must be >= 0.", param="Cache-Control")
    return CacheDirectives(read=read, write=write, max_age=max_age)


def namespace_of(headers: Mapping[str, str]) -> str:
    """The ``x-promptcache-namespace`` header, validated (empty when absent)."""
    value = headers.get("x-promptcache-namespace")
    if value is None or value == "":
        return ""
    if not _NAMESPACE.fullmatch(value):
        raise RequestError(
            "x-promptcache-namespace must be 1-128 characters of letters, digits and ._:/@+=-",
            param="x-promptcache-namespace",
        )
    return value
