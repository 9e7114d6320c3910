"""The sampling parameters added after pc1 (penalties, logit_bias, top_k, min_p,
repetition_penalty): each is in the response key when set, and absent when unset, so
every existing key stays valid. prompt_cache_key / prompt_cache_retention are transport."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from promptcache.dialects.anthropic import parse as anthropic_parse
from promptcache.dialects.openai import parse as openai_parse
from promptcache.keys import canonical_request_dict, response_key
from promptcache.request import ChatRequest, Message, SamplingParams, TextBlock, Transport

BASE = ChatRequest(
    model="m",
    messages=(Message(role="user", content=(TextBlock(text="Hi"),)),),
    sampling=SamplingParams(temperature=0.0, max_tokens=16, stop=("x",), seed=7),
)
# The key of BASE as computed before these fields existed (pc1, commit 19e3279).
BASE_KEY = "pc1:sha256:7cb1b2367fdb352ea39c832b5c5e0ac38c5a4553d6b9d46ae25c0f40a552d234"


def with_sampling(**changes: Any) -> ChatRequest:
    return replace(BASE, sampling=replace(BASE.sampling, **changes))


def test_existing_keys_are_unchanged() -> None:
    assert response_key(BASE) == BASE_KEY
    assert set(canonical_request_dict(BASE)["sampling"]) == {
        "temperature",
        "top_p",
        "max_tokens",
        "stop",
        "seed",
        "n",
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"frequency_penalty": 0.5},
        {"presence_penalty": -0.5},
        {"logit_bias": ((42, -100.0),)},
        {"top_k": 5},
        {"min_p": 0.1},
        {"repetition_penalty": 1.1},
    ],
)
def test_each_parameter_changes_the_key(changes: dict[str, Any]) -> None:
    changed = with_sampling(**changes)
    assert response_key(changed) != BASE_KEY
    (name,) = changes
    assert name in canonical_request_dict(changed)["sampling"]


def test_neutral_values_share_the_unset_key() -> None:
    neutral = with_sampling(
        frequency_penalty=0.0, presence_penalty=0.0, top_k=0, repetition_penalty=1.0
    )
    assert response_key(neutral) == BASE_KEY


def test_two_penalties_two_keys() -> None:
    assert response_key(with_sampling(frequency_penalty=0.5)) != response_key(
        with_sampling(frequency_penalty=0.6)
    )


def test_prompt_cache_fields_are_transport_out_of_the_key() -> None:
    routed = replace(
        BASE, transport=Transport(prompt_cache_key="user-42", prompt_cache_retention="24h")
    )
    assert response_key(routed) == BASE_KEY


def openai_body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **extra}


def test_openai_logit_bias_is_canonical_whatever_the_order() -> None:
    one = openai_parse.parse_request(openai_body(logit_bias={"50": 5, "7": -100, "3": 0}))
    two = openai_parse.parse_request(openai_body(logit_bias={"7": -100.0, "50": 5.0}))
    assert one.sampling.logit_bias == ((7, -100.0), (50, 5.0))
    assert response_key(one) == response_key(two)
    assert canonical_request_dict(one)["sampling"]["logit_bias"] == [[7, -100], [50, 5]]


def test_openai_parses_every_sampling_parameter() -> None:
    request = openai_parse.parse_request(
        openai_body(
            frequency_penalty=0.5,
            presence_penalty=-1,
            logit_bias={"11": 2},
            top_k=20,
            min_p=0.05,
            repetition_penalty=1.2,
            prompt_cache_key="tenant-a",
            prompt_cache_retention="24h",
        )
    )
    assert request.sampling == SamplingParams(
        frequency_penalty=0.5,
        presence_penalty=-1,
        logit_bias=((11, 2.0),),
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.2,
    )
    assert request.transport.prompt_cache_key == "tenant-a"
    assert request.transport.prompt_cache_retention == "24h"
    plain = openai_parse.parse_request(openai_body(prompt_cache_retention="in_memory"))
    assert plain.transport.prompt_cache_retention == "in_memory"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logit_bias": {"abc": 1}}, "logit_bias"),
        ({"logit_bias": {"-1": 1}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias.5"),
        ({"logit_bias": {"5": "x"}}, "logit_bias.5"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"top_k": -2}, "top_k"),
        ({"min_p": 1.5}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"prompt_cache_retention": "48h"}, "prompt_cache_retention"),
        ({"prompt_cache_key": 5}, "prompt_cache_key"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
    ],
)
def test_openai_refuses_what_it_cannot_honour_naming_it(extra: dict[str, Any], param: str) -> None:
    from promptcache.errors import RequestError

    with pytest.raises(RequestError) as caught:
        openai_parse.parse_request(openai_body(**extra))
    assert caught.value.param is not None
    assert caught.value.param.startswith(param)


def test_anthropic_top_k_is_in_the_key() -> None:
    body = {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    plain = anthropic_parse.parse_request(body)
    top_k = anthropic_parse.parse_request({**body, "top_k": 5})
    assert top_k.sampling.top_k == 5
    assert response_key(plain) != response_key(top_k)
