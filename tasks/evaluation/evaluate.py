"""`evaluate(profile)`: FLEXMIX-small on M_pub, the dense models, every baseline, FlexOlmo, its ablations and opt-outs.

Why it is shaped like this: the dense members' forward passes are shared (one ensemble pass yields each dense model's
scores, BTM's, prompt routing's and the weighted soup's weights), so the comparison costs little more than scoring each
model once. Every number goes through `model.scoring` (one harness), every score carries a paired bootstrap SE.
Inputs are the other stages' outputs: test splits and tokenizer (data), M_pub and dense models (training), the assembled
MoE (from the registry's `serving` version when a registry exists, else `RunPaths.moe_dir`), router embeddings (route).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.memory import collect_only_new_objects, release_freed_memory
from model.scoring import Request
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.device import resolve_run_precision, torch_device
from tasks.core.errors import DataError
from tasks.core.tokenizer import load_tokenizer
from tasks.evaluation.families import FAMILIES, btm_label, schedule
from tasks.evaluation.inputs import (
    append_mixed,
    held_out_split_paths,
    load_models,
    load_test_frames,
    tokenize_tasks,
)
from tasks.evaluation.metrics import Layout, TaskScore, bootstrap_indices, score_model, switch_scores
from tasks.evaluation.mixed import MIXED_TASK, MixedDoc, build_mixed, with_mixed
from tasks.evaluation.report import write_report
from tasks.evaluation.results import EvalResult, ReportInputs
from tasks.evaluation.runner import EvalRun, Runner, machine_description
from tasks.evaluation.sweeps import DomainRouting, Sweeps, routing_at_switch, routing_by_domain, run_sweeps
from tasks.evaluation.tasks import Task, build_tasks, write_lm_eval_files


def check_benchmark_data(profile: Profile, domains: list[str] | None = None) -> dict[str, Any]:
    """Build every FLEXMIX task on these domains' test splits now (cheap: no model, no tokenizer), so a test split too
    small for the benchmark is one clear error at the data stage, naming every domain and task it affects, instead of a
    failed evaluation after all the training. With every domain's split, the mixed-domain documents are built too.
    Returns the item count of each task."""
    problems, counts = [], {}
    frames = load_test_frames(profile, domains)
    for domain, frame in frames.items():
        try:
            tasks = build_tasks({domain: frame}, profile.eval, profile.seed, held_out_split_paths(profile, [domain]))
        except DataError as exc:
            problems.append(str(exc))
            continue
        counts.update({task.spec.name: len(task.items) for task in tasks})
    if set(frames) == set(profile.domains) and profile.eval.mixed_docs:
        try:
            counts[MIXED_TASK] = len(build_mixed(frames, profile.eval, profile.seed))
        except DataError as exc:
            problems.append(f"mixed-domain documents: {exc}")
    if problems:
        raise DataError("the FLEXMIX benchmark cannot be built from these test splits:\n  " + "\n  ".join(problems))
    return {"tasks": counts}


def evaluate(profile: Profile, progress: bool = True, moe_dir: Path | None = None) -> EvalResult:
    """Run FLEXMIX-small and write `reports/flexmix-<profile>.md` with its figures; returns paths, metrics and timings.
    `moe_dir`: this MoE instead of the deployed one (`flows.headless` evaluates what it just assembled)."""
    threads = torch.get_num_threads()
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    try:
        with collect_only_new_objects():  # each family's collection scans what the stage made, not the whole process
            release_freed_memory()  # what earlier stages of the same process freed is not counted as this stage's peak
            return _evaluate(profile, progress, moe_dir)
    finally:
        torch.set_num_threads(threads)
        release_freed_memory()  # the models are gone: `flexo run`'s next stage starts from what is really in use


def _evaluate(profile: Profile, progress: bool, moe_dir: Path | None) -> EvalResult:
    """Inputs first (every missing one is a clear error before any model work), then every family in `FAMILIES`
    order, the experiments on the MoE, and the report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    device = torch_device(profile)
    tokenizer = load_tokenizer(profile)
    inputs = scoring_inputs(profile, tokenizer)
    tasks, docs, scored, requests, layout = inputs.tasks, inputs.docs, inputs.scored, inputs.requests, inputs.layout
    write_lm_eval_files(with_mixed(tasks, docs), RunPaths(profile).eval_dir / "tasks")
    resamples = bootstrap_indices(scored, profile.eval.bootstrap, profile.seed)
    models = load_models(profile, device, moe_dir)
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress
    )
    precision = resolve_run_precision(profile, device)
    with bar:
        runner = Runner(profile, device, tokenizer.pad_token_id, bar, precision)
        run = EvalRun(profile, device, tokenizer, scored, requests, layout, models, runner)
        run_families(run)
        sweeps = run_sweeps(run)
    with runner.autocast():
        by_domain = routing_by_domain(run, sweeps.subset.tasks)
        switch = routing_at_switch(run, docs)
    per_model = {name: score_model(scored, layout, scores, resamples) for name, scores in run.results.items()}
    mixed_rows = _mixed_rows(per_model, run, resamples)
    report = _report_inputs(run, tasks, per_model, sweeps, by_domain, time.perf_counter() - started)
    return write_report(replace(report, mixed=mixed_rows, mixed_docs=docs, switch_routing=switch))


@dataclass(frozen=True)
class ScoringInputs:
    """What every model is scored on: the FLEXMIX tasks, the mixed-domain documents, and the requests of both (the
    mixed documents' after every task's, as one more scored task)."""

    tasks: list[Task]
    docs: list[MixedDoc]
    scored: list[Task]  # tasks, then the mixed-document task where there are documents
    requests: list[Request]
    layout: Layout


def scoring_inputs(profile: Profile, tokenizer) -> ScoringInputs:
    """The evaluation's requests, in its order. Why one function: a model scored outside the stage (a benchmark) gets
    the evaluation's scores only on the same requests in the same batches, and which batch a request lands in depends
    on every other request (length-sorted packing, the mixed documents included)."""
    frames = load_test_frames(profile)
    tasks = build_tasks(frames, profile.eval, profile.seed, held_out_split_paths(profile))
    docs = build_mixed(frames, profile.eval, profile.seed)
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    scored = list(tasks)
    if docs:  # after every FLEXMIX task: their requests, layout and bootstrap draws stay what they were
        mixed, requests, layout = append_mixed(requests, layout, docs, tokenizer, profile.model.max_seq_len)
        scored.append(mixed)
    return ScoringInputs(tasks, docs, scored, requests, layout)


_ORDERED = ("results", "costs", "extras", "skipped", "ablation_rows")  # EvalRun's dicts whose order is the report's


def run_families(run: EvalRun) -> None:
    """Every family of `FAMILIES`, in `schedule`'s order (each model group dropped after its last reader), then every
    record put back in `FAMILIES` order, so the report's rows, notes and pass times read as if they had run in it."""
    start = [list(record) for record in _records(run)]
    added: dict[str, list[list[Any]]] = {}
    for step in schedule(FAMILIES):
        before = [set(record) for record in _records(run)]
        step.family(run)
        added[step.family.__name__] = [[k for k in r if k not in b] for b, r in zip(before, _records(run), strict=True)]
        for group in step.release:
            run.models.release(group, f"no family after {step.family.__name__} reads it")
        release_freed_memory()  # the family's own models (soups, trained MoEs), released groups and activations
    for index, record in enumerate(_records(run)):
        order = start[index] + [k for f in FAMILIES for k in added[f.__name__][index]]
        kept = [k for k in dict.fromkeys(order) if k in record]
        if len(kept) != len(record):
            raise RuntimeError(f"evaluation records out of order: {list(record)} vs {kept}")
        items = [(k, record[k]) for k in kept]
        record.clear()  # in place: every holder of the dict sees the report's order
        record.update(items)


def _records(run: EvalRun) -> list[dict[Any, Any]]:
    return [*(getattr(run, name) for name in _ORDERED), run.runner.seconds]


def _mixed_rows(
    per_model: dict[str, dict[str, TaskScore]], run: EvalRun, resamples: list[np.ndarray]
) -> dict[str, dict[str, TaskScore]]:
    """Each model's mixed-document scores (whole document, before and after the first switch), taken out of
    `per_model` so that every FLEXMIX table stays as it was."""
    rows: dict[str, dict[str, TaskScore]] = {}
    if not run.tasks or run.tasks[-1].spec.name != MIXED_TASK:
        return rows
    index, resample = run.layout.offsets[-1], resamples[-1]
    for name, row in per_model.items():
        whole = row.pop(MIXED_TASK)
        rows[name] = {"document": whole, **switch_scores(index, run.results[name], run.layout.n_bytes, resample)}
    return rows


def _report_inputs(
    run: EvalRun,
    tasks: list[Task],
    per_model: dict[str, dict[str, TaskScore]],
    sweeps: Sweeps,
    by_domain: DomainRouting,
    seconds: float,
) -> ReportInputs:
    routing = run.routing
    return ReportInputs(
        profile=run.profile,
        tasks=tasks,
        per_model=per_model,
        domains=list(run.profile.domains),
        experts=run.models.experts,
        default_k=run.default_k,
        btm_label=btm_label(run),
        sweep=sweeps.k_sweep,
        optout=sweeps.opt_out,
        routing_overall=(routing.hits / max(routing.tokens, 1)).numpy(),
        routing_by_domain=by_domain.share,
        router_mass_by_domain=by_domain.mass,
        tuned_router_mass_by_domain=run.tuned_router_mass,
        extras=run.extras,
        skipped=run.skipped,
        seconds={**run.runner.seconds, "total": seconds},
        machine=f"{machine_description(run.device)}; {run.precision} matmuls",
        ablation_rows=run.ablation_rows,
        costs=run.costs,
        context=run.context,
    )
