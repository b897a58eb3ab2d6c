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
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from tasks.core.config import REPO_ROOT, Profile

# Run tag names (lineage): every run carries these.
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
TAG_PROFILE = "profile"
TAG_STAGE = "stage"
TAG_DOMAIN = "domain"
TAG_OUTPUT_SHA256 = "output_sha256"  # on a training run: the sha256 of what it trained (registration finds it by this)
TAG_PREFECT_FLOW_RUN = "prefect.flow_run_id"  # on the pipeline run: the Prefect flow run it belongs to
TAG_PREFECT_FLOW_RUN_URL = "prefect.flow_run_url"
PIPELINE_STAGE = "pipeline"  # the stage tag of the parent run
# MLflow 3 opens an experiment without this tag on its GenAI overview; this kind opens it on its runs
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# MLflow 3's runs table opens on fixed default columns (Source, Models, Dataset: hard-coded in its JS bundle, read from
# no experiment tag or server setting). What it does read is a shared view: the experiment tag
# `mlflow.sharedViewState.<key>` (JSON of the table's state), applied when the URL carries `?viewStateShareKey=<key>`.
# The reviewer view is one such view; `flexo ui` prints its link.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
REVIEWER_VIEW_KEY = "flexo-reviewer"
WORKFLOW_QUERY = "workflowType=machine_learning"  # MLflow 3.17's UI: the model-training pages, not GenAI's
REVIEWER_COLUMNS = (  # (MLflow column type, key): what a reviewer compares across runs
    ("attributes", "Dataset"),
    ("tags", TAG_STAGE),
    ("tags", TAG_DOMAIN),
    ("metrics", "val_loss"),
    ("metrics", "bpb.FlexOlmo_no_RT.average"),  # the evaluation: FlexOlmo against the public model
    ("metrics", "bpb.M_pub.average"),
    ("metrics", "extraction_rate"),
    ("tags", "data_md5"),
)
DVC_SOURCE_TYPE = "dvc"
SQLITE_PREFIX = "sqlite:///"  # an embedded store: the rest of the URI is the database file


_SET_BY_US: set[str] = set()  # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; only the user's value wins

# The pipeline run that stage runs nest under. A context variable, not MLflow's active run: MLflow keeps the active run
# per thread, and the expert subflows run in a thread pool (`contextvars.copy_context` carries this one along).
_PARENT: ContextVar[str | None] = ContextVar("flexo_mlflow_parent", default=None)
# What the current step reads ({domain: splits}, input context): each stage run it opens logs it (see `reading`).
# The pipeline run's commit: the code this process imported when it started, whatever is committed meanwhile.
_COMMIT: ContextVar[tuple[str, bool] | None] = ContextVar("flexo_pipeline_commit", default=None)
_READS: ContextVar[tuple[Mapping[str, tuple[str, ...]], str] | None] = ContextVar("flexo_data_reads", default=None)


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
        experiment_id = mlflow.create_experiment(name, artifact_location=location, tags=experiment_tags())
    else:
        experiment_id = found.experiment_id
        client = mlflow.MlflowClient()
        for key, value in tags_to_update(found.tags).items():
            client.set_experiment_tag(experiment_id, key, value)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def experiment_tags() -> dict[str, str]:
    """The experiment's UI set-up: its kind (opens on its runs, not MLflow 3's GenAI overview) and the reviewer view."""
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, SHARED_VIEW_TAG_PREFIX + REVIEWER_VIEW_KEY: reviewer_view_state()}


def tags_to_update(existing: Mapping[str, str]) -> dict[str, str]:
    """The experiment tags an existing experiment needs: those it lacks (a store made before they were set) and the
    reviewer view where ours changed; a user's own experiment kind stays."""
    return {
        key: value
        for key, value in experiment_tags().items()
        if key not in existing or (key.startswith(SHARED_VIEW_TAG_PREFIX) and existing[key] != value)
    }


def reviewer_view_state() -> str:
    """The runs table's state for the reviewer view, as MLflow's UI reads a shared view (plain JSON; column keys as
    its `type.`key`` canonical sort keys)."""
    import json

    columns = [f"{kind}.`{key}`" for kind, key in REVIEWER_COLUMNS]
    return json.dumps({"selectedColumns": columns})  # the rest (order, filters) stays at the UI's defaults


def experiment_url(ui_base: str, experiment_id: str) -> str:
    """The experiment's page in the MLflow UI at `ui_base`, opening on its runs. Why the query: MLflow 3.17's UI
    chooses between its GenAI and model-training pages per browser (the sidebar switch, kept in the browser's local
    storage, GenAI until switched), not from the experiment's kind; `workflowType` in the URL chooses for that page."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}"


def reviewer_view_url(ui_base: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI at `ui_base`, with the reviewer's columns shown."""
    return f"{experiment_url(ui_base, experiment_id)}&viewStateShareKey={REVIEWER_VIEW_KEY}"


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
    """Tags every run carries: git commit (inside a pipeline run, the one it started on), dirty flag, profile name."""
    commit, dirty = _COMMIT.get() or git_commit()
    return {TAG_GIT_COMMIT: commit, TAG_GIT_DIRTY: str(dirty).lower(), TAG_PROFILE: profile.name}


@contextmanager
def pipeline_run(profile: Profile, run_name: str, tags: Mapping[str, str] | None = None) -> Iterator[Any]:
    """The parent run of one pipeline run: flattened profile as params, lineage tags, system metrics. Every stage and
    registration run opened inside (in any thread of this context) nests under it. It is never MLflow's active run,
    so nothing logs into it by accident; it ends FAILED when the body raises."""
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

    from mlflow import MlflowClient

    experiment_id = setup(profile)
    client = MlflowClient(tracking_uri(profile))
    commit_token = _COMMIT.set(git_commit())
    run_tags = {**lineage_tags(profile), TAG_STAGE: PIPELINE_STAGE, MLFLOW_RUN_NAME: run_name, **(tags or {})}
    run = client.create_run(experiment_id, run_name=run_name, tags=run_tags)
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in profile_params(profile).items()]
    for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS_PER_BATCH])
    monitor = _system_metrics(profile, run_id)
    token = _PARENT.set(run_id)
    status = "FAILED"
    try:
        yield client.get_run(run_id)
        status = "FINISHED"
    finally:
        _PARENT.reset(token)
        _COMMIT.reset(commit_token)
        if monitor is not None:
            monitor.finish()
        client.set_terminated(run_id, status=status)


MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch


def _system_metrics(profile: Profile, run_id: str) -> Any:
    """CPU, memory, disk (and GPU) of this machine sampled into the run while it lasts; None when switched off."""
    if not profile.registry.system_metrics:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=profile.registry.system_metrics_interval_s, tracking_uri=tracking_uri(profile)
    )
    monitor.start()
    return monitor


def parent_run_id() -> str | None:
    """The pipeline run stage runs opened now nest under (None outside a pipeline run)."""
    return _PARENT.get()


@contextmanager
def reading(profile: Profile, reads: Mapping[str, tuple[str, ...]], context: str = "training") -> Iterator[None]:
    """Declare what the step about to run reads ({domain: splits}); every stage run it opens logs each split with the
    domain's DVC md5 and the owner's remote once its body succeeded. Why declared around the step and not inside it:
    the step may be served from Prefect's cache, and then no run opens and nothing is logged."""
    token = _READS.set((dict(reads), context) if reads else None)
    try:
        yield
    finally:
        _READS.reset(token)


@contextmanager
def stage_run(
    profile: Profile, stage: str, domain: str | None = None, params: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """A child run for one stage, optionally one domain: nested under the active run, else under the pipeline run.
    Inside an active run of the same stage and domain (a flow step that tracks the area function that logs itself),
    that run is the stage run: one run per stage, holding both's logging."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and _same_stage(active, stage, domain):
        if params:
            mlflow.log_params(flatten(params))
        yield active
        return
    if active is None:
        setup(profile)
    name = f"{stage}/{domain}" if domain else stage
    tags = {**lineage_tags(profile), TAG_STAGE: stage}
    if domain:
        tags[TAG_DOMAIN] = domain
    parent = None if active is not None else _PARENT.get()
    with mlflow.start_run(run_name=name, nested=True, parent_run_id=parent, tags=tags) as run:
        if params:
            mlflow.log_params(flatten(params))
        yield run
        _log_declared_reads(profile)


def _log_declared_reads(profile: Profile) -> None:
    """The dataset inputs the current step declared (`reading`). The step succeeded, so a declared split that is
    not there was not read: it is named in a `data_not_logged.<domain>` tag instead of failing the step."""
    import mlflow
    from tasks.core.errors import DataError

    declared = _READS.get()
    if declared is None:
        return
    reads, context = declared
    for domain, splits in reads.items():
        try:
            log_domain_inputs(profile, domain, splits, context=context)
        except DataError as err:
            mlflow.set_tag(f"data_not_logged.{domain}", str(err)[:500])


def _same_stage(run: Any, stage: str, domain: str | None) -> bool:
    tags = run.data.tags
    return tags.get(TAG_STAGE) == stage and tags.get(TAG_DOMAIN) == domain


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
    remote = owner_remote(profile, domain)
    for split in splits:
        path = RunPaths(profile).split(domain, split)
        if not path.exists():
            raise DataError(f"{path}: split '{split}' of '{domain}' is missing; run `flexo data --domain {domain}`")
        log_dataset(profile, domain, split, md5, frame=pd.read_parquet(path), context=context, remote=remote)
    return md5


def owner_remote(profile: Profile, domain: str) -> str | None:
    """Where the owner's DVC remote is: `domains.<d>.remote`, else `<dvc_remotes_dir>/<owner>` (the rule of
    `tasks.data.versioning.remote_url`, as an absolute path: lineage names the place, not a path relative to a
    checkout); None for a domain the profile does not name."""
    if domain not in profile.domains:
        return None
    cfg = profile.domains[domain]
    return cfg.remote or str(profile.path("dvc_remotes_dir") / cfg.owner)


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
