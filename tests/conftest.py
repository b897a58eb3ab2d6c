"""Shared fixtures. Importing `tasks` first makes the test process offline and telemetry-free, as entry points do."""

from __future__ import annotations

import os

import pytest
import torch

import tasks  # noqa: F401  (offline environment)
from tasks.core.config import Profile, load_profile

torch.set_num_threads(min(2, os.cpu_count() or 1))


_MLFLOW_URI_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _mlflow_uri_does_not_leak():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; without this a test's temporary store would reach every
    later test's subprocesses as if the user had set it."""
    before = {name: os.environ.get(name) for name in _MLFLOW_URI_VARS}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_profile() -> Profile:
    """The `tiny` profile from the real params.yaml (tests run in seconds on it)."""
    return load_profile("tiny")


@pytest.fixture
def tmp_profile(tiny_profile: Profile, tmp_path) -> Profile:
    """The tiny profile with every path under tmp_path (nothing touches the repository's data/, runs/ or mlflow/)."""
    paths = tiny_profile.paths.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "runs_dir": str(tmp_path / "runs"),
            "reports_dir": str(tmp_path / "reports"),
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "mlflow_artifacts_dir": str(tmp_path / "mlartifacts"),
            "dvc_remotes_dir": str(tmp_path / "remotes"),
        }
    )
    return tiny_profile.model_copy(update={"paths": paths})
