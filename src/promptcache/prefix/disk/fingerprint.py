"""The model fingerprint: what must be equal for stored KV to be valid for this server.

KV depends on the weights, the KV dtype, the block size (blocks are stored whole),
the attention layout, RoPE, and -- through the token ids a prompt renders to -- the
tokenizer and chat template. A disk tier written under another fingerprint is
discarded on start, never read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from promptcache.prefix.disk.blockfile import FORMAT
from promptcache.prefix.pool import KVLayout


@dataclass(frozen=True)
class ModelFingerprint:
    """Named fields (plain strings), compared as a whole by :attr:`digest`."""

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, fields: Mapping[str, object]) -> ModelFingerprint:
        return cls(tuple(sorted((name, str(value)) for name, value in fields.items())))

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps(dict(self.fields), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelFingerprint | None:
        try:
            loaded = json.loads(text)
        except ValueError:
            return None
        return cls.of(loaded) if isinstance(loaded, dict) else None

    def differences(self, other: ModelFingerprint | None) -> list[str]:
        """The field names whose values differ (all of ours when ``other`` is unreadable)."""
        if other is None:
            return [name for name, _ in self.fields]
        mine, theirs = dict(self.fields), dict(other.fields)
        return sorted(
            name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name)
        )


def kv_fingerprint(
    model_id: str, layout: KVLayout, block_size: int, extra: Mapping[str, object]
) -> ModelFingerprint:
    """What the cache knows (weights id, KV layout and dtype, block size, the block
    format), plus what the engine adds (``extra``: tokenizer, chat template, RoPE)."""
    return ModelFingerprint.of(
        {
            "format": FORMAT,
            "model_id": model_id,
            "kv_dtype": str(layout.dtype).removeprefix("torch."),
            "kv_layout": f"{layout.num_layers}x2x{layout.num_kv_heads}x{layout.head_dim}",
            "block_size": block_size,
            **extra,
        }
    )
