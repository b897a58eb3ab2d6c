"""Invariant 4, exact opt-out: for every expert subset of a 4-expert model, slicing == -inf masking == never merged."""

from __future__ import annotations

import itertools

import pytest
import torch

from model.coordinated import CoordinatedExpertModel
from model.merge import merge_experts
from model.optout import keep_experts, masked_experts
from tests.model.conftest import random_row


@pytest.fixture
def experts(public_model, batch):
    """Three owners' experts, each trained a few steps so no two are alike."""
    r_pub = random_row(0)
    trained = []
    for owner in range(3):
        coordinated = CoordinatedExpertModel.from_public(public_model, r_pub, random_row(10 + owner), bias_init=-0.5)
        optimizer = torch.optim.AdamW(coordinated.trainable_parameters(), lr=3e-2)
        for _ in range(3):
            optimizer.zero_grad()
            coordinated(batch.roll(owner, dims=1)).loss.backward()
            optimizer.step()
        trained.append(coordinated.expert_state())
    return r_pub, trained


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("top_k", [2, 3])
def test_every_subset_slice_equals_mask_equals_never_merged(public_model, batch, experts, top_k) -> None:
    r_pub, trained = experts
    moe = merge_experts(public_model, r_pub, trained, top_k=top_k)
    for size in range(0, 4):
        for kept_owners in itertools.combinations(range(3), size):
            keep = [0] + [o + 1 for o in kept_owners]
            drop = [e for e in range(4) if e not in keep]
            k = min(top_k, len(keep))
            sliced = _logits(keep_experts(moe, keep), batch)
            with masked_experts(moe, drop):
                masked = _logits(moe, batch)
            never = _logits(merge_experts(public_model, r_pub, [trained[o] for o in kept_owners], top_k=k), batch)
            assert (sliced - never).abs().max() < 1e-5, (keep, "slice vs never merged")
            assert (masked - never).abs().max() < 1e-5, (keep, "mask vs never merged")
    # the mask is gone after the block: the full model is back
    assert torch.equal(_logits(moe, batch), _logits(merge_experts(public_model, r_pub, trained, top_k=top_k), batch))


def test_removing_an_expert_changes_the_output(public_model, batch, experts) -> None:
    r_pub, trained = experts
    moe = merge_experts(public_model, r_pub, trained, top_k=4)
    assert (_logits(moe, batch) - _logits(keep_experts(moe, [0, 1, 2]), batch)).abs().max() > 1e-4


def test_bad_indices_are_refused(public_model, experts) -> None:
    r_pub, trained = experts
    moe = merge_experts(public_model, r_pub, trained)
    with pytest.raises(ValueError, match="out of range"):
        keep_experts(moe, [0, 7])
    with pytest.raises(ValueError, match="at least one expert"):
        with masked_experts(moe, [0, 1, 2, 3]):
            pass
