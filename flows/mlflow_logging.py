"""A model step inside its MLflow stage run: lineage tags, params, per-step training metrics, final metrics.

Why here and not in the areas: the areas log through the `TrainLogger` protocol (console in tests, MLflow in the
pipeline), so their functions stay runnable without a tracking server; this module plugs MLflow in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.inputs import data_hash
from flows.steps import call
from model.checkpoint import CheckpointError
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


def _numbers(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _train(step: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """A training step, fresh when its checkpoint belongs to another run (the cache missed because an input changed)."""
    import mlflow

    try:
        return call(step, *args, **kwargs)
    except Exception as exc:
        if not isinstance(exc.__cause__, CheckpointError):
            raise
        mlflow.set_tag("resumed", f"no: {exc}")
        return call(step, *args, **{**kwargs, "resume": False})


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
        if domain:
            mlflow.set_tag("data_md5", data_hash(profile, domain))
    out["mlflow_run_id"] = run.info.run_id
    out["mlflow_run"] = (
        f"{tracking.tracking_uri(profile)} experiment={profile.registry.experiment} run={run.info.run_id}"
    )
    return out
