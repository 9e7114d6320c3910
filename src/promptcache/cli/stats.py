"""``promptcache stats``: figures of a response-cache store, as a rich table.

Each source of figures is a function returning rows; ``--store URL`` reads a
store directly. Another source (e.g. a running server's ``/v1/cache/stats``)
plugs in as one more option and one more row function.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from promptcache.cli._app import app
from promptcache.errors import StoreError
from promptcache.store import DEFAULT_STORE_URL, StoreStats, open_store

Rows = list[tuple[str, str]]

STORE_OPTION = typer.Option(
    "--store",
    envvar="PROMPTCACHE_STORE",
    help="Store URL: memory://, sqlite:///path.db, redis://host:port/db",
)


def store_stats_rows(url: str) -> tuple[str, Rows]:
    """Title and rows for the store at ``url`` (it must already exist)."""
    with open_store(url, create=False) as store:
        return f"Response cache: {store.url}", format_store_stats(store.stats())


def format_store_stats(stats: StoreStats) -> Rows:
    return [
        ("entries", f"{stats.entries:,}"),
        ("bytes", _human_bytes(stats.bytes)),
        ("hits", f"{stats.hits:,}"),
        ("misses", f"{stats.misses:,}"),
        ("hit ratio", f"{stats.hit_ratio:.1%}"),
        ("evictions", f"{stats.evictions:,}"),
    ]


@app.command()
def stats(store: Annotated[str, STORE_OPTION] = DEFAULT_STORE_URL) -> None:
    """Show entries, size, hits, misses and evictions of a response cache."""
    try:
        title, rows = store_stats_rows(store)
    except (StoreError, ValueError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    render_rows(title, rows)


def render_rows(title: str, rows: Rows) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{count:,} B"
