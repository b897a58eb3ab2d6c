"""The unrestricted MoE (the paper's upper bound: M_pub upcycled, experts and router trained on every domain's data
together) at another training budget, on a finished run, against that run's report rows.

Why beside the evaluation: the paper compares FlexOlmo with the unrestricted MoE at 1x and 2x the experts' training
FLOPs; the report trains it at `eval.unrestricted_steps` (anchor-demo: 1.0x), and a whole anchor-demo evaluation takes
about an hour on 2 cores. This trains and scores only that family (`families.score_unrestricted`, the evaluation's own
code) at `--steps`, on the evaluation's requests, batches and bootstrap draws (`evaluate.scoring_inputs`), and sets it
beside results.json's rows.
The differences to those rows get the unpaired, conservative SE sqrt(se_a² + se_b²): their per-request scores are not
kept, so the draws cannot be paired.

Usage:  FLEXO_PARAMS=<params.yaml of a finished run> .venv/bin/python benchmarks/unrestricted_budget.py
        --profile anchor-demo --steps 88 [--out FILE]
Prints one JSON document and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COMPARED = ("M_pub", "FlexOlmo (no RT)", "FlexOlmo (RT, public)", "unrestricted MoE")
TABLES = {"bpb": "bpb", "accuracy": "acc"}  # results.json's table -> `domain_table`'s metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--steps", type=int, required=True, help="unrestricted MoE training steps")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.steps <= 0:
        parser.error("--steps must be positive")

    import torch

    from tasks.core.artifacts import RunPaths
    from tasks.core.config import load_profile
    from tasks.core.device import resolve_run_precision, torch_device
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.evaluate import scoring_inputs
    from tasks.evaluation.families import score_unrestricted
    from tasks.evaluation.inputs import load_models
    from tasks.evaluation.metrics import bootstrap_indices, domain_table, score_model
    from tasks.evaluation.results import UNRESTRICTED
    from tasks.evaluation.runner import EvalRun, Runner
    from tasks.evaluation.targets import read_results

    profile = load_profile(profile=args.profile)
    reference = read_results(RunPaths(profile).eval_dir / "results.json", profile.name)
    profile = profile.model_copy(update={"eval": profile.eval.model_copy(update={"unrestricted_steps": args.steps})})
    if profile.runtime.num_threads:  # the evaluation's thread count (`evaluate` sets it the same way)
        torch.set_num_threads(profile.runtime.num_threads)
    device = torch_device(profile)
    tokenizer = load_tokenizer(profile)
    inputs = scoring_inputs(profile, tokenizer)  # the evaluation's requests and batches, mixed documents included
    tasks, scored, requests, layout = inputs.tasks, inputs.scored, inputs.requests, inputs.layout
    resamples = bootstrap_indices(scored, profile.eval.bootstrap, profile.seed)  # and its bootstrap draws
    models = load_models(profile, device)
    models.release("dense", "not read by the unrestricted MoE")
    runner = Runner(profile, device, tokenizer.pad_token_id, None, resolve_run_precision(profile, device))
    run = EvalRun(profile, device, tokenizer, scored, requests, layout, models, runner)
    started = time.perf_counter()
    score_unrestricted(run)
    seconds = time.perf_counter() - started
    per_task = score_model(scored, layout, run.results[UNRESTRICTED], resamples)
    domains = list(profile.domains)
    row = {table: domain_table(tasks, per_task, domains, metric) for table, metric in TABLES.items()}
    label = f"{UNRESTRICTED}, {args.steps} steps"
    measured = {t: {c: {"value": s.value, "se": s.se} for c, s in cols.items()} for t, cols in row.items()}
    rows = {label: measured} | {m: {t: reference[t][m] for t in TABLES if m in reference.get(t, {})} for m in COMPARED}
    payload = {
        "benchmark": "unrestricted_budget",
        "profile": profile.name,
        "date": datetime.date.today().isoformat(),
        "steps": args.steps,
        "reference_steps": reference.get("extras", {}).get(UNRESTRICTED, {}).get("steps"),
        "extras": run.extras.get(UNRESTRICTED, {}),
        "seconds": round(seconds, 1),
        "machine": reference.get("machine"),
        "rows": rows,
        "minus": {m: _gaps(rows, label, m) for m in COMPARED},
    }
    text = json.dumps(payload, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(_table(payload, label))


def _gaps(rows: dict, label: str, model: str) -> dict:
    """`label`'s row minus `model`'s, per table's average, as the targets compute a gap (`targets.Scores`): without
    results.json's paired SEs, the unpaired sqrt(se_a² + se_b²)."""
    from tasks.evaluation.targets import Scores

    out = {}
    for table in TABLES:
        cells = {name: row[table] for name, row in rows.items() if "average" in row.get(table, {})}
        if label in cells and model in cells:
            out[table] = asdict(Scores({table: cells}, table).gap(label, model, "average"))
    return out


def _cell(score: dict, signed: bool = False) -> str:
    return f"{score['value']:{'+' if signed else ''}.3f} ± {score['se']:.3f}"


def _table(payload: dict, label: str) -> str:
    lines = ["", "| model | bits per byte (average) | accuracy (average) | new row minus it: bpb | accuracy |"]
    lines.append("|---|---:|---:|---:|---:|")
    for name, row in payload["rows"].items():
        cells = [_cell(row[t]["average"]) if t in row else "–" for t in TABLES]
        gaps = payload["minus"].get(name, {})
        diff = [_cell(gaps[t], signed=True) if t in gaps else "" for t in TABLES]
        lines.append(f"| {name} | " + " | ".join(cells + diff) + " |")
    return "\n".join(lines) + f"\n\n{label}: compute_vs_experts {payload['extras'].get('compute_vs_experts')}"


if __name__ == "__main__":
    main()
