from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptcache.keys import (
    KEY_VERSION,
    canonical_json,
    canonical_request_dict,
    langchain_key,
    response_key,
)
from promptcache.request import (
    CacheControl,
    ChatRequest,
    Message,
    SamplingParams,
    TextBlock,
    Tool,
    ToolUseBlock,
    Transport,
)

ROLES: list[Literal["user", "assistant"]] = ["user", "assistant"]

KEY_PATTERN = re.compile(rf"^{KEY_VERSION}:sha256:[0-9a-f]{{64}}$")

json_leaf = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
json_object = st.dictionaries(st.text(max_size=5), json_value, max_size=4)
texts = st.text(min_size=1, max_size=20)


@st.composite
def requests(draw: st.DrawFn) -> ChatRequest:
    tools = tuple(
        Tool(name=draw(texts), description=draw(st.text(max_size=10)), input_schema=schema)
        for schema in draw(st.lists(json_object, max_size=2))
    )
    messages = tuple(
        Message(role=role, content=(TextBlock(text=text),))
        for role, text in draw(st.lists(st.tuples(st.sampled_from(ROLES), texts), min_size=1))
    )
    return ChatRequest(
        model=draw(st.sampled_from(["smollm2", "gpt-4o", "glm-4"])),
        messages=messages,
        system=tuple(TextBlock(text=t) for t in draw(st.lists(texts, max_size=2))),
        tools=tools,
        sampling=SamplingParams(
            temperature=draw(st.none() | st.floats(0, 2, allow_nan=False)),
            max_tokens=draw(st.none() | st.integers(1, 4096)),
            seed=draw(st.none() | st.integers(0, 2**31)),
        ),
        response_format=draw(st.none() | json_object),
        tenant=draw(st.text(max_size=6)),
        namespace=draw(st.text(max_size=6)),
    )


def _reorder(value: Any) -> Any:
    """The same data with every dict's insertion order reversed."""
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


@settings(max_examples=50)
@given(requests())
def test_key_is_tagged_and_deterministic(request: ChatRequest) -> None:
    key = response_key(request)
    assert KEY_PATTERN.match(key)
    assert response_key(dataclasses.replace(request)) == key


@settings(max_examples=50)
@given(requests())
def test_key_is_stable_under_dict_ordering(request: ChatRequest) -> None:
    reordered = dataclasses.replace(
        request,
        tools=tuple(
            dataclasses.replace(t, input_schema=_reorder(dict(t.input_schema)))
            for t in request.tools
        ),
        response_format=_reorder(request.response_format),
    )
    assert response_key(reordered) == response_key(request)


@given(json_value)
def test_canonical_json_is_a_fixed_point_of_reserialisation(value: Any) -> None:
    text = canonical_json(value)
    assert canonical_json(json.loads(text)) == text
    assert canonical_json(_reorder(value)) == text
    assert " " not in canonical_json({"a": [1, 2]})


@settings(max_examples=50)
@given(requests(), st.booleans(), st.text(max_size=8), st.text(max_size=8), json_object)
def test_key_ignores_transport_fields(
    request: ChatRequest, stream: bool, request_id: str, user: str, metadata: dict[str, Any]
) -> None:
    transported = dataclasses.replace(
        request,
        transport=Transport(
            stream=stream, include_usage=stream, request_id=request_id, user=user, metadata=metadata
        ),
    )
    assert response_key(transported) == response_key(request)
    assert "transport" not in canonical_request_dict(transported)


@settings(max_examples=50)
@given(requests(), st.text(min_size=1, max_size=6))
def test_key_differs_across_tenants_and_namespaces(request: ChatRequest, suffix: str) -> None:
    key = response_key(request)
    assert response_key(dataclasses.replace(request, tenant=request.tenant + suffix)) != key
    assert response_key(dataclasses.replace(request, namespace=request.namespace + suffix)) != key
    # The two fields are not concatenated: moving text between them changes the key.
    moved = dataclasses.replace(request, tenant=request.tenant + suffix, namespace="")
    other = dataclasses.replace(request, tenant=request.tenant, namespace=suffix)
    assert response_key(moved) != response_key(other)


def _with_first(request: ChatRequest, first: Message) -> ChatRequest:
    return dataclasses.replace(request, messages=(first, *request.messages[1:]))


def _semantic_changes(request: ChatRequest) -> list[ChatRequest]:
    first = request.messages[0]
    return [
        dataclasses.replace(request, model=request.model + "-x"),
        _with_first(
            request, Message(role=first.role, content=(TextBlock(text=first.text() + "!"),))
        ),
        _with_first(
            request,
            Message(role="assistant" if first.role == "user" else "user", content=first.content),
        ),
        dataclasses.replace(request, messages=request.messages[:-1] or request.messages * 2),
        dataclasses.replace(request, system=(*request.system, TextBlock(text="extra"))),
        dataclasses.replace(request, tools=(*request.tools, Tool(name="new_tool"))),
        dataclasses.replace(
            request,
            sampling=dataclasses.replace(
                request.sampling, temperature=(request.sampling.temperature or 0.0) + 0.5
            ),
        ),
        dataclasses.replace(
            request,
            sampling=dataclasses.replace(
                request.sampling, max_tokens=(request.sampling.max_tokens or 0) + 1
            ),
        ),
        dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, stop=("END",))),
        dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, n=2)),
        dataclasses.replace(
            request,
            sampling=dataclasses.replace(request.sampling, seed=(request.sampling.seed or 0) + 1),
        ),
        dataclasses.replace(request, sampling=dataclasses.replace(request.sampling, top_p=0.5)),
        dataclasses.replace(
            request,
            response_format={"type": "json_object"}
            if request.response_format != {"type": "json_object"}
            else {"type": "text"},
        ),
        dataclasses.replace(request, tool_choice="required"),
        _with_first(
            request,
            Message(
                role=first.role,
                content=(TextBlock(text=first.text(), cache_control=CacheControl(ttl="1h")),),
            ),
        ),
    ]


@settings(max_examples=30)
@given(requests())
def test_key_changes_when_any_semantic_field_changes(request: ChatRequest) -> None:
    key = response_key(request)
    for changed in _semantic_changes(request):
        assert response_key(changed) != key, changed


def test_integral_floats_and_ints_give_one_key() -> None:
    base = ChatRequest(model="m", messages=(Message(role="user", content=(TextBlock(text="hi"),)),))
    one = dataclasses.replace(base, sampling=SamplingParams(temperature=1))
    one_float = dataclasses.replace(base, sampling=SamplingParams(temperature=1.0))
    assert response_key(one) == response_key(one_float)
    assert canonical_json({"x": -0.0, "y": 0.5}) == '{"x":0,"y":0.5}'


def test_canonical_json_is_utf8_not_ascii_escaped() -> None:
    assert canonical_json({"b": "é", "a": "漢"}) == '{"a":"漢","b":"é"}'


def test_unserialisable_tool_schema_names_the_field() -> None:
    request = ChatRequest(
        model="m",
        messages=(Message(role="user", content=(TextBlock(text="hi"),)),),
        tools=(Tool(name="t", input_schema={"properties": {"x": {"enum": {1, 2}}}}),),
    )
    with pytest.raises(TypeError, match=r"tools\[0\]\.input_schema\.properties\.x\.enum.*set"):
        response_key(request)


def test_unserialisable_tool_input_names_the_field() -> None:
    request = ChatRequest(
        model="m",
        messages=(
            Message(
                role="assistant",
                content=(ToolUseBlock(id="c1", name="t", input={"when": object()}),),
            ),
        ),
    )
    with pytest.raises(TypeError, match=r"messages\[0\]\.content\[0\]\.input\.when.*object"):
        response_key(request)


def test_non_string_keys_and_nan_are_refused_with_their_path() -> None:
    with pytest.raises(TypeError, match=r"\$\.a.*key 1"):
        canonical_json({"a": {1: "x"}})
    with pytest.raises(ValueError, match=r"\$\[0\].*nan"):
        canonical_json([float("nan")])
    with pytest.raises(TypeError, match=r"\$.*bytes"):
        canonical_json(b"raw")


def test_langchain_key_is_tagged_and_partitioned() -> None:
    key = langchain_key("prompt", "llm")
    assert KEY_PATTERN.match(key)
    assert langchain_key("prompt", "llm") == key
    assert langchain_key("prompt", "llm", namespace="ns") != key
    assert langchain_key("promptllm", "") != langchain_key("prompt", "llm")
    assert langchain_key("prompt", "llm2") != key


def test_langchain_key_is_the_digest_of_its_canonical_json() -> None:
    # The stored LangChain entries of earlier versions must keep being found.
    assert langchain_key("prompt", "llm") == (
        "pc1:sha256:f95ac70773a3b65d0eaf1c59b27133fb152f744a45c7fa9c5bc03e2f89d61ad9"
    )
    assert langchain_key('héllo "q"\n\u2028 \x01', "llm\\x", namespace="ns/é") == (
        "pc1:sha256:57deba37bff69ab36b12d2395982aca90af6f48d8657cd904cbda6fd1a59dd22"
    )


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text(max_size=6))
def test_langchain_key_matches_canonical_json(prompt: str, llm_string: str, namespace: str) -> None:
    payload = {"kind": "langchain", "llm_string": llm_string, "namespace": namespace}
    text = canonical_json(payload | {"prompt": prompt})
    try:
        expected = f"{KEY_VERSION}:sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    except UnicodeEncodeError:  # lone surrogates cannot be keys either way
        with pytest.raises(UnicodeEncodeError):
            langchain_key(prompt, llm_string, namespace=namespace)
        return
    assert langchain_key(prompt, llm_string, namespace=namespace) == expected


def test_langchain_key_names_the_field_that_is_not_a_string() -> None:
    with pytest.raises(TypeError, match="prompt"):
        langchain_key(b"prompt", "llm")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="llm_string"):
        langchain_key("prompt", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="namespace"):
        langchain_key("prompt", "llm", namespace=1)  # type: ignore[arg-type]
