"""The one place that turns a validated Profile into the runtime objects `model/` takes.

Why one: `model/` is pure torch and knows nothing of `params.yaml`; each stage used to copy the profile's fields into
those objects itself (model sizes, training specs, DP and sampling settings, the MoE's top-k), so one setting could be
read two ways. Every stage builds them here. Each builder imports the model code it needs when called, so importing
this module stays as cheap as importing the config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks.core.config import Profile, TrainExpertConfig, TrainPublicConfig
from tasks.core.device import resolve_compile, resolve_run_precision
from tasks.core.errors import DataError

if TYPE_CHECKING:
    from model.config import ModelSizes
    from model.dp import DPSpec
    from model.extraction import SamplingSettings
    from model.training import TrainSpec


def model_sizes(profile: Profile) -> ModelSizes:
    """`model.*` as the sizes every model of the profile is built with."""
    from model.config import ModelSizes

    return ModelSizes.from_mapping(profile.model)


def moe_top_k(profile: Profile, num_experts: int) -> int:
    """Experts per token in an MoE of `num_experts`: `router.top_k`, or about half of them when it is unset."""
    from model.config import default_top_k

    return profile.router.top_k if profile.router.top_k is not None else default_top_k(num_experts)


def dp_spec(profile: Profile, enabled: bool | None = None) -> DPSpec | None:
    """`train_expert.dp` as the privacy target of an expert's training; None when DP is off (`enabled` overrides
    `train_expert.dp.enabled`)."""
    from model.dp import DPSpec

    dp = profile.train_expert.dp
    on = dp.enabled if enabled is None else enabled
    return DPSpec(dp.target_epsilon, dp.target_delta, dp.max_grad_norm) if on else None


def train_spec(
    profile: Profile,
    section: TrainPublicConfig | TrainExpertConfig,
    steps: int,
    device: str,
    *,
    weight_decay: float | None = None,
    dp: DPSpec | None = None,
) -> TrainSpec:
    """The TrainSpec of a run of `steps` optimizer steps with one training section's batch, schedule and evaluation
    settings (`train_public` or `train_expert`), the profile's seed, precision and compile flag on `device`.
    `weight_decay` overrides the section's (dense domain models use `train_expert.dense_weight_decay`)."""
    from model.schedule import warmup_steps_for
    from model.training import TrainSpec

    optim = section.optim
    return TrainSpec(
        total_steps=steps,
        batch_size=section.batch_size,
        seq_len=section.seq_len,
        lr=optim.lr,
        betas=optim.betas,
        weight_decay=optim.weight_decay if weight_decay is None else weight_decay,
        warmup_steps=warmup_steps_for(steps, optim.warmup_fraction),
        min_lr_ratio=optim.min_lr_ratio,
        grad_clip=optim.grad_clip,
        eval_every=section.eval_every,
        checkpoint_every=section.checkpoint_every,
        eval_batches=section.eval_batches,
        seed=profile.seed,
        device=device,
        precision=resolve_run_precision(profile, device),
        dp=dp,
        compile=resolve_compile(profile, device, dp=dp is not None),
    )


def sampling_settings(profile: Profile) -> SamplingSettings:
    """`attack.*` as the extraction attack's sampling settings; DataError when its window does not fit the model."""
    from model.extraction import SamplingSettings

    a = profile.attack
    if a.window_tokens > profile.model.max_seq_len:
        raise DataError(
            f"attack.window_tokens ({a.window_tokens}) exceeds model.max_seq_len ({profile.model.max_seq_len}); "
            "shorten the window in params.yaml"
        )
    return SamplingSettings(
        a.prefix_tokens, a.window_tokens, a.samples_per_prefix, a.top_k, a.top_p, a.temperature, a.batch_prefixes
    )
