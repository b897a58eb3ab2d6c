"""What an evaluation produces: the model labels every table uses, the scored results (`ReportInputs`), the files
written from them (`EvalResult`), and results.json.

Why a module of its own: both the scoring side (`evaluate`, `families`) and the writing side (`report`) need the labels
and these types; keeping them here lets each import this one module instead of importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.evaluation.cost import Cost
from tasks.evaluation.metrics import TaskScore
from tasks.evaluation.mixed import MixedDoc
from tasks.evaluation.tasks import Task

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
PROXY_IN_DOMAIN = "proxy_in_domain_{domain}"  # router tuning's extras: each proxy set's in-domain share


def served_flex_row(models: Container[str]) -> str:
    """The FlexOlmo row the report serves among `models`: with router tuning where it ran, else without."""
    return FLEX_RT if FLEX_RT in models else FLEX


@dataclass(frozen=True)
class MassRow:
    """One domain's mean router probability (over layers and tokens): on its own expert (None for a domain without
    one, public included), on the public FFN (expert 0), and the largest on any other expert, with its name."""

    own: float | None
    public: float
    strongest_other: tuple[str, float] | None


def router_mass_rows(mass: np.ndarray, domains: list[str], experts: list[str]) -> dict[str, MassRow]:
    """Each domain's `MassRow` from (layers, domains, experts) router probabilities, the public FFN first among
    `experts`: what the report's routing table and `benchmarks/router_tuning.py` show."""
    per_domain = mass.mean(axis=0)  # (domains, experts)
    rows = {}
    for column, domain in enumerate(domains):
        row = per_domain[column]
        own = float(row[experts.index(domain)]) if domain in experts[1:] else None
        others = [(float(row[i]), e) for i, e in enumerate(experts) if e not in (domain, experts[0])]
        top = max(others) if others else None
        rows[domain] = MassRow(own, float(row[0]), None if top is None else (top[1], top[0]))
    return rows


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
    targets: dict[str, str] = field(default_factory=dict)  # science target key -> verdict (`tasks.evaluation.targets`)


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows: the scores of every model, the experiments on the MoE and where it all ran."""

    profile: Profile
    tasks: list[Task]
    per_model: dict[str, dict[str, TaskScore]]  # model -> task -> score
    domains: list[str]
    experts: list[str]  # the MoE's experts, "public" first
    default_k: int
    btm_label: str
    sweep: dict[int, dict[str, TaskScore]]  # k -> bpb per domain and average
    optout: dict[str, dict[str, TaskScore]]  # removed expert -> change of bpb per domain and average
    routing_overall: np.ndarray  # (layers, experts): share of every evaluation token routed to each expert
    routing_by_domain: np.ndarray  # (layers, domains, experts)
    extras: dict[str, dict[str, float]]  # model -> training numbers of the baselines that train
    skipped: dict[str, str]  # model -> why it was not evaluated
    seconds: dict[str, float]  # pass -> wall time, and "total"
    machine: str
    ablation_rows: dict[str, str] = field(default_factory=dict)  # router ablation row -> its reference row
    # model -> bits per byte of the mixed-domain documents: "document", "before switch", "after switch"
    mixed: dict[str, dict[str, TaskScore]] = field(default_factory=dict)
    mixed_docs: list[MixedDoc] = field(default_factory=list)
    switch_routing: dict[str, tuple[float, float]] = field(default_factory=dict)  # `sweeps.routing_at_switch`
    costs: dict[str, Cost] = field(default_factory=dict)  # model -> inference FLOPs per token
    context: float = 0.0  # mean attended positions per evaluated token (the attention term of `costs`)
    router_mass_by_domain: np.ndarray | None = None  # (layers, domains, experts): mean router probability
    tuned_router_mass_by_domain: np.ndarray | None = None  # the same after router tuning, where it ran

    @property
    def figure_dir(self) -> Path:
        return RunPaths(self.profile).eval_report.with_suffix("")


def jsonable_scores(per_model: dict[str, dict[str, TaskScore]]) -> dict[str, dict[str, dict[str, float]]]:
    return {m: {t: {"value": s.value, "se": s.se} for t, s in row.items()} for m, row in per_model.items()}


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=float))
    return path


def paired_ses(table: dict[str, dict[str, TaskScore]], references: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """reference -> model -> column -> the SE of (model − reference) over the shared bootstrap draws. Why: a gap
    between two models is far better measured paired than from the two SEs, and results.json cannot keep the draws."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for ref in (r for r in references if r in table):
        out[ref] = {
            model: {
                c: TaskScore(s.value - table[ref][c].value, s.replicates - table[ref][c].replicates).se
                for c, s in row.items()
                if c in table[ref]
            }
            for model, row in table.items()
            if model != ref
        }
    return out


def results_payload(
    inputs: ReportInputs, bpb: dict[str, dict[str, TaskScore]], acc: dict[str, dict[str, TaskScore]]
) -> dict:
    """results.json: every number of the report (`bpb`, `acc`: its per-domain tables) with its standard error, the
    paired SEs of the gaps the science targets read (`paired_se`), and the run's settings and timings."""

    def scores(row: dict[str, TaskScore]) -> dict[str, dict[str, float]]:
        return {d: {"value": s.value, "se": s.se} for d, s in row.items()}

    return {
        "profile": inputs.profile.name,
        "machine": inputs.machine,
        "experts": inputs.experts,
        "top_k": inputs.default_k,
        "per_task": jsonable_scores(inputs.per_model),
        "bpb": jsonable_scores(bpb),
        "accuracy": jsonable_scores(acc),
        "k_sweep": {str(k): scores(row) for k, row in inputs.sweep.items()},
        "opt_out": {r: scores(row) for r, row in inputs.optout.items()},
        "routing_by_domain": inputs.routing_by_domain.tolist(),
        "router_mass_by_domain": None if (mass := inputs.router_mass_by_domain) is None else mass.tolist(),
        "router_mass_by_domain_rt": None if (rt := inputs.tuned_router_mass_by_domain) is None else rt.tolist(),
        "extras": inputs.extras,
        "ablations": inputs.ablation_rows,
        "mixed": jsonable_scores(inputs.mixed),
        "paired_se": {
            name: paired_ses(table, [PUBLIC, inputs.btm_label, FLEX, FLEX_RT])
            for name, table in (("bpb", bpb), ("accuracy", acc), ("mixed", inputs.mixed))
        },
        "mixed_docs": [
            {"id": doc.doc_id, "prefix_chars": doc.prefix_chars, "segments": [asdict(s) for s in doc.segments]}
            for doc in inputs.mixed_docs
        ],
        "mixed_routing": {k: {"value": v, "se": se} for k, (v, se) in inputs.switch_routing.items()},
        "cost": {
            "mean_context": inputs.context,
            "models": {
                m: {"flops_per_token": c.per_token, "routing_flops_per_prefix_token": c.routing, "how": c.how}
                for m, c in inputs.costs.items()
            },
        },
        "skipped": inputs.skipped,
        "seconds": inputs.seconds,
        "tasks": [
            {
                "name": t.spec.name,
                "domain": t.spec.domain,
                "kind": t.spec.kind,
                "items": len(t.items),
                "eligible": t.eligible,
                "chance": t.spec.chance,
            }
            for t in inputs.tasks
        ],
    }
