"""Model sizes and the transformers configs built from them, with FlexOlmo's conventions set explicitly.

Why explicit: `Olmo2Config`'s defaults differ from FlexOlmo's (rms_norm_eps 1e-5 vs 1e-6, RoPE theta 1e4 vs 5e5, pad/eos
ids), and a dense model that is later upcycled into `FlexOlmoForCausalLM` must match it field for field or the 1-expert
model would not equal M_pub.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from transformers import FlexOlmoConfig, Olmo2Config

from model.experts import BUCKETED


@dataclass(frozen=True)
class ModelSizes:
    """The sizes of the OLMo-2-style model (mirrors `tasks.core.config.ModelConfig`)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_seq_len: int
    rope_theta: float = 500_000.0
    rms_norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")

    @classmethod
    def from_mapping(cls, values: Any) -> ModelSizes:
        """Build from any mapping or pydantic model with the same field names."""
        data = values.model_dump() if hasattr(values, "model_dump") else dict(values)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


@dataclass(frozen=True)
class TokenizerIds:
    """Special token ids the model config must agree with (from the trained tokenizer)."""

    pad_token_id: int
    eos_token_id: int
    bos_token_id: int | None = None


def _shared_fields(sizes: ModelSizes, ids: TokenizerIds) -> dict[str, Any]:
    """Fields identical in the dense and the MoE config: post-norm OLMo-2 block, QK-norm, untied, no attention bias."""
    return dict(
        vocab_size=sizes.vocab_size,
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers,
        num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_heads,  # MHA, as OLMo-2 7B
        hidden_act="silu",
        max_position_embeddings=sizes.max_seq_len,
        initializer_range=sizes.init_std,
        rms_norm_eps=sizes.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": sizes.rope_theta},
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        pad_token_id=ids.pad_token_id,
        eos_token_id=ids.eos_token_id,
        bos_token_id=ids.bos_token_id,
    )


def olmo2_config(sizes: ModelSizes, ids: TokenizerIds) -> Olmo2Config:
    """The dense public model's config."""
    return Olmo2Config(**_shared_fields(sizes, ids))


def default_top_k(num_experts: int) -> int:
    """About half the experts, as the paper (4 of 8); at least 1."""
    return max(1, round(num_experts / 2))


# transformers' default `grouped_mm` experts are not autocast-enabled: they cast the input up to the fp32 weights, so
# under bf16 autocast the experts (most of an MoE's FLOPs) stayed fp32 and the pass got slower. The eager loop runs the
# active experts as plain linears, which autocast lowers to bf16; flexo's variant of it pads each expert's rows to a
# bucket so oneDNN's bf16 kernels are reused across batches (`model.experts`; benchmarks/RESULTS.md).
EXPERTS_IMPLEMENTATION = BUCKETED
# a PreTrainedConfig keyword that reaches it through FlexOlmoConfig's **kwargs (it is not one of the config's fields)
_EXPERTS_KEYWORD: dict[str, Any] = {"experts_implementation": EXPERTS_IMPLEMENTATION}


def flexolmo_config(sizes: ModelSizes, ids: TokenizerIds, num_experts: int, top_k: int | None = None) -> FlexOlmoConfig:
    """The merged MoE's config: softmax before top-k, no renormalisation, no load-balancing loss."""
    k = default_top_k(num_experts) if top_k is None else top_k
    if not 1 <= k <= num_experts:
        raise ValueError(f"top_k ({k}) must be between 1 and the number of experts ({num_experts})")
    return FlexOlmoConfig(
        **_shared_fields(sizes, ids),
        num_experts=num_experts,
        num_experts_per_tok=k,
        norm_topk_prob=False,
        output_router_logits=False,
        router_aux_loss_coef=0.0,
        **_EXPERTS_KEYWORD,
    )


def sizes_of(config: Olmo2Config | FlexOlmoConfig) -> ModelSizes:
    """Recover the sizes from a loaded config (e.g. a saved M_pub)."""
    theta = config.rope_parameters.get("rope_theta") if config.rope_parameters is not None else None
    if theta is None:
        raise ValueError("the config has no rope_parameters.rope_theta: not one built by model.config")
    return ModelSizes(
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_seq_len=config.max_position_embeddings,
        rope_theta=float(theta),
        rms_norm_eps=config.rms_norm_eps,
        init_std=config.initializer_range,
    )


def ids_of(config: Olmo2Config | FlexOlmoConfig) -> TokenizerIds:
    pad, eos = config.pad_token_id, config.eos_token_id
    if not isinstance(pad, int) or not isinstance(eos, int):
        raise ValueError(f"the config needs one pad and one eos token id, it has pad={pad!r}, eos={eos!r}")
    return TokenizerIds(pad, eos, config.bos_token_id)


def as_dict(sizes: ModelSizes) -> dict[str, Any]:
    return asdict(sizes)
