"""Sizing every profile to its data (tasks.core.sizing): no training past `max_epochs` passes over its train split,
and M_pub's size within its token budget; checked at config load from the data cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tasks.core.config import DEFAULT_PARAMS, PROFILES, load_profile
from tasks.core.errors import ConfigError
from tasks.core.sizing import card_train_tokens, cards_dir, check_scaling, non_embedding_params, trainings


@pytest.mark.parametrize("name", PROFILES)
def test_every_shipped_profile_follows_the_sizing_rule(name: str) -> None:
    """Every profile of params.yaml: M_pub at or above its stated tokens per non-embedding parameter, and every training
    whose data card is in the repository at most `max_epochs` passes over it (what load_profile checked, recomputed)."""
    profile = load_profile(name)
    ratio = check_scaling(profile)
    if profile.anchor.pretrained:
        assert ratio is None
    else:
        assert ratio is not None and ratio >= profile.train_public.min_tokens_per_param
        assert ratio == profile.train_public.tokens / non_embedding_params(profile.model)
    for training in trainings(profile):
        found = card_train_tokens(profile, training.domain)
        if found is not None:
            assert training.tokens <= training.max_epochs * found[0], (name, training.label)


def test_non_embedding_parameters_count_attention_and_ffn() -> None:
    demo = load_profile("demo").model  # d=256, f=1024, 4 layers
    assert non_embedding_params(demo) == 4 * (4 * 256 * 256 + 3 * 256 * 1024) == 4_194_304


def _with_cards(tmp_path: Path, mutate, tokens: dict[str, int]) -> Path:
    """params.yaml with the tiny profile's reports under tmp_path, and data cards there holding `tokens` per domain."""
    raw = yaml.safe_load(DEFAULT_PARAMS.read_text())
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw["profiles"]["tiny"].setdefault("paths", {})["reports_dir"] = str(tmp_path / "reports")
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    if not tokens:
        return path
    cards = cards_dir(load_profile("tiny", path, check_data=False))
    cards.mkdir(parents=True)
    for domain, count in tokens.items():
        (cards / f"{domain}.json").write_text(json.dumps({"domain": domain, "tokens": {"train": count}}))
    return path


def test_a_public_budget_over_max_epochs_of_its_card_is_a_config_error(tmp_path: Path) -> None:
    four = lambda raw: raw["profiles"]["tiny"]["train_public"].update(max_epochs=4)  # noqa: E731 (tiny allows 64)
    path = _with_cards(tmp_path, four, {"public": 4000})  # tiny: 16,384 tokens = 4.1 passes
    with pytest.raises(ConfigError) as info:
        load_profile("tiny", path)
    message = str(info.value)
    for part in (
        "profile 'tiny'",
        "M_pub",
        "16,384 tokens",
        "train_public.tokens",
        "4,000 train tokens",
        "4.10 passes",
    ):
        assert part in message
    assert "train_public.max_epochs = 4" in message and "at most 16,000 tokens" in message
    assert str(cards_dir(load_profile("tiny", path, check_data=False)) / "public.json") in message
    assert load_profile("tiny", path, check_data=False).name == "tiny"  # a data rebuild can still read the profile


def test_the_smallest_owner_bounds_the_expert_budget(tmp_path: Path) -> None:
    """One expert budget for all owners: an owner whose card holds too few tokens refuses the profile, naming it."""
    four = lambda raw: raw["profiles"]["tiny"]["train_expert"].update(max_epochs=4)  # noqa: E731 (tiny allows 64)
    path = _with_cards(tmp_path, four, {"public": 100_000, "math": 100_000, "news": 1000})
    with pytest.raises(ConfigError, match=r"expert and dense model news would train 4,096 tokens .* 4\.10 passes"):
        load_profile("tiny", path)
    raise_cap = _with_cards(
        tmp_path / "raised", lambda raw: raw["profiles"]["tiny"]["train_expert"].update(max_epochs=5), {"news": 1000}
    )
    assert load_profile("tiny", raise_cap).train_expert.max_epochs == 5


def test_a_bigger_model_without_a_bigger_budget_breaks_the_scaling_rule(tmp_path: Path) -> None:
    path = _with_cards(tmp_path, lambda raw: raw["profiles"]["tiny"]["model"].update(hidden_size=64), {})
    with pytest.raises(
        ConfigError, match=r"M_pub has 57,344 non-embedding parameters .*train_public.min_tokens_per_param = 0\.5\."
    ):
        load_profile("tiny", path)
