"""params.yaml validation: every profile loads; a bad value is an error that names the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.core.config import DEFAULT_PARAMS, PROFILES, load_profile
from tasks.core.errors import ConfigError


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_validates(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert "public" in profile.domains and len(profile.closed_domains) == 7
    assert profile.expert_tokens() >= profile.train_expert.batch_size * profile.train_expert.seq_len


@pytest.mark.parametrize("name", PROFILES)
def test_moe_trainings_beyond_demo_sizes_checkpoint_activations(name: str) -> None:
    """Keeping every layer's expert activations is measured only at demo sizes (router tuning 3.29 GiB against 2.00
    checkpointed): a profile whose BTX / router-tuning / unrestricted batches hold more tokens must recompute them."""
    profile, demo = load_profile(name), load_profile("demo")
    cfg = profile.eval
    trains = cfg.btx_router_steps or cfg.rt_steps or cfg.unrestricted_steps
    tokens = profile.train_expert.batch_size * profile.train_expert.seq_len
    sizes = (tokens, profile.model.hidden_size, profile.model.num_layers)
    demo_sizes = (
        demo.train_expert.batch_size * demo.train_expert.seq_len,
        demo.model.hidden_size,
        demo.model.num_layers,
    )
    if trains and any(a > b for a, b in zip(sizes, demo_sizes, strict=True)):
        assert cfg.checkpoint_activations, f"{name}: eval.checkpoint_activations must be true at these sizes"


def _write_variant(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_hidden_not_divisible_by_heads_names_the_key(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda raw: raw["profiles"]["tiny"]["model"].update(hidden_size=30))
    with pytest.raises(ConfigError, match=r"model.*divisible by num_heads"):
        load_profile("tiny", path)


def test_compile_takes_auto_or_a_boolean_and_names_the_key_otherwise(tmp_path: Path) -> None:
    assert load_profile("demo").runtime.compile == "auto"
    path = _write_variant(tmp_path, lambda raw: raw["profiles"]["tiny"]["runtime"].update(compile="cuda"))
    with pytest.raises(ConfigError, match=r"runtime\.compile"):
        load_profile("tiny", path)


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda raw: raw["profiles"]["tiny"]["train_public"].update(learning_rate=1))
    with pytest.raises(ConfigError, match=r"train_public\.learning_rate"):
        load_profile("tiny", path)


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("paths", "export_dir", "runs/export"), ("router", "tune", False), ("router", "tune_lr", 2.0e-3)],
)
def test_a_key_the_schema_does_not_hold_is_refused_by_name(tmp_path: Path, section: str, key: str, value) -> None:
    """An old params.yaml that still sets a key the schema dropped fails loudly instead of being silently ignored."""
    path = _write_variant(tmp_path, lambda raw: raw["defaults"][section].update({key: value}))
    with pytest.raises(ConfigError, match=rf"{section}\.{key}: Extra inputs are not permitted"):
        load_profile("tiny", path)


def test_budget_below_one_batch_is_refused(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda raw: raw["profiles"]["tiny"]["train_public"].update(tokens=10))
    with pytest.raises(ConfigError, match="below one batch"):
        load_profile("tiny", path)


def test_unknown_profile(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="profile 'huge' is not defined"):
        load_profile("huge")
