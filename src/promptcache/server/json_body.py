"""A request body as JSON, or the client's 4xx: never an exception that becomes a 500.

Checked here, once, before any dialect sees the data:

* **Content type.** A declared type must be JSON (``application/json``,
  ``application/*+json``); anything else -- ``text/plain``, a form post -- is a
  415 that says which header to send. A body without ``Content-Type`` is read
  as JSON, as the providers' APIs do.
* **Syntax and encoding.** Invalid UTF-8 or JSON, numbers Python refuses to
  read (over 4,300 digits), and nesting deep enough to exhaust the parser's
  recursion are 400s.
* **Depth.** Values nested more than :data:`MAX_JSON_DEPTH` levels are a 400:
  every later walk over the request (dialect parsing, canonical JSON for the
  cache key, schema compilers) recurses, and no chat request needs more.
* **Lone surrogates.** JSON's ``\\ud800`` escape decodes to a Python string
  that cannot be encoded as UTF-8; such a string would fail the cache key, the
  tokenizer and any error message quoting it, so it is refused up front.

Both deep walks are skipped for the common body: nesting deeper than the limit
needs at least that many brackets, and a surrogate needs a ``\\ud`` escape, so
two byte counts decide whether the walk is needed at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from promptcache.errors import RequestError, UnsupportedMediaTypeError

MAX_JSON_DEPTH = 64
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_JSON_MEDIA = re.compile(r"^\s*application/(?:[\w.+-]+\+)?json\s*(?:;|$)", re.IGNORECASE)


def check_content_type(content_type: str | None) -> None:
    """Raise 415 unless ``content_type`` is absent or a JSON media type."""
    if content_type is None or not content_type.strip() or _JSON_MEDIA.match(content_type):
        return
    shown = content_type.strip()[:80].encode("ascii", "replace").decode()
    raise UnsupportedMediaTypeError(
        f"Unsupported Content-Type {shown!r}: the body must be JSON; "
        "send 'Content-Type: application/json'."
    )


def decode_json_body(body: bytes) -> Any:
    """The parsed body, or :class:`RequestError` naming what is wrong with it."""
    try:
        # Decoded strictly first: json.loads(bytes) would let the UTF-8 bytes of
        # a surrogate (ED A0 80) through as a lone surrogate.
        data = json.loads(body.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise RequestError(f"The request body is not valid UTF-8: {exc.reason}.") from None
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:  # e.g. an integer literal past Python's digit limit
        raise RequestError(f"The request body has a value that cannot be read: {exc}") from None
    may_be_deep = body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH
    may_have_surrogate = _SURROGATE_ESCAPE.search(body) is not None
    if may_be_deep or may_have_surrogate:
        _check_tree(data, surrogates=may_have_surrogate)
    return data


def _too_deep() -> RequestError:
    return RequestError(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.")


def _check_tree(data: Any, *, surrogates: bool) -> None:
    """Depth and lone surrogates, walked without recursion (the tree may be deep)."""
    stack: list[tuple[Any, int, str]] = [(data, 1, "$")]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if surrogates and _has_lone_surrogate(value):
                raise _surrogate_error(path)
            continue
        if not isinstance(value, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(value, dict):
            for key, item in value.items():
                if surrogates and _has_lone_surrogate(key):
                    raise _surrogate_error(path)
                stack.append((item, depth + 1, f"{path}.{key}"))
        else:
            stack.extend((item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value))


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _surrogate_error(path: str) -> RequestError:
    # The path may itself hold the bad key: make it printable before quoting it.
    shown = path.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
    return RequestError(
        f"The request body has a string with a lone UTF-16 surrogate escape (at {shown}); "
        "strings must be valid Unicode.",
        param=shown.removeprefix("$."),
    )
