"""From per-request log-likelihoods to task scores, bootstrap standard errors and the FLEXMIX tables.

Why paired bootstrap: every model is scored on the same resampled items (one index draw per task and replicate), so the
standard error of an average, and of a gap between two models, reflects item sampling noise only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model.scoring import Scores
from tasks.evaluation.tasks import Task


@dataclass(frozen=True)
class Layout:
    """Where each task's requests sit in the flat request list: task -> item -> choice."""

    offsets: list[np.ndarray]  # per task: (items, choices) request indices
    n_bytes: np.ndarray  # per request: UTF-8 bytes of the (possibly truncated) target


def item_outcomes(task: Task, index: np.ndarray, scores: Scores, n_bytes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, weights) per item; the task score is sum(values) / sum(weights).

    bpb: bits and bytes per document; mc: 1 when the best log-likelihood per byte is the gold choice; em: greedy
    match."""
    if task.spec.kind == "bpb":
        requests = index[:, 0]
        return -scores.loglik[requests] / math.log(2), n_bytes[requests].astype(np.float64)
    if task.spec.kind == "mc":
        per_byte = scores.loglik[index] / np.maximum(n_bytes[index], 1)
        gold = np.array([item.gold for item in task.items])
        return (per_byte.argmax(axis=1) == gold).astype(np.float64), np.ones(len(task.items))
    return scores.greedy[index[:, 0]].astype(np.float64), np.ones(len(task.items))


def bootstrap_indices(tasks: list[Task], replicates: int, seed: int) -> list[np.ndarray]:
    """One (replicates, items) resampling matrix per task, shared by every model (paired comparison)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, len(t.items), size=(replicates, len(t.items))) for t in tasks]


@dataclass
class TaskScore:
    value: float
    replicates: np.ndarray  # bootstrap replicates of the score

    @property
    def se(self) -> float:
        return float(np.std(self.replicates, ddof=1)) if len(self.replicates) > 1 else float("nan")


def task_score(values: np.ndarray, weights: np.ndarray, resample: np.ndarray) -> TaskScore:
    replicates = values[resample].sum(axis=1) / weights[resample].sum(axis=1)
    return TaskScore(float(values.sum() / weights.sum()), replicates)


def score_model(tasks: list[Task], layout: Layout, scores: Scores, resamples: list[np.ndarray]) -> dict[str, TaskScore]:
    """Every task's score (with bootstrap replicates) for one model."""
    out = {}
    for task, index, resample in zip(tasks, layout.offsets, resamples, strict=True):
        values, weights = item_outcomes(task, index, scores, layout.n_bytes)
        out[task.spec.name] = task_score(values, weights, resample)
    return out


def switch_scores(index: np.ndarray, scores: Scores, n_bytes: np.ndarray, resample: np.ndarray) -> dict[str, TaskScore]:
    """Bits per byte of mixed-domain documents (`index` columns: whole document, the same stopped at the first domain
    switch) before the switch and after it, on the task's bootstrap draws."""
    whole, before = index[:, 0], index[:, 1]
    bits_before = -scores.loglik[before] / math.log(2)
    bits_after = -(scores.loglik[whole] - scores.loglik[before]) / math.log(2)
    bytes_before = n_bytes[before].astype(np.float64)
    return {
        "before switch": task_score(bits_before, bytes_before, resample),
        "after switch": task_score(bits_after, n_bytes[whole] - bytes_before, resample),
    }


def _mean(scores: list[TaskScore]) -> TaskScore:
    return TaskScore(float(np.mean([s.value for s in scores])), np.mean([s.replicates for s in scores], axis=0))


def domain_table(
    tasks: list[Task], per_task: dict[str, TaskScore], domains: list[str], metric: str
) -> dict[str, TaskScore]:
    """Columns: each domain's bpb (metric="bpb") or mean task accuracy (metric="acc"), plus "average" over domains."""
    row: dict[str, TaskScore] = {}
    for domain in domains:
        chosen = [
            per_task[t.spec.name]
            for t in tasks
            if t.spec.domain == domain and (t.spec.kind == "bpb") == (metric == "bpb") and t.spec.name in per_task
        ]
        if chosen:
            row[domain] = _mean(chosen)
    if row:
        row["average"] = _mean(list(row.values()))
    return row


def relative_gain(model: TaskScore, reference: TaskScore, higher_is_better: bool) -> TaskScore:
    """(model - reference) / reference, sign flipped for bpb so that positive always means better; paired replicates."""
    sign = 1.0 if higher_is_better else -1.0
    with np.errstate(
        divide="ignore", invalid="ignore"
    ):  # a reference at 0 (e.g. exact match) gives nan/inf, shown as such
        value = sign * (model.value - reference.value) / reference.value if reference.value else float("nan")
        replicates = sign * (model.replicates - reference.replicates) / reference.replicates
    return TaskScore(float(value), replicates)
