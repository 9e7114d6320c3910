"""`make bench-peers`: llama.cpp flags follow /proc/cpuinfo, spelled as the kernel spells them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "_peer_cmake_args.py"

# The flags line of an AVX-512 EPYC here (trimmed), in the kernel's own spelling:
# avx512vbmi without an underscore, avx512_vnni and avx512_bf16 with one.
AVX512_EPYC = (
    "processor\t: 0\nflags\t\t: fpu sse2 avx f16c fma bmi2 avx2 avx512f avx512dq avx512cd "
    "avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vbmi2 avx512_vnni\n"
)
AVX2_EPYC = "flags\t\t: fpu sse2 avx f16c fma bmi2 avx2\n"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_peer_cmake_args", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def options(cpuinfo: str) -> dict[str, str]:
    script = load_script()
    args = script.cmake_args(script.cpu_flags(cpuinfo)).split()
    assert args[0] == "-DGGML_NATIVE=OFF"
    return dict(arg.removeprefix("-D").split("=") for arg in args[1:])


def test_every_instruction_set_the_avx512_cpu_lists_is_on() -> None:
    got = options(AVX512_EPYC)
    assert set(got.values()) == {"ON"}, got
    assert got["GGML_AVX512_VBMI"] == "ON"


def test_an_avx2_cpu_gets_no_avx512_or_vnni() -> None:
    got = options(AVX2_EPYC)
    assert {name for name, state in got.items() if state == "ON"} == {
        "GGML_AVX",
        "GGML_AVX2",
        "GGML_FMA",
        "GGML_F16C",
        "GGML_BMI2",
    }


def test_no_flags_line_turns_everything_off() -> None:
    assert set(options("processor\t: 0\n").values()) == {"OFF"}
