"""Learning-rate schedule: linear warmup, then cosine decay to a floor (OLMo-core's `CosWithWarmup`).

The floor is min_lr_ratio * lr (`CosWithWarmup`'s alpha_f).

Why a pure function of the step: a resumed run recomputes the exact learning rate of any step from the step number
alone, so the schedule needs no state in the checkpoint beyond the step.
"""

from __future__ import annotations

import math


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak LR for optimizer step `step` (0-based) of `total_steps`.

    Warmup ramps linearly from 1/warmup to 1 over `warmup_steps`; cosine then decays from 1 to `min_lr_ratio` at the
    last step.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must be in [0, total_steps={total_steps})")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, decay_steps - 1))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * cosine


def warmup_steps_for(total_steps: int, warmup_fraction: float) -> int:
    """Warmup steps from a fraction of the run; at least one when the fraction is nonzero and the run allows it."""
    if warmup_fraction <= 0:
        return 0
    return min(total_steps - 1, max(1, round(total_steps * warmup_fraction)))
