"""The scoring pass every model family goes through, and the state one evaluation run shares between families.

Why one runner: every model is scored by the same harness (`model.scoring`) in the same precision, with one progress
bar and one wall-time record per pass, so the families differ only in how they build their model.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import FlexOlmoForCausalLM

from model.attribution import record_routing
from model.precision import Precision, autocast
from model.scoring import (
    Batch,
    BatchScore,
    Request,
    Scores,
    model_scorer,
    reduce_target_logits,
    score_requests,
    target_logits,
)
from tasks.core.config import Profile
from tasks.evaluation.cost import Cost, mean_context, model_cost
from tasks.evaluation.inputs import Models
from tasks.evaluation.metrics import Layout
from tasks.evaluation.results import FLEX
from tasks.evaluation.tasks import Task


class Runner:
    """Scores request lists with a rich progress bar and records wall time per name; every model in one precision."""

    def __init__(self, profile: Profile, device: torch.device, pad_id: int, progress, precision: Precision) -> None:
        self.profile, self.device, self.pad_id, self.progress = profile, device, pad_id, progress
        self.precision = precision
        self.seconds: dict[str, float] = {}

    def autocast(self):
        """The pass's autocast (log-softmax stays fp32). One context per pass, never one around the whole evaluation:
        autocast keeps a bf16 copy of every trainable-flagged weight it casts until its context exits, so one outer
        context kept every model the evaluation builds (soups, MoEs) alive as bf16 copies (11.3 GiB peak)."""
        return autocast(self.precision, self.device)

    def run(self, label: str, requests: Sequence[Request], scorer) -> dict[str, Scores]:
        start = time.perf_counter()
        bar = self.progress.add_task(label, total=len(requests)) if self.progress else None
        advance = (lambda n: self.progress.advance(bar, n)) if bar is not None else None
        with self.autocast():
            out = score_requests(requests, scorer, self.profile.eval.batch_size, self.pad_id, self.device, advance)
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
        return out


class RoutingScorer:
    """A MoE scorer that also counts, per layer, how many tokens each expert was selected for (top-k), and sums each
    expert's router probability over them (`mass`: how much of the layer's output it carries, not just whether).
    Counted over the tokens the pass runs: a context its requests share (`model.scoring.Batch`) counts once."""

    def __init__(self, moe: FlexOlmoForCausalLM, name: str) -> None:
        self.moe, self.name = moe, name
        layers, experts = len(moe.model.layers), moe.config.num_experts
        self.hits = torch.zeros(layers, experts, dtype=torch.float64)
        self.mass = torch.zeros(layers, experts, dtype=torch.float64)
        self.tokens = 0

    def __call__(self, batch: Batch) -> dict[str, BatchScore]:
        with record_routing(self.moe) as record:
            logits = target_logits(self.moe, batch)
        valid = batch.attention_mask.reshape(-1).bool().cpu()
        for layer, (selected, probs) in enumerate(zip(record.selected[-1], record.probabilities[-1], strict=True)):
            self.hits[layer] += selected.cpu()[valid].double().sum(dim=0)
            self.mass[layer] += probs.cpu()[valid].double().sum(dim=0)
        self.tokens += int(valid.sum())
        return {self.name: reduce_target_logits(logits, batch)}


@dataclass
class EvalRun:
    """One evaluation's inputs and what it has scored so far. Families append to `results`, `extras` and `skipped` in
    the order they run, which is the order of the report's rows and notes."""

    profile: Profile
    device: torch.device
    tokenizer: Any
    tasks: list[Task]
    requests: list[Request]
    layout: Layout
    models: Models
    runner: Runner
    results: dict[str, Scores] = field(default_factory=dict)
    extras: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    routing: RoutingScorer = field(init=False)  # the serving MoE's routing counts, filled by its pass (`FLEX`)
    ablation_rows: dict[str, str] = field(default_factory=dict)  # router ablation row -> its reference row
    costs: dict[str, Cost] = field(default_factory=dict)  # model -> inference FLOPs per token (`cost`)
    tuned_router_mass: np.ndarray | None = None  # the router-tuned MoE's `DomainRouting.mass`, where RT ran
    default_k: int = field(init=False)  # the serving MoE's top-k as loaded (the k-sweep changes it, then restores it)
    num_experts: int = field(init=False)
    context: float = field(init=False)  # mean attended positions per token of `requests` (the FLOPs of attention)

    def __post_init__(self) -> None:
        self.default_k = self.models.moe.config.num_experts_per_tok
        self.num_experts = self.models.moe.config.num_experts
        self.context = mean_context(self.requests)
        self.routing = RoutingScorer(self.models.moe, FLEX)
        self.skipped.update(self.models.skipped)

    @property
    def precision(self) -> Precision:
        return self.runner.precision

    def score(self, name: str, model: torch.nn.Module) -> None:
        """One model's pass over every request, recorded under `name` with its cost per token."""
        self.results.update(self.runner.run(name, self.requests, model_scorer(model, name)))
        self.costs[name] = model_cost(model.config, self.context)


def machine_description(device: torch.device) -> str:
    """Where the numbers were measured (reported with them)."""
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {torch.get_num_threads()} torch threads "
        f"({len(os.sched_getaffinity(0))} CPUs usable){gpu}; torch {torch.__version__}"
    )
