"""Locating the MoE to score: the registry's `serving` version when there is one, else the run directory's; looking
never creates a tracking store."""

from __future__ import annotations

import json

import pytest

from tasks.core.artifacts import MANIFEST_FILE
from tasks.core.errors import DataError, RevokedError
from tasks.core.tracking import local_store_path, store_exists, tracking_uri
from tasks.registry import registry
from tasks.registry.governance import assemble_and_register, revoke
from tasks.registry.locate import locate_moe
from tests.tasks.registry_world import build_world, make_expert, md5_of


@pytest.fixture
def no_user_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_without_a_store_or_an_assembly_it_says_what_to_run_and_creates_no_store(tmp_profile, no_user_store) -> None:
    with pytest.raises(DataError, match="no assembled MoE .* run `flexo run --stage assemble` first"):
        locate_moe(tmp_profile)
    assert not store_exists(tmp_profile)
    assert not local_store_path(tracking_uri(tmp_profile)).exists()


def test_without_a_store_the_run_directory_moe_is_used(tmp_profile, no_user_store) -> None:
    local = tmp_profile.path("runs_dir") / tmp_profile.name / "moe"
    local.mkdir(parents=True)
    (local / MANIFEST_FILE).write_text(json.dumps({"experts": ["public"]}))
    assert locate_moe(tmp_profile) == local
    assert not store_exists(tmp_profile)


def test_the_serving_version_wins_and_a_revoked_one_is_refused(tmp_profile, no_user_store) -> None:
    world = build_world(tmp_profile)
    registry.register_expert(tmp_profile, "news", make_expert(world, "news", 1), md5_of("news"))
    moe = assemble_and_register(tmp_profile)
    located = locate_moe(tmp_profile)
    _ref, pyfunc_dir = registry.resolve_serving_moe(tmp_profile)
    assert located == registry.moe_dir(pyfunc_dir) and located.is_relative_to(world.paths.registry_cache)
    assert json.loads((located / MANIFEST_FILE).read_text())["experts"] == ["public", "news"]
    revoke(tmp_profile, "news", 1, reason="consent withdrawn", by="steward", reassemble=None)
    assert registry.get_version(tmp_profile, moe.name, moe.version).status == "revoked_dependency"
    # no `serving` version is left, so the run directory is the answer, and it holds nothing assembled
    with pytest.raises(DataError, match="no assembled MoE"):
        locate_moe(tmp_profile)
    with pytest.raises(RevokedError, match="contains a revoked expert"):
        registry.resolve_serving_moe(tmp_profile, moe.version)
