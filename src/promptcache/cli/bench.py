"""``promptcache bench``: measure the local engine's prefix cache and leave a JSON and a PNG.

Writes ``bench.json`` (schema in :mod:`promptcache.bench.report`) and
``bench.png`` into ``--out`` (default ``./.promptcache/bench/``), showing a
rich progress bar while the engine runs and a summary table at the end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from promptcache.bench.plot import plot_report
from promptcache.bench.report import BenchReport
from promptcache.bench.runner import BenchConfig, BenchRunner, load_local_engine
from promptcache.cli._app import app
from promptcache.cost.pricing import BUILTIN_PROFILES, PriceTable

DEFAULT_OUT = Path(".promptcache/bench")


class _RichProgress:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def begin(self, description: str) -> None:
        self._progress.update(self._task, description=description)

    def advance(self) -> None:
        self._progress.advance(self._task)


@app.command()
def bench(
    out: Annotated[
        Path, typer.Option("--out", help="Directory for bench.json and bench.png.")
    ] = DEFAULT_OUT,
    quick: Annotated[
        bool, typer.Option("--quick", help="Shorter prompts, one sample each, 4 session turns.")
    ] = False,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help=f"Pricing profile for the session cost: {', '.join(BUILTIN_PROFILES)}.",
        ),
    ] = "anthropic",
    price_model: Annotated[
        str | None,
        typer.Option(
            "--price-model",
            help="Model whose list price prices the session (default: one per profile, "
            "e.g. claude-sonnet-4-5 for anthropic).",
        ),
    ] = None,
    prices: Annotated[
        Path | None,
        typer.Option("--prices", help="TOML price table, merged over the built-in prices."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model directory or GGUF file (default: embedded SmolLM2)."),
    ] = None,
    sizes: Annotated[
        str | None,
        typer.Option("--sizes", help="Comma-separated prompt lengths in tokens, e.g. 256,1024."),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", help="Samples per point (median is reported).")
    ] = None,
    turns: Annotated[
        int | None, typer.Option("--turns", help="Turns of the priced chat session.")
    ] = None,
) -> None:
    """Benchmark the prefix cache: time to first token vs. prompt length, and session cost."""
    console = Console()
    try:
        overrides: dict[str, Any] = {"profile": profile, "price_model": price_model}
        if sizes is not None:
            overrides["sizes"] = tuple(int(s) for s in sizes.split(",") if s.strip())
        if repeats is not None:
            overrides["repeats"] = repeats
        if turns is not None:
            overrides["session_turns"] = turns
        config = BenchConfig.quick_run(**overrides) if quick else BenchConfig(**overrides)
        table = PriceTable.from_toml(prices) if prices is not None else PriceTable.builtin()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    with console.status("Loading the model (the first run converts the weights once)..."):
        target = load_local_engine(model=model)
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("starting", total=config.step_count())
        report = BenchRunner(
            target, config, prices=table, progress=_RichProgress(progress, task)
        ).run()
        progress.update(task, description="done")

    json_path, png_path = write_outputs(report, out)
    console.print(summary_table(report))
    console.print(f"Numbers: [bold]{json_path}[/]\nPlot:    [bold]{png_path}[/]")


def write_outputs(report: BenchReport, out: Path) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.png`` into ``out``; return both paths."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    png_path = plot_report(report, out / "bench.png")
    return json_path, png_path


def summary_table(report: BenchReport) -> Table:
    table = Table(title="promptcache bench", title_justify="left")
    table.add_column("measure")
    table.add_column("miss / no cache", justify="right")
    table.add_column("hit / cached", justify="right")
    table.add_column("gain", justify="right")
    for point in report.ttft:
        table.add_row(
            f"TTFT, {point.prompt_tokens}-token prompt ({point.cached_tokens} cached)",
            f"{point.miss_s * 1000:.0f} ms",
            f"{point.hit_s * 1000:.0f} ms",
            f"{point.miss_over_hit:.1f}x faster",
        )
    session = report.session
    if session is not None:
        table.add_row(
            f"{len(session.turns)}-turn session cost ({session.price_model}, {session.profile})",
            f"${session.total_cost_without_cache:.6f}",
            f"${session.total_cost:.6f}",
            f"{session.saved_percent:.0f}% saved",
        )
    return table


__all__ = ["bench", "summary_table", "write_outputs"]
