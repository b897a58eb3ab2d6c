"""Flow `pipeline`: data → public → one expert per owner → assemble → [ablate] → evaluate → attack, with one summary.

Thin wiring: every step is a cached Prefect task (`flows.runner`). Expert subflows run concurrently up to
`orchestration.max_parallel_experts` (the `gpu` slots still serialise trainings); a failed domain never stops the
others, and the summary (Prefect artifact + reports/pipeline_summary.json) says which failed and why, and what it
reused.

Lineage: one MLflow parent run per pipeline run (the flattened profile as params, git commit, system metrics, the
Prefect flow run as tags), every stage, domain and registration run nested under it; the Prefect flow run carries the
MLflow run as a tag (`mlflow-run:<id>`) and a link artifact (`flexo-mlflow-run`).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from prefect import flow

from flows.ablate import ablate
from flows.assemble import assemble
from flows.attack import attack
from flows.data import data
from flows.evaluate import evaluate
from flows.expert import expert
from flows.inputs import as_profile, weights_sha
from flows.outcomes import Outcome, as_rows, finish, notify, outcomes_from, publish, upstream_missing, write_summary
from flows.placement import place_gpu_limit
from flows.public import public
from model.memory import PeakWindow
from tasks.core import tracking
from tasks.core.artifacts import RunPaths
from tasks.core.config import Profile
from tasks.training.ablations import assembled as assembled_ablations

STAGES = ("data", "public", "expert", "assemble", "ablate", "evaluate", "attack")
# the router ablations (paper Tables 1 and 3) are research diagnostics, not part of what the main job delivers: a run
# adds them when asked (`flexo run --ablations`, the `pipeline/with-ablations` deployment), and `evaluate` scores
# whichever ablation MoEs are assembled
OPT_IN_STAGES = ("ablate",)
DEFAULT_STAGES = tuple(stage for stage in STAGES if stage not in OPT_IN_STAGES)
MLFLOW_RUN_TAG = "mlflow-run:"  # the Prefect flow run's tag naming its MLflow parent run
MLFLOW_LINK_KEY = "flexo-mlflow-run"


@dataclass
class _Stages:
    """The stages of one pipeline run: which to run, every outcome so far, each stage's wall time and this process's
    resident peak during it (model.memory)."""

    chosen: list[str]
    out: list[Outcome] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss_gib: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, body: Callable[[], list[Outcome]]) -> None:
        if name not in self.chosen:
            return
        t0, memory = time.perf_counter(), PeakWindow()
        notify(name, name, None, "stage-start")
        self.out.extend(body())
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        self.peak_rss_gib[name] = round(memory.close().rss_gib, 3)
        notify(name, name, None, "stage-end")

    def of(self, step: str) -> list[Outcome]:
        return [o for o in self.out if o.step == step]


def _experts(p: Profile, domains: list[str]) -> list[Outcome]:
    def one(domain: str) -> list[Outcome]:
        return outcomes_from(expert(domain=domain, profile=p, fail_on_error=False))

    if p.orchestration.max_parallel_experts <= 1 or len(domains) <= 1:
        return [o for d in domains for o in one(d)]
    with ThreadPoolExecutor(max_workers=p.orchestration.max_parallel_experts) as pool:
        futures = [pool.submit(contextvars.copy_context().run, one, d) for d in domains]
        return [o for f in futures for o in f.result()]


def _gate(stage: str, needs: list[Outcome]) -> list[Outcome] | None:
    """Skip a stage whose input this run tried and failed to produce (an upstream stage left out of `stages` is not
    checked: its output from an earlier run is used)."""
    skip = upstream_missing(stage, stage, None, needs)
    return [skip] if skip else None


def _evaluate(p: Profile, stages: _Stages) -> list[Outcome]:
    """The benchmark, keyed on the serving MoE this run assembled and the ablation MoEs it will score."""
    moe = stages.of("assemble")
    skip = _gate("evaluate", moe + stages.of("check_benchmark"))
    if skip:
        return skip
    ablations = {v: weights_sha(d) for v, d in assembled_ablations(p).items()}
    moe_sha = moe[0].result.get("sha256", "") if moe else ""
    return outcomes_from(evaluate(profile=p, moe_sha=moe_sha, ablation_shas=ablations, fail_on_error=False))


def _run_stages(p: Profile, run: _Stages, owners: list[str]) -> None:
    run.run("data", lambda: outcomes_from(data(profile=p, domains=["public", *owners], fail_on_error=False)))
    run.run("public", lambda: outcomes_from(public(profile=p, fail_on_error=False)))
    public_model = run.of("train_public")
    run.run("expert", lambda: _gate("expert", public_model) or _experts(p, owners))
    run.run("assemble", lambda: outcomes_from(assemble(profile=p, fail_on_error=False)))
    if p.ablation.variants:
        run.run(
            "ablate", lambda: _gate("ablate", public_model) or outcomes_from(ablate(profile=p, fail_on_error=False))
        )
    run.run("evaluate", lambda: _evaluate(p, run))
    attacked = [o for o in run.out if o.step == "train_expert" and o.domain == p.attack.domain]
    run.run("attack", lambda: _gate("attack", attacked) or outcomes_from(attack(profile=p, fail_on_error=False)))


def _summary(p: Profile, stages: _Stages, seconds: float) -> dict[str, Any]:
    """The run's summary: time per stage, what failed and why, what was reused or skipped, where to look."""
    paths = RunPaths(p)
    links = {
        "benchmark table": str(paths.eval_dir),
        "MLflow UI": f"flexo ui  (or: mlflow ui --backend-store-uri {p.paths.mlflow_tracking_uri} "
        f"--port {p.registry.ui_port})",
        "exported model": str(paths.moe_dir if paths.moe_dir.exists() else paths.registry_cache / "assembled"),
        "run summary": str(paths.reports_dir / "pipeline_summary.json"),
    }
    out = stages.out
    return {
        "profile": p.name,
        "seconds": round(seconds, 3),
        "stage_seconds": stages.seconds,
        "stage_peak_rss_gib": stages.peak_rss_gib,
        "failed": [{"step": o.step, "domain": o.domain, "why": o.detail} for o in out if o.status == "failed"],
        "reused": [f"{o.step}{'/' + o.domain if o.domain else ''}" for o in out if o.status == "cached"],
        "skipped": [{"step": o.step, "domain": o.domain, "why": o.detail} for o in out if o.status == "skipped"],
        "links": links,
    }


def _prefect_tags() -> dict[str, str]:
    """The Prefect flow run this pipeline runs in, as MLflow tags: its id and page (the API's URL where no UI is
    configured)."""
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return {}
    ui_url = flow_run.ui_url or ""
    url = ui_url if ui_url.startswith("http") else (flow_run.api_url or "")
    return {tracking.TAG_PREFECT_FLOW_RUN: str(flow_run.id), tracking.TAG_PREFECT_FLOW_RUN_URL: url}


def mlflow_run_url(p: Profile, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI `flexo ui` starts (or the tracking server's, when MLFLOW_TRACKING_URI names
    one)."""
    uri = tracking.tracking_uri(p)
    base = uri.rstrip("/") if uri.startswith("http") else f"http://127.0.0.1:{p.registry.ui_port}"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def _link_prefect_to_mlflow(p: Profile, parent: Any) -> None:
    """The Prefect flow run names its MLflow parent run: a tag and a link artifact to the run's page."""
    from prefect.artifacts import create_link_artifact
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    run_id = parent.info.run_id
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=[*current.tags, f"{MLFLOW_RUN_TAG}{run_id}"])
    create_link_artifact(
        link=mlflow_run_url(p, parent.info.experiment_id, run_id),
        link_text=f"MLflow run {run_id}",
        key=MLFLOW_LINK_KEY,
        description=f"pipeline ({p.name}): the MLflow parent run holding every stage run",
    )


def _record_outcome(p: Profile, parent: Any, stages: _Stages) -> None:
    """The parent run's summary metrics: wall time and peak memory per stage, steps by status."""
    from mlflow import MlflowClient

    metrics = {f"stage_seconds.{k}": v for k, v in stages.seconds.items()}
    metrics.update({f"stage_peak_rss_gib.{k}": v for k, v in stages.peak_rss_gib.items()})
    for status in ("completed", "cached", "skipped", "failed"):
        metrics[f"steps_{status}"] = float(sum(o.status == status for o in stages.out))
    client = MlflowClient(tracking.tracking_uri(p))
    for key, value in metrics.items():
        client.log_metric(parent.info.run_id, key, value)


@flow(name="pipeline", result_serializer="json", log_prints=True)
def pipeline(
    profile: str | Profile | None = None,
    domains: list[str] | None = None,
    stages: list[str] | None = None,
    fail_on_error: bool = False,
    ablations: bool = False,
) -> dict[str, Any]:
    """The whole FlexOlmo pipeline for one profile; returns the summary (steps, failures, reused, where to look).
    `stages` defaults to every stage but the opt-in ones; `ablations` adds the `ablate` stage to whichever are chosen
    (it runs only where `ablation.variants` names some)."""
    p = as_profile(profile)
    owners = domains or p.closed_domains
    place_gpu_limit(p.orchestration.gpu_slots)
    started = time.perf_counter()
    chosen = list(stages or DEFAULT_STAGES)
    if ablations and "ablate" not in chosen:
        chosen.append("ablate")  # the order the stages run in is fixed (`_run_stages`)
    run = _Stages(chosen)
    with tracking.pipeline_run(p, f"pipeline/{p.name}", tags=_prefect_tags()) as parent:
        _link_prefect_to_mlflow(p, parent)
        _run_stages(p, run, owners)
        _record_outcome(p, parent, run)
    summary = _summary(p, run, time.perf_counter() - started)
    summary["links"]["MLflow run"] = mlflow_run_url(p, parent.info.experiment_id, parent.info.run_id)
    publish("flexo-pipeline", f"pipeline ({p.name})", run.out, summary["links"])
    write_summary(RunPaths(p).reports_dir / "pipeline_summary.json", run.out, summary)
    finish(run.out, fail_on_error)
    return {**summary, "steps": as_rows(run.out)}
