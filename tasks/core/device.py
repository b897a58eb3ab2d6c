"""The one place that turns `runtime.device`, `runtime.precision` and `runtime.compile` into the device, precision and
compile switch a stage runs with.

Why one: training, evaluation, the attack and the router encoder each picked a device for themselves, and they
disagreed (training refused a missing CUDA, evaluation and the attack silently fell back to the CPU). Every stage now
asks here, so `runtime.device: cuda` on a machine without CUDA is the same clear ConfigError everywhere.
"""

from __future__ import annotations

import os

import torch

from model.precision import Precision, resolve_precision
from tasks.core.config import Profile
from tasks.core.errors import ConfigError


def resolve_device(profile: Profile) -> str:
    """`runtime.device` as a torch device string: `auto` is CUDA when present, else CPU; under torchrun each process
    takes its own GPU (`LOCAL_RANK`). `cuda` without CUDA is refused, never downgraded."""
    wanted = profile.runtime.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device is 'cuda' but no CUDA device is available; set runtime.device: auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return wanted


def torch_device(profile: Profile) -> torch.device:
    """`resolve_device` as a `torch.device` (what model code moves tensors to)."""
    return torch.device(resolve_device(profile))


def resolve_run_precision(profile: Profile, device: str | torch.device | None = None) -> Precision:
    """`runtime.precision` resolved for `device` (default: the profile's device): `auto` is bf16 where it is native."""
    return resolve_precision(profile.runtime.precision, device if device is not None else resolve_device(profile))


def resolve_compile(profile: Profile, device: str, dp: bool = False) -> bool:
    """`runtime.compile` for a training on `device`: `auto` compiles the step on CUDA, where the eager step is bound by
    the host launching kernels (benchmarks/RESULTS.md, the H200 runs), and not on a CPU, where inductor's compile (about
    50 s) outlasts what it saves on a demo run. Under DP-SGD `auto` stays eager: Opacus' per-sample hooks do not go
    through torch.compile (an explicit `true` with DP is refused by `model.training`)."""
    wanted = profile.runtime.compile
    if wanted == "auto":
        return torch.device(device).type == "cuda" and not dp
    return wanted
