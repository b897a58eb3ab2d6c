"""The public model M_pub: a dense OLMo-2 `Olmo2ForCausalLM` built from the profile's sizes."""

from __future__ import annotations

import torch
from transformers import Olmo2ForCausalLM

from model.config import ModelSizes, TokenizerIds, olmo2_config


def build_public_model(sizes: ModelSizes, ids: TokenizerIds, seed: int) -> Olmo2ForCausalLM:
    """A freshly initialised M_pub (fp32). The seed makes the initialisation reproducible."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Olmo2ForCausalLM(olmo2_config(sizes, ids))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.float()


def load_public_model(model_dir: str) -> Olmo2ForCausalLM:
    """Load a saved M_pub from a `save_pretrained` directory (safetensors only, offline)."""
    return Olmo2ForCausalLM.from_pretrained(model_dir, use_safetensors=True, local_files_only=True).float()
