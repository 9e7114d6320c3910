"""torch intra-op thread counts: per call, and why only one thread may use several.

torch's CPU kernels run on OpenMP (GNU libgomp in the PyPI wheels), whose
thread teams belong to the thread that starts a parallel region: every Python
thread that runs a large-enough op with more than one intra-op thread gets a
team of its own, kept for the life of the process. Once teams hold more
threads than the machine has cores, libgomp stops letting idle team threads
spin and puts them to sleep after ~100 spins, so every parallel region of the
model pays a futex wake-up -- a few hundred regions per decode step. Measured
on 2 cores (SmolLM2-135M, one float16 decode step on a worker thread): 14 ms
when that thread owns the only team, 23 ms once the main thread has run a
single two-thread op, even idle since. Hence the local engine runs its model
work on one thread (``engine/local/executor.py``) and every other thread's torch work
under :func:`torch_threads` (1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run with ``count`` intra-op threads, restoring the calling thread's setting after."""
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
