"""The experiments on the serving MoE itself, on the bpb subset: the number of active experts (k-sweep), removing one
expert at a time (opt-out), and which experts each domain's tokens are routed to.

Why on a subset: each experiment scores the MoE once per k or per expert; the first `eval.sweep_docs` documents of every
bpb task keep that affordable while every domain is still measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from transformers import FlexOlmoForCausalLM

from model.baselines import set_top_k
from model.optout import masked_experts
from model.scoring import Request, Scores, model_scorer, score_requests
from tasks.evaluation.inputs import tokenize_tasks
from tasks.evaluation.metrics import Layout, TaskScore, bootstrap_indices, domain_table, score_model
from tasks.evaluation.mixed import MIXED_TASK, MixedDoc
from tasks.evaluation.runner import EvalRun, RoutingScorer
from tasks.evaluation.tasks import Task


@dataclass(frozen=True)
class BpbSubset:
    """The bpb tasks cut to their first `eval.sweep_docs` documents, tokenized, with their own bootstrap draws."""

    tasks: list[Task]
    requests: list[Request]
    layout: Layout
    resamples: list[np.ndarray]

    def row(self, scores: Scores, domains: list[str]) -> dict[str, TaskScore]:
        return domain_table(self.tasks, score_model(self.tasks, self.layout, scores, self.resamples), domains, "bpb")


@dataclass(frozen=True)
class Sweeps:
    subset: BpbSubset
    k_sweep: dict[int, dict[str, TaskScore]]  # k -> bpb per domain and average
    opt_out: dict[str, dict[str, TaskScore]]  # removed expert -> change of bpb per domain and average


def subset_tasks(run: EvalRun) -> list[Task]:
    """The bpb tasks cut to their first `eval.sweep_docs` documents (not the mixed-domain documents)."""
    profile = run.profile
    return [
        Task(t.spec, t.items[: profile.eval.sweep_docs], t.eligible)
        for t in run.tasks
        if t.spec.kind == "bpb" and t.spec.domain in profile.domains
    ]


def bpb_subset(run: EvalRun) -> BpbSubset:
    profile = run.profile
    tasks = subset_tasks(run)
    requests, layout = tokenize_tasks(tasks, run.tokenizer, profile.model.max_seq_len)
    return BpbSubset(tasks, requests, layout, bootstrap_indices(tasks, profile.eval.bootstrap, profile.seed + 3))


def run_sweeps(run: EvalRun) -> Sweeps:
    """The k-sweep, then the opt-out of every closed expert (each relative to the MoE at its own top-k)."""
    subset = bpb_subset(run)
    sweep = k_sweep(run, subset)
    return Sweeps(subset, sweep, opt_out(run, subset, sweep[run.default_k]))


def k_sweep(run: EvalRun, subset: BpbSubset) -> dict[int, dict[str, TaskScore]]:
    moe, domains = run.models.moe, list(run.profile.domains)
    sweep: dict[int, dict[str, TaskScore]] = {}
    for k in range(1, run.num_experts + 1):
        set_top_k(moe, k)
        scores = run.runner.run(f"k-sweep k={k}", subset.requests, model_scorer(moe, "k"))["k"]
        sweep[k] = subset.row(scores, domains)
    set_top_k(moe, run.default_k)
    return sweep


def opt_out(run: EvalRun, subset: BpbSubset, full: dict[str, TaskScore]) -> dict[str, dict[str, TaskScore]]:
    """Per closed expert: bpb with it masked out minus bpb with every expert (paired, so the SE is of the change)."""
    moe, domains = run.models.moe, list(run.profile.domains)
    out: dict[str, dict[str, TaskScore]] = {}
    for index, expert in enumerate(run.models.experts[1:], start=1):
        with masked_experts(moe, [index]):
            scores = run.runner.run(f"opt-out {expert}", subset.requests, model_scorer(moe, "o"))["o"]
        row = subset.row(scores, domains)
        out[expert] = {d: TaskScore(row[d].value - full[d].value, row[d].replicates - full[d].replicates) for d in row}
    return out


@dataclass(frozen=True)
class DomainRouting:
    """Per (layer, domain, expert): the share of the domain's tokens whose top-k holds the expert, and the expert's
    mean router probability on them (a near-uniform router shows here even when every expert is in the top-k)."""

    share: np.ndarray
    mass: np.ndarray


def routing_by_domain(run: EvalRun, sub_tasks: Sequence[Task], moe: FlexOlmoForCausalLM | None = None) -> DomainRouting:
    """Where each domain's tokens (bpb subset) go in `moe` (default: the serving MoE): top-k share and router mass
    per layer."""
    moe, profile, tokenizer = run.models.moe if moe is None else moe, run.profile, run.tokenizer
    domains = list(profile.domains)
    out = np.zeros((len(moe.model.layers), len(domains), moe.config.num_experts))
    mass = np.zeros_like(out)
    for column, domain in enumerate(domains):
        mine = [t for t in sub_tasks if t.spec.domain == domain]
        if not mine:
            continue
        requests, _ = tokenize_tasks(mine, tokenizer, profile.model.max_seq_len)
        scorer = RoutingScorer(moe, "r")
        score_requests(requests, scorer, profile.eval.batch_size, tokenizer.pad_token_id, run.device)
        out[:, column, :] = (scorer.hits / max(scorer.tokens, 1)).numpy()
        mass[:, column, :] = (scorer.mass / max(scorer.tokens, 1)).numpy()
    return DomainRouting(out, mass)


def routing_at_switch(run: EvalRun, docs: Sequence[MixedDoc]) -> dict[str, tuple[float, float]]:
    """Whether the serving MoE's routing follows a mixed document's first domain switch: per document, the share of
    tokens (mean over layers) whose top-k holds the first paragraph's expert, and the second's, before the switch (the
    prefix and the rest of the first paragraph) and after it. The tokens after the switch are counted as the whole
    request's minus the before-the-switch request's (same tokens up to the switch, so a causal model routes them the
    same in both). (mean, SE) over the documents whose two domains both have an expert."""
    if not docs or run.tasks[-1].spec.name != MIXED_TASK:
        return {}
    moe, experts = run.models.moe, run.models.experts
    shares: dict[str, list[float]] = {}
    for doc, (whole, before) in zip(docs, run.layout.offsets[-1], strict=True):
        first, second = doc.segments[0].domain, doc.segments[1].domain
        if first not in experts or second not in experts:
            continue
        counts = []
        for request in (run.requests[before], run.requests[whole]):
            scorer = RoutingScorer(moe, "r")
            score_requests([request], scorer, 1, run.tokenizer.pad_token_id, run.device)
            counts.append((scorer.hits.mean(dim=0), scorer.tokens))  # (experts,) mean over layers
        (hits_before, tokens_before), (hits_whole, tokens_whole) = counts
        if tokens_whole <= tokens_before:  # the window ended before the switch
            continue
        after = (hits_whole - hits_before) / (tokens_whole - tokens_before)
        for side, share in (("before", hits_before / tokens_before), ("after", after)):
            for which, domain in (("first", first), ("second", second)):
                shares.setdefault(f"{which} paragraph's expert, {side} the switch", []).append(
                    float(share[experts.index(domain)])
                )
    return {key: _mean_and_se(values) for key, values in shares.items()}


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values)
    se = float(array.std(ddof=1) / np.sqrt(len(array))) if len(array) > 1 else float("nan")
    return float(array.mean()), se
