"""How long a finished run's Prefect task runs waited between Pending and Running, tagged `gpu` against untagged.

Why: a task's time from Pending to Running is Prefect's own (concurrency-slot requests, state orchestration), not the
step's. With the `gpu` tag on flexo's temporary server, GPU steps often waited 2 s there (`flows.placement`); this
reads that wait for every task run of a world's Prefect database, through Prefect's client on a temporary server
started on that database (the run's own `.prefect` home), so runs before and after a change can be compared.

Usage:  .venv/bin/python benchmarks/task_start_waits.py --prefect-home /tmp/w40/.prefect [--out FILE]
Prints one JSON document and a table (per group: task runs, total, median and largest wait, runs over 1 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE = 200  # task runs per request (the API's largest page)
SLOW_S = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prefect-home", type=Path, required=True, help="the run's Prefect home (its .prefect folder)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    database = args.prefect_home / "prefect.db"
    if not database.exists():
        parser.error(f"{database} does not exist: --prefect-home must be a Prefect home a run has used")
    os.environ["PREFECT_HOME"] = str(args.prefect_home.resolve())  # before Prefect reads its settings
    os.environ.pop("PREFECT_API_URL", None)

    waits = _waits()
    groups = {
        "tagged gpu": [w for w in waits if w["tagged"]],
        "untagged": [w for w in waits if not w["tagged"]],
    }
    record = {
        "kind": "task_start_waits",
        "prefect_home": str(args.prefect_home),
        "groups": {name: _summary(rows) for name, rows in groups.items()},
        "slowest": sorted(waits, key=lambda w: -w["wait_s"])[:12],
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print(f"\n{'group':<12} {'runs':>5} {'total (s)':>10} {'median (s)':>11} {'max (s)':>8} {'over 1 s':>9}")
    for name, row in record["groups"].items():
        print(
            f"{name:<12} {row['runs']:>5} {row['total_s']:>10.2f} {row['median_s']:>11.3f} {row['max_s']:>8.2f} "
            f"{row['over_1s']:>9}"
        )


def _waits() -> list[dict]:
    from prefect.client.orchestration import get_client

    import tasks  # noqa: F401  (offline environment)
    from flows.prefect_server import prefect_api

    with prefect_api(120), get_client(sync_client=True) as client:
        return task_start_waits(client)


def task_start_waits(client) -> list[dict]:
    """Every task run the server knows that reached Running: its name, whether it is tagged `gpu`, and its seconds
    from Pending to Running."""
    from flows.placement import GPU_TAG

    rows = []
    offset = 0
    while True:
        page = client.read_task_runs(limit=PAGE, offset=offset)
        for run in page:
            states = {s.name: s.timestamp for s in client.read_task_run_states(run.id)}
            if "Pending" in states and "Running" in states:
                wait = (states["Running"] - states["Pending"]).total_seconds()
                rows.append({"task_run": run.name, "tagged": GPU_TAG in run.tags, "wait_s": round(wait, 3)})
        if len(page) < PAGE:
            return rows
        offset += PAGE


def _summary(rows: list[dict]) -> dict:
    seconds = [r["wait_s"] for r in rows]
    return {
        "runs": len(seconds),
        "total_s": round(sum(seconds), 2),
        "median_s": round(statistics.median(seconds), 3) if seconds else 0.0,
        "max_s": round(max(seconds), 2) if seconds else 0.0,
        "over_1s": sum(s > SLOW_S for s in seconds),
    }


if __name__ == "__main__":
    main()
