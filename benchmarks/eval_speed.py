"""Evaluation speed: the FlexOlmo MoE scored on every FLEXMIX-small task of a profile (target: <= 3 minutes for `demo`
on 2 CPU cores), through the same batched harness `flexo eval` uses.

The tasks are built from the real test splits under data/ (the data stage must have run). The MoE is the assembled one
when it exists (registry `serving` or runs/<profile>/moe), else a MoE of the profile's exact sizes and expert count with
random weights: scoring time does not depend on the weight values. `--sample N` scores every (len/N)-th request of the
length-sorted list and extrapolates by token count (reported as such).

`--precision bf16` scores under bf16 autocast instead and also reports how far its per-request log-likelihoods are from
an fp32 pass over the same requests (whether bf16 scoring would be accurate enough for FLEXMIX comparisons).

Usage:  .venv/bin/python benchmarks/eval_speed.py [--profile demo] [--threads 2] [--sample 0] [--precision fp32|bf16]
Prints one JSON object and a table.
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


def _moe(profile, tokenizer):
    """The assembled MoE when there is one, else one of the profile's sizes with random weights; (model, source)."""
    from model.baselines import random_router_rows, upcycle
    from model.config import ModelSizes, TokenizerIds
    from model.public import build_public_model, load_moe
    from tasks.core.build import moe_top_k
    from tasks.core.errors import DataError
    from tasks.registry.locate import locate_moe

    try:
        return load_moe(str(locate_moe(profile))), "assembled"
    except DataError:
        sizes = ModelSizes.from_mapping(profile.model)
        experts = len(profile.domains)
        public = build_public_model(sizes, TokenizerIds(tokenizer.pad_token_id, tokenizer.eos_token_id), seed=0)
        rows = random_router_rows(experts, sizes.hidden_size, sizes.init_std, seed=1)
        return upcycle(public, experts, rows, moe_top_k(profile, experts)).eval(), "random weights, profile sizes"


def _sample(requests: list, count: int) -> list:
    """Every (len/count)-th request of the length-sorted list (all of them when `count` is 0 or too large)."""
    if not count or count >= len(requests):
        return requests
    ordered = sorted(requests, key=lambda r: len(r.context) + len(r.target))
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(count)]


def _bf16_accuracy(chosen: list, scores, moe, profile, pad_id: int) -> dict[str, float]:
    """How far bf16 scores are from an fp32 pass over the same requests."""
    from model.scoring import model_scorer, score_requests

    reference = score_requests(chosen, model_scorer(moe, "moe"), profile.eval.batch_size, pad_id)["moe"]
    targets = sum(len(r.target) for r in chosen)
    return {
        "mean_abs_loglik_diff_per_token_nats": float(abs(scores.loglik - reference.loglik).sum() / targets),
        "total_loglik_rel_diff": float(abs(scores.loglik.sum() - reference.loglik.sum()) / abs(reference.loglik.sum())),
        "greedy_agreement": float((scores.greedy == reference.greedy).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample", type=int, default=0, help="score only this many requests and extrapolate (0 = all)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()

    import torch

    import tasks  # noqa: F401  (offline)
    from model.scoring import model_scorer, score_requests
    from tasks.core.config import load_profile
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import load_test_frames, tokenize_tasks
    from tasks.evaluation.tasks import build_tasks

    torch.set_num_threads(args.threads)
    profile = load_profile(args.profile)
    tokenizer = load_tokenizer(profile)
    task_list = build_tasks(load_test_frames(profile), profile.eval, profile.seed)
    requests, _ = tokenize_tasks(task_list, tokenizer, profile.model.max_seq_len)
    moe, source = _moe(profile, tokenizer)
    total_tokens = sum(len(r.context) + len(r.target) for r in requests)
    chosen = _sample(requests, args.sample)
    chosen_tokens = sum(len(r.context) + len(r.target) for r in chosen)
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        scorer = model_scorer(moe, "moe")
        scores = score_requests(chosen, scorer, profile.eval.batch_size, tokenizer.pad_token_id)["moe"]
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # CPU time we actually got (the machine may be shared)
    accuracy = {}
    if args.precision == "bf16":  # the same requests in fp32: how much bf16 moves each score
        accuracy = _bf16_accuracy(chosen, scores, moe, profile, tokenizer.pad_token_id)
    estimate = seconds * total_tokens / chosen_tokens
    result = {
        "profile": args.profile,
        "threads": args.threads,
        "precision": args.precision,
        **accuracy,
        "load_average_1m": os.getloadavg()[0],
        "moe": source,
        "experts": moe.config.num_experts,
        "top_k": moe.config.num_experts_per_tok,
        "tasks": len(task_list),
        "requests": len(requests),
        "tokens": total_tokens,
        "scored_requests": len(chosen),
        "scored_tokens": chosen_tokens,
        "seconds_scored": seconds,
        "seconds_all_tasks": estimate,
        "extrapolated": len(chosen) < len(requests),
        "tokens_per_s": chosen_tokens / seconds,
        "cpu_seconds_scored": cpu_seconds,
        "cpu_share": cpu_seconds / seconds / args.threads,
        "target_s": 180,
        "meets_target": estimate <= 180,
    }
    print(json.dumps(result))
    print(
        f"\n{len(task_list)} tasks, {len(requests)} requests, {total_tokens} tokens; MoE ({source}) "
        f"{result['tokens_per_s']:.0f} tokens/s -> {estimate:.0f} s for all tasks"
        f"{' (extrapolated)' if result['extrapolated'] else ''}; "
        f"target <= 180 s: {'PASS' if result['meets_target'] else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
