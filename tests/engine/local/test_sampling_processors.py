"""logit_bias, the penalties, top_k and min_p against reference implementations:
transformers' logits processors, and OpenAI's published penalty formula."""

from __future__ import annotations

from collections import Counter
from typing import cast

import pytest
import torch
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from promptcache.engine.local.sampling import TokenSampler, validate_sampling
from promptcache.errors import RequestError
from promptcache.request import SamplingParams

VOCAB = 512
SEEDS = range(5)


def random_logits(seed: int) -> torch.Tensor:
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 4


def random_ids(seed: int, n: int) -> list[int]:
    generator = torch.Generator().manual_seed(1000 + seed)
    # Few distinct ids, so some repeat (counts above 1).
    return [int(t) for t in torch.randint(0, 40, (n,), generator=generator)]


def sampler_after(params: SamplingParams, prompt: list[int], output: list[int]) -> TokenSampler:
    sampler = TokenSampler(params, prompt_ids=prompt)
    for token in output:
        sampler.observe(token)
    return sampler


def reference(
    processors: list[LogitsProcessor], ids: list[int], logits: torch.Tensor
) -> torch.Tensor:
    input_ids = cast(torch.LongTensor, torch.tensor([ids], dtype=torch.long))
    scores = cast(torch.FloatTensor, logits[None].clone())
    return LogitsProcessorList(processors)(input_ids, scores)[0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_k", [1, 5, 50])
def test_top_k_matches_transformers(seed: int, top_k: int) -> None:
    logits = random_logits(seed)
    ours = TokenSampler(SamplingParams(temperature=1.0, top_k=top_k)).probabilities(logits)
    theirs = torch.softmax(reference([TopKLogitsWarper(top_k)], [0], logits), -1)
    torch.testing.assert_close(ours, theirs)
    assert int((ours > 0).sum()) == top_k


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("min_p", [0.01, 0.1, 0.5])
def test_min_p_matches_transformers(seed: int, min_p: float) -> None:
    logits = random_logits(seed)
    ours = TokenSampler(SamplingParams(temperature=1.0, min_p=min_p)).probabilities(logits)
    theirs = torch.softmax(reference([MinPLogitsWarper(min_p)], [0], logits), -1)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [0.7, 1.3, 2.0])
def test_repetition_penalty_matches_transformers_over_prompt_and_output(
    seed: int, penalty: float
) -> None:
    logits = random_logits(seed)
    prompt, output = random_ids(seed, 12), random_ids(seed + 50, 6)
    sampler = sampler_after(SamplingParams(repetition_penalty=penalty), prompt, output)
    theirs = reference([RepetitionPenaltyLogitsProcessor(penalty)], prompt + output, logits)
    torch.testing.assert_close(sampler.process(logits), theirs)


@pytest.mark.parametrize("seed", SEEDS)
def test_logit_bias_matches_transformers_sequence_bias(seed: int) -> None:
    logits = random_logits(seed)
    bias = {3: -100.0, 17: 5.5, 200: 100.0, 511: -0.25}
    sampler = TokenSampler(SamplingParams(logit_bias=tuple(bias.items())))
    processor = SequenceBiasLogitsProcessor(sequence_bias=[[[t], b] for t, b in bias.items()])
    torch.testing.assert_close(sampler.process(logits), reference([processor], [0], logits))


def openai_penalties(
    logits: torch.Tensor, output: list[int], frequency: float, presence: float
) -> torch.Tensor:
    """OpenAI's formula: mu[j] - c[j] * alpha_frequency - (c[j] > 0) * alpha_presence."""
    out = logits.clone()
    for token, count in Counter(output).items():
        out[token] -= count * frequency + presence
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("frequency", "presence"), [(0.5, 0.0), (0.0, 1.5), (-1.0, 2.0), (2, -2)])
def test_frequency_and_presence_follow_openai_over_the_output_only(
    seed: int, frequency: float, presence: float
) -> None:
    logits = random_logits(seed)
    prompt, output = random_ids(seed, 12), random_ids(seed + 50, 9)
    params = SamplingParams(frequency_penalty=frequency, presence_penalty=presence)
    sampler = sampler_after(params, prompt, output)
    torch.testing.assert_close(
        sampler.process(logits), openai_penalties(logits, output, frequency, presence)
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_the_whole_chain_matches_transformers(seed: int) -> None:
    logits = random_logits(seed)
    prompt, output = random_ids(seed, 10), random_ids(seed + 50, 5)
    params = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        repetition_penalty=1.2,
        frequency_penalty=0.4,
        presence_penalty=0.3,
        logit_bias=((5, 3.0), (9, -100.0)),
    )
    sampler = sampler_after(params, prompt, output)
    ours = sampler.probabilities(sampler.process(logits))
    bias = SequenceBiasLogitsProcessor(sequence_bias=[[[5], 3.0], [[9], -100.0]])
    ids = prompt + output
    penalised = reference([bias, RepetitionPenaltyLogitsProcessor(1.2)], ids, logits)
    penalised = openai_penalties(penalised, output, 0.4, 0.3)
    warped = reference(
        [
            TemperatureLogitsWarper(0.7),
            TopKLogitsWarper(40),
            TopPLogitsWarper(0.9),
            MinPLogitsWarper(0.05),
        ],
        ids,
        penalised,
    )
    torch.testing.assert_close(ours, torch.softmax(warped, -1))


def test_greedy_decoding_applies_bias_and_penalties_before_the_argmax() -> None:
    logits = torch.zeros(VOCAB)
    logits[7], logits[8] = 10.0, 9.0
    assert TokenSampler(SamplingParams(temperature=0)).sample(logits) == 7
    banned = TokenSampler(SamplingParams(temperature=0, logit_bias=((7, -100.0),)))
    assert banned.sample(logits) == 8
    forced = TokenSampler(SamplingParams(logit_bias=((300, 100.0),)))
    assert forced.sample(logits) == 300
    # Generated once, token 7 then loses 2 + 0 to the frequency penalty: 8 wins.
    repeating = TokenSampler(SamplingParams(temperature=0, frequency_penalty=2.0))
    assert [repeating.sample(logits) for _ in range(3)] == [7, 8, 7]
    repeating_prompt = TokenSampler(SamplingParams(repetition_penalty=2.0), prompt_ids=[7])
    assert repeating_prompt.sample(logits) == 8  # 10 / 2 < 9


def test_sampled_decoding_never_picks_a_banned_or_filtered_token() -> None:
    logits = random_logits(0)
    top = int(torch.argmax(logits))
    params = SamplingParams(temperature=1.5, seed=3, top_k=3, logit_bias=((top, -100.0),))
    sampler = TokenSampler(params)
    allowed = set(torch.topk(logits.clone().index_fill_(0, torch.tensor([top]), -1e9), 3).indices)
    picks = {sampler.sample(logits) for _ in range(200)}
    assert picks <= {int(t) for t in allowed}
    assert top not in picks


def test_neutral_values_are_unset_and_bias_is_canonical() -> None:
    params = SamplingParams(
        frequency_penalty=0.0,
        presence_penalty=0,
        top_k=0,
        min_p=0.0,
        repetition_penalty=1.0,
        logit_bias=((9, 1.0), (2, 0.0), (4, -3)),
    )
    assert params == SamplingParams(logit_bias=((4, -3.0), (9, 1.0)))
    assert SamplingParams(top_k=-1).top_k is None
    assert not SamplingParams().processes_logits
    assert SamplingParams(logit_bias=((1, 2.0),)).processes_logits


@pytest.mark.parametrize(
    ("params", "param"),
    [
        (SamplingParams(frequency_penalty=2.5), "frequency_penalty"),
        (SamplingParams(presence_penalty=-3), "presence_penalty"),
        (SamplingParams(min_p=1.5), "min_p"),
        (SamplingParams(repetition_penalty=-1.0), "repetition_penalty"),
        (SamplingParams(logit_bias=((1, 101.0),)), "logit_bias"),
        (SamplingParams(logit_bias=((VOCAB, 1.0),)), "logit_bias"),
    ],
)
def test_out_of_range_processing_is_a_request_error(params: SamplingParams, param: str) -> None:
    with pytest.raises(RequestError) as caught:
        validate_sampling(params, vocab_size=VOCAB)
    assert caught.value.param == param
