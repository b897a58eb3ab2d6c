"""The evaluation stage's matrix work against this machine's matmul peak: seconds, model FLOPs and MFU of each part.

Why: on a 2-core CPU the demo run is model compute (benchmarks/RESULTS.md), and the evaluation is its longest stage.
Whether a part of it is slow because it multiplies many matrices or because of the work around its matrix products
(log-softmax over the vocabulary, expert dispatch, optimizer steps, building soups and MoEs) decides what could make
it faster, and how far: a part already near the peak gets faster only with less work.

How: `tasks.evaluation.evaluate.evaluate` runs on a finished run's world as `flexo eval` runs it; the run's report
and results are put back afterwards (`outputs_kept`): under the counter the router trainings (BTX, router tuning, the
unrestricted MoE) came out different in their last digits (BTX's last router loss 6.315870 against 6.315846
uncounted on the same world), while every scoring pass gave the same numbers. Each part (every family of
`tasks.evaluation.families.FAMILIES`, the k-sweep and opt-out passes, the routing tables) is timed and runs inside
its own `torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-add of every matrix product the
part runs: forward and backward, the zero rows the CPU's bucketed experts pad with (work the machine does). The
attention of `scaled_dot_product_attention` on a CPU is not counted (under 2% of a token's FLOPs at demo sizes).
The rest of the stage (inputs, loading the models, bootstrap, report) is its wall time outside the parts. MFU: a
part's FLOPs over its seconds, over the machine's matmul peak in the run's precision (`train_throughput`'s
`peak_matmul_flops`, measured in this process right before the stage). The counter itself costs time (10% on
one demo MoE forward pass here, more where ops are many and small), so the parts' MFU is a lower bound: with
`--summary` (the run's `reports/pipeline_summary.json`) the whole stage's MFU is also given over its seconds in that
run, uncounted.

Usage:  FLEXO_PARAMS=<params.yaml of a finished run> .venv/bin/python benchmarks/eval_flops.py [--profile demo]
        [--summary reports/pipeline_summary.json] [--no-record]
Prints a table and the JSON; writes the JSON under benchmarks/results/ (`pipeline.write_result`) unless --no-record.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# this folder first: an installed package named `benchmarks` would shadow these scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import write_result  # noqa: E402  (it puts the repository on sys.path too)
from train_throughput import peak_matmul_flops  # noqa: E402

# the names `tasks.evaluation.evaluate` calls its parts by, besides every family of FAMILIES
STAGE_PARTS = ("run_sweeps", "routing_by_domain", "routing_at_switch")
REST = "rest of the stage"


@dataclass
class Part:
    """One part of the stage: its wall seconds and counted matmul FLOPs, summed over its calls."""

    name: str
    seconds: float = 0.0
    flops: int = 0


class Meter:
    """Times each wrapped function and counts the FLOPs of the matrix products it runs."""

    def __init__(self) -> None:
        self.parts: dict[str, Part] = {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """`function` measured under `name` (its `__name__` kept: `families.schedule` orders families by it)."""
        from torch.utils.flop_counter import FlopCounterMode

        @functools.wraps(function)
        def measured(*args: Any, **kwargs: Any) -> Any:
            part = self.parts.setdefault(name, Part(name))
            counter = FlopCounterMode(display=False)
            start = time.perf_counter()
            try:
                with counter:
                    return function(*args, **kwargs)
            finally:
                part.seconds += time.perf_counter() - start
                part.flops += counter.get_total_flops()

        return measured


@contextmanager
def measured_stage(meter: Meter) -> Iterator[Any]:
    """`tasks.evaluation.evaluate` with every family and stage part measured by `meter`; put back on exit."""
    from tasks.evaluation import evaluate as stage

    saved = {name: getattr(stage, name) for name in ("FAMILIES", *STAGE_PARTS)}
    stage.FAMILIES = tuple(meter.wrap(f.__name__, f) for f in saved["FAMILIES"])
    for name in STAGE_PARTS:
        setattr(stage, name, meter.wrap(name, saved[name]))
    try:
        yield stage
    finally:
        for name, value in saved.items():
            setattr(stage, name, value)


@contextmanager
def outputs_kept(profile: Any) -> Iterator[None]:
    """The evaluation's outputs (runs/<profile>/eval/, the report and its figures) as they were before the block."""
    from tasks.core.artifacts import RunPaths

    paths = RunPaths(profile)
    outputs = [paths.eval_dir, paths.eval_report, paths.eval_report.with_suffix("")]
    with tempfile.TemporaryDirectory() as keep:
        kept = {path: Path(keep) / str(index) for index, path in enumerate(outputs) if path.exists()}
        for path, copy in kept.items():
            (shutil.copytree if path.is_dir() else shutil.copy2)(path, copy)
        try:
            yield
        finally:
            for path in outputs:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            for path, copy in kept.items():
                shutil.move(copy, path)


def rows(parts: list[Part], total_seconds: float, peak_flops: float) -> list[dict[str, Any]]:
    """One row per part in the order they ran, then the rest of the stage, then the whole stage."""
    rest = Part(REST, max(total_seconds - sum(p.seconds for p in parts), 0.0), 0)
    whole = Part("whole stage", total_seconds, sum(p.flops for p in parts))
    out = []
    for part in [*parts, rest, whole]:
        rate = part.flops / part.seconds if part.seconds > 0 else 0.0
        out.append({**asdict(part), "gflop_per_s": rate / 1e9, "mfu": rate / peak_flops})
    return out


def measure(profile: Any, peak: dict[str, float] | None = None) -> dict[str, Any]:
    """The machine's matmul peak in the run's precision (unless given: `peak_matmul_flops`'s dict), then the stage
    run once with every part measured."""
    import torch

    from tasks.core.device import resolve_run_precision, torch_device

    device = torch_device(profile)
    precision = resolve_run_precision(profile, device)
    if profile.runtime.num_threads:
        torch.set_num_threads(profile.runtime.num_threads)
    peak = peak or peak_matmul_flops(str(device), "bf16" if precision == "bf16" else "fp32")
    meter = Meter()
    with outputs_kept(profile), measured_stage(meter) as stage:
        start = time.perf_counter()
        stage.evaluate(profile, progress=False)
        total = time.perf_counter() - start
    return {
        "profile": profile.name,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "peak_flops": peak,
        "parts": rows(list(meter.parts.values()), total, peak["peak_flops"]),
    }


def uncounted_stage(summary_path: Path, result: dict[str, Any]) -> dict[str, float] | None:
    """The whole stage's FLOPs over its seconds in the pipeline run `summary_path` (pipeline_summary.json) describes,
    where no counter slowed it down; None when that summary has no evaluate stage."""
    seconds = json.loads(summary_path.read_text()).get("stage_seconds", {}).get("evaluate")
    if not seconds:
        return None
    rate = result["parts"][-1]["flops"] / seconds
    return {"seconds": seconds, "gflop_per_s": rate / 1e9, "mfu": rate / result["peak_flops"]["peak_flops"]}


def table(result: dict[str, Any]) -> str:
    peak = result["peak_flops"]["peak_flops"] / 1e9
    lines = [
        f"evaluate, profile {result['profile']}, {result['precision']}, {result['threads']} threads; "
        f"matmul peak {peak:,.0f} GFLOP/s",
        "| part | seconds | GFLOP | GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in result["parts"]:
        lines.append(
            f"| {row['name']} | {row['seconds']:.1f} | {row['flops'] / 1e9:,.0f} | {row['gflop_per_s']:.0f} | "
            f"{row['mfu']:.1%} |"
        )
    uncounted = result.get("uncounted_stage")
    if uncounted:
        lines.append(
            f"| whole stage in the pipeline run (no counter) | {uncounted['seconds']:.1f} | "
            f"{result['parts'][-1]['flops'] / 1e9:,.0f} | {uncounted['gflop_per_s']:.0f} | {uncounted['mfu']:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--summary", type=Path, help="the run's pipeline_summary.json: its uncounted evaluate seconds")
    parser.add_argument("--no-record", action="store_true", help="print only; write nothing under benchmarks/results")
    args = parser.parse_args()

    from tasks.core.config import load_profile

    result = measure(load_profile(profile=args.profile))
    if args.summary:
        result["uncounted_stage"] = uncounted_stage(args.summary, result)
    print(table(result))
    print(json.dumps(result, indent=2))
    if not args.no_record:
        print(f"written {write_result('eval_flops', result)}")


if __name__ == "__main__":
    main()
