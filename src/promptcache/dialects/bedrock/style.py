"""How the Bedrock dialect words a validation failure: Bedrock's own messages.

``1 validation error detected: Value at 'messages.1.member.content' failed to
satisfy constraint: ...``, with the dotted path as ``param``. :data:`STYLE` is
what the Converse parser (``converse_parse.py``) validates with.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from promptcache.dialects._fields import (
    DialectRequestError,
    ErrorStyle,
    Path,
    shown,
    shown_bound,
)
from promptcache.errors import RequestError

_KINDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "array": "a list",
    "object": "a structure",
}


class BedrockErrorStyle(ErrorStyle):
    """Bedrock's wording: ``Value at 'messages.1.member.content' failed to satisfy ...``."""

    def path(self, path: Path) -> str:
        return ".".join(str(p) for p in path)

    def _error(self, path: Path, message: str) -> RequestError:
        where = self.path(path)
        text = f"1 validation error detected: Value at '{where}' {message}" if where else message
        return DialectRequestError(text, param=where or None)

    def missing(self, path: Path) -> RequestError:
        return self._error(path, "failed to satisfy constraint: Member must not be null")

    def wrong_type(self, path: Path, kind: str, value: Any) -> RequestError:
        return self._error(path, f"failed to satisfy constraint: Member must be {_KINDS[kind]}")

    def not_one_of(self, path: Path, value: Any, allowed: Sequence[str]) -> RequestError:
        return self._error(
            path,
            f"'{shown(value)}' failed to satisfy constraint: Member must satisfy enum value "
            f"set: [{', '.join(allowed)}]",
        )

    def out_of_range(
        self, path: Path, value: float, *, minimum: float | None, maximum: float | None
    ) -> RequestError:
        if minimum is not None and value < minimum:
            bound = f"greater than or equal to {shown_bound(minimum)}"
        else:
            bound = f"less than or equal to {shown_bound(math.inf if maximum is None else maximum)}"
        return self._error(path, f"failed to satisfy constraint: Member must be {bound}")

    def not_text(self, path: Path, value: str) -> RequestError:
        return self._error(path, "failed to satisfy constraint: Member must be valid Unicode")

    def not_finite(self, path: Path, value: Any) -> RequestError:
        return self._error(path, "failed to satisfy constraint: Member must be a finite number")

    def unknown_field(self, path: Path) -> RequestError:
        return self._error(path, "is not a field this server accepts (extraneous key)")

    def invalid(self, path: Path, message: str) -> RequestError:
        return self._error(path, message)


STYLE = BedrockErrorStyle()
