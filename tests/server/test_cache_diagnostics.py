"""Anthropic's cache diagnostics: ``diagnostics.previous_message_id`` in, and
``diagnostics.cache_miss_reason`` out, per tenant, bounded."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from promptcache.request import ChatRequest, Message, TextBlock
from promptcache.server.diagnostics import CacheDiagnostics
from tests.server.conftest import ServerFactory, anthropic_body

SYSTEM = "You are terse."


def turn(*texts: str, system: str = SYSTEM, previous: Any = ..., **extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)
    ]
    body = anthropic_body(messages=messages, system=system, **extra)
    body["messages"] = messages
    if previous is not ...:
        body["diagnostics"] = {"previous_message_id": previous}
    return body


async def test_reasons_across_a_conversation(serve: ServerFactory) -> None:
    async with serve() as (client, _):
        first = (await client.post("/v1/messages", json=turn("Hi", previous=None))).json()
        assert first["diagnostics"] == {"cache_miss_reason": None}
        grown = await client.post(
            "/v1/messages", json=turn("Hi", "Hello", "More", previous=first["id"])
        )
        assert grown.json()["diagnostics"] == {"cache_miss_reason": None}

        async def reason(body: dict[str, Any]) -> Any:
            reply = (await client.post("/v1/messages", json=body)).json()
            return reply["diagnostics"]["cache_miss_reason"]

        assert await reason(turn("Hi", system="Other.", previous=first["id"])) == {
            "type": "system_changed"
        }
        assert await reason(turn("Bye", previous=first["id"])) == {"type": "messages_changed"}
        tools = [{"name": "t", "input_schema": {"type": "object"}}]
        assert await reason(turn("Hi", tools=tools, previous=first["id"])) == {
            "type": "tools_changed"
        }
        assert await reason(turn("Hi", previous="msg_unknown")) == {
            "type": "previous_message_not_found"
        }
        # Without the diagnostics object, nothing is added.
        assert "diagnostics" not in (await client.post("/v1/messages", json=turn("Hi"))).json()


async def test_a_response_cache_hit_is_diagnosed_too(serve: ServerFactory) -> None:
    async with serve() as (client, _):
        body = turn("Same question", previous=None)
        first = await client.post("/v1/messages", json=body)
        again = await client.post(
            "/v1/messages", json=turn("Same question", previous=first.json()["id"])
        )
        assert again.headers["x-promptcache"] == "HIT"
        assert again.json()["diagnostics"] == {"cache_miss_reason": None}


def request(model: str, text: str, tenant: str = "") -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(Message(role="user", content=(TextBlock(text=text),)),),
        tenant=tenant,
    )


def test_model_changed_tenants_apart_and_bounded() -> None:
    diagnostics = CacheDiagnostics(capacity=2)
    diagnostics.annotate(request("a", "q"), {"id": "msg_1"})

    def asked(req: ChatRequest, previous: str) -> Any:
        transport = replace(req.transport, diagnostics=True, previous_message_id=previous)
        return diagnostics.annotate(replace(req, transport=transport), {"id": "x"})["diagnostics"]

    assert asked(request("b", "q"), "msg_1") == {"cache_miss_reason": {"type": "model_changed"}}
    assert asked(request("a", "q", tenant="other"), "msg_1") == {
        "cache_miss_reason": {"type": "previous_message_not_found"}
    }
    diagnostics.annotate(request("a", "q"), {"id": "msg_2"})
    diagnostics.annotate(request("a", "q"), {"id": "msg_3"})
    assert len(diagnostics) == 2
    assert asked(request("a", "q"), "msg_1")["cache_miss_reason"] == {
        "type": "previous_message_not_found"
    }
