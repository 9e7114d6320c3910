"""No import runs up the layers: each package imports only from the layers beneath it.

The layers, bottom up: the core value types and contracts (``request``, ``keys``,
``errors``, ``usage``, ``checkpoints``), ``store``, ``response_cache``, ``cost``;
``prefix`` and ``model`` (the KV cache and the model maths, side by side);
``engine``; ``dialects`` (which know nothing of engines); ``server``; then
``integrations``, ``cli`` and ``bench`` at the edges. The package's own
``__init__`` is the public face and may name anything (lazily).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import promptcache

ROOT = Path(promptcache.__file__).parent
EDGES = {"cli", "bench", "integrations"}
FORBIDDEN: dict[str, set[str]] = {
    "core": {"store", "response_cache", "cost", "engine", "model", "prefix", "server",
             "dialects"} | EDGES,
    "store": {"response_cache", "cost", "engine", "model", "prefix", "server",
              "dialects"} | EDGES,
    "response_cache": {"cost", "engine", "model", "prefix", "server", "dialects"} | EDGES,
    "cost": {"engine", "model", "prefix", "server", "dialects"} | EDGES,
    "prefix": {"engine", "model", "server", "dialects"} | EDGES,
    "model": {"engine", "prefix", "server", "dialects"} | EDGES,
    "engine": {"server"} | EDGES,
    "dialects": {"engine", "model", "prefix", "server"} | EDGES,
    "server": {"cli", "bench"},
    "integrations": {"engine", "model", "prefix", "server", "dialects", "cli", "bench"},
}  # fmt: skip
CORE_MODULES = {"request", "keys", "errors", "usage", "checkpoints", "_extras"}


def _layer(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    if len(parts) == 1:
        name = parts[0].removesuffix(".py")
        return "core" if name in CORE_MODULES else None
    return parts[0]


def _imported_layers(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "promptcache" and len(parts) > 1:
                target = parts[1]
                found.add("core" if target in CORE_MODULES else target)
    return found


MODULES = sorted(p for p in ROOT.rglob("*.py") if _layer(p) in FORBIDDEN)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_import_runs_up_the_layers(path: Path) -> None:
    layer = _layer(path)
    assert layer is not None
    upward = _imported_layers(path) & FORBIDDEN[layer]
    assert not upward, f"{path.relative_to(ROOT)} ({layer}) imports from {sorted(upward)}"


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(FORBIDDEN) | EDGES
