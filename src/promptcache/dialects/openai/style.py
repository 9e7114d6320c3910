"""How the OpenAI dialect words a validation failure: the real API's messages and codes.

``Missing required parameter: 'model'.``, ``Invalid type for 'messages.[0].role'
...``, with ``param`` as a dotted path and ``code`` as OpenAI sends it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from promptcache.dialects._fields import (
    DialectRequestError,
    ErrorStyle,
    Path,
    is_kind,
    shown,
    shown_bound,
)
from promptcache.errors import RequestError

_KIND_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a decimal",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
}


def _json_kind(value: Any) -> str:
    for kind in ("boolean", "integer", "number", "string", "array", "object"):
        if is_kind(value, kind):
            return _KIND_WORDS[kind]
    return "null"


class OpenAIErrorStyle(ErrorStyle):
    def path(self, path: Path) -> str:
        return ".".join(f"[{p}]" if isinstance(p, int) else p for p in path)

    def missing(self, path: Path) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Missing required parameter: '{p}'.", param=p, code="missing_required_parameter"
        )

    def wrong_type(self, path: Path, kind: str, value: Any) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Invalid type for '{p}': expected {_KIND_WORDS[kind]}, "
            f"but got {_json_kind(value)} instead.",
            param=p,
            code="invalid_type",
        )

    def not_one_of(self, path: Path, value: Any, allowed: Sequence[str]) -> RequestError:
        options = ", ".join(f"'{a}'" for a in allowed)
        return DialectRequestError(
            f"Invalid value: '{shown(value)}'. Supported values are: {options}.",
            param=self.path(path),
            code="invalid_value",
        )

    def out_of_range(
        self, path: Path, value: float, *, minimum: float | None, maximum: float | None
    ) -> RequestError:
        p = self.path(path)
        word = "integer" if isinstance(value, int) else "decimal"
        if minimum is not None and value < minimum:
            return DialectRequestError(
                f"Invalid '{p}': {word} below minimum value. "
                f"Expected a value >= {shown_bound(minimum)}, but got {shown(value)} instead.",
                param=p,
                code=f"{word}_below_min_value",
            )
        return DialectRequestError(
            f"Invalid '{p}': {word} above maximum value. Expected a value <= "
            f"{shown_bound(math.inf if maximum is None else maximum)}, "
            f"but got {shown(value)} instead.",
            param=p,
            code=f"{word}_above_max_value",
        )

    def not_text(self, path: Path, value: str) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Invalid '{p}': string with a lone UTF-16 surrogate ('{shown(value)}'); "
            "strings must be valid Unicode.",
            param=p,
            code="invalid_value",
        )

    def not_finite(self, path: Path, value: Any) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Invalid '{p}': expected a finite number, but got {shown(value)} instead.",
            param=p,
            code="invalid_value",
        )

    def unknown_field(self, path: Path) -> RequestError:
        p = self.path(path)
        return DialectRequestError(
            f"Unrecognized request argument supplied: {p}", param=p, code="unknown_parameter"
        )

    def invalid(self, path: Path, message: str) -> RequestError:
        return DialectRequestError(message, param=self.path(path) or None, code="invalid_value")


STYLE = OpenAIErrorStyle()
