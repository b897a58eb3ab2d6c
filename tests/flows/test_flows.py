"""Flows under Prefect's test harness on the tiny profile: caching, failure isolation, skips, owner isolation."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from flows import runner
from flows.bodies import BODIES
from flows.expert import expert
from flows.outcomes import Outcome, StepsFailed
from flows.pipeline import pipeline
from flows.placement import GPU_TAG, OWNER_ENV, on_own_server, place_gpu_limit
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


def _gpu_limit_gone() -> None:
    """No tag limit `gpu` on the harness's server (a test that made one leaves it out of the next)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client, contextlib.suppress(ObjectNotFound):
        client.delete_concurrency_limit_by_tag(tag=GPU_TAG)


@pytest.fixture
def configured_server(monkeypatch) -> Iterator[None]:
    """The harness's server treated as one a user configured (shared with other processes): GPU steps are tagged and
    the tag limit `gpu` = 1 is there."""
    monkeypatch.setattr(runner, "on_own_server", lambda: False)
    assert place_gpu_limit(1, own_server=False) == "server"
    yield
    _gpu_limit_gone()


def _final_task_runs(name: str, count: int) -> list:
    """The task runs called `name` once the server has recorded `count` of them in a final state (Prefect 3 reports
    task-run states as events, which the server records asynchronously: CI once read a run still "Running")."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    run_filter = TaskRunFilter(name=TaskRunFilterName(any_=[name]))
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(task_run_filter=run_filter)
            if (
                len(runs) == count and all(r.state and r.state.is_final() for r in runs)
            ) or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)


@pytest.mark.usefixtures("configured_server")
def test_a_cache_hit_does_not_queue_for_the_gpu_slot(world, monkeypatch) -> None:
    """Prefect takes a tag's concurrency slot before it looks at the cache; a cached gpu step must run untagged so an
    unchanged rerun does not wait (about 2 s per step) for a GPU it will not use. A miss keeps the tag."""
    import uuid

    monkeypatch.setitem(STEPS, "gpu_probe", Step(_gpu_probe, "core", gpu=True))
    monkeypatch.setitem(BODIES, "gpu_probe", _gpu_probe)
    token = uuid.uuid4().hex  # a fresh cache key: results persist across test sessions
    first = run_step("test", "gpu_probe", world, token, "code-v1", domain=token[:8])
    second = run_step("test", "gpu_probe", world, token, "code-v1", domain=token[:8])
    assert (first.status, second.status) == ("completed", "cached") and second.result["token"] == token
    runs = _final_task_runs(f"gpu_probe-{token[:8]}", 2)
    tags = sorted((run.state_name, sorted(run.tags)) for run in runs)
    assert tags == [("Cached", []), ("Completed", [GPU_TAG])], tags


_BOTH_INSIDE: threading.Barrier | None = None  # set by the two-slot case: each step waits there for the other


def _gpu_interval(profile, token: str, hold_s: float) -> dict:
    """A GPU step's body that says when it ran (perf_counter is one clock for the whole process). With a barrier set,
    it first waits until the other step is inside too, which only two slots allow (with one, the wait times out and
    the step fails): on a busy machine the second thread's step may otherwise start after the first one's hold."""
    started = time.perf_counter()
    if _BOTH_INSIDE is not None:
        _BOTH_INSIDE.wait()
    time.sleep(hold_s)
    return {"token": token, "start": started, "end": time.perf_counter()}


@pytest.mark.parametrize("slots", [1, 2])
def test_gpu_steps_of_parallel_subflows_share_the_process_slots(world, monkeypatch, slots: int) -> None:
    """Parallel expert subflows are threads calling run_step. On a server of the process's own (the harness's here,
    flexo's temporary one in `flexo run`) GPU steps go untagged, so no server limit applies: the process's slots alone
    keep two GPU steps from overlapping when there is one, and let them overlap when there are two."""
    import uuid

    monkeypatch.setitem(STEPS, "gpu_interval", Step(_gpu_interval, "core", gpu=True))
    monkeypatch.setitem(BODIES, "gpu_interval", _gpu_interval)
    monkeypatch.setattr(sys.modules[__name__], "_BOTH_INSIDE", threading.Barrier(2, timeout=60) if slots == 2 else None)
    profile = world.model_copy(update={"orchestration": world.orchestration.model_copy(update={"gpu_slots": slots})})
    tokens = [uuid.uuid4().hex for _ in range(2)]
    outcomes: dict[str, Outcome] = {}
    threads = [
        threading.Thread(
            target=lambda t=t: outcomes.update({t: run_step("test", "gpu_interval", profile, t, 0.5, domain=t[:8])})
        )
        for t in tokens
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [outcomes[t].status for t in tokens] == ["completed", "completed"], outcomes
    first, second = sorted((outcomes[t].result["start"], outcomes[t].result["end"]) for t in tokens)
    overlap = first[1] > second[0]
    assert overlap == (slots == 2), (first, second)
    assert [run.tags for run in _final_task_runs(f"gpu_interval-{tokens[0][:8]}", 1)] == [[]]


def test_only_a_configured_server_gets_the_gpu_limit(world) -> None:
    """A pipeline on a server its process started sets no `gpu` tag limit (its steps go untagged: a tag's slot
    request waits on the server's SQLite, about 2 s per step); on a configured server it sets it to `gpu_slots`."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    assert on_own_server()  # the harness's server, started by this process
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert not on_own_server()  # a server someone else runs
    _gpu_limit_gone()
    try:
        assert place_gpu_limit(1) == "process"
        with get_client(sync_client=True) as client, pytest.raises(ObjectNotFound):
            client.read_concurrency_limit_by_tag(GPU_TAG)
        assert place_gpu_limit(3, own_server=False) == "server"
        with get_client(sync_client=True) as client:
            assert client.read_concurrency_limit_by_tag(GPU_TAG).concurrency_limit == 3
    finally:
        _gpu_limit_gone()
