"""Benchmark of the data build at scale: wall time and peak memory of `flexo data` from an empty source cache (downloads
included), from a warm one (a full rebuild), and a rerun of the finished build (all cache hits); the size of every
domain in bytes and tokens against the targets.

Runs `flexo data -p <profile>` as a user would, in a child process whose whole process tree is sampled for resident
memory. `--cold DIR` points the source cache at DIR (emptied first) through a copy of params.yaml. Prints JSON and a
table, writes benchmarks/results/data_scale.json; `--record` appends a section to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/data_scale.py --profile small --cold /tmp/flexo-cold-cache --record
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tasks  # noqa: E402,F401  (offline environment)
from tasks.core.artifacts import RunPaths  # noqa: E402
from tasks.core.config import DEFAULT_PARAMS, REPO_ROOT, load_profile  # noqa: E402

TARGETS = {
    "cold_build_s": 45 * 60,
    "warm_build_s": 10 * 60,
    "peak_rss_gib": 6.0,
    "public_mb": 250,
    "public_tokens_m": 60,
    "closed_mb": 10,
    "closed_tokens_m": 2.5,
}
RESULTS_MD = REPO_ROOT / "benchmarks" / "RESULTS.md"
RESULTS_JSON = REPO_ROOT / "benchmarks" / "results" / "data_scale.json"
SAMPLE_S = 0.5


def timed_build(profile: str, params: Path) -> dict:
    """`flexo data -p profile` with FLEXO_PARAMS=params: wall seconds, peak RSS of the process tree, exit code."""
    env = {**os.environ, "FLEXO_PARAMS": str(params)}
    started = time.perf_counter()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    child = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "data", "-p", profile],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    root, peak = psutil.Process(child.pid), 0
    while child.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(SAMPLE_S)
    log.seek(0)
    lines = log.read().splitlines()
    return {
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_gib": round(peak / 2**30, 2),
        "exit_code": child.returncode,
        "steps": {s: sum(1 for line in lines if line.strip().startswith(s)) for s in ("completed", "cached", "failed")},
        "log": log.name,
    }


def domain_sizes(profile_name: str, params: Path) -> dict[str, dict]:
    """Every domain's kept text (all splits) in MB and million tokens, from its data card."""
    profile = load_profile(profile_name, params)
    cards = RunPaths(profile).data_reports_dir / "cards"
    sizes = {}
    for domain in profile.domains:
        card = json.loads((cards / f"{domain}.json").read_text())
        tokens = sum((card["tokens"] or {}).values())
        sizes[domain] = {
            "mb": round(sum(card["bytes"].values()) / 1e6, 2),
            "tokens_m": round(tokens / 1e6, 2),
            "documents": sum(card["documents"].values()),
            "quarantined": card["quarantined"],
            "sources": {row["source"]: round(row["bytes"] / 1e6, 2) for row in card["sources"] or []},
        }
    return sizes


def clear_build(profile_name: str, params: Path) -> None:
    """Remove the built data, staging and reports of the profile (sources stay): every step that wrote them runs again
    (a step whose file is gone is not taken from the cache). Refused for the demo's own data folder (DVC-tracked,
    committed reports)."""
    profile = load_profile(profile_name, params)
    paths = RunPaths(profile)
    if profile.path("data_dir") == REPO_ROOT / "data":
        raise SystemExit(
            f"profile '{profile_name}' builds into data/ (the demo's); benchmark a profile with its own data"
        )
    for folder in (profile.path("data_dir"), paths.data_staging("x").parent, paths.data_reports_dir):
        shutil.rmtree(folder, ignore_errors=True)


def params_with_cache(base: Path, profile: str, cache: Path | None) -> Path:
    """`base` (params.yaml), or a copy whose profile reads its sources from `cache`."""
    if cache is None:
        return base
    raw = yaml.safe_load(base.read_text())
    raw["profiles"][profile].setdefault("data", {})["source_cache_dir"] = str(cache)
    out = Path(tempfile.mkdtemp()) / "params.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def meets(result: dict) -> dict[str, bool]:
    sizes = result["domains"]
    closed = {d: s for d, s in sizes.items() if d != "public"}
    out = {
        "warm_build": result["runs"]["warm_build"]["wall_s"] <= TARGETS["warm_build_s"],
        "peak_memory": max(r["peak_rss_gib"] for r in result["runs"].values()) <= TARGETS["peak_rss_gib"],
        "public_size": sizes["public"]["mb"] >= TARGETS["public_mb"]
        and sizes["public"]["tokens_m"] >= TARGETS["public_tokens_m"],
        "closed_sizes": all(
            s["mb"] >= TARGETS["closed_mb"] and s["tokens_m"] >= TARGETS["closed_tokens_m"] for s in closed.values()
        ),
        "rerun_all_cached": result["runs"]["rerun"]["steps"]["completed"] == 0
        and result["runs"]["rerun"]["exit_code"] == 0,
    }
    if "cold_build" in result["runs"]:
        out["cold_build"] = result["runs"]["cold_build"]["wall_s"] <= TARGETS["cold_build_s"]
    return out


def table(result: dict) -> str:
    lines = ["| run | wall (s) | peak RSS (GiB) | steps completed / cached / failed |", "|---|---:|---:|---|"]
    for name, run in result["runs"].items():
        steps = run["steps"]
        lines.append(
            f"| {name} | {run['wall_s']:.0f} | {run['peak_rss_gib']:.2f} | "
            f"{steps['completed']} / {steps['cached']} / {steps['failed']} |"
        )
    lines += [
        "",
        "| domain | MB | M tokens | documents | quarantined | sources (MB) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for domain, size in result["domains"].items():
        parts = ", ".join(f"{k} {v}" for k, v in size["sources"].items())
        lines.append(
            f"| {domain} | {size['mb']} | {size['tokens_m']} | {size['documents']} | {size['quarantined']} | {parts} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="small")
    parser.add_argument("--cold", type=Path, default=None, help="an empty source cache folder (emptied first)")
    parser.add_argument("--cache", type=Path, default=None, help="a warm source cache folder to use as it is")
    parser.add_argument("--record", action="store_true", help="append the result to benchmarks/RESULTS.md")
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="the params file (a dry run: a copy)")
    args = parser.parse_args()
    runs = {}
    if args.cold:
        shutil.rmtree(args.cold, ignore_errors=True)
        cold_params = params_with_cache(args.params, args.profile, args.cold)
        clear_build(args.profile, cold_params)
        runs["cold_build"] = timed_build(args.profile, cold_params)
    params = params_with_cache(args.params, args.profile, args.cold or args.cache)
    clear_build(args.profile, params)
    runs["warm_build"] = timed_build(args.profile, params)
    runs["rerun"] = timed_build(args.profile, params)
    result = {
        "profile": args.profile,
        "when": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "runs": runs,
        "domains": domain_sizes(args.profile, params),
        "targets": TARGETS,
    }
    result["meets"] = meets(result)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(table(result))
    if args.record:
        with RESULTS_MD.open("a") as handle:
            handle.write(
                f"\n## data build at scale, profile `{args.profile}` ({result['when']}, commit {result['git_commit']})"
                f"\n\n{result['machine']}. Targets: {TARGETS}; met: {result['meets']}.\n\n{table(result)}\n\n"
                f"Command: `.venv/bin/python benchmarks/data_scale.py --profile {args.profile}"
                f"{' --cold ' + str(args.cold) if args.cold else ''}"
                f"{' --cache ' + str(args.cache) if args.cache else ''} --record`\n"
            )


if __name__ == "__main__":
    main()
