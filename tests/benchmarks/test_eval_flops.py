"""The evaluation FLOP benchmark counts what each part multiplies, measures every part of the real stage, and leaves
the stage as it found it."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.evaluation import evaluate as stage
from tasks.evaluation import families, sweeps
from tests.benchmarks.conftest import load_benchmark
from tests.profiles import paths_under
from tests.tasks.eval_world import build_world

eval_flops = load_benchmark("eval_flops")


def test_a_part_counts_two_flops_per_multiply_add_of_every_call_and_keeps_its_name() -> None:
    meter = eval_flops.Meter()

    def project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, w).relu() @ w  # (4x8)(8x16) then (4x16)(16x8)

    measured = meter.wrap("projection", project)
    x, w = torch.randn(4, 8), torch.randn(16, 8)
    assert torch.equal(measured(x, w), project(x, w))
    measured(x, w)
    part = meter.parts["projection"]
    assert part.flops == 2 * (2 * 4 * 8 * 16 * 2) and part.seconds > 0
    assert measured.__name__ == "project"  # `families.schedule` orders the families by name


def test_a_part_that_raises_keeps_its_seconds_and_flops() -> None:
    meter = eval_flops.Meter()

    def fails(x: torch.Tensor) -> None:
        x @ x
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        meter.wrap("fails", fails)(torch.randn(3, 3))
    assert meter.parts["fails"].flops == 2 * 3 * 3 * 3 and meter.parts["fails"].seconds > 0


def test_the_rest_and_the_whole_stage_rows_add_up() -> None:
    parts = [eval_flops.Part("a", 2.0, 8 * 10**9), eval_flops.Part("b", 1.0, 0)]
    by_name = {row["name"]: row for row in eval_flops.rows(parts, 5.0, peak_flops=8e9)}
    assert by_name["a"]["mfu"] == pytest.approx(0.5) and by_name["b"]["mfu"] == 0.0
    assert by_name[eval_flops.REST]["seconds"] == pytest.approx(2.0) and by_name[eval_flops.REST]["flops"] == 0
    assert by_name["whole stage"]["flops"] == 8 * 10**9 and by_name["whole stage"]["mfu"] == pytest.approx(0.2)


@pytest.fixture
def cheap_world(tmp_path, tiny_profile: Profile) -> Profile:
    """The tiny evaluation world on three domains, the baselines that train switched off (their families still run,
    and are skipped)."""
    profile = tiny_profile.model_copy(
        update={
            "domains": {d: tiny_profile.domains[d] for d in ("public", "news", "creative")},
            "paths": tiny_profile.paths.model_copy(update=paths_under(tmp_path)),
            "eval": tiny_profile.eval.model_copy(
                update={"btx_router_steps": 0, "rt_steps": 0, "unrestricted_steps": 0, "mixed_docs": 0}
            ),
        }
    )
    build_world(profile)
    return profile


def test_every_part_of_the_stage_is_measured_and_the_stage_and_the_run_s_report_are_put_back(
    cheap_world: Profile,
) -> None:
    paths = RunPaths(cheap_world)
    paths.eval_dir.mkdir(parents=True)
    (paths.eval_dir / "results.json").write_text('{"from": "the run"}')
    paths.eval_report.parent.mkdir(parents=True, exist_ok=True)
    paths.eval_report.write_text("the run's report")
    result = eval_flops.measure(cheap_world, peak={"peak_flops": 1e9})  # fixed: the parts are checked, not the machine
    names = [row["name"] for row in result["parts"]]
    scheduled = [step.family.__name__ for step in families.schedule(families.FAMILIES)]
    assert names == [*scheduled, *eval_flops.STAGE_PARTS, eval_flops.REST, "whole stage"]
    flops = {row["name"]: row["flops"] for row in result["parts"]}
    assert flops["score_dense_and_btm"] > 0 and flops["score_flexolmo"] > 0 and flops["run_sweeps"] > 0
    assert flops["score_btx"] == 0  # skipped: btx_router_steps is 0
    assert flops["whole stage"] == sum(flops[name] for name in names[:-2])
    assert result["precision"] == "fp32" and result["parts"][0]["mfu"] == pytest.approx(
        flops["score_dense_and_btm"] / result["parts"][0]["seconds"] / 1e9
    )
    assert stage.FAMILIES is families.FAMILIES and stage.run_sweeps is sweeps.run_sweeps
    assert json.loads((paths.eval_dir / "results.json").read_text()) == {"from": "the run"}
    assert sorted(p.name for p in paths.eval_dir.iterdir()) == ["results.json"]  # the stage's own files are gone
    assert paths.eval_report.read_text() == "the run's report" and not paths.eval_report.with_suffix("").exists()


def test_the_uncounted_stage_rate_comes_from_the_pipeline_summary(tmp_path) -> None:
    result = {"parts": [{"flops": 6 * 10**9}], "peak_flops": {"peak_flops": 4e9}}
    summary = tmp_path / "pipeline_summary.json"
    summary.write_text(json.dumps({"stage_seconds": {"evaluate": 3.0}}))
    assert eval_flops.uncounted_stage(summary, result) == {"seconds": 3.0, "gflop_per_s": 2.0, "mfu": 0.5}
    summary.write_text(json.dumps({"stage_seconds": {"data": 3.0}}))  # a run without the evaluation
    assert eval_flops.uncounted_stage(summary, result) is None
