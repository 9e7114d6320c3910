"""``promptcache clear``: remove every entry of a response-cache store."""

from __future__ import annotations

from typing import Annotated

import typer

from promptcache.cli._app import app
from promptcache.cli.stats import STORE_OPTION
from promptcache.errors import StoreError
from promptcache.store import DEFAULT_STORE_URL, open_store, redact_url


@app.command()
def clear(store: Annotated[str, STORE_OPTION] = DEFAULT_STORE_URL) -> None:
    """Remove every entry of a response cache (hit/miss history is kept)."""
    try:
        with open_store(store, create=False) as opened:
            removed = opened.clear()
    except (StoreError, ValueError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Removed {removed:,} entries from {redact_url(store)}")
