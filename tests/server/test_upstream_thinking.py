"""The reasoning switch and Anthropic's signed thinking through a real chain: the
official SDKs -> a promptcache gateway -> a fake provider (tests/engine/fake_providers.py),
and the embedded engine's refusal."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.engine.fake_providers import ANSWER, THOUGHT, FakeProvider
from tests.server.test_model_clients import MODEL, base_url  # noqa: F401 (the fixture)
from tests.server.test_upstream_provider_chain import (
    QUESTION,
    anthropic_client,
    gateway,
    openai_client,
)

ENABLED: Any = {"type": "enabled", "budget_tokens": 2048}
SIGNED = {"type": "thinking", "thinking": "".join(THOUGHT), "signature": "sig"}


def test_anthropic_thinking_goes_to_anthropic_and_its_signature_comes_back() -> None:
    fake = FakeProvider("anthropic", think=True)
    with gateway(fake) as url:
        client = anthropic_client(url)
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=4096, thinking=ENABLED, messages=QUESTION
        )
        streamed = []
        for _ in range(2):  # a miss, then the same stream replayed from the cache
            with client.messages.stream(
                model="claude-sonnet-4-5",
                max_tokens=4096,
                thinking=ENABLED,
                messages=[{"role": "user", "content": "Streamed?"}],
            ) as stream:
                streamed.append(stream.get_final_message())
        # The next turn sends the signed block back (as Anthropic requires with tools).
        turn: Any = [
            *QUESTION,
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {"role": "user", "content": "Why?"},
        ]
        client.messages.create(
            model="claude-sonnet-4-5", max_tokens=4096, thinking=ENABLED, messages=turn
        )
    assert fake.received[0]["thinking"] == ENABLED
    first = message.content[0]
    assert first.type == "thinking" and first.signature == "sig"
    assert first.thinking == "".join(THOUGHT)
    assert len(fake.received) == 3  # the second stream was a hit
    for final in streamed:
        block = final.content[0]
        assert block.type == "thinking" and block.signature == "sig"
        assert block.thinking == "".join(THOUGHT)
        assert final.content[1].type == "text"
    sent_back = fake.received[2]["messages"][1]["content"]
    assert sent_back[0] == SIGNED
    assert sent_back[1] == {"type": "text", "text": "".join(ANSWER)}


def test_anthropics_own_400_on_a_bad_budget_comes_back() -> None:
    refusal = "thinking.budget_tokens: Input should be greater than or equal to 1024"
    fake = FakeProvider("anthropic", error=(400, refusal))
    with gateway(fake) as url, pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client(url).messages.create(
            model="claude-sonnet-4-5",
            max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 100},
            messages=QUESTION,
        )
    assert caught.value.status_code == 400
    assert "greater than or equal to 1024" in str(caught.value)
    assert fake.received[0]["thinking"] == {"type": "enabled", "budget_tokens": 100}


def test_glm_and_openrouter_get_the_switch_in_their_own_shape() -> None:
    glm = FakeProvider("glm")
    with gateway(glm) as url:
        openai_client(url).chat.completions.create(
            model="glm-4.6", messages=QUESTION, extra_body={"thinking": {"type": "disabled"}}
        )
        # An Anthropic client's thinking block in history does not go to GLM.
        history: Any = [
            *QUESTION,
            {"role": "assistant", "content": [SIGNED, {"type": "text", "text": "Paris."}]},
            {"role": "user", "content": "Sure?"},
        ]
        anthropic_client(url).messages.create(
            model="glm-4.6", max_tokens=64, thinking={"type": "disabled"}, messages=history
        )
    assert glm.received[0]["thinking"] == {"type": "disabled"}
    assert glm.received[1]["thinking"] == {"type": "disabled"}
    assert glm.received[1]["messages"][1] == {"role": "assistant", "content": "Paris."}
    router = FakeProvider("openrouter")
    with gateway(router) as url:
        anthropic_client(url).messages.create(
            model="anthropic/claude-sonnet-4.5",
            max_tokens=4096,
            thinking=ENABLED,
            messages=QUESTION,
        )
    assert router.received[0]["reasoning"] == {"max_tokens": 2048}
    assert "thinking" not in router.received[0]


@pytest.mark.parametrize("provider", ["vllm", "deepseek", "openai"])
def test_providers_without_the_switch_refuse_it_in_the_callers_dialect(provider: str) -> None:
    fake = FakeProvider(provider)
    with gateway(fake) as url:
        with pytest.raises(anthropic.BadRequestError) as from_anthropic:
            anthropic_client(url).messages.create(
                model="m", max_tokens=4096, thinking=ENABLED, messages=QUESTION
            )
        with pytest.raises(openai.BadRequestError) as from_openai:
            openai_client(url).chat.completions.create(
                model="m", messages=QUESTION, extra_body={"thinking": {"type": "enabled"}}
            )
    for caught in (from_anthropic.value, from_openai.value):
        assert "thinking" in str(caught) and provider in str(caught)
    assert fake.received == []  # nothing half-sent


@pytest.mark.model
def test_the_embedded_model_refuses_thinking_but_takes_disabled(base_url: str) -> None:  # noqa: F811
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)
    kinds: list[Any] = [{"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}]
    for kind in kinds:
        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.create(model=MODEL, max_tokens=8, thinking=kind, messages=QUESTION)
        # The model is named (the error wording shortens echoed values: 'Smo...truct').
        body: Any = caught.value.body
        message = body["error"]["message"]
        assert "model 'Smo" in message and "does not support extended thinking" in message
        assert f"thinking type '{kind['type']}'" in message
    answer = client.messages.create(
        model=MODEL, max_tokens=8, thinking={"type": "disabled"}, messages=QUESTION
    )
    assert answer.content and answer.content[0].type == "text"
