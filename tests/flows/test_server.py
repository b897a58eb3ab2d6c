"""End to end on a real Prefect server: `flexo deploy` registers a deployment, `flexo worker --owner` (a process worker
on the owner's own pool) picks up a run of it and the run completes.

The server is the session's (`prefect_harness`: a Prefect API server in its own process on loopback, SQLite-backed),
reached by the subprocesses over HTTP as any server is: a second server started here would cost the suite a minute of
start-up on a busy 2-core machine and test nothing more."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tasks.core.config import REPO_ROOT
from tests.flows.conftest import tmp_params

pytestmark = pytest.mark.server

RUN_DONE_S = 240


def _check_deployment_and_start_run() -> Any:
    """The deployment on the owner's pool, every pool and the gpu limit created; a run of it, scheduled now."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("data/nightly-code")
        assert deployment.work_pool_name == "flexo-code-owner"
        pools = {pool.name for pool in client.read_work_pools()}
        assert {"flexo-code-owner", "flexo-math-owner", "flexo-shared"} <= pools
        assert client.read_concurrency_limit_by_tag("gpu").concurrency_limit == 1
        return client.create_flow_run_from_deployment(
            deployment.id, parameters={"profile": "tiny", "domains": ["code"]}
        )


def _final_state(run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    state = None
    deadline = time.time() + RUN_DONE_S
    with get_client(sync_client=True) as client:
        while time.time() < deadline:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                break
            time.sleep(2)
    return state


def test_deploy_worker_and_run_on_a_real_server(prefect_harness, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    url = PREFECT_API_URL.value()
    assert url and url.startswith("http://127.0.0.1:"), url  # the harness's server process, not an in-process app
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": url,
        "FLEXO_PARAMS": str(tmp_params(tmp_path)),
        "FLEXO_PROFILE": "tiny",
    }
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    worker = None
    try:
        flexo = [sys.executable, "-m", "flows.cli"]
        deployed = subprocess.run(
            [*flexo, "deploy", "--profile", "tiny", "--name", "data/nightly-code"],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        run = _check_deployment_and_start_run()
        worker = subprocess.Popen(
            [*flexo, "worker", "--owner", "code", "--profile", "tiny"],
            env=env,
            cwd=REPO_ROOT,
            stdout=(tmp_path / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        state = _final_state(run.id)
        assert state is not None and state.is_completed(), f"{state}: {(tmp_path / 'worker.log').read_text()[-3000:]}"
        assert (tmp_path / "data" / "code" / "train.parquet").exists()
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
