"""FLEXMIX metrics inside lm-evaluation-harness (`process_results` of every FLEXMIX task config), and flexo's paired
bootstrap computed back from lm-eval's per-sample outputs.

Why our own `process_results`: a FLEXMIX score divides by the UTF-8 bytes that were scored. The flexo model type
(`tasks.evaluation.lm_eval_model`) returns each log-likelihood as a `ScoredLoglikelihood`, a (loglik, is_greedy) pair
that also carries those bytes (fewer than the text's when the target was cut to the model's window); any other model
returns a plain pair, and the text's bytes are used. Each sample keeps the values the bootstrap needs (`bits`/`bytes`
for bits per byte, `acc` for accuracies), so `task_scores` recomputes our scores and standard errors from lm-eval's
logged samples without touching a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tasks.evaluation.lm_eval_tasks import lm_eval_name
from tasks.evaluation.metrics import TaskScore, task_score
from tasks.evaluation.tasks import Task


def scored_bytes(result: Any, text: str) -> int:
    """The bytes a log-likelihood covers: what the flexo model reports, else the whole text's."""
    n_bytes = getattr(result, "n_bytes", None)
    return int(n_bytes) if n_bytes is not None else len(text.encode("utf-8"))


def bpb_results(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, Any]:
    """Bits per byte of the continuation after the prefix: lm-eval aggregates (loglik, bytes) pairs as
    -sum(loglik) / (ln 2 * sum(bytes)), FLEXMIX's total-bits-over-total-bytes."""
    (result,) = results
    return {"bits_per_byte": (float(result[0]), scored_bytes(result, doc["target"]))}


def mc_results(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """1 when the choice with the highest log-likelihood per scored byte is the gold one (first choice on a tie)."""
    per_byte = [float(r[0]) / max(scored_bytes(r, c), 1) for r, c in zip(results, doc["choices"], strict=True)]
    return {"acc": float(int(np.argmax(per_byte)) == int(doc["gold"]))}


def em_results(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """1 when greedy decoding reproduces the target: every target token is the argmax (lm-eval's `is_greedy`)."""
    (result,) = results
    return {"acc": float(bool(result[1]))}


def item_values(task: Task, samples: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(values, weights) per item in the task's item order, from lm-eval's logged samples of that task (the same
    arrays `metrics.item_outcomes` computes from flexo's own scores)."""
    if len(samples) != len(task.items):
        raise ValueError(f"{lm_eval_name(task.spec.name)}: {len(samples)} samples logged for {len(task.items)} items")
    ordered = sorted(samples, key=lambda s: int(s["doc_id"]))
    ids = [s["doc"]["id"] for s in ordered]
    if ids != [item.doc_id for item in task.items]:
        raise ValueError(f"{lm_eval_name(task.spec.name)}: the logged samples are not this task's items")
    if task.spec.kind == "bpb":
        pairs = [s["bits_per_byte"] for s in ordered]
        bits = np.array([-float(ll) / math.log(2) for ll, _ in pairs])
        return bits, np.array([float(n) for _, n in pairs])
    return np.array([float(s["acc"]) for s in ordered]), np.ones(len(ordered))


def task_scores(
    tasks: Sequence[Task], samples: Mapping[str, Sequence[Mapping[str, Any]]], resamples: Sequence[np.ndarray]
) -> dict[str, TaskScore]:
    """Every task's score with its paired bootstrap replicates (`metrics.bootstrap_indices`, shared by every model),
    from `simple_evaluate(..., log_samples=True)["samples"]`."""
    out = {}
    for task, resample in zip(tasks, resamples, strict=True):
        name = lm_eval_name(task.spec.name)
        if name not in samples:
            raise KeyError(f"{name}: no samples logged (was it in --tasks, with log_samples on?)")
        values, weights = item_values(task, samples[name])
        out[task.spec.name] = task_score(values, weights, resample)
    return out
