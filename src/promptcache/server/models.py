"""Which model names the server answers to, and the canonical id each resolves to.

The local engine serves one model under its id (``SmolLM2-135M-Instruct``)
and a few aliases; names are matched case-insensitively. An engine that lists
no models (an upstream proxy that cannot enumerate them) accepts any name and
leaves it unchanged.
"""

from __future__ import annotations

from promptcache.errors import ModelNotFoundError
from promptcache.request import ModelInfo


class ModelCatalog:
    def __init__(self, models: list[ModelInfo]) -> None:
        self.models = list(models)
        self._by_name: dict[str, str] = {}
        for info in self.models:
            for name in (info.id, *info.aliases):
                self._by_name.setdefault(name.lower(), info.id)

    def resolve(self, name: str) -> str:
        """The canonical id for ``name``, or :class:`ModelNotFoundError` (404)."""
        if not self._by_name:
            return name
        model_id = self._by_name.get(name.lower())
        if model_id is None:
            served = ", ".join(info.id for info in self.models)
            raise ModelNotFoundError(
                f"The model {name!r} does not exist on this server (serving: {served}).",
                param="model",
            )
        return model_id
