"""Coordinated expert training: the 2-expert mixture [FFN_pub frozen, FFN_i trainable] each data owner trains locally.

Built from M_pub (`Olmo2ForCausalLM`, or a Llama-family model `model.hosts` can host): every layer's dense FFN is
replaced by a `CoordinatedMoE` whose two experts start as exact copies of M_pub's FFN and whose router rows are
[r_pub; r_i]. Every token uses both experts (top-2 of 2): the router is softmax over both logits, no renormalisation,
so at step 0 the model computes M_pub exactly.

Only FFN_i, r_i and the per-layer bias b_i train. Frozen tensors are kept as separate tensors with `requires_grad=False`
(not gradient-zeroed halves of a packed tensor), so they cannot drift and need no weight gradients, and the result
merges into the host MoE (`FlexOlmoForCausalLM` for OLMo-2) by plain stacking (see `model.merge`).

The bias b_i <= 0 is parametrised as b_i = -softplus(theta_i): always non-positive with a nonzero gradient everywhere.
The paper's code clamps min(b, 0), whose gradient is 0 once b steps above 0 and the bias then freezes at 0. b_i is a
training-time device: it is exported in the expert file for the record and dropped at merge, as in the released FlexOlmo
models.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.hosts import DenseModel, host_of
from model.losses import packed_lm_losses

EXPERT_FFN_KEYS = ("gate_proj", "up_proj", "down_proj")


def _inverse_softplus(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class CoordinatedMoE(nn.Module):
    """One layer's 2-expert block: y = p_pub FFN_pub(h) + p_i FFN_i(h), (p_pub, p_i) = softmax(r_pub.h, r_i.h + b_i)."""

    def __init__(
        self, ffn_public: nn.Module, r_pub: torch.Tensor, r_expert: torch.Tensor, bias_init: float | None
    ) -> None:
        super().__init__()
        self.ffn_public = ffn_public
        self.ffn_expert = copy.deepcopy(ffn_public)
        for parameter in self.ffn_public.parameters():
            parameter.requires_grad_(False)
        for parameter in self.ffn_expert.parameters():
            parameter.requires_grad_(True)
        self.router_public = nn.Parameter(r_pub.detach().clone().float(), requires_grad=False)
        self.router_expert = nn.Parameter(r_expert.detach().clone().float())
        if bias_init is None:
            self.bias_theta = None
        else:
            if bias_init >= 0:
                raise ValueError(f"bias_init must be negative (b_i = -softplus(theta) < 0), got {bias_init}")
            self.bias_theta = nn.Parameter(torch.tensor(_inverse_softplus(-bias_init)))
        self.last_router_logits: torch.Tensor | None = None
        self.last_expert_mass: torch.Tensor | None = None  # mean p_i over the last forward's tokens (detached)

    @property
    def bias(self) -> torch.Tensor:
        """The effective bias b_i (<= 0); zero when the model was built without one."""
        if self.bias_theta is None:
            return torch.zeros((), device=self.router_expert.device)
        return -F.softplus(self.bias_theta)

    def router_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = torch.stack([self.router_public, self.router_expert]).to(hidden.dtype)
        logits = F.linear(hidden, weight)
        if self.bias_theta is not None:
            logits = logits + torch.stack([torch.zeros_like(self.bias), self.bias]).to(hidden.dtype)
        return logits

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.router_logits(hidden)
        self.last_router_logits = logits
        probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
        self.last_expert_mass = probs[..., 1].detach().mean()
        probs = probs.to(hidden.dtype)
        return probs[..., :1] * self.ffn_public(hidden) + probs[..., 1:] * self.ffn_expert(hidden)


@dataclass
class CoordinatedOutput:
    loss: torch.Tensor  # ce + lm_z_weight * lm_z + router_z_weight * router_z
    ce: torch.Tensor
    lm_z: torch.Tensor
    router_z: torch.Tensor
    logits: torch.Tensor


def lm_z_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over tokens of logsumexp(logits)^2 (keeps the output softmax normaliser near 1)."""
    squared = torch.logsumexp(logits.float(), dim=-1).pow(2)
    if mask is None:
        return squared.mean()
    return (squared * mask).sum() / mask.sum().clamp(min=1)


def causal_lm_losses(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token cross-entropy, LM z-loss) over positions whose shifted label is not `ignore_index`."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=ignore_index
    )
    mask = (shift_labels != ignore_index).float()
    return ce, lm_z_loss(shift_logits, mask)


class CoordinatedExpertModel(nn.Module):
    """M_pub with every FFN replaced by a `CoordinatedMoE`; the owner-side training model."""

    def __init__(self, model: DenseModel, lm_z_weight: float, router_z_weight: float) -> None:
        super().__init__()
        self.model = model
        self.lm_z_weight = lm_z_weight
        self.router_z_weight = router_z_weight

    @classmethod
    def from_public(
        cls,
        public_model: DenseModel,
        r_pub: torch.Tensor,
        r_expert: torch.Tensor,
        bias_init: float | None = -0.5,
        lm_z_weight: float = 1e-5,
        router_z_weight: float = 1e-3,
    ) -> CoordinatedExpertModel:
        """Copy M_pub (the caller's model is not touched), freeze it, and insert the 2-expert blocks in every layer.

        Every layer gets the same initial rows [r_pub; r_i], as the paper's upcycler writes them. A public model no
        MoE class can host (`model.hosts.host_of`) is refused here, before any training.
        """
        host_of(public_model.config)
        hidden = public_model.config.hidden_size
        for name, row in (("r_pub", r_pub), ("r_expert", r_expert)):
            if tuple(row.shape) != (hidden,):
                raise ValueError(f"{name} must have shape ({hidden},), got {tuple(row.shape)}")
        model = copy.deepcopy(public_model)
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for layer in model.model.layers:
            layer.mlp = CoordinatedMoE(layer.mlp, r_pub, r_expert, bias_init)
        return cls(model, lm_z_weight, router_z_weight)

    @property
    def moe_blocks(self) -> list[CoordinatedMoE]:
        return [layer.mlp for layer in self.model.model.layers]

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ) -> CoordinatedOutput:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        if labels is None and attention_mask is None:  # packed training rows: every position has a label
            ce, lm_z = packed_lm_losses(logits, input_ids)
        else:
            ce, lm_z = causal_lm_losses(logits, input_ids if labels is None else labels)
        router_z = self.router_z_loss()
        loss = ce + self.lm_z_weight * lm_z + self.router_z_weight * router_z
        return CoordinatedOutput(loss=loss, ce=ce, lm_z=lm_z, router_z=router_z, logits=logits)

    def router_z_loss(self) -> torch.Tensor:
        """Sum over layers of mean over tokens of logsumexp(router logits)^2 (OLMo-core's MoERouterZLoss per layer)."""
        logits = [b.last_router_logits for b in self.moe_blocks]
        if any(layer_logits is None for layer_logits in logits):
            raise RuntimeError("the router z-loss needs the router logits of a forward pass")
        terms = [torch.logsumexp(x.float(), dim=-1).pow(2).mean() for x in logits if x is not None]
        return torch.stack(terms).sum()

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Per layer l: `router_mass_l` (mean router probability on FFN_i over the last forward's tokens), `bias_l`
        (b_i), `ffn_update_l` (||FFN_i - FFN_pub|| / ||FFN_pub|| over its three matrices: FFN_i starts as a copy of
        FFN_pub, so this is how far it has moved from its start).

        Why: the expert can only change the output through p_i * FFN_i(h); these three say whether a weak expert was
        routed too little, held down by its bias, or barely trained."""
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for index, block in enumerate(self.moe_blocks):
                if block.last_expert_mass is not None:
                    out[f"router_mass_l{index}"] = block.last_expert_mass
                out[f"bias_l{index}"] = block.bias.detach().float()
                moved = sum(
                    (getattr(block.ffn_expert, k).weight.float() - getattr(block.ffn_public, k).weight.float())
                    .pow(2)
                    .sum()
                    for k in EXPERT_FFN_KEYS
                )
                start = sum(getattr(block.ffn_public, k).weight.float().pow(2).sum() for k in EXPERT_FFN_KEYS)
                out[f"ffn_update_l{index}"] = (torch.as_tensor(moved) / torch.as_tensor(start)).sqrt()
        return out

    def expert_state(self) -> dict[str, torch.Tensor]:
        """What the owner publishes: FFN_i, r_i, b_i per layer, plus r_pub for the merge-time equality check."""
        state: dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.moe_blocks):
            for key in EXPERT_FFN_KEYS:
                state[f"layers.{index}.{key}.weight"] = (
                    getattr(block.ffn_expert, key).weight.detach().clone().contiguous()
                )
            state[f"layers.{index}.router"] = block.router_expert.detach().clone()
            state[f"layers.{index}.bias"] = block.bias.detach().clone().reshape(1)
            state[f"layers.{index}.router_public"] = block.router_public.detach().clone()
        return state

    def load_expert_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore FFN_i, r_i and b_i (e.g. to evaluate a published expert in its 2-expert training model)."""
        with torch.no_grad():
            for index, block in enumerate(self.moe_blocks):
                for key in EXPERT_FFN_KEYS:
                    getattr(block.ffn_expert, key).weight.copy_(state[f"layers.{index}.{key}.weight"])
                block.router_expert.copy_(state[f"layers.{index}.router"])
                if block.bias_theta is not None:
                    bias = float(state[f"layers.{index}.bias"].reshape(()))
                    block.bias_theta.copy_(torch.tensor(_inverse_softplus(-bias)))

    def assert_frozen_unchanged(self, public_model: DenseModel, r_pub: torch.Tensor) -> None:
        """Invariant 3: every shared tensor, FFN_pub and r_pub are bit-identical to M_pub's.

        Raises AssertionError naming the tensor."""
        public_state = public_model.state_dict()
        own_state = self.model.state_dict()
        for key, reference in public_state.items():
            own_key = key.replace(".mlp.", ".mlp.ffn_public.") if ".mlp." in key else key
            if not torch.equal(own_state[own_key], reference):
                raise AssertionError(f"frozen tensor changed during expert training: {key}")
        for index, block in enumerate(self.moe_blocks):
            if not torch.equal(block.router_public, r_pub.float()):
                raise AssertionError(f"frozen public router row changed during expert training: layer {index}")
