"""Where and how a training step runs: threads, device, torch.distributed under torchrun, and the TrainSpec that
`model.training.train` takes (schedule, precision, seed, DP) from a profile's training section."""

from __future__ import annotations

import os

import torch

from model.dp import DPSpec
from model.schedule import warmup_steps_for
from model.training import TrainSpec
from tasks.core.config import OptimConfig, Profile, TrainExpertConfig, TrainPublicConfig
from tasks.core.device import resolve_device, resolve_run_precision


def setup_runtime(profile: Profile) -> tuple[str, int, int]:
    """Threads, device, and torch.distributed when launched by torchrun (gloo on CPU, nccl on CUDA): (device, rank,
    world)."""
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    device = resolve_device(profile)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            if device.startswith("cuda"):
                torch.cuda.set_device(torch.device(device))
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
        return device, dist.get_rank(), dist.get_world_size()
    return device, 0, 1


def make_spec(
    profile: Profile,
    optim: OptimConfig,
    steps: int,
    batch_size: int,
    seq_len: int,
    eval_every: int,
    checkpoint_every: int,
    eval_batches: int,
    device: str,
    weight_decay: float | None = None,
    dp: DPSpec | None = None,
) -> TrainSpec:
    return TrainSpec(
        total_steps=steps,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=optim.lr,
        betas=tuple(optim.betas),
        weight_decay=optim.weight_decay if weight_decay is None else weight_decay,
        warmup_steps=warmup_steps_for(steps, optim.warmup_fraction),
        min_lr_ratio=optim.min_lr_ratio,
        grad_clip=optim.grad_clip,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        eval_batches=eval_batches,
        seed=profile.seed,
        device=device,
        precision=resolve_run_precision(profile, device),
        dp=dp,
        compile=profile.runtime.compile,
    )


def section_spec(
    profile: Profile,
    cfg: TrainPublicConfig | TrainExpertConfig,
    steps: int,
    device: str,
    *,
    weight_decay: float | None = None,
    dp: DPSpec | None = None,
) -> TrainSpec:
    """`make_spec` with the batch, schedule and evaluation settings of one training section (`train_public` or
    `train_expert`)."""
    return make_spec(
        profile,
        cfg.optim,
        steps,
        cfg.batch_size,
        cfg.seq_len,
        cfg.eval_every,
        cfg.checkpoint_every,
        cfg.eval_batches,
        device,
        weight_decay=weight_decay,
        dp=dp,
    )
