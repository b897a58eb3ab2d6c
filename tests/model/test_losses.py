"""The packed LM losses' hand-written backward against autograd through the reference `causal_lm_losses`."""

from __future__ import annotations

import pytest
import torch

import model.losses as losses
from model.coordinated import causal_lm_losses
from model.losses import packed_lm_losses


def _logits_and_ids(dtype: torch.dtype, batch: int = 3, length: int = 9, vocab: int = 40):
    logits = (torch.randn(batch, length, vocab, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    ids = torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(1))
    return logits, ids


@pytest.mark.parametrize("block_elements", [1 << 21, 40 * 2, 40 * 3])  # one block per sequence; blocks of 2 and 3 rows
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_values_and_gradients_equal_autograd_through_the_reference(monkeypatch, dtype, block_elements) -> None:
    monkeypatch.setattr(losses, "CPU_BLOCK_ELEMENTS", block_elements)
    logits, ids = _logits_and_ids(dtype)
    ours_in = logits.clone().requires_grad_(True)
    reference_in = logits.clone().requires_grad_(True)
    ours = packed_lm_losses(ours_in, ids)
    reference = causal_lm_losses(reference_in, ids)
    for a, b in zip(ours, reference, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)
    # unequal weights on the two terms, as in ce + w * z, so each term's gradient is checked, not only their sum
    (ours[0] * 0.7 + ours[1] * 0.3).backward()
    (reference[0] * 0.7 + reference[1] * 0.3).backward()
    assert ours_in.grad.dtype == dtype and torch.all(ours_in.grad[:, -1] == 0)
    tolerance = {} if dtype == torch.float32 else {"rtol": 1e-2, "atol": 1e-4}
    torch.testing.assert_close(ours_in.grad, reference_in.grad, **tolerance)


def test_the_saved_logits_are_not_modified_by_the_backward() -> None:
    logits, ids = _logits_and_ids(torch.float32)
    leaf = logits.clone().requires_grad_(True)
    ce, z = packed_lm_losses(leaf, ids)
    (ce + z).backward()
    assert torch.equal(leaf.detach(), logits)
