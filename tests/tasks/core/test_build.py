"""Runtime objects built from a profile carry exactly its settings; a setting the model cannot take is refused."""

from __future__ import annotations

import pytest

from model.config import ModelSizes
from model.dp import DPSpec
from model.extraction import SamplingSettings
from model.schedule import warmup_steps_for
from tasks.core import build
from tasks.core.device import resolve_compile
from tasks.core.errors import DataError


def _with(profile, section: str, **values):
    return profile.model_copy(update={section: getattr(profile, section).model_copy(update=values)})


def test_model_sizes_are_the_profile_model(tiny_profile) -> None:
    sizes = build.model_sizes(tiny_profile)
    assert isinstance(sizes, ModelSizes)
    assert sizes.__dict__ == tiny_profile.model.model_dump()


def test_moe_top_k_is_the_configured_one_else_about_half(tiny_profile) -> None:
    assert tiny_profile.router.top_k is None
    assert [build.moe_top_k(tiny_profile, n) for n in (1, 3, 8)] == [1, 2, 4]
    assert build.moe_top_k(_with(tiny_profile, "router", top_k=3), 8) == 3


def test_train_spec_takes_the_section_schedule_and_the_profile_runtime(tiny_profile) -> None:
    profile = _with(tiny_profile, "runtime", precision="fp32", compile=True)
    section = profile.train_public
    spec = build.train_spec(profile, section, steps=40, device="cpu")
    optim = section.optim
    assert (spec.total_steps, spec.batch_size, spec.seq_len) == (40, section.batch_size, section.seq_len)
    assert (spec.lr, spec.betas, spec.weight_decay) == (optim.lr, tuple(optim.betas), optim.weight_decay)
    assert spec.warmup_steps == warmup_steps_for(40, optim.warmup_fraction) > 0
    assert (spec.min_lr_ratio, spec.grad_clip) == (optim.min_lr_ratio, optim.grad_clip)
    assert (spec.eval_every, spec.checkpoint_every, spec.eval_batches) == (
        section.eval_every,
        section.checkpoint_every,
        section.eval_batches,
    )
    assert (spec.seed, spec.device, spec.precision, spec.compile, spec.dp) == (profile.seed, "cpu", "fp32", True, None)


def test_train_spec_weight_decay_override_and_dp(tiny_profile) -> None:
    section = tiny_profile.train_expert
    dp = DPSpec(8.0, 1e-6, 1.0)
    spec = build.train_spec(tiny_profile, section, 10, "cpu", weight_decay=section.dense_weight_decay, dp=dp)
    assert spec.weight_decay == section.dense_weight_decay != section.optim.weight_decay
    assert spec.dp == dp and spec.batch_size == section.batch_size


def test_dp_spec_follows_the_switch_unless_overridden(tiny_profile) -> None:
    dp = tiny_profile.train_expert.dp
    assert not dp.enabled and build.dp_spec(tiny_profile) is None
    assert build.dp_spec(tiny_profile, enabled=True) == DPSpec(dp.target_epsilon, dp.target_delta, dp.max_grad_norm)
    on = tiny_profile.train_expert.model_copy(update={"dp": dp.model_copy(update={"enabled": True})})
    assert build.dp_spec(tiny_profile.model_copy(update={"train_expert": on})) is not None
    assert build.dp_spec(tiny_profile.model_copy(update={"train_expert": on}), enabled=False) is None


def test_sampling_settings_are_the_attack_section(tiny_profile) -> None:
    a = tiny_profile.attack
    assert build.sampling_settings(tiny_profile) == SamplingSettings(
        a.prefix_tokens, a.window_tokens, a.samples_per_prefix, a.top_k, a.top_p, a.temperature, a.batch_prefixes
    )


def test_an_attack_window_longer_than_the_model_is_refused_by_name(tiny_profile) -> None:
    profile = _with(tiny_profile, "attack", window_tokens=tiny_profile.model.max_seq_len + 1)
    with pytest.raises(DataError, match=r"attack.window_tokens .* exceeds model.max_seq_len"):
        build.sampling_settings(profile)


@pytest.mark.parametrize(
    ("setting", "device", "dp", "compiled"),
    [
        ("auto", "cpu", False, False),  # inductor's compile outlasts a CPU demo run
        ("auto", "cuda", False, True),  # the eager step is bound by the host launching kernels
        ("auto", "cuda:1", False, True),
        ("auto", "cuda", True, False),  # Opacus' per-sample hooks stay eager
        (True, "cpu", False, True),
        (False, "cuda", False, False),
    ],
)
def test_compile_auto_is_cuda_without_dp_and_an_explicit_setting_wins(
    tiny_profile, setting, device: str, dp: bool, compiled: bool
) -> None:
    profile = _with(tiny_profile, "runtime", compile=setting)
    assert resolve_compile(profile, device, dp=dp) is compiled


def test_the_default_compiles_no_cpu_training(tiny_profile) -> None:
    assert tiny_profile.runtime.compile == "auto"
    section = tiny_profile.train_expert
    assert build.train_spec(tiny_profile, section, 10, "cpu").compile is False
