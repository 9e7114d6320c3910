"""``reasoning_effort`` and ``verbosity``: parsed, keyed, forwarded upstream, refused locally."""

from __future__ import annotations

from typing import Any

import pytest

from promptcache.dialects.anthropic import wire as anthropic_wire
from promptcache.dialects.openai import parse_request
from promptcache.dialects.openai import wire as openai_wire
from promptcache.engine.local.sampling import validate_sampling
from promptcache.errors import RequestError
from promptcache.keys import response_key


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def test_parsed_into_the_request_and_the_key() -> None:
    plain = parse_request(body())
    effort = parse_request(body(reasoning_effort="low", verbosity="high"))
    assert (effort.sampling.reasoning_effort, effort.sampling.verbosity) == ("low", "high")
    assert plain.sampling.reasoning_effort is None
    assert response_key(plain) != response_key(effort)
    assert response_key(plain) == response_key(parse_request(body()))


@pytest.mark.parametrize(
    ("field", "value"), [("reasoning_effort", "extreme"), ("verbosity", 3), ("verbosity", "max")]
)
def test_values_outside_the_api_are_400(field: str, value: Any) -> None:
    with pytest.raises(RequestError) as caught:
        parse_request(body(**{field: value}))
    assert caught.value.param == field


def test_forwarded_to_an_openai_upstream_refused_by_an_anthropic_one() -> None:
    request = parse_request(body(reasoning_effort="minimal", verbosity="low", max_tokens=8))
    wire = openai_wire.to_wire_request(request, stream=False)
    assert (wire["reasoning_effort"], wire["verbosity"]) == ("minimal", "low")
    assert "reasoning_effort" not in openai_wire.to_wire_request(
        parse_request(body()), stream=False
    )
    with pytest.raises(RequestError) as caught:
        anthropic_wire.to_wire_request(request, stream=False)
    assert caught.value.param == "reasoning_effort"


@pytest.mark.parametrize("field", ["reasoning_effort", "verbosity"])
def test_the_local_engine_refuses_them_by_name(field: str) -> None:
    request = parse_request(body(**{field: "low"}))
    with pytest.raises(RequestError, match="not supported by the local engine") as caught:
        validate_sampling(request.sampling)
    assert caught.value.param == field
