"""What the local engine adds to the KV disk tier's fingerprint: the model as it renders
and positions tokens.

The prefix cache already binds stored KV to the weights' digest (``model_id``), the
KV layout and dtype and the block size; these fields cover what changes the token
ids a prompt renders to (the tokenizer, the chat template) or the KV computed for
them (RoPE settings, the prompt weights' precision -- ``auto`` is measured per
process, so two starts may differ -- and torch's version, since a hit must equal a
miss to the bit). Computed once when the engine is built.
"""

from __future__ import annotations

import hashlib
import json

import torch

from promptcache.model.loading import LoadedModel

_ROPE_FIELDS = (
    "rope_theta",
    "rope_scaling",
    "partial_rotary_factor",
    "max_position_embeddings",
    "head_dim",
)


def model_fingerprint(loaded: LoadedModel, *, prefill_precision: str) -> dict[str, str]:
    """``prefill_precision``: what prompt forwards actually multiply by (not ``auto``)."""
    tokenizer = loaded.tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # a fast tokenizer: its whole definition (vocab, merges, specials)
        definition = backend.to_str()
    else:
        definition = json.dumps(sorted(tokenizer.get_vocab().items()))
    template = getattr(tokenizer, "chat_template", None) or ""
    config = loaded.config
    rope = {name: getattr(config, name, None) for name in _ROPE_FIELDS}
    return {
        "tokenizer": _digest(type(tokenizer).__name__ + "\0" + definition),
        "chat_template": _digest(template if isinstance(template, str) else json.dumps(template)),
        "rope": json.dumps(rope, sort_keys=True, default=str),
        "prefill_precision": prefill_precision,
        "torch": torch.__version__,
    }


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
