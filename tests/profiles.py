"""Test profiles that touch nothing of the repository: every path of a profile moved under one temporary root."""

from __future__ import annotations

from pathlib import Path

from tasks.core.config import Profile


def profile_under(profile: Profile, root: Path) -> Profile:
    """`profile` with its data, runs, reports, MLflow store and artifacts, and DVC remotes under `root`."""
    paths = profile.paths.model_copy(
        update={
            "data_dir": str(root / "data"),
            "runs_dir": str(root / "runs"),
            "reports_dir": str(root / "reports"),
            "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
            "mlflow_artifacts_dir": str(root / "mlartifacts"),
            "dvc_remotes_dir": str(root / "remotes"),
        }
    )
    return profile.model_copy(update={"paths": paths})
