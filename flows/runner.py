"""Run one step as a Prefect task and record what happened as an `Outcome`.

Each step becomes a task cached on its inputs (the profile, content hashes of its data and upstream weights, its code
fingerprint) and its body's source, so an unchanged rerun is a cache hit and a changed data set, weight file or
source file is not; retried with backoff where it can fail transiently. A step that trains or runs a model holds one of
the process's GPU slots, and on a configured Prefect server it is also tagged `gpu` (`flows.placement`).
"""

from __future__ import annotations

import inspect
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from flows.bodies import BODIES
from flows.mlflow_logging import data_reads
from flows.outcomes import Outcome, notify
from flows.placement import GPU_TAG, on_own_server, process_gpu_slot
from flows.steps import STEPS
from tasks.core import tracking
from tasks.core.config import Profile
from tasks.core.errors import FlexoError


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry only what can succeed on a second try: a flexo error (bad config, bad data, integrity, revoked, gate)
    is permanent and fails at once; anything else (a locked database, an unreachable remote) is retried."""
    try:
        state.result()
    except FlexoError:
        return False
    except Exception:
        return True
    return True


def prefect_task(name: str, profile: Profile, occupy_gpu: bool = True) -> Any:
    """The Prefect task for step `name`: cached on inputs + source, retried with backoff where the step can fail
    transiently, tagged `gpu` where it trains or runs a model unless `occupy_gpu` is False (on a server of the
    process's own, `flows.placement`; for a cache hit, `_cache_hit`)."""
    from prefect import task
    from prefect.cache_policies import INPUTS, NONE, TASK_SOURCE

    spec = STEPS[name]
    orch = profile.orchestration
    return task(
        name=name,
        cache_policy=(INPUTS + TASK_SOURCE) if spec.cache else NONE,
        persist_result=spec.cache,
        result_serializer="json",
        retries=orch.retries if spec.retry else 0,
        retry_delay_seconds=list(orch.retry_delay_seconds) if spec.retry else 0,
        retry_condition_fn=_transient,
        tags=[GPU_TAG] if spec.gpu and occupy_gpu else [],
    )(BODIES[name])


def _cache_hit(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether Prefect holds a cached result for this call, asked the way the task engine asks (same cache policy,
    same result store). Why: the engine takes the `gpu` tag's concurrency slot *before* it looks at the cache, and on a
    server with the `gpu` limit (SQLite-backed) an acquisition often waits about 2 s, so a cached rerun spent half its
    time queueing for a GPU it never used. A cache hit therefore runs untagged and takes no process slot either;
    anything uncertain keeps the tag."""
    from prefect.results import get_result_store

    try:
        inputs = dict(inspect.signature(task.fn).bind(*args, **kwargs).arguments)
        key = task.cache_policy.compute_key(task_ctx=SimpleNamespace(task=task), inputs=inputs, flow_parameters={})
        return bool(key) and get_result_store().update_for_task(task).exists(key)
    except Exception:  # a failed probe only costs the slot wait
        return False


def _outcome(stage: str, step: str, domain: str | None, state: Any, seconds: float) -> Outcome:
    if state.is_completed():
        value = state.result()
        result = value if isinstance(value, dict) else {"value": value}
        status = "cached" if state.name == "Cached" else "completed"
        return Outcome(stage, step, domain, status, seconds, "", result)
    error = state.result(raise_on_failure=False)
    detail = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(state.message)
    return Outcome(stage, step, domain, "failed", seconds, detail)


def run_step(
    stage: str,
    step: str,
    profile: Profile,
    *args: Any,
    domain: str | None = None,
    expect: Path | None = None,
    refresh: bool = False,
    **kwargs: Any,
) -> Outcome:
    """Run one step as a Prefect task and record what happened; a failure is recorded, not raised (a failed domain
    must not stop the others). `expect`: the file the step writes; if it is gone, the cache is refreshed instead of
    trusting a cached result that points at nothing. `refresh`: run it even on a cache hit (the caller knows better)."""
    started = time.perf_counter()
    notify(stage, step, domain, "running")
    refresh = refresh or (expect is not None and not Path(expect).exists())
    gpu = STEPS[step].gpu
    task = prefect_task(step, profile, occupy_gpu=gpu and not on_own_server())
    if task.tags and not refresh and _cache_hit(task, (profile, *args), kwargs):
        task, gpu = prefect_task(step, profile, occupy_gpu=False), False  # a cache hit occupies no GPU slot
    task = task.with_options(
        task_run_name=f"{step}-{domain}" if domain else step, refresh_cache=True if refresh else None
    )
    reads, context = data_reads(step, profile, domain)
    slot = process_gpu_slot(profile.orchestration.gpu_slots) if gpu else nullcontext()
    with slot, tracking.reading(profile, reads, context):  # logged by the step's stage run, if it opens one
        state = task(profile, *args, return_state=True, **kwargs)
    outcome = _outcome(stage, step, domain, state, time.perf_counter() - started)
    notify(stage, step, domain, outcome.status)
    return outcome
