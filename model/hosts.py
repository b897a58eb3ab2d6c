"""Which transformers MoE class hosts FlexOlmo around a given dense public model (M_pub), and building it.

FlexOlmo keeps every non-FFN tensor of M_pub (embeddings, attention, norms, LM head) and swaps each layer's FFN for an
MoE whose router is a bias-free matrix of rows [r_pub; r_1..r_n]: softmax over all router logits (fp32), top-k of
those probabilities, no renormalisation. Experts are SwiGLU FFNs shaped like M_pub's. The MoE must load with plain
transformers, so it has to be a class transformers ships:

- OLMo-2 (`Olmo2ForCausalLM`) -> `FlexOlmoForCausalLM`, the paper's own architecture (post-norm block, QK-norm), built
  by `model.config.flexolmo_config`.
- The Llama family (`LlamaForCausalLM`; `MistralForCausalLM` without a sliding window; `Qwen2ForCausalLM` without a
  sliding window) -> `Qwen2MoeForCausalLM`, which has their block exactly: pre-norm RMSNorm, RoPE of any type
  transformers knows (the anchor's `rope_parameters` copied), grouped-query attention with q/k/v bias exactly when
  `qkv_bias` (False for Llama and Mistral, True for Qwen2) and none on o, the same embedding tying. Its MoE block reads
  the FFN's input (the post-attention norm's output, as M_pub's FFN does); its router `gate` is a bias-free (E, d)
  matrix, softmax in fp32 over all experts, top-k, renormalised only under `norm_topk_prob` (set False): FlexOlmo's
  routing. `moe_intermediate_size` is M_pub's FFN width; `decoder_sparse_step=1` and `mlp_only_layers=[]` make every
  layer an MoE layer. Its one extra part, the shared expert, is built with width 0
  (`shared_expert_intermediate_size=0`): its down projection maps an empty vector, so it returns exact zeros and
  sigmoid(shared_expert_gate(h)) * 0 adds exactly 0 to every layer. Its gate is zeroed so a saved MoE is the same
  bytes every time. `tests/model/test_hosts.py` proves the mapping on tiny random models.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import (
    FlexOlmoConfig,
    FlexOlmoForCausalLM,
    LlamaForCausalLM,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    PretrainedConfig,
    Qwen2ForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
)
from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoSparseMoeBlock
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock

from model.config import EXPERTS_IMPLEMENTATION, default_top_k, flexolmo_config, ids_of, sizes_of

DenseModel = Olmo2ForCausalLM | LlamaForCausalLM | MistralForCausalLM | Qwen2ForCausalLM
MoEModel = FlexOlmoForCausalLM | Qwen2MoeForCausalLM
MoEBlock = FlexOlmoSparseMoeBlock | Qwen2MoeSparseMoeBlock

FLEX_OLMO, QWEN2_MOE = "flex_olmo", "qwen2_moe"
# dense model_type -> the MoE model_type that hosts it
HOSTS = {"olmo2": FLEX_OLMO, "llama": QWEN2_MOE, "mistral": QWEN2_MOE, "qwen2": QWEN2_MOE}
MOE_CLASSES: dict[str, type[MoEModel]] = {FLEX_OLMO: FlexOlmoForCausalLM, QWEN2_MOE: Qwen2MoeForCausalLM}


class UnsupportedModel(ValueError):
    """A dense model no FlexOlmo host class can represent exactly."""


def host_of(config: PretrainedConfig) -> str:
    """The MoE model_type hosting a dense config; UnsupportedModel naming what does not fit."""
    model_type = config.model_type
    if model_type not in HOSTS:
        raise UnsupportedModel(
            f"model_type '{model_type}' has no FlexOlmo host; supported dense models: {sorted(HOSTS)}"
        )
    problems = _misfits(config)
    if problems:
        raise UnsupportedModel(f"this {model_type} model cannot be hosted exactly: {'; '.join(problems)}")
    return HOSTS[model_type]


def _misfits(config: PretrainedConfig) -> list[str]:
    """What of a Llama-family config `Qwen2MoeForCausalLM` would compute differently."""
    if config.model_type == "olmo2":
        return []
    problems = []
    if getattr(config, "mlp_bias", False):
        problems.append("its FFN has biases (mlp_bias)")
    if getattr(config, "attention_bias", False):
        problems.append("its attention output projection has a bias (attention_bias)")
    if getattr(config, "sliding_window", None) is not None and config.model_type == "mistral":
        problems.append(f"sliding-window attention ({config.sliding_window}); set sliding_window null if unused")
    if getattr(config, "use_sliding_window", False):
        problems.append("sliding-window attention (use_sliding_window)")
    if config.hidden_act != "silu":
        problems.append(f"FFN activation {config.hidden_act} (FlexOlmo's experts are SwiGLU)")
    return problems


def moe_config(dense: PretrainedConfig, num_experts: int, top_k: int | None = None) -> FlexOlmoConfig | Qwen2MoeConfig:
    """The config of an MoE of `num_experts` experts around a dense model with config `dense`: FlexOlmo's routing
    (softmax before top-k, no renormalisation, no load-balancing loss); top_k defaults to about half the experts."""
    host_of(dense)  # refuses what no host represents exactly
    if isinstance(dense, Olmo2Config):
        return flexolmo_config(sizes_of(dense), ids_of(dense), num_experts, top_k)
    k = default_top_k(num_experts) if top_k is None else top_k
    if not 1 <= k <= num_experts:
        raise ValueError(f"top_k ({k}) must be between 1 and the number of experts ({num_experts})")
    # keywords that reach PreTrainedConfig through Qwen2MoeConfig's **kwargs (not fields of its own)
    extra: dict[str, Any] = {
        "head_dim": getattr(dense, "head_dim", None) or dense.hidden_size // dense.num_attention_heads,
        "experts_implementation": EXPERTS_IMPLEMENTATION,
    }
    return Qwen2MoeConfig(
        vocab_size=dense.vocab_size,
        hidden_size=dense.hidden_size,
        intermediate_size=dense.intermediate_size,
        moe_intermediate_size=dense.intermediate_size,
        shared_expert_intermediate_size=0,
        num_hidden_layers=dense.num_hidden_layers,
        num_attention_heads=dense.num_attention_heads,
        num_key_value_heads=dense.num_key_value_heads or dense.num_attention_heads,
        hidden_act=dense.hidden_act,
        max_position_embeddings=dense.max_position_embeddings,
        initializer_range=dense.initializer_range,
        rms_norm_eps=dense.rms_norm_eps,
        tie_word_embeddings=dense.tie_word_embeddings,
        rope_parameters=copy.deepcopy(dense.rope_parameters),
        use_sliding_window=False,
        attention_dropout=dense.attention_dropout,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        qkv_bias=dense.model_type == "qwen2",
        num_experts=num_experts,
        num_experts_per_tok=k,
        norm_topk_prob=False,
        output_router_logits=False,
        router_aux_loss_coef=0.0,
        pad_token_id=dense.pad_token_id,
        bos_token_id=dense.bos_token_id,
        eos_token_id=dense.eos_token_id,
        **extra,
    )


def resized_config(config: FlexOlmoConfig | Qwen2MoeConfig, num_experts: int, top_k: int) -> Any:
    """The same MoE's config with another number of experts and top-k (opt-out by slicing)."""
    if isinstance(config, FlexOlmoConfig):
        return flexolmo_config(sizes_of(config), ids_of(config), num_experts, top_k)
    if not 1 <= top_k <= num_experts:
        raise ValueError(f"top_k ({top_k}) must be between 1 and the number of experts ({num_experts})")
    resized = copy.deepcopy(config)
    resized.num_experts, resized.num_experts_per_tok = num_experts, top_k
    return resized


def new_moe(config: FlexOlmoConfig | Qwen2MoeConfig) -> MoEModel:
    """An MoE of `config`'s class whose router and experts the caller fills; a Qwen2-MoE's shared expert is empty and
    its gate zeroed, so it adds exactly 0 and the saved bytes do not depend on the random initialisation."""
    if isinstance(config, FlexOlmoConfig):
        return FlexOlmoForCausalLM(config)
    if not isinstance(config, Qwen2MoeConfig):
        raise UnsupportedModel(f"model_type '{config.model_type}' is not a FlexOlmo host MoE ({sorted(MOE_CLASSES)})")
    if config.shared_expert_intermediate_size != 0:
        raise UnsupportedModel("a Qwen2-MoE host must have shared_expert_intermediate_size=0 (no shared expert)")
    with quiet_empty_init():
        moe = Qwen2MoeForCausalLM(config)
    with torch.no_grad():
        for layer in moe.model.layers:
            layer.mlp.shared_expert_gate.weight.zero_()
    return moe


@contextmanager
def quiet_empty_init() -> Iterator[None]:
    """Building a Qwen2-MoE host initialises its empty shared expert, a no-op torch warns about once per layer."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
        yield


def check_moe(model: Any) -> MoEModel:
    """`model` if it is a FlexOlmo MoE (a loaded directory can hold any class); UnsupportedModel otherwise."""
    if not isinstance(model, (FlexOlmoForCausalLM, Qwen2MoeForCausalLM)):
        raise UnsupportedModel(f"{type(model).__name__} is not a FlexOlmo MoE ({sorted(MOE_CLASSES)})")
    config = model.config
    if isinstance(model, Qwen2MoeForCausalLM) and (
        config.shared_expert_intermediate_size != 0 or config.norm_topk_prob
    ):
        raise UnsupportedModel("this Qwen2-MoE has a shared expert or renormalises top-k: not a FlexOlmo MoE")
    return model
