"""Command line: ``promptcache serve | stats | clear | bench``.

Each command lives in its own module and registers itself on the shared
Typer ``app`` when imported here.

The command line comes with the ``server`` extra (and serving the embedded
model with ``local``). Without them :func:`main`, the console script, prints
the ``pip install`` that fixes it instead of a traceback; a command whose own
extra is missing (``bench`` without ``bench``) stays listed and says the same
when run, and the other commands keep working.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING

from promptcache._extras import MissingExtraError, missing_extra, needs_extra

_COMMANDS = ("serve", "stats", "clear", "bench")
_COMMAND_EXTRAS = {"serve": ("server", "local"), "bench": ("bench",)}
"""What to install for a command whose imports failed (``bench`` pulls in the rest)."""

_unavailable: MissingExtraError | None = None
"""Why there is no command line at all (its extras are missing), or None."""


def _register_unavailable(command: str, error: MissingExtraError) -> None:
    """A placeholder for ``command`` that says which extra it needs."""
    import typer

    extras = _COMMAND_EXTRAS.get(command, error.extras)
    shown = MissingExtraError(f"promptcache {command}", extras, module=error.name)

    @app.command(
        name=command,
        help=f"(unavailable: needs the {' and '.join(extras)} extra; run it for the fix)",
        add_help_option=False,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )
    def unavailable() -> None:
        typer.echo(f"Error: {shown}", err=True)
        raise typer.Exit(1)


try:
    with needs_extra("server"):
        from promptcache.cli._app import app
except MissingExtraError as no_cli:
    _unavailable = MissingExtraError(
        "The promptcache command", ("server", "local"), module=no_cli.name
    )
else:
    # Imported for their side effect of registering commands on ``app``.
    for _module in _COMMANDS:
        try:
            importlib.import_module(f"promptcache.cli.{_module}")
        except ImportError as no_command:
            if no_command.name == f"promptcache.cli.{_module}":  # a module not written yet
                continue
            _missing = missing_extra(no_command)
            if _missing is None:
                raise
            _register_unavailable(_module, _missing)


if not TYPE_CHECKING:

    def __getattr__(name: str) -> object:
        if name == "app" and _unavailable is not None:
            raise _unavailable
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """The ``promptcache`` console script: a missing extra is one line naming the fix."""
    try:
        if _unavailable is not None:
            raise _unavailable
        app()
    except ImportError as exc:
        missing = missing_extra(exc)
        if missing is None:
            raise
        print(f"Error: {missing}", file=sys.stderr)
        raise SystemExit(1) from None


__all__ = ["app", "main"]
