"""The CLI's loading bar: one line per loading step, none when disabled."""

from __future__ import annotations

import io

from rich.console import Console

from promptcache.cli._progress import loading_progress


def test_each_finished_step_gets_its_own_line() -> None:
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    with loading_progress(console) as progress:
        assert progress is not None
        progress("Hashing a.gguf", 0.0)
        progress("Hashing a.gguf", 1.0)
        progress("Converting a.gguf", None)
        progress("Converting a.gguf", 0.5)
        progress("Writing the converted model", None)  # same step, renamed
        progress("Converted a.gguf", 1.0)
    text = out.getvalue()
    assert "Hashing a.gguf" in text
    assert "Converted a.gguf" in text
    assert "Writing the converted model" not in text.splitlines()[-1]


def test_disabled_gives_no_callback() -> None:
    with loading_progress(enabled=False) as progress:
        assert progress is None
