"""`evaluate(profile)`: FLEXMIX-small on M_pub, the dense models, every baseline, FlexOlmo, its ablations and opt-outs.

Why it is shaped like this: the dense members' forward passes are shared (one ensemble pass yields each dense model's
scores, BTM's, prompt routing's and the weighted soup's weights), so the comparison costs little more than scoring each
model once. Every number goes through `model.scoring` (one harness), every score carries a paired bootstrap SE.
Inputs are the other stages' outputs: test splits and tokenizer (data), M_pub and dense models (training), the assembled
MoE (from the registry's `serving` version when a registry exists, else `RunPaths.moe_dir`), router embeddings (route).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from model.attribution import record_routing
from model.baselines import (
    EnsembleScorer,
    btx_merge,
    dense_as_expert,
    nearest_centroid,
    random_router_rows,
    routing_weights,
    set_top_k,
    train_moe,
    uniform_soup,
    upcycle,
    weighted_soup,
)
from model.config import default_top_k
from model.merge import merge_experts
from model.optout import masked_experts
from model.precision import Precision, autocast, resolve_precision
from model.public import load_moe, load_public_model
from model.scoring import (
    Batch,
    BatchScore,
    Request,
    Scores,
    model_scorer,
    reduce_logprobs,
    score_requests,
    token_logprobs,
)
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.core.errors import DataError
from tasks.evaluation.metrics import Layout, TaskScore, bootstrap_indices, domain_table, score_model
from tasks.evaluation.tasks import Task, build_tasks, write_lm_eval_files
from tasks.training.assemble import locate_moe

PUBLIC = "M_pub"
BTM = "BTM (top-{k})"
SOUP_UNIFORM = "soup (uniform)"
SOUP_WEIGHTED = "soup (weighted)"
PROMPT = "prompt routing"
BTX = "BTX"
FLEX = "FlexOlmo (no RT)"
FLEX_RT = "FlexOlmo (RT, public)"
UNRESTRICTED = "unrestricted MoE"
NO_COORD = "ablation: no coordinated training"


def dense_name(domain: str) -> str:
    return f"dense {domain}"


@dataclass
class EvalResult:
    """What `flexo eval` produced; the registry/orchestration side logs these paths and metrics."""

    report: Path
    results_json: Path
    tables: dict[str, Path]
    figures: dict[str, Path]
    metrics: dict[str, float]  # flat: "<table>/<model>/<column>" -> value
    skipped: dict[str, str]  # model -> why it was not evaluated
    seconds: dict[str, float]  # wall time per evaluated model / experiment


@dataclass
class _Models:
    public: torch.nn.Module
    dense: dict[str, torch.nn.Module]
    moe: torch.nn.Module
    moe_dir: Path
    experts: list[str]
    skipped: dict[str, str] = field(default_factory=dict)


def _device(profile: Profile) -> torch.device:
    wanted = profile.runtime.device
    if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


# ---- inputs ------------------------------------------------------------------------------------------------------


def load_test_frames(profile: Profile, domains: list[str] | None = None) -> dict[str, pd.DataFrame]:
    frames = {}
    for domain, split in held_out_split_paths(profile, domains).items():
        if not split.exists():
            raise DataError(
                f"{split}: the test split of '{domain}' is missing; run `flexo data --domain {domain}` first"
            )
        frames[domain] = pd.read_parquet(split)
    return frames


def held_out_split_paths(profile: Profile, domains: list[str] | None = None) -> dict[str, Path]:
    """Where each domain's test split lives, for error messages that name the file."""
    paths = RunPaths(profile)
    return {domain: paths.split(domain, "test") for domain in domains or profile.domains}


def check_benchmark_data(profile: Profile, domains: list[str] | None = None) -> dict[str, Any]:
    """Build every FLEXMIX task on these domains' test splits now (cheap: no model, no tokenizer), so a test split too
    small for the benchmark is one clear error at the data stage, naming every domain and task it affects, instead of a
    failed evaluation after all the training. Returns the item count of each task."""
    problems, counts = [], {}
    for domain, frame in load_test_frames(profile, domains).items():
        try:
            tasks = build_tasks({domain: frame}, profile.eval, profile.seed, held_out_split_paths(profile, [domain]))
        except DataError as exc:
            problems.append(str(exc))
            continue
        counts.update({task.spec.name: len(task.items) for task in tasks})
    if problems:
        raise DataError("the FLEXMIX benchmark cannot be built from these test splits:\n  " + "\n  ".join(problems))
    return {"tasks": counts}


def load_tokenizer(profile: Profile):
    from transformers import AutoTokenizer

    directory = RunPaths(profile).tokenizer_dir
    if not directory.exists():
        raise DataError(f"{directory}: the tokenizer is missing; run the data stage (train_tokenizer) first")
    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if tokenizer.pad_token_id is None:
        raise DataError(f"{directory}: the tokenizer defines no pad_token; the data stage must set it")
    return tokenizer


def tokenize_tasks(tasks: Sequence[Task], tokenizer, max_len: int) -> tuple[list[Request], Layout]:
    """Flat request list + layout. The context keeps at most half the window (its last tokens); the target is cut to fit,
    and its bytes are counted after the cut, so bits per byte always divide by exactly the bytes that were scored."""

    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    requests: list[Request] = []
    n_bytes: list[int] = []
    offsets = []
    fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
    for task in tasks:
        contexts = encode([item.context for item in task.items])
        width = len(task.items[0].choices)
        choices = encode([c for item in task.items for c in item.choices])
        index = np.arange(len(requests), len(requests) + width * len(task.items)).reshape(len(task.items), width)
        for row, (item, ctx) in enumerate(zip(task.items, contexts)):
            ctx = ctx[-(max_len // 2) :] or [fallback]
            for column in range(width):
                full = choices[row * width + column]
                target = full[: max_len - len(ctx)]
                if not target:
                    raise DataError(f"task {task.spec.name}, item {item.doc_id}: choice {column} tokenizes to nothing")
                requests.append(Request(tuple(ctx), tuple(target)))
                text = item.choices[column] if len(target) == len(full) else tokenizer.decode(target)
                n_bytes.append(len(text.encode("utf-8")))
        offsets.append(index)
    return requests, Layout(offsets, np.asarray(n_bytes, dtype=np.int64))


def load_models(profile: Profile, device: torch.device, moe_dir: Path | None = None) -> _Models:
    """M_pub, the MoE (`moe_dir`, else the registry's serving one or the run directory's: `locate_moe`) and the dense
    models that exist."""
    from tasks.training.assemble import read_manifest

    paths = RunPaths(profile)
    if not (paths.public_model_dir / "config.json").exists():
        raise DataError(f"{paths.public_model_dir}: M_pub is missing; run `flexo train-public` first")
    public = load_public_model(str(paths.public_model_dir)).to(device).eval()
    moe_dir = moe_dir or locate_moe(profile)
    experts = list(read_manifest(moe_dir)["experts"])
    moe = load_moe(str(moe_dir)).to(device)
    dense, skipped = {}, {}
    for domain in profile.closed_domains:
        directory = paths.dense_dir(domain) / "model"
        if (directory / "config.json").exists():
            dense[domain] = load_public_model(str(directory)).to(device).eval()
        else:
            skipped[dense_name(domain)] = f"{directory} not found (dense training not run for {domain})"
    return _Models(public, dense, moe, moe_dir, experts, skipped)


def _router_rows(profile: Profile, domains: Sequence[str], key: str) -> torch.Tensor | None:
    """Stacked router embeddings (`projected` rows or `raw` sentence-space centroids); None when any is missing."""
    from safetensors.torch import load_file

    paths = RunPaths(profile)
    files = [paths.router_embedding(d) for d in domains]
    if not all(f.exists() for f in files):
        return None
    return torch.stack([load_file(str(f))[key] for f in files]).float()


def token_batches(profile: Profile, tokenizer, domains: Sequence[str], steps: int, seed: int) -> Iterator[torch.Tensor]:
    """`steps` batches (train_expert.batch_size x seq_len) of packed train-split text, domains interleaved equally."""
    paths = RunPaths(profile)
    cfg = profile.train_expert
    need = steps * cfg.batch_size * cfg.seq_len
    rng = np.random.default_rng(seed)
    per_domain = []
    for domain in domains:
        split = paths.split(domain, "train")
        if not split.exists():
            raise DataError(
                f"{split}: the train split of '{domain}' is missing; run `flexo data --domain {domain}` first"
            )
        texts = pd.read_parquet(split, columns=["text"])["text"].tolist()
        ids: list[int] = []
        for index in rng.permutation(len(texts)).tolist():
            ids += tokenizer(texts[index], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            if len(ids) >= need // len(domains) + cfg.seq_len:
                break
        chunks = len(ids) // cfg.seq_len
        if chunks == 0:
            raise DataError(f"{split}: too little text for one sequence of {cfg.seq_len} tokens")
        per_domain.append(torch.tensor(ids[: chunks * cfg.seq_len]).view(chunks, cfg.seq_len))
    pool = torch.cat(per_domain)
    order = torch.from_numpy(rng.permutation(len(pool)))
    for step in range(steps):
        picks = order[(torch.arange(cfg.batch_size) + step * cfg.batch_size) % len(pool)]
        yield pool[picks]


# ---- scoring helpers ---------------------------------------------------------------------------------------------


class _Runner:
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
    """A MoE scorer that also counts, per layer, how many tokens each expert was selected for (top-k)."""

    def __init__(self, moe: torch.nn.Module, name: str) -> None:
        self.moe, self.name = moe, name
        layers, experts = len(moe.model.layers), moe.config.num_experts
        self.hits = torch.zeros(layers, experts, dtype=torch.float64)
        self.tokens = 0

    def __call__(self, batch: Batch) -> dict[str, BatchScore]:
        with record_routing(self.moe) as record:
            logits = self.moe(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        valid = batch.attention_mask.reshape(-1).bool().cpu()
        for layer, selected in enumerate(record.selected[-1]):
            self.hits[layer] += selected.cpu()[valid].double().sum(dim=0)
        self.tokens += int(valid.sum())
        return {self.name: reduce_logprobs(token_logprobs(logits), batch)}


# ---- the evaluation ----------------------------------------------------------------------------------------------


def _weighted_soup_scores(runner: _Runner, requests, members, member_scores: list[Scores]) -> Scores:
    """Per example: soup weights softmax(log-likelihood of the example's context); equal (rounded) soups built once."""
    cfg = runner.profile.eval
    nll = torch.from_numpy(np.stack([s.context_nll for s in member_scores]))
    weights = routing_weights(nll, cfg.btm_temperature).numpy().T  # (requests, members)
    rounded = np.round(weights, cfg.soup_weight_decimals)
    rounded = rounded / rounded.sum(axis=1, keepdims=True)
    groups: dict[tuple[float, ...], list[int]] = {}
    for index, row in enumerate(rounded):
        groups.setdefault(tuple(row.tolist()), []).append(index)
    out = Scores(np.zeros(len(requests)), np.zeros(len(requests), dtype=bool), np.zeros(len(requests)))
    for key, indices in groups.items():
        soup = weighted_soup(members, key)
        scores = runner.run(SOUP_WEIGHTED, [requests[i] for i in indices], model_scorer(soup, SOUP_WEIGHTED))[
            SOUP_WEIGHTED
        ]
        out.loglik[indices], out.greedy[indices], out.context_nll[indices] = (
            scores.loglik,
            scores.greedy,
            scores.context_nll,
        )
    return out


def _prompt_routing(
    profile: Profile,
    tasks: Sequence[Task],
    layout: Layout,
    names: list[str],
    domains: list[str],
    member_scores: dict[str, Scores],
) -> tuple[Scores, dict[str, float]]:
    """A small classifier (nearest owner centroid of all-MiniLM-L6-v2 embeddings) picks one model per input context."""
    from tasks.training.route import encode

    centroids = _router_rows(profile, domains, "raw")
    contexts = [item.context for task in tasks for item in task.items]
    embeddings = encode(contexts, profile.router.embed_batch_size, profile.runtime.precision)
    picks = nearest_centroid(torch.from_numpy(np.asarray(embeddings)), centroids).numpy()
    total = len(layout.n_bytes)
    out = Scores(np.zeros(total), np.zeros(total, dtype=bool), np.zeros(total))
    item = 0
    truth_hits, counted = 0, 0
    for task, index in zip(tasks, layout.offsets):
        for row in index:
            chosen = member_scores[names[picks[item]]]
            out.loglik[row], out.greedy[row], out.context_nll[row] = (
                chosen.loglik[row],
                chosen.greedy[row],
                chosen.context_nll[row],
            )
            truth_hits += int(domains[picks[item]] == task.spec.domain)
            counted += 1
            item += 1
    return out, {"classifier_accuracy": truth_hits / max(counted, 1)}


def _subset_tasks(tasks: Sequence[Task], docs: int) -> list[Task]:
    """The bpb tasks cut to their first `docs` documents (the k-sweep and opt-out use these)."""
    return [Task(t.spec, t.items[:docs], t.eligible) for t in tasks if t.spec.kind == "bpb"]


def _bpb_row(tasks, layout, scores, resamples, domains) -> dict[str, TaskScore]:
    return domain_table(tasks, score_model(tasks, layout, scores, resamples), domains, "bpb")


def evaluate(profile: Profile, progress: bool = True, moe_dir: Path | None = None) -> EvalResult:
    """Run FLEXMIX-small and write `reports/flexmix-<profile>.md` with its figures; returns paths, metrics and timings.
    `moe_dir`: this MoE instead of the deployed one (`flows.headless` evaluates what it just assembled)."""
    threads = torch.get_num_threads()
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    try:
        return _evaluate(profile, progress, moe_dir)
    finally:
        torch.set_num_threads(threads)


def _evaluate(profile: Profile, progress: bool, moe_dir: Path | None) -> EvalResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.evaluation.report import write_report

    started = time.perf_counter()
    cfg = profile.eval
    paths = RunPaths(profile)
    device = _device(profile)
    domains = list(profile.domains)
    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), cfg, profile.seed, held_out_split_paths(profile))
    write_lm_eval_files(tasks, paths.eval_dir / "tasks")
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    resamples = bootstrap_indices(tasks, cfg.bootstrap, profile.seed)
    models = load_models(profile, device, moe_dir)
    skipped = dict(models.skipped)
    default_k = models.moe.config.num_experts_per_tok
    num_experts = models.moe.config.num_experts
    btm_label = BTM.format(k=cfg.btm_top_k)

    results: dict[str, Scores] = {}
    extras: dict[str, dict[str, float]] = {}
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress
    )
    precision = resolve_precision(profile.runtime.precision, device)
    with bar:
        runner = _Runner(profile, device, tokenizer.pad_token_id, bar, precision)
        member_names = [PUBLIC] + [dense_name(d) for d in models.dense]
        members = [models.public] + list(models.dense.values())
        ensemble = EnsembleScorer(list(zip(member_names, members)), cfg.btm_temperature, cfg.btm_top_k, btm_label)
        results.update(runner.run("M_pub + dense + BTM", requests, ensemble))
        if not models.dense:
            del results[btm_label]
            for name in (btm_label, SOUP_UNIFORM, SOUP_WEIGHTED, PROMPT, BTX, NO_COORD):
                skipped[name] = "no dense domain models were found"
        else:
            soup = uniform_soup(members)
            results.update(runner.run(SOUP_UNIFORM, requests, model_scorer(soup, SOUP_UNIFORM)))
            del soup
            results[SOUP_WEIGHTED] = _weighted_soup_scores(
                runner, requests, members, [results[n] for n in member_names]
            )
            member_domains = ["public", *models.dense]
            if _router_rows(profile, member_domains, "raw") is None:
                skipped[PROMPT] = "router embeddings (runs/<profile>/router/*.safetensors) are missing"
            else:
                results[PROMPT], extras[PROMPT] = _prompt_routing(
                    profile, tasks, layout, member_names, member_domains, results
                )

        routing = RoutingScorer(models.moe, FLEX)
        results.update(runner.run(FLEX, requests, routing))

        if models.dense and cfg.btx_router_steps:
            rows = random_router_rows(len(members), profile.model.hidden_size, profile.model.init_std, profile.seed)
            btx = btx_merge(models.public, list(models.dense.values()), rows, min(default_k, len(members))).to(device)
            losses = train_moe(
                btx,
                (
                    b.to(device)
                    for b in token_batches(profile, tokenizer, ["public"], cfg.btx_router_steps, profile.seed)
                ),
                cfg.router_train_lr,
                cfg.router_train_weight_decay,
                profile.train_expert.optim.grad_clip,
                False,
                precision,
            )
            extras[BTX] = {"router_loss_first": losses[0], "router_loss_last": losses[-1]}
            results.update(runner.run(BTX, requests, model_scorer(btx, BTX)))
            del btx
        elif models.dense:
            skipped[BTX] = "eval.btx_router_steps is 0"

        if cfg.rt_steps:
            tuned = copy.deepcopy(models.moe)
            set_top_k(tuned, num_experts)  # router tuning with all experts active (paper §3.3.3)
            losses = train_moe(
                tuned,
                (b.to(device) for b in token_batches(profile, tokenizer, ["public"], cfg.rt_steps, profile.seed + 1)),
                cfg.router_train_lr,
                cfg.router_train_weight_decay,
                profile.train_expert.optim.grad_clip,
                False,
                precision,
            )
            set_top_k(tuned, default_k)
            extras[FLEX_RT] = {"router_loss_first": losses[0], "router_loss_last": losses[-1]}
            results.update(runner.run(FLEX_RT, requests, model_scorer(tuned, FLEX_RT)))
            del tuned
        else:
            skipped[FLEX_RT] = "eval.rt_steps is 0"

        if cfg.unrestricted_steps:
            rows = random_router_rows(num_experts, profile.model.hidden_size, profile.model.init_std, profile.seed)
            unrestricted = upcycle(models.public, num_experts, rows, default_k).to(device)
            batches = token_batches(profile, tokenizer, domains, cfg.unrestricted_steps, profile.seed + 2)
            losses = train_moe(
                unrestricted,
                (b.to(device) for b in batches),
                cfg.unrestricted_lr,
                profile.train_expert.optim.weight_decay,
                profile.train_expert.optim.grad_clip,
                True,
                precision,
            )
            extras[UNRESTRICTED] = {"train_loss_first": losses[0], "train_loss_last": losses[-1], "steps": len(losses)}
            results.update(runner.run(UNRESTRICTED, requests, model_scorer(unrestricted, UNRESTRICTED)))
            del unrestricted
        else:
            skipped[UNRESTRICTED] = "eval.unrestricted_steps is 0"

        closed = models.experts[1:]
        r_rows = _router_rows(profile, models.experts, "projected")
        if all(d in models.dense for d in closed) and r_rows is not None:
            states = [dense_as_expert(models.dense[d], r_rows[0], r_rows[i + 1]) for i, d in enumerate(closed)]
            ablation = merge_experts(models.public, r_rows[0].to(device), states, default_k).to(device)
            results.update(runner.run(NO_COORD, requests, model_scorer(ablation, NO_COORD)))
            del ablation
        else:
            skipped[NO_COORD] = "needs a dense model and a router embedding for every expert in the MoE"

        for name, relative in cfg.extra_moes.items():
            directory = RunPaths(profile).root / relative
            if not (directory / "config.json").exists():
                skipped[name] = f"{directory} not found (eval.extra_moes)"
                continue
            extra = load_moe(str(directory)).to(device)
            results.update(runner.run(name, requests, model_scorer(extra, name)))
            del extra

        ablation_rows = _score_ablations(profile, models, runner, requests, results, skipped, device)

        # k-sweep and opt-out on the bpb subset
        sub_tasks = _subset_tasks(tasks, cfg.sweep_docs)
        sub_requests, sub_layout = tokenize_tasks(sub_tasks, tokenizer, profile.model.max_seq_len)
        sub_resamples = bootstrap_indices(sub_tasks, cfg.bootstrap, profile.seed + 3)
        sweep: dict[int, dict[str, TaskScore]] = {}
        for k in range(1, num_experts + 1):
            set_top_k(models.moe, k)
            scores = runner.run(f"k-sweep k={k}", sub_requests, model_scorer(models.moe, "k"))["k"]
            sweep[k] = _bpb_row(sub_tasks, sub_layout, scores, sub_resamples, domains)
        set_top_k(models.moe, default_k)
        optout: dict[str, dict[str, TaskScore]] = {}
        full = sweep[default_k]
        for index, expert in enumerate(models.experts[1:], start=1):
            with masked_experts(models.moe, [index]):
                scores = runner.run(f"opt-out {expert}", sub_requests, model_scorer(models.moe, "o"))["o"]
            row = _bpb_row(sub_tasks, sub_layout, scores, sub_resamples, domains)
            optout[expert] = {
                d: TaskScore(row[d].value - full[d].value, row[d].replicates - full[d].replicates) for d in row
            }

    with runner.autocast():
        routing_by_domain = _routing_by_domain(models.moe, sub_tasks, tokenizer, profile, device, domains)
    per_model = {name: score_model(tasks, layout, scores, resamples) for name, scores in results.items()}
    shares = (routing.hits / max(routing.tokens, 1)).numpy()
    return write_report(
        profile=profile,
        tasks=tasks,
        per_model=per_model,
        domains=domains,
        experts=models.experts,
        default_k=default_k,
        btm_label=btm_label,
        sweep=sweep,
        optout=optout,
        routing_overall=shares,
        routing_by_domain=routing_by_domain,
        extras=extras,
        ablation_rows=ablation_rows,
        skipped=skipped,
        seconds={**runner.seconds, "total": time.perf_counter() - started},
        machine=f"{machine_description(device)}; {precision} matmuls",
    )


def _score_ablations(
    profile: Profile,
    models: _Models,
    runner: _Runner,
    requests,
    results: dict[str, Scores],
    skipped: dict[str, str],
    device: torch.device,
) -> dict[str, str]:
    """Score every assembled router ablation and its reference, the serving MoE sliced to the same experts;
    returns {ablation row: reference row}."""
    from model.optout import keep_experts
    from tasks.training import ablations

    if not profile.ablation.variants:
        return {}
    found = ablations.assembled(profile)
    for variant in profile.ablation.variants:
        if variant not in found:
            skipped[ablations.row_name(variant)] = f"not assembled (run `flexo ablate --variant {variant}`)"
    absent = [d for d in profile.ablation.domains if d not in models.experts]
    if absent or not found:
        if absent:
            skipped[ablations.reference_name(profile)] = f"the serving MoE holds no expert for {absent}"
        return {}
    reference = ablations.reference_name(profile)
    keep = [0] + [models.experts.index(d) for d in profile.ablation.domains]
    k = profile.router.top_k if profile.router.top_k is not None else default_top_k(len(keep))  # as `assemble_variant`
    sliced = keep_experts(models.moe, keep, k).to(device).eval()
    results.update(runner.run(reference, requests, model_scorer(sliced, reference)))
    del sliced
    rows = {}
    for variant, directory in found.items():
        name = ablations.row_name(variant)
        moe = load_moe(str(directory)).to(device)
        results.update(runner.run(name, requests, model_scorer(moe, name)))
        rows[name] = reference
        del moe
    return rows


def _routing_by_domain(moe, sub_tasks, tokenizer, profile: Profile, device, domains) -> np.ndarray:
    """(layers, domains, experts): share of each domain's tokens for which the expert is in the top-k."""
    out = np.zeros((len(moe.model.layers), len(domains), moe.config.num_experts))
    for column, domain in enumerate(domains):
        mine = [t for t in sub_tasks if t.spec.domain == domain]
        if not mine:
            continue
        requests, _ = tokenize_tasks(mine, tokenizer, profile.model.max_seq_len)
        scorer = RoutingScorer(moe, "r")
        score_requests(requests, scorer, profile.eval.batch_size, tokenizer.pad_token_id, device)
        out[:, column, :] = (scorer.hits / max(scorer.tokens, 1)).numpy()
    return out


def machine_description(device: torch.device) -> str:
    """Where the numbers were measured (reported with them)."""
    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if device.type == "cuda" else ""
    return (
        f"{platform.system()} {platform.release()}, {cpu}, {torch.get_num_threads()} torch threads "
        f"({len(os.sched_getaffinity(0))} CPUs usable){gpu}; torch {torch.__version__}"
    )


def jsonable_scores(per_model: dict[str, dict[str, TaskScore]]) -> dict[str, dict[str, dict[str, float]]]:
    return {m: {t: {"value": s.value, "se": s.se} for t, s in row.items()} for m, row in per_model.items()}


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path
