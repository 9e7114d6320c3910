"""The soak's report: one table (or one JSON object) of verdicts from what the run saw."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from _soak_load import FAILING, Context, is_failure, log
from _soak_procs import MemoryRecord
from _soak_requests import all_kinds


@dataclass(frozen=True, kw_only=True)
class SoakConfig:
    """What the soak configures the server with, and the memory slack it allows."""

    kv_cache_bytes: int
    min_cache_tokens: int
    max_body_bytes: int
    engine_workers: int
    rss_slack_bytes: int


@dataclass(kw_only=True)
class Results:
    redis_outage_seconds: float | None = None
    redis_recovery_seconds: float | None = None
    sigkill_restart_seconds: float | None = None
    sigterm_stopped: list[bool] = field(default_factory=list)
    entries_checked: int = 0
    entries_across_kill: int = 0
    lost: list[str] = field(default_factory=list)
    at_rest: list[dict[str, Any]] = field(default_factory=list)
    memory: list[MemoryRecord] = field(default_factory=list)
    requests_sent: int = 0
    wall_seconds: float = 0.0
    error: str | None = None


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.0f} MiB"


@dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    value: str
    detail: str
    ok: bool


def _statuses_text(counts: Counter[str]) -> str:
    return " ".join(f"{status}×{n}" for status, n in sorted(counts.items()))


def build_checks(
    ctx: Context, results: Results, config: SoakConfig
) -> tuple[list[Check], list[Check]]:
    """(rows by kind, checks). A row by kind fails on any 5xx, hang or broken connection."""
    kinds: list[Check] = []
    expected = all_kinds()
    for kind, expect in expected.items():
        counts = ctx.tally.by_kind.get(kind, Counter())
        failures = sum(n for status, n in counts.items() if is_failure(status))
        unexpected = [s for s in counts if s not in {str(e) for e in expect} | {"cut"}]
        note = f"  (expected {'/'.join(map(str, expect))})" if unexpected else ""
        kinds.append(
            Check(
                name=kind,
                value=str(sum(counts.values())),
                detail=_statuses_text(counts) + note,
                ok=failures == 0 and sum(counts.values()) > 0,
            )
        )
    statuses = ctx.tally.statuses()
    fivexx = sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500)
    broken = sum(statuses[s] for s in FAILING)
    worst_5xx = sorted(
        {k for k, c in ctx.tally.by_kind.items() for s in c if s.isdigit() and int(s) >= 500}
    )
    worst_broken = sorted({k for k, c in ctx.tally.by_kind.items() for s in c if s in FAILING})
    checks = [
        Check(
            name="responses by status",
            value=str(sum(statuses.values())),
            detail=_statuses_text(statuses) + f"  cache: {_statuses_text(ctx.tally.cache)}",
            ok=fivexx == 0 and broken == 0,
        ),
        Check(name="5xx = 0", value=str(fivexx), detail=", ".join(worst_5xx), ok=fivexx == 0),
        Check(
            name="hung + broken = 0",
            value=str(broken),
            detail=_statuses_text(Counter({s: statuses[s] for s in FAILING if statuses[s]}))
            + ("  in " + ", ".join(worst_broken) if worst_broken else "")
            + (_overload_note(ctx) if statuses["hung"] else ""),
            ok=broken == 0,
        ),
    ]
    checks.append(
        Check(
            name="entries lost = 0",
            value=str(len(results.lost)),
            detail=f"of {results.entries_checked} stored entries checked at the end, "
            f"{results.entries_across_kill} of them across the SIGKILL restart",
            ok=not results.lost and results.entries_across_kill > 0,
        )
    )
    checks.append(_rss_check(results.memory, config))
    references = [figures.get("blocks_referenced") for figures in results.at_rest]
    checks.append(
        Check(
            name="KV references at rest = 0",
            value=", ".join(str(r) for r in references) or "not read",
            detail="; ".join(
                f"{f['server']}: running {f.get('running')}, queued {f.get('queue_depth')}, "
                f"blocks {f.get('blocks_used')}, evictions {f.get('evictions')}"
                for f in results.at_rest
            ),
            ok=bool(references) and all(r == 0 for r in references),
        )
    )
    outage_failures = sum(n for s, n in ctx.tally.during_outage.items() if is_failure(s))
    outage_total = sum(ctx.tally.during_outage.values())
    recovered = results.redis_recovery_seconds
    checks.append(
        Check(
            name="Redis kill + restart",
            value="not run"
            if results.redis_outage_seconds is None
            else f"{results.redis_outage_seconds:.0f} s outage",
            detail=f"{outage_failures} failures of {outage_total} requests during the outage; "
            + (
                "store HIT again " + f"{recovered:.1f} s after restart"
                if recovered is not None
                else "store never HIT again"
            ),
            ok=results.redis_outage_seconds is not None
            and outage_failures == 0
            and recovered is not None,
        )
    )
    stopped = results.sigterm_stopped
    checks.append(
        Check(
            name="server SIGKILL + restart",
            value="not run"
            if results.sigkill_restart_seconds is None
            else f"back in {results.sigkill_restart_seconds:.1f} s",
            detail=f"SIGTERM stopped {sum(stopped)}/{len(stopped)} graceful stops"
            + (f"; {results.error}" if results.error else ""),
            ok=results.sigkill_restart_seconds is not None and results.error is None,
        )
    )
    return kinds, checks


def _overload_note(ctx: Context) -> str:
    cpus = os.cpu_count() or 1
    if ctx.peak_load <= cpus:
        return ""
    return (
        f"  (host load reached {ctx.peak_load:.1f} on {cpus} CPUs: hangs may be CPU "
        "starvation; rerun on an idle machine or with a longer --request-timeout)"
    )


def _rss_check(memory: list[MemoryRecord], config: SoakConfig) -> Check:
    if not memory:
        return Check(name="peak RSS ≤ budget", value="not measured", detail="", ok=False)

    def budget(record: MemoryRecord) -> int:
        return record.ready_rss + config.kv_cache_bytes + config.rss_slack_bytes

    worst = max(memory, key=lambda m: m.peak_rss - budget(m))
    return Check(
        name="peak RSS ≤ budget",
        value=gib(worst.peak_rss),
        detail=f"budget {gib(budget(worst))} = ready {gib(worst.ready_rss)} (weights + runtime) "
        f"+ --kv-cache-bytes {gib(config.kv_cache_bytes)} + slack {gib(config.rss_slack_bytes)}"
        f"; worst of {len(memory)} processes ({worst.label}); loading peaked at "
        f"{gib(max(m.startup_peak_rss for m in memory))} before ready",
        ok=all(m.peak_rss <= budget(m) for m in memory),
    )


def render(args: argparse.Namespace, ctx: Context, results: Results, config: SoakConfig) -> bool:
    """Print the table (or the JSON object) on stdout; True when every check passed."""
    kinds, checks = build_checks(ctx, results, config)
    ok = all(check.ok for check in kinds + checks) and results.error is None
    if args.json:
        report = {
            "ok": ok,
            "duration_s": args.duration,
            "wall_s": round(results.wall_seconds, 1),
            "clients": args.clients,
            "requests_sent": results.requests_sent,
            "peak_load_average": round(ctx.peak_load, 2),
            "cpus": os.cpu_count(),
            "config": config.__dict__,
            "kinds": {k: dict(ctx.tally.by_kind.get(k, Counter())) for k in all_kinds()},
            "checks": [check.__dict__ for check in checks],
            "memory": [m.__dict__ for m in results.memory],
            "at_rest": results.at_rest,
            "lost": results.lost,
            "events": ctx.events,
            "problems": ctx.problems,
            "failure_examples": {f"{k} {s}": v for (k, s), v in ctx.tally.examples.items()},
        }
        print(json.dumps(report, indent=2, default=str))
        return ok
    table = Table(
        title=f"promptcache soak: {args.duration:.0f} s of load ({results.wall_seconds:.0f} s "
        f"with pauses), {args.clients} clients, {results.requests_sent} requests, "
        f"host load ≤ {ctx.peak_load:.1f} on {os.cpu_count()} CPUs",
        show_lines=False,
    )
    table.add_column("requests by kind / check")
    table.add_column("n", justify="right")
    table.add_column("detail", overflow="fold")
    table.add_column("verdict")
    for row in kinds:
        table.add_row(row.name, row.value, row.detail, _verdict(row.ok))
    table.add_section()
    for row in checks:
        table.add_row(row.name, row.value, row.detail, _verdict(row.ok))
    Console(width=max(140, Console().width), highlight=False).print(table)
    return ok


def _verdict(ok: bool) -> str:
    return "[bold green]PASS[/]" if ok else "[bold red]FAIL[/]"


def report_details(ctx: Context, results: Results, servers_logs: list[Path]) -> None:
    """Failure examples, lost entries and server tracebacks, on stderr (stdout: the table)."""
    for (kind, status), examples in sorted(ctx.tally.examples.items()):
        if is_failure(status):
            log(f"[red]{kind} → {status}[/red]: {examples[0]!r}")
    for why in results.lost[:20]:
        log(f"[red]lost[/red] {why}")
    for problem in ctx.problems:
        log(f"[yellow]{problem}[/yellow]")
    for path in servers_logs:
        with contextlib.suppress(OSError):
            text = path.read_text(errors="replace")
            tracebacks = text.count("Traceback (most recent call last)")
            panics = text.count("panicked at")
            if tracebacks or panics:
                log(f"{path.name}: {tracebacks} tracebacks, {panics} Rust panics")
