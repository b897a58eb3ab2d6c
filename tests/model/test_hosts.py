"""A Llama-family M_pub hosted by `Qwen2MoeForCausalLM` keeps FlexOlmo's invariants exactly, as the OLMo-2 one does in
`FlexOlmoForCausalLM`: the coordination start state is M_pub, frozen tensors stay bit-identical, opt-out is exact for
every subset, and the merged MoE round-trips through plain transformers."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2MoeForCausalLM,
)

from model.attribution import expert_attribution
from model.baselines import upcycle
from model.config import EXPERTS_IMPLEMENTATION
from model.coordinated import CoordinatedExpertModel
from model.export import export_pretrained
from model.hosts import UnsupportedModel, host_of, moe_config, quiet_empty_init
from model.merge import merge_experts
from model.optout import keep_experts, masked_experts
from model.public import load_moe, load_public_model

HIDDEN = 32
COMMON = dict(
    vocab_size=96,
    hidden_size=HIDDEN,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention, as SmolLM2 (9 heads, 3 key/value)
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    rope_parameters={"rope_type": "default", "rope_theta": 10_000.0},
    tie_word_embeddings=True,  # as SmolLM2
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)
FAMILIES = {
    # head_dim 16 differs from hidden/heads = 8: the host must take the anchor's, not recompute it
    "llama": lambda: LlamaForCausalLM(LlamaConfig(**COMMON, head_dim=16)),
    "mistral": lambda: MistralForCausalLM(MistralConfig(**COMMON, sliding_window=None)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(**COMMON)),  # q/k/v biases
}


def _dense(family: str) -> torch.nn.Module:
    """A tiny random dense model with non-trivial norms and biases (catches copying the wrong tensor)."""
    torch.manual_seed(0)
    model = FAMILIES[family]()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
    return model.float().eval()


@pytest.fixture
def llama() -> LlamaForCausalLM:
    return _dense("llama")


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(3, 96, (3, 16), generator=torch.Generator().manual_seed(2))


def _row(seed: int) -> torch.Tensor:
    return torch.randn(HIDDEN, generator=torch.Generator().manual_seed(seed)) * 0.3


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _trained_experts(public: torch.nn.Module, batch: torch.Tensor, owners: int = 3):
    """`owners` experts, each trained a few steps on its own shifted batch so no two are alike."""
    r_pub = _row(0)
    states = []
    for owner in range(owners):
        coordinated = CoordinatedExpertModel.from_public(public, r_pub, _row(10 + owner), bias_init=-0.5)
        optimizer = torch.optim.AdamW(coordinated.trainable_parameters(), lr=3e-2, weight_decay=0.0)
        for _ in range(3):
            optimizer.zero_grad()
            coordinated(batch.roll(owner, dims=1)).loss.backward()
            optimizer.step()
        coordinated.assert_frozen_unchanged(public, r_pub)  # raises on any drift of M_pub's tensors
        states.append(coordinated.expert_state())
    return r_pub, states


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_start_state_equals_the_dense_model(family: str, batch: torch.Tensor) -> None:
    """The 2-expert model with FFN_1 = FFN_pub computes M_pub, in training and merged into the host MoE (top-2)."""
    dense = _dense(family)
    coordinated = CoordinatedExpertModel.from_public(dense, _row(0), _row(1), bias_init=-0.5).eval()
    reference = _logits(dense, batch)
    with torch.no_grad():
        assert (coordinated(batch).logits - reference).abs().max() < 1e-5
    merged = merge_experts(dense, _row(0), [coordinated.expert_state()], top_k=2)
    assert isinstance(merged, Qwen2MoeForCausalLM)
    assert (_logits(merged, batch) - reference).abs().max() < 1e-5
    one = merge_experts(dense, _row(0), [], top_k=1)  # M_pub alone: probability 1 on FFN_pub
    assert (_logits(one, batch) - reference).abs().max() < 1e-5


def test_host_config_is_flexolmo_routing(llama: LlamaForCausalLM, batch: torch.Tensor) -> None:
    config = moe_config(llama.config, num_experts=4)
    assert config.model_type == "qwen2_moe" and config.num_experts_per_tok == 2  # about half, as FlexOlmo
    assert config.norm_topk_prob is False and config.router_aux_loss_coef == 0.0 and not config.output_router_logits
    assert config.qkv_bias is False and config.decoder_sparse_step == 1 and config.mlp_only_layers == []
    assert config.moe_intermediate_size == llama.config.intermediate_size and config.head_dim == 16
    assert config.tie_word_embeddings and config.rope_parameters == llama.config.rope_parameters
    assert config._experts_implementation == EXPERTS_IMPLEMENTATION
    moe = merge_experts(llama, _row(0), _trained_experts(llama, batch, owners=1)[1], top_k=1)
    for layer in moe.model.layers:
        block = layer.mlp
        assert [name for name, _ in block.gate.named_parameters()] == ["weight"]  # a bias-free router
        assert block.shared_expert.down_proj.weight.numel() == 0
        assert torch.equal(block.shared_expert_gate.weight, torch.zeros_like(block.shared_expert_gate.weight))
        hidden = torch.randn(5, HIDDEN)
        assert torch.equal(block.shared_expert(hidden), torch.zeros(5, HIDDEN))  # adds exactly 0


def test_frozen_tensors_are_bit_identical_in_the_merged_moe(llama: LlamaForCausalLM, batch: torch.Tensor) -> None:
    r_pub, states = _trained_experts(llama, batch)
    moe = merge_experts(llama, r_pub, states, top_k=2)
    moe_state = moe.state_dict()
    for key, tensor in llama.state_dict().items():
        if ".mlp." not in key:
            assert torch.equal(moe_state[key], tensor), key
    for index, layer in enumerate(llama.model.layers):
        block = moe.model.layers[index].mlp
        gate, up = block.experts.gate_up_proj[0].chunk(2, dim=0)
        assert torch.equal(gate, layer.mlp.gate_proj.weight) and torch.equal(up, layer.mlp.up_proj.weight)
        assert torch.equal(block.experts.down_proj[0], layer.mlp.down_proj.weight)
        assert torch.equal(block.gate.weight[0], r_pub)


def test_every_subset_slice_equals_mask_equals_never_merged(llama: LlamaForCausalLM, batch: torch.Tensor) -> None:
    """top-3 of 4: slicing to fewer experts also lowers k (min(3, kept)), as `keep_experts` does."""
    top_k = 3
    r_pub, trained = _trained_experts(llama, batch)
    moe = merge_experts(llama, r_pub, trained, top_k=top_k)
    for size in range(0, 4):
        for kept_owners in itertools.combinations(range(3), size):
            keep = [0] + [o + 1 for o in kept_owners]
            drop = [e for e in range(4) if e not in keep]
            k = min(top_k, len(keep))
            sliced = _logits(keep_experts(moe, keep), batch)
            with masked_experts(moe, drop):
                masked = _logits(moe, batch)
            never = _logits(merge_experts(llama, r_pub, [trained[o] for o in kept_owners], top_k=k), batch)
            assert (sliced - never).abs().max() < 1e-5, (keep, "slice vs never merged")
            assert (masked - never).abs().max() < 1e-5, (keep, "mask vs never merged")
    assert (_logits(moe, batch) - _logits(keep_experts(moe, [0, 1, 2]), batch)).abs().max() > 1e-4
    with masked_experts(moe, [2]):
        assert expert_attribution(moe, batch)[:, 2].abs().max() == 0


def test_export_round_trip_through_plain_transformers(llama: LlamaForCausalLM, batch: torch.Tensor, tmp_path) -> None:
    r_pub, states = _trained_experts(llama, batch, owners=2)
    moe = merge_experts(llama, r_pub, states, top_k=2)
    first = export_pretrained(moe, tmp_path / "moe")
    assert export_pretrained(merge_experts(llama, r_pub, states, top_k=2), tmp_path / "again") == first  # same bytes
    with quiet_empty_init():
        plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "moe"), local_files_only=True).eval()
    assert isinstance(plain, Qwen2MoeForCausalLM)
    assert torch.equal(_logits(plain, batch), _logits(moe, batch))
    assert torch.equal(_logits(load_moe(str(tmp_path / "moe")), batch), _logits(moe, batch))
    export_pretrained(llama, tmp_path / "public")
    public = load_public_model(str(tmp_path / "public"))
    assert isinstance(public, LlamaForCausalLM) and torch.equal(_logits(public, batch), _logits(llama, batch))


def test_upcycled_baseline_is_hosted_too(llama: LlamaForCausalLM, batch: torch.Tensor) -> None:
    """The unrestricted MoE's start (n identical copies of FFN_pub) computes M_pub, whatever the router rows."""
    moe = upcycle(llama, 3, torch.stack([_row(s) for s in range(3)]), top_k=3)
    assert (_logits(moe, batch) - _logits(llama, batch)).abs().max() < 1e-5


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (LlamaConfig(**COMMON, mlp_bias=True), "mlp_bias"),
        (LlamaConfig(**COMMON, attention_bias=True), "attention_bias"),
        (MistralConfig(**COMMON, sliding_window=16), "sliding"),
        (LlamaConfig(**COMMON, hidden_act="gelu"), "activation"),
    ],
)
def test_a_model_the_host_cannot_represent_is_refused(config, reason: str) -> None:
    with pytest.raises(UnsupportedModel, match=reason):
        host_of(config)
