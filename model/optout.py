"""Opt-out: switch experts off so their influence is exactly zero.

Two ways, equal by construction and by test:
- `keep_experts` slices router rows and expert FFNs out of every layer: a smaller model, as if the others never existed.
- `masked_experts` sets the dropped experts' router logits to -inf for the duration of a `with` block: per-request
  opt-out on a loaded model, no reload. Softmax then gives them probability 0, so whatever top-k picks, they contribute
  nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoTopKRouter
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeTopKRouter

from model.hosts import MoEModel, new_moe, resized_config
from model.merge import layer_experts, set_layer_experts


def _validate(indices: Sequence[int], num_experts: int, what: str) -> list[int]:
    chosen = sorted(set(int(i) for i in indices))
    bad = [i for i in chosen if not 0 <= i < num_experts]
    if bad:
        raise ValueError(f"{what}: expert indices {bad} out of range 0..{num_experts - 1}")
    return chosen


def keep_experts(moe: MoEModel, keep: Sequence[int], top_k: int | None = None) -> MoEModel:
    """A new model holding only experts `keep` (renumbered in order); top_k defaults to min(current k, len(keep))."""
    chosen = _validate(keep, moe.config.num_experts, "keep")
    if not chosen:
        raise ValueError("keep: at least one expert must remain")
    k = min(moe.config.num_experts_per_tok, len(chosen)) if top_k is None else top_k
    sliced = new_moe(resized_config(moe.config, len(chosen), k))
    module: torch.nn.Module = sliced  # PreTrainedModel.to is wrapped in a way that hides its signature from mypy
    module.to(moe.dtype)
    with torch.no_grad():
        sliced.load_state_dict({k_: v for k_, v in moe.state_dict().items() if ".mlp." not in k_}, strict=False)
        for source, target in zip(moe.model.layers, sliced.model.layers, strict=True):
            rows, ffns = layer_experts(source.mlp)
            set_layer_experts(target.mlp, [rows[i] for i in chosen], [ffns[i] for i in chosen])
    return sliced.eval()


def _reroute(
    gate: FlexOlmoTopKRouter | Qwen2MoeTopKRouter, logits: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Recompute the router's top-k after masking, exactly as FlexOlmo's router does (softmax in fp32, no renorm)."""
    masked = logits + mask.to(logits.dtype)
    probs = torch.softmax(masked, dim=-1, dtype=torch.float32)
    top_values, top_indices = torch.topk(probs, gate.top_k, dim=-1)
    if gate.norm_topk_prob:
        top_values = top_values / top_values.sum(dim=-1, keepdim=True)
    return masked, top_values.to(logits.dtype), top_indices


@contextmanager
def masked_experts(moe: MoEModel, drop: Sequence[int]) -> Iterator[MoEModel]:
    """Within the block, experts `drop` get router logit -inf in every layer (per-request opt-out, no reload)."""
    dropped = _validate(drop, moe.config.num_experts, "drop")
    if len(dropped) >= moe.config.num_experts:
        raise ValueError("drop: at least one expert must remain")
    mask = torch.zeros(moe.config.num_experts)
    mask[dropped] = float("-inf")
    handles = [
        layer.mlp.gate.register_forward_hook(lambda gate, _inputs, output: _reroute(gate, output[0], mask))
        for layer in moe.model.layers
    ]
    try:
        yield moe
    finally:
        for handle in handles:
            handle.remove()
