"""Router tuning (RT) alone, on a finished run: the serving MoE against its router-tuned copies, on public text alone
and with the owners' proxy sets, with where each domain's tokens go before and after.

Why beside the evaluation: a full `flexo eval` at anchor sizes takes about two hours on 2 cores, and what RT changes
shows in the FlexOlmo rows and the router alone. The stage's inputs are built as `tasks.evaluation.evaluate` builds
them; `families.router_tuned` tunes exactly as the evaluation's RT row does (`eval.rt_steps`, `eval.router_train_lr`,
...), so the numbers are those the report's "FlexOlmo (RT, public)" row would show with that `eval.rt_data`.

Usage:  FLEXO_PARAMS=<params.yaml of a finished run> .venv/bin/python benchmarks/router_tuning.py --profile anchor-demo
        [--data proxy public] [--steps N] [--kinds bpb mc em] [--out benchmarks/results/rt_<profile>_<date>.json]
Prints one JSON document and a table: per model, bits per byte per domain and average (and accuracy when `mc`/`em`
tasks are scored), paired differences against the untuned MoE with 2 SE, the router's losses, and per domain the
mean router probability (over layers, on the first `eval.sweep_docs` bpb documents) on the domain's own expert, on
the public FFN and the largest on any other.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVED = "FlexOlmo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--data", nargs="+", default=["proxy", "public"], choices=["proxy", "public"])
    parser.add_argument("--steps", type=int, default=None, help="RT steps (default: the profile's eval.rt_steps)")
    parser.add_argument("--kinds", nargs="+", default=["bpb", "mc", "em"], help="task kinds to score")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    import numpy as np
    import torch

    from model.scoring import model_scorer
    from tasks.core.config import load_profile
    from tasks.core.device import resolve_run_precision, torch_device
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.families import router_tuned
    from tasks.evaluation.inputs import held_out_split_paths, load_models, load_test_frames, tokenize_tasks
    from tasks.evaluation.metrics import bootstrap_indices, domain_table, score_model
    from tasks.evaluation.results import router_mass_rows
    from tasks.evaluation.runner import EvalRun, Runner
    from tasks.evaluation.sweeps import routing_by_domain
    from tasks.evaluation.tasks import build_tasks

    profile = load_profile(profile=args.profile)
    if args.steps is not None:
        profile = profile.model_copy(update={"eval": profile.eval.model_copy(update={"rt_steps": args.steps})})
    device = torch_device(profile)
    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed, held_out_split_paths(profile))
    tasks = [t for t in tasks if t.spec.kind in args.kinds]
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    resamples = bootstrap_indices(tasks, profile.eval.bootstrap, profile.seed)
    models = load_models(profile, device)
    models.release("dense", "not read by router tuning")
    runner = Runner(profile, device, tokenizer.pad_token_id, None, resolve_run_precision(profile, device))
    run = EvalRun(profile, device, tokenizer, tasks, requests, layout, models, runner)
    # where tokens go is counted on the first `eval.sweep_docs` documents of each bpb task, as the report's routing is
    routed = [replace(t, items=t.items[: profile.eval.sweep_docs]) for t in tasks if t.spec.kind == "bpb"]
    experts = run.models.experts  # the public FFN first
    domains = list(profile.domains)

    def measure(name: str, moe: torch.nn.Module) -> dict:
        started = time.perf_counter()
        scores = runner.run(name, requests, model_scorer(moe, name))[name]
        per_task = score_model(tasks, layout, scores, resamples)
        with runner.autocast():
            routing = routing_by_domain(run, routed, moe)
        router = {
            domain: {
                "own": None if row.own is None else round(row.own, 4),
                "public": round(row.public, 4),
                "strongest_other": None if row.strongest_other is None else round(row.strongest_other[1], 4),
            }
            for domain, row in router_mass_rows(routing.mass, domains, experts).items()
        }
        return {
            "per_task": per_task,
            "bpb": domain_table(tasks, per_task, domains, "bpb"),
            "acc": domain_table(tasks, per_task, domains, "acc"),
            "router_mass": router,
            "score_seconds": round(time.perf_counter() - started, 1),
        }

    results = {SERVED: measure(SERVED, run.models.moe)}
    extras = {}
    for data in args.data:
        started = time.perf_counter()
        tuned, extras[data] = router_tuned(run, data)
        extras[data]["tune_seconds"] = round(time.perf_counter() - started, 1)
        results[f"RT on {data}"] = measure(f"RT on {data}", tuned)
        del tuned

    def cell(score, reference=None) -> dict:
        out = {"value": round(score.value, 4), "se": round(score.se, 4)}
        if reference is not None:
            diff = score.replicates - reference.replicates
            out["minus_served"] = round(score.value - reference.value, 4)
            out["minus_served_se"] = round(float(np.std(diff, ddof=1)), 4)
        return out

    payload = {
        "benchmark": "router_tuning",
        "profile": profile.name,
        "date": datetime.date.today().isoformat(),
        "rt_steps": profile.eval.rt_steps,
        "router_train_lr": profile.eval.router_train_lr,
        "rt_proxy_docs": profile.eval.rt_proxy_docs,
        "rt_proxy_pool": profile.eval.rt_proxy_pool,
        "top_k": run.default_k,
        "experts": experts,
        "kinds": args.kinds,
        "requests": len(requests),
        "rt": extras,
        "models": {
            name: {
                table: {
                    column: cell(score, results[SERVED][table].get(column) if name != SERVED else None)
                    for column, score in r[table].items()
                }
                for table in ("bpb", "acc")
            }
            | {"router_mass": r["router_mass"], "score_seconds": r["score_seconds"]}
            for name, r in results.items()
        },
    }
    text = json.dumps(payload, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    _table(payload, domains)


def _table(payload: dict, domains: list[str]) -> None:
    """Per model and domain: bits per byte, its paired difference from the untuned MoE (± 2 SE), and the mean router
    probability on the domain's own expert."""
    columns = [*domains, "average"]
    print(f"\n{'':<18}" + "".join(f"{c[:14]:>16}" for c in columns))
    for name, row in payload["models"].items():
        bpb, mass = row["bpb"], row["router_mass"]
        print(f"{name[:18]:<18}" + "".join(f"{bpb[c]['value']:>16.3f}" if c in bpb else f"{'':>16}" for c in columns))
        if name != SERVED:
            diffs = [
                f"{bpb[c]['minus_served']:+.3f}±{2 * bpb[c]['minus_served_se']:.3f}" if c in bpb else ""
                for c in columns
            ]
            print(f"{'  minus served':<18}" + "".join(f"{d:>16}" for d in diffs))
        own = [mass[d]["own"] for d in domains]
        print(f"{'  own mass':<18}" + "".join(f"{'-' if o is None else f'{o:.3f}':>16}" for o in own))


if __name__ == "__main__":
    main()
