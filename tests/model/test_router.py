"""Router rows from M_pub's own hidden states (the paper's "Public" init): what the pooling promises."""

from __future__ import annotations

import torch

from model.router import hidden_state_embedding


def test_hidden_state_embedding_is_pad_invariant_and_a_mean_of_unit_vectors(public_model, batch):
    ones = torch.ones_like(batch)
    alone = [
        hidden_state_embedding(public_model, [(batch[i : i + 1, :n], ones[i : i + 1, :n])])
        for i, n in enumerate((16, 9, 5))
    ]
    padded_ids, mask = batch.clone(), ones.clone()
    for i, n in enumerate((16, 9, 5)):
        padded_ids[i, n:], mask[i, n:] = 0, 0
    together = hidden_state_embedding(public_model, [(padded_ids, mask)])
    split = hidden_state_embedding(public_model, [(padded_ids[:1], mask[:1]), (padded_ids[1:], mask[1:])])
    assert torch.allclose(together, torch.stack(alone).mean(dim=0), atol=1e-5)  # padding changes nothing
    assert torch.allclose(together, split, atol=1e-6)  # batching changes nothing
    for row in alone:
        assert abs(float(row.norm()) - 1.0) < 1e-5  # each document contributes a unit vector
    assert together.shape == (public_model.config.hidden_size,) and float(together.norm()) < 1.0
