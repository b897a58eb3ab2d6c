"""Which precision the matmuls run in, and the autocast context that applies it.

Why `auto`: on a CPU with native bf16 instructions (AVX512-BF16 or AMX) or a bf16-capable GPU, bf16 matmuls are several
times faster than fp32 ones (benchmarks/RESULTS.md: 4-6x on the build machines' CPUs), training steps 1.4-2.0x and MoE
forward passes 2.4x faster; on a CPU without them bf16 is emulated and slower. So `auto` picks bf16 exactly where the
hardware has it. Weights, optimizer state, losses and log-softmax stay fp32 either way (autocast only lowers the
matmuls).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
Setting = Literal["fp32", "bf16", "auto"]


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` multiplies bf16 natively: a CUDA GPU with bf16 support, or a CPU with AVX512-BF16 or AMX."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and bool(check()) for check in checks)


def resolve_precision(setting: Setting, device: str | torch.device) -> Precision:
    """`runtime.precision` for one device: `auto` is bf16 where `native_bf16(device)`, else fp32."""
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if setting not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32, bf16 or auto, got {setting!r}")
    return setting


def autocast(precision: Precision, device: str | torch.device) -> AbstractContextManager:
    """bf16 autocast on the device's type (enabled only for bf16); a no-op context for fp32."""
    device_type = "cuda" if torch.device(device).type == "cuda" else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")
