"""The `evaluate` flow around a stand-in for the evaluation (no model is scored): the benchmark table it publishes
comes from the keys the evaluation's result really has; under Prefect's harness an unchanged rerun is a cache hit and
an edit to any module of the evaluation package is not."""

from __future__ import annotations

import dataclasses
import json
import typing

import pytest

import flows.evaluate as evaluate_flow
from flows.evaluate import benchmark_rows
from flows.steps import STEPS, code_fingerprint
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.hashing import jsonable
from tests.flows.conftest import area_module, edit

EvalResult = typing.get_type_hints(STEPS["evaluate"].function)["return"]  # what the evaluation step returns

METRICS = {  # as the evaluation names them: "<table>/<model>/<column>" (MLflow-safe model names)
    "bpb/M_pub/public": 1.91,
    "bpb/M_pub/code": 2.4,
    "bpb/M_pub/average": 2.155,
    "bpb/FlexOlmo_no_RT/public": 1.9,
    "bpb/FlexOlmo_no_RT/code": 2.1,
    "bpb/FlexOlmo_no_RT/average": 2.0,
    "acc/M_pub/code": 0.25,
    "acc/M_pub/average": 0.25,
    "seconds/total": 12.5,
}


def eval_result(profile: Profile) -> typing.Any:
    """An EvalResult built by hand, its files written where the evaluation writes them."""
    eval_dir = RunPaths(profile).eval_dir
    eval_dir.mkdir(parents=True, exist_ok=True)
    results, report = eval_dir / "results.json", eval_dir / "report.md"
    results.write_text(json.dumps(METRICS))
    report.write_text("# FLEXMIX-small\n")
    return EvalResult(
        report=report,
        results_json=results,
        tables={"bpb": eval_dir / "table_bpb.csv"},
        figures={},
        metrics=dict(METRICS),
        skipped={"BTX": "eval.btx_router_steps is 0"},
        seconds={"total": 12.5},
    )


def test_the_benchmark_table_is_built_from_the_evaluation_result(tmp_profile) -> None:
    assert benchmark_rows(jsonable(eval_result(tmp_profile))) == [
        {"table": "bpb", "model": "M_pub", "public": 1.91, "code": 2.4, "average": 2.155},
        {"table": "bpb", "model": "FlexOlmo_no_RT", "public": 1.9, "code": 2.1, "average": 2.0},
        {"table": "acc", "model": "M_pub", "public": None, "code": 0.25, "average": 0.25},
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_evaluate_publishes_its_table_and_misses_the_cache_after_an_edit(world, code_tree, monkeypatch) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    edited = area_module(code_tree, STEPS["evaluate"].function)
    scored: list[str] = []

    def stand_in(profile: Profile) -> typing.Any:
        scored.append(profile.name)
        return eval_result(profile)

    published: list[list[dict]] = []
    real_publish = evaluate_flow.publish_table

    def record(key: str, rows: list[dict], description: str) -> None:
        if key == "flexo-benchmark":
            published.append(rows)
        real_publish(key, rows, description)

    monkeypatch.setitem(STEPS, "evaluate", dataclasses.replace(STEPS["evaluate"], target=stand_in))
    monkeypatch.setattr(evaluate_flow, "code_fingerprint", lambda step: code_fingerprint(step, root=code_tree))
    monkeypatch.setattr(evaluate_flow, "publish_table", record)

    first = evaluate_flow.evaluate(profile=world, moe_sha="moe-v1")
    second = evaluate_flow.evaluate(profile=world, moe_sha="moe-v1")
    edit(edited)
    third = evaluate_flow.evaluate(profile=world, moe_sha="moe-v1")

    assert [run[0]["status"] for run in (first, second, third)] == ["completed", "cached", "completed"]
    assert len(scored) == 2
    assert published[0] and published[0] == benchmark_rows(first[0]["result"]) == published[1]
    with get_client(sync_client=True) as client:
        stored = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["flexo-benchmark"])))
    assert any(json.loads(a.data) == published[0] for a in stored if isinstance(a.data, str))
