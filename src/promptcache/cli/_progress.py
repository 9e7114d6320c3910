"""Model loading's progress (:data:`~promptcache.model.loading.LoadProgress`) as a rich bar."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)


class _LoadBar:
    """One bar line per loading step: a new line once the last step reached 1.0."""

    def __init__(self, bar: Progress) -> None:
        self._bar = bar
        self._task: TaskID | None = None
        self._finished = True

    def __call__(self, step: str, fraction: float | None) -> None:
        total = None if fraction is None else 1.0
        completed = fraction or 0.0
        if self._task is None or self._finished:
            self._task = self._bar.add_task(step, total=total)
        self._bar.update(self._task, description=step, total=total, completed=completed)
        self._finished = fraction is not None and fraction >= 1.0


@contextlib.contextmanager
def loading_progress(
    console: Console | None = None, *, enabled: bool = True
) -> Iterator[_LoadBar | None]:
    """A callback to pass as ``progress=`` while the ``with`` block loads a model
    (None when not ``enabled``); the bar is drawn on ``console`` (default: stderr)."""
    if not enabled:
        yield None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )
    with bar:
        yield _LoadBar(bar)
