"""Test profiles that touch nothing of the repository: every path of a profile moved under one temporary root."""

from __future__ import annotations

from pathlib import Path

from tasks.core.config import Profile


def paths_under(root: Path) -> dict[str, str]:
    """Every `paths.*` key under `root`: data, runs, reports, MLflow store and artifacts, DVC remotes."""
    return {
        "data_dir": str(root / "data"),
        "runs_dir": str(root / "runs"),
        "reports_dir": str(root / "reports"),
        "mlflow_tracking_uri": f"sqlite:///{root / 'mlflow.db'}",
        "mlflow_artifacts_dir": str(root / "mlartifacts"),
        "dvc_remotes_dir": str(root / "remotes"),
    }


def profile_under(profile: Profile, root: Path) -> Profile:
    """`profile` with all its paths under `root` (`paths_under`)."""
    return profile.model_copy(update={"paths": profile.paths.model_copy(update=paths_under(root))})
