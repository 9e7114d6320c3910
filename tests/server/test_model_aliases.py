"""Model aliases: the catalog, the flow (echoed name, shared entries), /v1/models, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from promptcache.cli import app as cli_app
from promptcache.cli import serve as serve_module
from promptcache.engine.threaded import ThreadedEngine
from promptcache.errors import ModelNotFoundError
from promptcache.result import ModelInfo
from promptcache.server.config import ServerConfig
from promptcache.server.models import (
    ModelCatalog,
    aliases_from_env,
    load_alias_file,
    parse_alias,
    parse_aliases,
)
from tests.server.conftest import ServerFactory, anthropic_body, openai_body
from tests.server.fakes import FAKE_MODEL, FakeSyncEngine

CHAT = "/v1/chat/completions"
SERVED = [ModelInfo(id="SmolLM2-135M-Instruct", aliases=("HuggingFaceTB/SmolLM2-135M-Instruct",))]


# -- the catalog ---------------------------------------------------------------


def test_an_alias_resolves_to_the_served_model_case_insensitively() -> None:
    catalog = ModelCatalog(SERVED, {"gpt-3.5-turbo": "smollm2-135m-instruct"})
    assert catalog.resolve("gpt-3.5-turbo") == "SmolLM2-135M-Instruct"
    assert catalog.resolve("GPT-3.5-Turbo") == "SmolLM2-135M-Instruct"
    assert catalog.resolve("SmolLM2-135M-Instruct") == "SmolLM2-135M-Instruct"
    assert catalog.aliases == {"gpt-3.5-turbo": "SmolLM2-135M-Instruct"}
    with pytest.raises(ModelNotFoundError) as caught:
        catalog.resolve("gpt-4o")
    assert "--model-alias" in caught.value.message and caught.value.param == "model"


def test_an_alias_may_name_a_built_in_alias_and_is_listed_with_the_model() -> None:
    catalog = ModelCatalog(
        SERVED,
        {"glm-4.6": "HuggingFaceTB/SmolLM2-135M-Instruct", "claude": "SmolLM2-135M-Instruct"},
    )
    assert catalog.resolve("glm-4.6") == "SmolLM2-135M-Instruct"
    assert catalog.models == [
        ModelInfo(
            id="SmolLM2-135M-Instruct",
            aliases=("HuggingFaceTB/SmolLM2-135M-Instruct", "glm-4.6", "claude"),
        )
    ]


def test_the_wildcard_answers_every_unknown_name_but_is_not_listed() -> None:
    catalog = ModelCatalog(
        SERVED, {"*": "SmolLM2-135M-Instruct", "glm-4.6": "SmolLM2-135M-Instruct"}
    )
    assert catalog.resolve("anthropic/claude-3.7-sonnet") == "SmolLM2-135M-Instruct"
    assert catalog.resolve("glm-4.6") == "SmolLM2-135M-Instruct"
    assert catalog.wildcard == "SmolLM2-135M-Instruct"
    assert catalog.models[0].aliases == ("HuggingFaceTB/SmolLM2-135M-Instruct", "glm-4.6")


def test_an_alias_to_a_model_not_served_fails_at_startup() -> None:
    with pytest.raises(ValueError, match="not served here"):
        ModelCatalog(SERVED, {"gpt-4o": "llama-3"})
    with pytest.raises(ValueError, match="served here already"):
        ModelCatalog([*SERVED, ModelInfo(id="other")], {"SmolLM2-135M-Instruct": "other"})
    with pytest.raises(ValueError, match="non-empty"):
        ModelCatalog(SERVED, {" ": "SmolLM2-135M-Instruct"})


def test_an_open_catalog_takes_aliases_as_given() -> None:
    catalog = ModelCatalog([], {"gpt-3.5-turbo": "gpt-4o-mini"})
    assert catalog.resolve("gpt-3.5-turbo") == "gpt-4o-mini"
    assert catalog.resolve("anything") == "anything"
    assert catalog.models == [ModelInfo(id="gpt-4o-mini", aliases=("gpt-3.5-turbo",))]


def test_alias_specs_the_environment_and_files(tmp_path: Path) -> None:
    assert parse_alias("anthropic/claude-3.7-sonnet = SmolLM2-135M-Instruct") == (
        "anthropic/claude-3.7-sonnet",
        "SmolLM2-135M-Instruct",
    )
    assert parse_aliases(["a=X", "", "a=Y", "*=X"]) == {"a": "Y", "*": "X"}
    assert aliases_from_env("glm-4.6=X, gpt-4o=X,") == {"glm-4.6": "X", "gpt-4o": "X"}
    assert aliases_from_env(None) == {}
    for bad in ("no-equals", "=X", "a="):
        with pytest.raises(ValueError, match="NAME=SERVED"):
            parse_alias(bad)
    toml = tmp_path / "aliases.toml"
    toml.write_text('[aliases]\n"gpt-3.5-turbo" = "X"\n"*" = "X"\n')
    assert load_alias_file(toml) == {"gpt-3.5-turbo": "X", "*": "X"}
    js = tmp_path / "aliases.json"
    js.write_text(json.dumps({"aliases": {"glm-4.6": "X"}}))
    assert load_alias_file(js) == {"glm-4.6": "X"}
    for text in ('{"glm-4.6": "X"}', '{"aliases": {"a": 1}}', "{nope"):
        js.write_text(text)
        with pytest.raises(ValueError, match=str(js)):
            load_alias_file(js)


# -- the server ------------------------------------------------------------------


async def test_the_response_reports_the_name_asked_for_and_aliases_share_one_entry(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    config = ServerConfig(model_aliases={"gpt-3.5-turbo": FAKE_MODEL, "glm-4.6": FAKE_MODEL})
    async with serve(config) as (client, _):
        first = await client.post(CHAT, json=openai_body(model="gpt-3.5-turbo"))
        second = await client.post(CHAT, json=openai_body(model="glm-4.6"))
        served = await client.post(CHAT, json=openai_body(model=FAKE_MODEL))
        streamed = await client.post(CHAT, json=openai_body(model="glm-4.6", stream=True))
        messages = await client.post("/v1/messages", json=anthropic_body(model="gpt-3.5-turbo"))
    assert first.headers["x-promptcache"] == "MISS"
    assert first.json()["model"] == "gpt-3.5-turbo"
    assert second.headers["x-promptcache"] == "HIT"
    assert second.headers["x-promptcache-key"] == first.headers["x-promptcache-key"]
    assert second.json()["model"] == "glm-4.6"  # not the first alias's rendered body
    assert served.json()["model"] == FAKE_MODEL
    assert streamed.headers["x-promptcache"] == "HIT"
    frames = [
        json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")
    ]
    assert frames and {f["model"] for f in frames} == {"glm-4.6"}
    assert messages.json()["model"] == "gpt-3.5-turbo"
    assert fake_engine.calls == 1
    assert [r.model for r in fake_engine.requests] == [FAKE_MODEL]


async def test_an_aliased_miss_streams_the_name_asked_for(
    serve: ServerFactory, fake_engine: FakeSyncEngine
) -> None:
    config = ServerConfig(model_aliases={"*": FAKE_MODEL})
    async with serve(config) as (client, _):
        streamed = await client.post(
            "/v1/messages",
            json=anthropic_body(model="anthropic/claude-3.7-sonnet", stream=True),
        )
    assert streamed.headers["x-promptcache"] == "MISS"
    assert '"model":"anthropic/claude-3.7-sonnet"' in streamed.text.replace(" ", "")
    assert fake_engine.requests[0].model == FAKE_MODEL


async def test_an_unknown_name_is_a_404_without_a_matching_alias(serve: ServerFactory) -> None:
    async with serve(ServerConfig(model_aliases={"glm-4.6": FAKE_MODEL})) as (client, _):
        missing = await client.post(CHAT, json=openai_body(model="gpt-3.5-turbo"))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert "gpt-3.5-turbo" in missing.json()["error"]["message"]


async def test_v1_models_lists_the_aliases(serve: ServerFactory) -> None:
    config = ServerConfig(model_aliases={"glm-4.6": FAKE_MODEL, "*": FAKE_MODEL})
    async with serve(config) as (client, _):
        listed = await client.get("/v1/models")
        anthropic = await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})
    ids = [m["id"] for m in listed.json()["data"]]
    assert ids == [FAKE_MODEL, "fake", "glm-4.6"]
    assert "glm-4.6" in [m["id"] for m in anthropic.json()["data"]]


# -- the CLI -----------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def build_engine(choice: Any) -> tuple[ThreadedEngine, str]:
        return ThreadedEngine(FakeSyncEngine(), max_queue=4), "fake engine"

    def run(server: Any) -> None:
        seen["app"] = server.config.app

    monkeypatch.setattr(serve_module, "_build_engine", build_engine)
    monkeypatch.setattr(serve_module._Server, "run", run)
    return seen


def test_serve_reads_aliases_from_the_file_the_environment_and_the_options(
    captured: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps({"aliases": {"a": FAKE_MODEL, "b": FAKE_MODEL, "c": "fake"}}))
    monkeypatch.setenv("PROMPTCACHE_MODEL_ALIASES", f"b={FAKE_MODEL},d=fake")
    result = CliRunner().invoke(
        cli_app,
        [
            "serve",
            "--store",
            "memory://",
            "--model-alias-file",
            str(path),
            "--model-alias",
            f"*={FAKE_MODEL}",
            "--model-alias",
            "c=fake-model",
        ],
    )
    assert result.exit_code == 0, result.output
    config = captured["app"].state.config
    assert config.model_aliases == {
        "a": FAKE_MODEL,
        "b": FAKE_MODEL,
        "c": "fake-model",
        "d": "fake",
        "*": FAKE_MODEL,
    }


def test_serve_refuses_an_alias_to_a_model_it_does_not_serve(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(
        cli_app, ["serve", "--store", "memory://", "--model-alias", "gpt-4o=llama-3"]
    )
    assert result.exit_code == 2
    assert "not served here" in result.output
    bad = CliRunner().invoke(cli_app, ["serve", "--store", "memory://", "--model-alias", "x"])
    assert bad.exit_code == 2 and "NAME=SERVED" in bad.output
