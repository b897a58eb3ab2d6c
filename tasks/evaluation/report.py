"""The FLEXMIX report: tables (rows models, columns domains + average, relative gains), figures, and the comparison with
the paper's headline, written to `reports/flexmix-<profile>.md` (+ PNGs) and `runs/<profile>/eval/` (JSON, CSV).

Why separate from `tasks.evaluation.evaluate`: scoring is expensive and reporting is not; keeping the writer pure
(scores in, files out) lets it be tested on hand-made scores.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.evaluation.figures import k_sweep, opt_out, routing_heatmap
from tasks.evaluation.metrics import TaskScore, domain_table, relative_gain
from tasks.evaluation.results import (
    FLEX,
    PUBLIC,
    SOUP_WEIGHTED,
    UNRESTRICTED,
    EvalResult,
    MassRow,
    ReportInputs,
    results_payload,
    router_mass_rows,
    served_flex_row,
    write_json,
)
from tasks.evaluation.sections import (
    CHANCE_NOTE,
    chance_cells,
    cost_figure,
    cost_section,
    mixed_section,
)
from tasks.evaluation.sections import fmt_gain as _pct
from tasks.evaluation.sections import fmt_score as _fmt
from tasks.evaluation.target_section import profile_targets, targets_section, with_section

PAPER_GAIN_OVER_BTM = 0.101  # FlexOlmo (RT) vs BTM, average over tasks: 47.8/43.4 and 52.4/47.6 (Tables 1 and 2)


def mlflow_key(name: str) -> str:
    """A metric/tag name MLflow accepts: spaces become underscores, characters outside [\\w-.:/] are dropped."""
    return re.sub(r"[^\w\-.:/]", "", name.replace(" ", "_"))


def _markdown_table(
    title: str,
    tables: dict[str, dict[str, TaskScore]],
    columns: list[str],
    ref_public: str,
    ref_btm: str | None,
    higher: bool,
) -> list[str]:
    header = ["model", *columns, "average", f"vs {ref_public}"] + ([f"vs {ref_btm}"] if ref_btm else [])
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, row in tables.items():
        cells = [model] + [_fmt(row.get(c)) for c in columns] + [_fmt(row.get("average"))]
        avg = row.get("average")
        for ref in [ref_public] + ([ref_btm] if ref_btm else []):
            ref_avg = tables.get(ref, {}).get("average")
            cells.append(_pct(relative_gain(avg, ref_avg, higher)) if avg and ref_avg else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _write_csv(path: Path, tables: dict[str, dict[str, TaskScore]], columns: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model"] + [x for c in [*columns, "average"] for x in (c, f"{c}_se")])
        for model, row in tables.items():
            writer.writerow(
                [model]
                + [x for c in [*columns, "average"] for x in ((row[c].value, row[c].se) if c in row else ("", ""))]
            )
    return path


def _comparison(
    acc: dict[str, dict[str, TaskScore]],
    bpb: dict[str, dict[str, TaskScore]],
    public: str,
    btm: str,
    soup: str,
    unrestricted: str,
) -> list[str]:
    """Where our numbers agree with the paper's headline, computed, not asserted."""
    lines = ["## Against the paper's headline", ""]
    best_flex = served_flex_row(acc)
    for label, table, higher in (("task accuracy", acc, True), ("bits per byte", bpb, False)):
        avg = {m: row["average"] for m, row in table.items() if "average" in row}
        if best_flex in avg and btm in avg:
            gain = relative_gain(avg[best_flex], avg[btm], higher)
            verdict = (
                "agrees in sign"
                if gain.value > 2 * gain.se
                else ("within noise" if abs(gain.value) <= 2 * gain.se else "disagrees")
            )
            lines.append(
                f"- **{label}**: {best_flex} vs {btm}: {_pct(gain)} relative "
                f"(paper: +{100 * PAPER_GAIN_OVER_BTM:.1f}% on task average) — {verdict}."
            )
        chain = [m for m in (public, soup, btm, best_flex) if m in avg]
        for low, high in zip(chain, chain[1:], strict=False):
            diff = relative_gain(avg[high], avg[low], higher)
            state = (
                "holds"
                if diff.value > 2 * diff.se
                else ("within noise" if abs(diff.value) <= 2 * diff.se else "reversed")
            )
            lines.append(f"  - {label}: {low} < {high} (paper's order): {state} ({_pct(diff)}).")
        if unrestricted in avg and best_flex in avg:
            diff = relative_gain(avg[best_flex], avg[unrestricted], higher)
            lines.append(f"  - {label}: {best_flex} vs {unrestricted} (paper: FlexOlmo close to it): {_pct(diff)}.")
    return lines + [""]


def _ablations(
    acc: dict[str, dict[str, TaskScore]], bpb: dict[str, dict[str, TaskScore]], rows: dict[str, str]
) -> list[str]:
    """Each router ablation against FlexOlmo with the same owners' normal experts, next to the paper's Table 1/3
    drop."""
    from tasks.training.ablations import LABELS, PAPER_TABLE1, row_name

    if not rows:
        return []
    variant_of = {row_name(v): v for v in LABELS}
    reference = next(iter(rows.values()))
    lines = [
        "## Router ablations (paper Tables 1 and 3)",
        "",
        f"Each row retrains the same owners' experts with one change; the reference is **{reference}** (the serving "
        "MoE sliced to those experts). Relative change of the average (positive = the ablation is better); the paper "
        "reports task-average drops.",
        "",
        "| ablation | accuracy vs reference | bits per byte vs reference | paper (task average) |",
        "|---|---|---|---|",
    ]
    for name, ref in rows.items():
        cells = []
        for table, higher in ((acc, True), (bpb, False)):
            mine, base = table.get(name, {}).get("average"), table.get(ref, {}).get("average")
            cells.append(_pct(relative_gain(mine, base, higher)) if mine and base else "–")
        paper = PAPER_TABLE1[variant_of[name]] / PAPER_TABLE1["reference"] - 1
        lines.append(
            f"| {name} | {cells[0]} | {cells[1]} | {100 * paper:+.1f}% ({PAPER_TABLE1[variant_of[name]]} vs "
            f"{PAPER_TABLE1['reference']}) |"
        )
    return lines + [""]


@dataclass(frozen=True)
class _Tables:
    """The per-domain tables every section reads: bits per byte and accuracy, per model."""

    bpb: dict[str, dict[str, TaskScore]]
    acc: dict[str, dict[str, TaskScore]]

    @classmethod
    def of(cls, inputs: ReportInputs) -> _Tables:
        per_model, tasks, domains = inputs.per_model, inputs.tasks, inputs.domains
        return cls(
            {m: domain_table(tasks, row, domains, "bpb") for m, row in per_model.items()},
            {m: domain_table(tasks, row, domains, "acc") for m, row in per_model.items()},
        )


def write_report(inputs: ReportInputs) -> EvalResult:
    """The markdown report with its figures, the CSV tables and results.json; returns their paths and flat metrics."""
    paths = RunPaths(inputs.profile)
    inputs.figure_dir.mkdir(parents=True, exist_ok=True)
    tables = _Tables.of(inputs)
    figures = _write_figures(inputs)
    cost_png = cost_figure(inputs, tables.bpb, tables.acc)
    if cost_png is not None:
        figures["quality_vs_cost"] = cost_png
    csvs = {
        "bpb": _write_csv(paths.eval_dir / "table_bpb.csv", tables.bpb, inputs.domains),
        "accuracy": _write_csv(paths.eval_dir / "table_accuracy.csv", tables.acc, inputs.domains),
    }
    metrics: dict[str, float] = {}
    for table_name, table in (("bpb", tables.bpb), ("acc", tables.acc)):
        for model, row in table.items():
            for column, score in row.items():
                metrics[mlflow_key(f"{table_name}/{model}/{column}")] = score.value
    for model, row in inputs.mixed.items():
        for column, score in row.items():
            metrics[mlflow_key(f"mixed/{model}/{column}")] = score.value
    for model, cost in inputs.costs.items():
        metrics[mlflow_key(f"flops_per_token/{model}")] = cost.per_token
    metrics["seconds/total"] = inputs.seconds["total"]
    payload = results_payload(inputs, tables.bpb, tables.acc)
    verdicts = profile_targets(inputs.profile, payload)
    payload["targets"] = [v.as_dict() for v in verdicts]
    lines = _header(inputs) + _score_sections(inputs, tables) + mixed_section(inputs)
    lines += cost_section(inputs, tables.bpb, tables.acc) + _moe_sections(inputs) + _notes(inputs)
    report = paths.eval_report
    section = targets_section(verdicts, inputs.profile.eval.targets, paired=True)  # the payload has `paired_se`
    report.write_text(with_section("\n".join(lines), section))
    results_json = write_json(paths.eval_dir / "results.json", payload)
    targets = {v.key: v.verdict for v in verdicts}
    return EvalResult(report, results_json, csvs, figures, metrics, inputs.skipped, inputs.seconds, targets)


def _write_figures(inputs: ReportInputs) -> dict[str, Path]:
    """The routing heatmap, the k-sweep curve and (when an expert can be removed) the opt-out matrix."""
    domains, figure_dir, sweep = inputs.domains, inputs.figure_dir, inputs.sweep
    figures = {
        "routing": routing_heatmap(inputs.routing_by_domain, domains, inputs.experts, figure_dir / "routing.png")
    }
    ks = sorted(sweep)
    figures["k_sweep"] = k_sweep(
        ks,
        np.array([sweep[k]["average"].value for k in ks]),
        np.array([sweep[k]["average"].se for k in ks]),
        inputs.default_k,
        figure_dir / "k_sweep.png",
        "average bits per byte (lower is better)",
    )
    removed = list(inputs.optout)
    if removed:
        delta = np.array([[inputs.optout[r][d].value for d in domains] for r in removed])
        errors = np.array([[inputs.optout[r][d].se for d in domains] for r in removed])
        figures["opt_out"] = opt_out(delta, errors, removed, domains, figure_dir / "opt_out.png")
    return figures


def _header(inputs: ReportInputs) -> list[str]:
    """Title, where and how the numbers were measured, and the task list."""
    profile, seconds = inputs.profile, inputs.seconds
    lines = [
        f"# FLEXMIX-small: profile `{profile.name}`",
        "",
        f"Machine: {inputs.machine}. Wall time: {seconds['total']:.0f} s in all; FlexOlmo's pass over every task: "
        f"{seconds.get(FLEX, float('nan')):.1f} s. Seed {profile.seed}; {profile.eval.bootstrap} paired bootstrap "
        "replicates (± is one standard error). MoE: experts "
        + ", ".join(inputs.experts)
        + f", top-k {inputs.default_k}.",
        "",
        "## Tasks",
        "",
        f"| task | domain | kind | items (eligible docs) | chance | {PUBLIC} | {PUBLIC} − chance | what it measures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    public = inputs.per_model.get(PUBLIC, {})
    for task in inputs.tasks:
        lines.append(
            f"| {task.spec.name} | {task.spec.domain} | {task.spec.kind} | {len(task.items)} ({task.eligible}) | "
            f"{task.spec.chance:.2f} | " + " | ".join(chance_cells(task, public)) + f" | {task.spec.description} |"
        )
    return lines + ["", CHANCE_NOTE, ""]


def _score_sections(inputs: ReportInputs, tables: _Tables) -> list[str]:
    """The two headline tables, the comparison with the paper, the router ablations and every task's score."""
    acc, bpb = tables.acc, tables.bpb
    ref_btm = inputs.btm_label if inputs.btm_label in inputs.per_model else None
    lines = _markdown_table(
        "Downstream tasks: accuracy (mean of each domain's mc/em tasks; higher is better)",
        acc,
        inputs.domains,
        PUBLIC,
        ref_btm,
        True,
    )
    lines += _markdown_table(
        "Bits per byte on held-out text (lower is better; gains: positive = fewer bits)",
        bpb,
        inputs.domains,
        PUBLIC,
        ref_btm,
        False,
    )
    lines += _comparison(acc, bpb, PUBLIC, inputs.btm_label, SOUP_WEIGHTED, UNRESTRICTED)
    lines += _ablations(acc, bpb, inputs.ablation_rows)
    tasks = inputs.tasks
    lines += [
        "## Every task",
        "",
        "| model | " + " | ".join(t.spec.name for t in tasks) + " |",
        "|" + "---|" * (len(tasks) + 1),
    ]
    for model, row in inputs.per_model.items():
        lines.append(f"| {model} | " + " | ".join(_fmt(row.get(t.spec.name)) for t in tasks) + " |")
    return lines


def _moe_sections(inputs: ReportInputs) -> list[str]:
    """Routing, the number of active experts and the opt-out, each with its figure."""
    domains, experts, sweep, figures = inputs.domains, inputs.experts, inputs.sweep, inputs.figure_dir.name
    lines = [
        "",
        "## Routing",
        "",
        f"![routing]({figures}/routing.png)",
        "",
        "Share of each evaluated domain's tokens (bpb subset) for which an expert is among the top-k, per layer. "
        "Over all evaluation tokens, per expert (mean over layers): "
        + ", ".join(f"{e} {inputs.routing_overall.mean(axis=0)[i]:.2f}" for i, e in enumerate(experts))
        + ".",
        "",
        *_router_mass_lines(inputs),
        "## Number of active experts",
        "",
        f"![k-sweep]({figures}/k_sweep.png)",
        "",
        "| k | " + " | ".join(domains) + " | average |",
        "|" + "---|" * (len(domains) + 2),
    ]
    for k in sorted(sweep):
        lines.append(
            f"| {k} | " + " | ".join(_fmt(sweep[k].get(d)) for d in domains) + f" | {_fmt(sweep[k]['average'])} |"
        )
    return lines + _optout_section(inputs)


def _router_mass_lines(inputs: ReportInputs) -> list[str]:
    """How much of each domain's routing its own expert carries (mean router probability over layers and tokens),
    against the public FFN, the strongest other expert and a uniform router's 1/n: the top-k share above cannot show a
    router that spreads its mass evenly, and an MoE whose experts are all chosen then averages them. Where router
    tuning ran, the same for the tuned router beside it: whether RT makes the routing domain-specific."""
    mass = inputs.router_mass_by_domain
    if mass is None:
        return []
    experts, tuned = inputs.experts, inputs.tuned_router_mass_by_domain
    header = "| domain | its own expert | public FFN | strongest other expert |"
    rule = "|---|---|---|---|"
    if tuned is not None:
        header += " after RT: its own expert | public FFN | strongest other expert |"
        rule += "---|---|---|"
    lines = [
        f"Router probability on each domain's tokens (mean over layers and tokens; a uniform router gives "
        f"{1 / len(experts):.3f} to each of the {len(experts)} experts):",
        "",
        header,
        rule,
    ]
    rows = router_mass_rows(mass, inputs.domains, experts)
    tuned_rows = router_mass_rows(tuned, inputs.domains, experts) if tuned is not None else {}
    for domain, row in rows.items():
        cells = _mass_cells(row) + (_mass_cells(tuned_rows[domain]) if domain in tuned_rows else [])
        lines.append(f"| {domain} | " + " | ".join(cells) + " |")
    return lines + [""]


def _mass_cells(row: MassRow) -> list[str]:
    name, top = row.strongest_other or ("–", float("nan"))
    return ["–" if row.own is None else f"{row.own:.3f}", f"{row.public:.3f}", f"{name} {top:.3f}"]


def _optout_section(inputs: ReportInputs) -> list[str]:
    if not inputs.optout:
        return []
    lines = [
        "",
        "## Opt-out",
        "",
        f"![opt-out]({inputs.figure_dir.name}/opt_out.png)",
        "",
        "Δ bits per byte when one expert is removed (masked to −∞ in every layer, exactly equal to slicing it "
        "out); positive = worse. Own domain vs the largest change elsewhere:",
        "",
        "| removed | Δ own domain | largest |Δ| elsewhere | own > 2 SE |",
        "|---|---|---|---|",
    ]
    for r, row in inputs.optout.items():
        own = row.get(r)
        others = [row[d] for d in inputs.domains if d != r and d in row and d != "average"]
        worst = max(others, key=lambda s: abs(s.value)) if others else None
        lines.append(f"| {r} | {_fmt(own)} | {_fmt(worst)} | {'yes' if own and own.value > 2 * own.se else 'no'} |")
    return lines


def _notes(inputs: ReportInputs) -> list[str]:
    """What the trained baselines' training did, what was not evaluated and why, and the wall time of every pass."""
    lines: list[str] = []
    if inputs.extras:
        lines += ["", "## Training of the baselines that need it", ""]
        lines += [f"- {m}: " + ", ".join(f"{k} {v:.4g}" for k, v in e.items()) for m, e in inputs.extras.items()]
    if inputs.skipped:
        lines += ["", "## Not evaluated", ""] + [f"- {m}: {why}" for m, why in inputs.skipped.items()]
    return lines + ["", "## Wall time per pass (s)", ""] + [f"- {k}: {v:.1f}" for k, v in inputs.seconds.items()] + [""]


def log_to_mlflow(profile: Profile, result: EvalResult) -> None:
    """One `evaluate` stage run (nested under an active pipeline run, if any): eval params, every metric, the figures
    under plots/, the report, tables and results JSON, a `skipped.<model>` tag per model not evaluated and a
    `target.<key>` tag per science target (its verdict)."""
    import mlflow
    from tasks.core.tracking import log_image_file, log_metrics, stage_run

    with stage_run(profile, "evaluate", params={"eval": profile.eval.model_dump()}):
        log_metrics(result.metrics)
        for path in result.figures.values():
            log_image_file(path)
        mlflow.log_artifact(str(result.report), artifact_path="report")
        for path in [*result.tables.values(), result.results_json]:
            mlflow.log_artifact(str(path), artifact_path="eval")
        if result.skipped:
            mlflow.set_tags({mlflow_key(f"skipped.{k}")[:250]: v[:500] for k, v in result.skipped.items()})
        if result.targets:
            mlflow.set_tags({f"target.{key}": verdict for key, verdict in result.targets.items()})
