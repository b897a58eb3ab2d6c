"""The data stage's MLflow runs: one nested run per domain the `data` flow worked on inside a pipeline run, holding
what a reviewer checks before trusting a model trained on it: the data version (DVC md5, remote, the .dvc file), the
counts per split, the quarantine by reason, the Great Expectations result, and the data card (as the run's
description and as an artifact).

Why after the flow's steps and not inside them: the steps are cached Prefect tasks (how they are ordered or spread over
processes is the flow's business), and their results (the `Outcome`s) hold everything logged here, so one hook at the
end of the flow logs every domain from them. A domain whose steps were all served from Prefect's cache opens no run (an
unchanged rerun adds no empty runs, as the other stages'). Outside a pipeline run (`flexo data`, a data owner's own
machine) nothing is logged: the data flow needs no tracking store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flows.outcomes import Outcome
from tasks.core import tracking
from tasks.core.config import Profile

DATA_STAGE = "data"
DOMAIN_STEPS = ("prepare_domain", "split_domain", "version_domain", "write_card")
SPLITS = ("train", "val", "test")
BUILT_CONTEXT = "built"  # the dataset inputs of a data run: the splits it wrote, at the version it wrote them
NOTE_TAG = "mlflow.note.content"  # the run's description in the MLflow UI
MAX_NOTE_CHARS = 8000  # MLflow's limit on a tag value; a longer card stays an artifact only


def log_data_runs(profile: Profile, domains: Sequence[str], outcomes: Sequence[Outcome]) -> list[str]:
    """One nested MLflow run per domain that did work in this data flow (inside a pipeline run only); returns the
    run ids."""
    if tracking.parent_run_id() is None:
        return []
    disjoint = next((o.result for o in outcomes if o.step == "check_disjoint" and o.ok), {})
    run_ids = []
    for domain in domains:
        steps = {o.step: o for o in outcomes if o.domain == domain and o.step in DOMAIN_STEPS}
        if any(o.status in ("completed", "failed") for o in steps.values()):
            run_ids.append(_log_domain(profile, domain, steps, disjoint))
    return run_ids


def _log_domain(profile: Profile, domain: str, steps: Mapping[str, Outcome], disjoint: Mapping[str, Any]) -> str:
    import mlflow
    from mlflow import MlflowClient

    failed = [o for o in steps.values() if o.status == "failed"]
    with tracking.stage_run(profile, DATA_STAGE, domain, params=_domain_params(profile, domain)) as run:
        mlflow.log_metrics(_counts(steps, domain, disjoint))
        mlflow.set_tags(_tags(steps))
        _log_splits(profile, domain, steps)
        _log_card(steps)
        if failed:
            mlflow.set_tags({f"failed.{o.step}": o.detail[:500] for o in failed})
    if failed:  # the run ends as the domain did: a reviewer filters FAILED runs
        MlflowClient(tracking.tracking_uri(profile)).set_terminated(run.info.run_id, status="FAILED")
    return str(run.info.run_id)


def _domain_params(profile: Profile, domain: str) -> dict[str, Any]:
    """The domain's configuration (source, owner, remote, sizes): what made this data."""
    return {"domain": profile.domains[domain].model_dump(mode="json")} if domain in profile.domains else {}


def _validation(steps: Mapping[str, Outcome]) -> dict[str, Any]:
    """The domain's Great Expectations summary: the split's copy, else (the split did not run) the preparation's."""
    for step in ("split_domain", "prepare_domain"):
        outcome = steps.get(step)
        value = outcome.result.get("validation") if outcome and outcome.ok else None
        if isinstance(value, dict):
            return value
    return {}


def _counts(steps: Mapping[str, Outcome], domain: str, disjoint: Mapping[str, Any]) -> dict[str, float]:
    """Documents ingested, accepted and quarantined (by reason), per split, moved to train by decontamination."""
    validation = _validation(steps)
    metrics: dict[str, float] = {
        k: float(validation[k]) for k in ("ingested", "accepted", "quarantined") if k in validation
    }
    for reason, count in (validation.get("reasons") or {}).items():
        metrics[f"quarantined.{_key(reason)}"] = float(count)
    split = steps.get("split_domain")
    if split is not None and split.ok:
        for name, count in (split.result.get("splits") or {}).items():
            metrics[f"split.{name}"] = float(count)
        metrics["moved_to_train"] = float(split.result.get("moved_to_train", 0))
    for key in ("quarantined", "moved_to_train"):  # the cross-domain check's share of this domain
        if domain in (disjoint.get(key) or {}):
            metrics[f"disjoint.{key}"] = float(disjoint[key][domain])
    return metrics


def _key(text: str) -> str:
    """A quarantine reason as an MLflow metric key (letters, digits, `_-./ ` only)."""
    cleaned = "".join(c if c.isalnum() or c in "_-. " else "_" for c in text)
    return "_".join(cleaned.split())[:200]


def _tags(steps: Mapping[str, Outcome]) -> dict[str, str]:
    """The data version (DVC md5, its .dvc file, the owner's remote, pushed or not) and the validation verdict."""
    tags: dict[str, str] = {}
    validation = _validation(steps)
    if "success" in validation:
        tags["validation"] = "passed" if validation["success"] else "failed"
        tags["validation_report"] = str(validation.get("report", ""))
    version = steps.get("version_domain")
    if version is not None and version.ok:
        result = version.result
        tags.update(
            data_md5=str(result.get("md5", "")),
            **{
                "dvc.tracked_by": str(result.get("tracked_by", "")),
                "dvc.remote": str(result.get("remote_url", "")),
                "dvc.pushed": str(bool(result.get("pushed"))).lower(),
            },
        )
    return tags


def _log_splits(profile: Profile, domain: str, steps: Mapping[str, Outcome]) -> None:
    """Each split the domain's build wrote, as a dataset input at its DVC md5 (the Dataset column of the runs
    table). Logged by reference, not read back: a domain at scale is gigabytes."""
    from tasks.core.artifacts import RunPaths

    version = steps.get("version_domain")
    md5 = str(version.result.get("md5", "")) if version is not None and version.ok else ""
    if not md5:
        return  # built without DVC: no data version to point at
    remote = tracking.owner_remote(profile, domain)
    for split in SPLITS:
        if RunPaths(profile).split(domain, split).exists():
            tracking.log_dataset(profile, domain, split, md5, context=BUILT_CONTEXT, remote=remote)


def _log_card(steps: Mapping[str, Outcome]) -> None:
    """The data card (markdown and JSON) as artifacts; the markdown as the run's description when it fits."""
    import mlflow

    card = steps.get("write_card")
    path = Path(str(card.result.get("path", ""))) if card is not None and card.ok else None
    if path is None or not path.is_file():
        return
    for file in (path, path.with_suffix(".json")):
        if file.is_file():
            mlflow.log_artifact(str(file), artifact_path="card")
    text = path.read_text(encoding="utf-8")
    if len(text) <= MAX_NOTE_CHARS:
        mlflow.set_tag(NOTE_TAG, text)
