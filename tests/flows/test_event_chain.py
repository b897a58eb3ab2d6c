"""Retraining on events on a real Prefect server: prefect.yaml's deployments registered with `flexo deploy`, served by
`flexo worker` process workers (the owner's and the shared one); a data run that versions a new md5 of the owner's
domain runs that owner's expert deployment once, then assembly, then evaluation; a rerun on the same data runs nothing.

The world is the tiny profile on two small text folders (public and news), built first by an in-process pipeline run
(data, M_pub, the expert, the MoE) before any trigger exists."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.core.config import REPO_ROOT
from tests.flows.conftest import tmp_params
from tests.processes import with_marker
from tests.tasks.data_world import write_txt_folder

pytestmark = pytest.mark.slow  # a pipeline run, then three flow runs in workers' subprocesses (minutes)

OWNER_DOMAIN = "news"  # a prose domain (code would get the code task) with its weekly-news deployment
DEPLOYMENTS = ("expert/weekly-news", "assemble/after-retraining", "evaluate/after-assembly")
CHAIN_TIMEOUT_S = 1200  # three flow runs, each a new interpreter importing torch and MLflow on a busy 2-core machine
QUIET_S = 30  # how long an unchanged rerun is watched for a run it must not cause (a trigger fires in about a second)
STARTUP_S = 180
URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def _params(root: Path) -> Path:
    """The repository's params.yaml with every path under `root` and two folder domains (public and the owner's)."""
    path = tmp_params(root)
    raw = yaml.safe_load(path.read_text())
    raw["domains"] = {
        "public": {"owner": "flexo-public", "source": {"adapter": "folder", "options": {"path": str(root / "pub")}}},
        OWNER_DOMAIN: {
            "owner": "news-owner",
            "source": {"adapter": "folder", "options": {"path": str(root / OWNER_DOMAIN)}},
        },
    }
    for profile in raw["profiles"].values():
        if isinstance(profile, dict):
            profile.pop("domains", None)
    tiny = raw["profiles"]["tiny"]
    tiny["attack"] = {**(tiny.get("attack") or {}), "domain": OWNER_DOMAIN}
    tiny["data"] = {**tiny["data"], "near_duplicate_threshold": 0.99}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _flexo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _runs(client: Any, deployment_id: Any) -> list[Any]:
    """The flow runs of a deployment that something asked for (not the schedule's future runs)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return sorted((r for r in runs if not r.auto_scheduled), key=lambda r: r.created)


def _state(run: Any) -> str:
    return run.state.type.value if run.state else "NONE"


def _wait_for_chain(client: Any, ids: dict[str, Any], logs: Path) -> dict[str, list[Any]]:
    deadline = time.monotonic() + CHAIN_TIMEOUT_S
    while True:
        runs = {name: _runs(client, ids[name]) for name in DEPLOYMENTS}
        failed = [(n, _state(r)) for n, rs in runs.items() for r in rs if _state(r) in TERMINAL[1:]]
        last = runs[DEPLOYMENTS[-1]]
        if failed or (last and all(_state(r) in TERMINAL for r in last)):
            return runs
        if time.monotonic() > deadline:
            states = {n: [_state(r) for r in rs] for n, rs in runs.items()}
            pytest.fail(f"the chain did not finish in {CHAIN_TIMEOUT_S} s: {states}\n{_tail(logs)}")
        time.sleep(2)


def _tail(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(logs.glob("*.log")))


def _cleanup_server(client: Any, ids: dict[str, Any]) -> None:
    """The automations and deployments this test registered: the session's server is shared with later tests."""
    for automation in client.read_automations():
        if automation.name.startswith("flexo-"):
            client.delete_automation(automation.id)
    for deployment_id in ids.values():
        client.delete_deployment(deployment_id)


def test_new_data_retrains_assembles_and_evaluates_once_and_unchanged_data_nothing(
    tmp_path, prefect_harness, monkeypatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.data import data
    from flows.events import read_ledger
    from flows.pipeline import pipeline
    from tasks.core import tracking
    from tasks.core.config import load_profile
    from tasks.registry.names import expert_model_name

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    write_txt_folder(tmp_path / "pub", 200, seed=5)  # enough text for M_pub's token budget in at most max_epochs passes
    write_txt_folder(tmp_path / OWNER_DOMAIN, 60, seed=6)
    params = _params(tmp_path)
    monkeypatch.setenv("FLEXO_PARAMS", str(params))
    saved = {name: os.environ.get(name) for name in URI_VARS}
    url = str(PREFECT_API_URL.value())
    marker, logs = uuid.uuid4().hex, tmp_path / "logs"
    logs.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k not in URI_VARS},
        "FLEXO_PARAMS": str(params),
        "PREFECT_API_URL": url,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "FLEXO_TEST_MARKER": marker,
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",
    }
    workers: list[subprocess.Popen[bytes]] = []
    ids: dict[str, Any] = {}
    client = get_client(sync_client=True)
    client.__enter__()
    try:
        built = pipeline(profile="tiny", stages=["data", "public", "expert", "assemble"], fail_on_error=True)
        assert built["failed"] == []
        profile = load_profile("tiny")
        first_md5 = read_ledger(profile)[OWNER_DOMAIN]  # announced before any trigger existed: nothing ran on it

        deployed = _flexo(env, "deploy", "-p", "tiny", "--api-url", url, *(a for n in DEPLOYMENTS for a in ("-n", n)))
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        ids = {name: client.read_deployment_by_name(name).id for name in DEPLOYMENTS}
        names = {a.name for a in client.read_automations()}
        assert {f"flexo-retrain-{OWNER_DOMAIN}-on-new-data", "flexo-assemble-after-retraining"} <= names
        for owner in (OWNER_DOMAIN, "shared"):
            log = (logs / f"worker-{owner}.log").open("wb")
            command = [sys.executable, "-m", "flows.cli", "worker", "--owner", owner, "-p", "tiny", "--api-url", url]
            workers.append(subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        assert all(_runs(client, i) == [] for i in ids.values())  # the world's own runs triggered nothing

        (tmp_path / OWNER_DOMAIN / "doc999.txt").write_text(
            "Evening storm report from the harbor council: " + " ".join(["quiet lantern meadow"] * 20) + ".\n"
        )
        changed = data(profile="tiny", domains=[OWNER_DOMAIN], fail_on_error=True)
        assert any(r["step"] == "version_domain" and r["status"] == "completed" for r in changed)
        second_md5 = read_ledger(profile)[OWNER_DOMAIN]
        assert second_md5 != first_md5

        runs = _wait_for_chain(client, ids, logs)
        states = {n: [_state(r) for r in rs] for n, rs in runs.items()}
        assert states == {n: ["COMPLETED"] for n in DEPLOYMENTS}, f"{states}\n{_tail(logs)}"
        (expert_run,) = runs["expert/weekly-news"]
        assert expert_run.parameters == {"domain": OWNER_DOMAIN, "profile": "tiny"}  # from the event's labels
        assert expert_run.created_by is not None and expert_run.created_by.type == "AUTOMATION"
        for name in DEPLOYMENTS[1:]:
            assert runs[name][0].parameters == {"profile": "tiny"}  # from the expert run's own parameters
        assert runs["assemble/after-retraining"][0].created > expert_run.created
        assert runs["evaluate/after-assembly"][0].created > runs["assemble/after-retraining"][0].created
        from mlflow import MlflowClient

        registry = MlflowClient(tracking.tracking_uri(profile))
        versions = registry.search_model_versions(f"name='{expert_model_name(profile, OWNER_DOMAIN)}'")
        assert len(versions) == 2  # the world's expert, then the one retrained on the new data

        unchanged = data(profile="tiny", domains=[OWNER_DOMAIN], fail_on_error=True)
        assert {r["status"] for r in unchanged if r["step"] == "version_domain"} <= {"cached", "completed"}
        assert read_ledger(profile)[OWNER_DOMAIN] == second_md5
        time.sleep(QUIET_S)
        assert {n: len(_runs(client, ids[n])) for n in DEPLOYMENTS} == {n: 1 for n in DEPLOYMENTS}
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        deadline = time.monotonic() + 15
        while with_marker(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        for process in with_marker(marker):
            process.kill()
        if ids:
            _cleanup_server(client, ids)
        client.__exit__(None, None, None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
