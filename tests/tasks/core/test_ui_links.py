"""The experiment's UI set-up on a real (SQLite) store: the experiment kind and the reviewer's shared view as
experiment tags, on a new store and on one made before them, and the links `flexo ui` prints. (What a browser renders
from them: tests/flows/test_ui_browser.py.)"""

from __future__ import annotations

import json
import os

import pytest

from tasks.core import tracking

URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
VIEW_TAG = tracking.SHARED_VIEW_TAG_PREFIX + tracking.REVIEWER_VIEW_KEY


@pytest.fixture(autouse=True)
def restored_uri():
    """mlflow.set_tracking_uri exports the store's URI; later tests' subprocesses must not inherit it."""
    saved = {name: os.environ.get(name) for name in URI_VARS}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _tags(profile) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri(profile))
    return dict(client.get_experiment_by_name(profile.registry.experiment).tags)


def test_the_experiment_carries_its_kind_and_the_reviewer_columns_and_an_older_store_gets_them(tmp_profile) -> None:
    from mlflow import MlflowClient

    experiment_id = tracking.setup(tmp_profile)
    tags = _tags(tmp_profile)
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    columns = json.loads(tags[VIEW_TAG])["selectedColumns"]
    for column in ("attributes.`Dataset`", "tags.`stage`", "tags.`domain`", "metrics.`val_loss`"):
        assert column in columns
    assert "metrics.`extraction_rate`" in columns and any(c.startswith("metrics.`bpb.") for c in columns)

    client = MlflowClient(tracking.tracking_uri(tmp_profile))
    client.set_experiment_tag(experiment_id, tracking.EXPERIMENT_KIND_TAG, "genai_development")  # the user's choice
    client.set_experiment_tag(experiment_id, VIEW_TAG, '{"selectedColumns": []}')  # an older view of ours
    assert tracking.setup(tmp_profile) == experiment_id
    tags = _tags(tmp_profile)
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "genai_development"
    assert tags[VIEW_TAG] == tracking.reviewer_view_state()


def test_the_links_open_the_runs_with_the_model_training_pages() -> None:
    runs = tracking.experiment_url("http://127.0.0.1:5000/", "7")
    assert runs == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert tracking.reviewer_view_url("http://127.0.0.1:5000", "7") == f"{runs}&viewStateShareKey=flexo-reviewer"
