"""A model step inside its MLflow stage run: lineage tags, params, per-step training metrics, final metrics, and the
data each step reads (`data_reads`: what its stage run logs as dataset inputs).

Why here and not in the areas: the areas log through the `TrainLogger` protocol (console in tests, MLflow in the
pipeline), so their functions stay runnable without a tracking server; this module plugs MLflow in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flows.inputs import data_hash
from flows.steps import call
from tasks.core.config import Profile


class MlflowTrainLogger:
    """`tasks.core.train_logging.TrainLogger` onto the active MLflow run (flattened params, metrics per step)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        import mlflow
        from tasks.core.tracking import flatten

        mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


TRAIN_SPLITS = ("train", "val")  # a training step fits on train and picks/reports on val
TRAINING_STEPS = ("train_public", "train_expert", "train_dense", "train_ablation")


def data_reads(step: str, profile: Profile, domain: str | None) -> tuple[dict[str, tuple[str, ...]], str]:
    """({domain: splits}, input context) a step reads, for the dataset inputs of the stage run it opens. `domain`:
    the step's label in the run (`<variant>/<domain>` for an ablation). Steps that open no MLflow run read nothing
    here. The evaluation reads every domain's test split, and the train split of the domains its trained baselines
    fit on (`tasks.evaluation.families`: BTX and router tuning on public, the unrestricted MoE on every domain)."""
    owner = domain.rpartition("/")[2] if domain else None
    if step == "train_public":
        return {"public": TRAIN_SPLITS}, "training"
    if step in TRAINING_STEPS and owner:
        return {owner: TRAIN_SPLITS}, "training"
    if step == "attack" and owner:
        return {owner: ("train",)}, "attack"
    if step == "evaluate":
        cfg = profile.eval
        reads: dict[str, tuple[str, ...]] = {d: ("test",) for d in profile.domains}
        trained_on = list(profile.domains) if cfg.unrestricted_steps else []
        if not trained_on and (cfg.btx_router_steps or cfg.rt_steps) and "public" in reads:
            trained_on = ["public"]
        for d in trained_on:
            reads[d] = ("train", "test")
        return reads, "evaluation"
    return {}, ""


def _numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _train(step: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A training step, fresh when its checkpoint belongs to another run (the cache missed because an input changed)."""
    import mlflow
    from model.checkpoint import CheckpointError  # here, not at the top: a data-only command never imports torch

    try:
        return call(step, *args, **kwargs)
    except Exception as exc:
        if not isinstance(exc.__cause__, CheckpointError):
            raise
        mlflow.set_tag("resumed", f"no: {exc}")
        return call(step, *args, **{**kwargs, "resume": False})


def _log_evaluation(profile: Profile, out: Mapping[str, Any]) -> None:
    """What `flexo eval` logs besides the metrics (`tasks.evaluation.report.log_to_mlflow`), from the step's JSON
    result: the evaluation settings as params, the report, tables, results JSON and figures as artifacts, and a
    `skipped.<model>` tag per model not evaluated and a `target.<key>` tag per science target (its verdict)."""
    import mlflow
    from tasks.core.tracking import flatten
    from tasks.evaluation.report import mlflow_key

    mlflow.log_params(flatten({"eval": profile.eval.model_dump()}))
    files = [("report", out.get("report")), ("eval", out.get("results_json"))]
    files += [("eval", path) for path in (out.get("tables") or {}).values()]
    files += [("plots", path) for path in (out.get("figures") or {}).values()]
    for folder, path in files:
        if path and Path(path).is_file():
            mlflow.log_artifact(str(path), artifact_path=folder)
    skipped = out.get("skipped") or {}
    if skipped:
        mlflow.set_tags({mlflow_key(f"skipped.{k}")[:250]: str(v)[:500] for k, v in skipped.items()})
    targets = out.get("targets") or {}
    if targets:
        mlflow.set_tags({f"target.{key}": str(verdict) for key, verdict in targets.items()})


def tracked(step: str, profile: Profile, domain: str | None, **kwargs: Any) -> dict[str, Any]:
    """Run a model step inside an MLflow stage run (lineage tags, params, metrics); the result links to the run."""
    import mlflow
    from tasks.core import tracking
    from tasks.core.train_logging import ConsoleLogger, FanOutLogger

    args = (profile,) if domain is None else (profile, domain)
    training = step.startswith("train_")
    with tracking.stage_run(profile, step, domain) as run:
        if training:
            console = ConsoleLogger(prefix=f"{step} {domain or ''}".strip())
            out = _train(step, args, {**kwargs, "logger": FanOutLogger([console, MlflowTrainLogger()])})
        else:
            out = call(step, *args, **kwargs)
            metrics = _numbers(out.get("metrics"))
            if metrics:
                mlflow.log_metrics({k.replace("/", ".").replace(" ", "_"): v for k, v in metrics.items()})
            if step == "evaluate":
                _log_evaluation(profile, out)
        if domain:
            mlflow.set_tag("data_md5", data_hash(profile, domain))
        if training and out.get("sha256"):
            mlflow.set_tag(tracking.TAG_OUTPUT_SHA256, out["sha256"])
    out["mlflow_run_id"] = run.info.run_id
    out["mlflow_run"] = (
        f"{tracking.tracking_uri(profile)} experiment={profile.registry.experiment} run={run.info.run_id}"
    )
    return out
