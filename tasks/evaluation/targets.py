"""The science targets (the paper's claims) on a finished evaluation: holds, within noise or fails, with ± 2 SE.

Why pure functions of results.json (plus the training records): an evaluation written before these checks existed
gets its verdicts by re-reading its own numbers (`flexo targets`), and each rule is testable on a hand-built payload.

Standard errors: every model is scored on the same bootstrap draws, and results.json keeps the SE of each model's gap
to M_pub, BTM and FlexOlmo on them (`paired_se`); a combination of scores gets its SE from those covariances. A
results.json written before `paired_se` existed has each score's SE only: its gaps get the conservative, unpaired
sqrt(se_a² + se_b²). The opt-out deltas are differences already and carry their paired SE. Ratios and relative gains
get theirs by the delta method.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.core.artifacts import TRAIN_RESULT_FILE, RunPaths
from tasks.core.config import TargetsConfig
from tasks.evaluation.results import BTM, PUBLIC, SOUP_WEIGHTED, UNRESTRICTED, dense_name, served_flex_row
from tasks.evaluation.target_diagnosis import expert_reach, optout_reach, public_reach, router_specificity

HOLDS, NOISE, FAILS = "holds", "within noise", "fails"
NOT_MEASURED, NOT_APPLICABLE = "not measured", "not applicable"
_RANK = {HOLDS: 0, NOISE: 1, FAILS: 2}
PUBLIC_DOMAIN = "public"
_BTM_PREFIX = BTM.split("{")[0]  # "BTM (top-": the row's label carries the profile's k


@dataclass(frozen=True)
class Estimate:
    """A measured number and its standard error."""

    value: float
    se: float

    def show(self, digits: int = 3) -> str:
        return f"{self.value:+.{digits}f} ± {self.se:.{digits}f}"


@dataclass(frozen=True)
class Verdict:
    """One target's row: what it asks, what this run measured, the verdict and, where it fails, where to look."""

    key: str
    target: str
    measured: str
    verdict: str  # holds | within noise | fails | not measured | not applicable
    diagnosis: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def beyond(margin: Estimate, noise_se: float) -> str:
    """`margin` > 0 is what the target asks: holds beyond `noise_se` SE, fails beyond it the other way."""
    if margin.value > noise_se * margin.se:
        return HOLDS
    return FAILS if margin.value < -noise_se * margin.se else NOISE


def worst(verdicts: list[str]) -> str:
    """A target of several parts is as good as its worst part."""
    return max(verdicts, key=lambda v: _RANK[v]) if verdicts else NOT_MEASURED


class Scores:
    """One table of results.json (bpb, accuracy or mixed) with the covariances its paired SEs give."""

    def __init__(self, payload: dict, table: str) -> None:
        self.cells: dict[str, dict[str, dict[str, float]]] = payload.get(table, {})
        self.paired: dict[str, dict[str, dict[str, float]]] = payload.get("paired_se", {}).get(table, {})

    def get(self, model: str, column: str) -> Estimate | None:
        cell = self.cells.get(model, {}).get(column)
        return None if cell is None else Estimate(float(cell["value"]), float(cell["se"]))

    def has(self, models: list[str], column: str) -> bool:
        return all(self.get(m, column) is not None for m in models)

    def cov(self, a: str, b: str, column: str) -> float:
        """Cov(a, b) from Var(a − b) = Var a + Var b − 2 Cov; 0 (unpaired) where results.json has no paired SE."""
        se_a, se_b = self.cells[a][column]["se"], self.cells[b][column]["se"]
        if a == b:
            return se_a**2
        gap = self.paired.get(b, {}).get(a, {}).get(column, self.paired.get(a, {}).get(b, {}).get(column))
        return 0.0 if gap is None else (se_a**2 + se_b**2 - gap**2) / 2

    def delta(self, value: float, gradient: dict[str, float], column: str) -> Estimate:
        """A function of the scores: its `value` and the delta-method SE from its `gradient` (model -> ∂/∂score)."""
        var = sum(ga * gb * self.cov(a, b, column) for a, ga in gradient.items() for b, gb in gradient.items())
        return Estimate(value, math.sqrt(max(var, 0.0)))

    def linear(self, weights: dict[str, float], column: str) -> Estimate:
        """Σ weight × score (e.g. {a: 1, b: -1}: the gap a − b) with its SE."""
        value = sum(w * self.cells[m][column]["value"] for m, w in weights.items())
        return self.delta(value, weights, column)

    def gap(self, a: str, b: str, column: str) -> Estimate:
        return self.linear({a: 1.0, b: -1.0}, column)


def served_flex(payload: dict) -> str:
    """The FlexOlmo row the report serves: with router tuning where it ran (as the report's comparison picks it)."""
    return served_flex_row(payload.get("accuracy", {}))


def btm_label(payload: dict) -> str | None:
    """The BTM row's label (it names the profile's BTM top-k), from whichever table has it."""
    rows = [m for table in ("bpb", "accuracy", "mixed") for m in payload.get(table, {})]
    return next((m for m in rows if m.startswith(_BTM_PREFIX)), None)


def closed_domains(payload: dict) -> list[str]:
    return [e for e in payload.get("experts", []) if e != PUBLIC_DOMAIN]


def why(diagnosis: str) -> str:
    """The mechanism behind a failed verdict (`target_diagnosis`), as the verdict cell's last clause."""
    return f"; why: {diagnosis}" if diagnosis else ""


def _why_missing(payload: dict, model: str) -> str:
    return payload.get("skipped", {}).get(model) or f"results.json has no {model} row"


def k_sweep_hint(payload: dict) -> str:
    """Where the served top-k is far from the k-sweep's best average bits per byte, the sweep names the better k."""
    sweep = {int(k): row["average"] for k, row in payload.get("k_sweep", {}).items() if "average" in row}
    served = sweep.get(int(payload.get("top_k", 0)))
    if not sweep or served is None:
        return ""
    best_k = min(sweep, key=lambda k: sweep[k]["value"])
    best = sweep[best_k]
    if best_k == payload["top_k"] or served["value"] - best["value"] <= math.hypot(served["se"], best["se"]):
        return ""
    return (
        f"; k-sweep: top-{best_k} averages {best['value']:.3f} ± {best['se']:.3f} bits/byte against "
        f"{served['value']:.3f} ± {served['se']:.3f} at the served top-{payload['top_k']}"
    )


# --- 1. training budget -------------------------------------------------------------------------------------------


def load_training(paths: RunPaths, domains: list[str]) -> dict[str, dict]:
    """Every train_result.json the profile's training wrote: M_pub, each expert and dense model (label -> record)."""
    places = {PUBLIC: paths.public_dir}
    for domain in domains:
        places[f"expert {domain}"] = paths.expert_dir(domain)
        places[dense_name(domain)] = paths.dense_dir(domain)
    records = {}
    for label, directory in places.items():
        path = directory / TRAIN_RESULT_FILE
        if path.is_file():
            records[label] = json.loads(path.read_text(encoding="utf-8"))
    return records


def epochs_target(training: dict[str, dict], anchored: bool, cfg: TargetsConfig) -> Verdict:
    """No model trains more than `max_epochs` passes over its split (a pretrained anchor is not trained here)."""
    target = f"no model trains more than {cfg.max_epochs:g} epochs"
    passes = {
        label: float(r["params"]["epochs"])
        for label, r in training.items()
        if "epochs" in r.get("params", {}) and not (anchored and label == PUBLIC)
    }
    if not passes:
        return Verdict("epochs", target, "–", NOT_MEASURED, "no train_result.json with `epochs` under the run")
    most = max(passes, key=lambda m: passes[m])
    over = [f"{m} {passes[m]:.2f}" for m in passes if passes[m] > cfg.max_epochs]
    measured = f"most: {most} {passes[most]:.3g} epochs ({len(passes)} trainings" + (
        "; M_pub is the pretrained anchor)" if anchored else ")"
    )
    return Verdict("epochs", target, measured, FAILS if over else HOLDS, "over: " + ", ".join(over) if over else "")


def export_target(public: dict | None, anchored: bool, cfg: TargetsConfig) -> Verdict:
    """M_pub's exported weights are (close to) its best validation: the export gap relative to the best loss."""
    target = f"M_pub's exported validation loss within {100 * cfg.max_export_gap:g}% of its best"
    if anchored:
        return Verdict("export", target, "–", NOT_APPLICABLE, "pretrained anchor (the experts' passes are above)")
    if public is None:
        return Verdict("export", target, "–", NOT_MEASURED, f"no {PUBLIC} {TRAIN_RESULT_FILE} under the run")
    history = [h for h in public.get("history", []) if "val_loss" in h]
    metrics = public.get("metrics", {})
    exported_step = public.get("exported_step")
    at_export = [h["val_loss"] for h in history if exported_step is not None and int(h["step"]) == exported_step]
    exported = at_export[0] if at_export else metrics.get("val_loss")
    best = min((h["val_loss"] for h in history), default=metrics.get("best_val_loss"))
    if exported is None or best is None:
        return Verdict("export", target, "–", NOT_MEASURED, f"{PUBLIC} recorded no validation loss")
    gap = exported / best - 1
    measured = f"exported {exported:.4f} (step {exported_step}), best {best:.4f}: {100 * gap:+.2f}%"
    ok = gap <= cfg.max_export_gap
    return Verdict("export", target, measured, HOLDS if ok else FAILS, "" if ok else public.get("export_reason", ""))


# --- 2. FlexOlmo keeps most of each specialist's gain --------------------------------------------------------------


def gain_share(
    scores: Scores, public: str, flex: str, dense: str, column: str, share: float
) -> tuple[Estimate, Estimate]:
    """(ratio, margin): FlexOlmo's bpb gain over M_pub / the dense specialist's (delta-method SE), and the margin
    flex gain − share × dense gain, which decides the verdict and stays defined where the dense gain is near 0."""
    p, f, d = (scores.cells[m][column]["value"] for m in (public, flex, dense))
    g_flex, g_dense = p - f, p - d
    margin = scores.linear({public: 1 - share, flex: -1.0, dense: share}, column)
    if g_dense == 0:
        return Estimate(math.nan, math.nan), margin
    gradient = {public: (f - d) / g_dense**2, flex: -1 / g_dense, dense: g_flex / g_dense**2}
    return scores.delta(g_flex / g_dense, gradient, column), margin


def gain_share_target(payload: dict, cfg: TargetsConfig, training: dict[str, dict] | None = None) -> Verdict:
    flex = served_flex(payload)
    target = (
        f"on every closed domain, {flex}'s bpb gain over {PUBLIC} is at least {100 * cfg.min_gain_share:g}% of the "
        "dense specialist's"
    )
    parts, measured, short, failed = [], [], [], []
    bpb = Scores(payload, "bpb")
    for domain in closed_domains(payload):
        dense = dense_name(domain)
        if not bpb.has([PUBLIC, flex, dense], domain):
            continue
        ratio, margin = gain_share(bpb, PUBLIC, flex, dense, domain, cfg.min_gain_share)
        verdict = beyond(margin, cfg.noise_se)
        parts.append(verdict)
        measured.append(f"{domain} {ratio.value:.2f} ± {ratio.se:.2f}")
        if verdict != HOLDS:
            gains = f"{flex} {bpb.gap(PUBLIC, flex, domain).show()}, dense {bpb.gap(PUBLIC, dense, domain).show()}"
            short.append(f"{domain} {verdict} (gains: {gains})")
        if verdict == FAILS:
            failed.append(domain)
    if not parts:
        return Verdict("gain_share", target, "–", NOT_MEASURED, _why_missing(payload, flex))
    verdict = worst(parts)
    hint = k_sweep_hint(payload) + why(expert_reach(payload, training or {}, flex, failed)) if verdict == FAILS else ""
    return Verdict("gain_share", target, "ratio " + ", ".join(measured), verdict, "; ".join(short) + hint)


# --- 3. no forgetting on the public domain --------------------------------------------------------------------------


def forgetting_target(payload: dict, cfg: TargetsConfig) -> Verdict:
    """FlexOlmo's public bpb no worse than M_pub's beyond 2 SE, while every dense specialist's is worse beyond it."""
    flex, k = served_flex(payload), cfg.noise_se
    target = f"{flex}'s public bpb within {k:g} SE of {PUBLIC}'s, the dense specialists' worse"
    bpb = Scores(payload, "bpb")
    if not bpb.has([PUBLIC, flex], PUBLIC_DOMAIN):
        return Verdict("forgetting", target, "–", NOT_MEASURED, _why_missing(payload, flex))
    kept = bpb.gap(flex, PUBLIC, PUBLIC_DOMAIN)  # positive = more bits = forgot
    parts = [FAILS if kept.value > k * kept.se else HOLDS]
    notes = [f"{flex} forgets ({kept.show()})"] if parts[0] == FAILS else []
    lost: list[str] = []
    kept_by: dict[str, list[str]] = {NOISE: [], FAILS: []}  # dense specialists that did not lose public beyond noise
    for domain in closed_domains(payload):
        if not bpb.has([dense_name(domain)], PUBLIC_DOMAIN):
            continue
        loss = bpb.gap(dense_name(domain), PUBLIC, PUBLIC_DOMAIN)
        lost.append(beyond(loss, k))
        if lost[-1] != HOLDS:
            kept_by[lost[-1]].append(f"{domain} {loss.show()}")
    notes += [f"dense {what}: " + ", ".join(names) for what, names in kept_by.items() if names]
    measured = f"{flex} − {PUBLIC}: {kept.show()}; dense worse beyond {k:g} SE: {lost.count(HOLDS)} of {len(lost)}"
    verdict = worst(parts + lost)
    hint = k_sweep_hint(payload) + why(public_reach(payload, flex)) if parts[0] == FAILS else ""
    return Verdict("forgetting", target, measured, verdict, "; ".join(notes) + hint)


# --- 4. opt-out locality ----------------------------------------------------------------------------------------


def optout_target(payload: dict, cfg: TargetsConfig) -> Verdict:
    """Removing expert i worsens domain i beyond 2 SE and moves no other domain beyond 2 SE (paired deltas)."""
    k = cfg.noise_se
    target = f"removing expert i worsens domain i beyond {k:g} SE and moves no other domain beyond it (paper Fig. 4)"
    optout = payload.get("opt_out", {})
    if not optout:
        return Verdict("opt_out", target, "–", NOT_MEASURED, "results.json has no opt-out deltas")
    parts, notes, own_ok, moved, cells, moves = [], [], 0, 0, 0, []
    for removed, row in optout.items():
        own = row.get(removed)
        if own is None:
            continue
        own_delta = Estimate(own["value"], own["se"])
        parts.append(beyond(own_delta, k))
        own_ok += parts[-1] == HOLDS
        if parts[-1] != HOLDS:
            notes.append(f"removing {removed}: own {own_delta.show()} ({parts[-1]})")
        others = {d: Estimate(s["value"], s["se"]) for d, s in row.items() if d not in (removed, "average")}
        far = {d: s for d, s in others.items() if abs(s.value) > k * s.se}
        cells, moved = cells + len(others), moved + len(far)
        if far:
            parts.append(FAILS)
            top = max(far, key=lambda d: abs(far[d].value))
            notes.append(f"removing {removed} moved {len(far)} other domain(s), most {top} {far[top].show()}")
            moves.append((removed, top))
    measured = f"own domain worse beyond {k:g} SE: {own_ok} of {len(optout)}; other domains moved: {moved} of {cells}"
    verdict = worst(parts)
    shown = "; ".join(notes[:3]) + (f"; +{len(notes) - 3} more" if len(notes) > 3 else "")
    hint = k_sweep_hint(payload) + why(optout_reach(payload, moves[:3])) if verdict == FAILS else ""
    return Verdict("opt_out", target, measured, verdict, shown + hint)


# --- 5. mixed-domain documents ------------------------------------------------------------------------------------


def mixed_target(payload: dict, cfg: TargetsConfig) -> Verdict:
    flex, btm = served_flex(payload), btm_label(payload)
    target = f"on mixed-domain documents {flex} beats BTM beyond {cfg.noise_se:g} SE (bits per byte)"
    mixed = payload.get("mixed", {})
    if not mixed:
        return Verdict("mixed", target, "–", NOT_MEASURED, "results.json has no mixed-domain scores")
    if btm is None or flex not in mixed or btm not in mixed:
        missing = flex if flex not in mixed else (btm or "BTM")
        return Verdict("mixed", target, "–", NOT_MEASURED, _why_missing(payload, missing))
    scores = Scores(payload, "mixed")
    ours, theirs = scores.get(flex, "document"), scores.get(btm, "document")
    if ours is None or theirs is None:
        return Verdict("mixed", target, "–", NOT_MEASURED, "results.json has no whole-document mixed scores")
    gain = scores.gap(btm, flex, "document")  # positive = FlexOlmo needs fewer bits
    verdict = beyond(gain, cfg.noise_se)
    measured = f"{flex} {ours.value:.3f} ± {ours.se:.3f}, {btm} {theirs.value:.3f} ± {theirs.se:.3f}: {gain.show()}"
    diagnosis = ""
    if verdict != HOLDS:
        sides = [
            f"{column}: {scores.gap(btm, flex, column).show()}"
            for column in ("before switch", "after switch")
            if scores.has([flex, btm], column)
        ]
        hint = k_sweep_hint(payload) + why(router_specificity(payload, flex)) if verdict == FAILS else ""
        diagnosis = "gain " + ", ".join(sides) + hint
    return Verdict("mixed", target, measured, verdict, diagnosis)


# --- 6. the paper's ordering on the task average --------------------------------------------------------------------


def relative(scores: Scores, model: str, reference: str, column: str) -> Estimate:
    """model / reference − 1 with its delta-method SE."""
    m, r = scores.cells[model][column]["value"], scores.cells[reference][column]["value"]
    return scores.delta(m / r - 1, {model: 1 / r, reference: -m / r**2}, column)


def ordering_target(payload: dict, cfg: TargetsConfig) -> Verdict:
    """M_pub < soup < BTM < FlexOlmo <= unrestricted MoE on the task-average accuracy, FlexOlmo >= +10% over BTM."""
    flex, btm, k = served_flex(payload), btm_label(payload) or "BTM", cfg.noise_se
    target = (
        f"task average: {PUBLIC} < soup < BTM < FlexOlmo ≤ unrestricted MoE, FlexOlmo ≥ "
        f"+{100 * cfg.min_gain_over_btm:g}% over BTM"
    )
    acc, col = Scores(payload, "accuracy"), "average"
    avg = {m for m in acc.cells if acc.get(m, col) is not None}
    chain = [PUBLIC, SOUP_WEIGHTED, btm, flex]
    parts, measured, notes = [], [], []
    for low, high in zip(chain, chain[1:], strict=False):
        if low in avg and high in avg:
            diff = acc.gap(high, low, col)
            parts.append(beyond(diff, k))
            measured.append(f"{high} − {low} {diff.show()}")
            if parts[-1] != HOLDS:
                notes.append(f"{low} < {high}: {parts[-1]}")
        else:
            missing = low if low not in avg else high
            notes.append(f"{missing} not measured ({_why_missing(payload, missing)})")
    if flex in avg and UNRESTRICTED in avg:
        gap = acc.gap(UNRESTRICTED, flex, col)
        parts.append(FAILS if gap.value < -k * gap.se else HOLDS)
        measured.append(f"{UNRESTRICTED} − {flex} {gap.show()}")
        if parts[-1] == FAILS:
            notes.append(f"{flex} above the {UNRESTRICTED} beyond {k:g} SE")
    else:
        notes.append(f"{UNRESTRICTED}: not measured ({_why_missing(payload, UNRESTRICTED)})")
    if flex in avg and btm in avg:
        gain = relative(acc, flex, btm, col)
        parts.append(beyond(Estimate(gain.value - cfg.min_gain_over_btm, gain.se), k))
        measured.append(f"{flex} vs {btm} {100 * gain.value:+.1f}% ± {100 * gain.se:.1f}")
        if parts[-1] != HOLDS:
            notes.append(f"+{100 * cfg.min_gain_over_btm:g}% over BTM: {parts[-1]}")
    if not parts:
        return Verdict("ordering", target, "–", NOT_MEASURED, "; ".join(notes))
    verdict = worst(parts)
    hint = k_sweep_hint(payload) + why(router_specificity(payload, flex)) if verdict == FAILS else ""
    return Verdict("ordering", target, "; ".join(measured), verdict, "; ".join(notes) + hint)


def paired(payload: dict) -> bool:
    """Whether the gaps' SEs are paired (results.json written with `paired_se`) or unpaired (an older one)."""
    return bool(payload.get("paired_se"))


def evaluate_targets(payload: dict, training: dict[str, dict], anchored: bool, cfg: TargetsConfig) -> list[Verdict]:
    """Every target on one evaluation's results.json payload, in a fixed order."""
    return [
        epochs_target(training, anchored, cfg),
        export_target(training.get(PUBLIC), anchored, cfg),
        gain_share_target(payload, cfg, training),
        forgetting_target(payload, cfg),
        optout_target(payload, cfg),
        mixed_target(payload, cfg),
        ordering_target(payload, cfg),
    ]


def read_results(path: Path, profile: str) -> dict[str, Any]:
    """A finished evaluation's results.json; a clear error naming the file and the command that writes it."""
    from tasks.core.errors import DataError

    if not path.is_file():
        raise DataError(f"{path} not found: evaluate first (`flexo run -p {profile} --stage evaluate`)")
    return json.loads(path.read_text(encoding="utf-8"))
