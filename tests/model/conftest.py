"""Model test fixtures: the tiny models and the embedded model (``tests/tiny_models.py``)."""

from __future__ import annotations

import pytest

from tests.tiny_models import embedded_model, mark_model_tests, tiny_model, tiny_model_factory

__all__ = ["embedded_model", "tiny_model", "tiny_model_factory"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    mark_model_tests(items)
