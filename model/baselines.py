"""The baselines FlexOlmo is compared with (paper §4.3), built from the same dense models, in pure torch.

- model soup: a uniform parameter average of the dense models, and the per-example weighted soup whose weights are a
  softmax over each model's log-likelihood of the example's input;
- BTM: per example w_i = softmax_i(-NLL_i(input)/tau), keep the top-k weights and renormalise, combine *logits*;
- BTX: an MoE whose experts are the dense models' FFNs and whose shared weights are their average; its router is trained
  on public data only;
- prompt routing: a small classifier picks one dense model per input (here: nearest domain centroid in
  sentence-embedding space, the centroids being the owners' published router embeddings);
- the unrestricted MoE upper bound: M_pub upcycled into n+1 identical experts, then trained on all data;
- the "no training to coordinate" ablation: the dense models' FFNs merged as experts as if they were coordinated.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import TypeVar

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from model.coordinated import EXPERT_FFN_KEYS
from model.hosts import DenseModel, MoEModel, moe_config, new_moe
from model.losses import packed_lm_losses
from model.merge import set_layer_experts
from model.precision import Precision, autocast
from model.scoring import Batch, BatchScore, batch_chunks, reduce_logprobs, token_logprobs

ModelT = TypeVar("ModelT", bound=PreTrainedModel)  # a soup has its members' class


def _check_same_shapes(models: Sequence[torch.nn.Module]) -> list[dict[str, torch.Tensor]]:
    if not models:
        raise ValueError("at least one model is needed")
    states = [m.state_dict() for m in models]
    reference = states[0]
    for index, state in enumerate(states[1:], start=1):
        if state.keys() != reference.keys():
            raise ValueError(f"model {index} has different parameter names than model 0")
        for key, value in state.items():
            if value.shape != reference[key].shape:
                raise ValueError(
                    f"model {index}: {key} has shape {tuple(value.shape)}, model 0 has {tuple(reference[key].shape)}"
                )
    return states


@torch.no_grad()
def weighted_soup(models: Sequence[ModelT], weights: Sequence[float] | torch.Tensor) -> ModelT:
    """sum_i w_i * theta_i over every parameter (a copy; the inputs are not touched). Weights must sum to 1."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.numel() != len(models) or (w < 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
        raise ValueError(f"soup weights must be {len(models)} non-negative numbers summing to 1, got {w.tolist()}")
    states = _check_same_shapes(models)
    soup = copy.deepcopy(models[0])
    averaged = {}
    for key, reference in states[0].items():
        if not reference.is_floating_point():
            averaged[key] = reference
            continue
        total = torch.zeros_like(reference, dtype=torch.float64)
        for weight, state in zip(w.tolist(), states, strict=True):
            if weight:
                total.add_(state[key].double(), alpha=weight)
        averaged[key] = total.to(reference.dtype)
    soup.load_state_dict(averaged)
    return soup.eval()


def uniform_soup(models: Sequence[ModelT]) -> ModelT:
    """The uniform model soup (Wortsman et al.): every parameter averaged with equal weights."""
    return weighted_soup(models, [1.0 / len(models)] * len(models))


def routing_weights(context_nll: torch.Tensor, temperature: float, top_k: int | None = None) -> torch.Tensor:
    """BTM / weighted-soup weights per example: softmax_i(-NLL_i/tau) over models (dim 0), optionally top-k
    renormalised.

    context_nll: (models, examples). Returns (models, examples), each column summing to 1.
    """
    weights = torch.softmax(-context_nll.double() / temperature, dim=0)
    if top_k is not None and top_k < weights.shape[0]:
        kept = torch.topk(weights, top_k, dim=0).indices
        mask = torch.zeros_like(weights).scatter_(0, kept, 1.0)
        weights = weights * mask
        weights = weights / weights.sum(dim=0, keepdim=True)
    return weights


def btm_logits(logits: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Logit ensembling: z = sum_i w_i z_i per example (weights (models, B); logits each (B, T, V)). Each product is
    formed in one fp32 buffer per member (its fp32 copy, scaled in place), not in two, over
    `model.scoring.batch_chunks` (on a CPU a cache-sized chunk of rows at a time: the same sums, 3.5x faster there).

    A member whose weight is zero on every row of a chunk is not read there. With BTM's top-k routing most members
    are (top-2 of 8: up to three quarters of the work); the sums are the same bit for bit, since adding w * z = ±0
    leaves a sum as it is; and an unselected member has no influence at all, as in the paper's opt-out."""
    combined = torch.zeros_like(logits[0], dtype=torch.float32)
    for chunk, chunk_weights, *members in batch_chunks(combined, weights.to(torch.float32).T, *logits):
        for member, w in zip(members, chunk_weights.T, strict=True):
            if bool(w.any()):
                chunk += member.to(torch.float32, copy=True).mul_(w[:, None, None])
    return combined


class EnsembleScorer:
    """One forward pass per member over a batch: every member's own scores, the BTM ensemble's, and each member's
    context NLL (what per-example routing baselines are computed from). Callable as a `model.scoring.Scorer`."""

    def __init__(
        self,
        members: Sequence[tuple[str, PreTrainedModel]],
        temperature: float,
        top_k: int | None,
        btm_name: str = "btm",
    ) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = list(members)
        self.temperature = temperature
        self.top_k = top_k
        self.btm_name = btm_name

    def __call__(self, batch: Batch) -> dict[str, BatchScore]:
        """Each member's logits are kept as the model returns them (bf16 under bf16 autocast: half the memory of an
        fp32 copy, and `.float()` of a bf16 value is exact, so BTM combines the same numbers)."""
        results: dict[str, BatchScore] = {}
        all_logits, nlls = [], []
        for name, model in self.members:
            logits = model(**batch.model_inputs(), use_cache=False).logits
            results[name] = reduce_logprobs(token_logprobs(logits), batch)
            all_logits.append(logits)
            nlls.append(results[name][2])
        # routed on the context NLL, which the requests of a row share: one weight per member and row
        weights = batch.per_row(routing_weights(torch.stack(nlls), self.temperature, self.top_k))
        combined = btm_logits(all_logits, weights)
        del all_logits
        results[self.btm_name] = reduce_logprobs(token_logprobs(combined), batch)
        return results


def nearest_centroid(embeddings: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Prompt-routing classifier: index of the most cosine-similar centroid for each input embedding (N, d) -> (N,)."""
    if embeddings.shape[-1] != centroids.shape[-1]:
        raise ValueError(f"embedding dim {embeddings.shape[-1]} != centroid dim {centroids.shape[-1]}")
    similarity = F.normalize(embeddings.float(), dim=-1) @ F.normalize(centroids.float(), dim=-1).T
    return similarity.argmax(dim=-1)


def _ffn(model: DenseModel, layer: int) -> dict[str, torch.Tensor]:
    mlp = model.model.layers[layer].mlp
    return {key: getattr(mlp, key).weight for key in EXPERT_FFN_KEYS}


@torch.no_grad()
def moe_from_dense(
    shared_from: DenseModel,
    ffn_models: Sequence[DenseModel],
    router_rows: torch.Tensor | Sequence[torch.Tensor],
    top_k: int | None,
) -> MoEModel:
    """A FlexOlmo whose shared weights are `shared_from`'s and whose expert e is `ffn_models[e]`'s FFN, with router
    rows (experts, d) used in every layer."""
    rows = torch.stack(list(router_rows)) if not isinstance(router_rows, torch.Tensor) else router_rows
    if rows.shape[0] != len(ffn_models):
        raise ValueError(f"{rows.shape[0]} router rows for {len(ffn_models)} experts")
    moe = new_moe(moe_config(shared_from.config, len(ffn_models), top_k)).float()
    shared = {k: v for k, v in shared_from.state_dict().items() if ".mlp." not in k}
    missing, _ = moe.load_state_dict(shared, strict=False)
    gaps = [k for k in missing if ".mlp." not in k]
    if gaps:
        raise ValueError(f"shared tensors not filled: {gaps[:5]}")
    for index, layer in enumerate(moe.model.layers):
        set_layer_experts(layer.mlp, list(rows), [_ffn(m, index) for m in ffn_models])
    return moe.eval()


def random_router_rows(num_experts: int, hidden_size: int, std: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_experts, hidden_size, generator=generator) * std


def btx_merge(
    public_model: DenseModel,
    dense_models: Sequence[DenseModel],
    router_rows: torch.Tensor,
    top_k: int | None,
) -> MoEModel:
    """BTX: experts = [M_pub's FFN, each dense model's FFN]; shared weights = the uniform average over all of them.
    The router still has to be trained (`train_moe(..., train_experts=False)`) on public data."""
    members = [public_model, *dense_models]
    averaged = uniform_soup(members)
    return moe_from_dense(averaged, members, router_rows, top_k)


def upcycle(public_model: DenseModel, num_experts: int, router_rows: torch.Tensor, top_k: int | None) -> MoEModel:
    """The unrestricted MoE's start: M_pub with `num_experts` identical copies of its FFN (then trained on all data)."""
    return moe_from_dense(public_model, [public_model] * num_experts, router_rows, top_k)


def dense_as_expert(dense_model: DenseModel, r_pub: torch.Tensor, r_expert: torch.Tensor) -> dict[str, torch.Tensor]:
    """The "no training to coordinate" ablation: a dense continued-pretrained model's FFN in the expert-file layout, so
    `model.merge.merge_experts` merges it as if it had been trained in the 2-expert coordinated model."""
    state: dict[str, torch.Tensor] = {}
    for index in range(len(dense_model.model.layers)):
        for key, weight in _ffn(dense_model, index).items():
            state[f"layers.{index}.{key}.weight"] = weight.detach().clone()
        state[f"layers.{index}.router"] = r_expert.detach().clone().float()
        state[f"layers.{index}.router_public"] = r_pub.detach().clone().float()
    return state


def train_moe(
    moe: MoEModel,
    batches: Iterable[torch.Tensor],
    lr: float,
    weight_decay: float,
    grad_clip: float,
    train_experts: bool,
    precision: Precision = "fp32",
    *,
    checkpoint_activations: bool,
) -> list[float]:
    """Train the router rows (and, with `train_experts`, the expert FFNs) on packed token batches (B, T), every position
    a label; everything else frozen.

    Router-only is BTX's post-merge step and FlexOlmo's router tuning (all experts active is the caller's choice of
    top_k); experts + router is the unrestricted MoE. Returns the loss per step. Autocast is entered per step: its cast
    cache has no version check, so one context around several steps would keep multiplying by the router's first
    weights. `checkpoint_activations`: memory for time (`activation_checkpointing`); losses and weights are the same
    either way."""
    for parameter in moe.parameters():
        parameter.requires_grad_(False)
    trainable = []
    for layer in moe.model.layers:
        trainable.append(layer.mlp.gate.weight)
        if train_experts:
            trainable += [layer.mlp.experts.gate_up_proj, layer.mlp.experts.down_proj]
    for parameter in trainable:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    losses = []
    moe.train()
    with activation_checkpointing(moe) if checkpoint_activations else nullcontext():
        for input_ids in batches:
            with autocast(precision, input_ids.device):
                logits = moe(input_ids=input_ids, use_cache=False).logits
            loss, _ = packed_lm_losses(logits, input_ids)  # packed rows: every position has a label
            del logits
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
    moe.eval()
    for parameter in trainable:
        parameter.requires_grad_(False)
    return losses


@contextmanager
def activation_checkpointing(model: PreTrainedModel) -> Iterator[None]:
    """Every decoder layer's activations recomputed in the backward pass instead of kept from the forward pass.

    Why: a router gradient flows back through every later layer's experts, so a step keeps every layer's expert
    activations at once: two router-tuning steps at `demo` sizes (8 experts, all active, 16 x 256 tokens) took a
    process from 0.57 to 2.05 GiB resident, to 1.17 GiB checkpointed. The recomputation (non-reentrant
    `torch.utils.checkpoint`: the same ops on the same inputs under the same autocast) gives bit-identical losses and
    weights (tests/tasks/evaluation/test_eval_memory.py); a step costs one more forward pass. Off again on exit,
    input-gradient hook included, so the model scores as before."""
    model.activation_checkpointing_enable({"use_reentrant": False})
    try:
        yield
    finally:
        model.activation_checkpointing_disable()
        model.disable_input_require_grads()


def set_top_k(moe: MoEModel, top_k: int) -> None:
    """Change the number of active experts in place (the k-sweep)."""
    if not 1 <= top_k <= moe.config.num_experts:
        raise ValueError(f"top_k {top_k} must be in 1..{moe.config.num_experts}")
    moe.config.num_experts_per_tok = top_k
    for layer in moe.model.layers:
        layer.mlp.gate.top_k = top_k
