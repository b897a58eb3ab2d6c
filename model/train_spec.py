"""What a training run is given and what it hands back: the spec (everything that fixes the result, fingerprinted so a
checkpoint resumes only the run it belongs to), the progress event a caller sees after each step, and the result."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from model.dp import DPSpec
from model.memory import PeakMemory
from model.precision import Precision

LossFn = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]
"""loss_fn(model, input_ids) -> {"loss": scalar to minimise, other scalars to report (e.g. "ce", "lm_z")}."""


@dataclass(frozen=True)
class TrainSpec:
    """Everything that determines the result of a run (and so must match when resuming)."""

    total_steps: int
    batch_size: int  # global: sequences per optimizer step over all processes (expected batch size under DP)
    seq_len: int
    lr: float
    betas: tuple[float, float]
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float
    eval_every: int
    checkpoint_every: int
    eval_batches: int
    seed: int
    device: str = "cpu"
    precision: Precision = "fp32"  # resolved (never "auto"): it is part of the run's fingerprint
    dp: DPSpec | None = None
    # torch.compile the forward pass and the loss of each training step (not validation): it fuses the norms, RoPE,
    # activations and the cross-entropy into fewer kernels, which matters where an eager step is bound by launching
    # them (expected on a GPU at `small` size; benchmarks/device_check.sh measures both). On 2 CPU cores at `demo` size
    # it changed tokens/s by -4% (dense) to +10% (expert) for a ~50 s compile (benchmarks/RESULTS.md): off by default.
    # Part of the fingerprint when on: compiled kernels round differently, and a resumed run must end where it would
    # have.
    compile: bool = False

    def fingerprint(self, extra: str = "") -> str:
        """Identity of the run: a checkpoint may only be resumed by a run with the same fingerprint."""
        # `compile` came later: it only counts when set, so checkpoints written before it existed still resume
        data = {k: v for k, v in asdict(self).items() if k != "device" and not (k == "compile" and not v)}
        return hashlib.sha256((json.dumps(data, sort_keys=True, default=str) + extra).encode()).hexdigest()


@dataclass
class StepEvent:
    """What the progress callback sees after every optimizer step and every evaluation."""

    kind: Literal["step", "eval"]
    step: int  # optimizer steps done
    total_steps: int
    tokens: int  # training tokens consumed so far (all processes)
    lr: float
    metrics: dict[str, float]
    tokens_per_s: float


@dataclass
class TrainResult:
    steps: int
    tokens: int
    train_metrics: dict[str, float]
    val_loss: float | None
    best_val_loss: float | None
    best_step: int | None
    epsilon: float | None
    noise_multiplier: float | None
    tokens_per_s: float
    train_seconds: float
    last_dir: Path
    best_dir: Path | None
    resumed_from: int | None
    history: list[dict[str, float]] = field(default_factory=list)
    peak_memory: PeakMemory | None = None  # this process's peaks during this call (resident, and CUDA on a GPU)
    # the step whose weights the model holds at the end: the last one, or the best validation's when validation rose
    # after it (the model is then loaded from the best checkpoint), and why
    exported_step: int | None = None
    export_reason: str = ""
