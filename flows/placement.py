"""Where a step may run: an owner's worker runs only its own domain, and a GPU step holds one of the `gpu` slots.

Why a module of its own: `flexo worker` and `flexo deploy` need these rules without importing the areas' code (torch,
the registry) that the step registry pulls in.

Two kinds of slot. Every GPU step holds one of this process's `orchestration.gpu_slots` (a semaphore), which is all
that a run on a Prefect server of its own needs: flexo's temporary server (or Prefect's test harness) has no other
client. On a server a user configured (`PREFECT_API_URL`, shared by deployments and workers), the step is also tagged
`gpu` and holds a slot of the server's tag-based concurrency limit `gpu`, which holds across processes and machines.
On a server of its own a step is not tagged: there a tagged step's slot request often waited 2 s, with the `gpu`
limit and without one. With the limit the server answered 503 (its SQLite database locked, as it often is while it
records the events of the step before) and Prefect's client asked again 2 s later (Prefect issue #18934); in a
`flexo run` with the tag and no limit, 10 of its 17 GPU steps still waited more than 1 s (up to 2.4 s) between Pending
and Running, 21.1 s in all, against 0.99 s for its 151 untagged task runs together (`benchmarks/task_start_waits.py`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tasks.core.errors import ConfigError

OWNER_ENV = "FLEXO_OWNER_DOMAIN"  # set by `flexo worker --owner`: that worker runs only its own domain's flows
GPU_TAG = "gpu"  # tag-based concurrency limit: one worker never runs two GPU trainings at once

_process_slots: dict[int, threading.BoundedSemaphore] = {}
_process_slots_lock = threading.Lock()


def check_owner(domain: str | None) -> None:
    """On an owner's worker, refuse a flow for any other domain (an owner's machine reads only its own data)."""
    mine = os.environ.get(OWNER_ENV)
    if mine and domain != mine:
        raise ConfigError(
            f"this worker belongs to the owner of '{mine}' ({OWNER_ENV}); it refuses to run domain '{domain}'"
        )


@contextmanager
def process_gpu_slot(slots: int) -> Iterator[None]:
    """Hold one of this process's `slots` GPU slots for the duration (steps of parallel expert subflows wait here)."""
    with _process_slots_lock:
        semaphore = _process_slots.setdefault(slots, threading.BoundedSemaphore(slots))
    with semaphore:
        yield


def on_own_server() -> bool:
    """Whether Prefect's client talks to a server this process started for itself: flexo's temporary server (no API
    URL configured), or the one Prefect's test harness started and configured."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        return True
    own = SubprocessASGIServer()  # the process's default server, if it started one
    return own.running and url.rstrip("/") == own.api_url


def ensure_gpu_limit(slots: int) -> None:
    """Create (or update) the tag-based concurrency limit `gpu` on the Prefect server in use."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)


def place_gpu_limit(slots: int, own_server: bool | None = None) -> str:
    """The `gpu` limit a pipeline run needs on the server in use: none on a server of the process's own (its steps go
    untagged there, see the module docstring), the tag limit on a configured one. Returns which slots GPU steps hold:
    "process" or "server" (the process's as well)."""
    if on_own_server() if own_server is None else own_server:
        return "process"
    ensure_gpu_limit(slots)
    return "server"
