"""Evaluation memory: peak resident memory of `tasks.evaluation.evaluate` (the pipeline's `evaluate` stage) on a
finished run, and of each of its parts (input loading, every model family, the sweeps, the routing figure, the
report), plus the resident size left after each part (what a part keeps alive for the next ones).

The stage is run exactly as the pipeline runs it (same code, same report); each part is only wrapped in a
`model.memory.PeakWindow`. A part's peak is exact when it set the process's high-water mark, else sampled every
20 ms (a lower bound), as the pipeline summary's stage peaks are.

Usage:  FLEXO_PARAMS=<params.yaml of the finished run> .venv/bin/python benchmarks/eval_memory.py [--profile demo]
Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    args = parser.parse_args()

    from model.memory import PeakWindow, current_rss_gib
    from tasks.core.config import load_profile
    from tasks.evaluation import evaluate as stage

    parts: list[dict[str, Any]] = []

    def measured(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*a: Any, **k: Any) -> Any:
            window, start = PeakWindow(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                peak = window.close()
                parts.append(
                    {
                        "part": name,
                        "peak_rss_gib": round(peak.rss_gib, 3),
                        "exact": peak.exact,
                        "rss_after_gib": round(current_rss_gib() or 0.0, 3),
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )

        return wrapper

    stage.load_models = measured("load_models", stage.load_models)
    stage.FAMILIES = tuple(measured(f.__name__, f) for f in stage.FAMILIES)
    stage.run_sweeps = measured("run_sweeps", stage.run_sweeps)
    stage.routing_by_domain = measured("routing_by_domain", stage.routing_by_domain)
    stage.write_report = measured("write_report", stage.write_report)

    profile = load_profile(profile=args.profile)
    before = current_rss_gib() or 0.0
    window, start = PeakWindow(), time.perf_counter()
    result = stage.evaluate(profile, progress=False)
    peak = window.close()
    out = {
        "profile": profile.name,
        "rss_before_gib": round(before, 3),
        "peak_rss_gib": round(peak.rss_gib, 3),
        "exact": peak.exact,
        "rss_after_gib": round(current_rss_gib() or 0.0, 3),
        "seconds": round(time.perf_counter() - start, 1),
        "report": str(result.report),
        "parts": parts,
    }
    print(json.dumps(out, indent=1))
    print("\n| part | peak RSS GiB | exact | RSS after GiB | s |\n|---|---:|---|---:|---:|")
    for row in [*parts, {**out, "part": "**evaluate**"}]:
        print(f"| {row['part']} | {row['peak_rss_gib']} | {row['exact']} | {row['rss_after_gib']} | {row['seconds']} |")


if __name__ == "__main__":
    main()
