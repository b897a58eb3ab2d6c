"""Peak memory of one piece of work (a training run, a pipeline stage), not of the whole process.

Why not `resource.getrusage(...).ru_maxrss`: it is the high-water mark since the process started, so in `flexo run`,
where one process trains M_pub and then every expert, each expert would report the pipeline's peak so far. Linux resets
the resident high-water mark (VmHWM) on writing "5" to /proc/self/clear_refs, and CUDA has its own resettable peak.
A reset would hide an enclosing window's peak (a stage that contains a training run), so every reset first records the
peak it is about to clear, and a window's peak is the largest of the current one and those recorded since it opened.
Where the reset is not allowed (another OS, a locked-down /proc) the lifetime peak is reported and marked as such.
"""

from __future__ import annotations

import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_lock = threading.Lock()
_cleared: list[tuple[float, float]] = []  # (resident GiB, CUDA GiB) peaks as they were just before each reset, in order


@dataclass(frozen=True)
class PeakMemory:
    rss_gib: float  # peak resident set size of this process during the window
    device_gib: float | None  # peak CUDA memory allocated by torch during the window, on a CUDA device
    since_reset: bool  # False: rss_gib is the process's lifetime peak (the reset was not possible)


def _resident_peak_gib() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    # no /proc: ru_maxrss is kB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)


def _cuda_peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


class PeakWindow:
    """Opens a measurement window at construction; `read()` returns the peaks since then. Windows may nest."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)
        with _lock:
            before = (_resident_peak_gib(), _cuda_peak_gib(self.device))
            try:
                _CLEAR_REFS.write_text("5")
                self.since_reset = True
            except OSError:
                self.since_reset = False
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
            _cleared.append(before)
            self._first = len(_cleared)  # resets from here on happened inside this window

    def read(self) -> PeakMemory:
        with _lock:
            inside = _cleared[self._first:]
            rss = max([_resident_peak_gib(), *(r for r, _ in inside)])
            cuda = max([_cuda_peak_gib(self.device), *(c for _, c in inside)])
        return PeakMemory(rss_gib=rss, device_gib=cuda if self.device.type == "cuda" else None, since_reset=self.since_reset)
