"""How the Anthropic dialect words a validation failure: the Messages API's own messages.

``max_tokens: Field required``, ``messages.0.role: Input should be 'user' or
'assistant'``, ``Extra inputs are not permitted``: pydantic-style wording with
the dotted path in front and as ``param``. :data:`STYLE` is shared by every
module of this dialect and by Bedrock's InvokeModel (an Anthropic body).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from promptcache.dialects._fields import (
    DialectRequestError,
    ErrorStyle,
    Path,
    shown_bound,
)
from promptcache.errors import RequestError

_KIND_WORDS = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "array": "list",
    "object": "dictionary",
}


class AnthropicErrorStyle(ErrorStyle):
    def path(self, path: Path) -> str:
        return ".".join(str(p) for p in path)

    def _error(self, path: Path, message: str) -> RequestError:
        where = self.path(path)
        return DialectRequestError(f"{where}: {message}" if where else message, param=where or None)

    def missing(self, path: Path) -> RequestError:
        return self._error(path, "Field required")

    def wrong_type(self, path: Path, kind: str, value: Any) -> RequestError:
        return self._error(path, f"Input should be a valid {_KIND_WORDS[kind]}")

    def not_one_of(self, path: Path, value: Any, allowed: Sequence[str]) -> RequestError:
        quoted = [f"'{a}'" for a in allowed]
        options = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        return self._error(path, f"Input should be {options}")

    def out_of_range(
        self, path: Path, value: float, *, minimum: float | None, maximum: float | None
    ) -> RequestError:
        if minimum is not None and value < minimum:
            return self._error(
                path, f"Input should be greater than or equal to {shown_bound(minimum)}"
            )
        bound = shown_bound(math.inf if maximum is None else maximum)
        return self._error(path, f"Input should be less than or equal to {bound}")

    def not_text(self, path: Path, value: str) -> RequestError:
        return self._error(
            path, "Input should be a valid string, unable to parse raw data as a unicode string"
        )

    def not_finite(self, path: Path, value: Any) -> RequestError:
        return self._error(path, "Input should be a finite number")

    def unknown_field(self, path: Path) -> RequestError:
        return self._error(path, "Extra inputs are not permitted")

    def invalid(self, path: Path, message: str) -> RequestError:
        return self._error(path, message)


STYLE = AnthropicErrorStyle()
