"""Revocation end to end on a real SQLite MLflow store: tags, aliases, audit trail, re-assembly, refusal everywhere."""

from __future__ import annotations

import pytest

from tasks.core.errors import ConfigError, RevokedError
from tasks.registry import registry
from tasks.registry.governance import assemble_and_register, audit_trail, revoke
from tests.tasks.registry_world import build_world, make_expert, md5_of


@pytest.fixture
def served(tmp_profile):
    world = build_world(tmp_profile)
    registry.register_expert(tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"))
    registry.register_expert(tmp_profile, "math", make_expert(world, "math", 1), md5_of("math"))
    moe = assemble_and_register(tmp_profile)
    assert moe.tags["experts"] == "news:1,math:1"
    return world


def test_revoke_tags_removes_aliases_reassembles_and_audits(served) -> None:
    profile = served.profile
    result = revoke(profile, "news", 1, reason="owner withdrew consent", by="steward-news")
    news = registry.get_version(profile, "flexo-expert-news", 1)
    assert news.status == "revoked" and news.aliases == ()
    assert news.tags["revoked_by"] == "steward-news" and news.tags["revoked_reason"] == "owner withdrew consent"
    assert news.tags["revoked_at"].startswith("20")
    assert result.removed_aliases == ["active"] and result.revoked_dependencies == ["flexo-moe:1"]
    old_moe = registry.get_version(profile, "flexo-moe", 1)
    assert old_moe.status == "revoked_dependency" and old_moe.aliases == ()
    assert old_moe.tags["revoked_dependency"] == "flexo-expert-news:1"
    # the new serving MoE holds exactly the remaining active expert
    serving = registry.by_alias(profile, "flexo-moe", "serving")
    assert serving.version == result.new_moe.version == "2" and serving.tags["experts"] == "math:1"
    events = [(r.event, r.model, r.version) for r in audit_trail(profile)]
    assert events[-6:] == [
        ("revoked", "flexo-expert-news", "1"),
        ("revoked_dependency", "flexo-moe", "1"),
        ("registered", "flexo-moe", "2"),
        ("alias_set", "flexo-moe", "2"),
        ("reassembled_after_revocation", "flexo-moe", "2"),
        ("revocation_certificate", "flexo-expert-news", "1"),
    ]
    revoked_record = next(r for r in audit_trail(profile) if r.event == "revoked")
    assert revoked_record.actor == "steward-news" and revoked_record.detail["reason"] == "owner withdrew consent"
    # the trail only grows: a second revocation is refused and nothing is rewritten
    before = audit_trail(profile)
    with pytest.raises(ConfigError, match="already revoked"):
        revoke(profile, "news", 1, reason="again")
    assert audit_trail(profile) == before


def test_no_path_loads_a_revoked_version(served) -> None:
    profile = served.profile
    revoke(profile, "news", 1, reason="licence expired", by="steward-news")
    news = registry.get_version(profile, "flexo-expert-news", 1)
    for attempt in (
        lambda: registry.fetch(profile, news),  # every loader goes through fetch
        lambda: registry.resolve_active_experts(profile, ["news"]),  # assemble/evaluate asking for news by name
        lambda: registry.resolve_serving_moe(profile, version="1"),  # serve/generate pinned to the old MoE
    ):
        with pytest.raises(RevokedError, match="revoked|revoked expert") as caught:
            attempt()
        assert "news" in str(caught.value)
    with pytest.raises(RevokedError, match='revoked by steward-news at .*"licence expired"'):
        registry.fetch(profile, news)
    # the default resolution simply no longer contains it
    assert [r.domain for r in registry.resolve_active_experts(profile)] == ["math"]


def test_revoke_from_python_with_a_custom_reassembly_hook(served) -> None:
    calls = []

    def hook(profile):
        calls.append([r.domain for r in registry.resolve_active_experts(profile)])
        return None

    result = revoke(served.profile, "math", 1, reason="data error found", reassemble=hook)
    assert calls == [["news"]] and result.new_moe is None
    # without a new MoE, the dependent one lost `serving`: nothing serves the revoked expert
    assert registry.by_alias(served.profile, "flexo-moe", "serving") is None
    with pytest.raises(ConfigError, match="--reason is required"):
        revoke(served.profile, "news", 1, reason="  ")


def test_failed_reassembly_still_leaves_the_expert_revoked_and_says_so(served) -> None:
    from tasks.core.errors import DataError

    def broken(profile):
        raise DataError("M_pub is missing")

    with pytest.raises(DataError, match="IS revoked .* re-assembling flexo-moe without it failed: M_pub is missing"):
        revoke(served.profile, "news", 1, reason="consent withdrawn", reassemble=broken)
    assert registry.get_version(served.profile, "flexo-expert-news", 1).status == "revoked"
    assert registry.by_alias(served.profile, "flexo-moe", "serving") is None
    assert audit_trail(served.profile)[-1].event == "reassembly_failed"


def test_the_revocation_certificate_shows_the_expert_is_gone(served) -> None:
    """The re-assembled serving MoE computes what the MoE that held the expert computes with it masked, and gives it
    no attribution; the certificate is a file and an audit event."""
    import json
    from pathlib import Path

    result = revoke(served.profile, "news", 1, reason="owner withdrew consent", by="steward-news")
    cert = result.certificate
    assert cert["previous_moe"] == "flexo-moe:1" and cert["serving_moe"] == "flexo-moe:2"
    assert cert["max_abs_delta_logit"] <= 1e-5 and cert["prompts"] > 0
    assert cert["attribution_masked_previous"] == 0.0 and cert["attribution_serving"] == 0.0
    assert cert["in_serving_moe"] is False
    assert json.loads(Path(cert["path"]).read_text())["expert"] == "flexo-expert-news:1"
    recorded = audit_trail(served.profile)[-1]
    assert (
        recorded.event == "revocation_certificate"
        and recorded.detail["max_abs_delta_logit"] == cert["max_abs_delta_logit"]
    )
    # without a served MoE holding it there is nothing to certify against
    assert revoke(served.profile, "math", 1, reason="x", reassemble=None).certificate is None
