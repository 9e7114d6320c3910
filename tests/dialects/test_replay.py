"""Replaying a cached Result as stream events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptcache.dialects.replay import replay_events, split_text
from promptcache.result import Choice, PromptUsage, Result, TextDelta

from .helpers import USAGE, make_result


@given(st.text(max_size=500), st.integers(min_value=1, max_value=80))
def test_split_text_concatenates_back_and_bounds_chunks(text: str, size: int) -> None:
    pieces = split_text(text, size)
    assert "".join(pieces) == text
    assert all(0 < len(p) <= size for p in pieces)


def test_split_prefers_word_boundaries() -> None:
    pieces = split_text("alpha beta gamma delta epsilon", 12)
    assert pieces == ["alpha beta ", "gamma delta ", "epsilon"]


def test_split_rejects_a_non_positive_size() -> None:
    with pytest.raises(ValueError, match="chunk_chars"):
        split_text("x", 0)


async def test_replay_yields_usage_a_few_deltas_per_choice_then_the_result() -> None:
    text = "word " * 100
    result = make_result(
        choices=(Choice(index=0, text=text), Choice(index=1, text="short")),
    )
    events = [e async for e in replay_events(result)]
    assert events[0] == PromptUsage(usage=USAGE)
    assert events[-1] is result
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "".join(d.text for d in deltas if d.choice_index == 0) == text
    assert [d.text for d in deltas if d.choice_index == 1] == ["short"]
    assert 4 <= len(deltas) <= 20


async def test_replay_of_an_empty_answer_has_no_deltas() -> None:
    result: Result = make_result("")
    events = [e async for e in replay_events(result)]
    assert events == [PromptUsage(usage=USAGE), result]
