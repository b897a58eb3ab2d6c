"""The `follow_revocations` flow (deployment `follow_revocations/every-minute`) under Prefect: a status tag set in the
MLflow UI / client makes it re-assemble `serving` without the expert; with nothing withdrawn it does nothing."""

from __future__ import annotations

import pytest

from flows.revoke import follow_revocations
from mlflow import MlflowClient
from tasks.core.tracking import tracking_uri
from tasks.registry import registry
from tasks.registry.consent import holdings
from tests.tasks.registry_world import serving_world

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_the_scheduled_flow_reassembles_without_a_withdrawn_expert(tmp_profile) -> None:
    serving_world(tmp_profile, ["news", "math"])
    assert follow_revocations(profile=tmp_profile)[0]["result"]["new_moe"] == ""
    uri = tracking_uri(tmp_profile)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_model_version_tag(
        "flexo-expert-math", "1", "status", "revoked"
    )
    (row,) = follow_revocations(profile=tmp_profile)
    assert row["status"] == "completed" and row["result"]["new_moe"] == "flexo-moe version 2"
    assert holdings(registry.by_alias(tmp_profile, "flexo-moe", "serving")) == {"news": "1"}
