"""The experts implementation flexo's MoEs run with: transformers' eager loop, with each expert's rows bucketed.

Why not transformers' own `eager`: under bf16 on a CPU, oneDNN compiles (and caches) one kernel per matmul shape,
about 2.5 ms each on a 2-core Xeon, and in an MoE each expert receives a different number of tokens in almost every
batch, so nearly every expert matmul paid a fresh compilation (the serving MoE's bf16 pass was slower than its fp32
pass). Zero-padding each expert's rows up to a multiple of `BUCKET_ROWS` makes the shapes repeat; the padding rows
are cut off after the down projection, before they are weighted or added, so they never reach the output or a
gradient. In fp32 (MKL's precompiled GEMM) and on accelerators the rows are not padded: there it would only add work.

Why not `grouped_mm`: it is not autocast-enabled and runs the experts in fp32 under bf16 autocast
(`model.config.EXPERTS_IMPLEMENTATION`). The function is registered in transformers' `ExpertsInterface` under
`BUCKETED`, so any FlexOlmo or Qwen2-MoE model built or loaded with `experts_implementation=BUCKETED` uses it; a saved
config.json does not record the choice, so a saved MoE still loads in plain transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from transformers.integrations.moe import ExpertsInterface

BUCKETED = "flexo_bucketed"
# rows per bucket: large enough that a pass over FLEXMIX sees a handful of shapes per expert, small enough that the
# padding stays a small share of a batch of a few hundred tokens (measured in benchmarks/RESULTS.md)
BUCKET_ROWS = 64


class StackedExperts(Protocol):
    """What the loop reads of transformers' FlexOlmoExperts / Qwen2MoeExperts."""

    num_experts: int
    gate_up_proj: torch.Tensor  # (E, 2 * intermediate, hidden): [gate; up]
    down_proj: torch.Tensor  # (E, hidden, intermediate)
    act_fn: Callable[[torch.Tensor], torch.Tensor]


def padded_rows(rows: int, bucket: int = BUCKET_ROWS) -> int:
    """The smallest multiple of `bucket` that holds `rows` (0 stays 0)."""
    return -(-rows // bucket) * bucket


def pads_rows(hidden_states: torch.Tensor) -> bool:
    """Whether this input's expert matmuls go to per-shape compiled kernels: a CPU running in a reduced precision
    (bf16/fp16 autocast, or reduced-precision weights and activations)."""
    if hidden_states.device.type != "cpu":
        return False
    return torch.is_autocast_enabled("cpu") or hidden_states.dtype in (torch.bfloat16, torch.float16)


def bucketed_experts_forward(
    self: StackedExperts,
    hidden_states: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
) -> torch.Tensor:
    """transformers' eager experts loop (FlexOlmoExperts/Qwen2MoeExperts, 3-D `gate_up_proj` [gate; up] and
    `down_proj`), with each active expert's token rows zero-padded to a multiple of `BUCKET_ROWS` where `pads_rows`."""
    final_hidden_states = torch.zeros_like(hidden_states)
    pad = pads_rows(hidden_states)
    with torch.no_grad():
        # one extra class, as in the eager loop: an index equal to num_experts selects no expert
        expert_mask = nn.functional.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
        expert_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
    for expert_idx in expert_hit.flatten().tolist():
        if expert_idx == self.num_experts:
            continue
        top_k_pos, token_idx = torch.where(expert_mask[expert_idx])
        current_state = hidden_states[token_idx]
        rows = current_state.shape[0]
        if pad:
            current_state = nn.functional.pad(current_state, (0, 0, 0, padded_rows(rows) - rows))
        gate, up = nn.functional.linear(current_state, self.gate_up_proj[expert_idx]).chunk(2, dim=-1)
        current_hidden_states = nn.functional.linear(self.act_fn(gate) * up, self.down_proj[expert_idx])[:rows]
        current_hidden_states = current_hidden_states * top_k_weights[token_idx, top_k_pos, None]
        final_hidden_states.index_add_(0, token_idx, current_hidden_states.to(final_hidden_states.dtype))
    return final_hidden_states


ExpertsInterface.register(BUCKETED, bucketed_experts_forward)
