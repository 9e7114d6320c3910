"""The thread-count tuner keeps the faster setting, from paired step timings."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from promptcache.model.thread_tuning import ThreadCountTuner

StepCost = Callable[[int, int], float]
"""Seconds a step takes, given (step index, thread count)."""


def _run(tuner: ThreadCountTuner, steps: int, cost: StepCost, start: int = 0) -> list[int]:
    used = []
    for step in range(start, start + steps):
        threads = tuner.next_threads()
        tuner.record(threads, cost(step, threads))
        used.append(threads)
    return used


def _quiet_machine(step: int, threads: int) -> float:
    # Two threads 1.4x faster; a slow drift as the context grows.
    return (0.030 if threads == 1 else 0.021) * (1 + step * 1e-4)


def _busy_machine(step: int, threads: int) -> float:
    # Another process holds a core: two threads wait on each other's barriers.
    return (0.030 if threads == 1 else 0.090) * (1 + step * 1e-4)


def test_it_keeps_the_preferred_count_when_that_is_faster() -> None:
    tuner = ThreadCountTuner(preferred=2, alternative=1, explore_every=32)
    used = _run(tuner, 400, _quiet_machine)
    assert tuner.preferred == 2
    assert used.count(1) <= 400 // 32 + 3  # exploration only


def test_it_switches_to_the_alternative_when_that_is_faster() -> None:
    tuner = ThreadCountTuner(preferred=2, alternative=1, explore_every=32)
    used = _run(tuner, 40, _busy_machine)
    assert tuner.preferred == 1
    # Decided within the early, frequent explorations; afterwards one step in 32 explores.
    later = _run(tuner, 320, _busy_machine, start=40)
    assert later.count(2) <= 320 // 32 + 1
    assert used[-1] == 1


def test_it_follows_the_machine_when_load_comes_and_goes() -> None:
    tuner = ThreadCountTuner(preferred=2, alternative=1, explore_every=16)
    _run(tuner, 200, _quiet_machine)
    assert tuner.preferred == 2
    _run(tuner, 200, _busy_machine, start=200)
    assert tuner.preferred == 1
    _run(tuner, 200, _quiet_machine, start=400)
    assert tuner.preferred == 2


def _explore_after_a_hiccup(tuner: ThreadCountTuner) -> None:
    """One exploration whose paired preferred step was hit by a 20x hiccup."""
    while tuner.next_threads() == tuner.preferred:
        tuner.record(tuner.preferred, 0.021)
    tuner.record(tuner.preferred, 0.021 * 20)  # e.g. a page-fault storm
    tuner.record(tuner.next_threads(), 0.030)


@pytest.mark.parametrize(("window", "flips"), [(3, False), (1, True)])
def test_one_outlier_flips_the_choice_only_without_a_window(window: int, flips: bool) -> None:
    tuner = ThreadCountTuner(preferred=2, alternative=1, explore_every=8, window=window)
    _run(tuner, 100, _quiet_machine)
    assert tuner.preferred == 2
    _explore_after_a_hiccup(tuner)
    assert tuner.preferred == (1 if flips else 2)


def test_unusable_timings_are_ignored() -> None:
    tuner = ThreadCountTuner(preferred=2, alternative=1, explore_every=4)
    for _ in range(50):
        threads = tuner.next_threads()
        tuner.record(threads, 0.0)
        tuner.record(3, 0.001)  # a count it never handed out
    assert tuner.preferred == 2
    assert tuner.next_threads() == 2  # nothing to pair an exploration with yet


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preferred": 0, "alternative": 1}, "positive"),
        ({"preferred": 2, "alternative": 2}, "differ"),
        ({"preferred": 2, "alternative": 1, "explore_every": 1}, "explore_every"),
        ({"preferred": 2, "alternative": 1, "window": 0}, "window"),
        ({"preferred": 2, "alternative": 1, "min_gain": 1.0}, "min_gain"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThreadCountTuner(**kwargs)  # type: ignore[arg-type]
