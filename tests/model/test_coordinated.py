"""Invariants 2 and 3: the coordination start state is M_pub; frozen means frozen; the merge is the trained mixture."""

from __future__ import annotations

import pytest
import torch

from model.config import flexolmo_config
from model.coordinated import CoordinatedExpertModel
from model.merge import merge_experts
from tests.model.conftest import random_row


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_public_config_has_flexolmo_conventions(public_model) -> None:
    config = public_model.config
    assert config.rms_norm_eps == 1e-6 and config.rope_parameters["rope_theta"] == 500_000.0
    assert not config.tie_word_embeddings and not config.attention_bias
    assert public_model.lm_head.weight.data_ptr() != public_model.model.embed_tokens.weight.data_ptr()


def test_one_expert_flexolmo_equals_dense(public_model, batch) -> None:
    moe = merge_experts(public_model, random_row(0), experts=[], top_k=1)
    assert moe.config.num_experts == 1
    assert torch.allclose(_logits(moe, batch), _logits(public_model, batch), atol=1e-5, rtol=0)


def test_two_expert_start_state_equals_dense(public_model, batch) -> None:
    coordinated = CoordinatedExpertModel.from_public(public_model, random_row(0), random_row(1), bias_init=-0.5).eval()
    reference = _logits(public_model, batch)
    with torch.no_grad():
        start = coordinated(batch).logits
    assert (start - reference).abs().max() < 1e-5
    # the same start state merged into transformers' FlexOlmo, top-2 of 2
    merged = merge_experts(public_model, random_row(0), [coordinated.expert_state()], top_k=2)
    assert (_logits(merged, batch) - reference).abs().max() < 1e-5


def test_top1_start_state_is_not_dense(public_model, batch) -> None:
    """Why top-2 of 2: with top-1 the single top probability is < 1 and the output shrinks."""
    coordinated = CoordinatedExpertModel.from_public(public_model, random_row(0), random_row(1), bias_init=None)
    merged = merge_experts(public_model, random_row(0), [coordinated.expert_state()], top_k=1)
    assert (_logits(merged, batch) - _logits(public_model, batch)).abs().max() > 1e-3


def _train(coordinated: CoordinatedExpertModel, batch: torch.Tensor, steps: int = 5) -> None:
    optimizer = torch.optim.AdamW(coordinated.trainable_parameters(), lr=1e-2, weight_decay=0.0)
    coordinated.train()
    for _ in range(steps):
        output = coordinated(batch)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    coordinated.eval()


def test_only_expert_side_trains_and_frozen_stays_bit_identical(public_model, batch) -> None:
    r_pub, r_i = random_row(0), random_row(1)
    coordinated = CoordinatedExpertModel.from_public(public_model, r_pub, r_i, bias_init=-0.5)
    trainable = {n for n, p in coordinated.named_parameters() if p.requires_grad}
    assert trainable and all(("ffn_expert" in n) or n.endswith(("router_expert", "bias_theta")) for n in trainable)
    before = coordinated.expert_state()
    _train(coordinated, batch)
    coordinated.assert_frozen_unchanged(public_model, r_pub)  # raises on any drift
    after = coordinated.expert_state()
    for layer in range(public_model.config.num_hidden_layers):
        assert not torch.equal(after[f"layers.{layer}.gate_proj.weight"], before[f"layers.{layer}.gate_proj.weight"])
        assert not torch.equal(after[f"layers.{layer}.router"], before[f"layers.{layer}.router"])
        assert after[f"layers.{layer}.bias"].item() < 0
        assert torch.equal(after[f"layers.{layer}.router_public"], r_pub)


def test_losses_are_ce_plus_weighted_z_losses(public_model, batch) -> None:
    coordinated = CoordinatedExpertModel.from_public(
        public_model, random_row(0), random_row(1), lm_z_weight=1e-5, router_z_weight=1e-3
    )
    out = coordinated(batch)
    assert torch.allclose(out.loss, out.ce + 1e-5 * out.lm_z + 1e-3 * out.router_z)
    assert out.router_z > 0 and out.lm_z > 0


def test_trained_bias_free_expert_merges_to_the_same_function(public_model, batch) -> None:
    """The merged 2-expert FlexOlmoForCausalLM (top-2) computes exactly what the owner trained (bias-free variant)."""
    r_pub = random_row(0)
    coordinated = CoordinatedExpertModel.from_public(public_model, r_pub, random_row(1), bias_init=None)
    _train(coordinated, batch)
    with torch.no_grad():
        trained = coordinated(batch).logits
    merged = merge_experts(public_model, r_pub, [coordinated.expert_state()], top_k=2)
    assert (_logits(merged, batch) - trained).abs().max() < 1e-5


def test_merge_refuses_expert_trained_against_other_public_row(public_model) -> None:
    import pytest

    from model.merge import MergeError

    expert = CoordinatedExpertModel.from_public(public_model, random_row(0), random_row(1)).expert_state()
    with pytest.raises(MergeError, match="public router row"):
        merge_experts(public_model, random_row(5), [expert])


def test_flexolmo_config_defaults_top_k_to_about_half() -> None:
    from tests.model.conftest import IDS, SIZES

    assert flexolmo_config(SIZES, IDS, num_experts=8).num_experts_per_tok == 4
    assert flexolmo_config(SIZES, IDS, num_experts=8).norm_topk_prob is False


def test_diagnostics_report_router_mass_bias_and_update_norm_per_layer(public_model, batch) -> None:
    """At the start FFN_i is FFN_pub (update 0) and the router mass is the softmax of the layer's input against
    [r_pub; r_i + b]; after training FFN_i has moved, and `coordinated_loss` reports the diagnostics in evaluation."""
    from model.training import coordinated_loss

    coordinated = CoordinatedExpertModel.from_public(public_model, random_row(0), random_row(1), bias_init=-0.5).eval()
    inputs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: inputs.append(i[0])) for b in coordinated.moe_blocks]
    with torch.no_grad():
        coordinated(batch)
    for hook in hooks:
        hook.remove()
    start = coordinated.diagnostics()
    for layer, (block, hidden) in enumerate(zip(coordinated.moe_blocks, inputs, strict=True)):
        logits = torch.stack([hidden @ block.router_public, hidden @ block.router_expert - 0.5], dim=-1)
        expected = torch.softmax(logits.float(), dim=-1)[..., 1].mean()
        assert torch.allclose(start[f"router_mass_l{layer}"], expected, atol=1e-6)
        assert float(start[f"bias_l{layer}"]) == pytest.approx(-0.5)
        assert float(start[f"ffn_update_l{layer}"]) == 0.0
    _train(coordinated, batch)
    with torch.no_grad():
        reported = coordinated_loss(coordinated, batch)
    layers = len(coordinated.moe_blocks)
    assert all(float(reported[f"ffn_update_l{i}"]) > 0 for i in range(layers))
    assert all(0 < float(reported[f"router_mass_l{i}"]) < 1 for i in range(layers))
    coordinated.train()
    assert "router_mass_l0" not in coordinated_loss(coordinated, batch)  # training steps stay as they were
