"""Loading the GGUF block kernels (``kernels/block_dot.cpp``), built once per machine.

The kernels multiply activations by a GGUF's ``Q4_1``/``Q8_0`` blocks as llama.cpp
does (activations rounded to 8-bit blocks, exact integer block sums, one float32
scale per block) with AVX2 integer instructions, or AVX-512 VNNI where the CPU
has it (:func:`kernel_isa`; bitwise the same results). PyTorch's own CPU int4 kernel
(``_weight_int4pack_mm_for_cpu``) is the fallback: on an AVX2-only EPYC here it
was compute-bound, as slow per decode step as float16 weights, which read 2.6x
the bytes.

Each call's rows are split across the calling thread (its torch thread count) and
helper threads of the library's own (``kernels/work_share.cpp``), which take only
the chunks left: a core the OS gives to another thread then holds a call up by one
chunk, where OpenMP's even split waited for that thread's whole share.

The same library has ``decode_attention``: one decode query's attention over a
float32 KV cache in one call (:meth:`LayerMath._attend_one
<promptcache.model.layers.LayerMath._attend_one>`).

They are C++, compiled on first use by :func:`torch.utils.cpp_extension.load`
(about 30 s on 2 cores; cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``, keyed by the source; a later process loads and
checks them in about 0.4 s). ``make setup`` builds them. They are used only where they can
run: an x86-64 CPU with AVX2, FMA and F16C, a C++ compiler and ninja, and a
self-check against the float32 maths passing. Otherwise :func:`block_kernels`
says why and the caller falls back. ``PROMPTCACHE_BLOCK_KERNELS=0`` turns
them off (to compare the two paths side by side).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path

import torch

__all__ = ["block_kernels", "block_kernels_unavailable", "kernel_isa"]

_LOG = logging.getLogger(__name__)
_KERNELS = Path(__file__).with_name("kernels")
_SOURCES = tuple(
    _KERNELS / name
    for name in ("block_dot.cpp", "work_share.cpp", "decode_layers.cpp", "head_refine.cpp")
)
_CPU_FLAGS = ("avx2", "fma", "f16c")
_LOCK = threading.Lock()


def block_kernels() -> bool:
    """Whether the block kernels are loaded (built first if need be) and work here."""
    return not block_kernels_unavailable()


def block_kernels_unavailable() -> str:
    """Why the block kernels cannot be used here ('' when they can)."""
    with _LOCK:
        return _load()


def kernel_isa(requested: str = "") -> str:
    """The instructions the matrix kernels run on: ``"avx512-vnni"`` where the CPU has
    AVX-512 VNNI (a pair of blocks a vpdpbusd), else ``"avx2"``; both give bitwise the
    same results. ``requested`` (``"auto"``, ``"avx2"``, ``"avx512-vnni"``) switches it for
    the whole process first, to compare the two; ``""`` only asks. Needs the kernels
    loaded (:func:`block_kernels`)."""
    return str(torch.ops.promptcache_blocks.kernel_isa(requested))


@functools.cache
def _load() -> str:
    if os.environ.get("PROMPTCACHE_BLOCK_KERNELS", "1").strip() == "0":
        return "PROMPTCACHE_BLOCK_KERNELS=0 turns them off."
    why = _cannot_build()
    if why:
        return why
    try:
        _build()
    except Exception as error:  # a compiler's failure has many types; all mean "not here"
        _LOG.warning("GGUF block kernels not built (%s); using torch's int4 kernel", error)
        return f"building them failed: {str(error).splitlines()[0] if str(error) else error!r}"
    works = _self_check()
    if not works and kernel_isa() == "avx512-vnni":
        # The VNNI tiles are a second compilation of the AVX2 ones (block_tiles.inc);
        # should they ever compute wrongly on some CPU, its AVX2 kernels still serve.
        _LOG.warning("the AVX-512 VNNI block kernels failed their self-check; using AVX2")
        kernel_isa("avx2")
        works = _self_check()
    return "" if works else "their self-check against float32 failed on this machine."


def _cannot_build() -> str:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"they are x86-64 code; this machine is {platform.machine()}."
    flags = _cpu_flags()
    missing = [flag for flag in _CPU_FLAGS if flag not in flags]
    if missing:
        return f"this CPU lacks {', '.join(missing)}."
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler (c++) to build them."
    if _ninja() is None:
        return "no ninja to build them (pip install ninja)."
    return ""


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def _ninja() -> str | None:
    """ninja's directory: on PATH, beside this interpreter (a venv's bin), or the PyPI package's."""
    found = shutil.which("ninja") or shutil.which("ninja", path=str(Path(sys.executable).parent))
    if found:
        return str(Path(found).parent)
    try:
        import ninja
    except ImportError:
        return None
    return str(ninja.BIN_DIR)


def _build() -> None:
    from torch.utils import cpp_extension

    ninja_dir = _ninja()
    path = os.environ.get("PATH", "")
    if ninja_dir and ninja_dir not in path.split(os.pathsep):
        os.environ["PATH"] = ninja_dir + os.pathsep + path  # cpp_extension runs "ninja"
    cpp_extension.load(
        name="promptcache_block_dot",
        sources=[str(source) for source in _SOURCES],
        # No -fopenmp: the kernels share their work on threads of their own
        # (kernels/work_share.cpp), not on OpenMP's team. The headers' digest is a
        # build flag because torch keys its cache by the sources and flags only, so a
        # changed header alone would otherwise load the old library.
        extra_cflags=[
            "-O3",
            "-std=c++20",
            "-mavx2",
            "-mfma",
            "-mf16c",
            "-pthread",
            _headers_digest(),
        ],
        extra_ldflags=["-pthread"],
        is_python_module=False,
        verbose=False,
    )


def _headers_digest() -> str:
    digest = hashlib.sha256()
    for header in sorted([*_KERNELS.glob("*.h"), *_KERNELS.glob("*.inc")]):
        digest.update(header.read_bytes())
    return f"-DPROMPTCACHE_HEADERS={digest.hexdigest()[:16]}"


def _self_check() -> bool:
    """Small random Q4_1 and Q8_0 matrices against float32 maths on the same 8-bit
    activations, and one attention query against softmax attention."""
    from promptcache.model.block_weights import BlockWeight, rounded_activations
    from promptcache.model.gguf_blocks import Q8Matrix, QuantizedMatrix

    generator = torch.Generator().manual_seed(0)
    rows, cols, batch = 21, 96, 5  # a partial last tile, and a batch past one row tile
    x = torch.randn(batch, cols, generator=generator)
    nibbles = torch.randint(0, 16, (rows, cols), dtype=torch.uint8, generator=generator)
    scales = (torch.rand(rows, cols // 32, generator=generator) / 8).to(torch.float16)
    mins = (-torch.rand(rows, cols // 32, generator=generator)).to(torch.float16)
    values = torch.randint(-128, 128, (rows, cols), dtype=torch.int8, generator=generator)
    q4_matrix = QuantizedMatrix("Q4_1", nibbles, scales, mins)
    q8_matrix = Q8Matrix(values, scales)
    with torch.inference_mode():
        q4 = BlockWeight.of(q4_matrix).matmul(x)
        q8 = BlockWeight.of_q8_0(q8_matrix).matmul(x)
        # 6 keys (the one-key tail) and 43 of 64 dims (8-key and tail scores, the wide
        # kernels' 32- and 16-column passes).
        cases = []
        for keys, dim in ((6, 32), (43, 64)):
            kv = torch.randn(2, 1, keys + 2, dim, generator=generator)
            qk = torch.randn(3, dim, generator=generator)
            value = torch.randn(1, dim, generator=generator)
            got = torch.ops.promptcache_blocks.decode_attention(qk, value, kv, keys - 1, 0.125)
            cases.append((kv, qk, keys, got))
    attention_ok = True
    for kv, qk, keys, got in cases:
        weights = torch.softmax(qk[:2] @ kv[0, 0, :keys].T * 0.125, -1)
        want = (weights @ kv[1, 0, :keys]).reshape(-1)
        attention_ok = attention_ok and bool(
            torch.equal(kv[0, 0, keys - 1], qk[2])
            and torch.allclose(got, want, rtol=1e-5, atol=1e-6)
        )
    # A prompt chunk: 5 rows of one sequence at positions 38..42 attend as one block.
    kv = torch.randn(2, 1, 44, 64, generator=generator)
    qkv = torch.randn(5, 4 * 64, generator=generator)
    rows = torch.ops.promptcache_blocks.decode_attention_rows(
        qkv, [kv] * 5, list(range(38, 43)), 2, 1, 0.125
    )
    for row in range(5):
        keys = 39 + row
        queries = qkv[row, :128].reshape(2, 64)
        weights = torch.softmax(queries @ kv[0, 0, :keys].T * 0.125, -1)
        want = (weights @ kv[1, 0, :keys]).reshape(-1)
        attention_ok = attention_ok and bool(torch.allclose(rows[row], want, rtol=1e-5, atol=1e-6))
    rounded = rounded_activations(x)
    return attention_ok and bool(
        torch.allclose(q4, rounded @ q4_matrix.dequantize().T, rtol=1e-4, atol=1e-4)
        and torch.allclose(q8, rounded @ q8_matrix.dequantize().T, rtol=1e-4, atol=1e-4)
    )


def main() -> None:
    """``python -m promptcache.model.block_kernels``: build them now and say whether they run."""
    why = block_kernels_unavailable()
    print("GGUF block kernels: " + ("built and working" if not why else f"not used: {why}"))


if __name__ == "__main__":
    main()
