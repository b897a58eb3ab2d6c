"""Time outside the optimizer steps, per training run of a finished pipeline: the run's wall time (its MLflow run,
which spans the whole Prefect training task: loading, data, validation, checkpoints, export, logging) against the
seconds its optimizer steps took (`train_seconds`, timed around each step in `model.training`).

Why from MLflow: every training run already logs both, so any finished run (a clean-clone `make run` included) can be
measured afterwards without running anything again. Target (issue 22): outside <= 25% of each run on `demo`.

Usage:  .venv/bin/python benchmarks/training_overhead.py [--tracking-uri sqlite:///mlflow/mlflow.db]
        [--experiment flexo] [--out benchmarks/results/training_overhead_<date>.json]
Prints one JSON document and a table, runs in start order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_SHARE = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow/mlflow.db")
    parser.add_argument("--experiment", default="flexo")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    import tasks  # noqa: F401, I001  offline, no telemetry, before MLflow loads
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"{args.tracking_uri}: no experiment named {args.experiment!r}; run the pipeline first")
    found = client.search_runs(
        [experiment.experiment_id],
        "metrics.train_seconds > 0 and tags.stage LIKE 'train%'",  # not the registration records that copy them
        order_by=["attributes.start_time ASC"],
    )
    runs = []
    for run in found:
        if run.info.end_time is None:  # still running
            continue
        wall = (run.info.end_time - run.info.start_time) / 1000
        steps = run.data.metrics["train_seconds"]
        runs.append(
            {
                "run": run.info.run_name,
                "wall_seconds": round(wall, 2),
                "step_seconds": round(steps, 2),
                "optimizer_steps": int(run.data.metrics["steps"]),
                "outside_share": round(1 - steps / wall, 4) if wall > 0 else None,
            }
        )
    if not runs:
        raise SystemExit(f"{args.tracking_uri}: no finished training run logs train_seconds")
    shares = [r["outside_share"] for r in runs if r["outside_share"] is not None]
    payload = {
        "benchmark": "training_overhead",
        "tracking_uri": args.tracking_uri,
        "target_outside_share": TARGET_SHARE,
        "runs": runs,
        "median_outside_share": round(statistics.median(shares), 4),
        "runs_over_target": [r["run"] for r in runs if (r["outside_share"] or 0) > TARGET_SHARE],
        "total_wall_seconds": round(sum(r["wall_seconds"] for r in runs), 1),
        "total_step_seconds": round(sum(r["step_seconds"] for r in runs), 1),
    }
    text = json.dumps(payload, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"\n{'run':<42}{'wall s':>9}{'steps s':>9}{'steps':>7}{'outside':>9}")
    for r in runs:
        print(
            f"{r['run'][:41]:<42}{r['wall_seconds']:>9.1f}{r['step_seconds']:>9.1f}{r['optimizer_steps']:>7}"
            f"{100 * r['outside_share']:>8.1f}%"
        )


if __name__ == "__main__":
    main()
