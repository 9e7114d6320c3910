"""Automatic caching (a top-level ``cache_control``) and the Messages API field sweep."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from promptcache.dialects import anthropic, openai
from promptcache.dialects.anthropic.wire import to_wire_request as anthropic_wire
from promptcache.dialects.openai.wire import to_wire_request as openai_wire
from promptcache.errors import RequestError
from promptcache.keys import canonical_request_dict, response_key
from promptcache.request import Breakpoint, CacheControl, TextBlock

AUTO = {"type": "ephemeral", "ttl": "5m"}
HOUR = {"type": "ephemeral", "ttl": "1h"}


def body(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
        ],
    }
    base.update(overrides)
    return base


def marked(n: int, ttl: str = "5m") -> list[dict[str, Any]]:
    return [
        {"type": "text", "text": f"p{i}", "cache_control": {"type": "ephemeral", "ttl": ttl}}
        for i in range(n)
    ]


def test_top_level_cache_control_marks_the_last_block_of_the_last_message() -> None:
    request = anthropic.parse_request(body(cache_control=AUTO))
    assert request.cache_control == CacheControl(ttl="5m")
    assert request.breakpoints() == (Breakpoint(section="messages", message=2, block=1, ttl="5m"),)
    # The blocks themselves stay unmarked: the breakpoint moves as the conversation grows.
    assert all(b.cache_control is None for m in request.messages for b in m.content)
    longer = body(cache_control=AUTO)
    longer["messages"] += [
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "next"},
    ]
    assert anthropic.parse_request(longer).breakpoints() == (
        Breakpoint(section="messages", message=4, block=0, ttl="5m"),
    )


def test_the_default_ttl_is_5m_and_1h_is_kept() -> None:
    default = anthropic.parse_request(body(cache_control={"type": "ephemeral"}))
    assert default.breakpoints()[0].ttl == "5m"
    assert anthropic.parse_request(body(cache_control=HOUR)).breakpoints()[0].ttl == "1h"


def test_it_counts_toward_the_limit_of_four() -> None:
    assert (
        len(anthropic.parse_request(body(system=marked(3), cache_control=AUTO)).breakpoints()) == 4
    )
    with pytest.raises(RequestError, match="A maximum of 4 blocks with cache_control") as caught:
        anthropic.parse_request(body(system=marked(4), cache_control=AUTO))
    assert caught.value.param == "cache_control"


def test_it_follows_the_1h_before_5m_rule() -> None:
    with pytest.raises(RequestError, match="must not come after"):
        anthropic.parse_request(body(system=marked(1), cache_control=HOUR))
    request = anthropic.parse_request(body(system=marked(1, "1h"), cache_control=AUTO))
    assert [p.ttl for p in request.breakpoints()] == ["1h", "5m"]


def test_an_explicit_marker_on_the_same_block_is_one_breakpoint() -> None:
    messages = [{"role": "user", "content": marked(1)}]
    request = anthropic.parse_request(body(messages=messages, cache_control=AUTO))
    assert len(request.breakpoints()) == 1
    with pytest.raises(RequestError, match="already has cache_control"):
        anthropic.parse_request(body(messages=messages, cache_control=HOUR))


def test_without_messages_content_it_falls_back_to_system_then_tools() -> None:
    request = anthropic.parse_request(body(cache_control=AUTO))
    no_messages = replace(request, messages=())
    assert no_messages.breakpoints() == (
        Breakpoint(section="system", message=None, block=0, ttl="5m"),
    )


def test_it_is_part_of_the_response_cache_key_and_absent_when_unset() -> None:
    plain = anthropic.parse_request(body())
    auto = anthropic.parse_request(body(cache_control=AUTO))
    assert "cache_control" not in canonical_request_dict(plain)
    assert response_key(plain) != response_key(auto)
    assert response_key(auto) != response_key(anthropic.parse_request(body(cache_control=HOUR)))


def test_the_openai_dialect_accepts_it_with_the_same_meaning() -> None:
    request = openai.parse_request(
        {
            "model": "m",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
            "cache_control": HOUR,
        }
    )
    assert request.breakpoints() == (Breakpoint(section="messages", message=0, block=0, ttl="1h"),)


def test_upstream_wires() -> None:
    request = anthropic.parse_request(body(cache_control=HOUR))
    wire = anthropic_wire(request, stream=False)
    assert wire["cache_control"] == HOUR
    assert all("cache_control" not in b for m in wire["messages"] for b in m["content"])
    assert "cache_control" not in openai_wire(request, stream=False)


# -- the Messages API reference, field by field ------------------------------------------


@pytest.mark.parametrize(
    "field", ["container", "mcp_servers", "context_management", "compaction", "fallbacks"]
)
def test_fields_that_cannot_apply_are_a_400_naming_them(field: str) -> None:
    with pytest.raises(RequestError, match=f"`{field}` cannot apply here") as caught:
        anthropic.parse_request(body(**{field: {"x": 1} if field != "mcp_servers" else []}))
    assert caught.value.param == field


@pytest.mark.parametrize("kind", ["enabled", "adaptive", "disabled"])
def test_thinking_is_parsed_for_the_engine_to_apply_or_refuse(kind: str) -> None:
    # The local model's 400 naming it, and each upstream's shape: tests/dialects/test_thinking.py.
    budget = {"budget_tokens": 1024} if kind == "enabled" else {}
    request = anthropic.parse_request(body(thinking={"type": kind, **budget}))
    assert request.sampling.thinking is not None and request.sampling.thinking.mode == kind


def test_accepted_transport_and_no_effect_fields() -> None:
    base = anthropic.parse_request(body())
    for extra in (
        {"service_tier": "auto"},
        {"service_tier": "standard_only"},
        {"speed": "standard"},
        {"inference_geo": "global"},
        {"diagnostics": {"previous_message_id": None}},
        {"diagnostics": {"previous_message_id": "msg_1"}},
    ):
        request = anthropic.parse_request(body(**extra))
        assert response_key(request) == response_key(base), extra
    with pytest.raises(RequestError, match="fast mode"):
        anthropic.parse_request(body(speed="fast"))
    with pytest.raises(RequestError, match="cannot be pinned"):
        anthropic.parse_request(body(inference_geo="us"))


def test_documents_with_text_sources_are_rendered_as_text() -> None:
    doc = {
        "type": "document",
        "title": "Notes",
        "context": "from the wiki",
        "source": {"type": "text", "media_type": "text/plain", "data": "The sky is blue."},
        "cache_control": AUTO,
    }
    content_doc = {
        "type": "document",
        "source": {
            "type": "content",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        },
    }
    messages = [{"role": "user", "content": [doc, content_doc, {"type": "text", "text": "Q?"}]}]
    request = anthropic.parse_request(body(messages=messages))
    blocks = request.messages[0].content
    assert blocks[0] == TextBlock(
        text="Notes\n\nfrom the wiki\n\nThe sky is blue.", cache_control=CacheControl()
    )
    assert blocks[1] == TextBlock(text="one\ntwo")


@pytest.mark.parametrize("kind", ["base64", "url", "file"])
def test_pdf_and_file_documents_are_a_400_saying_why(kind: str) -> None:
    doc = {"type": "document", "source": {"type": kind}}
    with pytest.raises(RequestError, match="read text only") as caught:
        anthropic.parse_request(body(messages=[{"role": "user", "content": [doc]}]))
    assert caught.value.param == "messages.0.content.0.source.type"


def test_citations_and_server_tool_blocks_are_refused() -> None:
    doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
        "citations": {"enabled": True},
    }
    with pytest.raises(RequestError, match="does not cite"):
        anthropic.parse_request(body(messages=[{"role": "user", "content": [doc]}]))
    server = {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}
    with pytest.raises(RequestError, match="runs no server tools"):
        anthropic.parse_request(body(messages=[{"role": "assistant", "content": [server]}]))


def test_search_results_are_text_and_earlier_thinking_is_dropped() -> None:
    result = {
        "type": "search_result",
        "title": "T",
        "source": "https://example.com",
        "content": [{"type": "text", "text": "found"}],
    }
    messages = [
        {"role": "user", "content": [result]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Answer."},
            ],
        },
        {"role": "user", "content": "More?"},
    ]
    request = anthropic.parse_request(body(messages=messages))
    assert request.messages[0].content == (TextBlock(text="T\n\nhttps://example.com\n\nfound"),)
    assert request.messages[1].content == (TextBlock(text="Answer."),)


def test_the_deprecated_output_format_is_output_config_format() -> None:
    schema = {"type": "object", "properties": {}}
    fmt = {"type": "json_schema", "schema": schema}
    assert (
        anthropic.parse_request(body(output_format=fmt)).response_format
        == anthropic.parse_request(body(output_config={"format": fmt})).response_format
    )
