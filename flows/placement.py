"""Where a step may run: an owner's worker runs only its own domain, and a GPU step holds one of the `gpu` slots.

Why a module of its own: `flexo worker` and `flexo deploy` need these two rules without importing the areas' code
(torch, the registry) that the step registry pulls in.
"""

from __future__ import annotations

import os

from tasks.core.errors import ConfigError

OWNER_ENV = "FLEXO_OWNER_DOMAIN"  # set by `flexo worker --owner`: that worker runs only its own domain's flows
GPU_TAG = "gpu"  # tag-based concurrency limit: one worker never runs two GPU trainings at once


def check_owner(domain: str | None) -> None:
    """On an owner's worker, refuse a flow for any other domain (an owner's machine reads only its own data)."""
    mine = os.environ.get(OWNER_ENV)
    if mine and domain != mine:
        raise ConfigError(
            f"this worker belongs to the owner of '{mine}' ({OWNER_ENV}); it refuses to run domain '{domain}'"
        )


def ensure_gpu_limit(slots: int) -> None:
    """Create (or update) the tag-based concurrency limit `gpu` on the Prefect server in use."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)
