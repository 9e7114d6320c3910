"""The CMake flags that build llama.cpp (the ``make bench-peers`` peer) for this CPU.

Not ``-DGGML_NATIVE=ON``: on an AMX machine here its AMX kernels died on their
first tile instruction (SIGILL at ``tilezero`` in a worker thread), so AMX stays
off. Every other instruction set is switched on only where ``/proc/cpuinfo``
lists it: a fixed AVX-512 list died with SIGILL on an AVX2-only EPYC.

Usage: ``python benchmarks/_peer_cmake_args.py`` prints the flags on one line.
"""

from __future__ import annotations

from pathlib import Path

# GGML option -> the /proc/cpuinfo flags it needs, all of them.
_OPTIONS: dict[str, tuple[str, ...]] = {
    "GGML_AVX": ("avx",),
    "GGML_AVX2": ("avx2",),
    "GGML_FMA": ("fma",),
    "GGML_F16C": ("f16c",),
    "GGML_BMI2": ("bmi2",),
    "GGML_AVX_VNNI": ("avx_vnni",),
    "GGML_AVX512": ("avx512f", "avx512bw", "avx512dq", "avx512vl"),
    "GGML_AVX512_VBMI": ("avx512vbmi",),  # the kernel spells this one without "_"
    "GGML_AVX512_VNNI": ("avx512_vnni",),
    "GGML_AVX512_BF16": ("avx512_bf16",),
}


def cpu_flags(cpuinfo: str) -> set[str]:
    """The first processor's flags in ``/proc/cpuinfo``'s text."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return set(value.split())
    return set()


def cmake_args(flags: set[str]) -> str:
    """``-DGGML_NATIVE=OFF`` and each option ON or OFF by what ``flags`` hold."""
    args = ["-DGGML_NATIVE=OFF"]
    for option, needs in _OPTIONS.items():
        state = "ON" if all(flag in flags for flag in needs) else "OFF"
        args.append(f"-D{option}={state}")
    return " ".join(args)


if __name__ == "__main__":
    print(cmake_args(cpu_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8"))))
