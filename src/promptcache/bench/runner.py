"""Runs the engine benchmarks behind ``promptcache bench`` and returns a :class:`BenchReport`.

Two measurements, both on the real engine and its real prefix cache:

* **Time to first token against prompt length**, cold (a never-seen prefix:
  every token is prefilled) and warm (the same long prefix was sent once
  before, then a different question: only the question is prefilled). The
  figure is the median of ``repeats`` samples; the time runs from the call
  to the first streamed text.
* **Cost of a multi-turn session** with a long system prompt, priced from
  each turn's :class:`~promptcache.result.Usage` as the engine reported it.
  Under a profile with a write premium (Anthropic) the turns carry explicit
  ``cache_control`` breakpoints, as Anthropic's users do; otherwise caching is
  implicit, as at OpenAI or GLM.

The engine is a plain :class:`~promptcache.engine.base.SyncEngine` plus a
prompt-token counter (:class:`BenchEngine`), so the runner can be driven by a
fake engine in tests; :func:`load_local_engine` builds the real one.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from promptcache.bench.report import BenchReport, SessionCost, TTFTPoint, price_session
from promptcache.bench.workload import (
    QUESTIONS,
    session_turn,
    single_turn,
    strip_cache_control,
    system_prompt,
)
from promptcache.cost.pricing import BUILTIN_PROFILES, ModelPrice, PriceTable, profile_named
from promptcache.engine.base import SyncEngine
from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.result import Result, TextDelta, Usage

DEFAULT_SIZES = (256, 512, 1024, 2048)
QUICK_SIZES = (128, 256, 512)

REPRESENTATIVE_MODELS: Mapping[str, str] = {
    "anthropic": "claude-sonnet-4-5",
    "openai": "gpt-4o",
    "openai-0.25": "gpt-4.1",
    "openai-0.1": "gpt-5",
    "glm": "glm-4.6",
    "deepseek": "deepseek-chat",
    "local": "SmolLM2-135M-Instruct",
}
"""The model whose list price stands for each profile in the session cost."""


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to measure. :meth:`quick` gives a run of a minute or two on a laptop CPU."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    repeats: int = 3
    session_turns: int = 10
    session_system_tokens: int = 1500
    reply_tokens: int = 24
    profile: str = "anthropic"
    price_model: str | None = None
    """Model whose rates price the session (default: the profile's representative model)."""
    quick: bool = False

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 32 or s > 8192 for s in self.sizes):
            raise ValueError(
                f"sizes must be 1 to n prompt lengths within 32..8192, got {self.sizes}"
            )
        if not 1 <= self.repeats <= 20:
            raise ValueError(f"repeats must be within 1..20, got {self.repeats}")
        if not 0 <= self.session_turns <= len(QUESTIONS) * 4:
            raise ValueError(
                f"session_turns must be within 0..{len(QUESTIONS) * 4}, got {self.session_turns}"
            )
        if not 64 <= self.session_system_tokens <= 6000:
            raise ValueError(
                f"session_system_tokens must be within 64..6000, got {self.session_system_tokens}"
            )
        if not 1 <= self.reply_tokens <= 256:
            raise ValueError(f"reply_tokens must be within 1..256, got {self.reply_tokens}")
        if self.profile not in BUILTIN_PROFILES:
            profile_named(self.profile)  # raises with the valid names

    @classmethod
    def quick_run(cls, **overrides: Any) -> BenchConfig:
        settings: dict[str, Any] = {
            "sizes": QUICK_SIZES,
            "repeats": 1,
            "session_turns": 4,
            "session_system_tokens": 400,
            "reply_tokens": 8,
            "quick": True,
        }
        settings.update(overrides)
        return cls(**settings)

    def step_count(self) -> int:
        """Engine calls the run makes, for a progress bar."""
        per_size = 2 * self.repeats + 1  # misses, one warm-up, hits
        return 1 + per_size * len(self.sizes) + self.session_turns


@dataclass(frozen=True, kw_only=True)
class BenchEngine:
    """An engine under benchmark, with what the runner needs to size prompts."""

    engine: SyncEngine
    model: str
    count_prompt_tokens: Callable[[ChatRequest], int]
    settings: Mapping[str, Any] = field(default_factory=dict)
    """Engine settings recorded in the report (block size, min_cache_tokens, ...)."""


class BenchProgress(Protocol):
    def begin(self, description: str) -> None:
        """An engine call is about to start."""

    def advance(self) -> None:
        """It finished."""


class _NoProgress:
    def begin(self, description: str) -> None:
        return None

    def advance(self) -> None:
        return None


@dataclass(frozen=True, kw_only=True)
class _Sample:
    ttft_s: float
    usage: Usage
    reply: str


class BenchRunner:
    def __init__(
        self,
        target: BenchEngine,
        config: BenchConfig,
        *,
        prices: PriceTable | None = None,
        progress: BenchProgress | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._target = target
        self._config = config
        self._prices = prices if prices is not None else PriceTable.builtin()
        self._progress: BenchProgress = progress if progress is not None else _NoProgress()
        self._clock = clock
        self._run_id = uuid.uuid4().hex[:12]

    def run(self) -> BenchReport:
        self._warm_up()
        ttft = tuple(self._measure_ttft(size) for size in self._config.sizes)
        session = self._measure_session() if self._config.session_turns else None
        return BenchReport(
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            quick=self._config.quick,
            environment=self._environment(),
            ttft=ttft,
            session=session,
        )

    # -- time to first token -------------------------------------------------

    def _warm_up(self) -> None:
        # The first forward pass pays one-off costs (allocations, kernels) no sample should carry.
        self._progress.begin("warming up the engine")
        self._sample(self._request(64, nonce=f"warmup-{self._run_id}", question=QUESTIONS[0]))
        self._progress.advance()

    def _measure_ttft(self, size: int) -> TTFTPoint:
        repeats = self._config.repeats
        misses: list[float] = []
        for i in range(repeats):
            self._progress.begin(f"{size:>5}-token prompt: miss {i + 1}/{repeats}")
            nonce = f"miss-{self._run_id}-{size}-{i}"
            misses.append(self._sample(self._request(size, nonce=nonce)).ttft_s)
            self._progress.advance()

        nonce = f"hit-{self._run_id}-{size}"
        self._progress.begin(f"{size:>5}-token prompt: caching the prefix")
        self._sample(self._request(size, nonce=nonce, question=QUESTIONS[0]))
        self._progress.advance()
        hits: list[float] = []
        prompt_tokens = cached = 0
        for i in range(repeats):
            self._progress.begin(f"{size:>5}-token prompt: hit {i + 1}/{repeats}")
            question = QUESTIONS[1 + i % (len(QUESTIONS) - 1)]
            sample = self._sample(self._request(size, nonce=nonce, question=question))
            hits.append(sample.ttft_s)
            prompt_tokens = sample.usage.prompt_tokens
            cached = sample.usage.cache_read_input_tokens
            self._progress.advance()
        return TTFTPoint(
            target_prefix_tokens=size,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
            miss_samples_s=tuple(misses),
            hit_samples_s=tuple(hits),
        )

    def _request(self, size: int, *, nonce: str, question: str = QUESTIONS[1]) -> ChatRequest:
        words = self._words_for(size, question)
        return single_turn(
            model=self._target.model,
            system=system_prompt(words, nonce=nonce, seed=size),
            question=question,
            max_tokens=1,
        )

    def _words_for(self, tokens: int, question: str) -> int:
        """Filler words that bring the whole prompt to about ``tokens`` tokens."""

        def count(words: int) -> int:
            request = single_turn(
                model=self._target.model,
                system=system_prompt(words, nonce="sizing", seed=tokens),
                question=question,
                max_tokens=1,
            )
            return self._target.count_prompt_tokens(request)

        base = count(0)
        if tokens <= base:
            return 0
        probe = max(1, tokens - base)
        per_word = (count(probe) - base) / probe
        return max(0, round((tokens - base) / per_word)) if per_word > 0 else probe

    def _sample(self, request: ChatRequest) -> _Sample:
        start = self._clock()
        first: float | None = None
        result: Result | None = None
        pieces: list[str] = []
        for event in self._target.engine.generate(request):
            if isinstance(event, TextDelta):
                if first is None:
                    first = self._clock()
                pieces.append(event.text)
            elif isinstance(event, Result):
                result = event
        end = self._clock()
        if result is None:
            raise RuntimeError("the engine stream ended without a Result")
        # A reply whose first token is end-of-text streams no text: its first token came at the end.
        return _Sample(ttft_s=(first or end) - start, usage=result.usage, reply="".join(pieces))

    # -- session cost --------------------------------------------------------

    def _measure_session(self) -> SessionCost:
        config = self._config
        profile = profile_named(config.profile)
        explicit = profile.cache_write_5m != 1 or profile.cache_write_1h != 1
        words = self._words_for(config.session_system_tokens, QUESTIONS[0])
        system = system_prompt(words, nonce=f"session-{self._run_id}", seed=7)
        history: tuple[Message, ...] = ()
        usages: list[Usage] = []
        for turn in range(config.session_turns):
            self._progress.begin(f"session turn {turn + 1}/{config.session_turns}")
            question = QUESTIONS[turn % len(QUESTIONS)]
            request = session_turn(
                model=self._target.model,
                system=system,
                history=history,
                question=question,
                max_tokens=config.reply_tokens,
                explicit_breakpoints=explicit,
            )
            sample = self._sample(request)
            usages.append(sample.usage)
            reply = Message(role="assistant", content=(TextBlock(text=sample.reply or "OK."),))
            history = (*history, strip_cache_control(request.messages[-1]), reply)
            self._progress.advance()
        price_model = config.price_model or REPRESENTATIVE_MODELS.get(config.profile, "")
        price = self._priced(price_model, config.profile)
        alternatives = {
            name: (model, self._priced(model, name))
            for name, model in REPRESENTATIVE_MODELS.items()
        }
        return price_session(
            usages,
            price=price,
            price_model=price_model,
            explicit_breakpoints=explicit,
            alternatives=alternatives,
        )

    def _priced(self, model: str, profile: str) -> ModelPrice:
        rates = self._prices.lookup(model)
        return ModelPrice(
            input_per_mtok=rates.input_per_mtok,
            output_per_mtok=rates.output_per_mtok,
            profile=profile_named(profile, self._prices.profiles),
        )

    def _environment(self) -> dict[str, Any]:
        env: dict[str, Any] = {
            "model": self._target.model,
            "engine": dict(self._target.settings),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        }
        torch = sys.modules.get("torch")
        if torch is not None:
            env["torch"] = str(torch.__version__)
            env["torch_threads"] = int(torch.get_num_threads())
        return env


def load_local_engine(*, model: str | None = None, min_cache_tokens: int = 16) -> BenchEngine:
    """The local engine (embedded SmolLM2 unless ``model``), its cache open to short prefixes.

    ``min_cache_tokens`` is lowered from the serving default (1024) so the
    short prompts of the curve are cached too: the curve shows what a hit
    saves at every length, not where the default threshold lies.
    """
    from promptcache.engine.local import LocalEngine, LocalEngineConfig
    from promptcache.prefix.cache import PrefixCacheConfig

    cache = PrefixCacheConfig(min_cache_tokens=min_cache_tokens)
    engine = LocalEngine.from_config(LocalEngineConfig(model=model, prefix_cache=cache))
    renderer = engine.renderer
    return BenchEngine(
        engine=engine,
        model=engine.served_name,
        count_prompt_tokens=lambda request: len(renderer.render(request).token_ids),
        settings={
            "block_size": cache.block_size,
            "min_cache_tokens": cache.min_cache_tokens,
            "kv_cache_bytes": cache.kv_cache_bytes,
        },
    )
