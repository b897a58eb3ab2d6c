"""A version's description is its card in markdown, kept current: written at registration, re-written when a check
lands (the extraction attack's rate and verdict) and when the version is revoked."""

from __future__ import annotations

from tasks.registry import registry
from tasks.registry.governance import revoke
from tasks.registry.store import client
from tests.tasks.registry_world import build_world, make_expert, md5_of

NEWS = "flexo-expert-news"


def _card(profile, version: str = "1") -> str:
    return client(profile).get_model_version(NEWS, version).description


def test_the_card_follows_the_version_through_its_checks_and_revocation(tmp_profile) -> None:
    world = build_world(tmp_profile)
    registry.register_expert(
        tmp_profile,
        "news",
        make_expert(world, "news", 1),
        md5_of("news"),
        metrics={"val_loss": 2.5},
        dp_epsilon=8.0,
    )
    card = _card(tmp_profile)
    owner = tmp_profile.domains["news"].owner
    for line in (
        "# flexo-expert-news version 1",
        "**Status: active**",
        f"| owner | {owner} |",
        f"| data version (DVC md5) | `{md5_of('news')}` |",
        "| DP epsilon | 8 |",
        "| extraction rate | not measured yet |",
        "| val_loss | 2.5 |",
    ):
        assert line in card, (line, card)

    client(tmp_profile).set_model_version_tag(NEWS, "1", "extraction_rate", "0.250000")  # what the attack writes
    registry.record_check(tmp_profile, "news", 1, "extraction", False, "rate above the gate")
    card = _card(tmp_profile)
    assert "| extraction rate | 0.250000 |" in card and "| check extraction | failed |" in card

    revoke(tmp_profile, "news", 1, reason="owner withdrew consent", by="steward-news", reassemble=None)
    card = _card(tmp_profile)
    assert "**Status: revoked**" in card and "Revoked by steward-news at 20" in card
    assert "owner withdrew consent" in card
