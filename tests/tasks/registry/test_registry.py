"""Registry against a real SQLite MLflow store in tmp_path: versions, tags, aliases, lineage, integrity, MoE
versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.hashing import sha256_file
from tasks.core.errors import IntegrityError
from tasks.core.tracking import lineage_tags
from tasks.registry import registry
from tasks.registry.governance import assemble_and_register
from tests.tasks.registry_world import build_world, make_expert, md5_of


@pytest.fixture
def world(tmp_profile):
    return build_world(tmp_profile)


def test_expert_versions_tags_and_active_alias(world) -> None:
    profile = world.profile
    first = registry.register_expert(
        profile,
        "news",
        make_expert(world, "news", 1),
        md5_of("news-v1"),
        metrics={"val_loss": 3.2},
        checks={"extraction": True},
        dp_epsilon=8.0,
    )
    assert (first.name, first.version, first.aliases) == ("flexo-expert-news", "1", ("active",))
    commit = lineage_tags(profile)["git_commit"]
    assert (
        first.tags["domain"] == "news" and first.owner == "news-owner" and first.tags["data_md5"] == md5_of("news-v1")
    )
    assert first.tags["git_commit"] == commit and first.status == "active" and first.tags["dp_epsilon"] == "8"
    assert first.tags["metric.val_loss"] == "3.2" and first.tags["check.extraction"] == "passed"
    # a version failing its checks is registered, but `active` stays on the last good one
    failed = registry.register_expert(
        profile, "news", make_expert(world, "news", 2), md5_of("news-v2"), checks={"extraction": False}
    )
    assert failed.version == "2" and failed.aliases == () and failed.tags["alias_withheld"] == "extraction"
    assert registry.by_alias(profile, "flexo-expert-news", "active").version == "1"
    passed = registry.register_expert(profile, "news", make_expert(world, "news", 3), md5_of("news-v3"))
    assert registry.by_alias(profile, "flexo-expert-news", "active").version == passed.version == "3"
    # the downloaded version is the same file, with its card; no pickle among the artifacts
    local = registry.fetch(profile, passed)
    assert sorted(p.name for p in local.iterdir()) == ["expert.safetensors", "expert_card.json"]
    assert sha256_file(local / "expert.safetensors") == passed.sha256
    assert [r.version for r in registry.versions(profile, "flexo-expert-news")] == ["3", "2", "1"]


def test_expert_file_of_another_domain_is_refused(world) -> None:
    with pytest.raises(IntegrityError, match="not 'math'"):
        registry.register_expert(world.profile, "math", make_expert(world, "news", 1), md5_of("x"))


def test_tampered_stored_weights_are_refused_before_load(world) -> None:
    ref = registry.register_expert(world.profile, "math", make_expert(world, "math", 1), md5_of("math"))
    stored = Path(ref.source.removeprefix("file://")) / "expert.safetensors"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in the artifact store
    stored.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="registry recorded"):
        registry.fetch(world.profile, ref)
    with pytest.raises(IntegrityError, match="registry recorded"):
        assemble_and_register(world.profile)


def test_moe_version_records_exact_experts_and_model_card(world) -> None:
    profile = world.profile
    registry.register_expert(profile, "news", make_expert(world, "news", 1), md5_of("n1"))
    registry.register_expert(profile, "news", make_expert(world, "news", 2), md5_of("n2"))
    registry.register_expert(profile, "math", make_expert(world, "math", 1), md5_of("m1"))
    public = registry.register_public(profile, world.paths.public_model_dir, md5_of("public"))
    assert public.sha256 == world.public_sha and public.aliases == ("active",)
    moe = assemble_and_register(profile)
    assert moe.tags["experts"] == "news:2,math:1" and moe.tags["expert.news"] == "2" and moe.tags["expert.math"] == "1"
    assert moe.aliases == ("serving",) and moe.tags["git_commit"] == lineage_tags(profile)["git_commit"]
    ref, pyfunc_dir = registry.resolve_serving_moe(profile)
    assert ref.version == moe.version
    card = (registry.moe_dir(pyfunc_dir) / "model_card.md").read_text()
    assert (
        "| news | flexo-expert-news | 2 | news-owner |" in card
        and "| math | flexo-expert-math | 1 | math-owner |" in card
    )
    assert not list(pyfunc_dir.rglob("*.pkl")) and not list(pyfunc_dir.rglob("*.bin"))


def test_a_gate_failing_after_registration_moves_active_back(world) -> None:
    profile = world.profile
    registry.register_expert(profile, "news", make_expert(world, "news", 1), md5_of("n1"))
    registry.register_expert(profile, "news", make_expert(world, "news", 2), md5_of("n2"))
    assert registry.by_alias(profile, "flexo-expert-news", "active").version == "2"
    checked = registry.record_check(profile, "news", 2, "extraction", passed=False, detail="rate 0.4 > 0.05")
    assert checked.tags["check.extraction"] == "failed" and checked.aliases == ()
    assert registry.by_alias(profile, "flexo-expert-news", "active").version == "1"
    assert [r.domain + ":" + r.version for r in registry.resolve_active_experts(profile)] == ["news:1"]
    # a passing check leaves the alias where it is
    assert registry.record_check(profile, "news", 1, "extraction", passed=True).aliases == ("active",)
