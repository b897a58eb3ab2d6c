"""Peak resident memory of one evaluation family alone, at the params' full size: the stage's inputs are built as
`tasks.evaluation.evaluate` builds them, the dense models are released (as the stage does before its MoE families),
and only `--family` runs, inside a `model.memory.PeakWindow`.

Why beside `eval_memory.py`: the whole stage at full demo size takes about 10 minutes and more memory than a shared
machine may spare; one family shows how its peak depends on its size (training steps, requests) in 2-4 minutes.
`--step-trim on|off` overrides the profile's `eval.trim_heap_each_step` (`trim_heap` between training steps), for
comparison.

Usage:  FLEXO_PARAMS=<params.yaml of a finished run> .venv/bin/python benchmarks/eval_family_memory.py
        --family score_unrestricted [--step-trim on|off] [--profile demo]
Prints one JSON line (the requests are the FLEXMIX tasks', without the mixed-domain documents). Set
ONEDNN_PRIMITIVE_CACHE_CAPACITY in the environment to bound oneDNN's primitive cache.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", required=True, help="a function name of tasks.evaluation.families.FAMILIES")
    parser.add_argument("--profile", default="demo")
    parser.add_argument(
        "--step-trim", choices=("on", "off"), help="heap trim between training steps (default: profile)"
    )
    args = parser.parse_args()

    from model.memory import PeakWindow, current_rss_gib, release_freed_memory
    from tasks.core.config import load_profile
    from tasks.core.device import resolve_run_precision, torch_device
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation import families
    from tasks.evaluation.inputs import held_out_split_paths, load_models, load_test_frames, tokenize_tasks
    from tasks.evaluation.runner import EvalRun, Runner
    from tasks.evaluation.tasks import build_tasks

    family = {f.__name__: f for f in families.FAMILIES}[args.family]
    profile = load_profile(profile=args.profile)
    if args.step_trim:
        trim = args.step_trim == "on"
        profile = profile.model_copy(update={"eval": profile.eval.model_copy(update={"trim_heap_each_step": trim})})
    device = torch_device(profile)
    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed, held_out_split_paths(profile))
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    models = load_models(profile, device)
    if "dense" not in families.USES.get(args.family, frozenset()):
        models.release("dense", "not read by this family")
    runner = Runner(profile, device, tokenizer.pad_token_id, None, resolve_run_precision(profile, device))
    run = EvalRun(profile, device, tokenizer, list(tasks), requests, layout, models, runner)
    del models
    release_freed_memory()
    before = current_rss_gib() or 0.0
    window, start = PeakWindow(), time.perf_counter()
    family(run)
    peak = window.close()
    print(
        json.dumps(
            {
                "family": args.family,
                "profile": profile.name,
                "step_trim": profile.eval.trim_heap_each_step,
                "onednn_primitive_cache": os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "default"),
                "requests": len(requests),
                "rss_before_gib": round(before, 3),
                "peak_rss_gib": round(peak.rss_gib, 3),
                "exact": peak.exact,
                "rss_after_gib": round(current_rss_gib() or 0.0, 3),
                "seconds": round(time.perf_counter() - start, 1),
                "extras": run.extras,
            }
        )
    )


if __name__ == "__main__":
    main()
