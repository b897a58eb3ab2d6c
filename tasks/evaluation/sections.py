"""The report's sections beyond the FLEXMIX tables: each task's chance level and M_pub's margin over it, the
mixed-domain documents, and quality against inference cost (with its figure).

Why a module of its own: `report` lays out the FLEXMIX tables; these sections read the same `ReportInputs` plus the
mixed-document scores and the per-model FLOPs, and stay testable on hand-made scores.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np

from tasks.evaluation.figures import quality_vs_cost
from tasks.evaluation.metrics import TaskScore, relative_gain
from tasks.evaluation.results import FLEX, PUBLIC, ReportInputs
from tasks.evaluation.tasks import Task

SEPARATES_SE = 2.0  # M_pub this many standard errors above chance: the task can tell models apart at this scale


def fmt_score(score: TaskScore | None, digits: int = 3) -> str:
    """`value ± SE`, or a dash where the model has no such score (the report's every cell)."""
    return "–" if score is None else f"{score.value:.{digits}f} ± {score.se:.{digits}f}"


def fmt_gain(score: TaskScore | None) -> str:
    """A relative gain in percent with its SE."""
    return "–" if score is None else f"{100 * score.value:+.1f}% ± {100 * score.se:.1f}"


def chance_margin(task: Task, score: TaskScore) -> float:
    """How many standard errors `score` is better than the task's chance level (bpb: below it; mc/em: above it);
    +inf/-inf/0 when the bootstrap has no spread (every item right, or none)."""
    better = score.value - task.spec.chance if task.spec.higher_is_better else task.spec.chance - score.value
    se = score.se
    if se > 0 and math.isfinite(se):
        return better / se
    return math.copysign(math.inf, better) if better else 0.0


def chance_cells(task: Task, public: dict[str, TaskScore]) -> list[str]:
    """The task row's M_pub score and its margin over chance, e.g. `+4.1 SE (yes)`."""
    score = public.get(task.spec.name)
    if score is None:
        return ["–", "–"]
    margin = chance_margin(task, score)
    verdict = "yes" if margin > SEPARATES_SE else "no"
    if math.isinf(margin):  # no bootstrap spread: every item right or every item wrong
        return [fmt_score(score), f"{'above' if margin > 0 else 'below'} chance, SE 0 ({verdict})"]
    return [fmt_score(score), f"{margin:+.1f} SE ({verdict})"]


CHANCE_NOTE = (
    f"M_pub − chance: M_pub's margin over the task's chance level in standard errors (bpb: how far below the "
    f"uniform-byte level); **yes** where it exceeds {SEPARATES_SE:g} SE. A task where M_pub is not above chance "
    "can separate only models that are better than M_pub."
)


def mixed_section(inputs: ReportInputs) -> list[str]:
    """The mixed-domain documents' bits per byte for every model: whole document, before and after the first domain
    switch, the change at the switch, and the gains against M_pub and BTM."""
    if not inputs.mixed:
        return []
    cfg, docs = inputs.profile.eval, inputs.mixed_docs
    combos = Counter("+".join(s.domain for s in doc.segments) for doc in docs)
    btm = inputs.btm_label if inputs.btm_label in inputs.mixed else None
    lines = [
        "",
        "## Mixed-domain documents",
        "",
        f"{len(docs)} held-out documents, each {cfg.mixed_domains_per_doc} domains' test paragraphs (at most "
        f"{cfg.mixed_segment_chars} characters each) joined by a blank line, drawn with seed {inputs.profile.seed} "
        f"(`tasks/evaluation/mixed.py`). As for a bpb document, at most {cfg.bpb_prefix_chars} characters of the "
        "first paragraph condition and the rest is scored: BTM, the weighted soup and prompt routing choose their "
        "models once, from that prefix; an MoE routes every token. *Before the switch*: the rest of the first "
        "paragraph; *after*: everything from the first token that differs from the first paragraph's own "
        "tokenization. Bits per byte (lower is better); gains: positive = fewer bits.",
        "",
        "Domains in order: " + ", ".join(f"{c} ({n})" for c, n in sorted(combos.items())) + ".",
        "",
    ]
    header = ["model", "whole document", "before the switch", "after the switch", "after − before", f"vs {PUBLIC}"]
    header += [f"vs {btm}", f"after the switch vs {btm}"] if btm else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, row in inputs.mixed.items():
        whole, before, after = row["document"], row["before switch"], row["after switch"]
        step = TaskScore(after.value - before.value, after.replicates - before.replicates)
        cells = [model, fmt_score(whole), fmt_score(before), fmt_score(after), fmt_score(step)]
        cells.append(
            fmt_gain(relative_gain(whole, inputs.mixed[PUBLIC]["document"], False)) if PUBLIC in inputs.mixed else "–"
        )
        if btm:
            reference = inputs.mixed[btm]
            cells += [
                fmt_gain(relative_gain(whole, reference["document"], False)),
                fmt_gain(relative_gain(after, reference["after switch"], False)),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + _switch_routing(inputs)


def _switch_routing(inputs: ReportInputs) -> list[str]:
    """FlexOlmo's routing before and after the switch: does the second paragraph's expert take over?"""
    if not inputs.switch_routing:
        return []
    lines = [
        "",
        f"Routing across the switch ({FLEX}, top-{inputs.default_k}): share of tokens whose top-k holds each "
        "paragraph's expert, mean over layers, then over the documents (± SE over documents; tokens after the switch "
        "= the whole request's counts minus the before-the-switch request's).",
        "",
        "| expert | before the switch | after the switch |",
        "|---|---|---|",
    ]
    for which in ("first", "second"):
        cells = []
        for side in ("before", "after"):
            value, se = inputs.switch_routing.get(
                f"{which} paragraph's expert, {side} the switch", (math.nan, math.nan)
            )
            cells.append(f"{value:.3f} ± {se:.3f}")
        lines.append(f"| {which} paragraph's domain | " + " | ".join(cells) + " |")
    return lines


def _mflops(flops: float) -> str:
    return "–" if not flops else ("n/a" if math.isnan(flops) else f"{flops / 1e6:.3g}")


def cost_section(
    inputs: ReportInputs, bpb: dict[str, dict[str, TaskScore]], acc: dict[str, dict[str, TaskScore]]
) -> list[str]:
    """Every scored model's forward FLOPs per token beside its averages, and the quality-vs-cost figure."""
    costs = {m: c for m, c in inputs.costs.items() if m in inputs.per_model}
    if not costs:
        return []
    lines = [
        "",
        "## Quality against inference cost",
        "",
        f"![quality vs cost]({inputs.figure_dir.name}/quality_vs_cost.png)",
        "",
        "Forward FLOPs per scored token, counted from each model's config (`tasks/evaluation/cost.py`: 2 per "
        "multiply-add of attention, FFN, router and head; attention over the evaluation's mean context of "
        f"{inputs.context:.0f} positions). *Choosing*: what picking the model(s) costs per token of the prefix, once "
        "per sequence (BTM and the weighted soup run every member over it, prompt routing its MiniLM encoder).",
        "",
        "| model | what runs per token | MFLOPs per token | choosing: MFLOPs per prefix token | bits per byte "
        "(average) | accuracy (average) | mixed documents (bpb) |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, cost in costs.items():
        mixed = inputs.mixed.get(model, {}).get("document")
        cells = [model, cost.how, _mflops(cost.per_token), _mflops(cost.routing)]
        averages = [bpb.get(model, {}).get("average"), acc.get(model, {}).get("average"), mixed]
        cells += [fmt_score(score) for score in averages]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def cost_figure(
    inputs: ReportInputs, bpb: dict[str, dict[str, TaskScore]], acc: dict[str, dict[str, TaskScore]]
) -> Path | None:
    """Average bits per byte, accuracy and (when scored) the mixed documents' bits per byte against MFLOPs per token,
    one point per model that has them all."""
    names = [m for m in inputs.costs if m in bpb and "average" in bpb[m] and "average" in acc.get(m, {})]
    if inputs.mixed:
        names = [m for m in names if m in inputs.mixed]
    if not names:
        return None
    flops = np.array([inputs.costs[m].per_token / 1e6 for m in names])
    panels = {
        "average bits per byte (lower is better)": [bpb[m]["average"] for m in names],
        "average accuracy (higher is better)": [acc[m]["average"] for m in names],
    }
    if inputs.mixed:
        panels["mixed documents: bits per byte (lower is better)"] = [inputs.mixed[m]["document"] for m in names]
    values = {label: np.array([s.value for s in scores]) for label, scores in panels.items()}
    errors = {label: np.array([s.se for s in scores]) for label, scores in panels.items()}
    return quality_vs_cost(names, flops, values, errors, inputs.figure_dir / "quality_vs_cost.png")
