"""`release_memory`: freed heap holes go back to the operating system (glibc), which a long pipeline process needs."""

from __future__ import annotations

import psutil
import pytest
import torch

from tasks.memory import _libc, release_memory


@pytest.mark.skipif(_libc() is None, reason="no malloc_trim in this C library")
def test_freed_holes_between_live_tensors_are_returned() -> None:
    process = psutil.Process()
    big, small = [], []
    for _ in range(3000):
        big.append(torch.ones(16 * 1024))  # 64 KiB each: below glibc's mmap threshold, so on the heap
        small.append(torch.ones(64))  # a live neighbour keeps each hole from being trimmed on free()
    del big
    before = process.memory_info().rss
    assert release_memory()
    after = process.memory_info().rss
    assert before - after > 100 * 2**20  # of the ~190 MiB freed
    assert len(small) == 3000 and all(int(t.sum()) == 64 for t in small[:10])  # live tensors are untouched
