"""The data stage's MLflow runs outside a pipeline run: `flexo data` (a data owner's machine) needs no tracking store,
so nothing is logged and no store is created. Inside a pipeline run, tests/flows/test_lineage.py checks each domain's
run on the real pipeline."""

from __future__ import annotations

from flows.data_runs import log_data_runs
from flows.outcomes import Outcome
from tasks.core import tracking


def test_outside_a_pipeline_run_the_data_flow_logs_nothing_and_creates_no_store(tmp_profile) -> None:
    outcomes = [Outcome("data", "prepare_domain", "public", "completed", 0.1, result={"ingested": 3})]
    assert tracking.parent_run_id() is None
    assert log_data_runs(tmp_profile, ["public"], outcomes) == []
    assert not tracking.store_exists(tmp_profile)
