"""Tiny in-memory models and the model fixtures, shared by ``tests/model`` and ``tests/engine``.

The fixtures are re-exported by those folders' ``conftest.py`` (pytest scopes
conftest fixtures by directory):

* ``tiny_model`` -- a randomly initialised two-layer ``LlamaForCausalLM`` with
  a byte-level tokenizer and a ChatML chat template, built in memory in
  milliseconds: for cache mechanics and runtime arithmetic.
* ``tiny_model_factory`` -- the same with config overrides (other model
  types, RoPE scaling, biases).
* ``embedded_model`` -- the real SmolLM2-135M-Instruct, loaded once per session
  from the user cache (converted on first use). Tests using it are marked
  ``model`` automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from promptcache.model.loading import LoadedModel, load_model

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    # Larger than the default 0.02 so random logits are well separated and
    # greedy comparisons are not decided by float noise.
    "initializer_range": 0.2,
}


def byte_level_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer (every byte one token, no merges) plus ChatML specials."""
    byte_to_char = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(byte_to_char))}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer: PreTrainedTokenizerBase = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS),
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_model(model_type: str = "llama", seed: int = 0, **overrides: Any) -> LoadedModel:
    """A random tiny model of ``model_type`` as a :class:`LoadedModel` (never touches disk)."""
    tokenizer = byte_level_tokenizer()
    settings = {**TINY_CONFIG, "vocab_size": len(tokenizer), **overrides}
    settings.setdefault("eos_token_id", tokenizer.eos_token_id)
    settings.setdefault("bos_token_id", tokenizer.bos_token_id)
    settings.setdefault("pad_token_id", tokenizer.pad_token_id)
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.eval()
    name = f"tiny-{model_type}"
    return LoadedModel.from_hf_model(
        model,
        tokenizer,
        model_id=f"{name}@seed:{seed}",
        name=name,
        source="<memory>",
        load_seconds=0.0,
        from_cache=False,
    )


@pytest.fixture
def tiny_model() -> LoadedModel:
    return build_tiny_model()


@pytest.fixture
def tiny_model_factory() -> Callable[..., LoadedModel]:
    return build_tiny_model


@pytest.fixture(scope="session")
def embedded_model() -> LoadedModel:
    return load_model()


def mark_model_tests(items: list[pytest.Item]) -> None:
    """Mark the tests that use ``embedded_model`` as ``model`` (once, whichever conftest runs)."""
    for item in items:
        if "embedded_model" in getattr(item, "fixturenames", ()) and not item.get_closest_marker(
            "model"
        ):
            item.add_marker(pytest.mark.model)
