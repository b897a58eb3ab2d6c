"""A tiny world in tmp_path for the flows' tests (Prefect's test harness is `prefect_harness` in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tasks.core.config import REPO_ROOT, Profile

RICH_WIDTH = 1000  # the console width of an in-process command (the subprocesses get COLUMNS=1000)


@pytest.fixture
def world(tmp_profile: Profile, tmp_path: Path) -> Profile:
    """The tiny profile in a fresh git repository under tmp_path (DVC metadata is versioned by git)."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return tmp_profile


@pytest.fixture
def code_tree(tmp_path: Path) -> Path:
    """A copy of the repository's code (`tasks/`, `model/`) to edit: a step's code fingerprint computed over it."""
    root = tmp_path / "code"
    for package in ("tasks", "model"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def edit(path: Path) -> None:
    """A change to a source file that changes nothing it does (a comment at the end)."""
    path.write_text(path.read_text() + "\n# edited\n")


def area_module(root: Path, target: object) -> Path:
    """Under `root`, a module of the area package `target` lives in, other than `target`'s own module: what a cache
    key listing only the entry module missed."""
    entry = Path(*str(target.__module__).split(".")).with_suffix(".py")
    return next(p for p in sorted((root / entry.parent).glob("*.py")) if p.name not in ("__init__.py", entry.name))


def write_split(profile: Profile, domain: str, texts: list[str], split: str = "train") -> Path:
    """A real parquet split (columns id, text) as the data stage writes it."""
    from tasks.core.artifacts import RunPaths

    path = RunPaths(profile).split(domain, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": [f"{domain}-{i}" for i in range(len(texts))], "text": texts}).to_parquet(path)
    return path


def tmp_params(tmp_path: Path) -> Path:
    """The repository's params.yaml with every path under tmp_path, for commands run in a subprocess (FLEXO_PARAMS).
    Written in params.yaml's order: the domains' order is the experts' order (sorted keys put `academic` first)."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["defaults"]["paths"].update(
        data_dir=str(tmp_path / "data"),
        runs_dir=str(tmp_path / "runs"),
        reports_dir=str(tmp_path / "reports"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_artifacts_dir=str(tmp_path / "mlartifacts"),
        dvc_remotes_dir=str(tmp_path / "remotes"),
    )
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def flexo_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`flexo <args>` through the command line's own entry point (`flows.cli.main`: argument parsing, the command, the
    mapping of errors to messages and exit codes) in this process, with `env`'s differences from os.environ set: what
    a subprocess of it checks, without paying a new interpreter's imports of torch and MLflow (seconds apiece). Tests
    that need a real process keep one; returns what `subprocess.run(..., capture_output=True, text=True)` would."""
    from flows.cli import main
    from flows.commands import console
    from tasks.core import tracking

    # a new process has set no tracking URI itself: MLFLOW_TRACKING_URI in `env` is the user's, as it is there
    monkeypatch.setattr(tracking, "_SET_BY_US", set())
    for name, value in env.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["flexo", *args])
    monkeypatch.setattr(console, "_width", RICH_WIDTH)  # as COLUMNS does for a subprocess: messages stay on one line
    capsys.readouterr()  # what the test printed before is not the command's output
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["flexo", *args], code, out, err)
