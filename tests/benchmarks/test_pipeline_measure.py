"""benchmarks/pipeline.py's overhead figure from a run summary: a stage whose steps ran side by side (the data
stage's domains) counts at most its wall time as compute, so it cannot hide the other stages' overhead."""

from __future__ import annotations

import pytest

from tests.benchmarks.conftest import load_benchmark


def _step(stage: str, step: str, compute: float, status: str = "completed") -> dict:
    return {"stage": stage, "step": step, "status": status, "seconds": compute, "result": {"compute_seconds": compute}}


def test_parallel_steps_count_at_most_their_stage_wall_time() -> None:
    summary = {
        "stage_seconds": {"data": 6.0, "expert": 9.0},
        "steps": [
            _step("data", "prepare_domain", 5.0),  # two domains side by side: 10 s of compute in 6 s of wall time
            _step("data", "prepare_domain", 5.0),
            _step("expert", "train_expert", 4.0),
            _step("expert", "train_dense", 3.0),
            _step("expert", "train_dense", 8.0, status="cached"),  # a cache hit computes nothing here
        ],
        "failed": [],
        "skipped": [],
    }
    measured = load_benchmark("pipeline").measured(summary, wall=16.0)
    assert measured["compute_s"] == pytest.approx(6.0 + 7.0)
    assert measured["overhead_s"] == pytest.approx(16.0 - 13.0)
    assert measured["overhead_share"] == pytest.approx(3.0 / 16.0, abs=1e-4)
