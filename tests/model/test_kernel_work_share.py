"""The block kernels' own work sharing (``kernels/work_share.cpp``): every chunk of a
product runs exactly once whatever the thread count, concurrent callers each get their
own results, and a forked child still computes.

A chunk run twice or never would leave a wrong or uninitialised output row, so each
test compares against one-thread results bitwise.
"""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from promptcache.model.block_kernels import block_kernels
from promptcache.model.block_weights import BlockWeight
from promptcache.model.torch_threads import torch_threads
from tests.model.block_matrices import q4

pytestmark = pytest.mark.skipif(not block_kernels(), reason="no GGUF block kernels here")


def q4_1(rows: int, blocks: int, seed: int) -> BlockWeight:
    return BlockWeight.of(q4("Q4_1", rows, blocks, seed))


def product(weight: BlockWeight, x: torch.Tensor, threads: int) -> torch.Tensor:
    with torch.inference_mode(), torch_threads(threads):
        return weight.matmul(x)


@pytest.mark.parametrize("rows", [1, 31, 33, 1000, 4099])
def test_every_output_row_is_computed_once_on_any_thread_count(rows: int) -> None:
    weight = q4_1(rows, blocks=3, seed=rows)
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(1))
    alone = product(weight, x, threads=1)
    for threads in (2, 3, 8):  # more helpers than cores too
        assert torch.equal(product(weight, x, threads), alone), f"{threads} threads"


def test_decode_attention_split_by_heads_is_the_one_thread_result() -> None:
    heads, kv_heads, dim, keys = 9, 3, 64, 700  # enough keys for a chunk a head
    generator = torch.Generator().manual_seed(2)
    kv = torch.randn(2, kv_heads, keys, dim, generator=generator)
    qk = torch.randn(heads + kv_heads, dim, generator=generator)
    value = torch.randn(kv_heads, dim, generator=generator)
    results = []
    for threads in (1, 2, 4):
        with torch.inference_mode(), torch_threads(threads):
            results.append(
                torch.ops.promptcache_blocks.decode_attention(
                    qk, value, kv.clone(), keys - 1, dim**-0.5
                )
            )
    assert all(torch.equal(result, results[0]) for result in results[1:])


def test_concurrent_callers_each_get_their_own_products() -> None:
    """Several threads multiplying at once: one shares the helpers, the others run their
    chunks alone; none may see another's job."""
    weight = q4_1(1536, blocks=18, seed=3)
    inputs = [torch.randn(2, 576, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    want = [product(weight, x, threads=1) for x in inputs]
    wrong: list[int] = []

    def call(index: int) -> None:
        for _ in range(40):
            if not torch.equal(product(weight, inputs[index], threads=2), want[index]):
                wrong.append(index)

    callers = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=120)
    assert not any(caller.is_alive() for caller in callers), "a caller hung"
    assert wrong == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_still_computes() -> None:
    weight = q4_1(1000, blocks=3, seed=4)
    x = torch.randn(3, 96, generator=torch.Generator().manual_seed(5))
    want = product(weight, x, threads=2)  # the parent's helpers exist now
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through its exit status
        same = False
        try:
            same = all(torch.equal(product(weight, x, threads=2), want) for _ in range(5))
        finally:
            os._exit(0 if same else 1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0, "the child's products differed"
            return
        time.sleep(0.05)
    os.kill(child, 9)
    os.waitpid(child, 0)
    pytest.fail("the forked child hung in a kernel")
