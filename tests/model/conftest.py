"""Model test fixtures: the tiny models and the embedded model (``tests/tiny_models.py``),
and the int4 decode backend."""

from __future__ import annotations

import pytest

from tests.tiny_models import embedded_model, mark_model_tests, tiny_model, tiny_model_factory

__all__ = ["decode_backend", "embedded_model", "tiny_model", "tiny_model_factory"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_model_tests(items)


@pytest.fixture(params=["blocks", "torch-int4"])
def decode_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each int4 decode kernel in turn (skipped where it cannot run): the GGUF block
    kernels, and torch's CPU int4 kernel, which they replace where they run."""
    from promptcache.model import precision, quantized
    from promptcache.model.block_kernels import block_kernels

    backend = str(request.param)
    if backend == "blocks" and not block_kernels():
        pytest.skip("no GGUF block kernels here")
    if backend == "torch-int4":
        if not quantized.int4_kernels_work():
            pytest.skip("no CPU int4 kernels in this torch")
        monkeypatch.setattr(quantized, "block_kernels", lambda: False)
    monkeypatch.setattr(precision, "_PACKED", {})  # packed anew, by this backend
    return backend
