"""AdamW over the trainable parameters: which tensors decay, and the order the optimizer (and so every checkpoint's
optimizer state) holds them in. The caller decides what trains by setting `requires_grad`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def is_embedding(name: str) -> bool:
    return "embed_tokens" in name or name.endswith("wte.weight")


def _decays(name: str, parameter: nn.Parameter) -> bool:
    return parameter.ndim >= 2 and not is_embedding(name)


def param_groups(named: list[tuple[str, nn.Parameter]], weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: no decay on embeddings, norms (1-D) or biases / router rows (1-D, scalars)."""
    decay = [p for n, p in named if _decays(n, p)]
    no_decay = [p for n, p in named if not _decays(n, p)]
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def ordered_trainable(model: nn.Module, weight_decay: float) -> list[tuple[str, nn.Parameter]]:
    """Trainable (name, parameter) in the order the optimizer holds them (decayed group first)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("the model has no trainable parameters (every requires_grad is False)")
    decay = [(n, p) for n, p in named if _decays(n, p)]
    rest = [(n, p) for n, p in named if not _decays(n, p)]
    return decay + rest


def make_adamw(groups: list[dict[str, Any]], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where this torch build has it for the device (one pass over all tensors)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, foreach=True)
