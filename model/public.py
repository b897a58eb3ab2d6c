"""Build and load M_pub (dense `Olmo2ForCausalLM`) and saved MoEs (`FlexOlmoForCausalLM`) as transformers classes."""

from __future__ import annotations

import torch
from transformers import FlexOlmoForCausalLM, Olmo2ForCausalLM

from model.config import EXPERTS_IMPLEMENTATION, ModelSizes, TokenizerIds, olmo2_config


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
    """Load a saved M_pub (or a dense domain model, same class) from a `save_pretrained` directory (safetensors,
    offline only)."""
    return Olmo2ForCausalLM.from_pretrained(model_dir, use_safetensors=True, local_files_only=True).float()


def load_moe(model_dir: str) -> FlexOlmoForCausalLM:
    """Load a saved FlexOlmo MoE (safetensors only, offline, fp32, eval mode) with the experts implementation that bf16
    autocast lowers (`model.config.EXPERTS_IMPLEMENTATION`), whatever the saved config says."""
    model = FlexOlmoForCausalLM.from_pretrained(
        model_dir,
        use_safetensors=True,
        local_files_only=True,
        experts_implementation=EXPERTS_IMPLEMENTATION,
    )
    return model.float().eval()
