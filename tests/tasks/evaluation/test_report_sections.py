"""The report's chance margins and quality-vs-cost figure on hand-made scores (no model needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluation.figures import quality_vs_cost
from tasks.evaluation.metrics import TaskScore
from tasks.evaluation.sections import chance_cells, chance_margin
from tasks.evaluation.tasks import Task, TaskSpec


def _task(kind: str, chance: float) -> Task:
    return Task(TaskSpec(f"x_{kind}", "x", kind, "", chance, kind != "bpb"), [], 0)  # type: ignore[arg-type]


def _score(value: float, spread: float) -> TaskScore:
    return TaskScore(value, value + spread * np.array([-1.0, 1.0]))  # SE = spread * sqrt(2)


def test_the_margin_counts_standard_errors_in_the_better_direction():
    se = math.sqrt(2)
    assert chance_margin(_task("mc", 0.25), _score(0.55, 0.1)) == pytest.approx(0.3 / (0.1 * se))
    assert chance_margin(_task("bpb", 8.0), _score(3.0, 1.0)) == pytest.approx(5.0 / se)  # bpb: below chance
    assert chance_margin(_task("mc", 0.25), _score(0.2, 0.1)) < 0
    assert chance_margin(_task("mc", 0.25), _score(0.0, 0.0)) == -math.inf  # every item wrong
    assert chance_margin(_task("em", 0.0), _score(0.0, 0.0)) == 0.0


def test_the_task_row_says_whether_m_pub_separates():
    task = _task("mc", 0.25)
    assert chance_cells(task, {"x_mc": _score(0.75, 0.1)})[1] == "+3.5 SE (yes)"
    assert chance_cells(task, {"x_mc": _score(0.3, 0.1)})[1] == "+0.4 SE (no)"
    assert chance_cells(task, {"x_mc": _score(1.0, 0.0)})[1] == "above chance, SE 0 (yes)"
    assert chance_cells(task, {}) == ["–", "–"]


def test_quality_vs_cost_draws_a_png(tmp_path):
    names = ["M_pub", "dense a", "dense b", "BTM (top-2)", "FlexOlmo (no RT)"]
    flops = np.array([1.0, 1.0, 1.0, 2.0, 1.6])
    values = {"bpb": np.array([3.0, 2.9, 2.95, 2.8, 2.7]), "acc": np.array([0.3, 0.32, 0.31, 0.35, 0.36])}
    errors = {k: np.full(5, 0.01) for k in values}
    path = quality_vs_cost(names, flops, values, errors, tmp_path / "q.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
