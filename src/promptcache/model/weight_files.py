"""Reading Hugging Face model directories (weight files) into models the engine can run.

Two ways in:

* :func:`read_weights` -- for directories promptcache wrote itself (a converted
  GGUF): the full config, the safetensors tensors and the tokenizer, read
  without importing transformers' modeling code. That import (``modeling_utils``
  and, through a model's config class, ``torch.distributed`` and ``sympy``) is
  most of a warm start, and the engine never needs it: its runtime computes
  everything from the tensors.
* :func:`load_hf_directory` -- any causal-LM directory, through transformers'
  own classes (what a user-supplied directory may need: key renaming, custom
  configs, ``.bin`` weights).

:func:`build_hf_model` makes a transformers model over already-read weights
(sharing their memory) for whoever wants one, e.g. to compare against.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from promptcache.model.weights import ModelWeights, NamedTensors

if TYPE_CHECKING:
    from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

# Tokenizer classes that load from tokenizer.json alone. AutoTokenizer would
# also get there, but it first reads the model's config through its (costly) class.
_PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")


def read_weights(
    directory: Path,
) -> tuple[ModelWeights, PreTrainedTokenizerBase, GenerationConfig]:
    """The weights, tokenizer and generation settings of a directory promptcache wrote.

    ``config.json`` must hold the full config (written with ``use_diff=False``):
    it is read as a plain :class:`~transformers.PreTrainedConfig`, so no
    model-class defaults fill gaps.
    """
    from transformers import GenerationConfig, PreTrainedConfig

    with quiet_transformers():
        config = PreTrainedConfig.from_json_file(directory / "config.json")
        tensors = _read_safetensors(directory)
        if (directory / "generation_config.json").is_file():
            generation = GenerationConfig.from_pretrained(directory)
        else:
            generation = GenerationConfig.from_model_config(config)
        tokenizer = _read_tokenizer(directory)
    return ModelWeights(config=config, tensors=NamedTensors(tensors)), tokenizer, generation


def build_hf_model(weights: ModelWeights) -> PreTrainedModel:
    """A transformers model (eval mode) over ``weights``, sharing their tensors.

    The weights stay attached to it: fusing them later re-points its parameters too.
    """
    from transformers import AutoConfig

    settings = weights.config.to_dict()
    model_type = settings.pop("model_type", None) or getattr(weights.config, "model_type", "")
    with quiet_transformers():
        config = AutoConfig.for_model(model_type, **settings)
        model = _assemble(config, dict(weights.tensors))
    if model is None:
        raise ValueError(
            f"The weights do not fit a {model_type!r} model built from their own config."
        )
    weights.tensors.attach(model)
    return model


def load_hf_directory(directory: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a Hugging Face causal-LM directory as float32 in eval mode, plus its tokenizer.

    Tries a fast path first (build on the meta device, assign safetensors
    tensors directly: ~0.1 s instead of ~2 s for ``from_pretrained``) and falls
    back to ``from_pretrained`` whenever the directory needs anything the fast
    path does not do (key renaming, remote code, non-safetensors weights).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_transformers():
        model = _fast_load(directory)
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
            model.eval()  # type: ignore[no-untyped-call]
        tokenizer = AutoTokenizer.from_pretrained(directory)
    return model, tokenizer


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own tqdm bars and info logs; ours (rich) says what happens."""
    # transformers' logging helpers are untyped: go through Any.
    hf_logging: Any = importlib.import_module("transformers.utils.logging")

    was_enabled = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()


def _read_tokenizer(directory: Path) -> PreTrainedTokenizerBase:
    import transformers

    try:
        settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    name = settings.get("tokenizer_class") if isinstance(settings, dict) else None
    if name in _PLAIN_TOKENIZER_CLASSES and (directory / "tokenizer.json").is_file():
        tokenizer: PreTrainedTokenizerBase = getattr(transformers, name).from_pretrained(directory)
        return tokenizer
    return transformers.AutoTokenizer.from_pretrained(directory)


def _read_safetensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the directory's ``*.safetensors`` files, as float32."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(file))
    return {name: tensor.to(torch.float32) for name, tensor in tensors.items()}


def _fast_load(directory: Path) -> PreTrainedModel | None:
    from transformers import AutoConfig, GenerationConfig

    if not any(directory.glob("*.safetensors")):
        return None
    try:
        state = _read_safetensors(directory)
        model = _assemble(AutoConfig.from_pretrained(directory), state)
        if model is not None and (directory / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(directory)
    except Exception:  # any surprise: the slow, general loader knows better
        return None
    return model


def _assemble(config: Any, state: dict[str, torch.Tensor]) -> PreTrainedModel | None:
    """A model of ``config``'s class holding ``state``'s float32 tensors (eval mode),
    or None when they do not fit it exactly (missing or unexpected names)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model: PreTrainedModel = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
            config, dtype=torch.float32
        )
    result = model.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    if result.unexpected_keys or not set(result.missing_keys) <= tied:
        return None
    model.tie_weights()
    _rebuild_meta_buffers(model)
    if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
        return None
    model.eval()  # type: ignore[no-untyped-call]
    return model


def _rebuild_meta_buffers(model: torch.nn.Module) -> None:
    """Recreate modules whose non-persistent buffers (RoPE frequencies) stayed on meta.

    Such buffers are computed in ``__init__`` from the config and never saved,
    so re-running the constructor on the CPU is exactly what from_pretrained does.
    """
    for name, module in list(model.named_modules()):
        if not any(b.is_meta for b in module.buffers(recurse=False)):
            continue
        config = getattr(module, "config", None)
        if config is None or any(True for _ in module.parameters(recurse=False)):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, type(module)(config))
