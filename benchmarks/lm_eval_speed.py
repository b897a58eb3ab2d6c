"""The FlexOlmo pass through lm-evaluation-harness against flexo's own harness: wall time and per-item equality.

Both passes score the assembled MoE on every FLEXMIX task of a profile. The harness pass is what `evaluate` runs for
the FlexOlmo row (tasks built, tokenized, scored with routing counts); the lm-eval pass is everything a user of
`flexo-lm-eval` waits for (task files written, task configs indexed, datasets loaded, requests built, the `flexo`
model's loglikelihood calls, lm-eval's metrics), with the MoE loaded outside the timed part in both. Passes alternate
(harness, lm-eval, harness, ...) so machine load hits both alike; the lm-eval per-item log-likelihoods are compared
with the harness's.

`--root DIR` reads the profile's data and runs from DIR (DIR/data/<domain>/test.parquet, DIR/data/tokenizer,
DIR/runs/<profile>/moe), e.g. a copy of a finished demo run.

`--overhead` times only what lm-eval adds around the scoring: the same lm-eval pass with lm-eval's `dummy` model
(instant random answers) and the tokenization the `flexo` model repeats (`tokenize_tasks`); the scoring itself is the
same `model.scoring` code on the same batches either way. Cheap where a full pass is not (a shared, loaded machine).

Usage:  .venv/bin/python benchmarks/lm_eval_speed.py --profile demo --root /tmp/demo-copy [--repeats 2] [--overhead]
Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _profile(name: str, root: Path | None):
    from tasks.core.config import load_profile

    profile = load_profile(name)
    if root is None:
        return profile
    paths = {
        "data_dir": str(root / "data"),
        "runs_dir": str(root / "runs"),
        "reports_dir": str(root / "reports"),
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",  # no store there: the run directory's MoE
        "mlflow_artifacts_dir": str(root / "mlartifacts"),
        "dvc_remotes_dir": str(root / "remotes"),
    }
    return profile.model_copy(update={"paths": profile.paths.model_copy(update=paths)})


def harness_pass(profile, moe, device, precision) -> tuple[float, list, object]:
    """What `evaluate` does for the FlexOlmo row: (seconds, tasks, scores) with its layout on `scores.layout`."""
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import held_out_split_paths, load_test_frames, tokenize_tasks
    from tasks.evaluation.runner import RoutingScorer, Runner
    from tasks.evaluation.tasks import build_tasks

    start = time.perf_counter()
    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed, held_out_split_paths(profile))
    requests, layout = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
    runner = Runner(profile, device, tokenizer.pad_token_id, None, precision)
    scores = runner.run("FlexOlmo", requests, RoutingScorer(moe, "FlexOlmo"))["FlexOlmo"]
    return time.perf_counter() - start, tasks, (scores, layout)


def lm_eval_pass(profile, lm, folder: Path) -> tuple[float, dict]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from tasks.evaluation.inputs import held_out_split_paths, load_test_frames
    from tasks.evaluation.lm_eval_tasks import TAG
    from tasks.evaluation.tasks import build_tasks, write_lm_eval_files

    start = time.perf_counter()
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed, held_out_split_paths(profile))
    write_lm_eval_files(tasks, folder)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    out = lm_eval.simple_evaluate(model=lm, tasks=[TAG], task_manager=manager, log_samples=True, bootstrap_iters=0)
    return time.perf_counter() - start, out


def max_difference(tasks, harness, out) -> dict[str, float]:
    """Largest |lm-eval - harness| per-item log-likelihood, and how many items differ at all."""
    from tasks.evaluation.lm_eval_tasks import lm_eval_name

    scores, layout = harness
    worst, differing, items = 0.0, 0, 0
    for task, index in zip(tasks, layout.offsets, strict=True):
        samples = sorted(out["samples"][lm_eval_name(task.spec.name)], key=lambda s: int(s["doc_id"]))
        for sample, rows in zip(samples, index, strict=True):
            ours = scores.loglik[rows]
            theirs = [float(r[0][0]) for r in sample["resps"]]
            gap = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
            worst, differing, items = max(worst, gap), differing + int(gap > 0), items + 1
    return {"max_abs_loglik_difference": worst, "items_differing": differing, "items": items}


def overhead(profile, repeats: int) -> None:
    """lm-eval's pass with its `dummy` model, and the tokenization the flexo model adds, `repeats` times each."""
    from tasks.core.tokenizer import load_tokenizer
    from tasks.evaluation.inputs import held_out_split_paths, load_test_frames, tokenize_tasks
    from tasks.evaluation.tasks import build_tasks

    tokenizer = load_tokenizer(profile)
    tasks = build_tasks(load_test_frames(profile), profile.eval, profile.seed, held_out_split_paths(profile))
    lm_eval_s, tokenize_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            seconds, out = lm_eval_pass(profile, "dummy", Path(folder))
            lm_eval_s.append(seconds)
            start = time.perf_counter()
            requests, _ = tokenize_tasks(tasks, tokenizer, profile.model.max_seq_len)
            tokenize_s.append(time.perf_counter() - start)
            print(
                f"lm-eval pass (dummy model): {seconds:.2f} s; tokenize {len(requests)} requests: "
                f"{tokenize_s[-1]:.2f} s",
                flush=True,
            )
    result = {
        "profile": profile.name,
        "requests": len(requests),
        "lm_eval_dummy_s": lm_eval_s,
        "tokenize_s": tokenize_s,
    }
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--overhead", action="store_true", help="only what lm-eval adds around the scoring")
    args = parser.parse_args()
    if args.overhead:
        overhead(_profile(args.profile, args.root), args.repeats)
        return

    import torch

    from model.public import load_moe
    from tasks.core.device import resolve_run_precision, torch_device
    from tasks.evaluation.lm_eval_model import FlexoLM
    from tasks.registry.locate import locate_moe

    profile = _profile(args.profile, args.root)
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    device = torch_device(profile)
    precision = resolve_run_precision(profile, device)
    moe = load_moe(str(locate_moe(profile))).to(device)
    lm = FlexoLM(profile=profile, model="moe")
    harness_s, lm_eval_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            seconds, tasks, harness = harness_pass(profile, moe, device, precision)
            harness_s.append(seconds)
            seconds, out = lm_eval_pass(profile, lm, Path(folder))
            lm_eval_s.append(seconds)
    result = {
        "profile": args.profile,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "requests": int(len(harness[1].n_bytes)),
        "harness_s": harness_s,
        "lm_eval_s": lm_eval_s,
        "median_ratio": statistics.median(lm_eval_s) / statistics.median(harness_s),
        **max_difference(tasks, harness, out),
    }
    print(json.dumps(result, indent=2))
    print("\n| pass | runs (s) | median (s) |\n|---|---|---|")
    for name, runs in (("flexo harness", harness_s), ("lm-eval + flexo model", lm_eval_s)):
        print(f"| {name} | {', '.join(f'{s:.1f}' for s in runs)} | {statistics.median(runs):.1f} |")
    print(f"\nlm-eval / harness (medians): {result['median_ratio']:.3f}")


if __name__ == "__main__":
    main()
