"""``messages.append(completion.choices[0].message)``: the OpenAI SDK's own response
object sent back in the next turn (with its ``refusal``, ``annotations``, ``audio`` and
``function_call`` members) is accepted as OpenAI accepts it -- on the embedded engine
and through an upstream chain, where what goes on is the assistant's turn alone."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessage

from tests.engine.fake_providers import ANSWER, FakeProvider
from tests.server.test_model_clients import base_url  # noqa: F401 (the fixture)
from tests.server.test_upstream_provider_chain import QUESTION, gateway, openai_client

CITED: Any = {
    "role": "assistant",
    "content": "Paris is the capital.",
    "refusal": None,
    "annotations": [
        {
            "type": "url_citation",
            "url_citation": {
                "start_index": 0,
                "end_index": 5,
                "title": "Paris",
                "url": "https://en.wikipedia.org/wiki/Paris",
            },
        }
    ],
    "audio": None,
    "function_call": None,
}


def test_the_sdks_message_object_goes_back_through_a_chain_as_the_turn_alone() -> None:
    fake = FakeProvider("openai")
    with gateway(fake) as url:
        client = openai_client(url)
        first = client.chat.completions.create(model="gpt-4o", messages=QUESTION)
        messages: list[Any] = [*QUESTION, first.choices[0].message]  # the pydantic object
        messages.append({"role": "user", "content": "And of Spain?"})
        second = client.chat.completions.create(model="gpt-4o", messages=messages)
        # A search model's answer with url citations, appended the same way.
        cited: Any = ChatCompletionMessage.model_validate(CITED)
        third = client.chat.completions.create(
            model="gpt-4o", messages=[*QUESTION, cited, {"role": "user", "content": "Sure?"}]
        )
        refused: Any = ChatCompletionMessage.model_validate(
            {"role": "assistant", "content": None, "refusal": "I can't help with that."}
        )
        fourth = client.chat.completions.create(
            model="gpt-4o", messages=[*QUESTION, refused, {"role": "user", "content": "Why?"}]
        )
    assert second.choices[0].message.content == "".join(ANSWER)
    assert third.choices[0].message.content == "".join(ANSWER)
    assert fourth.choices[0].message.content == "".join(ANSWER)
    assert fake.received[1]["messages"][1] == {"role": "assistant", "content": "".join(ANSWER)}
    assert fake.received[2]["messages"][1] == {
        "role": "assistant",
        "content": "Paris is the capital.",
    }
    # The refusal is what the assistant said in that turn: it stays in the prompt.
    assert fake.received[3]["messages"][1] == {
        "role": "assistant",
        "content": "I can't help with that.",
    }


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("function_call", {"name": "f", "arguments": "{}"}),
        ("audio", {"id": "audio_123"}),
        ("annotations", [{"url_citation": {}}]),
        ("annotations", "cited"),
    ],
)
def test_members_that_cannot_apply_are_a_400_naming_them(member: str, value: Any) -> None:
    fake = FakeProvider("openai")
    with gateway(fake) as url:
        echoed: Any = {"role": "assistant", "content": "Paris.", member: value}
        with pytest.raises(openai.BadRequestError) as caught:
            openai_client(url).chat.completions.create(
                model="gpt-4o", messages=[*QUESTION, echoed, {"role": "user", "content": "?"}]
            )
    assert member in str(caught.value)
    assert fake.received == []  # refused before anything went upstream


@pytest.mark.model
def test_the_sdks_message_object_goes_back_to_the_embedded_engine(base_url: str) -> None:  # noqa: F811
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    question: Any = [{"role": "user", "content": "Name one fruit."}]
    first = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=question, max_tokens=8
    )
    echoed = first.choices[0].message
    assert echoed.annotations == [] and echoed.refusal is None  # what the SDK sends back
    follow: Any = [*question, echoed, {"role": "user", "content": "Another one?"}]
    second = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=follow, max_tokens=8
    )
    cited: Any = [*question, ChatCompletionMessage.model_validate(CITED), QUESTION[0]]
    third = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=cited, max_tokens=8
    )
    assert second.choices[0].message.content and third.choices[0].message.content
    assert second.usage is not None and first.usage is not None
    assert second.usage.prompt_tokens > first.usage.prompt_tokens  # the turn is in the prompt
