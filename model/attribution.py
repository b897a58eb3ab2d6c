"""Attribution: how much of an answer each expert produced, read off the router.

Per token, an expert's share is its router probability (softmax over all experts, after any opt-out mask) averaged over
layers; per request, the mean over the request's tokens. Shares sum to 1 per token. The fraction of (layer, token) slots
where an expert was in the top-k is recorded too, since only selected experts compute anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from model.hosts import MoEModel

RouterOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # FlexOlmo's router: (logits, top-k weights, indices)


@dataclass
class RouterRecord:
    """Router probabilities captured per forward call: calls x layers x (tokens, experts)."""

    probabilities: list[list[torch.Tensor]] = field(default_factory=list)
    selected: list[list[torch.Tensor]] = field(default_factory=list)

    def per_token(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mass, selected share), each (tokens, experts): averaged over layers, tokens of all calls concatenated."""
        mass = torch.cat([torch.stack(layers).mean(dim=0) for layers in self.probabilities])
        chosen = torch.cat([torch.stack(layers).mean(dim=0) for layers in self.selected])
        return mass, chosen


@contextmanager
def record_routing(moe: MoEModel) -> Iterator[RouterRecord]:
    """Capture router probabilities of every forward pass in the block (also across `generate` steps)."""
    record = RouterRecord()
    num_layers = len(moe.model.layers)

    def hook(layer_index: int) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...], RouterOutput], None]:
        def capture(gate: torch.nn.Module, _inputs: tuple[torch.Tensor, ...], output: RouterOutput) -> None:
            logits, _scores, indices = output
            if layer_index == 0:
                record.probabilities.append([])
                record.selected.append([])
            probs = torch.softmax(logits.detach(), dim=-1, dtype=torch.float32)
            hits = torch.zeros_like(probs).scatter_(-1, indices.detach(), 1.0)
            record.probabilities[-1].append(probs)
            record.selected[-1].append(hits)

        return capture

    handles = [layer.mlp.gate.register_forward_hook(hook(i)) for i, layer in enumerate(moe.model.layers)]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()
    assert all(len(layers) == num_layers for layers in record.probabilities)


@torch.no_grad()
def expert_attribution(
    moe: MoEModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Router probability mass per expert for every non-padding token, (tokens, experts), averaged over layers."""
    with record_routing(moe) as record:
        moe(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    mass, _ = record.per_token()
    if attention_mask is not None:
        mass = mass[attention_mask.reshape(-1).bool()]
    return mass
