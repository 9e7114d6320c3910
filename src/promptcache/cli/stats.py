"""``promptcache stats``: figures of a response-cache store, as a rich table.

Each source of figures is a function returning rows; ``--store URL`` reads a
store directly. ``--url`` reads a running server's ``/v1/cache/stats``: what
caching saved (cost, cost without cache, saved, hit ratios; overall, per model
and per tenant) and the figures of both caches.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from promptcache.cli._app import app
from promptcache.errors import StoreError
from promptcache.store import DEFAULT_STORE_URL, StoreStats, open_store, redact_url

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
        ("bytes", human_bytes(stats.bytes)),
        ("hits", f"{stats.hits:,}"),
        ("misses", f"{stats.misses:,}"),
        ("hit ratio", f"{stats.hit_ratio:.1%}"),
        ("evictions", f"{stats.evictions:,}"),
    ]


URL_OPTION = typer.Option(
    "--url",
    envvar="PROMPTCACHE_URL",
    help="A running server, e.g. http://127.0.0.1:8000: show its costs and savings.",
)
DEFAULT_KV_DISK_PATH = ".promptcache/kv"
"""Where ``serve`` keeps the KV disk tier, and ``clear --kv`` looks (here: no torch import)."""
KV_DISK_PATH_OPTION = typer.Option(
    "--kv-disk-path",
    help="A KV disk tier's directory (e.g. .promptcache/kv): show the blocks it holds.",
)
API_KEY_OPTION = typer.Option(
    "--api-key", envvar="PROMPTCACHE_API_KEY", help="Key for a server started with --api-key."
)


@app.command()
def stats(
    store: Annotated[str, STORE_OPTION] = DEFAULT_STORE_URL,
    url: Annotated[str | None, URL_OPTION] = None,
    api_key: Annotated[str | None, API_KEY_OPTION] = None,
    kv_disk_path: Annotated[str | None, KV_DISK_PATH_OPTION] = None,
) -> None:
    """Show a response cache's figures, or (--url) what a running server's caching saved
    and its KV tiers, or (--kv-disk-path) what a KV disk tier holds."""
    if kv_disk_path is not None:
        try:
            title, rows = disk_tier_rows(Path(kv_disk_path).expanduser())
        except (ValueError, OSError, sqlite3.Error) as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from exc
        render_rows(title, rows)
        return
    if url is not None:
        try:
            body = fetch_server_stats(url, api_key=api_key)
        except (httpx.HTTPError, ValueError) as exc:
            shown = redact_url(url)
            typer.echo(f"Error: cannot read {shown}/v1/cache/stats: {exc}", err=True)
            raise typer.Exit(1) from exc
        console = Console()
        for table in server_stats_tables(body, url=redact_url(url)):
            console.print(table)
        return
    try:
        title, rows = store_stats_rows(store)
    except (StoreError, ValueError) as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from exc
    render_rows(title, rows)


def disk_tier_rows(directory: Path) -> tuple[str, Rows]:
    """Title and rows for the KV disk tier under ``directory`` (read only)."""
    from promptcache.prefix.disk import describe_directory  # torch: only when asked for

    figures = describe_directory(directory)
    rows: Rows = [("blocks", f"{figures.blocks:,}"), ("bytes", human_bytes(figures.bytes))]
    if figures.fingerprint is not None:
        rows.extend((f"written for: {name}", value) for name, value in figures.fingerprint.fields)
    return f"KV disk tier: {directory}", rows


def render_rows(title: str, rows: Rows) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{count:,} B"


def fetch_server_stats(url: str, *, api_key: str | None = None) -> dict[str, Any]:
    """The JSON body of ``GET <url>/v1/cache/stats``."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    response = httpx.get(url.rstrip("/") + "/v1/cache/stats", headers=headers, timeout=10.0)
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
    body = response.json()
    if not isinstance(body, dict):
        raise ValueError("the server answered something other than a JSON object")
    return body


def server_stats_tables(body: dict[str, Any], *, url: str) -> list[Table]:
    """Rich tables for a ``/v1/cache/stats`` body: costs and savings, then both caches."""
    tables: list[Table] = []
    costs = body.get("costs")
    if isinstance(costs, dict):
        tables.append(_costs_table(costs, url))
    tables.append(_caches_table(body, url))
    prefix = body.get("prefix_cache")
    tiers = prefix.get("tiers") if isinstance(prefix, dict) else None
    if isinstance(tiers, list) and tiers:
        tables.append(_tiers_table(tiers, url))
    return tables


_TIER_COLUMNS = (
    "used / budget",
    "blocks",
    "hits",
    "promotions",
    "demotions",
    "evictions",
    "queue drops",
    "corrupt",
    "read bandwidth",
)


def _tiers_table(tiers: list[Any], url: str) -> Table:
    """The KV prefix cache per tier (ram, disk): what each holds and how blocks moved."""
    table = Table(title=f"KV prefix cache tiers: {url}", title_justify="left")
    table.add_column("tier")
    for column in _TIER_COLUMNS:
        table.add_column(column, justify="right")
    for tier in tiers:
        if not isinstance(tier, dict):
            continue
        bandwidth = float(tier.get("read_bytes_per_second", 0.0))
        table.add_row(
            str(tier.get("tier", "?")),
            f"{human_bytes(int(tier.get('bytes_used', 0)))} / "
            f"{human_bytes(int(tier.get('bytes_budget', 0)))}",
            *(
                f"{int(tier.get(name, 0)):,}"
                for name in (
                    "blocks",
                    "hits",
                    "promotions",
                    "demotions",
                    "evictions",
                    "write_queue_drops",
                    "corrupt_blocks",
                )
            ),
            f"{human_bytes(int(bandwidth))}/s" if bandwidth else "-",
        )
    return table


_COST_COLUMNS = (
    "requests",
    "response-cache hits",
    "prompt tokens",
    "cached tokens",
    "output tokens",
    "cost",
    "without cache",
    "saved",
)


def _costs_table(costs: dict[str, Any], url: str) -> Table:
    table = Table(title=f"What caching saved: {url}", title_justify="left")
    table.add_column("slice")
    for column in _COST_COLUMNS:
        table.add_column(column, justify="right")
    total = costs.get("total") or {}
    table.add_row("[bold]all requests[/]", *_cost_cells(total), end_section=True)
    for label, key in (("model", "by_model"), ("tenant", "by_tenant")):
        slices = costs.get(key) or {}
        for index, (name, figures) in enumerate(slices.items()):
            table.add_row(
                f"{label} {name}", *_cost_cells(figures), end_section=index == len(slices) - 1
            )
    unpriced = [
        name
        for name, figures in (costs.get("by_model") or {}).items()
        if not (figures.get("price") or {}).get("matched", True)
    ]
    if unpriced:
        table.caption = (
            f"No price entry for {', '.join(unpriced)}: priced at the default "
            "(set one with promptcache serve --prices FILE)."
        )
    return table


def _cost_cells(figures: dict[str, Any]) -> list[str]:
    requests = int(figures.get("requests", 0))
    hits = int(figures.get("response_cache_hits", 0))
    saved = Decimal(str(figures.get("saved", "0")))
    style = "green" if saved > 0 else "red" if saved < 0 else ""
    saved_text = f"{_money(saved)} ({float(figures.get('saved_percent', 0.0)):.1f}%)"
    return [
        f"{requests:,}",
        f"{hits:,} ({float(figures.get('hit_ratio_requests', 0.0)):.0%})",
        f"{int(figures.get('prompt_tokens', 0)):,}",
        f"{int(figures.get('cached_prompt_tokens', 0)):,} "
        f"({float(figures.get('hit_ratio_prompt_tokens', 0.0)):.0%})",
        f"{int(figures.get('output_tokens', 0)):,}",
        _money(Decimal(str(figures.get("cost", "0")))),
        _money(Decimal(str(figures.get("cost_without_cache", "0")))),
        f"[{style}]{saved_text}[/]" if style else saved_text,
    ]


def _money(amount: Decimal) -> str:
    """Dollars with enough digits to show sub-cent amounts (built-in prices are USD)."""
    if amount == 0:
        return "$0"
    digits = 2 if abs(amount) >= 10 else 4 if abs(amount) >= Decimal("0.01") else 6
    return f"{'-' if amount < 0 else ''}${abs(amount):,.{digits}f}"


def _caches_table(body: dict[str, Any], url: str) -> Table:
    rows: Rows = []
    requests = body.get("requests") or {}
    if requests:
        rows.append(
            (
                "response cache: hit / miss / bypass",
                f"{requests.get('hit', 0):,} / {requests.get('miss', 0):,} / "
                f"{requests.get('bypass', 0):,} ({float(requests.get('hit_ratio', 0.0)):.1%} hits)",
            )
        )
    store = body.get("response_cache")
    if isinstance(store, dict):
        rows.append(("response cache: entries", f"{int(store.get('entries', 0)):,}"))
        rows.append(("response cache: bytes", human_bytes(int(store.get("bytes", 0)))))
    prefix = body.get("prefix_cache")
    if isinstance(prefix, dict):
        rows.append(
            (
                "prefix cache: tokens hit / queried",
                f"{int(prefix.get('tokens_hit', 0)):,} / {int(prefix.get('tokens_queried', 0)):,}"
                f" ({float(prefix.get('token_hit_ratio', 0.0)):.1%})",
            )
        )
        rows.append(
            (
                "prefix cache: KV used / pinned / budget",
                f"{human_bytes(int(prefix.get('kv_bytes_used', 0)))} / "
                f"{human_bytes(int(prefix.get('kv_bytes_pinned', 0)))} / "
                f"{human_bytes(int(prefix.get('kv_bytes_budget', 0)))}",
            )
        )
        rows.append(("prefix cache: evictions", f"{int(prefix.get('evictions', 0)):,}"))
    table = Table(title=f"Caches: {url}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
