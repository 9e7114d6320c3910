"""``promptcache clear``: remove every entry of a response-cache store, or (``--kv``)
every block of the KV prefix cache's disk tier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptcache.cli._app import app
from promptcache.cli.stats import DEFAULT_KV_DISK_PATH, STORE_OPTION, human_bytes
from promptcache.errors import StoreError
from promptcache.store import DEFAULT_STORE_URL, open_store, redact_url

KV_OPTION = typer.Option(
    "--kv",
    help="Empty the KV prefix cache's disk tier (at --kv-disk-path) instead of the "
    "response cache. Refused while a server uses it: clear a running one with "
    "DELETE /v1/cache.",
)
KV_DISK_PATH_OPTION = typer.Option(
    "--kv-disk-path", help=f"The disk tier's directory (default {DEFAULT_KV_DISK_PATH})."
)


@app.command()
def clear(
    store: Annotated[str, STORE_OPTION] = DEFAULT_STORE_URL,
    kv: Annotated[bool, KV_OPTION] = False,
    kv_disk_path: Annotated[str | None, KV_DISK_PATH_OPTION] = None,
) -> None:
    """Remove every entry of a response cache (hit/miss history is kept), or --kv every
    block of the KV disk tier."""
    if kv:
        _clear_kv(Path(kv_disk_path or DEFAULT_KV_DISK_PATH).expanduser())
        return
    if kv_disk_path is not None:
        raise typer.BadParameter("applies with --kv", param_hint="--kv-disk-path")
    try:
        with open_store(store, create=False) as opened:
            removed = opened.clear()
    except (StoreError, ValueError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Removed {removed:,} entries from {redact_url(store)}")


def _clear_kv(directory: Path) -> None:
    from promptcache.prefix.disk import clear_directory  # torch: only when asked for

    try:
        removed = clear_directory(directory)
    except (ValueError, OSError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"Removed {removed.blocks:,} KV blocks ({human_bytes(removed.bytes)}) from {directory}"
    )
