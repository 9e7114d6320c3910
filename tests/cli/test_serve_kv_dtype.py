"""``promptcache serve --kv-dtype``: passed to the local engine, refused where it cannot apply."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from promptcache.cli import app


def test_serve_passes_kv_dtype_to_the_engine(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["serve", "--kv-dtype", "bfloat16", "--store", "none"])
    assert result.exit_code == 0, result.output
    assert captured["choice"].kv_dtype == "bfloat16"


def test_serve_defaults_to_float32_kv(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["serve", "--store", "none"])
    assert result.exit_code == 0, result.output
    assert captured["choice"].kv_dtype == "float32"


def test_serve_refuses_an_unknown_kv_dtype(captured: dict[str, Any]) -> None:
    result = CliRunner().invoke(app, ["serve", "--kv-dtype", "int8", "--store", "none"])
    assert result.exit_code == 2
    assert "--kv-dtype" in result.output and "bfloat16" in result.output
    assert "choice" not in captured


def test_serve_refuses_kv_dtype_for_an_upstream_proxy(captured: dict[str, Any]) -> None:
    args = ["serve", "--kv-dtype", "float16", "--upstream-url", "http://127.0.0.1:9", "--store"]
    result = CliRunner().invoke(app, [*args, "none"])
    assert result.exit_code == 2
    assert "--kv-dtype" in result.output and "upstream" in result.output
    assert "choice" not in captured
