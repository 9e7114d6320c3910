"""Optional dependencies: which extra installs a module, and the error that says so.

The core (keys, stores, the response cache) needs nothing beyond the standard
library; everything else comes with an extra (``pip install 'promptcache[redis]'``).
An import point that needs one calls :func:`require`, so a missing extra reads as
the ``pip install`` that fixes it rather than as a bare ``No module named ...``
(a block of imports sits in ``with needs_extra(...)`` for the same effect).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

EXTRA_OF_MODULE: dict[str, str] = {
    "torch": "local",
    "transformers": "local",
    "gguf": "local",
    "accelerate": "local",
    "safetensors": "local",
    "llguidance": "local",
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "httpx": "server",
    "prometheus_client": "server",
    "typer": "server",
    "click": "server",
    "rich": "server",
    "redis": "redis",
    "langchain_core": "langchain",
    "matplotlib": "bench",
    "langchain_community": "bench",
}
"""Top-level module -> the extra that installs it."""

FEATURE_OF_EXTRA: dict[str, str] = {
    "local": "The local engine",
    "server": "The server and the promptcache command",
    "redis": "Redis support",
    "langchain": "The LangChain cache",
    "bench": "The benchmarks",
}


def install_command(*extras: str) -> str:
    """``pip install 'promptcache[a,b]'``."""
    return f"pip install 'promptcache[{','.join(extras)}]'"


class MissingExtraError(ImportError):
    """A feature was used whose optional dependencies are not installed.

    The message names the ``pip install`` that fixes it; ``extras`` holds the
    extras it names and ``name`` (as for any ``ImportError``) the missing module.
    """

    def __init__(self, feature: str, extras: tuple[str, ...], *, module: str | None = None) -> None:
        noun = "extra" if len(extras) == 1 else "extras"
        named = " and ".join(extras)
        message = f"{feature} needs the {named} {noun}: {install_command(*extras)}"
        if module is not None:
            message += f" (no module named {module!r})"
        super().__init__(message, name=module)
        self.feature = feature
        self.extras = extras


def require(module: str, extra: str, *, feature: str | None = None) -> ModuleType:
    """Import ``module``, or raise :class:`MissingExtraError` naming ``extra``.

    Only the absence of ``module`` itself (or of a module it needs that the
    same extra installs) becomes a :class:`MissingExtraError`; any other
    import failure propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # ``exc.name`` is the module that could not be found: ``module`` itself,
        # or one it imports (``None`` in ``sys.modules`` reads the same way).
        missing = exc.name
        if missing is None or (
            missing != module and EXTRA_OF_MODULE.get(missing.partition(".")[0]) != extra
        ):
            raise
        shown = feature or FEATURE_OF_EXTRA.get(extra, "This feature of promptcache")
        raise MissingExtraError(shown, (extra,), module=missing) from exc


@contextmanager
def needs_extra(*extras: str, feature: str | None = None) -> Iterator[None]:
    """Around a block of imports: a module one of ``extras`` installs that is
    missing raises :class:`MissingExtraError` naming them; any other import
    failure propagates unchanged.

        with needs_extra("langchain"):
            from langchain_core.caches import BaseCache
    """
    try:
        yield
    except ImportError as exc:
        missing = exc.name
        if missing is None or EXTRA_OF_MODULE.get(missing.partition(".")[0]) not in extras:
            raise
        shown = feature or FEATURE_OF_EXTRA.get(extras[0], "This feature of promptcache")
        raise MissingExtraError(shown, extras, module=missing) from exc


def missing_extra(exc: ImportError) -> MissingExtraError | None:
    """The :class:`MissingExtraError` an import failure stands for, if a known extra
    installs the missing module; None for any other import failure."""
    if isinstance(exc, MissingExtraError):
        return exc
    if exc.name is None:
        return None
    extra = EXTRA_OF_MODULE.get(exc.name.partition(".")[0])
    if extra is None:
        return None
    return MissingExtraError(FEATURE_OF_EXTRA[extra], (extra,), module=exc.name)


__all__ = [
    "EXTRA_OF_MODULE",
    "FEATURE_OF_EXTRA",
    "MissingExtraError",
    "install_command",
    "missing_extra",
    "needs_extra",
    "require",
]
