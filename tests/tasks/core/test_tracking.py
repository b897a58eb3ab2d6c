"""Tracking against a real SQLite MLflow store in tmp_path: the run tree, params, lineage, DVC inputs, plots."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.core import tracking
from tasks.core.errors import DataError


def test_pipeline_tree_params_lineage_and_dvc_inputs(tmp_profile) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlflow import MlflowClient

    frame = pd.DataFrame({"id": ["a", "b"], "text": ["one doc", "two docs"]})
    with tracking.pipeline_run(tmp_profile, "pipeline-test") as parent:
        with tracking.stage_run(tmp_profile, "train_expert", domain="news", params={"lr": 0.1}) as child:
            tracking.log_dataset(tmp_profile, "news", "train", "0123456789abcdef0123456789abcdef", frame=frame)
            for step, loss in enumerate([3.0, 2.5, 2.0]):
                tracking.log_metrics({"loss": loss}, step=step)
            figure, axis = plt.subplots()
            axis.plot([3.0, 2.5, 2.0])
            tracking.log_figure(figure, "loss.png")
            plt.close(figure)
    client = MlflowClient(tracking.tracking_uri(tmp_profile))
    parent_run = client.get_run(parent.info.run_id)
    child_run = client.get_run(child.info.run_id)
    # the UI tree: the child names its parent
    assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    # flattened profile as params (more than MLflow's 100-per-batch limit), lineage tags on both runs
    assert parent_run.data.params["model.hidden_size"] == str(tmp_profile.model.hidden_size)
    assert len(parent_run.data.params) > 100
    commit, _ = tracking.git_commit()
    assert len(commit) == 40
    for run in (parent_run, child_run):
        assert run.data.tags[tracking.TAG_GIT_COMMIT] == commit and run.data.tags["profile"] == "tiny"
    assert child_run.data.tags["domain"] == "news" and child_run.data.params["lr"] == "0.1"
    # metrics over steps
    history = client.get_metric_history(child.info.run_id, "loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [3.0, 2.5, 2.0]
    # the dataset input points into DVC with the md5
    (dataset_input,) = child_run.inputs.dataset_inputs
    assert dataset_input.dataset.source_type == "dvc"
    assert "0123456789abcdef0123456789abcdef" in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["dvc_md5"] == "0123456789abcdef0123456789abcdef"
    assert child_run.data.tags["data_md5.news"] == "0123456789abcdef0123456789abcdef"
    # the plot is an image artifact
    assert [a.path for a in client.list_artifacts(child.info.run_id, "plots")] == ["plots/loss.png"]


def test_dataset_without_dvc_hash_is_refused(tmp_profile) -> None:
    with tracking.pipeline_run(
        tmp_profile.model_copy(update={"registry": tmp_profile.registry.model_copy(update={"system_metrics": False})}),
        "no-hash",
    ):
        with pytest.raises(DataError, match="no DVC md5"):
            tracking.log_dataset(tmp_profile, "news", "train", "")


def test_relative_sqlite_uri_is_anchored_at_the_repository(tiny_profile, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.tracking_uri(tiny_profile) == f"sqlite:///{tracking.REPO_ROOT}/mlflow/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.tracking_uri(tiny_profile) == "http://127.0.0.1:5999"


def test_store_exists_only_once_its_database_does_and_asking_creates_none(tmp_profile, monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    database = tracking.local_store_path(tracking.tracking_uri(tmp_profile))
    assert database is not None and database.name == "mlflow.db"
    assert not tracking.store_exists(tmp_profile) and not database.exists()
    tracking.setup(tmp_profile)
    assert tracking.store_exists(tmp_profile)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking.local_store_path(tracking.tracking_uri(tmp_profile)) is None and tracking.store_exists(tmp_profile)


def test_domain_inputs_carry_the_dvc_hash_of_the_data_read(tmp_profile) -> None:
    from mlflow import MlflowClient
    from tasks.core.artifacts import RunPaths
    from tasks.core.datasets import dataset_hash

    paths = RunPaths(tmp_profile)
    paths.domain_dir("math").mkdir(parents=True)
    for split in ("train", "val"):
        pd.DataFrame({"id": [f"{split}-1"], "text": [f"{split} text"]}).to_parquet(paths.split("math", split))
    with tracking.stage_run(tmp_profile, "train_expert", domain="math") as run:
        md5 = tracking.log_domain_inputs(tmp_profile, "math")
    assert md5 == dataset_hash(tmp_profile, "math")
    inputs = MlflowClient(tracking.tracking_uri(tmp_profile)).get_run(run.info.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["math/train", "math/val"]
    assert all(f"@{md5}" in i.dataset.source for i in inputs)
    paths.split("math", "val").unlink()
    with tracking.stage_run(tmp_profile, "train_expert", domain="math"):
        with pytest.raises(DataError, match="split 'val' of 'math' is missing"):
            tracking.log_domain_inputs(tmp_profile, "math")
