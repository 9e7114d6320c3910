"""``promptcache bench`` pieces on a fake engine: runner, JSON schema, cost series, plot, CLI.

The real run (embedded model) takes minutes, too slow for CI; its figures are
in the issue's closing note.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

import promptcache.cli.bench as bench_cli
from promptcache.bench import (
    BenchConfig,
    BenchEngine,
    BenchReport,
    BenchRunner,
    TTFTPoint,
    price_session,
)
from promptcache.bench.report import SCHEMA
from promptcache.cli import app
from promptcache.cost.pricing import ModelPrice, cost, cost_without_cache
from promptcache.engine.base import ModelInfo, PrefixCacheSnapshot
from promptcache.request import ChatRequest
from promptcache.result import Choice, Result, StreamEvent, TextDelta, Usage

BLOCK = 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tokens(request: ChatRequest) -> list[str]:
    words: list[str] = []
    for block in request.system:
        words += block.text.split()
    for message in request.messages:
        words += [message.role, *message.text().split()]
    return words


class BlockCacheEngine:
    """One token per word; full 16-token blocks of a seen prefix are read from 'cache'.

    Time runs on a fake clock: 1 ms per computed prompt token, so a hit is
    measurably faster without any real waiting.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.prefixes: set[tuple[str, ...]] = set()
        self.requests: list[ChatRequest] = []

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(id="fake-local")]

    def prefix_stats(self) -> PrefixCacheSnapshot | None:
        return None

    def clear_prefix_cache(self) -> None:
        self.prefixes.clear()

    def generate(
        self, request: ChatRequest, *, cancel: threading.Event | None = None
    ) -> Iterator[StreamEvent]:
        self.requests.append(request)
        tokens = _tokens(request)
        full = len(tokens) // BLOCK * BLOCK
        hit = 0
        for end in range(BLOCK, full + 1, BLOCK):
            if tuple(tokens[:end]) in self.prefixes:
                hit = end
        for end in range(BLOCK, full + 1, BLOCK):
            self.prefixes.add(tuple(tokens[:end]))
        self.clock.now += (len(tokens) - hit) * 0.001
        output = request.sampling.max_tokens or 1
        yield TextDelta(choice_index=0, text="Sure")
        explicit = any(b.cache_control is not None for b in request.system)
        written = full - hit if explicit else 0
        yield Result(
            id="x",
            model="fake-local",
            created=0,
            choices=(Choice(text="Sure"),),
            usage=Usage(
                input_tokens=len(tokens) - hit - written,
                cache_read_input_tokens=hit,
                cache_creation_5m_input_tokens=written,
                output_tokens=output,
            ),
        )


def _target(clock: FakeClock) -> tuple[BenchEngine, BlockCacheEngine]:
    engine = BlockCacheEngine(clock)
    return (
        BenchEngine(
            engine=engine,
            model="fake-local",
            count_prompt_tokens=lambda request: len(_tokens(request)),
            settings={"block_size": BLOCK},
        ),
        engine,
    )


def _quick_report(profile: str = "anthropic") -> tuple[BenchReport, BlockCacheEngine]:
    clock = FakeClock()
    target, engine = _target(clock)
    config = BenchConfig.quick_run(sizes=(128, 512), repeats=2, profile=profile)
    return BenchRunner(target, config, clock=clock).run(), engine


def test_runner_measures_hits_faster_than_misses() -> None:
    report, _ = _quick_report()
    assert [p.target_prefix_tokens for p in report.ttft] == [128, 512]
    for point in report.ttft:
        assert abs(point.prompt_tokens - point.target_prefix_tokens) <= 2
        assert point.cached_tokens >= point.target_prefix_tokens - 2 * BLOCK - 20
        assert point.miss_s == pytest.approx(point.prompt_tokens * 0.001, abs=0.002)
        assert point.miss_over_hit > 4
        assert len(point.miss_samples_s) == len(point.hit_samples_s) == 2


def test_session_is_priced_from_the_engine_usages() -> None:
    report, engine = _quick_report("anthropic")
    session = report.session
    assert session is not None
    assert len(session.turns) == 4
    assert session.explicit_breakpoints
    assert session.price_model == "claude-sonnet-4-5"
    first, *later = session.turns
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation_5m_input_tokens > 0
    assert first.cost > first.cost_without_cache  # write premium
    assert all(t.usage.cache_read_input_tokens > 0 for t in later)
    price = session.price
    for turn in session.turns:
        assert turn.cost == cost(turn.usage, price)
        assert turn.cost_without_cache == cost_without_cache(turn.usage, price)
    assert 0 < session.saved_percent < 100
    assert set(session.by_profile) >= {"openai", "glm", "deepseek", "local"}
    # The session requests carried explicit breakpoints, at most 2 per request.
    session_requests = engine.requests[-4:]
    assert all(len(r.breakpoints()) == 2 for r in session_requests)


def test_implicit_profile_sends_no_breakpoints() -> None:
    report, engine = _quick_report("glm")
    assert report.session is not None
    assert not report.session.explicit_breakpoints
    assert all(not r.breakpoints() for r in engine.requests)


def test_price_session_cumulative_series() -> None:
    price = ModelPrice.of("10", "10", "glm")
    usages = [
        Usage(input_tokens=2000, output_tokens=500),
        Usage(input_tokens=800, cache_read_input_tokens=1200, output_tokens=500),
    ]
    session = price_session(usages, price=price, price_model="glm", explicit_breakpoints=False)
    with_cache, without = session.cumulative()
    assert with_cache == [Decimal("0.025"), Decimal("0.044")]
    assert without == [Decimal("0.025"), Decimal("0.05")]
    assert session.saved == Decimal("0.006")
    assert session.saved_percent == 12.0


def test_json_schema_round_trip(tmp_path: Path) -> None:
    report, _ = _quick_report()
    json_path, png_path = bench_cli.write_outputs(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["schema"] == SCHEMA
    assert data["quick"] is True
    assert data["environment"]["model"] == "fake-local"
    assert {"miss_s", "hit_s", "miss_over_hit", "prompt_tokens", "cached_tokens"} <= set(
        data["ttft"][0]
    )
    assert TTFTPoint.from_dict(data["ttft"][0]).miss_s == pytest.approx(report.ttft[0].miss_s)
    session = data["session"]
    assert Decimal(session["total_cost"]) == report.session.total_cost  # type: ignore[union-attr]
    assert len(session["turns"]) == 4
    assert set(session["turns"][0]["usage"]) == set(Usage().to_dict())
    assert png_path.read_bytes().startswith(b"\x89PNG")
    assert png_path.stat().st_size > 20_000


def test_plot_without_session(tmp_path: Path) -> None:
    point = TTFTPoint(
        target_prefix_tokens=256,
        prompt_tokens=260,
        cached_tokens=240,
        miss_samples_s=(0.7,),
        hit_samples_s=(0.05,),
    )
    report = BenchReport(
        created="2026-01-01T00:00:00+00:00", quick=True, environment={}, ttft=(point,), session=None
    )
    _, png = bench_cli.write_outputs(report, tmp_path)
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "overrides",
    [{"sizes": ()}, {"sizes": (10,)}, {"repeats": 0}, {"profile": "nope"}, {"reply_tokens": 0}],
)
def test_config_validation(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BenchConfig(**overrides)  # type: ignore[arg-type]


def test_cli_quick_run_writes_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    target, _ = _target(clock)
    monkeypatch.setattr(bench_cli, "load_local_engine", lambda model=None: target)
    out = tmp_path / "bench"
    result = CliRunner().invoke(
        app, ["bench", "--quick", "--out", str(out), "--profile", "openai", "--sizes", "64,128"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "bench.json").exists() and (out / "bench.png").exists()
    data = json.loads((out / "bench.json").read_text())
    assert data["session"]["profile"] == "openai"
    assert data["session"]["price_model"] == "gpt-4o"
    assert [p["target_prefix_tokens"] for p in data["ttft"]] == [64, 128]
    assert "faster" in result.output


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--profile", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "unknown pricing profile" in result.output
