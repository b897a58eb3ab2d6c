"""The experiment's UI set-up: the experiment kind and the reviewer's shared view as experiment tags (a new experiment
gets both, an older one what it lacks, a user's own kind stays), and the links `flexo ui` prints. The tags on a real
store: tests/flows/test_lineage.py; what a browser renders from them: tests/flows/test_ui_browser.py."""

from __future__ import annotations

import json

from tasks.core import tracking

VIEW_TAG = tracking.SHARED_VIEW_TAG_PREFIX + tracking.REVIEWER_VIEW_KEY


def test_a_new_experiment_gets_its_kind_and_the_reviewer_columns() -> None:
    tags = tracking.experiment_tags()
    assert tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    columns = json.loads(tags[VIEW_TAG])["selectedColumns"]
    for column in ("attributes.`Dataset`", "tags.`stage`", "tags.`domain`", "metrics.`val_loss`", "tags.`data_md5`"):
        assert column in columns
    assert "metrics.`extraction_rate`" in columns and any(c.startswith("metrics.`bpb.") for c in columns)


def test_an_older_experiment_gets_what_it_lacks_and_keeps_its_own_kind() -> None:
    assert tracking.tags_to_update({}) == tracking.experiment_tags()
    current = tracking.experiment_tags()
    assert tracking.tags_to_update(current) == {}
    users = {tracking.EXPERIMENT_KIND_TAG: "genai_development", VIEW_TAG: '{"selectedColumns": []}'}
    assert tracking.tags_to_update(users) == {VIEW_TAG: current[VIEW_TAG]}  # our view is replaced, their kind stays


def test_the_links_open_the_runs_with_the_model_training_pages() -> None:
    runs = tracking.experiment_url("http://127.0.0.1:5000/", "7")
    assert runs == "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert tracking.reviewer_view_url("http://127.0.0.1:5000", "7") == f"{runs}&viewStateShareKey=flexo-reviewer"
