"""Flow `pipeline`: data → public → one expert per owner → assemble → ablate → evaluate → attack, with one summary.

Thin wiring: every step is a cached Prefect task in `flows.steps`. Expert subflows run concurrently up to
`orchestration.max_parallel_experts` (the `gpu` tag limit still serialises trainings); a failed domain never stops the
others, and the summary (Prefect artifact + reports/pipeline_summary.json) says which failed and why, and what it reused.
"""

from __future__ import annotations

import contextvars
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prefect import flow

from flows import steps as pt
from flows.ablate import ablate
from flows.assemble import assemble
from flows.attack import attack
from flows.data import data
from flows.evaluate import evaluate
from flows.expert import expert
from flows.public import public
from model.memory import PeakWindow
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.training.ablations import assembled as assembled_ablations

STAGES = ("data", "public", "expert", "assemble", "ablate", "evaluate", "attack")


def _experts(p: Profile, domains: list[str]) -> list[pt.Outcome]:
    def one(domain: str) -> list[pt.Outcome]:
        return pt.outcomes_from(expert(domain=domain, profile=p, fail_on_error=False))

    if p.orchestration.max_parallel_experts <= 1 or len(domains) <= 1:
        return [o for d in domains for o in one(d)]
    with ThreadPoolExecutor(max_workers=p.orchestration.max_parallel_experts) as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, d) for d in domains]
        return [o for f in futures for o in f.result()]


def _gate(stage: str, needs: list[pt.Outcome]) -> list[pt.Outcome] | None:
    """Skip a stage whose input this run tried and failed to produce (an upstream stage left out of `stages` is not
    checked: its output from an earlier run is used)."""
    skip = pt.upstream_missing(stage, stage, None, needs)
    return [skip] if skip else None


@flow(name="pipeline", result_serializer="json", log_prints=True)
def pipeline(
    profile: str | Profile | None = None,
    domains: list[str] | None = None,
    stages: list[str] | None = None,
    fail_on_error: bool = False,
) -> dict[str, Any]:
    """The whole FlexOlmo pipeline for one profile; returns the summary (steps, failures, reused, where to look)."""
    p = pt.as_profile(profile)
    owners = domains or p.closed_domains
    chosen = stages or list(STAGES)
    pt.ensure_gpu_limit(p.orchestration.gpu_slots)
    started = time.perf_counter()
    out: list[pt.Outcome] = []
    stage_seconds: dict[str, float] = {}
    stage_peak_rss_gib: dict[str, float] = {}  # this process's resident peak during each stage (model.memory)

    def stage(name: str, run) -> None:
        if name not in chosen:
            return
        t0, memory = time.perf_counter(), PeakWindow()
        pt.notify(name, name, None, "stage-start")
        out.extend(run())
        stage_seconds[name] = round(time.perf_counter() - t0, 3)
        stage_peak_rss_gib[name] = round(memory.close().rss_gib, 3)
        pt.notify(name, name, None, "stage-end")

    stage("data", lambda: pt.outcomes_from(data(profile=p, domains=["public", *owners], fail_on_error=False)))
    stage("public", lambda: pt.outcomes_from(public(profile=p, fail_on_error=False)))
    public_model = [o for o in out if o.step == "train_public"]
    stage("expert", lambda: _gate("expert", public_model) or _experts(p, owners))
    stage("assemble", lambda: pt.outcomes_from(assemble(profile=p, fail_on_error=False)))
    moe = [o for o in out if o.step == "assemble"]
    if p.ablation.variants:
        stage(
            "ablate", lambda: _gate("ablate", public_model) or pt.outcomes_from(ablate(profile=p, fail_on_error=False))
        )
    ablations = {v: pt.weights_sha(d) for v, d in assembled_ablations(p).items()}  # what evaluate will score
    benchmark_data = [o for o in out if o.step == "check_benchmark"]
    stage(
        "evaluate",
        lambda: (
            _gate("evaluate", moe + benchmark_data)
            or pt.outcomes_from(
                evaluate(
                    profile=p,
                    moe_sha=moe[0].result.get("sha256", "") if moe else "",
                    ablation_shas=ablations,
                    fail_on_error=False,
                )
            )
        ),
    )
    attacked = [o for o in out if o.step == "train_expert" and o.domain == p.attack.domain]
    stage("attack", lambda: _gate("attack", attacked) or pt.outcomes_from(attack(profile=p, fail_on_error=False)))

    paths = RunPaths(p)
    links = {
        "benchmark table": str(paths.eval_dir),
        "MLflow UI": f"flexo ui  (or: mlflow ui --backend-store-uri {p.paths.mlflow_tracking_uri} --port {p.registry.ui_port})",
        "exported model": str(paths.moe_dir if paths.moe_dir.exists() else paths.registry_cache / "assembled"),
        "run summary": str(paths.reports_dir / "pipeline_summary.json"),
    }
    failed = [{"step": o.step, "domain": o.domain, "why": o.detail} for o in out if o.status == "failed"]
    summary = {
        "profile": p.name,
        "seconds": round(time.perf_counter() - started, 3),
        "stage_seconds": stage_seconds,
        "stage_peak_rss_gib": stage_peak_rss_gib,
        "failed": failed,
        "reused": [f"{o.step}{'/' + o.domain if o.domain else ''}" for o in out if o.status == "cached"],
        "skipped": [{"step": o.step, "domain": o.domain, "why": o.detail} for o in out if o.status == "skipped"],
        "links": links,
    }
    pt.publish("flexo-pipeline", f"pipeline ({p.name})", out, links)
    pt.write_summary(paths.reports_dir / "pipeline_summary.json", out, summary)
    pt.finish(out, fail_on_error)
    return {**summary, "steps": pt.as_rows(out)}
