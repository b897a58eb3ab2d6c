"""The `ablate` flow under Prefect's harness: one cached task per (variant, owner) and one merge per variant; an
unchanged rerun is all cache hits, and the pipeline's `ablate` stage feeds the ablation MoEs' sha256s to `evaluate`. The
main job leaves the stage out unless asked (`ablations=True`, `flexo run --ablations`)."""

from __future__ import annotations

import pytest

from flows.ablate import ablate
from flows.pipeline import DEFAULT_STAGES, STAGES, pipeline
from tasks.core.artifacts import RunPaths
from tests.tasks.eval_world import build_world

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_ablate_trains_each_owner_merges_and_caches(world) -> None:
    profile = world.model_copy(
        update={
            "ablation": world.ablation.model_copy(
                update={"variants": ["no_bias", "random_router"], "domains": ["code", "math"]}
            )
        }
    )
    build_world(profile, dense=False)
    first = ablate(profile=profile, fail_on_error=False)
    assert [(r["step"], r["domain"], r["status"]) for r in first] == [
        ("train_ablation", "no_bias/code", "completed"),
        ("train_ablation", "no_bias/math", "completed"),
        ("assemble_ablation", "no_bias", "completed"),
        ("train_ablation", "random_router/code", "completed"),
        ("train_ablation", "random_router/math", "completed"),
        ("assemble_ablation", "random_router", "completed"),
    ]
    merged = first[2]["result"]
    assert (
        merged["experts"] == ["public", "code", "math"] and (RunPaths(profile).ablation_dir("no_bias") / "moe").is_dir()
    )
    assert first[0]["result"]["mlflow_run_id"]  # tracked like any training
    second = ablate(profile=profile, fail_on_error=False)
    assert {r["status"] for r in second} == {"cached"}

    summary = pipeline(profile=profile, stages=["ablate"])
    assert {r["status"] for r in summary["steps"]} == {"cached"} and summary["stage_seconds"].keys() == {"ablate"}
    assert summary["stage_peak_rss_gib"].keys() == {"ablate"} and summary["stage_peak_rss_gib"]["ablate"] > 0

    assert set(STAGES) - set(DEFAULT_STAGES) == {"ablate"}
    asked = pipeline(profile=profile, stages=["assemble"], ablations=True)
    assert list(asked["stage_seconds"]) == ["assemble", "ablate"]
    assert {r["status"] for r in asked["steps"] if r["step"].endswith("_ablation")} == {"cached"}
    assert list(pipeline(profile=profile, stages=["assemble"])["stage_seconds"]) == ["assemble"]
