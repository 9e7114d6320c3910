"""Validation both dialects share: typed field access, worded by each API's style.

Validation goes through :class:`Fields`, which reads one JSON object and raises
a :class:`DialectRequestError` worded by an :class:`ErrorStyle` -- each dialect
supplies its own style, so an OpenAI client sees OpenAI's wording and an
Anthropic client sees Anthropic's, from one set of checks.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from promptcache.errors import RequestError
from promptcache.request import CacheControl

Path = tuple[str | int, ...]

TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# Integer fields are 64-bit in both APIs (and the engines hand a seed to a 64-bit RNG).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Free-form JSON (schemas, tool inputs) may hold any integer up to this many bits
# (~1,200 digits): far beyond any real schema, well inside what CPython will
# write as text (4,300 digits), so a cache key can always be made of it.
_MAX_INT_BITS = 4096
_SHOWN_CHARS = 80


def printable(text: str) -> str:
    """``text`` with any lone surrogate written as a ``\\udXXX`` escape: always UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def is_text(value: str) -> bool:
    """Whether ``value`` is Unicode text: no lone surrogate, so it encodes as UTF-8.

    JSON's ``"\\ud800"`` escape (and UTF-8 bytes of a surrogate, which Python's
    ``json`` decodes with ``surrogatepass``) gives a string that no cache key,
    tokenizer or response can be written from.
    """
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: Any) -> str:
    """A client's value as an error message quotes it: short, and always encodable.

    Strings are cut to 80 characters; containers are named, not dumped; an
    integer too long to print is described.
    """
    if isinstance(value, str):
        cut = value if len(value) <= _SHOWN_CHARS else f"{value[:_SHOWN_CHARS]}..."
        return printable(cut)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        if value.bit_length() > 128:
            return f"an integer of {value.bit_length()} bits"
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(value, f"{value:g}")
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shown_bound(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


class DialectRequestError(RequestError):
    """A :class:`RequestError` that also carries the API's machine-readable ``code``.

    Message and param are made encodable (a lone surrogate in a field name or a
    quoted value would otherwise make the error body itself unwritable).
    """

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(printable(message), param=None if param is None else printable(param))
        self.code = code


class ErrorStyle(ABC):
    """How one API words a validation failure. ``kind`` is one of
    ``string integer number boolean array object``."""

    @abstractmethod
    def path(self, path: Path) -> str: ...

    @abstractmethod
    def missing(self, path: Path) -> RequestError: ...

    @abstractmethod
    def wrong_type(self, path: Path, kind: str, value: Any) -> RequestError: ...

    @abstractmethod
    def not_one_of(self, path: Path, value: Any, allowed: Sequence[str]) -> RequestError: ...

    @abstractmethod
    def out_of_range(
        self, path: Path, value: float, *, minimum: float | None, maximum: float | None
    ) -> RequestError: ...

    @abstractmethod
    def not_text(self, path: Path, value: str) -> RequestError:
        """A string with a lone surrogate: not Unicode text."""

    @abstractmethod
    def not_finite(self, path: Path, value: Any) -> RequestError:
        """NaN, an infinity, or an integer too long to write: not a JSON number."""

    @abstractmethod
    def unknown_field(self, path: Path) -> RequestError: ...

    @abstractmethod
    def invalid(self, path: Path, message: str) -> RequestError: ...


_KINDS: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def is_kind(value: Any, kind: str) -> bool:
    """JSON type check; a bool is never an integer or a number here."""
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _KINDS[kind])


class Fields:
    """Typed, validated access to the fields of one JSON object at ``path``."""

    def __init__(self, style: ErrorStyle, value: Any, path: Path = ()) -> None:
        if not isinstance(value, dict):
            raise style.wrong_type(path, "object", value)
        self.style = style
        self.data: dict[str, Any] = value
        self.path = path

    def at(self, key: str | int) -> Path:
        return (*self.path, key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def reject_unknown(self, known: set[str] | frozenset[str]) -> None:
        for key in self.data:
            if key not in known:
                raise self.style.unknown_field(self.at(key))

    def get(self, key: str, kind: str, *, required: bool = False) -> Any:
        value = self.data.get(key)
        if value is None:
            if required:
                raise self.style.missing(self.at(key))
            return None
        if not is_kind(value, kind):
            raise self.style.wrong_type(self.at(key), kind, value)
        if kind == "string":
            check_text(self.style, self.at(key), value)
        return value

    def string(self, key: str, *, required: bool = False) -> str | None:
        value: str | None = self.get(key, "string", required=required)
        return value

    def required_string(self, key: str) -> str:
        value: str = self.get(key, "string", required=True)
        return value

    def boolean(self, key: str) -> bool | None:
        value: bool | None = self.get(key, "boolean")
        return value

    def array(self, key: str, *, required: bool = False) -> list[Any] | None:
        value: list[Any] | None = self.get(key, "array", required=required)
        return value

    def obj(self, key: str, *, required: bool = False) -> Fields | None:
        value = self.get(key, "object", required=required)
        return None if value is None else Fields(self.style, value, self.at(key))

    def required_obj(self, key: str) -> Fields:
        return Fields(self.style, self.get(key, "object", required=True), self.at(key))

    def choice(self, key: str, allowed: Sequence[str], *, required: bool = False) -> str | None:
        value = self.string(key, required=required)
        if value is not None and value not in allowed:
            raise self.style.not_one_of(self.at(key), value, allowed)
        return value

    def number(
        self, key: str, *, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        value = self.get(key, "number")
        if value is None:
            return None
        # As a float, so range errors speak of a decimal even when given 3.
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            number = math.inf if value > 0 else -math.inf
        if math.isnan(number):
            raise self.style.not_finite(self.at(key), value)
        check_range(self.style, self.at(key), number, minimum=minimum, maximum=maximum)
        if math.isinf(number):
            raise self.style.not_finite(self.at(key), value)
        return number

    def integer(
        self,
        key: str,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = self.get(key, "integer", required=required)
        if value is None:
            return None
        check_range(
            self.style,
            self.at(key),
            value,
            minimum=INT64_MIN if minimum is None else max(minimum, INT64_MIN),
            maximum=INT64_MAX if maximum is None else min(maximum, INT64_MAX),
        )
        return int(value)

    def json_value(self, key: str) -> Any:
        """A free-form JSON value (a schema, tool input) as given, checked by :func:`check_json`."""
        value = self.data.get(key)
        check_json(self.style, self.at(key), value)
        return value


def check_range(
    style: ErrorStyle,
    path: Path,
    value: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
) -> None:
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise style.out_of_range(path, value, minimum=minimum, maximum=maximum)


def check_text(style: ErrorStyle, path: Path, value: str) -> str:
    """``value``, or the dialect's 400 when it holds a lone surrogate."""
    if not is_text(value):
        raise style.not_text(path, value)
    return value


def check_json(style: ErrorStyle, path: Path, value: Any) -> None:
    """Refuse what a free-form JSON value must not hold: NaN, infinities, endless
    integers, strings (values or keys) with a lone surrogate.

    Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999`` (as infinity),
    none of which is JSON, so no cache key or response could be written for
    them. The walk is iterative: nesting depth costs no stack here.
    """
    stack: list[tuple[Path, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            check_text(style, where, item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise style.not_finite(where, item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if item.bit_length() > _MAX_INT_BITS:
                raise style.not_finite(where, item)
        elif isinstance(item, dict):
            for key, child in item.items():
                check_text(style, where, str(key))
                stack.append(((*where, str(key)), child))
        elif isinstance(item, list):
            stack.extend(((*where, i), v) for i, v in enumerate(item))


def loads_json_object(text: str) -> dict[str, Any] | None:
    """``text`` as a JSON object (tool-call arguments), or None if it is not one.

    ``NaN``/``Infinity`` tokens are refused, and so is nesting too deep for the
    decoder (a ``RecursionError``) or an integer too long to read; run
    :func:`check_json` on the result for what the decoder lets through (``1e999``).
    """

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    try:
        parsed = json.loads(text, parse_constant=refuse) if text.strip() else {}
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    return parsed if isinstance(parsed, dict) else None


def parse_cache_control(fields: Fields) -> CacheControl | None:
    """``cache_control: {"type": "ephemeral", "ttl"?: "5m" | "1h"}`` on any block."""
    marker = fields.obj("cache_control")
    if marker is None:
        return None
    marker.reject_unknown({"type", "ttl"})
    marker.choice("type", ("ephemeral",), required=True)
    ttl = marker.choice("ttl", ("5m", "1h"))
    return CacheControl(ttl="1h" if ttl == "1h" else "5m")
