"""The pipeline's model stages in order, without the orchestration: for a machine that has torch but not Prefect,
MLflow, DVC or Great Expectations.

Why: a lent GPU machine (the library's `device` tool) has an image with torch and transformers, no package registry
and minutes of device time, so the `small` profile's science run cannot go through `flexo run` there. The data stage
(sources from PyPI/Debian, GX validation, DVC) and the router embeddings (the MiniLM wheel) run where the data was
built; this module runs the rest from the same area functions the flows call: M_pub, each owner's expert and dense
model, the MoE from the run directory's experts (sha256 of each recorded by its training), and the FLEXMIX evaluation
with its report. Nothing is registered or read from a registry: the evaluation scores the MoE this module assembled in
the run directory, even where an MLflow store exists. A later `flexo run` finds none of this in Prefect's cache and
runs the steps again (the trainings resume from their finished checkpoints).

Usage:  python -m flows.headless --profile small --stages public expert dense assemble evaluate [--domains math code]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tasks.core.artifacts import EXPERT_CARD_FILE, EXPERT_FILE, RunPaths
from tasks.core.config import Profile, load_profile
from tasks.core.errors import ConfigError, DataError

STAGES = ("embed", "public", "expert", "dense", "assemble", "evaluate")
ACCELERATOR_STAGES = STAGES[1:]  # `embed` needs the MiniLM wheel: run it where the data was built


def _embed(profile: Profile, owners: Sequence[str]) -> dict[str, Any]:
    from tasks.training.route import embed_domain

    return {d: str(embed_domain(profile, d)) for d in ["public", *owners]}


def _trained(outcome: Any) -> dict[str, Any]:
    """What the summary keeps of a training outcome (`tasks.training.train.TrainOutcome`): its sha256, final metrics
    and passes over its data (a device run's reviewer sees repetition without the MLflow UI)."""
    return {"sha256": outcome.sha256, "metrics": outcome.metrics, "epochs": outcome.params.get("epochs")}


def _public(profile: Profile, owners: Sequence[str]) -> dict[str, Any]:
    from tasks.training.train import train_public

    return _trained(train_public(profile))


def _experts(profile: Profile, owners: Sequence[str]) -> dict[str, Any]:
    from tasks.training.train import train_expert

    return {d: _trained(train_expert(profile, d)) for d in owners}


def _dense(profile: Profile, owners: Sequence[str]) -> dict[str, Any]:
    from tasks.training.train import train_dense

    return {d: _trained(train_dense(profile, d)) for d in owners}


def _assemble(profile: Profile, owners: Sequence[str]) -> dict[str, Any]:
    """Every owner's expert file, checked against the sha256 its training recorded in the expert card."""
    from tasks.training.assemble import assemble

    paths = RunPaths(profile)
    files, digests = [], []
    for d in owners:
        card = paths.expert_dir(d) / EXPERT_CARD_FILE
        if not card.exists():
            raise DataError(f"{card}: expert '{d}' has not been trained; run the `expert` stage first")
        files.append(paths.expert_dir(d) / EXPERT_FILE)
        digests.append(json.loads(card.read_text())["sha256"])
    assembled = assemble(profile, files, expected_sha256=digests)
    return {"model_dir": str(assembled.model_dir), "sha256": assembled.sha256, "experts": assembled.experts}


def _evaluate(profile: Profile, owners: Sequence[str]) -> dict[str, Any]:
    from tasks.evaluation.evaluate import evaluate

    result = evaluate(profile, moe_dir=RunPaths(profile).moe_dir)  # what `assemble` wrote, never a registry's
    return {
        "report": str(result.report),
        "results_json": str(result.results_json),
        "skipped": result.skipped,
        "figures": {k: str(v) for k, v in result.figures.items()},
    }


RUNNERS: dict[str, Callable[[Profile, Sequence[str]], dict[str, Any]]] = {
    "embed": _embed,
    "public": _public,
    "expert": _experts,
    "dense": _dense,
    "assemble": _assemble,
    "evaluate": _evaluate,
}


def run_stages(
    profile: Profile,
    stages: Sequence[str] = ACCELERATOR_STAGES,
    domains: Sequence[str] | None = None,
    summary_path: Path | None = None,
) -> dict[str, Any]:
    """Run `stages` in pipeline order for `domains` (default: every owner); stop at the first failure, with the
    summary (seconds per stage, what each produced) written to `summary_path` either way so a cut-off run says how far
    it got."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    owners = list(domains or profile.closed_domains)
    summary: dict[str, Any] = {"profile": profile.name, "domains": owners, "stages": {}, "seconds": {}}
    started = time.perf_counter()
    try:
        for stage in (s for s in STAGES if s in stages):
            t0 = time.perf_counter()
            print(f"[headless] {stage} ...", flush=True)
            summary["stages"][stage] = RUNNERS[stage](profile, owners)
            summary["seconds"][stage] = round(time.perf_counter() - t0, 3)
            print(f"[headless] {stage} done in {summary['seconds'][stage]:.1f} s", flush=True)
    except Exception as exc:
        summary["failed"] = {"stage": stage, "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        summary["seconds"]["total"] = round(time.perf_counter() - started, 3)
        if summary_path is not None:
            summary_path.parent.mkdir(parents=True, exist_ok=True)
            summary_path.write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None)
    parser.add_argument(
        "--params", default=None, help="another params.yaml (default: $FLEXO_PARAMS or the repository's)"
    )
    parser.add_argument("--stages", nargs="+", default=list(ACCELERATOR_STAGES), choices=STAGES)
    parser.add_argument("--domains", nargs="+", default=None, help="owners (default: every closed domain)")
    parser.add_argument(
        "--summary", type=Path, default=None, help="write the run summary here (default: <runs>/headless.json)"
    )
    args = parser.parse_args(argv)
    profile = load_profile(args.profile, args.params)
    summary_path = args.summary or RunPaths(profile).root / "headless.json"
    summary = run_stages(profile, args.stages, args.domains, summary_path)
    print(json.dumps(summary["seconds"]))


if __name__ == "__main__":
    main()
