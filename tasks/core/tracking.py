"""One small logging interface over MLflow tracking: experiment, nested runs, params, metrics, lineage, plots.

Why: reviewers compare runs in the MLflow UI, so every stage logs the same way: one parent run per pipeline run, one
child run per stage and per domain (the UI shows the tree), the flattened profile as params, the git commit and the DVC
md5 of every dataset read (invariant 7). The code talks to whatever `MLFLOW_TRACKING_URI` names; without it, to the
embedded SQLite store of `paths.mlflow_tracking_uri`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT, Profile

# Run tag names (lineage): every run carries these.
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
TAG_PROFILE = "profile"
TAG_STAGE = "stage"
TAG_DOMAIN = "domain"
DVC_SOURCE_TYPE = "dvc"
SQLITE_PREFIX = "sqlite:///"  # an embedded store: the rest of the URI is the database file


_SET_BY_US: set[str] = set()  # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; only the user's value wins


def tracking_uri(profile: Profile) -> str:
    """`MLFLOW_TRACKING_URI` if the user set it, else the profile's store; a relative SQLite path is anchored at the
    repository root."""
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    uri = user_uri if user_uri and user_uri not in _SET_BY_US else profile.paths.mlflow_tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        uri = SQLITE_PREFIX + str(REPO_ROOT / uri[len(SQLITE_PREFIX) :])
    return uri


def is_local_store(uri: str) -> bool:
    """True for the embedded SQLite store (artifacts then live in `paths.mlflow_artifacts_dir`)."""
    return uri.startswith("sqlite:")


def local_store_path(uri: str) -> Path | None:
    """The database file of an embedded SQLite store URI; None for a tracking server."""
    return Path(uri[len(SQLITE_PREFIX) :]) if is_local_store(uri) else None


def store_exists(profile: Profile) -> bool:
    """Whether the profile's tracking store can already hold runs and models: a server always can, an embedded store
    once its database file exists (asking must not create an empty one)."""
    database = local_store_path(tracking_uri(profile))
    return database is None or database.exists()


def setup(profile: Profile, experiment: str | None = None) -> str:
    """Point MLflow at the store, create the experiment if needed, make it current; returns the experiment id."""
    import mlflow

    uri = tracking_uri(profile)
    database = local_store_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get("MLFLOW_TRACKING_URI") != uri:
        _SET_BY_US.add(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    name = experiment or profile.registry.experiment
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        location = None
        if is_local_store(uri):
            artifacts = profile.path("mlflow_artifacts_dir") / name
            artifacts.mkdir(parents=True, exist_ok=True)
            location = artifacts.as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
    else:
        experiment_id = found.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b.c": "value"} (lists as their JSON-ish str), the shape MLflow params take."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def profile_params(profile: Profile) -> dict[str, str]:
    """The flattened, resolved profile: what reviewers filter and compare runs on."""
    return flatten(profile.model_dump(mode="json"))


def git_commit(repo: Path = REPO_ROOT) -> tuple[str, bool]:
    """(HEAD commit, working tree dirty?). Outside a git checkout: ("unknown", True), so lineage shows the gap."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return head.stdout.strip(), bool(status.stdout.strip())


def lineage_tags(profile: Profile) -> dict[str, str]:
    """Tags every run carries: git commit, dirty flag, profile name."""
    commit, dirty = git_commit()
    return {TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: str(dirty).lower(), TAG_PROFILE: profile.name}


@contextmanager
def pipeline_run(profile: Profile, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """The parent run of one pipeline run: flattened profile as params, lineage tags, system metrics."""
    import mlflow

    setup(profile)
    if profile.registry.system_metrics:
        mlflow.set_system_metrics_sampling_interval(profile.registry.system_metrics_interval_s)
    with mlflow.start_run(
        run_name=run_name,
        tags={**lineage_tags(profile), TAG_STAGE: "pipeline", **(tags or {})},
        log_system_metrics=profile.registry.system_metrics,
    ) as run:
        mlflow.log_params(profile_params(profile))
        yield run


@contextmanager
def stage_run(
    profile: Profile, stage: str, domain: str | None = None, params: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A child run (nested under the active run, if any) for one stage, optionally one domain."""
    import mlflow

    if mlflow.active_run() is None:
        setup(profile)
    name = f"{stage}/{domain}" if domain else stage
    tags = {**lineage_tags(profile), TAG_STAGE: stage}
    if domain:
        tags[TAG_DOMAIN] = domain
    with mlflow.start_run(run_name=name, nested=True, tags=tags) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Metrics of the active run at a step (loss curves are many steps of the same keys)."""
    import mlflow

    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def dvc_source(path: str, md5: str, remote: str | None = None) -> Any:
    """A dataset source that points into DVC: path in the repo, the md5 DVC recorded, the owner's remote."""
    from mlflow.data.dataset_source_registry import register_dataset_source

    source_class = _dvc_source_class()
    register_dataset_source(source_class)  # type: ignore[arg-type]  # takes the class; mlflow annotates an instance
    return source_class(path=path, md5=md5, remote=remote)


def log_dataset(
    profile: Profile,
    domain: str,
    split: str,
    md5: str,
    frame: Any | None = None,
    context: str = "training",
    remote: str | None = None,
) -> None:
    """`mlflow.log_input` of data/<domain>/<split> with its DVC md5 (the pointer to the exact data version read)."""
    from mlflow.data.dataset import Dataset
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.pandas_dataset import from_pandas

    import mlflow

    if not md5:
        from tasks.core.errors import DataError

        raise DataError(
            f"data/{domain}/{split}: no DVC md5 given; version the domain (`dvc add`) before a run reads it"
        )
    data_dir = profile.path("data_dir")
    rel = f"{data_dir.name}/{domain}" if data_dir.is_relative_to(REPO_ROOT) else str(data_dir / domain)
    source = dvc_source(rel, md5, remote)
    name = f"{domain}/{split}"
    if frame is not None:
        dataset: Dataset = from_pandas(frame, source=source, name=name)
    else:
        # mlflow's Dataset (no ABC) declares `profile` abstract and MetaDataset leaves it out: it instantiates fine
        dataset = MetaDataset(source, name=name, digest=md5[:36])  # type: ignore[abstract]
    mlflow.log_input(dataset, context=context, tags={"dvc_md5": md5, TAG_DOMAIN: domain, "split": split})
    mlflow.set_tag(f"data_md5.{domain}", md5)


def log_domain_inputs(
    profile: Profile, domain: str, splits: tuple[str, ...] = ("train", "val"), context: str = "training"
) -> str:
    """Log every split of data/<domain> a stage reads, with the domain's DVC md5 (`tasks.core.datasets.dataset_hash`)
    and the owner's remote; returns the md5. A missing split is an error naming the file, not a silent gap in
    lineage."""
    import pandas as pd

    from tasks.core.artifacts import RunPaths
    from tasks.core.datasets import dataset_hash
    from tasks.core.errors import DataError

    md5 = dataset_hash(profile, domain)
    remote = profile.domains[domain].remote if domain in profile.domains else None
    for split in splits:
        path = RunPaths(profile).split(domain, split)
        if not path.exists():
            raise DataError(f"{path}: split '{split}' of '{domain}' is missing; run `flexo data --domain {domain}`")
        log_dataset(profile, domain, split, md5, frame=pd.read_parquet(path), context=context, remote=remote)
    return md5


def log_figure(figure: Any, artifact_file: str) -> None:
    """A matplotlib figure (loss curve, routing heatmap) as an image of the active run, under plots/."""
    import mlflow

    mlflow.log_figure(figure, f"plots/{artifact_file}")


def log_image_file(path: Path) -> None:
    """An already rendered image file as an artifact of the active run, under plots/."""
    import mlflow

    mlflow.log_artifact(str(path), artifact_path="plots")


_SOURCE_CLASS: type | None = None


def _dvc_source_class() -> type:
    """Built lazily so importing this module does not import MLflow."""
    global _SOURCE_CLASS
    if _SOURCE_CLASS is not None:
        return _SOURCE_CLASS
    from mlflow.data.dataset_source import DatasetSource

    class DVCDatasetSource(DatasetSource):
        """A DVC-tracked directory at an exact md5 (`dvc://<path>@<md5>`); `load()` returns where DVC restores it."""

        def __init__(self, path: str, md5: str, remote: str | None = None):
            self.path, self.md5, self.remote = path, md5, remote

        @staticmethod
        def _get_source_type() -> str:
            return DVC_SOURCE_TYPE

        def load(self) -> str:
            return str(REPO_ROOT / self.path)

        @staticmethod
        def _can_resolve(raw_source: Any) -> bool:
            return isinstance(raw_source, str) and raw_source.startswith("dvc://")

        @classmethod
        def _resolve(cls, raw_source: Any) -> DVCDatasetSource:
            path, _, md5 = raw_source[len("dvc://") :].partition("@")
            return cls(path=path, md5=md5)

        def to_dict(self) -> dict[str, Any]:
            return {"uri": f"dvc://{self.path}@{self.md5}", "path": self.path, "md5": self.md5, "remote": self.remote}

        @classmethod
        def from_dict(cls, source_dict: dict[Any, Any]) -> DVCDatasetSource:
            return cls(path=source_dict["path"], md5=source_dict["md5"], remote=source_dict.get("remote"))

    _SOURCE_CLASS = DVCDatasetSource
    return DVCDatasetSource
