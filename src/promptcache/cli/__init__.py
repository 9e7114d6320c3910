"""Command line: ``promptcache serve | stats | clear | bench``.

Each command lives in its own module and registers itself on the shared
Typer ``app`` when imported here.
"""

from __future__ import annotations

import importlib

from promptcache.cli._app import app

# Imported for their side effect of registering commands on ``app``.
for _module in ("serve", "stats", "clear", "bench"):
    try:
        importlib.import_module(f"promptcache.cli.{_module}")
    except ModuleNotFoundError as exc:  # a command module not written yet
        if exc.name != f"promptcache.cli.{_module}":
            raise


def main() -> None:
    app()


__all__ = ["app", "main"]
