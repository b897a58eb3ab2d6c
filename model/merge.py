"""Merge independently trained experts into one MoE, with no joint training: `FlexOlmoForCausalLM` around an OLMo-2
M_pub, `Qwen2MoeForCausalLM` around a Llama-family one (`model.hosts` says why that is exact).

Expert 0 is M_pub's FFN with router row r_pub; expert j (1..n) is owner j's FFN_j with its per-layer row r_j. Shared
weights (embeddings, attention, norms, LM head) are M_pub's. Each expert file also carries the r_pub it was trained
against; the merge refuses an expert whose r_pub differs (it was coordinated with a different public model or router).
b_j is dropped (see `model.coordinated`).

Device and dtype: r_pub and every expert tensor pass through `on_public_device` before any check or copy, so a caller
may hand over M_pub on a GPU with r_pub there and experts read from files on the CPU (the evaluation's no-coordination
ablation does), or experts saved in another precision; the MoE is built on M_pub's device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from model.coordinated import EXPERT_FFN_KEYS
from model.hosts import DenseModel, MoEBlock, MoEModel, moe_config, new_moe

# The merged MoE is built in fp32 (`merge_experts`); router rows are compared in fp32 (exactly what was saved).
MERGE_DTYPE = torch.float32


class MergeError(ValueError):
    """An expert does not fit the public model it is merged with."""


def on_public_device(
    public_model: DenseModel, r_pub: torch.Tensor, experts: Sequence[dict[str, torch.Tensor]]
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """r_pub and every expert tensor on M_pub's device in `MERGE_DTYPE`: the one place the merge's inputs meet, so no
    comparison or copy below ever mixes devices (a CUDA r_pub against CPU expert rows) or precisions (a bf16 file)."""
    device = next(public_model.parameters()).device
    placed = [{name: t.detach().to(device=device, dtype=MERGE_DTYPE) for name, t in e.items()} for e in experts]
    return r_pub.detach().to(device=device, dtype=MERGE_DTYPE), placed


def _check_expert(index: int, expert: dict[str, torch.Tensor], public: DenseModel, r_pub: torch.Tensor) -> None:
    """Shapes against M_pub, and the saved r_pub against this one (both placed by `on_public_device`)."""
    for layer_index, layer in enumerate(public.model.layers):
        for key in EXPERT_FFN_KEYS:
            name = f"layers.{layer_index}.{key}.weight"
            if name not in expert:
                raise MergeError(f"expert {index}: missing tensor {name}")
            expected = getattr(layer.mlp, key).weight.shape
            if expert[name].shape != expected:
                raise MergeError(
                    f"expert {index}: {name} has shape {tuple(expert[name].shape)}, expected {tuple(expected)}"
                )
        row = expert.get(f"layers.{layer_index}.router_public")
        if row is None or not torch.equal(row, r_pub):
            raise MergeError(
                f"expert {index}: its public router row in layer {layer_index} differs from r_pub; it was trained "
                "against a different public model or router embedding and cannot be merged"
            )


def merge_experts(
    public_model: DenseModel,
    r_pub: torch.Tensor,
    experts: Sequence[dict[str, torch.Tensor]],
    top_k: int | None = None,
) -> MoEModel:
    """An (n+1)-expert FlexOlmo: rows [r_pub, r_1..r_n] and FFNs [FFN_pub, FFN_1..FFN_n] stacked in every layer, on
    M_pub's device (experts and r_pub may come from anywhere: `on_public_device`)."""
    r_pub, experts = on_public_device(public_model, r_pub, experts)
    for index, expert in enumerate(experts, start=1):
        _check_expert(index, expert, public_model, r_pub)
    num_experts = len(experts) + 1
    device = next(public_model.parameters()).device
    moe = new_moe(moe_config(public_model.config, num_experts, top_k)).float()
    moe.to(device)  # in place (a module's `to`)
    public_state = public_model.state_dict()
    with torch.no_grad():
        shared = {k: v for k, v in public_state.items() if ".mlp." not in k}
        missing, _ = moe.load_state_dict(shared, strict=False)
        for layer_index, (moe_layer, public_layer) in enumerate(
            zip(moe.model.layers, public_model.model.layers, strict=True)
        ):
            ffns = [{key: getattr(public_layer.mlp, key).weight.to(MERGE_DTYPE) for key in EXPERT_FFN_KEYS}]
            ffns += [{key: e[f"layers.{layer_index}.{key}.weight"] for key in EXPERT_FFN_KEYS} for e in experts]
            rows = [r_pub] + [e[f"layers.{layer_index}.router"] for e in experts]
            set_layer_experts(moe_layer.mlp, rows, ffns)
    unexpected_gaps = [k for k in missing if ".mlp." not in k]
    if unexpected_gaps:
        raise MergeError(f"shared tensors not filled from M_pub: {unexpected_gaps[:5]}")
    return moe.eval()


def set_layer_experts(block: MoEBlock, rows: Sequence[torch.Tensor], ffns: Sequence[dict[str, torch.Tensor]]) -> None:
    """Write router rows and expert FFNs into one MoE block (`FlexOlmoSparseMoeBlock` or `Qwen2MoeSparseMoeBlock`,
    the same transformers 5.x fused layout: `gate.weight` (E, d), `gate_up_proj[e] = [gate_proj; up_proj]`,
    `down_proj[e]`)."""
    block.gate.weight.copy_(torch.stack([row.float() for row in rows]))
    block.experts.gate_up_proj.copy_(torch.stack([torch.cat([f["gate_proj"], f["up_proj"]], dim=0) for f in ffns]))
    block.experts.down_proj.copy_(torch.stack([f["down_proj"] for f in ffns]))


def layer_experts(block: MoEBlock) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The inverse of `set_layer_experts`: (router rows (E, d), per-expert gate/up/down weights)."""
    intermediate = block.experts.down_proj.shape[-1]
    ffns = []
    for e in range(block.experts.down_proj.shape[0]):
        gate_up = block.experts.gate_up_proj[e]
        ffns.append(
            {
                "gate_proj": gate_up[:intermediate],
                "up_proj": gate_up[intermediate:],
                "down_proj": block.experts.down_proj[e],
            }
        )
    return block.gate.weight, ffns
