"""Peak memory of one training run, not of the whole process.

Why not `resource.getrusage(...).ru_maxrss`: it is the high-water mark since the process started, so in `flexo run`,
where one process trains M_pub and then every expert, each expert would report the pipeline's peak so far. Linux resets
the resident high-water mark (VmHWM) on writing "5" to /proc/self/clear_refs; CUDA has its own peak counter. Where the
reset is not allowed (another OS, a locked-down /proc) the lifetime peak is reported and marked as such.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class PeakMemory:
    rss_gib: float  # peak resident set size of this process since the last reset
    device_gib: float | None  # peak CUDA memory allocated by torch, on a CUDA run
    since_reset: bool  # False: rss_gib is the process's lifetime peak (the reset was not possible)


def reset_peak_memory(device: str) -> bool:
    """Start a new peak; True if the resident peak was reset (else only the lifetime peak can be read)."""
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _vm_hwm_gib() -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    except OSError:
        return None
    return None


def peak_memory(device: str, since_reset: bool) -> PeakMemory:
    """The peaks since `reset_peak_memory` (pass what it returned)."""
    rss = _vm_hwm_gib()
    if rss is None:  # no /proc: ru_maxrss is kB on Linux, bytes on macOS
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**30 if sys.platform == "darwin" else 2**20)
        since_reset = False
    device_gib = None
    if torch.device(device).type == "cuda":
        device_gib = torch.cuda.max_memory_allocated(torch.device(device)) / 2**30
    return PeakMemory(rss_gib=rss, device_gib=device_gib, since_reset=since_reset)
