"""Canonical JSON and the exact-response-cache key.

A key is ``pc1:sha256:<64 hex>``: the key-format version, the digest
algorithm, and the SHA-256 of the canonical JSON of the canonical request
*minus* its transport fields (``stream``, stream options, request id,
``user``, ``metadata``), *plus* the tenant and the namespace.

**This form is part of the contract: changing it changes every key.** Any
change to what goes into the canonical dict or to how it is serialised must
bump :data:`KEY_VERSION`, so old entries are simply never found again rather
than served for the wrong request.

Canonical JSON is ``json.dumps`` with sorted keys, compact separators,
UTF-8 (``ensure_ascii=False``) and no NaN/Infinity. JSON has one number
type, so integral floats are written as integers (``1.0`` and ``1`` give the
same key) and ``-0.0`` as ``0``.

Fields added to the canonical request after ``pc1`` was fixed do not bump the
version: a dataclass field whose metadata has ``omit_when_default``
(``request.OMIT_WHEN_DEFAULT``, e.g. the sampling penalties, ``logit_bias``,
``top_k``, ``min_p``, ``repetition_penalty``) is left out while it has its
default value, so every request that does not use it keeps its ``pc1`` key,
and one that does gets a different key. ``SamplingParams`` normalises a
neutral value (a penalty of 0, ``top_k`` 0, a zero bias) to the default, so it
shares the unset request's key; ``logit_bias`` is a tuple of
``(int token id, bias)`` pairs sorted by id, whatever order the client sent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any

from promptcache.request import ChatRequest

KEY_VERSION = "pc1"
KEY_ALGORITHM = "sha256"

_MAX_EXACT_FLOAT_INT = 2**53
# The request's own fields that never affect the response.
_TRANSPORT_FIELDS = frozenset({"transport"})


def canonical_json(value: Any) -> str:
    """The canonical JSON text of a JSON-compatible value.

    Raises ``TypeError`` (or ``ValueError`` for NaN/Infinity) naming the
    offending field path when ``value`` holds something JSON cannot express.
    """
    return _dumps(_to_json_value(value, "$"))


def canonical_request_dict(request: ChatRequest) -> dict[str, Any]:
    """The request as plain JSON data, transport fields dropped.

    Tuples become lists, mappings plain dicts, dataclasses dicts of their
    fields; tenant and namespace are kept (they partition the cache).
    """
    out: dict[str, Any] = {}
    for f in fields(request):
        if f.name in _TRANSPORT_FIELDS:
            continue
        if f.metadata.get("omit_when_default") and getattr(request, f.name) == f.default:
            continue  # added after pc1 (ChatRequest.cache_control): unset keeps the old key
        out[f.name] = _to_json_value(getattr(request, f.name), f.name)
    return out


def response_key(request: ChatRequest) -> str:
    """The response-cache key of ``request``: ``pc1:sha256:<hex>``."""
    return _tagged_digest(_dumps(canonical_request_dict(request)))


def langchain_key(prompt: str, llm_string: str, *, namespace: str = "") -> str:
    """The key of LangChain's ``(prompt, llm_string)`` pair, in the same tagged form.

    The digest is over the canonical JSON of ``{"kind": "langchain", "llm_string": ...,
    "namespace": ..., "prompt": ...}``; the ``kind`` member keeps this key space apart
    from :func:`response_key`.
    """
    for name, value in (("prompt", prompt), ("llm_string", llm_string), ("namespace", namespace)):
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected str, got {type(value).__name__}")
    # That dict is already canonical (string leaves, keys in sorted order, "prompt"
    # last), so its JSON is written here directly rather than through the validating
    # walk, and the hash state after everything before the prompt, which one model
    # repeats on every call, is computed once per (llm_string, namespace).
    digest = _langchain_prefix(llm_string, namespace).copy()
    digest.update(f"{_json_string(prompt)}}}".encode())
    return f"{KEY_VERSION}:{KEY_ALGORITHM}:{digest.hexdigest()}"


@functools.lru_cache(maxsize=64)
def _langchain_prefix(llm_string: str, namespace: str) -> hashlib._Hash:
    """SHA-256 state after ``{"kind":"langchain","llm_string":…,"namespace":…,"prompt":``.

    Never updated in place: callers hash a ``copy()``.
    """
    head = (
        f'{{"kind":"langchain","llm_string":{_json_string(llm_string)},'
        f'"namespace":{_json_string(namespace)},"prompt":'
    )
    return hashlib.sha256(head.encode())


def _tagged_digest(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return f"{KEY_VERSION}:{KEY_ALGORITHM}:{digest}"


# A str as canonical JSON writes it (``json.dumps(s, ensure_ascii=False)``, C-accelerated).
_json_string = json.encoder.encode_basestring


def _dumps(value: Any) -> str:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _to_json_value(value: Any, path: str) -> Any:
    """Convert to plain JSON data, validating every leaf; errors name ``path``."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return int(value)  # int subclasses (IntEnum) serialise as plain numbers
    if isinstance(value, float):
        return _normalise_float(value, path)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{path}: mapping key {key!r} is a {type(key).__name__}; "
                    "only string keys can be serialised to canonical JSON"
                )
            out[key] = _to_json_value(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_json_value(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _to_json_value(getattr(value, f.name), f"{path}.{f.name}")
            for f in fields(value)
            if not (f.metadata.get("omit_when_default") and getattr(value, f.name) == f.default)
        }
    raise TypeError(
        f"{path}: a value of type {type(value).__name__} cannot be serialised to "
        "canonical JSON (use str, int, float, bool, None, lists and string-keyed dicts)"
    )


def _normalise_float(value: float, path: str) -> int | float:
    if not math.isfinite(value):
        raise ValueError(f"{path}: {value!r} is not valid JSON (NaN and Infinity are refused)")
    if value.is_integer() and abs(value) <= _MAX_EXACT_FLOAT_INT:
        return int(value)
    return value


__all__ = [
    "KEY_ALGORITHM",
    "KEY_VERSION",
    "canonical_json",
    "canonical_request_dict",
    "langchain_key",
    "response_key",
]
