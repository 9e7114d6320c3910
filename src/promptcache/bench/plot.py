"""The PNG ``promptcache bench`` leaves behind: two panels a colleague can read at a glance.

Left: time to first token against prompt length, cold (miss) and with the
prefix cached (hit), each point annotated with the speed-up. Right: the
cumulative cost of a multi-turn session with and without caching, the gap
shaded as savings and the final figures written on the chart. Rendered with
matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from promptcache.bench.report import BenchReport, SessionCost, TTFTPoint

MISS_COLOR = "#d1495b"
HIT_COLOR = "#00798c"
SAVED_COLOR = "#8fd694"


def plot_report(report: BenchReport, path: Path) -> Path:
    """Draw ``report`` to ``path`` (PNG) and return the path."""
    panels = [p for p in (report.ttft, report.session) if p]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(7.2 * max(1, len(panels)), 5.4))
    axes_list: list[Axes] = list(axes) if len(panels) > 1 else [axes]
    index = 0
    if report.ttft:
        _plot_ttft(axes_list[index], report.ttft)
        index += 1
    footnote = ""
    if report.session is not None:
        _plot_session(axes_list[index], report.session)
        footnote = _other_profiles_note(report.session)
    if footnote:
        fig.text(0.5, 0.012, footnote, ha="center", va="bottom", fontsize=8.5, color="#555555")
    model = str(report.environment.get("model", "local model"))
    cpus = report.environment.get("cpus")
    where = f"{cpus}-CPU machine" if cpus else "this machine"
    mode = "quick run, " if report.quick else ""
    fig.suptitle(
        f"promptcache prefix cache: {model} on {where} ({mode}{report.created[:10]})",
        fontsize=13,
        fontweight="bold",
    )
    fig.tight_layout(rect=(0, 0.045 if footnote else 0.0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _plot_ttft(ax: Axes, points: tuple[TTFTPoint, ...]) -> None:
    xs = [p.prompt_tokens or p.target_prefix_tokens for p in points]
    misses = [p.miss_s * 1000 for p in points]
    hits = [p.hit_s * 1000 for p in points]
    ax.plot(xs, misses, "o-", color=MISS_COLOR, lw=2.2, ms=7, label="miss (whole prompt prefilled)")
    ax.plot(xs, hits, "s-", color=HIT_COLOR, lw=2.2, ms=7, label="hit (cached prefix reused)")
    ax.fill_between(xs, hits, misses, color=MISS_COLOR, alpha=0.07)
    top = max(misses) if misses else 1.0
    for x, miss, hit, point in zip(xs, misses, hits, points, strict=True):
        ax.annotate(
            f"{point.miss_over_hit:.1f}× faster",
            xy=(x, (miss + hit) / 2),
            xytext=(6, 0),
            textcoords="offset points",
            fontsize=9,
            fontweight="bold",
            color="#333333",
            va="center",
        )
        ax.annotate(
            _duration(miss),
            xy=(x, miss),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color=MISS_COLOR,
        )
        ax.annotate(
            _duration(hit),
            xy=(x, hit),
            xytext=(0, -14),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color=HIT_COLOR,
        )
    ax.set_title("Time to first token vs. prompt length")
    ax.set_xlabel("prompt length (tokens): shared prefix + a short new question")
    ax.set_ylabel("time to first token (ms, median)")
    ax.set_ylim(bottom=-top * 0.08, top=top * 1.15)
    ax.set_xlim(0, max(xs) * 1.18 if xs else 1)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", frameon=False)


def _plot_session(ax: Axes, session: SessionCost) -> None:
    with_cache, without = session.cumulative()
    turns = [t.turn for t in session.turns]
    ys_with = [float(v) for v in with_cache]
    ys_without = [float(v) for v in without]
    scale, unit = _money_scale(max(ys_without, default=0.0))
    ys_with = [v * scale for v in ys_with]
    ys_without = [v * scale for v in ys_without]
    ax.plot(turns, ys_without, "o-", color=MISS_COLOR, lw=2.2, ms=6, label="without caching")
    ax.plot(turns, ys_with, "s-", color=HIT_COLOR, lw=2.2, ms=6, label="with promptcache")
    ax.fill_between(turns, ys_with, ys_without, color=SAVED_COLOR, alpha=0.35, label="saved")
    if turns:
        ax.annotate(
            f"{_money(ys_without[-1], unit)}",
            xy=(turns[-1], ys_without[-1]),
            xytext=(-6, 8),
            textcoords="offset points",
            ha="right",
            fontsize=9,
            color=MISS_COLOR,
        )
        ax.annotate(
            f"{_money(ys_with[-1], unit)}",
            xy=(turns[-1], ys_with[-1]),
            xytext=(-6, -14),
            textcoords="offset points",
            ha="right",
            fontsize=9,
            color=HIT_COLOR,
        )
    mode = "explicit cache_control" if session.explicit_breakpoints else "implicit"
    # "\\$": a bare "$" pair would be read as mathtext.
    rates = (
        f"\\${session.price.input_per_mtok}/M in, \\${session.price.output_per_mtok}/M out, "
        f"{session.profile} cache rates"
    )
    summary = (
        f"{len(turns)} turns: {_money(ys_with[-1], unit)} vs {_money(ys_without[-1], unit)}\n"
        f"saved {session.saved_percent:.0f}%"
        if turns
        else "no turns"
    )
    first = session.turns[0] if session.turns else None
    if first is not None and first.cost > first.cost_without_cache:
        ax.text(
            0.035,
            0.56,
            "turn 1 costs more than without caching:\nit writes the cache at a premium",
            transform=ax.transAxes,
            fontsize=8.5,
            style="italic",
            color="#555555",
            va="top",
        )
    ax.text(
        0.03,
        0.72,
        summary,
        transform=ax.transAxes,
        fontsize=11.5,
        fontweight="bold",
        linespacing=1.4,
        va="top",
        bbox={"boxstyle": "round,pad=0.4", "fc": "white", "ec": "#bbbbbb"},
    )
    ax.set_title(
        f"Cumulative cost of a {len(turns)}-turn chat, priced as {session.price_model}\n"
        f"({rates}; caching: {mode})",
        fontsize=10.5,
    )
    ax.set_xlabel("turn")
    ax.set_ylabel(f"cumulative cost ({unit})")
    ax.set_xticks(turns)
    ax.set_ylim(bottom=0, top=max(ys_without, default=1.0) * 1.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 1.0), frameon=False)


def _other_profiles_note(session: SessionCost) -> str:
    others = [
        f"{name} {entry['saved_percent']:.0f}%"
        for name, entry in session.by_profile.items()
        if name != session.profile
    ]
    if not others:
        return ""
    return "The same session's usage at other providers' list prices and cache rates saves: " + (
        ", ".join(others)
    )


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def _money_scale(largest: float) -> tuple[float, str]:
    """Dollars, or cents when the whole session costs under a dollar (easier to read)."""
    return (1.0, "USD") if largest >= 1 else (100.0, "US cents")


def _money(value: float, unit: str) -> str:
    return f"\\${value:,.4f}" if unit == "USD" else f"{value:.3g}¢"
