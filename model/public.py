"""Build and load M_pub (a dense model FlexOlmo can host, `model.hosts`) and saved MoEs as transformers classes."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, Olmo2ForCausalLM

from model.config import EXPERTS_IMPLEMENTATION, ModelSizes, TokenizerIds, olmo2_config
from model.hosts import DenseModel, MoEModel, check_moe, host_of, quiet_empty_init


def build_public_model(sizes: ModelSizes, ids: TokenizerIds, seed: int) -> Olmo2ForCausalLM:
    """A freshly initialised M_pub (fp32). The seed makes the initialisation reproducible."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Olmo2ForCausalLM(olmo2_config(sizes, ids))
    finally:
        torch.random.set_rng_state(generator_state)
    return model.float()


def load_public_model(model_dir: str) -> DenseModel:
    """Load a saved M_pub (or a dense domain model, same class) from a `save_pretrained` directory (safetensors,
    offline only, fp32): OLMo-2, or a Llama-family model FlexOlmo can host. Any other class is refused from its config,
    before the weights are read."""
    host_of(AutoConfig.from_pretrained(model_dir, local_files_only=True))
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True, local_files_only=True)
    return model.float()


def load_moe(model_dir: str) -> MoEModel:
    """Load a saved FlexOlmo MoE (`FlexOlmoForCausalLM`, or `Qwen2MoeForCausalLM` around a Llama-family M_pub;
    safetensors only, offline, fp32, eval mode) with the experts implementation that bf16 autocast lowers
    (`model.config.EXPERTS_IMPLEMENTATION`), whatever the saved config says."""
    with quiet_empty_init():
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            use_safetensors=True,
            local_files_only=True,
            experts_implementation=EXPERTS_IMPLEMENTATION,
        )
    return check_moe(model).float().eval()
