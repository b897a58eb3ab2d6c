"""Revocation end to end on a real SQLite MLflow store: tags, aliases, audit trail, re-assembly, refusal everywhere."""

from __future__ import annotations

import json
import random
from pathlib import Path

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


def test_the_certificate_compares_the_extraction_rate_with_m_pubs(served) -> None:
    """What `flexo revoke` and the `revoke` flow add: the attack on the revoked owner's training documents against the
    new serving MoE and M_pub, the same windows for both; both rates, their difference with its interval and a verdict
    that claims M_pub's level only when the interval holds 0, in the certificate file and the audit trail."""
    from flows.certificate import certify_extraction
    from tests.flows.conftest import write_split
    from tests.tasks.data_world import prose

    profile = served.profile
    rng = random.Random(5)
    write_split(profile, "news", [prose(rng, 60) for _ in range(12)])
    result = revoke(profile, "news", 1, reason="owner withdrew consent", by="steward-news")
    cert = certify_extraction(profile, result.certificate, "steward-news")
    extraction = cert["extraction"]
    assert extraction["measured"] is True and extraction["documents"] == profile.attack.num_docs
    serving, public = extraction["rate_serving_moe"], extraction["rate_public"]
    assert 0.0 <= serving <= 1.0 and 0.0 <= public <= 1.0
    assert extraction["difference"] == pytest.approx(serving - public)
    low, high = extraction["difference_interval"]
    assert -1.0 <= low <= extraction["difference"] <= high <= 1.0 and extraction["confidence"] == 0.95
    assert 0.0 <= extraction["calibration_rate"] <= 1.0
    at_level = extraction["calibration_passed"] and low <= 0.0 <= high
    assert extraction["at_public_level"] is at_level
    assert ("at M_pub's level" in extraction["verdict"]) is at_level
    assert f"{serving:.1%} on the serving MoE against {public:.1%} on M_pub" in extraction["verdict"]
    assert json.loads(Path(cert["path"]).read_text())["extraction"] == extraction
    recorded = audit_trail(profile)[-1]
    assert (recorded.event, recorded.model, recorded.version, recorded.actor) == (
        "revocation_certificate_extraction",
        "flexo-expert-news",
        "1",
        "steward-news",
    )
    assert recorded.detail["rate_serving_moe"] == serving and recorded.detail["rate_public"] == public
    assert recorded.detail["serving_moe"] == "flexo-moe:2"


def test_an_extraction_that_cannot_be_measured_is_recorded_with_its_reason(served) -> None:
    """No train split of the revoked owner: the certificate says so, and the revocation stands."""
    from flows.certificate import certify_extraction

    result = revoke(served.profile, "news", 1, reason="owner withdrew consent")
    cert = certify_extraction(served.profile, result.certificate)
    assert cert["extraction"]["measured"] is False
    assert (
        "not measured" in cert["extraction"]["verdict"]
        and "train split of 'news' is missing" in (cert["extraction"]["verdict"])
    )
    assert audit_trail(served.profile)[-1].event == "revocation_certificate_extraction"
    assert registry.get_version(served.profile, "flexo-expert-news", 1).status == "revoked"


def test_the_extraction_verdict_says_what_was_measured() -> None:
    """The paired interval: identical outcomes give a symmetric interval around 0 (wide at few documents); a model
    that reproduces every document M_pub does not is above M_pub's level; a failed calibration proves nothing."""
    from tasks.registry.certificate import Z, extraction_comparison, paired_difference_interval, wilson

    assert wilson(0, 4) == (0.0, pytest.approx(Z * Z / (4 + Z * Z)))
    low, high = paired_difference_interval([False] * 4, [False] * 4)
    assert low == pytest.approx(-high) and high == pytest.approx(wilson(0, 4)[1])
    same = extraction_comparison([False] * 4, [False] * 4, 1.0, 0.5, "4 windows")
    assert same["at_public_level"] and same["verdict"].startswith("the extraction rate is at M_pub's level: 0.0%")
    above = extraction_comparison([True] * 20, [False] * 20, 1.0, 0.5, "20 windows")
    assert not above["at_public_level"] and above["difference_interval"][0] > 0
    assert above["verdict"].startswith("the extraction rate is above M_pub's level: 100.0% on the serving MoE")
    below = extraction_comparison([False] * 20, [True] * 20, 1.0, 0.5, "20 windows")
    assert below["verdict"].startswith("the extraction rate is below M_pub's level")
    broken = extraction_comparison([False] * 4, [False] * 4, 0.25, 0.5, "4 windows")
    assert not broken["at_public_level"] and "these rates prove nothing" in broken["verdict"]
