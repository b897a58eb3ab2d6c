"""benchmarks/task_start_waits.py on the harness's server: a tagged and an untagged task run are read back with their
tag and their seconds from Pending to Running."""

from __future__ import annotations

import time
import uuid

import pytest

from flows.placement import GPU_TAG
from tests.benchmarks.conftest import load_benchmark

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_task_runs_are_read_with_their_tag_and_start_wait() -> None:
    from prefect import flow, task
    from prefect.client.orchestration import get_client

    token = uuid.uuid4().hex[:12]  # the harness's database holds other tests' runs too

    @task(task_run_name=f"probe-tagged-{token}", tags=[GPU_TAG], cache_policy=None)
    def tagged() -> int:
        return 1

    @task(task_run_name=f"probe-plain-{token}", cache_policy=None)
    def plain() -> int:
        return 2

    @flow
    def both() -> None:
        tagged()
        plain()

    both()
    bench = load_benchmark("task_start_waits")
    deadline = time.monotonic() + 60  # the server records task-run states from events, asynchronously
    with get_client(sync_client=True) as client:
        while True:
            mine = {r["task_run"]: r for r in bench.task_start_waits(client) if r["task_run"].endswith(token)}
            if len(mine) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert {name: row["tagged"] for name, row in mine.items()} == {
        f"probe-tagged-{token}": True,
        f"probe-plain-{token}": False,
    }
    assert all(row["wait_s"] >= 0 for row in mine.values())
    summary = bench._summary(list(mine.values()))
    assert summary["runs"] == 2 and summary["max_s"] >= summary["median_s"] >= 0
