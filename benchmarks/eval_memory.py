"""Evaluation memory: peak resident memory of `tasks.evaluation.evaluate` (the pipeline's `evaluate` stage) on a
finished run, and of each of its parts (input loading, every model family, the sweeps, the routing figure, the
report), plus the resident size left after each part (what a part keeps alive for the next ones).

The stage is run exactly as the pipeline runs it (same code, same report); each part is only wrapped in a
`model.memory.PeakWindow`. A part's peak is exact when it set the process's high-water mark, else sampled every
20 ms (a lower bound), as the pipeline summary's stage peaks are.

Each part also records `tensor_gib`: the bytes of every torch storage a Python object still references after it
(parameters included), so the resident size left after a part splits into live tensors and the rest (allocator pages,
libraries, Python objects). `--imports` first imports what `flexo run`'s process holds (the Prefect flows, MLflow,
Great Expectations), so the stage starts from that process's baseline of loaded code.

Usage:  FLEXO_PARAMS=<params.yaml of the finished run> .venv/bin/python benchmarks/eval_memory.py [--profile demo]
        [--imports] [--out results.json]
Prints one JSON object and a table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def live_tensor_gib() -> float:
    """GiB of distinct torch storages referenced by live Python objects (tensors and parameters found by the garbage
    collector); what only C++ holds (autograd's saved tensors, caches) is not counted."""
    import torch

    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance() on a deprecated torch alias warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                try:
                    storage = obj.untyped_storage()
                except (RuntimeError, NotImplementedError):
                    continue
                seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values()) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--imports", action="store_true", help="import flexo run's flows (Prefect, MLflow, GX) first")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.imports:
        import flows.pipeline  # noqa: F401  (what `flexo run` imports before any stage)

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
                        "tensor_gib": round(live_tensor_gib(), 3),
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
        "tensor_gib": round(live_tensor_gib(), 3),
        "seconds": round(time.perf_counter() - start, 1),
        "imports": args.imports,
        "report": str(result.report),
        "parts": parts,
    }
    print(json.dumps(out, indent=1))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print("\n| part | peak RSS GiB | exact | RSS after GiB | live tensors GiB | s |\n|---|---:|---|---:|---:|---:|")
    for row in [*parts, {**out, "part": "**evaluate**"}]:
        print(
            f"| {row['part']} | {row['peak_rss_gib']} | {row['exact']} | {row['rss_after_gib']} | "
            f"{row['tensor_gib']} | {row['seconds']} |"
        )


if __name__ == "__main__":
    main()
