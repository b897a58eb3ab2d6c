"""Benchmark of the main job: wall time per stage, orchestration overhead, cached rerun time, peak memory.

Runs the `pipeline` flow twice on one profile (default `demo`) in this process, on the ephemeral Prefect server:
the first run does the work (or reuses what an earlier run left in the cache: `--fresh` clears runs/<profile> and
the Prefect cache first; `--first-run-summary` reads it from a finished `flexo run` instead), the second must be all
cache hits. Overhead = wall time outside the areas' own functions
(`compute_seconds` of every step that ran) as a share of the run. Prints JSON and a table; `--record` appends a
section to benchmarks/RESULTS.md. Every measured run is also written as one JSON file under benchmarks/results/
(`write_result`: the machine with its CPU flags, native bf16 or not, the precision used, total and per-stage seconds and
peak memory, the commit, the date), so runs can be compared by a program.

    .venv/bin/python benchmarks/pipeline.py --profile demo --fresh --record
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks  # noqa: E402,F401  (offline environment)
from tasks.core.artifacts import RunPaths  # noqa: E402
from tasks.core.config import REPO_ROOT, load_profile  # noqa: E402

# issue 22: end to end <= 12 min where matmuls run in native bf16, <= 20 min in fp32 (a CPU without native bf16)
END_TO_END_S = {"bf16": 12 * 60, "fp32": 20 * 60}
TARGETS = {"overhead_share": 0.10, "cached_rerun_s": 60}
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
# the CPU flags that decide whether `precision: auto` gets native bf16 matmuls (model/precision.py) or fp32
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16")
# caps on the instruction sets the math libraries use: set, they emulate an older CPU on this one (recorded with a run)
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def machine_facts() -> dict:
    """The CPU model, core count, the bf16-relevant CPU flags and the load average now (what makes runs comparable)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the model from platform, no flags
        pass
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "cpus": os.cpu_count(),
        "flags": {flag: flag in flags for flag in CPU_FLAGS},
        "isa_caps": {name: os.environ[name] for name in ISA_CAPS if name in os.environ},
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def git_commit(repo: Path = REPO_ROOT) -> str:
    """The short commit of `repo`, with `-dirty` when tracked files differ from it."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=repo, capture_output=True).returncode != 0
    return head.stdout.strip() + ("-dirty" if dirty else "")


def write_result(kind: str, fields: dict, repo: Path = REPO_ROOT, device: str = "cpu") -> Path:
    """One JSON file per measured run under benchmarks/results/, named by date, kind and commit."""
    from model.precision import native_bf16

    now = datetime.now(UTC)
    commit = git_commit(repo)
    record = {
        "kind": kind,
        "date": now.isoformat(timespec="seconds"),
        "git_commit": commit,
        "machine": machine_facts(),
        "native_bf16": native_bf16(device),
        **fields,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{now:%Y%m%dT%H%M%SZ}-{kind}-{commit}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of waited-for children (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024


def one_run(profile_name: str) -> dict:
    from flows.pipeline import pipeline

    started = time.perf_counter()
    summary = pipeline(profile=profile_name)
    return measured(summary, time.perf_counter() - started)


def measured(summary: dict, wall: float) -> dict:
    """Stage times, model compute (the areas' own `compute_seconds`) and the overhead around it, from a run summary.

    A stage's compute counts at most its wall time: the data stage prepares two domains at a time (`flows.data`), and
    their summed compute seconds would otherwise exceed the stage and hide the overhead of the others."""
    ran = [s for s in summary["steps"] if s["status"] == "completed"]
    by_stage: dict[str, float] = {}
    for step in ran:
        by_stage[step["stage"]] = by_stage.get(step["stage"], 0.0) + float(step["result"].get("compute_seconds", 0.0))
    stage_walls = summary.get("stage_seconds", {})
    compute = sum(min(seconds, stage_walls.get(stage, seconds)) for stage, seconds in by_stage.items())
    return {
        "wall_s": round(wall, 2),
        "stage_s": summary["stage_seconds"],
        "stage_peak_rss_gib": summary.get("stage_peak_rss_gib", {}),  # summaries written before it existed lack it
        "compute_s": round(compute, 2),
        "overhead_s": round(wall - compute, 2),
        "overhead_share": round((wall - compute) / wall, 4) if wall else 0.0,
        "status_counts": {
            k: sum(1 for s in summary["steps"] if s["status"] == k)
            for k in ("completed", "cached", "skipped", "failed")
        },
        "failed": summary["failed"],
        "skipped": summary["skipped"],
    }


def table(result: dict) -> str:
    first, second = result["first_run"], result["cached_rerun"]
    rows = [("stage", "first run (s)", "cached rerun (s)", "first run peak RSS (GiB)")]
    for stage in first["stage_s"]:
        peak = first["stage_peak_rss_gib"].get(stage)
        rows.append(
            (
                stage,
                f"{first['stage_s'][stage]:.1f}",
                f"{second['stage_s'].get(stage, 0):.1f}",
                "" if peak is None else f"{peak:.2f}",
            )
        )
    rows += [
        ("**end to end**", f"{first['wall_s']:.1f}", f"{second['wall_s']:.1f}"),
        ("model compute", f"{first['compute_s']:.1f}", f"{second['compute_s']:.1f}"),
        (
            "orchestration overhead",
            f"{first['overhead_s']:.1f} ({first['overhead_share']:.1%})",
            f"{second['overhead_s']:.1f} ({second['overhead_share']:.1%})",
        ),
        (
            "steps completed/cached/skipped/failed",
            "/".join(str(v) for v in first["status_counts"].values()),
            "/".join(str(v) for v in second["status_counts"].values()),
        ),
    ]
    rows = [row + ("",) * (len(rows[0]) - len(row)) for row in rows]
    lines = [f"| {' | '.join(rows[0])} |", "|---|---:|---:|---:|"] + [f"| {' | '.join(r)} |" for r in rows[1:]]
    return "\n".join(lines)


def _runs(args: argparse.Namespace) -> tuple[dict, dict]:
    """The first run (done here or read from a finished `flexo run`'s summary) and the cached rerun."""
    profile = load_profile(args.profile)
    if args.fresh:
        shutil.rmtree(RunPaths(profile).root, ignore_errors=True)
        shutil.rmtree(Path(os.environ["PREFECT_HOME"]) / "storage", ignore_errors=True)
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    with temporary_settings(
        {PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: profile.orchestration.server_startup_timeout_s}
    ):
        if args.first_run_summary:
            summary = json.loads(args.first_run_summary.read_text())
            first = measured(summary, float(summary["seconds"]))
        else:
            first = one_run(args.profile)
        return first, one_run(args.profile)


def _record(args: argparse.Namespace, result: dict) -> None:
    """Append the result to benchmarks/RESULTS.md, with what the first run did not complete."""
    first = result["first_run"]
    command = (
        f"`.venv/bin/python benchmarks/pipeline.py --profile {args.profile}{' --fresh' if args.fresh else ''}"
        f"{' --first-run-summary ' + str(args.first_run_summary) if args.first_run_summary else ''} --record`"
    )
    with RESULTS.open("a") as handle:
        handle.write(
            f"\n## pipeline, profile `{args.profile}` ({result['when']}, commit {result['git_commit']}, "
            f"{'fresh' if args.fresh else 'warm cache'})\n\n"
            f"{result['machine']}; peak RSS of this process {result['peak_rss_mib']} MiB.\n"
            f"Targets: end to end <= {result['targets']['end_to_end_s'] // 60} min ({result['precision']}), "
            f"overhead <= {TARGETS['overhead_share']:.0%}, "
            f"cached rerun <= {TARGETS['cached_rerun_s']} s; met: {result['meets']}.\n\n{table(result)}\n\n"
            f"Command: {command}\n"
        )
        if first["failed"] or first["skipped"]:
            handle.write(
                "\nNot completed in the first run:\n"
                + "".join(
                    f"- {i['step']} {i['domain'] or ''}: {str(i['why'])[:200]}\n"
                    for i in first["failed"] + first["skipped"]
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--fresh", action="store_true", help="delete runs/<profile> and the Prefect result cache first")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument(
        "--test-suite-seconds",
        type=float,
        default=None,
        help="the default test suite's seconds on this machine and commit (benchmarks/test_suite.py), for the JSON",
    )
    parser.add_argument(
        "--first-run-summary",
        type=Path,
        default=None,
        help="take the first run from this reports/pipeline_summary.json of a finished `flexo run` "
        "(e.g. README command one on a clean clone) instead of running it again",
    )
    args = parser.parse_args()
    from tasks.core.device import resolve_run_precision

    first, second = _runs(args)
    precision = resolve_run_precision(load_profile(args.profile))
    targets = {"end_to_end_s": END_TO_END_S[precision], **TARGETS}
    result = {
        "profile": args.profile,
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "git_commit": git_commit(),
        "fresh": args.fresh,
        "first_run_from": str(args.first_run_summary) if args.first_run_summary else "this process",
        "first_run": first,
        "cached_rerun": second,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "precision": precision,
        "targets": targets,
        "meets": {
            "end_to_end": first["wall_s"] <= targets["end_to_end_s"],
            "overhead": first["overhead_share"] <= TARGETS["overhead_share"],
            "cached_rerun": second["wall_s"] <= TARGETS["cached_rerun_s"],
        },
    }
    print(json.dumps(result, indent=2))
    print(table(result))
    print(f"written {_write_json(args, result).relative_to(REPO_ROOT)}")
    if args.record:
        _record(args, result)


def _write_json(args: argparse.Namespace, result: dict) -> Path:
    """The run as benchmarks/results/*.json: the fields issue 22 compares runs by, then the rest of the result."""
    from tasks.core.device import resolve_device

    profile = load_profile(args.profile)
    first = result["first_run"]
    return write_result(
        "pipeline",
        {
            "profile": args.profile,
            "precision": result["precision"],
            "total_seconds": first["wall_s"],
            "stage_seconds": first["stage_s"],
            "stage_peak_rss_gib": first["stage_peak_rss_gib"],
            "test_suite_seconds": args.test_suite_seconds,
            "compute_seconds": first["compute_s"],
            "overhead_share": first["overhead_share"],
            "cached_rerun_seconds": result["cached_rerun"]["wall_s"],
            "fresh": args.fresh,
            "first_run_from": result["first_run_from"],
            "status_counts": first["status_counts"],
            "meets": result["meets"],
        },
        device=resolve_device(profile),
    )


if __name__ == "__main__":
    main()
