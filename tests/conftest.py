"""Shared fixtures. Importing `tasks` first makes the test process offline and telemetry-free, like every entry point."""

from __future__ import annotations

import os

import pytest
import torch

import tasks  # noqa: F401  (offline environment)
from tasks.config import Profile, load_profile

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_profile() -> Profile:
    """The `tiny` profile from the real params.yaml (tests run in seconds on it)."""
    return load_profile("tiny")
