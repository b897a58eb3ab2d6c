"""Peak memory of one piece of work (a training run, a pipeline stage), not of the whole process.

Why not `resource.getrusage(...).ru_maxrss` alone: it is the high-water mark since the process started, so in `flexo
run`, where one process trains M_pub and then every expert, each expert would report the pipeline's peak so far.
Resetting the kernel's mark (/proc/self/clear_refs) would fix that but also silently change what `/usr/bin/time -v`,
`ru_maxrss` and every other observer of the process reports, so nothing here resets anything. Instead a window combines
two readings: if the process's high-water mark rose during the window, the window set the record and the mark is its
exact peak; otherwise the peak is the largest resident size a sampler thread saw while the window was open (every
`SAMPLE_SECONDS`: a lower bound that can miss a spike shorter than that). CUDA works the same way with torch's
`max_memory_allocated` / `memory_allocated`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import resource
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

SAMPLE_SECONDS = 0.02
_STATM = Path("/proc/self/statm")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_open: weakref.WeakSet[PeakWindow] = weakref.WeakSet()
_wake = threading.Condition()  # guards _open and _sampler; wakes the sampler when a window opens
_sampler: threading.Thread | None = None


@dataclass(frozen=True)
class PeakMemory:
    rss_gib: float  # peak resident set size of this process during the window
    device_gib: float | None  # peak CUDA memory allocated by torch during the window, on a CUDA device
    exact: (
        bool  # True: the window set the process's high-water mark, so rss_gib is exact; False: sampled (a lower bound)
    )


def process_peak_rss_gib() -> float:
    """The process's lifetime resident high-water mark (ru_maxrss: kB on Linux, bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)


def current_rss_gib() -> float | None:
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE / 2**30
    except (OSError, IndexError, ValueError):
        return None  # no /proc: only the high-water mark is known


def _cuda_gib(device: torch.device, peak: bool) -> float:
    if device.type != "cuda":
        return 0.0
    return (torch.cuda.max_memory_allocated(device) if peak else torch.cuda.memory_allocated(device)) / 2**30


def _sample_forever() -> None:
    while True:
        with _wake:
            while not _open:
                _wake.wait()
            windows = list(_open)
        rss = current_rss_gib()
        for window in windows:
            window._observe(rss)
        del windows
        time.sleep(SAMPLE_SECONDS)


class PeakWindow:
    """Opens a measurement window at construction; `read()` returns the peaks since then. Windows nest and overlap."""

    def __init__(self, device: str = "cpu") -> None:
        global _sampler
        self.device = torch.device(device)
        self._start_mark = process_peak_rss_gib()
        self._start_cuda_mark = _cuda_gib(self.device, peak=True)
        now = current_rss_gib()
        self._sampled = now or 0.0
        self._sampled_cuda = _cuda_gib(self.device, peak=False)
        with _wake:
            _open.add(self)
            if _sampler is None:
                _sampler = threading.Thread(target=_sample_forever, name="flexo-peak-memory", daemon=True)
                _sampler.start()
            _wake.notify()

    def _observe(self, rss: float | None) -> None:
        if rss is not None:
            self._sampled = max(self._sampled, rss)
        if self.device.type == "cuda":
            self._sampled_cuda = max(self._sampled_cuda, _cuda_gib(self.device, peak=False))

    def read(self) -> PeakMemory:
        """The peaks so far; the window stays open (reading twice is fine)."""
        self._observe(current_rss_gib())
        mark = process_peak_rss_gib()
        exact = mark > self._start_mark
        device_gib = None
        if self.device.type == "cuda":
            cuda_mark = _cuda_gib(self.device, peak=True)
            device_gib = cuda_mark if cuda_mark > self._start_cuda_mark else self._sampled_cuda
        return PeakMemory(rss_gib=mark if exact else self._sampled, device_gib=device_gib, exact=exact)

    def close(self) -> PeakMemory:
        """The final peaks; stops sampling for this window."""
        peak = self.read()
        with _wake:
            _open.discard(self)
        return peak


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None on a C library without it (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_malloc_trim()


def release_freed_memory() -> None:
    """Hand memory that is already free back to the operating system: collect unreachable objects, have glibc return
    its free heap pages (`malloc_trim(0)`) and torch its cached CUDA blocks. Changes no value anywhere.

    Why: glibc keeps freed allocations below its mmap threshold (activations, per-batch tensors) in its arenas, so a
    process that has finished with a model still shows their pages as resident, and the next stage of `flexo run`
    (same process) reports them as its own peak. Call it after a piece of work has dropped its models."""
    gc.collect()
    trim_heap()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


_frozen_depth = 0


@contextmanager
def collect_only_new_objects() -> Iterator[None]:
    """Inside, `gc.collect()` (so `release_freed_memory`) scans only the objects made inside: everything alive on entry
    is collected once and then frozen (`gc.freeze`), and thawed on exit. Nests.

    Why: a full collection walks every object of the process, about a million after Prefect, MLflow, transformers and
    pytest are imported (0.5 s per call on 2 cores), and an evaluation collects after each of its ~16 model families.
    What the families free is what they made, so scanning the rest finds nothing. Changes no value anywhere; what was
    alive on entry and becomes garbage inside is thawed on exit and freed by the next collection (the evaluation runs
    one right after)."""
    global _frozen_depth
    if _frozen_depth == 0:
        gc.collect()
        gc.freeze()
    _frozen_depth += 1
    try:
        yield
    finally:
        _frozen_depth -= 1
        if _frozen_depth == 0:
            gc.unfreeze()


def trim_heap() -> None:
    """glibc's `malloc_trim(0)` alone (no collection): cheap enough to call between the steps of a loop. Why: a loop
    whose allocations change size every step (an MoE's experts get a different number of tokens each step) cannot
    reuse its last step's freed blocks exactly, so glibc's heap grows step after step while holding mostly free
    pages. Changes no value anywhere."""
    if _malloc_trim is not None:
        _malloc_trim(0)
