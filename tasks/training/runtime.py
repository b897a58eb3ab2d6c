"""Where a training step runs: threads, device, and torch.distributed when torchrun launched it (the TrainSpec comes
from `tasks.core.build.train_spec`)."""

from __future__ import annotations

import os

import torch

from tasks.core.config import Profile
from tasks.core.device import resolve_device


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
