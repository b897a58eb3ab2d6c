"""The import layering is enforced, not described: `lint-imports` passes on the tree with pyproject.toml's contracts,
and the same contracts fail a copy of the packages into which one wrong import was written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("tasks", "flows", "model")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with `cwd`'s pyproject.toml on the packages under `cwd` (it puts cwd first on sys.path)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(cwd / "pyproject.toml")],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_area_package_sits_in_a_layer() -> None:
    """A new area package outside the layers contract would escape it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (areas,) = [contract for contract in config["contracts"] if contract["id"] == "areas"]
    layered = {name.strip() for layer in areas["layers"] for name in layer.split("|")}
    packages = {f"tasks.{path.parent.name}" for path in (ROOT / "tasks").glob("*/__init__.py")}
    assert packages <= layered, f"area packages missing from the layers contract: {sorted(packages - layered)}"


@pytest.fixture(scope="module")
def packages_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tasks/, flows/ and model/ with pyproject.toml (the contracts) in a fresh directory."""
    root = tmp_path_factory.mktemp("layering")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("module", "statement", "reported"),
    [
        # a lower layer importing a higher one
        ("tasks/core/probe.py", "import tasks.evaluation", "tasks.core.probe -> tasks.evaluation"),
        ("tasks/data/probe.py", "import tasks.training", "tasks.data.probe -> tasks.training"),
        ("tasks/core/probe.py", "import flows", "tasks.core.probe -> flows"),
        # evaluation and privacy are independent of each other
        ("tasks/privacy/probe.py", "import tasks.evaluation", "tasks.privacy.probe -> tasks.evaluation"),
        # model/ is pure: no MLOps library, nothing from tasks/ or flows/
        ("model/probe.py", "import mlflow", "model.probe -> mlflow"),
        ("model/probe.py", "import prefect", "model.probe -> prefect"),
        ("model/probe.py", "from tasks.core import errors", "model.probe -> tasks.core.errors"),
    ],
)
def test_a_wrong_import_breaks_a_contract(packages_copy: Path, module: str, statement: str, reported: str) -> None:
    probe = packages_copy / module
    probe.write_text(f'"""A wrong import."""\n\n{statement}\n')
    try:
        result = _lint_imports(packages_copy)
    finally:
        probe.unlink()
    assert result.returncode != 0
    assert reported in result.stdout, result.stdout
