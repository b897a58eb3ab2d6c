"""Tiny real models for the model-core tests (fp32, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from model.config import ModelSizes, TokenizerIds
from model.public import build_public_model

SIZES = ModelSizes(vocab_size=96, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, max_seq_len=32)
IDS = TokenizerIds(pad_token_id=0, eos_token_id=1)


@pytest.fixture
def public_model():
    model = build_public_model(SIZES, IDS, seed=0)
    # A non-trivial M_pub: random norms so no tensor is at its init value (catches copying the wrong tensor).
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(2, SIZES.vocab_size, (3, 16), generator=torch.Generator().manual_seed(2))


def random_row(seed: int) -> torch.Tensor:
    return torch.randn(SIZES.hidden_size, generator=torch.Generator().manual_seed(seed)) * 0.3
