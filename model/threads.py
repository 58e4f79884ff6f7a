"""Scoped intra-op thread count."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the enclosed kernels on one intra-op thread (the calling thread's OpenMP setting), then restore it.

    Why: some kernels sum in an order that depends on the thread count, and this model's LayerNorms (eps 1e-6) turn
    that float noise into up to ~1e-4 of probability on flat images; a reference that must reproduce to 1e-5 (the
    golden vectors) is computed on one thread. Also used where one thread is simply faster (``layers``).
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
