"""Token choice (greedy, temperature, top_p, seeds) and incremental detokenisation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from promptcache.engine.local.sampling import (
    TextStream,
    TokenSampler,
    greedy_token,
    is_greedy,
    validate_sampling,
)
from promptcache.errors import RequestError
from promptcache.request import SamplingParams


class ByteTokenizer:
    """Token id = one UTF-8 byte: multi-byte characters span several tokens."""

    def decode(self, token_ids: list[int], **kwargs: Any) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def stream_all(text: str, stop: tuple[str, ...] = ()) -> tuple[list[str], TextStream]:
    stream = TextStream(ByteTokenizer(), stop)
    deltas = []
    for token in encode(text):
        deltas.append(stream.push(token))
        if stream.stopped_by is not None:
            break
    deltas.append(stream.flush())
    return deltas, stream


def test_greedy_rules() -> None:
    assert is_greedy(SamplingParams())
    assert is_greedy(SamplingParams(temperature=0.0, top_p=0.5))
    assert not is_greedy(SamplingParams(temperature=0.7))
    assert not is_greedy(SamplingParams(top_p=0.9))


def test_greedy_picks_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert TokenSampler(SamplingParams()).sample(logits) == 1


def test_same_seed_same_tokens_other_seed_differs() -> None:
    logits = torch.zeros(50)
    params = SamplingParams(temperature=1.0, seed=7)
    first = TokenSampler(params)
    second = TokenSampler(params)
    a = [first.sample(logits) for _ in range(30)]
    b = [second.sample(logits) for _ in range(30)]
    other = TokenSampler(SamplingParams(temperature=1.0, seed=8))
    c = [other.sample(logits) for _ in range(30)]
    assert a == b
    assert a != c


def test_choice_index_changes_the_stream() -> None:
    params = SamplingParams(temperature=1.0, seed=7)
    logits = torch.zeros(50)
    zero, one = TokenSampler(params, choice_index=0), TokenSampler(params, choice_index=1)
    assert [zero.sample(logits) for _ in range(20)] != [one.sample(logits) for _ in range(20)]


def test_top_p_keeps_only_the_nucleus() -> None:
    # probabilities ~ [0.5, 0.3, 0.2 spread over the rest]
    logits = torch.log(torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05]))
    sampler = TokenSampler(SamplingParams(temperature=1.0, top_p=0.75, seed=1))
    seen = {sampler.sample(logits) for _ in range(200)}
    assert seen == {0, 1}


def test_tiny_top_p_is_greedy_in_effect() -> None:
    logits = torch.tensor([0.0, 5.0, 1.0])
    sampler = TokenSampler(SamplingParams(temperature=1.5, top_p=1e-6, seed=3))
    assert {sampler.sample(logits) for _ in range(50)} == {1}


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(temperature=-0.1), "temperature"),
        (SamplingParams(temperature=2.5), "temperature"),
        (SamplingParams(top_p=0.0), "top_p"),
        (SamplingParams(top_p=1.5), "top_p"),
        (SamplingParams(max_tokens=0), "max_tokens"),
        (SamplingParams(n=0), "n"),
    ],
)
def test_invalid_sampling_is_a_request_error(params: SamplingParams, param: str) -> None:
    with pytest.raises(RequestError) as info:
        validate_sampling(params)
    assert info.value.param == param


def test_multibyte_characters_are_never_split() -> None:
    deltas, stream = stream_all("héllo ✓ 🚀 done")
    assert "".join(deltas) == "héllo ✓ 🚀 done"
    assert all("\ufffd" not in d for d in deltas)
    assert stream.stopped_by is None


def test_stop_string_ends_text_and_is_not_returned() -> None:
    deltas, stream = stream_all("Hello world. END and more", stop=("END",))
    assert "".join(deltas) == "Hello world. "
    assert stream.stopped_by == "END"
    assert stream.text == "Hello world. "


def test_text_that_may_start_a_stop_string_is_held_back() -> None:
    stream = TextStream(ByteTokenizer(), ("STOP",))
    emitted = "".join(stream.push(t) for t in encode("abcST"))
    assert emitted == "abc"
    emitted += "".join(stream.push(t) for t in encode("x"))
    assert emitted == "abcSTx"  # not a stop after all: released


def test_earliest_stop_string_wins() -> None:
    deltas, stream = stream_all("one two three", stop=("three", "two"))
    assert "".join(deltas) == "one "
    assert stream.stopped_by == "two"


def test_flush_returns_held_back_text_at_the_end() -> None:
    deltas, stream = stream_all("the end is nigh", stop=("nigh!",))
    assert "".join(deltas) == "the end is nigh"
    assert stream.stopped_by is None


def test_incomplete_character_at_the_end_is_flushed_as_replacement() -> None:
    stream = TextStream(ByteTokenizer())
    head = "".join(stream.push(t) for t in encode("ok")) + stream.push(0xE2)
    assert head == "ok"
    assert stream.flush() == "\ufffd"


@given(
    text=st.text(max_size=40),
    stop=st.lists(st.text(min_size=1, max_size=4), max_size=3),
)
def test_deltas_always_add_up_to_the_text_before_the_first_stop(text: str, stop: list[str]) -> None:
    deltas, stream = stream_all(text, tuple(stop))
    joined = "".join(deltas)
    assert joined == stream.text
    if stream.stopped_by is None:
        assert joined == text
    else:
        assert text.startswith(joined + stream.stopped_by)
        assert all(s not in joined for s in stop)


@given(
    st.lists(
        st.sampled_from([0.0, 1.0, -1.0, 2.5, float("inf"), float("-inf"), float("nan")]),
        min_size=1,
        max_size=12,
    )
)
def test_greedy_token_is_torchs_argmax_ties_and_nans_included(values: list[float]) -> None:
    logits = torch.tensor(values, dtype=torch.float32)
    assert greedy_token(logits) == int(torch.argmax(logits))
    with torch.inference_mode():
        row = torch.stack([logits, logits])[1]  # a row view, as a batch's logits are
        assert greedy_token(row) == int(torch.argmax(logits))
    assert greedy_token(logits.to(torch.bfloat16)) == int(torch.argmax(logits.to(torch.bfloat16)))
