"""Bring your own key (``--upstream-key-mode forward``) with the official SDKs: each
caller's key reaches the provider, names its own tenant, and never shows anywhere."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import httpx
import openai
import pytest

from promptcache.server.auth import KeyRing, load_tenant_secret, tenant_id
from tests.server.fake_provider import FakeProvider
from tests.server.upstream_gateway import gateway

ALICE, BOB = "sk-alice-secret-1111", "sk-bob-secret-2222"
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "same question"}
]


def shows(text: str, *keys: str) -> bool:
    return any(key in text for key in keys)


def headers_text(headers: Any) -> str:
    """Every header line (an httpx ``Headers``, whichever httpx the SDK is built on)."""
    return "\n".join(f"{name}: {value}" for name, value in headers.multi_items())


def test_two_keys_are_two_tenants_and_each_key_reaches_the_provider(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = FakeProvider(keys=(ALICE, BOB))
    with gateway(provider) as url:
        alice = openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE, max_retries=0)
        bob = openai.OpenAI(base_url=f"{url}/v1", api_key=BOB, max_retries=0)
        create = {"model": "m-1", "messages": MESSAGES, "temperature": 0}
        first = alice.chat.completions.with_raw_response.create(**create)  # type: ignore[call-overload]
        other = bob.chat.completions.with_raw_response.create(**create)  # type: ignore[call-overload]
        again = alice.chat.completions.with_raw_response.create(**create)  # type: ignore[call-overload]
        streamed = list(alice.chat.completions.create(**create, stream=True))  # type: ignore[call-overload]
    assert first.parse().choices[0].message.content == "echo: same question"
    # Bob's identical request is not Alice's entry: a MISS, computed with Bob's key.
    assert [r.headers["x-promptcache"] for r in (first, other, again)] == ["MISS", "MISS", "HIT"]
    assert first.headers["x-promptcache-key"] != other.headers["x-promptcache-key"]
    assert first.headers["x-promptcache-key"] == again.headers["x-promptcache-key"]
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == (
        "echo: same question"
    )  # Alice's stream replays her entry
    calls = provider.calls("/v1/chat/completions")
    assert [c.authorization for c in calls] == [f"Bearer {ALICE}", f"Bearer {BOB}"]
    for response in (first, other, again):
        assert not shows(headers_text(response.headers) + response.http_response.text, ALICE, BOB)
    assert not shows(caplog.text, ALICE, BOB)


def test_no_key_is_a_401_in_the_callers_dialect() -> None:
    provider = FakeProvider()
    body = {"model": "m-1", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
    with gateway(provider) as url:
        oa = httpx.post(f"{url}/v1/chat/completions", json=body)
        an = httpx.post(
            f"{url}/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"}
        )
        models = httpx.get(f"{url}/v1/models")
    assert oa.status_code == 401 and oa.json()["error"]["type"] == "invalid_request_error"
    assert "forwards your own provider key" in oa.json()["error"]["message"]
    assert an.status_code == 401 and an.json()["error"]["type"] == "authentication_error"
    assert models.status_code == 401
    assert provider.seen == []


def test_a_provider_401_comes_back_as_a_401_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-wrong-secret-9999"
    provider = FakeProvider(keys=(ALICE,))
    with gateway(provider) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=wrong, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="m-1", messages=MESSAGES)
        with pytest.raises(openai.AuthenticationError) as listed:
            client.models.list()
    assert caught.value.status_code == 401
    assert "Incorrect API key provided: ***" in caught.value.message
    for error in (caught.value, listed.value):
        assert not shows(
            str(error) + error.response.text + headers_text(error.response.headers), wrong
        )
    assert len(provider.calls("/v1/chat/completions")) == 1  # a refusal is not retried
    assert not shows(caplog.text, wrong)


def test_anthropic_sdk_key_goes_to_an_anthropic_upstream_in_the_header_it_came_in() -> None:
    # The anthropic SDK (2.x) sends api_key as Authorization: Bearer; it goes on as it
    # came (x-api-key stays x-api-key: tests/server/test_upstream_retry_details.py).
    provider = FakeProvider(keys=(ALICE,))
    with gateway(provider, dialect="anthropic") as url:
        client = anthropic.Anthropic(base_url=url, api_key=ALICE, max_retries=0)
        message = client.messages.create(
            model="m-1", max_tokens=8, messages=[{"role": "user", "content": "hello"}]
        )
        refused = anthropic.Anthropic(base_url=url, api_key=BOB, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            refused.messages.create(
                model="m-1", max_tokens=8, messages=[{"role": "user", "content": "hello"}]
            )
    assert message.content[0].text == "echo: hello"  # type: ignore[union-attr]
    calls = provider.calls("/v1/messages")
    assert [(c.api_key, c.authorization) for c in calls] == [
        (None, f"Bearer {ALICE}"),
        (None, f"Bearer {BOB}"),
    ]
    assert caught.value.status_code == 401 and BOB not in str(caught.value)


def test_models_are_discovered_with_the_callers_key_and_kept() -> None:
    provider = FakeProvider(keys=(ALICE, BOB), models=("m-1", "m-2"))
    with gateway(provider) as url:
        alice = openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE, max_retries=0)
        bob = openai.OpenAI(base_url=f"{url}/v1", api_key=BOB, max_retries=0)
        first = [m.id for m in alice.models.list()]
        again = [m.id for m in alice.models.list()]
        bobs = [m.id for m in bob.models.list()]
        claude = anthropic.Anthropic(base_url=url, api_key=ALICE, max_retries=0)
        anthropic_ids = [m.id for m in claude.models.list()]
    assert first == again == bobs == anthropic_ids == ["m-1", "m-2"]
    # Alice's list is kept (one call for her three listings); Bob's is asked with his key.
    assert [c.authorization for c in provider.calls("/v1/models")] == [
        f"Bearer {ALICE}",
        f"Bearer {BOB}",
    ]


def test_tenants_are_a_keyed_hash() -> None:
    assert tenant_id("k", "secret-one") != tenant_id("k", "secret-two")
    assert tenant_id("k", "secret-one") == tenant_id("k", "secret-one")
    assert tenant_id("k") != tenant_id("k", "secret-one")  # the unkeyed form, no secret
    ring = KeyRing(api_keys=["key-a"], secret="secret-one")
    assert ring.tenant({"authorization": "Bearer key-a"}) == tenant_id("key-a", "secret-one")
    forward = KeyRing(forward=True, secret="secret-one")
    assert forward.tenant({"x-api-key": "anything"}) == tenant_id("anything", "secret-one")
    assert forward.forwarded_key({"x-api-key": "anything"}) == "anything"
    assert not forward.sees_all_tenants({"x-api-key": "anything"})
    with pytest.raises(ValueError, match="--api-key has no effect"):
        KeyRing(api_keys=["key-a"], forward=True)


def test_the_tenant_secret_is_made_once_private_and_kept(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "tenant-secret"
    secret = load_tenant_secret(path)
    assert len(secret) == 64 and (path.stat().st_mode & 0o777) == 0o600
    assert load_tenant_secret(path) == secret
    path.write_text("short")
    with pytest.raises(ValueError, match="no usable tenant secret"):
        load_tenant_secret(path)


def test_gateways_starting_at_once_agree_on_one_tenant_secret(tmp_path: object) -> None:
    """Separate processes creating the secret in one directory at the same moment all
    read the one that was linked into place, never an empty or half-written file."""
    import multiprocessing
    from pathlib import Path

    path = Path(str(tmp_path)) / "state" / "tenant-secret"
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        secrets = pool.map(load_tenant_secret, [path] * 8)
    assert len(set(secrets)) == 1 and len(secrets[0]) == 64
    assert [p.name for p in path.parent.iterdir()] == ["tenant-secret"]


def test_forward_mode_options_that_would_mean_nothing_are_refused() -> None:
    import typer

    from promptcache.cli._serve_setup import resolve_key_mode, tenant_secret_for

    upstream = "https://api.openai.com/v1"
    assert not resolve_key_mode("server", upstream_url=None, upstream_api_key="k", api_keys=True)
    assert resolve_key_mode("forward", upstream_url=upstream, upstream_api_key=None, api_keys=False)
    refusals = [
        ("both", {"upstream_url": upstream, "upstream_api_key": None, "api_keys": False}),
        ("forward", {"upstream_url": None, "upstream_api_key": None, "api_keys": False}),
        ("forward", {"upstream_url": upstream, "upstream_api_key": "sk-x", "api_keys": False}),
        ("forward", {"upstream_url": upstream, "upstream_api_key": None, "api_keys": True}),
        (
            "forward",
            {"upstream_url": "https://u:p@h/v1", "upstream_api_key": None, "api_keys": False},
        ),
    ]
    for mode, options in refusals:
        with pytest.raises(typer.BadParameter):
            resolve_key_mode(mode, **options)  # type: ignore[arg-type]
    assert tenant_secret_for(None, needed=False) is None
    assert tenant_secret_for("  a-long-enough-secret  ", needed=True) == "a-long-enough-secret"
    with pytest.raises(typer.BadParameter, match="16 characters"):
        tenant_secret_for("short", needed=True)
