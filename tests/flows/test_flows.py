"""Flows under Prefect's test harness on the tiny profile: caching, failure isolation, skips, owner isolation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from flows.bodies import BODIES
from flows.expert import expert
from flows.outcomes import Outcome, StepsFailed
from flows.pipeline import pipeline
from flows.placement import GPU_TAG, OWNER_ENV, drop_gpu_limit, ensure_gpu_limit, on_own_server, place_gpu_limit
from flows.runner import run_step
from flows.steps import STEPS, Step
from tasks.core.artifacts import RunPaths
from tasks.core.errors import ConfigError
from tasks.core.hashing import jsonable
from tests.flows.conftest import write_split

pytestmark = pytest.mark.usefixtures("prefect_harness")

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i % 7}  # line {i}" for i in range(40)]


def _by(summary: dict, step: str, domain: str | None = None) -> dict:
    rows = [r for r in summary["steps"] if r["step"] == step and r["domain"] == domain]
    assert len(rows) == 1, (step, domain, summary["steps"])
    return rows[0]


def test_failed_domain_does_not_stop_others_and_rerun_is_cached(world) -> None:
    write_split(world, "code", TEXTS)  # math has no data: its steps must fail, code's must go on
    first = pipeline(profile=world, domains=["math", "code"], stages=["expert"])
    assert _by(first, "embed_domain", "code")["status"] == "completed"
    math = _by(first, "embed_domain", "math")
    assert math["status"] == "failed" and "math" in math["detail"]
    assert _by(first, "train_expert", "math")["status"] == "skipped"
    assert {"step": "embed_domain", "domain": "math", "why": math["detail"]} in first["failed"]
    on_disk = json.loads((RunPaths(world).reports_dir / "pipeline_summary.json").read_text())
    assert any(
        s["step"] == "embed_domain" and s["domain"] == "math" and s["status"] == "failed" for s in on_disk["steps"]
    )

    second = pipeline(profile=world, domains=["math", "code"], stages=["expert"])
    assert _by(second, "embed_domain", "code")["status"] == "cached"
    assert "embed_domain/code" in second["reused"]
    assert _by(second, "embed_domain", "math")["status"] == "failed"  # failures are never cached


def test_changed_data_or_deleted_output_misses_the_cache(world) -> None:
    write_split(world, "code", TEXTS)
    assert (
        _by(pipeline(profile=world, domains=["code"], stages=["expert"]), "embed_domain", "code")["status"]
        == "completed"
    )
    RunPaths(world).router_embedding("code").unlink()
    assert (
        _by(pipeline(profile=world, domains=["code"], stages=["expert"]), "embed_domain", "code")["status"]
        == "completed"
    )
    assert RunPaths(world).router_embedding("code").exists()
    write_split(world, "code", TEXTS[:30])  # new content: a new data hash
    assert (
        _by(pipeline(profile=world, domains=["code"], stages=["expert"]), "embed_domain", "code")["status"]
        == "completed"
    )
    assert (
        _by(pipeline(profile=world, domains=["code"], stages=["expert"]), "embed_domain", "code")["status"] == "cached"
    )


def test_standalone_flow_fails_naming_the_step(world) -> None:
    with pytest.raises(StepsFailed, match="embed_domain/math"):
        expert(domain="math", profile=world)


def test_owner_worker_refuses_another_domain(world, monkeypatch) -> None:
    monkeypatch.setenv(OWNER_ENV, "code")
    with pytest.raises(ConfigError, match="refuses to run domain 'math'"):
        expert(domain="math", profile=world)


def test_results_are_json_and_never_tensors() -> None:
    import torch

    assert jsonable({"p": RunPaths.__name__, "x": torch.tensor(1.5)}) == {"p": "RunPaths", "x": 1.5}
    with pytest.raises(TypeError, match="never tensors"):
        jsonable({"w": torch.ones(3)})


def _gpu_probe(profile, token: str, code: str) -> dict:
    """A gpu-tagged step body for the test below (cheap: the point is how the engine runs it, not what it computes)."""
    return {"token": token}


@pytest.fixture
def server_gpu_limit() -> Iterator[None]:
    """The tag limit `gpu` = 1 on the harness's server, as on a configured server; dropped afterwards, the state a
    pipeline leaves a server of its own process in."""
    ensure_gpu_limit(1)
    yield
    drop_gpu_limit()


@pytest.mark.usefixtures("server_gpu_limit")
def test_a_cache_hit_does_not_queue_for_the_gpu_slot(world, monkeypatch) -> None:
    """Prefect takes a tag's concurrency slot before it looks at the cache; a cached gpu step must run untagged so an
    unchanged rerun does not wait (about a second per step) for a GPU it will not use. A miss keeps the tag."""
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    monkeypatch.setitem(STEPS, "gpu_probe", Step(_gpu_probe, "core", gpu=True))
    monkeypatch.setitem(BODIES, "gpu_probe", _gpu_probe)
    token = uuid.uuid4().hex  # a fresh cache key: results persist across test sessions
    first = run_step("test", "gpu_probe", world, token, "code-v1", domain=token[:8])
    second = run_step("test", "gpu_probe", world, token, "code-v1", domain=token[:8])
    assert (first.status, second.status) == ("completed", "cached") and second.result["token"] == token
    # Prefect 3 reports task-run states to the server as events, which it records asynchronously: wait until both
    # runs have reached a final state there (CI once read the second run while the server still said "Running").
    run_filter = TaskRunFilter(name=TaskRunFilterName(any_=[f"gpu_probe-{token[:8]}"]))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(task_run_filter=run_filter)
            if (
                len(runs) == 2 and all(run.state and run.state.is_final() for run in runs)
            ) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    tags = sorted((run.state_name, sorted(run.tags)) for run in runs)
    assert tags == [("Cached", []), ("Completed", [GPU_TAG])], tags


def _gpu_interval(profile, token: str, hold_s: float) -> dict:
    """A gpu-tagged step body that says when it ran (perf_counter is one clock for the whole process)."""
    started = time.perf_counter()
    time.sleep(hold_s)
    return {"token": token, "start": started, "end": time.perf_counter()}


@pytest.mark.parametrize("slots", [1, 2])
def test_gpu_steps_of_parallel_subflows_share_the_process_slots(world, monkeypatch, slots: int) -> None:
    """Parallel expert subflows are threads calling run_step: with the server's `gpu` limit gone (as on a server of
    the process's own), the process's slots alone keep two GPU steps from overlapping when there is one, and let them
    overlap when there are two."""
    import threading
    import uuid

    monkeypatch.setitem(STEPS, "gpu_interval", Step(_gpu_interval, "core", gpu=True))
    monkeypatch.setitem(BODIES, "gpu_interval", _gpu_interval)
    profile = world.model_copy(update={"orchestration": world.orchestration.model_copy(update={"gpu_slots": slots})})
    assert place_gpu_limit(slots, own_server=True) == "process"
    tokens = [uuid.uuid4().hex for _ in range(2)]
    outcomes: dict[str, Outcome] = {}
    try:
        threads = [
            threading.Thread(target=lambda t=t: outcomes.update({t: run_step("test", "gpu_interval", profile, t, 0.5)}))
            for t in tokens
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        drop_gpu_limit()  # the harness's server as a pipeline leaves it: no tag limit
    assert [outcomes[t].status for t in tokens] == ["completed", "completed"], outcomes
    first, second = sorted((outcomes[t].result["start"], outcomes[t].result["end"]) for t in tokens)
    overlap = first[1] > second[0]
    assert overlap == (slots == 2), (first, second)


def test_a_server_of_the_process_own_gets_no_gpu_limit_a_configured_one_does(world) -> None:
    """A pipeline on a server its process started (the harness's here, flexo's temporary one in `flexo run`) drops the
    `gpu` tag limit (an older flexo left one in its database: each acquisition there waits on SQLite, about 2 s per
    step); on a configured server it sets it to `gpu_slots`."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert on_own_server()  # the harness's server, started by this process
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert not on_own_server()  # a server someone else runs
    ensure_gpu_limit(1)
    try:
        assert place_gpu_limit(1) == "process"
        with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
            client.read_concurrency_limit_by_tag(GPU_TAG)
        assert place_gpu_limit(1) == "process"  # none there: nothing to drop, no error
        assert place_gpu_limit(3, own_server=False) == "server"
        with get_client(sync_client=True) as client:
            assert client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit == 3
    finally:
        drop_gpu_limit()
